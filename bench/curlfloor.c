/*-------------------------------------------------------------------------
 *
 * curlfloor.c
 *		The floor under a sender's HTTP cost: a bare libcurl client that
 *		does only what a sender's HTTP side does, and nothing of its SQL.
 *
 * It POSTs a message body to URL at RATE requests a second, paced evenly,
 * until it has sent COUNT, with the options src/http_client.c sets
 * (HTTP/2 over TLS with up to 1,000 streams a connection, or HTTP/1.1;
 * TCP_NODELAY; the same headers) and the same event loop: libcurl's
 * multi-socket interface driven from an epoll set, one
 * curl_multi_socket_action() per ready socket.  Easy handles are pooled.
 *
 * It prints its own CPU time per request (getrusage: handshakes
 * included), the rate it reached, the most requests it had in flight,
 * and the latency it saw and how much of it was not the server's own
 * wait (the latency less the answer's "Server-Timing: app;dur=MS"), p50
 * and p99.  The latency is taken as the sender takes it
 * (src/http_client.c): curl's total time, or the time from start to
 * collection if that is shorter.  Percentiles here are exact; the
 * sender's come from a histogram (src/latency.c).
 * bench/floor.sh runs it against the same nginx as bench/latency.sh; what
 * it measures is what libcurl, OpenSSL and the kernel cost on this
 * machine, below which no sender built on libcurl can go.
 *
 * Usage: curlfloor URL CAFILE HTTP(2|1.1) RATE COUNT [TICK_MS [MAX_INFLIGHT]]
 *
 * With TICK_MS, the loop wakes at most once every TICK_MS ms (answers
 * that arrive in between wait for the next tick): what batching the
 * socket events would save, and what it adds to the latency.  With
 * MAX_INFLIGHT, no request starts while that many are in flight (and
 * HTTP/1.1 opens at most that many connections), as wasend.max_inflight
 * bounds a sender: the ceiling's scenario needs it, or an open-loop
 * client opens a connection per request.  FLOOR_STREAMS in the
 * environment sets the HTTP/2 streams a connection (default 1,000, as
 * the senders).
 *
 * A benchmark tool, not part of the extension: plain C, no PostgreSQL.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>

typedef struct Req
{
	CURL	   *easy;
	struct Req *next_free;
	double		server_ms;		/* sum of Server-Timing durations */
	int			has_server;		/* a Server-Timing duration was seen */
	long long	started_us;
} Req;

static CURLM *multi;
static int	epfd;
static long long timer_at = -1;	/* monotonic us; -1 = none */
static Req *free_list;
static int	inflight, peak;
static double *lat, *added;
static int	ndone, nadded, nerr;

/*
 * Monotonic clock in microseconds.
 */
static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * curl's socket callback: keep our epoll set in step with what curl wants.
 */
static int
socket_cb(CURL *e, curl_socket_t s, int what, void *u, void *sp)
{
	struct epoll_event ev = {0};

	(void) e;
	(void) u;
	(void) sp;

	ev.data.fd = s;
	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

/*
 * curl's timer callback: remember when curl wants to be called again.
 */
static int
timer_cb(CURLM *m, long ms, void *u)
{
	(void) m;
	(void) u;
	timer_at = ms < 0 ? -1 : now_us() + ms * 1000;
	return 0;
}

/*
 * Throw the body away: only the latency matters here.
 */
static size_t
write_cb(char *p, size_t size, size_t n, void *u)
{
	(void) p;
	(void) u;
	return size * n;
}

/*
 * Add up the server's own wait from "Server-Timing: app;dur=MS" headers
 * (every dur= of every such header, as the sender does).  The header is
 * not NUL-terminated: each value is copied out before strtod reads it.
 */
static size_t
header_cb(char *p, size_t size, size_t n, void *u)
{
	Req		   *r = u;
	size_t		len = size * n;
	char	   *end = p + len;
	char	   *d;

	if (len < 14 || strncasecmp(p, "server-timing:", 14) != 0)
		return len;
	while ((d = memmem(p, end - p, "dur=", 4)) != NULL)
	{
		char		num[32];
		size_t		k = 0;

		d += 4;
		while (d + k < end && k < sizeof(num) - 1 &&
			   strchr("0123456789.", d[k]) != NULL)
		{
			num[k] = d[k];
			k++;
		}
		num[k] = '\0';
		if (k > 0)
		{
			r->server_ms += strtod(num, NULL);
			r->has_server = 1;
		}
		p = d + k;
	}
	return len;
}

/*
 * Allocate or die: a benchmark has nothing to fall back on.
 */
static void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n, size);

	if (p == NULL)
	{
		perror("curlfloor: calloc");
		exit(2);
	}
	return p;
}

