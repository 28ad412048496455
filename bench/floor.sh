#!/bin/bash
# bench/floor.sh — the floor under a sender's HTTP cost on this machine:
# bench/curlfloor.c, a bare libcurl client with the senders' options and
# event loop and no SQL, against the same nginx as bench/latency.sh.
#
#   DELAY   nginx's answer delay, "MIN:MAX" ms (default 100:200); 0: plain
#           HTTP answered at once (the ceiling's scenario)
#   HTTP    2 (default) or 1.1
#   RATE    requests a second in all (default 10000: 10 numbers x 1,000)
#   ROWS    requests in all (default 30000)
#   PROCS   clients side by side, each RATE/PROCS (default 2, as the two
#           senders)
#   TICK    ms: each client's loop wakes at most once a TICK (default 0:
#           at every event), batching socket events as a busy sender's
#           database cycles do; what that saves and what it adds
#   MAXIN   most requests in flight per client (default 0: no cap; the
#           plain-HTTP ceiling needs one)
#   CURL_LIBDIR  a directory with another libcurl.so.4 to load instead
#   FLOOR_STREAMS  HTTP/2 streams a connection (default 1000, as the
#           senders)
#   LABEL   the row's name (default: the settings)
#
# Prints each client's line (libcurl's version, its rate, peak in flight,
# CPU per request, latency and the part of it that was not the server's
# wait, p50/p99), then nginx's CPU per request.  With OUT=FILE, one CSV
# row is appended: label, requests a second of all clients, their mean
# CPU per request, the worse client's added p50 and p99, nginx's CPU per
# request.  Exits 1 if a client saw a failed request.
set -euo pipefail

. "$(dirname "$0")/../test/lib.sh"
DELAY=${DELAY:-100:200}
HTTP=${HTTP:-2}
RATE=${RATE:-10000}
ROWS=${ROWS:-30000}
PROCS=${PROCS:-2}
WORK=$(mktemp -d /tmp/wasend-floor.XXXXXX)
chmod 755 "$WORK"

pids=()
cleanup() {
	[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
	nginx_stop "$WORK"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gcc -O2 -Wall -Wextra -o "$WORK/curlfloor" \
	"$WASEND_ROOT/bench/curlfloor.c" $(pkg-config --cflags --libs libcurl) -lm

nginx_delay_start "$WORK" "$DELAY"
URL=$NGINX_API/1/messages
NGINXP=$(nginx_workers "$WORK")
N0=$(cpu_of $NGINXP)
LIBPATH=${CURL_LIBDIR:+$CURL_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}
LIBPATH=${LIBPATH:-${LD_LIBRARY_PATH:-}}
for i in $(seq 1 "$PROCS"); do
	LD_LIBRARY_PATH=$LIBPATH "$WORK/curlfloor" "$URL" "$WORK/ca.pem" "$HTTP" $((RATE / PROCS)) $((ROWS / PROCS)) ${TICK:-0} ${MAXIN:-0} >"$WORK/out.$i" &
	pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
pids=()
N1=$(cpu_of $NGINXP)
HZ=$(getconf CLK_TCK)
US_NGINX=$(( (N1 - N0) * 1000000 / HZ / ROWS ))
LABEL=${LABEL:-"DELAY=$DELAY HTTP/$HTTP RATE=$RATE TICK=${TICK:-0} MAXIN=${MAXIN:-0}"}
echo "floor: $LABEL, ROWS=$ROWS PROCS=$PROCS"
for i in $(seq 1 "$PROCS"); do echo "  client $i: $(cat "$WORK/out.$i")"; done
echo "  nginx: $US_NGINX us/req"
if [ -n "${OUT:-}" ]; then
	# added p50/p99: the worse client's; "-" when no answer carried
	# Server-Timing (the plain-HTTP nginx does not send it)
	cat "$WORK"/out.* | awk -F'|' -v label="$LABEL" -v ng="$US_NGINX" '
		BEGIN { p50 = p99 = -1 }
		{ rate += $2 + 0; split($4, c, " "); cpu += c[2]; n++
		  split($6, a, " ")
		  if (a[3] ~ /^[0-9.]+$/ && a[3] + 0 > p50) p50 = a[3] + 0
		  if (a[5] ~ /^[0-9.]+$/ && a[5] + 0 > p99) p99 = a[5] + 0 }
		END { if (n == 0) exit 1
		      printf "\"%s\",%d,%.0f,%s,%s,%s\n", label, rate, cpu / n,
		             p50 < 0 ? "-" : sprintf("%.1f", p50), p99 < 0 ? "-" : sprintf("%.1f", p99), ng }' >>"$OUT"
fi
exit $rc
