#!/bin/bash
# test/demo.sh — what `make demo` runs after building and installing:
# a throwaway cluster with wasend preloaded, the mock Graph API behind TLS
# with a private CA, one number at 200 msg/s, 10,000 recipients, a live
# progress line and a summary.  Cleans up on exit and on Ctrl-C.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

TOTAL=${DEMO_TOTAL:-10000}
RATE=${DEMO_RATE:-200}
WORK=$(mktemp -d /tmp/wasend-demo.XXXXXX)
chmod 755 "$WORK"
PGPORT=$(free_port)
MOCKPORT=$(free_port)
MOCK_PID=

cleanup() {
	trap - EXIT INT TERM
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
	cluster_stop "$WORK"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up"; exit 130' INT TERM

echo "== wasend demo: $TOTAL messages at $RATE msg/s against the mock Graph API"
make_certs "$WORK"
cat >"$WORK/mock.json" <<EOF
{"numbers": {"106540352242922": {"token": "demo-token", "rate": $RATE}}}
EOF
mock_start "$WORK" "$MOCKPORT" "$WORK/mock.json" \
	--tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key"
cluster_init "$WORK" "$PGPORT" \
	"wasend.api_base_url = 'https://127.0.0.1:$MOCKPORT/v21.0'" \
	"wasend.ca_file = '$WORK/ca.pem'" \
	"wasend.workers = 2"
cluster_start "$WORK"
echo "   cluster: $WORK (port $PGPORT); mock: https://127.0.0.1:$MOCKPORT (pid $MOCK_PID)"

psql_() { cluster_psql "$WORK" "$PGPORT" "$@"; }

psql_ -q >/dev/null <<EOF
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('106540352242922', 'demo-token', $RATE);
SELECT wasend.wasend_create_campaign('demo', 1,
  '{"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}');
SELECT wasend.wasend_enqueue(1, array_agg((15550000000 + g)::text))
  FROM generate_series(1, $TOTAL) g;
EOF
echo "   queued $TOTAL recipients; starting campaign 1"
psql_ -qAt -c "SELECT wasend.wasend_start_campaign(1)" >/dev/null

# what a script or cron job would do: block until the campaign ends
psql_ -qAt -c "SELECT wasend.wasend_wait(1, '30 minutes')" >"$WORK/wait.out" 2>"$WORK/wait.notices" &
WAIT_PID=$!

# meanwhile, a live progress line: one psql session, not one process per refresh
coproc PROGRESS { cluster_psql "$WORK" "$PGPORT" -qAt -F ' ' 2>&1; }
while kill -0 "$WAIT_PID" 2>/dev/null; do
	echo "SELECT status, sent + failed, total, rate_per_sec,
	        coalesce(to_char(eta, 'MI:SS'), '--:--')
	   FROM wasend.campaign_progress WHERE campaign_id = 1;" >&"${PROGRESS[1]}"
	read -r -t 30 status done total rate eta <&"${PROGRESS[0]}" || break
	printf '\r   %-9s %6s / %s sent   %7s msg/s   ETA %s ' "$status" "$done" "$total" "$rate" "$eta"
	sleep 0.5
done
echo '\q' >&"${PROGRESS[1]}"
wait "$WAIT_PID" || true
echo
echo "   SELECT wasend.wasend_wait(1, '30 minutes') returned: $(cat "$WORK/wait.out")"

echo "== summary"
psql_ -q <<'EOF'
\pset footer off
SELECT count(*) AS messages,
       round(extract(epoch FROM max(coalesce(sent_at, failed_at)) - min(claimed_at))::numeric, 2) AS wall_s,
       round(count(*) / extract(epoch FROM max(coalesce(sent_at, failed_at)) - min(claimed_at))::numeric, 1) AS achieved_msg_per_s
  FROM wasend.send_queue WHERE campaign_id = 1;
SELECT status, last_error_code, count(*) AS rows FROM wasend.send_queue GROUP BY 1, 2 ORDER BY 1, 2;
SELECT sender, sent, failed, connections_opened, connections_reused,
       round(mean_latency_ms::numeric, 2) AS mean_latency_ms
  FROM wasend.wasend_worker_stats() ORDER BY sender;
EOF
echo -n "   mock Graph API saw: "
curl -s --cacert "$WORK/ca.pem" "https://127.0.0.1:$MOCKPORT/__mock/stats"
echo
