#!/bin/bash
# bench/standby.sh — what waiting for durable claims costs with a healthy
# synchronous standby.
#
# Usage: bench/standby.sh [-n ROUNDS] [ROWS]
#
# A primary and a streaming standby on this machine, the standby named in
# synchronous_standby_names; nginx answers every send after 100-200 ms
# (as Meta's API does).  ROUNDS times (default 3), interleaved: ROWS
# messages (default 30,000) over 10 numbers at 200 msg/s each, once with
# wasend.durability = synchronous (the default: a request starts once the
# standby flushed its claim) and once with local (it starts at once).
# Prints msg/s from the first claim to the last send, the median time
# from a claim to its request's answer (sent_at - claimed_at), and the
# ratio synchronous / local.  Defaults of PostgreSQL and wasend, except
# fsync = off on both servers (test/lib.sh) and 2 workers.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROUNDS=3
if [ "${1:-}" = "-n" ]; then
	ROUNDS=$2
	shift 2
fi
ROWS=${1:-30000}
WORK=$(mktemp -d /tmp/wasend-standby.XXXXXX)
chmod 755 "$WORK"
P=$WORK/p
S=$WORK/s

cleanup() {
	cluster_stop "$S"
	cluster_stop "$P"
	nginx_stop "$WORK"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nginx_delay_start "$WORK" 100:200
psql_() { cluster_psql "$P" "$PPORT" -qAt "$@"; }

run() {
	local mode=$1 line
	rm -rf "$P" "$S"
	PPORT=$(free_port)
	SPORT=$(free_port)
	cluster_init "$P" "$PPORT" "wasend.api_base_url = '$NGINX_API'" "wasend.ca_file = '$WORK/ca.pem'" \
		"wasend.workers = 2" "wasend.durability = $mode" "wal_level = replica"
	as_pg sh -c "echo 'local replication all trust' >> '$P/data/pg_hba.conf'"
	cluster_start "$P"
	mkdir -p "$S"
	chown postgres: "$S"
	as_pg "$PGBIN/pg_basebackup" -h "$P" -p "$PPORT" -U postgres -D "$S/data" -R -X stream >/dev/null
	as_pg sh -c "printf \"port = $SPORT\nunix_socket_directories = '$S'\n\" >> '$S/data/postgresql.conf'"
	cluster_start "$S"
	psql_ -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 100); do
		[ "$(psql_ -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
		sleep 0.1
	done
	psql_ >/dev/null <<SQL
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number((8800 + g)::text, 'tok', 200) FROM generate_series(1, 10) g;
SELECT wasend.wasend_create_campaign('c' || g, g, '{"type":"text","text":{"body":"x"}}') FROM generate_series(1, 10) g;
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1 + (g % 10), (15550000000 + g)::text FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE wasend.send_queue;
SQL
	psql_ -c "SELECT wasend.wasend_start_campaign(g) FROM generate_series(1, 10) g" >/dev/null
	for _ in $(seq 1 2400); do	# bounded: 20 minutes
		[ "$(psql_ -c "SELECT count(*) FROM wasend.campaigns WHERE status = 'running'")" = 0 ] && break
		sleep 0.5
	done
	line=$(psql_ -F ' ' -c "SELECT count(*), round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric),
	                               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - claimed_at)) * 1000)::numeric, 1)
	                          FROM wasend.send_queue WHERE status = 'sent'")
	read -r sent rate median <<<"$line"
	[ "$sent" = "$ROWS" ] || { echo "$mode: only $sent of $ROWS rows sent" >&2; exit 1; }
	echo "$rate $median"
	cluster_stop "$S"
	cluster_stop "$P"
}

declare -A total
for round in $(seq 1 "$ROUNDS"); do
	for mode in synchronous local; do
		read -r rate median <<<"$(run $mode)"
		echo "round $round  $mode  $rate msg/s  claim-to-answer median $median ms"
		total[$mode]=$(( ${total[$mode]:-0} + rate ))
	done
done
echo "synchronous / local: $(echo "scale=3; ${total[synchronous]} / ${total[local]}" | bc)"
