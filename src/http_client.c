/*-------------------------------------------------------------------------
 *
 * http_client.c
 *		libcurl multi-socket client for one sender: pooled keep-alive
 *		connections (or HTTP/2 multiplexing), bounded in-flight requests.
 *
 * A leaf: it tells its owner through callbacks when a send reaches the
 * wire or ends unsent, and its curl callbacks never ereport.  See
 * docs/internals/http_client.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http_client.h"
#include "clock.h"
#include "settings.h"

/* pooled requests always kept, whatever the last period needed */
#define POOL_KEEP_MIN			64

/*
 * A Graph API answer is a few hundred bytes; one over 64 kB is an error
 * (bad_response), and no more of it is kept: with wasend.max_inflight
 * requests in flight, a sender holds at most that many such buffers.  The
 * headers of an answer are capped the same way (curl itself keeps them
 * until the handle's next request).
 */
#define MAX_RESPONSE_BYTES		(64 * 1024)
#define MAX_HEADER_BYTES		(32 * 1024)

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static int64 timer_deadline = 0;	/* monotonic us from curl's timer callback; 0 = none */
static int	socket_errno = 0;	/* first epoll_ctl failure, if any */
static int	n_inflight = 0;
static HttpRequest *free_list = NULL;
static int	n_free = 0;			/* requests in free_list */
static int	inflight_peak = 0;	/* the most in flight since the last trim */
static HttpRequest *wired_list = NULL;	/* reached the wire, not yet told */
static MemoryContext http_context = NULL;
static WasendHttpOnWire on_wire_cb = NULL;	/* the owner's callbacks */
static WasendHttpUnsent unsent_cb = NULL;
static uint64 answers = 0;		/* requests finished, for sampling */

/* the connection's RTT variation is read for one answer in this many */
#define RTTVAR_SAMPLE		8

/*
 * curl socket callback: mirror curl's interest in a socket into our epoll
 * set.  Runs inside curl, so it must not ereport.
 */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	(void) easy;
	(void) userp;

	if (what == CURL_POLL_REMOVE)
	{
		/* the socket may already be closed; ENOENT/EBADF are fine */
		epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;

	if (socketp == NULL)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0 &&
			(errno != EEXIST || epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0))
		{
			if (socket_errno == 0)
				socket_errno = errno;
			return -1;
		}
		curl_multi_assign(multi, s, (void *) 1);
	}
	else if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0)
	{
		if (socket_errno == 0)
			socket_errno = errno;
		return -1;
	}
	return 0;
}

/*
 * curl timer callback: remember when curl next wants to be called.
 */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void) m;
	(void) userp;
	if (timeout_ms < 0)
		timer_deadline = 0;
	else
		timer_deadline = wasend_mono_us() + (int64) timeout_ms * 1000;
	return 0;
}

/*
 * curl write callback: append the response to the request's buffer.  It
 * uses malloc, not palloc, because it runs inside curl and must not throw;
 * returning less than it was given makes curl fail the transfer.
 */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpRequest *req = (HttpRequest *) userp;
	size_t		n = size * nmemb;

	if (req->resp_len + n + 1 > req->resp_cap)
	{
		size_t		cap = Max(req->resp_cap * 2, req->resp_len + n + 1);
		char	   *p;

		if (cap > MAX_RESPONSE_BYTES)
		{
			req->resp_too_big = true;
			return 0;
		}
		p = realloc(req->resp, Max(cap, 1024));
		if (p == NULL)
			return 0;
		req->resp = p;
		req->resp_cap = Max(cap, 1024);
	}
	memcpy(req->resp + req->resp_len, data, n);
	req->resp_len += n;
	req->resp[req->resp_len] = '\0';
	return n;
}

/*
 * curl header callback: count the answer's header bytes, and make curl
 * fail the transfer (returning less than it was given) once they pass
 * MAX_HEADER_BYTES.  An X-Ad-Api-Version-Warning header (Meta upgraded a
 * call to a deprecated API version) is kept in req->version_warning, for
 * the sender to report once curl returned.  Never throws.
 */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpRequest *req = (HttpRequest *) userp;
	size_t		n = size * nmemb;
	static const char name[] = "X-Ad-Api-Version-Warning:";
	size_t		namelen = sizeof(name) - 1;

	req->header_bytes += n;
	if (req->header_bytes > MAX_HEADER_BYTES)
	{
		req->resp_too_big = true;
		return 0;
	}
	if (n > namelen && pg_strncasecmp(data, name, namelen) == 0)
	{
		const char *v = data + namelen;
		size_t		len = n - namelen;

		while (len > 0 && (*v == ' ' || *v == '\t'))
		{
			v++;
			len--;
		}
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
						   v[len - 1] == ' ' || v[len - 1] == '\t'))
			len--;
		len = Min(len, sizeof(req->version_warning) - 1);
		memcpy(req->version_warning, v, len);
		req->version_warning[len] = '\0';
	}
	return n;
}

