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
