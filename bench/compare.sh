#!/bin/bash
# bench/compare.sh — the ceiling scenario for several builds, interleaved,
# so that a before/after figure on this noisy VM compares like with like.
#
# Usage: bench/compare.sh [-n ROUNDS] REV...   (e.g. main HEAD)
#
# Each REV is checked out into a temporary git worktree and built once.
# Then, ROUNDS times (default 2), for each REV in turn: install it, run
# 200,000 messages over 20 numbers at 1,000 msg/s against nginx answering
# canned JSON (2 senders, max_inflight 2000, batch_size 1000), print the
# end-to-end msg/s.  Leaves the last REV installed: run `make install`
# afterwards to go back to the working tree's build.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
ROUNDS=2
if [ "${1:-}" = "-n" ]; then
	ROUNDS=$2
	shift 2
fi
[ $# -gt 0 ] || { echo "usage: $0 [-n ROUNDS] REV..." >&2; exit 2; }
ROWS=${COMPARE_ROWS:-200000}
WORK=$(mktemp -d /tmp/wasend-compare.XXXXXX)
chmod 755 "$WORK"
D=$WORK/c

cleanup() {
	cluster_stop "$D"
	nginx_stop "$WORK"
	for rev in "$@"; do
		git -C "$ROOT" worktree remove --force "$WORK/src-$rev" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap 'cleanup "$@"' EXIT
trap 'exit 130' INT TERM

for rev in "$@"; do
	git -C "$ROOT" worktree add --detach "$WORK/src-$rev" "$rev" >/dev/null 2>&1
	make -s -C "$WORK/src-$rev" >/dev/null
done

NPORT=$(free_port_pair)
nginx_start "$WORK" "$NPORT"
psql_() { cluster_psql "$D" "$PORT" -qAt "$@"; }

for round in $(seq 1 "$ROUNDS"); do
	for rev in "$@"; do
		make -s -C "$WORK/src-$rev" install >/dev/null
		rm -rf "$D"
		PORT=$(free_port)
		cluster_init "$D" "$PORT" "shared_buffers = 512MB" "synchronous_commit = off" \
			"wasend.api_base_url = 'http://127.0.0.1:$NPORT/v21.0'" \
			"wasend.max_inflight = 2000" "wasend.batch_size = 1000" "wasend.workers = 2"
		cluster_start "$D"
		psql_ >/dev/null <<SQL
CREATE EXTENSION wasend;
$(seed_sql 1000 20 "$ROWS")
CHECKPOINT;
SQL
		psql_ -c "SELECT wasend.wasend_start_campaign(g) FROM generate_series(1, 20) g" >/dev/null
		for _ in $(seq 1 2400); do	# bounded: 20 minutes
			[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status = 'running'")" = 0 ] && break
			sleep 0.5
		done
		line=$(psql_ -F ' ' -c "SELECT count(*), round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric)
		                         FROM wasend.send_queue WHERE status = 'sent'")
		read -r sent rate <<<"$line"
		[ "$sent" = "$ROWS" ] || { echo "$rev: only $sent of $ROWS rows sent" >&2; exit 1; }
		echo "round $round  $rev  $rate msg/s"
		cluster_stop "$D"
	done
done
