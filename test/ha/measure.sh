#!/bin/bash
# test/ha/measure.sh [RUNS] — accounting through a Patroni switchover and a
# crash failover, measured: runs test/t/055_patroni.pl RUNS times (default
# 3) with wasend.durability = local and RUNS times with the extension's
# default (nothing set), in measure mode (WASEND_HA_MEASURE=1: the scenarios
# run, the accounting is printed and not asserted), and prints a markdown
# table of the figures, one line per run and scenario (switchover, crash,
# crash-stalled-standby: see the test's header).  A run whose harness
# failed (no election, a timeout) gives a line with the reason instead.
#
# Needs the extension built and installed for the pg_config in PATH
# (`make install`), PostgreSQL 15 and the packages of test/deps.sh
# (patroni, etcd-server, etcd-client). Run as root (the tests run as
# postgres) or as postgres. Each run's log goes to $OUT (default: a new
# directory under /tmp), named in the output.
#   e.g.  make install && test/ha/measure.sh 3
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${1:-3}
OUT=${OUT:-$(mktemp -d /tmp/wasend-ha-measure.XXXXXX)}
mkdir -p "$OUT" && chmod 755 "$OUT" || exit 1
rows=()

for durability in local default; do
	for run in $(seq 1 "$RUNS"); do
		log="$OUT/$durability.$run.log"
		if [ "$durability" = default ]; then d=""; else d=$durability; fi
		echo "measure: durability=$durability run $run/$RUNS -> $log" >&2
		WASEND_HA_DURABILITY=$d WASEND_HA_MEASURE=1 NOREGRESS=1 \
			TESTS=t/055_patroni.pl "$ROOT/test/run-tests.sh" >"$log" 2>&1
		rc=$?
		found=0
		while read -r line; do
			# HA-SUMMARY scenario=... durability=... duplicates=... unmarked=... uncertain=... stop_kept=... [kill_to_send=...]
			declare -A f=()
			for kv in ${line#*HA-SUMMARY }; do f[${kv%%=*}]=${kv#*=}; done
			rows+=("| ${f[scenario]} | $durability | $run | ${f[duplicates]} | ${f[unmarked]} | ${f[uncertain]} | ${f[stop_kept]} | ${f[kill_to_send]:-} |")
			found=1
			unset f
		done < <(grep -o 'HA-SUMMARY .*' "$log")
		if [ $found = 0 ]; then
			reason=$(grep -o 'HARNESS FAILURE: .*' "$log" | head -1)
			rows+=("| (no figures: ${reason:-test exited $rc, see the log}) | $durability | $run | | | | | |")
		fi
	done
done

echo
echo "| scenario | durability | run | duplicates | unmarked duplicates | uncertain | STOP kept | kill → first send (s) |"
echo "|---|---|---|---|---|---|---|---|"
# switchover rows first, then the crash rows, each by durability and run
printf '%s\n' "${rows[@]}" | grep '^| switchover' || true
printf '%s\n' "${rows[@]}" | grep '^| crash |' || true
printf '%s\n' "${rows[@]}" | grep '^| crash-stalled' || true
printf '%s\n' "${rows[@]}" | grep -v '^| switchover\|^| crash' || true
echo
echo "logs: $OUT"
