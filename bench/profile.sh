#!/bin/bash
# bench/profile.sh — what `make profile` runs: the ceiling scenario under
# callgrind, so that where a sender spends its instructions can be read
# off and compared between builds.  callgrind counts instructions, not
# seconds: the same build and rows give the same counts however busy the
# machine is, which wall-clock figures on this VM never do.
#
# One sender (wasend.workers = 1), PROFILE_ROWS messages (default 5,000)
# over 20 numbers at 1,000 msg/s against nginx answering canned JSON.  The
# whole postmaster runs under valgrind (--trace-children=yes: backends are
# forked, not exec'd, so each one writes its own profile).  Writes
# bench/results/profile.md (instructions per message, the share of each
# shared object, the 30 functions with most instructions of their own) and
# keeps the sender's callgrind.out for callgrind_annotate / kcachegrind.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-profile.XXXXXX)
chmod 755 "$WORK"
ROWS=${PROFILE_ROWS:-5000}
D=$WORK/c
PGPID=

cleanup() {
	[ -n "$PGPID" ] && stop_postmaster
	nginx_stop "$WORK"
	rm -rf "$WORK"
}
# fast shutdown (SIGINT to the postmaster itself: the background job that
# started it ignores SIGINT), bounded; each process writes its profile
stop_postmaster() {
	kill -INT "$(head -1 "$D/data/postmaster.pid")" 2>/dev/null || true
	for _ in $(seq 1 600); do
		[ -f "$D/data/postmaster.pid" ] || break
		sleep 0.5
	done
	wait "$PGPID" 2>/dev/null || true
	PGPID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NPORT=$(free_port_pair)
nginx_start "$WORK" "$NPORT"
PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.api_base_url = 'http://127.0.0.1:$NPORT/v21.0'" \
	"wasend.workers = 1" "wasend.max_inflight = 2000" "wasend.batch_size = 1000" \
	"shared_buffers = 512MB" "synchronous_commit = off" "autovacuum = off"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }

# Seed with a normal server, then restart it under valgrind.
cluster_start "$D"
psql_ >/dev/null <<SQL
CREATE EXTENSION wasend;
$(seed_sql 1000 20 "$ROWS")
CHECKPOINT;
SQL
cluster_stop "$D"

mkdir -p "$WORK/cg"
chown postgres: "$WORK/cg"
echo "== starting the cluster under callgrind (slow: ~50x)"
as_pg valgrind --tool=callgrind --trace-children=yes --quiet \
	--callgrind-out-file="$WORK/cg/callgrind.out.%p" \
	"$PGBIN/postgres" -D "$D/data" >"$D/server.log" 2>&1 &
PGPID=$!
for _ in $(seq 1 600); do	# bounded: 5 minutes
	as_pg "$PGBIN/pg_isready" -q -h "$D" -p "$PORT" && break
	sleep 0.5
done
SENDER=
for _ in $(seq 1 600); do
	SENDER=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'")
	[ -n "$SENDER" ] && break
	sleep 0.5
done
[ -n "$SENDER" ] || { echo "the sender did not start" >&2; exit 1; }
echo "== sending $ROWS messages (sender pid $SENDER)"
psql_ -c "SELECT wasend.wasend_start_campaign(g) FROM generate_series(1, 20) g" >/dev/null
for _ in $(seq 1 7200); do	# bounded: 1 hour
	[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status = 'running'")" = 0 ] && break
	sleep 0.5
done
SENT=$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'")
[ "$SENT" = "$ROWS" ] || { echo "only $SENT of $ROWS rows sent" >&2; exit 1; }
stop_postmaster

OUT=$WORK/cg/callgrind.out.$SENDER
cp "$OUT" "$RES/callgrind.out.sender"
# "totals:", not "summary:" (in a forked child the latter is not the total)
TOTAL=$(sed -n 's/^totals: //p' "$OUT")
callgrind_annotate --threshold=100 "$OUT" 2>/dev/null |
	sed -n '/file:function/,$p' | sed 1,2d | grep -E '^ *[0-9]' >"$WORK/functions.txt"
{
	echo "# wasend callgrind profile: one sender, $ROWS messages"
	echo
	echo "Command: \`make profile\` ($(date -u +%Y-%m-%d)); nginx answering canned JSON; 20 numbers x 1,000 msg/s."
	echo
	echo "Instructions executed by the sender: $(printf "%'d" "$TOTAL"), $(printf "%'d" $((TOTAL / ROWS))) per message (claim, request, record, bookkeeping)."
	echo
	echo "| shared object | instructions | share |"
	echo "| --- | --- | --- |"
	sed -E 's/^ *([0-9,]+) .*\[([^]]*)\]$/\1 \2/' "$WORK/functions.txt" | tr -d , | grep -v '%' |
		awk -v total="$TOTAL" '{n = split($2, p, "/"); o[p[n]] += $1}
			END {for (k in o) printf "%d %s %.1f\n", o[k], k, 100 * o[k] / total}' |
		sort -rn | head -8 | awk '{printf "| %s | %d | %s%% |\n", $2, $1, $3}'
	echo
	echo "Top functions (instructions of their own, share of the sender's total):"
	echo
	echo '```'
	head -30 "$WORK/functions.txt" | sed -E 's/ \([ 0-9.]+%\)//' |
		awk -v total="$TOTAL" '{v = $1; gsub(",", "", v); $1 = ""; printf "%13d %5.1f%% %s\n", v, 100 * v / total, substr($0, 2)}' |
		cut -c1-150
	echo '```'
} >"$RES/profile.md"
cat "$RES/profile.md"
