# Writes OUT: config/popgate.toml (IN) with the values of an installed server:
# absolute paths under /var/lib/popgate, the standard ports, server.user. The
# comments stay those of the shipped file, the one source of truth; each line
# replaced must be found exactly once, so a change there that this script
# does not know stops the build instead of shipping a stale value.
file(READ "${IN}" text)
set(header "# /etc/popgate/popgate.toml, installed by the popgate package: the shipped
# config/popgate.toml with absolute paths under /var/lib/popgate (the unit's
# StateDirectory), the standard ports, and server.user = \"popgate\". Log lines
# go to standard error, which systemd hands to the journal. Listeners stay on
# 127.0.0.1 until you set their address. See popgate.toml(5).
#
")
set(pairs
  "user = \"\"|user = \"popgate\""
  "port = 1110|port = 110"
  "port = 1995|port = 995"
  "port = 2525|port = 25"
  "port = 2587|port = 587"
  "port = 2465|port = 465"
  "cert_file = \"var/tls/cert.pem\"|cert_file = \"/var/lib/popgate/tls/cert.pem\""
  "key_file = \"var/tls/key.pem\"|key_file = \"/var/lib/popgate/tls/key.pem\""
  "database = \"var/popgate.db\"|database = \"/var/lib/popgate/popgate.db\""
  "maildir = \"var/mail/%u\"|maildir = \"/var/lib/popgate/mail/%u\""
  "relay_drop = \"var/relay-drop\"|relay_drop = \"/var/lib/popgate/relay-drop\"")
foreach(pair IN LISTS pairs)
  string(FIND "${pair}" "|" bar)
  string(SUBSTRING "${pair}" 0 ${bar} from)
  math(EXPR start "${bar} + 1")
  string(SUBSTRING "${pair}" ${start} -1 to)
  # Whole lines only: "port = 25" must not match "port = 2525".
  string(REGEX MATCHALL "\n${from}\n" found "${text}")
  list(LENGTH found n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "package_config: '${from}' found ${n} times in ${IN}, expected once")
  endif()
  string(REPLACE "\n${from}\n" "\n${to}\n" text "${text}")
endforeach()
file(WRITE "${OUT}.tmp" "${header}${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
