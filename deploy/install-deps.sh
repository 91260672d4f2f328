#!/bin/sh
# Installs everything popgate needs to build, run and test on Debian 12.
# Idempotent: installs only what is missing and runs `apt-get update` only then.
set -eu
# python3-psycopg2: Gateway.sql() in the integration tests runs its statements
# on PostgreSQL with it when POPGATE_TEST_BACKEND=postgresql (tests/support/popgate_test.py).
# python3-systemd: fail2ban's systemd backend (journal) reads with it; the log
# tests run fail2ban-regex on a journal that systemd-journald really wrote.
# faketime: a daemon two days ahead sees the files a test just made as
# stale (their ctime cannot be set back), in test_stale_tmp.py.
pkgs="build-essential cmake ninja-build ccache pkg-config
libboost1.81-dev libboost-test1.81-dev libssl-dev openssl libsqlite3-dev sqlite3
libspdlog-dev libtomlplusplus-dev libcli11-dev libcrypt-dev
python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
curl mpop fetchmail
systemd dpkg-dev util-linux iproute2 groff-base man-db bash-completion logrotate
haproxy fail2ban postfix postfix-sqlite dovecot-core dovecot-imapd dovecot-pop3d prometheus
clang-14 libclang-rt-14-dev
postgresql-15 libpq-dev postfix-pgsql python3-psycopg2
python3-systemd faketime"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing" >&2
# Postfix (a private instance in the tests, `postfix -c DIR`) must not be
# configured system-wide: "No configuration" for debconf.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections 2>/dev/null || true
# Some packages (haproxy, fail2ban, postfix, dovecot, prometheus: the tests
# use only its promtool) ship a daemon whose postinst starts the
# system service; the tests run their own instances on their own ports and
# want none. A policy-rc.d that says "no" (101) stops invoke-rc.d while apt
# runs; it is removed after, and one already present is left alone.
# postgresql-15 still creates Debian's "main" cluster (/var/lib/postgresql/15/main,
# port 5432) but does not start it; the tests never use it: each starts its
# own server (tests/support/private_postgres.py) on an ephemeral port.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    # dash runs no EXIT trap when a signal kills it: an apt-get stopped by
    # Ctrl-C or a lost ssh session would leave every later package install
    # on the host unable to start its services.
    trap '$SUDO rm -f "$policy"' EXIT
    trap '$SUDO rm -f "$policy"; trap - EXIT; exit 130' INT
    trap '$SUDO rm -f "$policy"; trap - EXIT; exit 143' TERM
    trap '$SUDO rm -f "$policy"; trap - EXIT; exit 129' HUP
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
if [ -n "$own_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT INT TERM HUP
fi