/*
 * Start one POST, from the pool of easy handles when it has one.
 */
static void
start(const char *url, const char *ca, int h2, struct curl_slist *hdrs,
	  const char *body)
{
	Req		   *r = free_list;

	if (r)
		free_list = r->next_free;
	else
	{
		r = xcalloc(1, sizeof(Req));
		r->easy = curl_easy_init();
		if (r->easy == NULL)
		{
			fprintf(stderr, "curlfloor: curl_easy_init failed\n");
			exit(2);
		}
	}
	curl_easy_reset(r->easy);
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(r->easy, CURLOPT_CAINFO, ca);
	curl_easy_setopt(r->easy, CURLOPT_SSLVERSION,
					 (long) CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "curlfloor");
	curl_easy_setopt(r->easy, CURLOPT_HTTP_VERSION,
					 h2 ? (long) CURL_HTTP_VERSION_2TLS : (long) CURL_HTTP_VERSION_1_1);
	if (h2)
		curl_easy_setopt(r->easy, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
	r->server_ms = 0;
	r->has_server = 0;
	r->started_us = now_us();
	curl_multi_add_handle(multi, r->easy);
	if (++inflight > peak)
		peak = inflight;
}

/*
 * Collect finished transfers: their latency, and the handle back to the
 * pool.
 */
static void
collect(void)
{
	CURLMsg    *m;
	int			left;

	while ((m = curl_multi_info_read(multi, &left)) != NULL)
	{
		Req		   *r;
		long		code = 0;
		curl_off_t	total = 0;
		double		ms;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &r);
		curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
		if (m->data.result != CURLE_OK || code != 200)
			nerr++;
		curl_easy_getinfo(m->easy_handle, CURLINFO_TOTAL_TIME_T, &total);
		ms = (now_us() - r->started_us) / 1000.0;
		if (total > 0 && total / 1000.0 < ms)
			ms = total / 1000.0;
		lat[ndone++] = ms;
		if (r->has_server)
			added[nadded++] = ms - r->server_ms;
		curl_multi_remove_handle(multi, m->easy_handle);
		r->next_free = free_list;
		free_list = r;
		inflight--;
	}
}

/*
 * qsort comparator for doubles.
 */
static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/*
 * The p-th percentile of n values (sorts them); NAN when there are none.
 */
static double
pct(double *v, int n, double p)
{
	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(double), cmp);
	return v[(int) (p * (n - 1))];
}

/*
 * Pace RATE requests a second until COUNT are answered, then print what
 * they cost.  Exit status 1 if any failed, 2 on bad arguments.
 */
