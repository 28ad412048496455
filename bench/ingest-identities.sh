#!/bin/bash
# bench/ingest-identities.sh — what pairing names costs the status
# webhooks: 9,000 statuses (sent, delivered, read for 3,000 sent rows) in
# payloads of 20 through wasend._ingest_verified, one transaction, in the
# shape of before 2026 (recipient_id only) and in Meta's 2026 shape, where
# every status also names a new BSUID (recipient_user_id: 3,000 new
# users, each pair written once, then repeated twice).  Both on the same
# cluster, in the same run; prints each time and the ratio.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
WORK=$(mktemp -d /tmp/wasend-ingest.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 0" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'SQL'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('4001', 'tok', 1000);
SELECT wasend.wasend_create_campaign('old shape', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('2026 shape', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT c, (15550000000 + c * 10000 + g)::text FROM generate_series(1, 3000) g, (VALUES (1), (2)) v(c);
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1, wa_message_id = 'wamid.b' || id;
VACUUM ANALYZE;
SQL
# $1: the campaign, $2: true for recipient_user_id; prints seconds
ingest_s() {
	cat >"$WORK/run.sql" <<SQL
\\timing on
DO \$\$
DECLARE
    b int;
BEGIN
    FOR b IN 0..449 LOOP
        PERFORM wasend._ingest_verified(jsonb_build_object('object', 'whatsapp_business_account',
            'entry', jsonb_build_array(jsonb_build_object('id', '1', 'changes', jsonb_build_array(
                jsonb_build_object('field', 'messages', 'value', jsonb_build_object(
                    'messaging_product', 'whatsapp',
                    'metadata', jsonb_build_object('phone_number_id', '4001'),
                    'statuses', (SELECT jsonb_agg(jsonb_build_object(
                                     'id', q.wa_message_id, 'status', s.st,
                                     'timestamp', extract(epoch FROM now())::bigint::text,
                                     'recipient_id', q.recipient)
                                   || CASE WHEN $2 THEN jsonb_build_object('recipient_user_id', 'US.' || q.id)
                                           ELSE '{}' END)
                                   FROM (SELECT x.*, row_number() OVER (ORDER BY x.id) - 1 AS k
                                           FROM wasend.send_queue x WHERE x.campaign_id = $1) q
                                   CROSS JOIN (VALUES ('sent', 0), ('delivered', 1), ('read', 2)) s(st, o)
                                  WHERE (s.o * 3000 + q.k) / 20 = b)))))))::text);
    END LOOP;
END
\$\$;
SQL
	chmod 644 "$WORK/run.sql"
	psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{ printf "%.2f", $1 / 1000 }'
}
old=$(ingest_s 1 false)
new=$(ingest_s 2 true)
psql_ -c "SELECT 'rows read: ' || count(*) FILTER (WHERE status = 'read') || ', pairs: '
                 || (SELECT count(*) FROM wasend.identities) || ', names: '
                 || (SELECT count(*) FROM wasend.identity_names)
            FROM wasend.send_queue"
echo "== 9,000 statuses through _ingest_verified, one transaction"
printf 'recipient_id only          %6.2f s\n' "$old"
printf 'with recipient_user_id     %6.2f s (%.2fx)\n' "$new" "$(echo "$new / $old" | bc -l)"
