#!/bin/bash
# test/pg18.sh — the PostgreSQL 18 part of `make test`, run after the
# PostgreSQL 15 suite:
#   1. builds PostgreSQL 18 from Debian's source package (postgresql-18 in
#      sid), once per machine, into a cache outside the clone: a minimal
#      server with TAP support, installed with src/test/perl so the TAP
#      tests use 18's PostgreSQL::Test::Cluster.  A stamp naming the
#      version and the recipe, written last, marks a finished build; a
#      later run reuses it and needs no network;
#   2. builds wasend against it with -Werror in a scratch copy of the tree
#      (the clone's src/*.o stay the PostgreSQL 15 build), installs it into
#      the cached installation;
#   3. runs pg_regress and the core TAP tests (PG18_TESTS) against 18 with
#      test/run-tests.sh.
# A flock on the cache serialises concurrent runs: the second waits and
# reuses the first one's build; tests never run while a build is under way.
#
# Environment:
#   WASEND_PG18=0        skip this part (quick local runs); prints SKIPPED
#   WASEND_PG_CACHE=DIR  the cache (default /var/cache/wasend-pg)
#   PG18_TESTS="t/..."   the TAP files to run (default: the core set below)
# Without the source (no network, apt fails) it prints a loud SKIPPED line
# with the reason and exits 0 without claiming a pass; a failed build or
# test exits non-zero.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAJOR=18
CACHE=${WASEND_PG_CACHE:-/var/cache/wasend-pg}
DIR=$CACHE/$MAJOR
PREFIX=$DIR/install
TESTS18=${PG18_TESTS:-t/001_send.pl t/002_control.pl t/004_pg_cron.pl t/011_webhook.pl
t/015_poison.pl t/020_upgrade.pl t/021_dump_restore.pl t/029_databases.pl
t/043_no_preload.pl t/044_endpoint_database.pl t/045_stalled.pl t/046_retention.pl
t/047_operations_log.pl t/051_recipient_zones.pl t/053_supervisor_lock.pl t/054_durable_claims.pl}

skip() {
	echo "=================================================================="
	echo "SKIPPED: PostgreSQL $MAJOR tests: $*"
	echo "=================================================================="
	exit 0
}

if [ "${WASEND_PG18:-1}" = 0 ]; then
	skip "WASEND_PG18=0"
fi

mkdir -p "$DIR" || skip "cannot create the cache $DIR"
exec 9>"$DIR/lock"
if ! flock -n 9; then
	echo "== PostgreSQL $MAJOR: waiting for another run's lock on $DIR"
	flock 9
fi

# configure's options: what the tests need and nothing more; a package
# without its -dev headers is left out rather than installed
opts="--prefix=$PREFIX --enable-tap-tests --without-llvm --without-gssapi --without-ldap"
opts="$opts --without-lz4 --without-zstd --without-libxml --without-libxslt"
[ -e /usr/include/readline/readline.h ] || opts="$opts --without-readline"
[ -e /usr/include/zlib.h ] || opts="$opts --without-zlib"
pkg-config --exists icu-uc icu-i18n 2>/dev/null || opts="$opts --without-icu"
recipe="configure $opts"

# The newest postgresql-18 orig tarball of Debian sid, into $DIR/src,
# through a private apt configuration (the system's sources are untouched).
# Prints the tarball's path; fails with apt's messages in $DIR/fetch.log.
fetch_source() {
	local A=$DIR/apt
	mkdir -p "$A"/lists/partial "$A"/cache/archives/partial "$A"/sources.list.d \
		"$A"/preferences.d "$DIR/src" || return 1
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
		> "$A/sources.list"
	local o=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts="$A/sources.list.d"
		-o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache"
		-o Dir::Etc::preferencesparts="$A/preferences.d" -o APT::Sandbox::User=root)
	: > "$DIR/fetch.log"
	apt-get "${o[@]}" -qq update >> "$DIR/fetch.log" 2>&1 || return 1
	(cd "$DIR/src" && apt-get "${o[@]}" -qq source --download-only postgresql-$MAJOR) \
		>> "$DIR/fetch.log" 2>&1 || return 1
	ls -t "$DIR"/src/postgresql-${MAJOR}_*.orig.tar.* 2>/dev/null | head -n 1
}

# Unpacks, configures, builds and installs PostgreSQL from tarball $1, then
# writes the stamp; the build tree is removed afterwards.
build_postgres() {
	local tarball=$1 version build=$DIR/build
	version=$(basename "$tarball" | sed 's/^postgresql-[0-9]*_\(.*\)\.orig\.tar\..*/\1/')
	rm -rf "$build" "$PREFIX" "$DIR/stamp"
	mkdir -p "$build" && tar xf "$tarball" -C "$build" --strip-components=1 || return 1
	echo "== PostgreSQL $MAJOR: building $version ($recipe)"
	(cd "$build" && ./configure $opts > "$DIR/configure.log" 2>&1) ||
		{ tail -n 30 "$DIR/configure.log"; return 1; }
	# make install installs pg_regress and, with --enable-tap-tests,
	# src/test/perl's modules under the pgxs directory
	(cd "$build" && make -j2 -s > "$DIR/build.log" 2>&1 &&
		make -s install >> "$DIR/build.log" 2>&1) ||
		{ tail -n 30 "$DIR/build.log"; return 1; }
	rm -rf "$build"
	echo "$version $recipe" > "$DIR/stamp"
}

t0=$(date +%s)
if [ -f "$DIR/stamp" ] && [ "$(cut -d' ' -f2- "$DIR/stamp")" = "$recipe" ] &&
	[ -x "$PREFIX/bin/pg_config" ]; then
	echo "== PostgreSQL $MAJOR: reusing the build in $DIR ($(cut -d' ' -f1 "$DIR/stamp"))"
else
	tarball=$(fetch_source) ||
		skip "the source package postgresql-$MAJOR could not be had: $(grep -m 1 '^[EW]:' \
			"$DIR/fetch.log" || tail -n 1 "$DIR/fetch.log")"
	[ -n "$tarball" ] || skip "no postgresql-$MAJOR orig tarball in $DIR/src"
	build_postgres "$tarball" || { echo "== PostgreSQL $MAJOR: build FAILED (logs in $DIR)"; exit 1; }
	echo "== PostgreSQL $MAJOR: built and installed in $(( $(date +%s) - t0 ))s"
fi
t1=$(date +%s)

# wasend against 18, in a scratch copy of the tree
PG_CONFIG=$PREFIX/bin/pg_config
SCRATCH=$(mktemp -d /tmp/wasend-pg$MAJOR.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
tar -C "$ROOT" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./test/out --exclude=./test/tmp_check -cf - . | tar -C "$SCRATCH" -xf - || exit 1
echo "== wasend against PostgreSQL $($PG_CONFIG --version | cut -d' ' -f2)"
if ! make -s -C "$SCRATCH" PG_CONFIG="$PG_CONFIG" WERROR=-Werror clean all ||
	! make -s -C "$SCRATCH" PG_CONFIG="$PG_CONFIG" install > /dev/null; then
	echo "== PostgreSQL $MAJOR: wasend does not build against it: TESTS FAILED"
	exit 1
fi

PG_CONFIG="$PG_CONFIG" TESTS="$TESTS18" "$SCRATCH/test/run-tests.sh"
status=$?
echo "== PostgreSQL $MAJOR: wasend's build and tests took $(( $(date +%s) - t1 ))s"
if [ $status -eq 0 ]; then
	echo "== PostgreSQL $MAJOR: all tests passed"
else
	echo "== PostgreSQL $MAJOR: TESTS FAILED"
fi
exit $status
