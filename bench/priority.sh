#!/bin/bash
# bench/priority.sh — how soon a wasend_send reaches the API while a bulk
# campaign holds its number at the number's limit.
#
# One number at 200 msg/s, a 20,000-row campaign sending on it.  Once the
# campaign runs at full rate, one session makes 200 wasend_send calls
# spread over 10 s (one every 50 ms), each in its own transaction; each
# transaction stamps clock_timestamp() just before its COMMIT, so the
# latency counted (the mock's arrival time minus that stamp) includes the
# commit itself: it is never less than the real commit-to-API latency.
# Reported: p50, p95, p99 and max of that latency, and the most messages
# the number got in any one-second window (all of them, campaign and
# wasend_send: the rate must hold).
#
# Settings: PostgreSQL's defaults (fsync and synchronous_commit on) and
# wasend's (2 senders, rate_headroom 0.985), plain HTTP to the mock,
# which answers at once (LATENCY_MS=150 bench/priority.sh adds a latency
# to every answer).  Writes bench/results/priority.csv.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
LATENCY_MS=${LATENCY_MS:-0}
WORK=$(mktemp -d /tmp/wasend-priority.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	[ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MPORT=$(free_port)
cat >"$WORK/mock.json" <<EOF
{"numbers": {"9001": {"token": "tok", "rate": 200}}, "latency_ms": $LATENCY_MS}
EOF
mock_start "$WORK" "$MPORT" "$WORK/mock.json"

PORT=$(free_port)
# cluster_init turns fsync off for the other benchmarks: on again here
cluster_init "$D" "$PORT" "fsync = on" "wasend.api_base_url = 'http://127.0.0.1:$MPORT/v21.0'" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'EOF'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('9001', 'tok', 200);
SELECT wasend.wasend_create_campaign('bulk', 1, '{"type":"text","text":{"body":"bulk"}}');
SELECT wasend.wasend_enqueue(1, array_agg((15559000000 + g)::text)) FROM generate_series(1, 20000) g;
CREATE TABLE bench_commits (recipient text PRIMARY KEY, committing_at timestamptz);
SELECT wasend.wasend_start_campaign(1);
EOF

# wait (bounded) until the campaign runs at full rate
for _ in $(seq 1 300); do
	n=$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'")
	[ "$n" -ge 2000 ] && break
	sleep 0.1
done
echo "campaign running: $n sent"

# 200 transactional sends, one every 50 ms, each its own transaction
{
	for i in $(seq 1 200); do
		r=$((15559900000 + i))
		echo "BEGIN;"
		echo "SELECT wasend.wasend_send(1, '$r', '{\"type\":\"text\",\"text\":{\"body\":\"otp $i\"}}');"
		echo "INSERT INTO bench_commits VALUES ('$r', clock_timestamp());"
		echo "COMMIT;"
		echo "SELECT pg_sleep(0.05);"
	done
} >"$WORK/sends.sql"
chmod 644 "$WORK/sends.sql"
psql_ -f "$WORK/sends.sql" >/dev/null

# all 200 sent (bounded wait)
for _ in $(seq 1 300); do
	n=$(psql_ -c "SELECT count(*) FROM wasend.send_queue q JOIN bench_commits b USING (recipient) WHERE q.status = 'sent'")
	[ "$n" -eq 200 ] && break
	sleep 0.1
done
psql_ -c "SELECT wasend.wasend_pause_campaign(1)" >/dev/null

curl -s "http://127.0.0.1:$MPORT/__mock/log" >"$WORK/mocklog.csv"
chmod 644 "$WORK/mocklog.csv"
psql_ >"$WORK/result.txt" <<EOF
CREATE TABLE mocklog (t_ms numeric, phone_number_id text, recipient text, type text,
                      http_status int, code text, wamid text, opaque text);
\copy mocklog FROM '$WORK/mocklog.csv' WITH (FORMAT csv, HEADER true)
WITH l AS (
  SELECT m.t_ms - extract(epoch FROM b.committing_at) * 1000 AS ms
    FROM bench_commits b JOIN mocklog m USING (recipient) WHERE m.http_status = 200)
SELECT count(*),
       round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1),
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
       round(max(ms)::numeric, 1),
       (SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY t_ms RANGE BETWEEN 999.999 PRECEDING AND CURRENT ROW) AS n
                              FROM mocklog WHERE http_status = 200) w),
       (SELECT count(*) FROM mocklog WHERE http_status <> 200)
  FROM l;
EOF
IFS='|' read -r count p50 p95 p99 max maxwin refused <"$WORK/result.txt"
# one line per mock latency: mock_latency_ms,sends,p50,p95,p99,max,max_per_second,refused
touch "$RES/priority.csv"
grep -v "^$LATENCY_MS," "$RES/priority.csv" >"$WORK/p.csv" || true
echo "$LATENCY_MS,$count,$p50,$p95,$p99,$max,$maxwin,$refused" >>"$WORK/p.csv"
sort -n "$WORK/p.csv" >"$RES/priority.csv"
echo "wasend_send while a campaign holds the number at 200 msg/s (mock latency ${LATENCY_MS} ms):"
echo "  $count sends; commit to API: p50 $p50 ms, p95 $p95 ms, p99 $p99 ms, max $max ms"
echo "  most messages in any second: $maxwin (limit 200); refused (130429): $refused"
