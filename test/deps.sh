#!/bin/sh
# Install the Debian packages wasend's build, tests and demo need.
# Idempotent: does nothing (and needs no network) when all are present.
set -e
PKGS="postgresql-15 postgresql-server-dev-15 postgresql-15-cron libcurl4-openssl-dev
libssl-dev libmicrohttpd-dev libphonenumber-dev pkg-config make gcc g++ libipc-run-perl nodejs openssl curl nginx-light
faketime bison flex patroni etcd-server etcd-client"
# bison and flex: test/pg18.sh builds PostgreSQL 18 from its source
# patroni, etcd-server, etcd-client: t/055_patroni.pl (a Patroni cluster on loopback)
# extra packages a caller needs (e.g. make bench: nginx-light gnuplot-nox bc)
[ $# -gt 0 ] && PKGS="$*"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "wasend: installing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
	echo "wasend: run as root (or install these packages yourself)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
