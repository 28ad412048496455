#!/bin/bash
# bench/run.sh — what `make bench` runs after building and installing.
#
# Scenarios, each on a fresh throwaway cluster, in one invocation so that
# ratios are meaningful on a noisy machine:
#   rate      10,000 messages at 200 msg/s against the mock: wall time,
#             achieved rate, 130429 answers
#   ceiling   20 numbers at 1,000 msg/s against nginx answering canned JSON
#             (unique id per request): end-to-end msg/s, CPU split,
#             statements / WAL bytes / dead tuples per message, sender RSS
#   latency   nginx answering after 100-200 ms (150 +- 50), over TLS, 10
#             numbers at 1,000 msg/s: HTTP/1.1 connection pool against
#             HTTP/2 multiplexing; achieved msg/s, peak requests in flight,
#             connections opened
#   dbcost    bench/dbcost.sh: instructions, HOT share, WAL and table /
#             index growth per message at fillfactor 50, 80 and 100 over
#             a 1M-message run
#   claim     bench/claim.sh: time of one claim of 500 rows at 10k, 100k,
#             1M queued rows (BENCH_BIG=1 adds 10M)
#   budget    bench/budget.sh: what the messaging-limit budget costs a
#             claim of 500 rows, unlimited and with 0 / 10k / 100k
#             recipients in the 24 h window
#   priority  bench/priority.sh: commit-to-API latency of wasend_send
#             while a campaign holds its number at 200 msg/s (mock answer
#             latency 0 and 150 ms)
#   defaults  bench/latency.sh: the real-latency scenario (100-200 ms over
#             TLS, HTTP/2 and HTTP/1.1; 250 ms; 500 ms; 10 numbers x 1,000
#             msg/s) and the plain-HTTP ceiling (30 numbers), with
#             PostgreSQL's and wasend's defaults: msg/s, CPU per message,
#             added latency
#   floor     bench/floor.sh: a bare libcurl client (bench/curlfloor.c)
#             with the senders' options and no SQL, at the headline's
#             rate over TLS HTTP/2 (its loop waking at every event, or
#             once every 5 or 10 ms) and at the plain-HTTP ceiling: what
#             libcurl alone costs per request on this machine
#   jitter    bench/jitter.sh: 10,000 messages at 200 msg/s on a strict
#             receiver whose answers jitter 0-20 ms; the cost of one 130429
#   node      the usual alternative, a Node.js sender (bench/alt:
#             p-limit(10), keep-alive agent, batched UPDATEs through pg)
#             on the same nginx, database and rows, side by side with
#             wasend
# Writes bench/results/report.md, *.csv and PNG charts (gnuplot), and prints
# the summary table.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-bench.XXXXXX)
chmod 755 "$WORK"
NGINX_PID=
MOCK_PID=
CEILING_ROWS=${BENCH_CEILING_ROWS:-200000}
NODE_ROWS=${BENCH_NODE_ROWS:-50000}

