# test/lib.sh — shell helpers shared by `make demo` and the benchmarks:
# a throwaway PostgreSQL cluster owned by the postgres user, the mock Graph
# API, and a private CA for TLS.  Source it; it defines functions only.

WASEND_ROOT=${WASEND_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PGBIN=${PGBIN:-$(pg_config --bindir)}

# Run a command as the postgres user (initdb refuses root).
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Print a TCP port nobody listens on.
free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

# Print a TCP port P such that nobody listens on P nor on P + 1 (nginx_start
# takes both).
free_port_pair() {
	node -e 'const net = require("net");
		function tryOne() {
			const a = net.createServer();
			a.listen(0, "127.0.0.1", () => {
				const p = a.address().port;
				const b = net.createServer();
				b.once("error", () => { a.close(); tryOne(); });
				b.listen(p + 1, "127.0.0.1", () => { console.log(p); b.close(); a.close(); });
			});
		}
		tryOne();'
}

# cluster_init DIR PORT [extra postgresql.conf lines...]
cluster_init() {
	local dir=$1 port=$2
	shift 2
	mkdir -p "$dir"
	chown postgres: "$dir" 2>/dev/null || true
	as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'wasend'"
		echo "max_worker_processes = 32"
		echo "fsync = off"
		echo "log_line_prefix = '%m [%p] %b '"
		for line in "$@"; do echo "$line"; done
	} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
}

cluster_start() {
	as_pg "$PGBIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w start >/dev/null
}

cluster_stop() {
	[ -f "$1/data/postmaster.pid" ] &&
		as_pg "$PGBIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1
	return 0
}

# cluster_psql DIR PORT psql-args...
cluster_psql() {
	local dir=$1 port=$2
	shift 2
	as_pg "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -v ON_ERROR_STOP=1 "$@"
}

