#!/bin/sh
# Installs everything popgate needs to build, run and test on Debian 12.
# Idempotent: installs only what is missing and runs `apt-get update` only then.
set -eu
pkgs="build-essential cmake ninja-build ccache pkg-config
libboost1.81-dev libboost-test1.81-dev libssl-dev openssl libsqlite3-dev sqlite3
libspdlog-dev libtomlplusplus-dev libcli11-dev libcrypt-dev
python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
curl mpop fetchmail
postfix postfix-sqlite
clang-14 libclang-rt-14-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing" >&2
# Postfix (a private instance in the tests, `postfix -c DIR`) must neither be
# configured system-wide nor started: "No configuration" for debconf, and a
# policy-rc.d that forbids starting services while apt runs, unless one is
# already there (containers ship one); ours is removed afterwards.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections 2>/dev/null || true
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
