#!/bin/sh
# Installs everything popgate needs to build, run and test on Debian 12.
# Idempotent: installs only what is missing and runs `apt-get update` only then.
set -eu
pkgs="build-essential cmake ninja-build ccache pkg-config
libboost1.81-dev libboost-test1.81-dev libssl-dev openssl libsqlite3-dev sqlite3
libspdlog-dev libtomlplusplus-dev libcli11-dev libcrypt-dev
python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
curl mpop fetchmail
systemd dpkg-dev util-linux iproute2 groff-base man-db bash-completion logrotate
clang-14 libclang-rt-14-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing" >&2
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