# make_certs DIR: a private CA and a server certificate for 127.0.0.1.
make_certs() {
	local d=$1
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=wasend test CA" \
		-keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/san.ext" -out "$d/server.pem" >/dev/null 2>&1
	chmod 644 "$d"/*.pem
}

# mock_start DIR PORT CONFIG [extra args]: start the mock Graph API in the
# background and wait (bounded) until it listens.  Sets MOCK_PID.
mock_start() {
	local dir=$1 port=$2 config=$3
	shift 3
	rm -f "$dir/mock.ready"
	# as root, give the mock (the judge of the rate limit) priority over
	# the processes it judges, so its clock is stamped promptly
	local nice=""
	[ "$(id -u)" = 0 ] && nice="nice -n -10"
	$nice node "$WASEND_ROOT/test/mock/graph-api.js" --port "$port" --config "$config" \
		--ready-file "$dir/mock.ready" "$@" >"$dir/mock.log" 2>&1 &
	MOCK_PID=$!
	for _ in $(seq 1 100); do
		[ -f "$dir/mock.ready" ] && return 0
		sleep 0.05
	done
	echo "mock Graph API did not start; see $dir/mock.log" >&2
	return 1
}

# nginx_start DIR PORT [latency]: (PORT from free_port_pair) nginx answering every send like the Graph
# API with canned JSON and a unique message id ($request_id), on
# 127.0.0.1:PORT over plain HTTP/1.1 and on PORT+1 over TLS (HTTP/1.1 or
# HTTP/2, certificate from make_certs DIR).  With "latency", each answer
# waits 100-200 ms, uniformly in 16 steps picked by the id's first hex
# digit (the echo module from Debian's libnginx-mod-http-echo sleeps
# without blocking nginx); "latency:MIN:MAX" waits MIN-MAX ms instead.
# The answer then says how long the server waited in a Server-Timing
# header ("app;dur=MS"), as a server that reports its own time does.  With
# NGINX_ACCESS_LOG=FILE set, each request is logged there as
# "connection-serial protocol request-id".
nginx_start() {
	local dir=$1 port=$2 latency=${3:-}
	local body='{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.$request_id","message_status":"accepted"}]}'
	local handler="default_type application/json; return 200 '$body';"
	local module=""
	[ -f "$dir/server.pem" ] || make_certs "$dir"
	local lmin=100 lmax=200 maps="" i ms
	if [ -n "$latency" ]; then
		module="load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
		handler="default_type application/json; add_header Server-Timing \"app;dur=\$delay_ms\" always; echo_read_request_body; echo_sleep \$delay; echo '$body';"
		if [[ $latency == latency:* ]]; then
			IFS=: read -r _ lmin lmax <<<"$latency"
		fi
		# 16 steps from lmin to lmax, picked by the request id's first digit
		local m1="map \$request_id \$delay_ms {" m2="map \$request_id \$delay {" key
		for i in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do
			ms=$((lmin + (lmax - lmin) * 16#$i / 15))
			key="~^$i"
			[ "$i" = f ] && key=default
			m1="$m1 $key $ms;"
			m2="$m2 $key $(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)));"
		done
		maps="$m1 } $m2 }"
	fi
	cat >"$dir/nginx.conf" <<NGINX
$module
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 16384; }
http {
  log_format wasend '\$connection \$server_protocol \$request_id';
  access_log ${NGINX_ACCESS_LOG:-off}${NGINX_ACCESS_LOG:+ wasend};
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams 1000;
  # every temp path in DIR: the defaults under /var/lib/nginx are root's
  # and the tests run nginx as postgres
  client_body_temp_path $dir/nginx-body;
  proxy_temp_path $dir/nginx-proxy;
  fastcgi_temp_path $dir/nginx-fastcgi;
  uwsgi_temp_path $dir/nginx-uwsgi;
  scgi_temp_path $dir/nginx-scgi;
  $maps
  server {
    listen 127.0.0.1:$port;
    listen 127.0.0.1:$((port + 1)) ssl http2;
    ssl_certificate $dir/server.pem;
    ssl_certificate_key $dir/server.key;
    location ~ ^/v[0-9.]+/[0-9]+/messages\$ { $handler }
  }
}
NGINX
	nginx -e "$dir/nginx-error.log" -c "$dir/nginx.conf"
}

# nginx_delay_start DIR DELAY: the benchmarks' nginx on a free port pair.
# DELAY "MIN:MAX" ms: every send answered after MIN-MAX ms over TLS;
# DELAY 0: canned answers at once over plain HTTP (the ceiling).  Sets
# NGINX_API to the API base URL (".../v21.0") to use.
nginx_delay_start() {
	local dir=$1 delay=$2 port
	port=$(free_port_pair)
	if [ "$delay" = 0 ]; then
		nginx_start "$dir" "$port"
		NGINX_API="http://127.0.0.1:$port/v21.0"
	else
		nginx_start "$dir" "$port" "latency:$delay"
		NGINX_API="https://127.0.0.1:$((port + 1))/v21.0"
	fi
}

# nginx_workers DIR: print the pids of the nginx started in DIR's worker
# processes (the benchmarks count their CPU), waiting up to 5 s for the
# master to fork them after it writes its pid file.
nginx_workers() {
	local w=""
	for _ in $(seq 1 100); do
		[ -s "$1/nginx.pid" ] && w=$(pgrep -P "$(cat "$1/nginx.pid")" | tr '\n' ' ' || true)
		[ -n "$w" ] && { echo "$w"; return 0; }
		sleep 0.05
	done
	echo "nginx in $1 has no worker; see $1/nginx-error.log" >&2
	return 1
}

# nginx_stop DIR
nginx_stop() {
	[ -f "$1/nginx.pid" ] && kill "$(cat "$1/nginx.pid")" 2>/dev/null
	rm -f "$1/nginx.pid"
	return 0
}

# seed_sql FIRST NUMBERS ROWS: print the SQL that registers NUMBERS numbers
# at 1,000 msg/s (phone number ids FIRST+1, FIRST+2, ...), one draft
# campaign each, and ROWS rows spread over them, then vacuums and analyzes
# the queue.  The benchmarks pipe it into their cluster's psql.
seed_sql() {
	cat <<SQL
SELECT wasend.wasend_add_number(($1 + g)::text, 'tok', 1000) FROM generate_series(1, $2) g;
SELECT wasend.wasend_create_campaign('c' || g, g, '{"type":"text","text":{"body":"x"}}') FROM generate_series(1, $2) g;
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1 + (g % $2), (15550000000 + g)::text FROM generate_series(1, $3) g;
VACUUM ANALYZE wasend.send_queue;
SQL
}

# cpu_of PID...: the CPU time (user + system) of the given processes, in
# clock ticks (getconf CLK_TCK per second); gone processes count 0.  The
# benchmarks' CPU per message.
cpu_of() {
	local t=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

# queue_sql NAME: print one of the statements the workers run, as SQL text:
# the block "-- name: NAME" of src/queue.sql, the file the build also turns
# into the senders' C strings (src/queue_sql.awk), so that the benchmarks
# always measure the current statements.  "sql_claim" and "claim" both work.
queue_sql() {
	awk -v name="${1#sql_}" -f "$WASEND_ROOT/src/queue_sql.awk" "$WASEND_ROOT/src/queue.sql"
}
