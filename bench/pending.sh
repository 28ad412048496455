#!/bin/bash
# bench/pending.sh — what waiting statuses cost: 600,000 rows in
# wasend.pending_statuses (statuses of messages wasend did not send, kept
# 7 days; PENDING=n to change), 100,000 sent rows in send_queue, two idle
# senders (no campaign runs).  Measures the CPU time (user + system) the
# two senders use in 20 s, and the time of one status payload through
# wasend._ingest_verified (what the webhook endpoint runs once the
# signature is checked): one status of a known wamid and one of an unknown
# wamid; the median of 9 payloads, each committed.
#
# The waiting rows are received_at spread over the last 7 days.  Where the
# table has the settled column, they are stored settled: rows older than
# a few seconds are, once the senders' refresh checked them twice.
#
# Prints both figures; run it against the install to measure (make install).
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
PENDING=${PENDING:-600000}
WORK=$(mktemp -d /tmp/wasend-pending.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 2" "wasend.databases = 'postgres'" \
	"wasend.api_base_url = 'http://127.0.0.1:9'" "wasend.limits_refresh_interval = 0" \
	"shared_buffers = 512MB" "max_wal_size = 4GB" "synchronous_commit = off" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<EOF
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('5001', 'tok', 80);
SELECT wasend.wasend_create_campaign('done', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, (15550000000 + g)::text FROM generate_series(1, 100000) g;
UPDATE wasend.send_queue SET status = 'sent', sent_at = now() - interval '1 hour', attempts = 1,
       wa_message_id = 'wamid.ours.' || id;
UPDATE wasend.campaigns SET status = 'completed', completed_at = now();
INSERT INTO wasend.pending_statuses (wa_message_id, status, at, recipient, received_at)
SELECT 'wamid.foreign.' || g, 'delivered', now() - g * interval '1 second',
       (15560000000 + g)::text, now() - g * (interval '7 days' / greatest($PENDING, 1))
  FROM generate_series(1, $PENDING) g;
EOF
if [ "$(psql_ -c "SELECT count(*) FROM pg_attribute WHERE attrelid = 'wasend.pending_statuses'::regclass
                   AND attname = 'settled'")" = 1 ]; then
	psql_ -c "UPDATE wasend.pending_statuses SET settled = true" >/dev/null
fi
psql_ -c "VACUUM ANALYZE" >/dev/null

# the two senders, once both run
for _ in $(seq 1 300); do
	PIDS=$(psql_ -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
	                  WHERE backend_type LIKE 'wasend sender %'")
	[ "$(echo "$PIDS" | wc -w)" = 2 ] && break
	sleep 0.2
done
[ "$(echo "$PIDS" | wc -w)" = 2 ] || { echo "the two senders did not start" >&2; exit 1; }
sleep 5
c0=$(cpu_of $PIDS)
sleep 20
c1=$(cpu_of $PIDS)
hz=$(getconf CLK_TCK)
echo "idle senders: $(echo "scale=2; ($c1 - $c0) / $hz" | bc) s of CPU in 20 s (2 senders, $PENDING waiting statuses)"

{
	echo '\timing on'
	for i in 1 2 3 4 5 6 7 8 9; do
		echo "SELECT wasend._ingest_verified('{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"phone_number_id\":\"5001\"},\"statuses\":[{\"id\":\"wamid.ours.$i\",\"status\":\"delivered\",\"timestamp\":\"' || extract(epoch FROM now())::bigint || '\",\"recipient_id\":\"1555000000$i\"},{\"id\":\"wamid.bench.$i\",\"status\":\"delivered\",\"timestamp\":\"' || extract(epoch FROM now())::bigint || '\",\"recipient_id\":\"1557000000$i\"}]}}]}]}') IS NOT NULL;"
	done
} >"$WORK/hook.sql"
chmod 644 "$WORK/hook.sql"
psql_ -f "$WORK/hook.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sort -n | sed -n 5p |
	xargs -I{} echo "one webhook payload: {} ms (median of 9)"