int
main(int argc, char **argv)
{
	const char *url, *ca, *body;
	int			h2, rate, count, started = 0, running, max_inflight;
	long long	t0, t1, tick_us, last_wake = 0;
	struct curl_slist *hdrs = NULL;
	struct rusage ru;
	double		cpu_us;

	if (argc < 6 || argc > 8)
	{
		fprintf(stderr, "usage: curlfloor URL CAFILE HTTP(2|1.1) RATE COUNT"
				" [TICK_MS [MAX_INFLIGHT]]\n");
		return 2;
	}
	url = argv[1];
	ca = argv[2];
	if (strcmp(argv[3], "2") != 0 && strcmp(argv[3], "1.1") != 0)
	{
		fprintf(stderr, "curlfloor: HTTP must be 2 or 1.1, not \"%s\"\n", argv[3]);
		return 2;
	}
	h2 = strcmp(argv[3], "2") == 0;
	rate = atoi(argv[4]);
	count = atoi(argv[5]);
	if (rate <= 0 || count <= 0)
	{
		fprintf(stderr, "curlfloor: RATE and COUNT must be positive\n");
		return 2;
	}
	tick_us = argc >= 7 ? atoll(argv[6]) * 1000 : 0;
	max_inflight = argc >= 8 ? atoi(argv[7]) : 0;
	/* a message body of the size the senders send */
	body = "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\","
		"\"to\":\"15550001234\",\"type\":\"text\",\"text\":{\"body\":\"x\"},"
		"\"biz_opaque_callback_data\":\"wasend:1:1234\"}";
	lat = xcalloc(count, sizeof(double));
	added = xcalloc(count, sizeof(double));

	curl_global_init(CURL_GLOBAL_DEFAULT);
	multi = curl_multi_init();
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (multi == NULL || epfd < 0)
	{
		fprintf(stderr, "curlfloor: cannot set up curl or epoll\n");
		return 2;
	}
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 4000L);
	if (h2)
	{
		curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
		curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
						  getenv("FLOOR_STREAMS") ? atol(getenv("FLOOR_STREAMS")) : 1000L);
	}
	else if (max_inflight > 0)
		curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) max_inflight);
	hdrs = curl_slist_append(hdrs, "Authorization: Bearer tok");
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");

	t0 = now_us();
	while (ndone < count)
	{
		struct epoll_event ev[64];
		long long	now = now_us(),
					next_start;
		int			due = (int) ((now - t0) * rate / 1000000) + 1,
					timeout,
					n,
					i;

		while (started < count && started < due &&
			   (max_inflight == 0 || inflight < max_inflight))
		{
			start(url, ca, h2, hdrs, body);
			started++;
		}
		/*
		 * New handles want curl's timer at once; in tick mode this is also
		 * the pass that runs the 0 ms timers of the events just handled,
		 * within the same wake.
		 */
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
		collect();

		/*
		 * The next start is a reason to wake only while a request may
		 * start: at MAX_INFLIGHT only an answer frees a slot, and waking
		 * for the start time would spin.
		 */
		next_start = started < count &&
			(max_inflight == 0 || inflight < max_inflight) ?
			t0 + (long long) started * 1000000 / rate : -1;
		now = now_us();
		timeout = 1000;
		if (timer_at >= 0)
			timeout = timer_at <= now ? 0 :
				(int) ((timer_at - now + 999) / 1000);
		if (next_start >= 0)
		{
			int			t = next_start <= now ? 0 :
				(int) ((next_start - now + 999) / 1000);

			if (t < timeout)
				timeout = t;
		}
		if (tick_us > 0 && now < last_wake + tick_us)
		{
			/* batch: nothing until the next tick */
			struct timespec ts;
			long long	d = last_wake + tick_us - now;

			ts.tv_sec = d / 1000000;
			ts.tv_nsec = (d % 1000000) * 1000;
			nanosleep(&ts, NULL);
			timeout = 0;
		}
		n = epoll_wait(epfd, ev, 64, timeout);
		last_wake = now_us();
		for (i = 0; i < n; i++)
		{
			int			flags = 0;

			if (ev[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (ev[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (ev[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, ev[i].data.fd, flags, &running);
		}
		if (timer_at >= 0 && timer_at <= now_us())
		{
			timer_at = -1;
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		collect();
	}
	t1 = now_us();
	getrusage(RUSAGE_SELF, &ru);
	cpu_us = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec +
		ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
	printf("libcurl %s | %.0f req/s | peak in flight %d | CPU %.1f us/req"
		   " | latency p50 %.1f p99 %.1f ms | added p50 %.1f p99 %.1f ms"
		   " | errors %d\n",
		   curl_version_info(CURLVERSION_NOW)->version,
		   count / ((t1 - t0) / 1e6), peak, cpu_us / count,
		   pct(lat, ndone, 0.5), pct(lat, ndone, 0.99),
		   pct(added, nadded, 0.5), pct(added, nadded, 0.99), nerr);
	return nerr != 0;
}