/*
 * curl pre-request callback: the request is about to be written on an
 * established (or reused) connection, which curl does before it returns.
 * Note it; the owner is told after curl returns (see report_wired),
 * since callbacks stay trivial.  libcurl calls it again when it sends the
 * request again on a new connection (a reused one closed first).
 */
static int
prereq_cb(void *clientp, char *primary_ip, char *local_ip,
		  int primary_port, int local_port)
{
	HttpRequest *req = (HttpRequest *) clientp;

	req->writes++;
	if (!req->in_wired_list)
	{
		req->in_wired_list = true;
		req->next_wired = wired_list;
		wired_list = req;
	}
	return CURL_PREREQFUNC_OK;
}

/*
 * Tell the owner about the sends prereq_cb saw being written: curl has
 * returned, so they are written by now.  Every write is told, the first
 * one marked (the sender's rate gate settles a send's grant at its first
 * write and counts a write again too).
 */
static void
report_wired(void)
{
	int64		now = wired_list != NULL ? wasend_mono_us() : 0;

	while (wired_list != NULL)
	{
		HttpRequest *req = wired_list;

		wired_list = req->next_wired;
		req->next_wired = NULL;
		req->in_wired_list = false;
		while (req->writes_reported < req->writes)
		{
			if (req->kind == HTTP_SEND)
				on_wire_cb(req->owner_key, now, req->writes_reported == 0);
			req->writes_reported++;
		}
	}
}

/*
 * Whether requests go out over HTTP/2: wasend.http_version = 2 and an https
 * API URL.  Plain http stays on HTTP/1.1 (libcurl 7.88 fails multiplexed
 * streams after the first on prior-knowledge h2c), and so does the pool
 * shape for it.
 */
static bool
use_http2(void)
{
	return wasend_http_version == WASEND_HTTP_2 &&
		wasend_api_base_url != NULL &&
		pg_strncasecmp(wasend_api_base_url, "https://", 8) == 0;
}

/*
 * Apply the settings that shape the connection pool.  Called at start and
 * after every configuration reload.
 */
void
wasend_http_configure(void)
{
	long		cap = wasend_max_inflight;
	struct rlimit nofile;

	/*
	 * Each connection is a descriptor: never more than half of what the
	 * process may open (PostgreSQL's own files take the rest; its file
	 * cache closes files when it meets the limit, curl cannot).  Requests
	 * beyond the pool wait in curl for a connection.
	 */
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
		cap = Min(cap, Max(16, (long) (nofile.rlim_cur / 2)));

	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, cap);
	if (use_http2())
	{
		curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
		curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
		curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
	}
	else
	{
		curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_NOTHING);
		curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, cap);
	}
}

/*
 * Set up curl for this process, with the owner's callbacks for its sends.
 * curl_global_init runs here, in the worker, never in the postmaster.
 */
void
wasend_http_init(WasendHttpOnWire on_wire, WasendHttpUnsent unsent)
{
	CURLcode	rc;

	on_wire_cb = on_wire;
	unsent_cb = unsent;

	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl: %s", curl_easy_strerror(rc))));

	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll set: %m")));

	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a curl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);

	http_context = AllocSetContextCreate(TopMemoryContext,
										 "wasend http",
										 ALLOCSET_DEFAULT_SIZES);
	wasend_http_configure();
}

/*
 * Release everything; requests still in flight are abandoned.
 */
void
wasend_http_shutdown(void)
{
	if (multi)
		curl_multi_cleanup(multi);
	multi = NULL;
	if (epoll_fd >= 0)
		close(epoll_fd);
	epoll_fd = -1;
}

/*
 * The descriptor the sender waits on for socket activity.
 */
int
wasend_http_event_fd(void)
{
	return epoll_fd;
}

/*
 * How long curl may be left alone from now (monotonic us), in ms; -1 means
 * no timer.
 */
long
wasend_http_timeout_ms(int64 now)
{
	if (timer_deadline == 0)
		return -1;
	if (timer_deadline <= now)
		return 0;
	return (long) ((timer_deadline - now + 999) / 1000);
}

/*
 * Has curl's timer expired?
 */
