#!/bin/bash
# bench/waiting.sh — what rows that wait cost the senders: a campaign of
# ROWS rows (default 1,000,000) that all wait, on PostgreSQL's and
# wasend's defaults (one number at the default 80 msg/s, the mock Graph
# API answering its account GET), for each kind of wait:
#
#   window   a send window per recipient, closed now in every row's zone;
#   limit    a messaging limit of 250 new recipients, all spent: every row
#            is a new recipient.
#
# The rows are queued already decided, as a claim leaves a row that waits
# (waiting_for, next_attempt_at when it may go), so that the figures are
# those of the steady state, however long the senders take to decide a
# million rows; with DECIDE=1 they are queued fresh instead, and decide_s
# is how long the senders took to decide them all.
#
# For each it prints, and writes to bench/results/waiting.csv (kind, rows,
# decide_s, claim_ms, sender_cpu_s):
#
#   decide_s      (DECIDE=1) seconds from the start until every row waits;
#   claim_ms      the senders' own claim_lock + claim statements (read out
#                 of src/queue.sql) for that campaign, 80 rows, median of
#                 five, each rolled back, while every row waits;
#   sender_cpu_s  CPU seconds the senders used in the next 20 s.
#
# Runnable by hand: [DECIDE=1] bench/waiting.sh [ROWS].
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
ROWS=${1:-1000000}
WORK=$(mktemp -d /tmp/wasend-waiting.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c
MOCK_PID=

cleanup() {
	cluster_stop "$D"
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

queue_sql sql_claim_lock >"$WORK/claim_lock.sql"
queue_sql sql_claim >"$WORK/claim.sql"
# the claim's parameters: (ids, lims, token, after, portfolios[, scans])
if grep -q '\$6' "$WORK/claim.sql"; then
	CLAIM_TYPES="bigint[], int[], int, bigint[], text[], int[]"
	CLAIM_ARGS="'{1}', '{80}', 1, '{0}', '{}', '{80}'"
else
	CLAIM_TYPES="bigint[], int[], int, bigint[], text[]"
	CLAIM_ARGS="'{1}', '{80}', 1, '{0}', '{}'"
fi

MPORT=$(free_port)
cat >"$WORK/mock.json" <<'EOF'
{"numbers": {"106540352242922": {"token": "tok", "rate": 80,
  "account": {"tier": "TIER_250", "display_phone_number": "15550000001"}}}}
EOF
mock_start "$WORK" "$MPORT" "$WORK/mock.json"

psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }

# the senders' pids
senders() {
	psql_ -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'"
}

# run KIND: a cluster of its own, one campaign of ROWS rows that all wait
# for KIND
run() {
	local kind=$1 zone t0 t1 decide times claim s cpu0 cpu1 cpu
	PORT=$(free_port)
	cluster_stop "$D"
	rm -rf "$D"
	cluster_init "$D" "$PORT" "wasend.api_base_url = 'http://127.0.0.1:$MPORT/v21.0'" >/dev/null
	cluster_start "$D"
	psql_ >/dev/null <<'EOF'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('106540352242922', 'tok');
EOF
	for _ in $(seq 1 600); do	# the number sends once its tier was read
		[ "$(psql_ -c "SELECT messaging_limit IS NOT NULL FROM wasend.whatsapp_numbers")" = t ] && break
		sleep 0.1
	done
	# a zone where it is 20:00 to 20:59 now: outside 08:00-16:00
	zone=$(psql_ -c "SELECT name FROM pg_timezone_names
	                  WHERE name ~ '^Etc/GMT[-+][0-9]+\$' AND extract(hour FROM now() AT TIME ZONE name) = 20
	                  ORDER BY name LIMIT 1")
	if [ "$kind" = window ]; then
		psql_ >/dev/null <<EOF
SELECT wasend.wasend_create_campaign('waiting', 1, '{"type":"text","text":{"body":"x"}}',
       send_window_start => '08:00', send_window_end => '16:00');
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone)
SELECT 1, (15550000000 + g)::text, '$zone' FROM generate_series(1, $ROWS) g;
EOF
		[ -n "${DECIDE:-}" ] || psql_ -c "UPDATE wasend.send_queue
		    SET waiting_for = 'send_window',
		        next_attempt_at = wasend._window_opens('08:00', '16:00', '$zone')" >/dev/null
	else
		psql_ >/dev/null <<EOF
INSERT INTO wasend.recipient_window (portfolio, recipient, last_at)
SELECT 'number:1', (14440000000 + g)::text, now() - interval '1 hour' FROM generate_series(1, 250) g;
SELECT wasend.wasend_create_campaign('waiting', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, (15550000000 + g)::text FROM generate_series(1, $ROWS) g;
EOF
		[ -n "${DECIDE:-}" ] || psql_ -c "UPDATE wasend.send_queue
		    SET waiting_for = 'messaging_limit', next_attempt_at = now() + interval '23 hours'" >/dev/null
	fi
	psql_ -c "VACUUM ANALYZE wasend.send_queue" >/dev/null
	t0=$(date +%s.%N)
	psql_ -c "SELECT wasend.wasend_start_campaign(1)" >/dev/null
	decide=-
	if [ -n "${DECIDE:-}" ]; then
		for _ in $(seq 1 7200); do	# bounded: an hour
			[ "$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE waiting_for IS NOT NULL")" = "$ROWS" ] && break
			sleep 0.5
		done
		t1=$(date +%s.%N)
		decide=$(echo "$t1 - $t0" | bc)
		[ "$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE waiting_for IS NOT NULL")" = "$ROWS" ] ||
			decide="not all after $decide"
	else
		sleep 5	# the senders see the campaign and make their first claims
	fi

	{
		echo "SET random_page_cost = 1.1; SET jit = off;"
		echo "PREPARE lock(bigint[]) AS $(cat "$WORK/claim_lock.sql");"
		echo "PREPARE claim($CLAIM_TYPES) AS $(cat "$WORK/claim.sql");"
		echo '\timing on'
		for _ in 1 2 3 4 5; do
			echo "BEGIN;"
			echo "EXECUTE lock('{1}');"
			echo "EXECUTE claim($CLAIM_ARGS);"
			echo "ROLLBACK;"
		done
	} >"$WORK/run.sql"
	chmod 644 "$WORK/run.sql"
	# each claim's time: lock + claim ("Time:" lines 2 and 3 of every 4)
	times=$(psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' |
		awk 'NR % 4 == 2 { l = $1 } NR % 4 == 3 { print l + $1 }')
	claim=$(echo "$times" | sort -n | sed -n 3p)

	s=$(senders)
	cpu0=$(cpu_of $s)
	sleep 20
	cpu1=$(cpu_of $s)
	cpu=$(echo "scale=2; ($cpu1 - $cpu0) / $(getconf CLK_TCK)" | bc)
	echo "$kind,$ROWS,$decide,$claim,$cpu" >>"$RES/waiting.csv"
	echo "== $kind: $ROWS rows waiting (all decided after: $decide s); a claim of 80 takes $claim ms;" \
		"the senders used $cpu s of CPU in 20 s"
}

: >"$RES/waiting.csv"
run window
run limit
