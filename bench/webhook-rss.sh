#!/bin/bash
# bench/webhook-rss.sh — does the webhook worker's memory stay flat?
#
# On a throwaway cluster (test/lib.sh), seeds the sent messages of
# WEBHOOK_RSS_STATUSES / 3 rows (default 1,000,000 statuses), then posts
# their sent, delivered and read statuses, shuffled and signed, through
# test/webhook-load.js in payloads of WEBHOOK_RSS_PER_POST statuses
# (default 100), 32 at a time, in ten rounds.  Before the first round and
# after each, it prints the "wasend webhook" worker's memory from
# /proc/PID/status:
#   VmRSS     resident set, shared buffers it touched included
#   RssAnon   its private memory: what a leak makes grow
#   RssShmem  the shared buffers it touched (bounded by shared_buffers)
#   VmHWM     peak VmRSS so far
# and at the end that every row was read.  Run as root (the cluster runs as
# the postgres user).
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
TOTAL=${WEBHOOK_RSS_STATUSES:-1000000}
PER_POST=${WEBHOOK_RSS_PER_POST:-100}
ROUNDS=10
WORK=$(mktemp -d /tmp/wasend-webhook-rss.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
WPORT=$(free_port)
SECRET=bench-secret-$RANDOM$RANDOM
cluster_init "$D" "$PORT" "wasend.workers = 0" "wasend.webhook_port = $WPORT" \
	"wasend.app_secret_file = '$D/app_secret'"
# the secret file as the server wants it: owned by its user, mode 0600
printf '%s\n' "$SECRET" >"$D/app_secret"
chown postgres: "$D/app_secret"
chmod 600 "$D/app_secret"
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }

MESSAGES=$(((TOTAL + 2) / 3))
psql_ >/dev/null <<SQL
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1401', 'tok', 1000);
SELECT wasend.wasend_create_campaign('rss', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient, status, wa_message_id, sent_at)
SELECT 1, (15514000000 + g)::text, 'sent', 'wamid.rss-' || g, now()
  FROM generate_series(1, $MESSAGES) g;
VACUUM ANALYZE wasend.send_queue;
SQL

PID=
for _ in $(seq 1 100); do
	PID=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend webhook'")
	[ -n "$PID" ] && break
	sleep 0.1
done
[ -n "$PID" ] || { echo "the webhook worker did not start" >&2; exit 1; }

# the wamids, in ROUNDS files of about equal size
seq 1 "$MESSAGES" | sed 's/^/wamid.rss-/' >"$WORK/wamids"
split -n "l/$ROUNDS" -d "$WORK/wamids" "$WORK/round."
chmod 644 "$WORK"/round.*

mem() {
	awk '/^(VmRSS|RssAnon|RssShmem|VmHWM):/ { v[$1] = $2 }
		END { printf "%9d %9d %9d %9d", v["VmRSS:"], v["RssAnon:"], v["RssShmem:"], v["VmHWM:"] }' \
		"/proc/$PID/status"
}

echo "webhook worker pid $PID; $((MESSAGES * 3)) statuses in payloads of $PER_POST, $ROUNDS rounds"
printf '%-9s %9s %9s %9s %9s %9s  %s\n' "" statuses "VmRSS kB" "RssAnon" "RssShmem" "VmHWM" "round: statuses/s, answers"
printf '%-9s %9d %s\n' start 0 "$(mem)"
done_statuses=0
t0=$(date +%s.%N)
for f in "$WORK"/round.*; do
	out=$(node "$WASEND_ROOT/test/webhook-load.js" --url "http://127.0.0.1:$WPORT/" \
		--secret "$SECRET" --wamids "$f" --per-payload "$PER_POST" --concurrency 32)
	n=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.statuses)' "$out")
	rate=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.statuses_per_sec + " " + JSON.stringify(r.http))' "$out")
	done_statuses=$((done_statuses + n))
	printf '%-9s %9d %s  %s\n' round "$done_statuses" "$(mem)" "$rate"
done
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
printf '%-9s %9d %s\n' end "$done_statuses" "$(mem)"
echo "posting took ${secs} s"
echo "rows by status: $(psql_ -c "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s")"
now_pid=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend webhook'")
if [ "$now_pid" = "$PID" ]; then
	echo "the webhook worker is still pid $PID"
else
	echo "the webhook worker was restarted (pid now $now_pid)" >&2
	exit 1
fi