bool
wasend_http_timer_due(int64 now)
{
	return timer_deadline != 0 && timer_deadline <= now;
}

/*
 * Number of requests started and not yet returned by wasend_http_next_done().
 */
int
wasend_http_inflight(void)
{
	return n_inflight;
}

/*
 * Let curl make progress: on ready sockets and/or an expired timer.
 */
void
wasend_http_drive(bool socket_ready, bool timer_due)
{
	int			running;

	if (socket_ready)
	{
		struct epoll_event events[64];
		int			n;

		do
		{
			int			i;

			n = epoll_wait(epoll_fd, events, lengthof(events), 0);
			for (i = 0; i < n; i++)
			{
				int			flags = 0;

				if (events[i].events & EPOLLIN)
					flags |= CURL_CSELECT_IN;
				if (events[i].events & EPOLLOUT)
					flags |= CURL_CSELECT_OUT;
				if (events[i].events & (EPOLLERR | EPOLLHUP))
					flags |= CURL_CSELECT_ERR;
				curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
			}
		} while (n == lengthof(events));
	}

	if (timer_due)
	{
		timer_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	report_wired();

	if (socket_errno != 0)
	{
		errno = socket_errno;
		socket_errno = 0;
		ereport(WARNING,
				(errcode_for_socket_access(),
				 errmsg("wasend could not watch a curl socket: %m")));
	}
}

/*
 * Between the statements of a database cycle: let curl read the answers
 * that arrived and write what it can, without waiting, so that a cycle's
 * statements do not add their whole time to every request in flight (the
 * answers are collected after the cycle).  Safe inside a transaction: the
 * callbacks touch only the request and the owner's callbacks run after
 * curl returns.
 */
void
wasend_http_pump(void)
{
	if (multi == NULL)
		return;
	wasend_http_drive(true, wasend_http_timer_due(wasend_mono_us()));
}

/*
 * Get a pooled easy handle with the options every request shares.
 */
static HttpRequest *
request_alloc(void)
{
	HttpRequest *req;
	CURL	   *easy;

	if (free_list)
	{
		req = free_list;
		free_list = req->next_free;
		n_free--;
		return req;
	}

	easy = curl_easy_init();
	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a curl easy handle")));

	req = MemoryContextAllocZero(http_context, sizeof(HttpRequest));
	req->easy = easy;
	return req;
}

/*
 * Keep a copy of the bearer token a request carries: an error answer may
 * quote it, and the sender redacts it with the token the request was sent
 * with, whatever the number's state is by the time the answer comes (a
 * limits read of a number without a campaign has none; a token changed
 * meanwhile is another).  The buffer stays with the pooled request.
 */
static void
request_keep_token(HttpRequest *req, const char *token)
{
	size_t		len = strlen(token);

	if (req->token_cap <= len)
	{
		if (req->token)
			pfree(req->token);
		req->token_cap = Max(len + 1, 256);
		req->token = MemoryContextAlloc(http_context != NULL ? http_context : CurrentMemoryContext,
										req->token_cap);
	}
	memcpy(req->token, token, len + 1);
}

/*
 * Set the options every request shares on a pooled handle: URL, bearer
 * token, TLS, timeouts, the HTTP version, and our callbacks.  The request
 * is not started.
 */
static void
request_setup(HttpRequest *req, const char *url, const char *token,
			  bool json_body)
{
	CURL	   *easy = req->easy;
	struct curl_slist *h = NULL;
	char	   *auth;

	req->writes = 0;
	req->writes_reported = 0;
	req->in_wired_list = false;
	req->next_wired = NULL;
	req->resp_len = 0;
	req->header_bytes = 0;
	req->resp_too_big = false;
	if (req->resp)
		req->resp[0] = '\0';
	req->http_status = 0;
	req->curl_code = 0;
	req->errbuf[0] = '\0';
	req->version_warning[0] = '\0';
	req->new_connections = 0;
	request_keep_token(req, token);

	auth = psprintf("Authorization: Bearer %s", token);
	h = curl_slist_append(h, auth);
	pfree(auth);
	if (json_body)
	{
		h = curl_slist_append(h, "Content-Type: application/json");
		h = curl_slist_append(h, "Expect:");
	}
	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	req->headers = h;

	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) wasend_request_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "wasend/" WASEND_VERSION);
	if (wasend_ca_file && wasend_ca_file[0] != '\0')
		curl_easy_setopt(easy, CURLOPT_CAINFO, wasend_ca_file);
	if (use_http2())
	{
		/*
		 * PIPEWAIT makes a new request wait for a stream on a connection
		 * being set up rather than open a connection of its own.
		 */
		curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
	}
	else
		curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