cleanup() {
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
	nginx_stop "$WORK"
	nginx_stop "$WORK/lat"
	for d in "$WORK"/c*; do [ -d "$d" ] && cluster_stop "$d"; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*"; }

# new_cluster NAME extra-conf...: a started cluster in $WORK/NAME; sets D, PORT
new_cluster() {
	D=$WORK/$1
	shift
	PORT=$(free_port)
	cluster_init "$D" "$PORT" "shared_preload_libraries = 'wasend,pg_stat_statements'" \
		"pg_stat_statements.track = all" "shared_buffers = 512MB" \
		"synchronous_commit = off" "autovacuum = on" "$@"
	cluster_start "$D"
	psql_ -c "CREATE EXTENSION wasend" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
}
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
drop_cluster() { cluster_stop "$D"; rm -rf "$D"; }

# seed_campaigns FIRST NUMBERS ROWS: seed_sql (test/lib.sh) into the cluster
seed_campaigns() {
	seed_sql "$@" | psql_ >/dev/null
}

# start_campaigns N: start campaigns 1 to N
start_campaigns() {
	psql_ -c "SELECT wasend.wasend_start_campaign(g) FROM generate_series(1, $1) g" >/dev/null
}

# wait_done: until no campaign is running (bounded: 30 min)
wait_done() {
	for _ in $(seq 1 3600); do
		[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status IN ('running', 'scheduled')")" = 0 ] && return 0
		sleep 0.5
	done
	echo "campaigns did not finish" >&2
	return 1
}

# per-second sends (for the charts): second since first send, messages
per_second() {
	psql_ -F ' ' -c "SELECT extract(epoch FROM date_trunc('second', sent_at) - min(date_trunc('second', sent_at)) OVER ())::int, count(*)
	                  FROM wasend.send_queue WHERE sent_at IS NOT NULL GROUP BY date_trunc('second', sent_at) ORDER BY 1" >"$1"
}

# ---------------------------------------------------------------- rate
log "rate: 10,000 messages at 200 msg/s against the mock"
MPORT=$(free_port)
echo '{"numbers": {"106540352242922": {"token": "tok", "rate": 200}}}' >"$WORK/mock.json"
mock_start "$WORK" "$MPORT" "$WORK/mock.json"
new_cluster c_rate "wasend.api_base_url = 'http://127.0.0.1:$MPORT/v21.0'"
psql_ >/dev/null <<'EOF'
SELECT wasend.wasend_add_number('106540352242922', 'tok', 200);
SELECT wasend.wasend_create_campaign('rate', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_enqueue(1, array_agg((15550000000 + g)::text)) FROM generate_series(1, 10000) g;
SELECT wasend.wasend_start_campaign(1);
EOF
wait_done
RATE_LINE=$(psql_ -F ' ' -c "SELECT round(extract(epoch FROM max(sent_at) - min(claimed_at))::numeric, 2),
                              round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric, 1)
                         FROM wasend.send_queue WHERE status = 'sent'")
read -r RATE_WALL RATE_ACHIEVED <<<"$RATE_LINE"
RATE_429=$(curl -s "http://127.0.0.1:$MPORT/__mock/stats" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).by_code["130429"]||0))')
per_second "$RES/rate_per_second.csv"
drop_cluster
kill "$MOCK_PID"; MOCK_PID=

# ---------------------------------------------------------------- nginx
NPORT=$(free_port_pair)
nginx_start "$WORK" "$NPORT"

# ---------------------------------------------------------------- ceiling
log "ceiling: $CEILING_ROWS messages, 20 numbers at 1,000 msg/s, nginx"
new_cluster c_ceiling "wasend.api_base_url = 'http://127.0.0.1:$NPORT/v21.0'" \
	"wasend.max_inflight = 2000" "wasend.batch_size = 1000" "wasend.workers = 2"
seed_campaigns 1000 20 "$CEILING_ROWS"
psql_ -c "CHECKPOINT" -c "SELECT pg_stat_statements_reset()" >/dev/null
WAL0=$(psql_ -c "SELECT pg_current_wal_lsn()")
PM=$(head -1 "$D/data/postmaster.pid")
for _ in $(seq 1 100); do	# the senders register shortly after start
	[ "$(psql_ -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'")" = 2 ] && break
	sleep 0.1
