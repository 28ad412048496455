#!/bin/bash
# bench/jitter.sh — is the rate exact, and full, when the API's answers
# jitter?  And what does a single 130429 cost a campaign?
#
# One number at 200 msg/s against the mock, whose limiter is a strict
# sliding one-second window (a request over it gets 130429); every answer
# is delayed by JITTER_MS/2 +- JITTER_MS/2 ms (uniform: 0 to JITTER_MS,
# default 20).  Three runs of 10,000 messages (ROWS), each on a fresh
# cluster with PostgreSQL's and wasend's defaults (fsync and
# synchronous_commit on, rate_headroom 0.985):
#
#   clean      no fault: achieved rate (rows over the time from the first
#              claim to the last answer), its share of the limit, the
#              130429s the mock gave;
#   one 130429 at the middle   the mock refuses the 5,000th recipient once
#              with 130429 (a stray refusal): the extra wall time against
#              the clean run;
#   one 130429 at the end      the same for the last recipient, whose
#              retry the campaign waits for.
#
# Prints one line per run; writes bench/results/jitter.csv.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
ROOT=$WASEND_ROOT
RES=$ROOT/bench/results
mkdir -p "$RES"
JITTER_MS=${JITTER_MS:-20}
ROWS=${ROWS:-10000}
WORK=$(mktemp -d /tmp/wasend-jitter.XXXXXX)
chmod 755 "$WORK"
D=
MOCK_PID=

cleanup() {
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
	[ -n "$D" ] && cluster_stop "$D"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run NAME RULES: one campaign of ROWS messages; sets WALL, RATE, REFUSED
run() {
	local name=$1 rules=$2 port mport
	D=$WORK/$name
	mport=$(free_port)
	cat >"$WORK/$name.json" <<EOF
{"numbers": {"9001": {"token": "tok", "rate": 200}},
 "latency_ms": $((JITTER_MS / 2)), "jitter_ms": $((JITTER_MS / 2)), "rules": [$rules]}
EOF
	mock_start "$WORK" "$mport" "$WORK/$name.json"
	port=$(free_port)
	cluster_init "$D" "$port" "fsync = on" "wasend.api_base_url = 'http://127.0.0.1:$mport/v21.0'"
	cluster_start "$D"
	psql_() { cluster_psql "$D" "$port" -qAt "$@"; }
	psql_ >/dev/null <<EOF
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('9001', 'tok', 200);
SELECT wasend.wasend_create_campaign('jitter', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_enqueue(1, array_agg((15550000000 + g)::text ORDER BY g)) FROM generate_series(1, $ROWS) g;
SELECT wasend.wasend_start_campaign(1);
EOF
	for _ in $(seq 1 2400); do
		[ "$(psql_ -c "SELECT status FROM wasend.campaigns WHERE id = 1")" = completed ] && break
		sleep 0.25
	done
	read -r SENT WALL RATE <<<"$(psql_ -F ' ' -c "SELECT count(*), round(extract(epoch FROM max(sent_at) - min(claimed_at))::numeric, 2),
	                                                   round(count(*) / extract(epoch FROM max(sent_at) - min(claimed_at))::numeric, 1)
	                                              FROM wasend.send_queue WHERE status = 'sent'")"
	[ "$SENT" = "$ROWS" ] || { echo "$name: only $SENT of $ROWS sent" >&2; exit 1; }
	REFUSED=$(curl -s "http://127.0.0.1:$mport/__mock/stats" |
		node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).by_code["130429"]||0))')
	cluster_stop "$D"
	kill "$MOCK_PID"; MOCK_PID=
}

: >"$RES/jitter.csv"
run clean ""
CLEAN_WALL=$WALL
printf 'clean, answers jitter 0-%s ms | %s msg/s (%s%% of 200) | wall %s s | 130429: %s\n' \
	"$JITTER_MS" "$RATE" "$(echo "scale=1; $RATE / 2" | bc)" "$WALL" "$REFUSED"
echo "clean,$JITTER_MS,$RATE,$WALL,$REFUSED,0" >>"$RES/jitter.csv"
for at in middle end; do
	n=$((ROWS / 2))
	[ $at = end ] && n=$ROWS
	run "$at" "{\"to\": \"^$((15550000000 + n))\$\", \"code\": 130429, \"http\": 400, \"times\": 1}"
	cost=$(echo "scale=2; ($WALL - $CLEAN_WALL) * 100 / $CLEAN_WALL" | bc)
	printf 'one 130429 at the %s | %s msg/s | wall %s s | 130429: %s | cost %s%% of the clean wall time\n' \
		"$at" "$RATE" "$WALL" "$REFUSED" "$cost"
	echo "$at,$JITTER_MS,$RATE,$WALL,$REFUSED,$cost" >>"$RES/jitter.csv"
done