/*
 * Hand a set-up request to curl.
 */
static void
request_go(HttpRequest *req)
{
	CURLMcode	mrc;

	req->started = wasend_mono_us();
	mrc = curl_multi_add_handle(multi, req->easy);
	if (mrc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not start a request: %s", curl_multi_strerror(mrc))));
	n_inflight++;
	inflight_peak = Max(inflight_peak, n_inflight);
	report_wired();
}

/*
 * Start one POST of a JSON body with a bearer token.  The request is owned
 * by the client until wasend_http_next_done() returns it.
 */
HttpRequest *
wasend_http_start(const char *url, const char *token, const char *body,
		   int64 row_id, int64 campaign_id, int64 number_id, int64 owner_key)
{
	HttpRequest *req = request_alloc();

	req->kind = HTTP_SEND;
	req->row_id = row_id;
	req->campaign_id = campaign_id;
	req->number_id = number_id;
	req->owner_key = owner_key;
	req->body = MemoryContextStrdup(http_context, body);
	request_setup(req, url, token, true);
	curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(req->body));
	request_go(req);
	return req;
}

/*
 * Start one GET of a number's account fields (its messaging limit,
 * quality and health).  It is no message: the owner's callbacks are not
 * told about it (report_wired tells about sends only).
 */
HttpRequest *
wasend_http_start_get(const char *url, const char *token, int64 number_id)
{
	HttpRequest *req = request_alloc();

	req->kind = HTTP_LIMITS;
	req->row_id = 0;
	req->campaign_id = 0;
	req->number_id = number_id;
	req->body = NULL;
	request_setup(req, url, token, false);
	curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L);
	request_go(req);
	return req;
}

/*
 * The time the server says it spent on a request, from a Server-Timing
 * header (W3C Server Timing: "name;dur=ms, ..."; the durations are added
 * up), in us; -1 when the answer has none.  It lets the sender tell the
 * latency it adds from the server's own.  Needs libcurl's header API
 * (7.84); older versions report -1.
 */
static int64
server_timing_us(CURL *easy)
{
#if LIBCURL_VERSION_NUM >= 0x075400
	struct curl_header *h;
	const char *p;
	double		total = 0;
	bool		found = false;

	if (curl_easy_header(easy, "Server-Timing", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return -1;
	for (p = h->value; (p = strstr(p, "dur=")) != NULL;)
	{
		char	   *end;
		double		ms;

		p += 4;
		ms = strtod(p, &end);
		if (end != p && ms >= 0 && ms < 3600 * 1000.0)
		{
			total += ms;
			found = true;
		}
		p = end;
	}
	return found ? (int64) (total * 1000.0) : -1;
#else
	return -1;
#endif
}

/*
 * The RTT variation (mean deviation, us) the kernel measured on the
 * connection a request used, from TCP_INFO; -1 when unknown (the
 * connection is gone, not TCP).  It is the delay spread of the path, not
 * of this sender's event loop; on a connection whose server lets its ACK
 * ride on a delayed answer it also holds the server's processing time,
 * which is why the rate gate takes the least over a window (rate_gate.c).
 */
static int64
connection_rttvar_us(CURL *easy)
{
	curl_socket_t fd = CURL_SOCKET_BAD;
	struct tcp_info ti;
	socklen_t	len = sizeof(ti);

	if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
		fd == CURL_SOCKET_BAD)
		return -1;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return -1;
	return (int64) ti.tcpi_rttvar;
}

/*
 * Return the next finished request with its outcome filled in, or NULL.
 */
HttpRequest *
wasend_http_next_done(void)
{
	CURLMsg    *msg;
	int			left;

	/* every write curl made so far is told before any send ends */
	report_wired();
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpRequest *req;
		curl_off_t	total_us = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->curl_code = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &req->http_status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_NUM_CONNECTS, &req->new_connections);
		/*
		 * From curl taking the request up to its reading the answer's
		 * last byte (curl reads while the sender runs a database cycle:
		 * see http_pump), and never more than the time since the sender
		 * handed it over.
		 */
		curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME_T, &total_us);
		req->latency_us = Min((int64) total_us, wasend_mono_us() - req->started);
		req->server_us = server_timing_us(msg->easy_handle);
		/* one answer in RTTVAR_SAMPLE is enough to follow the path */
		req->rttvar_us = (++answers % RTTVAR_SAMPLE) == 0 ?
			connection_rttvar_us(msg->easy_handle) : -1;
		if (req->curl_code != CURLE_OK && req->errbuf[0] == '\0')
			strlcpy(req->errbuf, curl_easy_strerror(req->curl_code), sizeof(req->errbuf));
		if (req->resp_too_big)
			strlcpy(req->errbuf, "answer larger than 64 kB (or its headers than 32 kB)",
					sizeof(req->errbuf));
		curl_multi_remove_handle(multi, msg->easy_handle);
		n_inflight--;
		/* a send that never reached the wire no longer counts */
		if (req->kind == HTTP_SEND && req->writes == 0)
			unsent_cb(req->owner_key);
		return req;
	}
	return NULL;
}

