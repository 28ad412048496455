#!/bin/bash
# bench/latency.sh — the real-latency scenario with the defaults a user
# gets: nginx answering every send after a delay, over TLS; NUMBERS numbers
# at RATE msg/s; ROWS messages; PostgreSQL's defaults (fsync and
# synchronous_commit on) and wasend's (no max_inflight, batch_size or
# workers set) unless CONF adds lines.
#
#   DELAY   nginx's answer delay, "MIN:MAX" ms (uniform; default 100:200);
#           0: nginx answers at once, over plain HTTP (the ceiling)
#   HTTP    wasend.http_version: 2 (default) or 1.1
#   NUMBERS, RATE, ROWS   default 10, 1000, 30000
#   CONF    extra postgresql.conf lines, ";"-separated (labelled in the
#           output)
#   LABEL   the row's name in the output (default: the settings)
#
# Prints one line: achieved msg/s, peak requests in flight, sender CPU per
# message (us; a sender runs its own SQL, so this includes the claims and
# records), the rest of PostgreSQL's CPU per message, nginx's CPU per
# message, the latency the senders measured (p50/p99, wasend_worker_stats,
# the worse sender's) and the part of it wasend added (what they measured
# minus the server's Server-Timing), and the senders' peak private memory.  With OUT=FILE the
# line is also appended to FILE as CSV.  With RSS_LOG=FILE, every sample
# (4 a second) appends "unix-time senders'-RssAnon-MB rows-sent
# requests-in-flight" to FILE.
# With SERVER_LOG=FILE, the cluster's server log is copied to FILE at the end.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
DELAY=${DELAY:-100:200}
HTTP=${HTTP:-2}
NUMBERS=${NUMBERS:-10}
RATE=${RATE:-1000}
ROWS=${ROWS:-30000}
CONF=${CONF:-}
LABEL=${LABEL:-"$NUMBERS x $RATE msg/s, delay ${DELAY} ms, HTTP/$HTTP${CONF:+, $CONF}"}
WORK=$(mktemp -d /tmp/wasend-latency.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	nginx_stop "$WORK"
	if [ -n "${SERVER_LOG:-}" ]; then cp "$D/server.log" "$SERVER_LOG" || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# DELAY=0, the ceiling: canned answers at once, plain HTTP (HTTP/1.1)
nginx_delay_start "$WORK" "$DELAY"
URL=$NGINX_API
PORT=$(free_port)
IFS=';' read -r -a EXTRA <<<"$CONF"
# test/lib.sh's clusters run with fsync = off; the headline does not
cluster_init "$D" "$PORT" "fsync = on" "synchronous_commit = on" \
	"wasend.api_base_url = '$URL'" \
	"wasend.ca_file = '$WORK/ca.pem'" "wasend.http_version = '$HTTP'" \
	${EXTRA[@]+"${EXTRA[@]}"}
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ -c "CREATE EXTENSION wasend" >/dev/null
seed_sql 5000 "$NUMBERS" "$ROWS" | sed "s/, 'tok', 1000)/, 'tok', $RATE)/" | psql_ >/dev/null
psql_ -c "CHECKPOINT" >/dev/null

NSEND=$(psql_ -c "SHOW wasend.workers")
for _ in $(seq 1 100); do
	[ "$(psql_ -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'")" = "$NSEND" ] && break
	sleep 0.1
done
PM=$(head -1 "$D/data/postmaster.pid")
SENDERS=$(psql_ -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'")
NGINXP=$(nginx_workers "$WORK")
S0=$(cpu_of $SENDERS); P0=$(cpu_of $(pgrep -P "$PM")); N0=$(cpu_of $NGINXP)

psql_ -c "SELECT wasend.wasend_start_campaign(g) FROM generate_series(1, $NUMBERS) g" >/dev/null
PEAK=0 RSS=0
for _ in $(seq 1 7200); do
	f=$(psql_ -c "SELECT coalesce(sum(in_flight), 0) FROM wasend.wasend_worker_stats()")
	[ "${f:-0}" -gt "$PEAK" ] && PEAK=$f
	r=0
	for p in $SENDERS; do
		v=$(awk '/RssAnon/ {print $2}' "/proc/$p/status" 2>/dev/null)
		r=$((r + ${v:-0}))
	done
	[ "$r" -gt "$RSS" ] && RSS=$r
	[ -n "${RSS_LOG:-}" ] && echo "$(date +%s.%N) $((r / 1024)) $(psql_ -c "SELECT coalesce(sum(sent), 0) FROM wasend.wasend_worker_stats()") ${f:-0}" >>"$RSS_LOG"
	[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status IN ('running', 'scheduled')")" = 0 ] && break
	sleep 0.25
done
S1=$(cpu_of $SENDERS); P1=$(cpu_of $(pgrep -P "$PM")); N1=$(cpu_of $NGINXP)
HZ=$(getconf CLK_TCK)
read -r SENT MSGS <<<"$(psql_ -F ' ' -c "SELECT count(*), round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric)
                                          FROM wasend.send_queue WHERE status = 'sent'")"
[ "$SENT" = "$ROWS" ] || { echo "only $SENT of $ROWS rows sent" >&2; exit 1; }
US_SENDER=$(( (S1 - S0) * 1000000 / HZ / SENT ))
US_PG=$(( (P1 - P0 - (S1 - S0)) * 1000000 / HZ / SENT ))
US_NGINX=$(( (N1 - N0) * 1000000 / HZ / SENT ))
# each sender's percentiles; the worse sender's are shown
LAT=$(psql_ -F ' ' -c "SELECT round(max(latency_p50_ms)::numeric, 1), round(max(latency_p99_ms)::numeric, 1),
                              coalesce(round(max(added_p50_ms)::numeric, 1)::text, '-'),
                              coalesce(round(max(added_p99_ms)::numeric, 1)::text, '-')
                         FROM wasend.wasend_worker_stats() WHERE sent > 0" 2>/dev/null ||
	echo "- - - -")	# an install older than 0.5.0 has no percentiles
read -r LAT_P50 LAT_P99 ADD_P50 ADD_P99 <<<"$LAT"
printf '%s | %s msg/s | peak in flight %s | CPU us/msg: senders %s, postgres %s, nginx %s | latency p50 %s p99 %s ms | added p50 %s p99 %s ms | sender RSS %s MB\n' \
	"$LABEL" "$MSGS" "$PEAK" "$US_SENDER" "$US_PG" "$US_NGINX" "$LAT_P50" "$LAT_P99" "$ADD_P50" "$ADD_P99" "$((RSS / 1024))"
if [ -n "${OUT:-}" ]; then
	echo "\"$LABEL\",$MSGS,$PEAK,$US_SENDER,$US_PG,$US_NGINX,$LAT_P50,$LAT_P99,$ADD_P50,$ADD_P99,$((RSS / 1024))" >>"$OUT"
fi
