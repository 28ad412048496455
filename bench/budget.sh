#!/bin/bash
# bench/budget.sh — what the messaging-limit budget costs a claim: the
# senders' own claim_lock + claim statements (read out of src/queue.sql),
# 500 rows of one campaign, for
#
#   unlimited   the number's portfolio has no limit: no budget work;
#   limited     a limit of 200,000 with W recipients already in the 24 h
#               window (W = 0, 10k, 100k), every claimed recipient new;
#   in window   the same, every claimed recipient already in the window
#               (free: the claim only refreshes their time);
#   inbound     the same, every claimed recipient wrote in an hour ago.
#
# Each figure (claim_lock + claim) is the median of five claims, each rolled back, with the
# senders' random_page_cost and jit = off, on default durability settings.  Writes
# bench/results/budget.csv (case, window, ms, us_per_row) and prints each
# figure.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-budget.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

queue_sql sql_claim_lock >"$WORK/claim_lock.sql"
queue_sql sql_claim >"$WORK/claim.sql"

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 0" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'EOF'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('5001', 'tok', 1000);
SELECT wasend.wasend_add_number('5002', 'tok', 1000, business_id => '77');
UPDATE wasend.whatsapp_numbers SET limits_checked_at = now();
SELECT wasend.wasend_update_number(2, messaging_limit => 200000);
SELECT wasend.wasend_create_campaign('unlimited', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('limited', 2, '{"type":"text","text":{"body":"x"}}');
UPDATE wasend.campaigns SET status = 'running';
-- 2,000 rows per campaign: new recipients 1555700xxxxx
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT c, (155570000000 + g)::text FROM generate_series(1, 2000) g, (VALUES (1), (2)) v(c);
VACUUM ANALYZE;
EOF

# time_claim CAMPAIGN: median ms of five claims of 500 rows, rolled back
time_claim() {
	{
		echo "SET random_page_cost = 1.1; SET jit = off;"
		echo "PREPARE lock(bigint[]) AS $(cat "$WORK/claim_lock.sql");"
		echo "PREPARE claim(bigint[], int[], int, bigint[], text[], int[]) AS $(cat "$WORK/claim.sql");"
		echo '\timing on'
		for _ in 1 2 3 4 5; do
			echo "BEGIN;"
			echo "EXECUTE lock('{$1}');"
			echo "EXECUTE claim('{$1}', '{500}', 1, '{0}', '$2', '{500}');"
			echo "ROLLBACK;"
		done
	} >"$WORK/run.sql"
	chmod 644 "$WORK/run.sql"
	# per round: BEGIN, lock, claim, ROLLBACK: lock + claim (2nd and 3rd "Time:")
	psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' |
		awk '{ t[NR] = $1 } END { for (i = 0; i < 5; i++) printf "%.3f\n", t[4*i+2] + t[4*i+3] }' |
		sort -n | sed -n 3p
}

: >"$RES/budget.csv"
report() {
	local what=$1 window=$2 ms=$3
	echo "$what,$window,$ms,$(echo "$ms" | awk '{printf "%.1f", $1 * 1000 / 500}')" >>"$RES/budget.csv"
	echo "== $what, $window recipients in the window: claim of 500 in $ms ms ($(echo "$ms" | awk '{printf "%.1f", $1 * 1000 / 500}') us per row)"
}

report unlimited 0 "$(time_claim 1 '{}')"
for w in 0 10000 100000; do
	psql_ >/dev/null <<EOF
TRUNCATE wasend.recipient_window;
INSERT INTO wasend.recipient_window (portfolio, recipient, last_at)
SELECT '77', (155590000000 + g)::text, now() - (g % 86000) * interval '1 second'
  FROM generate_series(1, $w) g;
VACUUM ANALYZE wasend.recipient_window;
EOF
	report limited "$w" "$(time_claim 2 '{77}')"
done
# the claimed recipients are already in the window (100k + these 2,000)
psql_ >/dev/null <<'EOF'
INSERT INTO wasend.recipient_window (portfolio, recipient, last_at)
SELECT '77', (155570000000 + g)::text, now() - interval '1 hour' FROM generate_series(1, 2000) g;
VACUUM ANALYZE wasend.recipient_window;
EOF
report "in window" 102000 "$(time_claim 2 '{77}')"
psql_ >/dev/null <<'EOF'
DELETE FROM wasend.recipient_window WHERE recipient LIKE '155570%';
INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, received_at, raw)
SELECT 'wamid.b' || g, (155570000000 + g)::text, '5002', now() - interval '1 hour', '{}'
  FROM generate_series(1, 2000) g;
VACUUM ANALYZE;
EOF
report inbound 100000 "$(time_claim 2 '{77}')"
