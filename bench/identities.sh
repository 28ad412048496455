#!/bin/bash
# bench/identities.sh — what knowing who is who costs the claim: the
# senders' own claim statement (src/queue.sql), 500 rows of one campaign
# out of 100k queued, with wasend.identities empty, holding 100k pairs of
# other people, and holding a pair (phone number, BSUID, parent BSUID) for
# every queued recipient, for a portfolio without and with a messaging
# limit (where the claim also reads the 24 h window by every name).  Each
# figure is the median of claims 6 to 10 of one session, each rolled back
# (the first five are planned each time; from the sixth the plan cache
# may keep a plan, as in a sender, which prepares the claim once), with
# the senders' random_page_cost and jit = off.
#
# Also times the write of the 100k pairs (wasend.identity_names is kept
# by a trigger per pair).
#
# Writes bench/results/identities.csv (case, ms) and prints each figure
# with its ratio to the empty table of the same run.  With
# BASE_QUEUE_SQL=<an older src/queue.sql> it also times that version's
# claim on the empty table (the claim before the identities), same run.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/wasend-identities.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

queue_sql sql_claim >"$WORK/claim.sql"
if [ -n "${BASE_QUEUE_SQL:-}" ]; then
	awk -v name=claim -f "$WASEND_ROOT/src/queue_sql.awk" "$BASE_QUEUE_SQL" >"$WORK/base.sql"
fi

PORT=$(free_port)
cluster_init "$D" "$PORT" "wasend.workers = 0" "shared_buffers = 512MB" \
	"max_wal_size = 8GB" "synchronous_commit = off" >/dev/null
cluster_start "$D"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }
psql_ >/dev/null <<'SQL'
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('4001', 'tok', 1000);
SELECT wasend.wasend_add_number('4002', 'tok', 1000, business_id => '9');
SELECT wasend.wasend_create_campaign('free', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('limited', 2, '{"type":"text","text":{"body":"x"}}');
UPDATE wasend.campaigns SET status = 'running';
SELECT wasend.wasend_update_number(2, messaging_limit => 100000);
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT c, (15550000000 + g)::text FROM generate_series(1, 100000) g, (VALUES (1), (2)) v(c);
VACUUM ANALYZE;
SQL
# $1: the campaign, $2: the statement's file (default: the current claim);
# prints the median of five claims of 500 rows, in ms
claim_ms() {
	local lock='' stmt=${2:-$WORK/claim.sql}
	[ "$1" = 2 ] && lock="'{9}'" || lock="'{}'"
	{
		echo "SET random_page_cost = 1.1; SET jit = off;"
		echo "PREPARE claim(bigint[], int[], int, bigint[], text[], int[]) AS $(cat "$stmt");"
		echo '\timing on'
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			echo "BEGIN;"
			echo "EXECUTE claim('{$1}', '{500}', 1, '{0}', $lock, '{500}');"
			echo "ROLLBACK;"
		done
	} >"$WORK/run.sql"
	chmod 644 "$WORK/run.sql"
	psql_ -f "$WORK/run.sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk 'NR % 3 == 2' |
		tail -5 | sort -n | sed -n 3p
}
: >"$RES/identities.csv"
run_case() {
	local name=$1 free limited
	free=$(claim_ms 1)
	limited=$(claim_ms 2)
	echo "$name,free,$free" >>"$RES/identities.csv"
	echo "$name,limited,$limited" >>"$RES/identities.csv"
	echo "$name $free $limited"
}
if [ -n "${BASE_QUEUE_SQL:-}" ]; then
	before="before $(claim_ms 1 "$WORK/base.sql") $(claim_ms 2 "$WORK/base.sql")"
	set -- $before
	echo "before,free,$2" >>"$RES/identities.csv"
	echo "before,limited,$3" >>"$RES/identities.csv"
	echo "$before"
fi
base=$(run_case empty)
echo "$base"
psql_ >/dev/null <<'SQL'
INSERT INTO wasend.identities (user_id, phone)
SELECT 'US.9' || g, (16660000000 + g)::text FROM generate_series(1, 100000) g;
VACUUM ANALYZE wasend.identities;
SQL
other=$(run_case others)
echo "$other"
t0=$(date +%s.%N)
psql_ >/dev/null <<'SQL'
TRUNCATE wasend.identities;
INSERT INTO wasend.identities (user_id, phone, parent_user_id)
SELECT 'US.1' || g, (15550000000 + g)::text, 'US.ENT.1' || g FROM generate_series(1, 100000) g;
VACUUM ANALYZE wasend.identities;
SQL
t1=$(date +%s.%N)
echo "pairs,write_s,$(echo "$t1 - $t0" | bc -l)" >>"$RES/identities.csv"
paired=$(run_case paired)
echo "$paired"
printf '== 100k pairs (phone number, BSUID, parent BSUID) written in one statement: %.1f s\n' "$(echo "$t1 - $t0" | bc -l)"
echo "== claim of 500 rows out of 100k (median of claims 6-10, ms; ratio to the empty table)"
for line in ${before:+"$before"} "$base" "$other" "$paired"; do
	set -- $line
	b=($base)
	printf '%-7s  no limit %7.1f (%.2fx)   messaging limit %7.1f (%.2fx)\n' "$1" "$2" \
		"$(echo "$2 / ${b[1]}" | bc -l)" "$3" "$(echo "$3 / ${b[2]}" | bc -l)"
done
