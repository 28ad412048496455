#!/bin/bash
# test/run-tests.sh — what `make test` runs after building and installing:
#   1. pg_regress on a temporary instance (the SQL surface): test/sql/*.sql
#      against test/expected/*.out, as `make installcheck` runs them;
#   2. the TAP integration tests in test/t/ (real senders against the mock
#      Graph API, on throwaway clusters).
# Runs as the postgres user in a scratch copy (initdb refuses root).
# Exits non-zero on any failure.  TESTS="t/001_send.pl ..." selects TAP tests;
# PG_CONFIG=/path/to/pg_config tests against that installation (test/pg18.sh)
# instead of the first pg_config in PATH.  NOREGRESS=1 skips the structure
# check and pg_regress (test/ha/measure.sh runs one TAP file many times).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(cd "$(dirname "$("$PG_CONFIG" --pgxs)")/../.." && pwd)
WORK=$(mktemp -d /tmp/wasend-test.XXXXXX)
status=0

cleanup() {
	if [ $status -eq 0 ] && [ -z "${KEEP:-}" ]; then
		rm -rf "$WORK"
	else
		echo "test files kept in $WORK"
	fi
}
trap cleanup EXIT

cp -r "$ROOT/sql" "$ROOT/test" "$ROOT/contrib" "$WORK/"
# the workers' statements, for the tests that plan them as the senders do
mkdir -p "$WORK/src"
cp "$ROOT/src/queue.sql" "$ROOT/src/queue_sql.awk" "$WORK/src/"
chown -R postgres: "$WORK"

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -n "${NOREGRESS:-}" ]; then
	echo "== structure and pg_regress skipped (NOREGRESS)"
else
	echo "== structure of the code"
	if ! perl "$ROOT/test/structure.pl" "$ROOT"; then
		status=1
	fi

	regress_tests=$(sed -n 's/^REGRESS *= *//p' "$ROOT/Makefile")
	echo "== pg_regress: $regress_tests"
	if ! (cd "$WORK" && as_pg "$PGXS_DIR/src/test/regress/pg_regress" \
		--temp-instance="$WORK/tmp_regress" --bindir="$PGBIN" \
		--inputdir=test --outputdir=out --temp-config=test/regress.conf \
		$regress_tests); then
		status=1
		cat "$WORK/out/regression.diffs" 2>/dev/null
	fi
fi

echo "== TAP integration tests"
cd "$WORK/test" || exit 1
tap_tests=${TESTS:-$(ls t/*.pl)}
if [ -z "$tap_tests" ]; then
	echo "no TAP tests found" >&2
	exit 1
fi
# the TAP logs go to tmp_check/log: PostgreSQL 15 puts them there, newer
# releases (18 here) where TESTLOGDIR says, else in log/
if ! as_pg env PATH="$PGBIN:$PATH" \
	PERL5LIB="$PGXS_DIR/src/test/perl:$WORK/test/lib" \
	PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
	TESTLOGDIR="$WORK/test/tmp_check/log" \
	WASEND_ROOT="$WORK" \
	prove --timer $tap_tests; then
	status=1
	for f in "$WORK"/test/tmp_check/log/regress_log_*; do
		[ -f "$f" ] || continue
		echo "---- $f (last 60 lines)"
		tail -n 60 "$f"
	done
fi

[ $status -eq 0 ] && echo "== all tests passed" || echo "== TESTS FAILED"
exit $status
