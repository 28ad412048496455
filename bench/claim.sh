#!/bin/bash
# bench/claim.sh — time of one claim against a queue of growing size: the
# senders' own claim statement (read out of src/queue.c, so always the
# current one), 500 rows of one campaign, at 10k, 100k and 1M queued rows
# (BENCH_BIG=1 adds 10M).  Each figure is the median of five claims, each
# rolled back, with the senders' random_page_cost and jit = off.  It must stay flat: the
# claim reads send_queue_ready_idx from the campaign's first unsent row and
# stops after 500.
#
# Writes bench/results/claim_vs_queue.csv (rows, ms) and prints each figure.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-claim.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c
SIZES="10000 100000 1000000"
[ -n "${BENCH_BIG:-}" ] && SIZES="$SIZES 10000000"

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

queue_sql sql_claim >"$WORK/claim.sql"

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 0" "shared_buffers = 1GB" \
	"max_wal_size = 8GB" "synchronous_commit = off" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'EOF'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('4001', 'tok', 1000);
SELECT wasend.wasend_create_campaign('claim', 1, '{"type":"text","text":{"body":"x"}}');
UPDATE wasend.campaigns SET status = 'running';
EOF
: >"$RES/claim_vs_queue.csv"
have=0
for n in $SIZES; do
	psql_ -c "INSERT INTO wasend.send_queue (campaign_id, recipient)
	          SELECT 1, (15550000000 + g)::text FROM generate_series($have + 1, $n) g" >/dev/null
	have=$n
	psql_ -c "VACUUM ANALYZE wasend.send_queue" >/dev/null
	{
		echo "SET random_page_cost = 1.1; SET jit = off;"
		echo "PREPARE claim(bigint[], int[], int, bigint[], text[], int[]) AS $(cat "$WORK/claim.sql");"
		echo '\timing on'
		for _ in 1 2 3 4 5; do
			echo "BEGIN;"
			echo "EXECUTE claim('{1}', '{500}', 1, '{0}', '{}', '{500}');"
			echo "ROLLBACK;"
		done
	} >"$WORK/run.sql"
	chmod 644 "$WORK/run.sql"
	# the EXECUTE lines' times: every second "Time:" after BEGIN
	times=$(psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk 'NR % 3 == 2')
	med=$(echo "$times" | sort -n | sed -n 3p)
	echo "$n $med" >>"$RES/claim_vs_queue.csv"
	echo "== $n queued rows: claim of 500 in $med ms"
done
