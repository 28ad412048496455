#!/bin/bash
# bench/history.sh — what a long history of sent messages costs: the
# senders' claim, SELECT * FROM wasend.campaign_progress, SELECT * FROM
# wasend.campaign_report and the metrics endpoint's refresh (campaign_metrics
# of src/queue.sql), with BENCH_ROWS rows (default 10,000,000) of ten
# campaigns that finished 100 days ago beside one running campaign of
# 100,000 ready rows; then, when the installed wasend has
# wasend.wasend_prune (retention), after pruning the finished campaigns.
#
# Each figure is the median of three runs (a claim: of five, each rolled
# back), with the senders' random_page_cost and jit = off.  Writes
# bench/results/history.csv (phase, what, ms) and prints each figure.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-history.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c
ROWS=${BENCH_ROWS:-10000000}

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

queue_sql sql_claim >"$WORK/claim.sql"
queue_sql sql_campaign_metrics >"$WORK/metrics.sql"

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 0" "shared_buffers = 1GB" \
	"max_wal_size = 8GB" "synchronous_commit = off" "wasend.retention = -1" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'EOF'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('4001', 'tok', 1000);
SELECT wasend.wasend_create_campaign('live', 1, '{"type":"text","text":{"body":"x"}}');
UPDATE wasend.campaigns SET status = 'running', started_at = now();
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, (15550000000 + g)::text FROM generate_series(1, 100000) g;
INSERT INTO wasend.prices (country_prefix, category, price) VALUES ('1', 'marketing', 0.025);
SELECT wasend.wasend_create_campaign('history ' || i, 1, '{"type":"text","text":{"body":"x"}}')
  FROM generate_series(1, 10) i;
UPDATE wasend.campaigns SET status = 'completed', started_at = now() - interval '101 days',
       completed_at = now() - interval '100 days', updated_at = now() - interval '100 days'
 WHERE id > 1;
EOF
echo "== loading $ROWS rows of finished campaigns"
t0=$(date +%s)
# ten campaigns, in ten statements; a row's outcome by g % 100: 50% read,
# 30% delivered, 10% sent, 8% failed (two codes), 2% cancelled
per=$((ROWS / 10))
for i in $(seq 2 11); do
	psql_ -c "INSERT INTO wasend.send_queue (campaign_id, recipient, status, attempts, wa_message_id,
	              last_error_code, last_error_class, last_error, created_at, sent_at, delivered_at, read_at,
	              failed_at, pricing_billable, pricing_model, pricing_category, pricing_type)
	          SELECT $i, (12000000000 + g)::text, s.status, 1,
	                 CASE WHEN s.status <> 'cancelled' THEN 'wamid.$i.' || g END,
	                 CASE WHEN s.status = 'failed' THEN CASE WHEN g % 2 = 0 THEN 131026 ELSE 131049 END END,
	                 CASE WHEN s.status = 'failed' THEN 'api' END,
	                 CASE WHEN s.status = 'failed' THEN CASE WHEN g % 2 = 0 THEN 'Message undeliverable' ELSE 'Not delivered' END END,
	                 t, CASE WHEN s.status IN ('sent', 'delivered', 'read') THEN t END,
	                 CASE WHEN s.status IN ('delivered', 'read') THEN t END,
	                 CASE WHEN s.status = 'read' THEN t END,
	                 CASE WHEN s.status IN ('failed', 'cancelled') THEN t END,
	                 CASE WHEN s.status IN ('delivered', 'read') THEN true END,
	                 CASE WHEN s.status IN ('delivered', 'read') THEN 'PMP' END,
	                 CASE WHEN s.status IN ('delivered', 'read') THEN 'marketing' END,
	                 CASE WHEN s.status IN ('delivered', 'read') THEN 'regular' END
	            FROM generate_series(1, $per) g
	           CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 50 THEN 'read' WHEN g % 100 < 80 THEN 'delivered'
	                                           WHEN g % 100 < 90 THEN 'sent' WHEN g % 100 < 98 THEN 'failed'
	                                           ELSE 'cancelled' END AS status,
	                                      now() - interval '100 days' AS t) s" >/dev/null
done
psql_ -c "VACUUM ANALYZE" >/dev/null
echo "== loaded in $(($(date +%s) - t0)) s: $(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('wasend.send_queue'))") (send_queue with its indexes)"

: >"$RES/history.csv"

# measure PHASE: the median time of each query
measure() {
	local phase=$1 what sql times med
	for what in claim progress report metrics; do
		{
			echo "SET random_page_cost = 1.1; SET jit = off;"
			echo "PREPARE claim(bigint[], int[], int, bigint[], text[], int[]) AS $(cat "$WORK/claim.sql");"
			echo "PREPARE metrics(int) AS $(cat "$WORK/metrics.sql");"
			echo '\o /dev/null'
			echo '\timing on'
			case $what in
			claim)
				for _ in 1 2 3 4 5; do
					echo "BEGIN;"
					echo "EXECUTE claim('{1}', '{500}', 1, '{0}', '{}', '{500}');"
					echo "ROLLBACK;"
				done ;;
			progress) for _ in 1 2 3; do echo "SELECT * FROM wasend.campaign_progress;"; done ;;
			report) for _ in 1 2 3; do echo "SELECT * FROM wasend.campaign_report;"; done ;;
			metrics) for _ in 1 2 3; do echo "EXECUTE metrics(512);"; done ;;
			esac
		} >"$WORK/run.sql"
		chmod 644 "$WORK/run.sql"
		if [ "$what" = claim ]; then
			# the EXECUTE lines' times: every second "Time:" of BEGIN, EXECUTE, ROLLBACK
			times=$(psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk 'NR % 3 == 2')
			med=$(echo "$times" | sort -n | sed -n 3p)
		else
			times=$(psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
			med=$(echo "$times" | sort -n | sed -n 2p)
		fi
		echo "$phase,$what,$med" >>"$RES/history.csv"
		echo "== $phase: $what in $med ms"
	done
}

measure "history $ROWS rows"

if [ "$(psql_ -c "SELECT to_regprocedure('wasend.wasend_prune(interval)') IS NOT NULL")" = t ]; then
	t0=$(date +%s)
	n=$(psql_ -c "SELECT wasend.wasend_prune('30 days')")
	psql_ -c "VACUUM ANALYZE" >/dev/null
	echo "== pruned $n rows in $(($(date +%s) - t0)) s (with VACUUM): $(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('wasend.send_queue'))") left"
	measure "after pruning"
fi