done
SENDERS=$(psql_ -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'")
OTHERS=$(pgrep -P "$PM" | tr '\n' ' ')
NGINXP=$(nginx_workers "$WORK")
S0=$(cpu_of $SENDERS); P0=$(cpu_of $OTHERS); N0=$(cpu_of $NGINXP)
T0=$(date +%s.%N)
start_campaigns 20
: >"$RES/sender_rss.csv"
(
	t=0
	while [ -f "$D/data/postmaster.pid" ]; do
		# private (anonymous) memory: VmRSS would also count the shared
		# buffers a sender has touched
		rss=0
		for p in $SENDERS; do
			v=$(awk '/RssAnon/ {print $2}' "/proc/$p/status" 2>/dev/null)
			rss=$((rss + ${v:-0}))
		done
		echo "$t $((rss / 1024))" >>"$RES/sender_rss.csv"
		sleep 1; t=$((t + 1))
	done
) &
RSS_PID=$!
wait_done
T1=$(date +%s.%N)
S1=$(cpu_of $SENDERS); P1=$(cpu_of $(pgrep -P "$PM" | tr '\n' ' ')); N1=$(cpu_of $NGINXP)
SENDERS_END=$(psql_ -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'")
CPU_NOTE=""
if [ "$SENDERS" != "$SENDERS_END" ]; then
	CPU_NOTE=" (senders restarted during the run: pids $SENDERS -> $SENDERS_END; see ceiling-server.log)"
fi
cp "$D/server.log" "$RES/ceiling-server.log"
kill $RSS_PID 2>/dev/null || true
HZ=$(getconf CLK_TCK)
CEIL_LINE=$(psql_ -F ' ' -c "SELECT count(*), round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric)
                         FROM wasend.send_queue WHERE status = 'sent'")
read -r CEIL_SENT CEIL_RATE <<<"$CEIL_LINE"
CEIL_WALL=$(printf '%.1f' "$(echo "$T1 - $T0" | bc)")
CPU_SENDERS=$(echo "scale=1; ($S1 - $S0) / $HZ" | bc)
CPU_PG=$(echo "scale=1; ($P1 - $P0 - ($S1 - $S0)) / $HZ" | bc)
CPU_NGINX=$(echo "scale=1; ($N1 - $N0) / $HZ" | bc)
DB_LINE=$(psql_ -F ' ' -c "SELECT round((SELECT sum(calls) FROM pg_stat_statements WHERE query !~* 'pg_stat_statements|wasend_start_campaign')::numeric / $CEIL_SENT, 4),
                                 round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$WAL0') / $CEIL_SENT),
                                 (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'send_queue'),
                                 (SELECT round(n_dead_tup::numeric / $CEIL_SENT, 3) FROM pg_stat_user_tables WHERE relname = 'send_queue')")
read -r STMTS_PER_MSG WAL_PER_MSG DEAD DEAD_PER_MSG <<<"$DB_LINE"
RSS_MAX=$(sort -k2 -n "$RES/sender_rss.csv" | tail -1 | awk '{print $2}')
RSS_MIN=$(awk 'NR > 2 {print $2}' "$RES/sender_rss.csv" | sort -n | head -1)
per_second "$RES/ceiling_per_second.csv"
drop_cluster

# ---------------------------------------------------------------- node
log "node: the Node.js alternative vs wasend, $NODE_ROWS messages each, nginx"
(cd "$ROOT/bench/alt" && [ -d node_modules ] || npm install --silent --no-audit --no-fund >/dev/null 2>&1 ||
	(cd "$ROOT/bench/alt" && npm install --no-audit --no-fund))
new_cluster c_node "wasend.api_base_url = 'http://127.0.0.1:$NPORT/v21.0'" "wasend.workers = 0"
psql_ >/dev/null <<EOF
SELECT wasend.wasend_add_number('2001', 'tok', 1000);
SELECT wasend.wasend_create_campaign('node', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, (15550000000 + g)::text FROM generate_series(1, $NODE_ROWS) g;
UPDATE wasend.campaigns SET status = 'running';
VACUUM ANALYZE wasend.send_queue;
EOF
NODE_OUT=$(node "$ROOT/bench/alt/sender.js" --host "$D" --port "$PORT" \
	--api "http://127.0.0.1:$NPORT/v21.0")
NODE_RATE=$(echo "$NODE_OUT" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).msg_per_sec))')
NODE_OK=$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE status = 'sent' AND wa_message_id IS NOT NULL")
drop_cluster
new_cluster c_node_w "wasend.api_base_url = 'http://127.0.0.1:$NPORT/v21.0'" \
	"wasend.max_inflight = 2000" "wasend.batch_size = 1000"
seed_campaigns 3000 20 "$NODE_ROWS"
start_campaigns 20
wait_done
WASEND_SIDE=$(psql_ -c "SELECT round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric) FROM wasend.send_queue WHERE status = 'sent'")
drop_cluster

# ---------------------------------------------------------------- latency
LAT_ROWS=${BENCH_LATENCY_ROWS:-50000}
mkdir -p "$WORK/lat"
chmod 755 "$WORK/lat"
LPORT=$(free_port_pair)
nginx_start "$WORK/lat" "$LPORT" latency
# latency_run VERSION: sets LAT_RATE, LAT_PEAK, LAT_CONNS
latency_run() {
	log "latency: $LAT_ROWS messages, answers after 100-200 ms over TLS, 10 numbers x 1,000 msg/s, HTTP/$1"
	new_cluster "c_latency_$1" "wasend.api_base_url = 'https://127.0.0.1:$((LPORT + 1))/v21.0'" \
		"wasend.ca_file = '$WORK/lat/ca.pem'" "wasend.max_inflight = 2000" \
		"wasend.batch_size = 1000" "wasend.workers = 2" "wasend.http_version = '$1'"
	seed_campaigns 5000 10 "$LAT_ROWS"
	start_campaigns 10
	LAT_PEAK=0
	for _ in $(seq 1 3600); do
		f=$(psql_ -c "SELECT coalesce(sum(in_flight), 0) FROM wasend.wasend_worker_stats()")
		[ "${f:-0}" -gt "$LAT_PEAK" ] && LAT_PEAK=$f
		[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status = 'running'")" = 0 ] && break
		sleep 0.5
	done
	LAT_RATE=$(psql_ -c "SELECT round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric) FROM wasend.send_queue WHERE status = 'sent'")
	LAT_CONNS=$(psql_ -c "SELECT sum(connections_opened) FROM wasend.wasend_worker_stats()")
	drop_cluster
}
latency_run 1.1
H1_RATE=$LAT_RATE H1_PEAK=$LAT_PEAK H1_CONNS=$LAT_CONNS
latency_run 2
H2_RATE=$LAT_RATE H2_PEAK=$LAT_PEAK H2_CONNS=$LAT_CONNS
nginx_stop "$WORK/lat"

# ---------------------------------------------------------------- defaults
# bench/latency.sh: PostgreSQL's and wasend's defaults (fsync and
# synchronous_commit on, nothing tuned), the headline of the README
log "defaults: real latency, the ceiling, with nothing tuned (bench/latency.sh)"
: >"$RES/defaults.csv"
DEF_ROWS=${BENCH_DEFAULTS_ROWS:-30000}
for spec in "100:200 2" "100:200 1.1" "250:250 2" "500:500 2"; do
	read -r dl hv <<<"$spec"
	DELAY=$dl HTTP=$hv ROWS=$DEF_ROWS OUT="$RES/defaults.csv" "$ROOT/bench/latency.sh"
done
DELAY=0 HTTP=1.1 NUMBERS=30 ROWS=${BENCH_CEILING_DEFAULT_ROWS:-100000} OUT="$RES/defaults.csv" "$ROOT/bench/latency.sh"

# ---------------------------------------------------------------- floor
log "floor: libcurl alone, no SQL, at the headline's rate and the ceiling (bench/floor.sh)"
: >"$RES/floor.csv"
# a failed request makes floor.sh exit 1: reported, not fatal to the bench
for t in 0 5 10; do
	wake="at most every $t ms"
	[ "$t" = 0 ] && wake="at every event"
	TICK=$t RATE=6000 ROWS=60000 OUT="$RES/floor.csv" \
		LABEL="TLS HTTP/2, 100-200 ms, 6,000 req/s, the loop wakes $wake" \
		"$ROOT/bench/floor.sh" || log "floor: a client saw failed requests (above)"
done
DELAY=0 HTTP=1.1 MAXIN=128 RATE=11000 ROWS=100000 OUT="$RES/floor.csv" \
	LABEL="plain HTTP/1.1, answers at once, 11,000 req/s, 128 in flight a client" \
	"$ROOT/bench/floor.sh" || log "floor: a client saw failed requests (above)"

# ---------------------------------------------------------------- jitter
log "jitter: the rate on a strict receiver whose answers jitter 0-20 ms (bench/jitter.sh)"
"$ROOT/bench/jitter.sh"

# ---------------------------------------------------------------- dbcost
log "dbcost: claim + record by fillfactor (bench/dbcost.sh)"
"$ROOT/bench/dbcost.sh" 50 80 100

# ---------------------------------------------------------------- claim
log "claim: one claim of 500 rows against a queue of growing size (bench/claim.sh)"
"$ROOT/bench/claim.sh"

# ---------------------------------------------------------------- budget
log "budget: the messaging-limit budget's cost per claim (bench/budget.sh)"
"$ROOT/bench/budget.sh"

# ---------------------------------------------------------------- priority
log "priority: wasend_send on a busy number (bench/priority.sh)"
"$ROOT/bench/priority.sh"
LATENCY_MS=150 "$ROOT/bench/priority.sh"

# ---------------------------------------------------------------- charts
if command -v gnuplot >/dev/null; then
	gnuplot <<EOF
set terminal pngcairo size 900,420
set grid
set output '$RES/rate_per_second.png'
set title 'Rate scenario: messages per second (one number at 200 msg/s)'
set xlabel 'second'; set ylabel 'messages sent'
plot '$RES/rate_per_second.csv' using 1:2 with lines lw 2 title 'wasend', 200 with lines dt 2 title 'limit'
set output '$RES/ceiling_per_second.png'
set title 'Ceiling scenario: messages per second (20 numbers x 1,000 msg/s, nginx)'
plot '$RES/ceiling_per_second.csv' using 1:2 with lines lw 2 title 'wasend'
set output '$RES/claim_vs_queue.png'
set title 'One claim of 500 rows vs rows queued'
set logscale x; set xlabel 'rows queued'; set ylabel 'ms'
plot '$RES/claim_vs_queue.csv' using 1:2 with linespoints lw 2 pt 7 title 'claim'
unset logscale x
set output '$RES/sender_rss.png'
set title 'Sender private memory (RssAnon) during the ceiling run (both senders)'
set xlabel 'second'; set ylabel 'MB'
plot '$RES/sender_rss.csv' using 1:2 with lines lw 2 title 'RSS'
EOF
fi

# ---------------------------------------------------------------- report
RATIO=$(echo "scale=1; $WASEND_SIDE / $NODE_RATE" | bc)
MACHINE="$(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), PostgreSQL $(pg_config --version | awk '{print $2}'), $(curl --version | head -1 | awk '{print $1, $2}')"
# csv_rows FILE FORMAT: each row of FILE (a quoted label that may hold
# commas, then plain fields) as a markdown table row, in FORMAT's order
csv_rows() {
	awk -v fmt="$2" '{
		lab = ""; rest = $0
		if (match(rest, /^"[^"]*",/)) { lab = substr(rest, 2, RLENGTH - 3); rest = substr(rest, RLENGTH + 1) }
		n = split(rest, f, ",")
		printf fmt "\n", lab, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10]
	}' "$1"
}

cat >"$RES/report.md" <<EOF
# wasend benchmark

Machine: $MACHINE. Command: \`make bench\` ($(date -u +%Y-%m-%d)).

| scenario | figure | value |
| --- | --- | --- |
| rate: 10,000 msgs, 1 number at 200 msg/s, mock | wall time / achieved rate / 130429 | ${RATE_WALL} s / ${RATE_ACHIEVED} msg/s / ${RATE_429} |
| ceiling: $CEILING_ROWS msgs, 20 numbers x 1,000 msg/s, nginx | end-to-end rate | ${CEIL_RATE} msg/s (wall ${CEIL_WALL} s) |
| ceiling | CPU seconds: senders / other postgres / nginx | ${CPU_SENDERS} / ${CPU_PG} / ${CPU_NGINX}${CPU_NOTE} |
| latency: $LAT_ROWS msgs, answers after 100-200 ms (nginx), TLS, 10 numbers x 1,000 msg/s, HTTP/1.1 pool | achieved / peak in flight / connections opened | ${H1_RATE} msg/s / ${H1_PEAK} / ${H1_CONNS} |
| latency, same, HTTP/2 multiplexed | achieved / peak in flight / connections opened | ${H2_RATE} msg/s / ${H2_PEAK} / ${H2_CONNS} |
| ceiling | statements per message / WAL bytes per message / dead tuples left | ${STMTS_PER_MSG} / ${WAL_PER_MSG} / ${DEAD} (${DEAD_PER_MSG} per message) |
| ceiling | sender private memory (RssAnon), both senders (min / max) | ${RSS_MIN} / ${RSS_MAX} MB |
| node alternative: $NODE_ROWS msgs, p-limit(10) + keep-alive + batched UPDATE, nginx | rate | ${NODE_RATE} msg/s ($NODE_OK rows sent) |
| wasend, same rows and nginx | rate / ratio | ${WASEND_SIDE} msg/s / ${RATIO}x |
| claim of 500 rows | ms at queue sizes | $(awk '{printf "%s rows: %s ms; ", $1, $2}' "$RES/claim_vs_queue.csv") |

## With the defaults (bench/latency.sh; fsync and synchronous_commit on, nothing tuned)

| scenario | msg/s | peak in flight | CPU us/msg: senders / other postgres / nginx | latency p50 / p99 ms | added p50 / p99 ms | sender RSS MB |
| --- | --- | --- | --- | --- | --- | --- |
$(csv_rows "$RES/defaults.csv" '| %s | %s | %s | %s / %s / %s | %s / %s | %s / %s | %s |')

## libcurl alone, no SQL (bench/floor.sh; two clients, as the two senders)

| scenario | req/s | client CPU us/req | added p50 / p99 ms | nginx us/req |
| --- | --- | --- | --- | --- |
$(csv_rows "$RES/floor.csv" '| %s | %s | %s | %s / %s | %s |')

## Jitter and a stray 130429 (bench/jitter.sh)

| run | answer jitter ms | msg/s | wall s | 130429 | cost vs clean |
| --- | --- | --- | --- | --- | --- |
$(awk -F, '{printf "| %s | 0-%s | %s | %s | %s | %s%% |\n", $1, $2, $3, $4, $5, $6}' "$RES/jitter.csv")

Charts: rate_per_second.png, ceiling_per_second.png, claim_vs_queue.png, sender_rss.png.

## Database cost by fillfactor (bench/dbcost.sh)

$(cat "$RES/dbcost.md")
EOF
echo
cat "$RES/report.md"