/*
 * Give a finished request back to the pool.
 */
void
wasend_http_release(HttpRequest *req)
{
	curl_slist_free_all((struct curl_slist *) req->headers);
	req->headers = NULL;
	if (req->body)
		pfree(req->body);
	req->body = NULL;
	if (req->resp_cap > 4 * 1024)
	{
		free(req->resp);
		req->resp = NULL;
		req->resp_cap = 0;
	}
	req->next_free = free_list;
	free_list = req;
	n_free++;
}

/*
 * Free the pooled requests that the last period did not need: more than
 * POOL_KEEP_MIN, and more than its peak in flight less what is in flight
 * now.  An easy handle keeps its buffers (about 40 kB), so a pool sized
 * by one burst (a campaign's start, a stall of the API) would keep the
 * sender's memory at that burst for good.  The
 * freed memory goes back to the system (malloc_trim).  Called by the
 * sender every few seconds.
 */
void
wasend_http_trim_pool(void)
{
	int			keep = Max(POOL_KEEP_MIN, inflight_peak - n_inflight);
	int			freed = 0;

	while (n_free > keep && free_list != NULL)
	{
		HttpRequest *req = free_list;

		free_list = req->next_free;
		n_free--;
		curl_easy_cleanup(req->easy);
		free(req->resp);
		if (req->token)
			pfree(req->token);
		pfree(req);
		freed++;
	}
	inflight_peak = n_inflight;
#ifdef __GLIBC__
	if (freed > 0)
		malloc_trim(0);
#endif
}

/*
 * curl progress callback of http_post_once: a query cancel or a
 * termination aborts the transfer (not the other interrupts, such as a
 * client connection check or a barrier, which do not end the statement:
 * aborting on them would report a message as failed that may have been
 * sent).  It only looks at the flags; the interrupt itself is served after
 * curl returns.
 */
static int
interrupt_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			 curl_off_t ultotal, curl_off_t ulnow)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

/*
 * POST one body from a backend and wait for the answer (wasend_test_send).
 * The same options as the senders' requests (TLS, CA file, HTTP version,
 * timeout); curl is initialized in this backend on first use.  Returns the
 * HTTP status and the answer (palloc'd); a transport error is reported as
 * an ERROR after curl returned, a cancel as the cancel.
 */
void
wasend_http_post_once(const char *url, const char *token, const char *body,
			   long *http_status, char **answer)
{
	static bool curl_ready = false;
	HttpRequest req;
	CURLcode	rc;

	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialize libcurl")));
		curl_ready = true;
	}
	memset(&req, 0, sizeof(req));
	req.easy = curl_easy_init();
	if (req.easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a curl easy handle")));
	request_setup(&req, url, token, true);
	curl_easy_setopt(req.easy, CURLOPT_PREREQFUNCTION, NULL);
	curl_easy_setopt(req.easy, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(req.easy, CURLOPT_XFERINFOFUNCTION, interrupt_cb);
	curl_easy_setopt(req.easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(req.easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body));

	rc = curl_easy_perform(req.easy);
	curl_easy_getinfo(req.easy, CURLINFO_RESPONSE_CODE, http_status);
	curl_slist_free_all((struct curl_slist *) req.headers);
	curl_easy_cleanup(req.easy);
	if (rc == CURLE_OK)
		*answer = pstrdup(req.resp ? req.resp : "");
	free(req.resp);
	if (req.token)
		pfree(req.token);
	CHECK_FOR_INTERRUPTS();
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("test send failed: %s", req.resp_too_big ?
						"the answer was larger than 64 kB (or its headers than 32 kB)" :
						(req.errbuf[0] ? req.errbuf : curl_easy_strerror(rc))),
				 errhint("Check wasend.api_base_url (%s) and that the server can reach it.",
						 wasend_api_base_url)));
}
