#!/bin/bash
# bench/dbcost.sh — what one message costs the database, by fillfactor of
# wasend.send_queue, without HTTP in the way.  Runs the senders' own claim
# and record statements (read out of src/queue.c, so always the current
# ones) in a loop: claim DBCOST_BATCH rows, record them as sent with a
# wamid, commit, again.  Two measures per fillfactor:
#
#   instructions  callgrind, single-user postgres, DBCOST_CG_ROWS messages
#                 (default 10,000) out of 200,000 queued: instructions per
#                 message of claim + record.  Counts, not seconds: the same
#                 on a busy or an idle machine.
#   bloat         a live server with autovacuum, DBCOST_ROWS messages
#                 (default 1,000,000) all sent: wall time, share of HOT
#                 updates, WAL bytes per message, and the size of the table
#                 and of its indexes before and after.
#
# Usage: bench/dbcost.sh [fillfactor...]   (default: 50 80 100)
# DBCOST_EXTRA: SQL run once the queue is filled, to measure a variant of
# the schema (e.g. an index dropped), never part of make bench; the table
# then goes to bench/results/dbcost-extra.md, headed by that SQL.
# Prints a Markdown table and writes it to bench/results/dbcost.md.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
OUTMD=$RES/dbcost.md
[ -n "${DBCOST_EXTRA:-}" ] && OUTMD=$RES/dbcost-extra.md
WORK=$(mktemp -d /tmp/wasend-dbcost.XXXXXX)
chmod 755 "$WORK"
BATCH=${DBCOST_BATCH:-500}
CG_ROWS=${DBCOST_CG_ROWS:-10000}
ROWS=${DBCOST_ROWS:-1000000}
FILLFACTORS=${*:-50 80 100}
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }

# the statements, as SQL text, from src/queue.c
queue_sql sql_claim >"$WORK/sql_claim.sql"
queue_sql sql_record >"$WORK/sql_record.sql"

# loop_sql N: a DO block claiming and recording N batches, committing each.
# The claim has data-modifying CTEs: it cannot be nested, so its rows are
# collected in a loop.  No "--" comment inside: instructions() joins the
# block into one line for single-user postgres.
loop_sql() {
	local claim record
	claim=$(sed "s/'/''/g" "$WORK/sql_claim.sql")
	record=$(sed "s/'/''/g" "$WORK/sql_record.sql")
	cat <<EOF
DO \$\$
DECLARE ids bigint[]; mx bigint := 0; n int; r record;
BEGIN
  FOR i IN 1..$1 LOOP
    ids := '{}'; n := 0;
    FOR r IN EXECUTE '$claim'
        USING ARRAY[1::bigint], ARRAY[$BATCH], 4242, ARRAY[coalesce(mx, 0)], ARRAY[]::text[], ARRAY[$BATCH] LOOP
      ids := ids || r.id; mx := greatest(mx, r.id); n := n + 1;
    END LOOP;
    COMMIT;
    EXECUTE '$record'
      USING ids, array_fill(200, ARRAY[n]),
            (SELECT array_agg('{"messages":[{"id":"wamid.' || u || '"}]}') FROM unnest(ids) u),
            array_fill(NULL::text, ARRAY[n]), array_fill(now(), ARRAY[n]),
            array_fill(NULL::text, ARRAY[n]), 10, 4242;
    COMMIT;
  END LOOP;
END \$\$;
EOF
}

# setup ROWS FILLFACTOR: a fresh cluster with one running campaign of ROWS
# rows, the table at FILLFACTOR, vacuumed and analyzed
setup() {
	cluster_stop "$D"
	rm -rf "$D"
	PORT=$(free_port)
	cluster_init "$D" "$PORT" "wasend.workers = 0" "shared_buffers = 1GB" \
		"synchronous_commit = off" "max_wal_size = 8GB" "autovacuum_naptime = 5s" >/dev/null
	cluster_start "$D"
	psql_ >/dev/null <<SQL
CREATE EXTENSION wasend;
ALTER TABLE wasend.send_queue SET (fillfactor = $2);
SELECT wasend.wasend_add_number('1', 'tok', 1000);
SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, (15550000000 + g)::text FROM generate_series(1, $1) g;
UPDATE wasend.campaigns SET status = 'running';
${DBCOST_EXTRA:-}
VACUUM ANALYZE wasend.send_queue;
CHECKPOINT;
SQL
}

sizes() {	# table MB, indexes MB
	psql_ -F ' ' -c "SELECT round(pg_table_size('wasend.send_queue') / 1048576.0),
	                        round(pg_indexes_size('wasend.send_queue') / 1048576.0)"
}

# instructions per message for N loop iterations, minus the cost of none
instructions() {
	local iters=$1 out
	# single-user postgres runs each line as one statement: SET on its own
	# (with the DO on one line it would be a transaction block, where the
	# DO cannot COMMIT), the DO joined into one line
	echo "SET jit = off;" >"$WORK/loop.sql"
	loop_sql "$iters" | tr '\n' ' ' >>"$WORK/loop.sql"
	echo >>"$WORK/loop.sql"
	chmod 644 "$WORK/loop.sql"
	chmod 777 "$WORK"
	out=$WORK/callgrind.$iters
	as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
		"$PGBIN/postgres" --single -D "$D/data" postgres <"$WORK/loop.sql" >"$WORK/single.log" 2>&1
	if grep -q ERROR "$WORK/single.log"; then
		grep ERROR "$WORK/single.log" >&2
		exit 1
	fi
	sed -n 's/^totals: //p' "$out"
}

{
	if [ -n "${DBCOST_EXTRA:-}" ]; then echo "Variant (DBCOST_EXTRA): \`$DBCOST_EXTRA\`"; echo; fi
	echo "| fillfactor | instructions per message (claim + record) | $ROWS messages: wall | msg/s | HOT updates | WAL bytes per message | table MB before -> after | indexes MB before -> after |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$OUTMD"

for ff in $FILLFACTORS; do
	echo "== fillfactor $ff: callgrind, $CG_ROWS messages" >&2
	setup 200000 "$ff"
	cluster_stop "$D"
	i0=$(instructions 0)
	i1=$(instructions $((CG_ROWS / BATCH)))
	per_msg=$(((i1 - i0) / CG_ROWS))

	echo "== fillfactor $ff: $ROWS messages on a live server" >&2
	setup "$ROWS" "$ff"
	read -r t0 x0 <<<"$(sizes)"
	wal0=$(psql_ -c "SELECT pg_current_wal_lsn()")
	{ echo "SET jit = off;"; loop_sql $((ROWS / BATCH)); } >"$WORK/live.sql"
	chmod 644 "$WORK/live.sql"
	s=$(date +%s.%N)
	psql_ -f "$WORK/live.sql"
	e=$(date +%s.%N)
	read -r wall rate hot walpm <<<"$(psql_ -F ' ' -c "
		SELECT round($e - $s, 1), round($ROWS / ($e - $s)),
		       round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1), 1) || '%',
		       round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0') / $ROWS)
		  FROM pg_stat_user_tables WHERE relname = 'send_queue'")"
	read -r t1 x1 <<<"$(sizes)"
	sent=$(psql_ -c "SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'")
	[ "$sent" = "$ROWS" ] || { echo "only $sent of $ROWS rows sent" >&2; exit 1; }
	echo "| $ff | $per_msg | $wall s | $rate | $hot | $walpm | $t0 -> $t1 | $x0 -> $x1 |" >>"$OUTMD"
done
cat "$OUTMD"
