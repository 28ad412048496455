/*-------------------------------------------------------------------------
 *
 * http_server.c
 *		The HTTP server of the webhook and metrics endpoints: one
 *		libmicrohttpd daemon in epoll mode, driven from the worker's own
 *		wait loop, and an absolute deadline per request.
 *
 * Everything runs in the worker's one thread: MHD's callbacks never
 * ereport (they only malloc and read the clock); the endpoint's answer()
 * does its database work between two MHD_run() passes.  See
 * docs/internals/http_server.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "clock.h"
#include "http_server.h"
#include "worker.h"

/* The open connections of the endpoint and its deadline. */
typedef struct HttpServer
{
	const char *name;			/* "wasend webhook", for the log */
	const int  *timeout_ms;		/* the deadline setting: a reload moves it */
	dlist_head	conns;			/* HttpConn, in accept order */
} HttpServer;

/* a worker serves one endpoint */
static HttpServer server;

/*
 * Milliseconds of the monotonic clock: deadlines must not move when the
 * wall clock is set.  Safe inside MHD callbacks.
 */
static inline int64
mono_ms(void)
{
	return wasend_mono_us() / 1000;
}

/* One TCP connection, from accept to close (MHD's socket context). */
typedef struct HttpConn
{
	dlist_node	node;			/* in its server's conns */
	struct MHD_Connection *conn;
	int64		started_ms;		/* monotonic ms the deadline counts from */
	int			requests;		/* requests begun on this connection */
	bool		cut;			/* shut down past its deadline */
	bool		held;			/* its request waits for the worker */
} HttpConn;

/*
 * The tracking entry of a connection, or NULL if it has none (out of
 * memory at accept).
 */
static HttpConn *
conn_entry(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? (HttpConn *) ci->socket_context : NULL;
}

/*
 * MHD connection notifier (cls: the HttpServer): track every open
 * connection with its accept time.
 */
static void
notify_connection(void *cls, struct MHD_Connection *conn,
				  void **socket_context,
				  enum MHD_ConnectionNotificationCode toe)
{
	HttpServer *srv = (HttpServer *) cls;
	HttpConn   *hc = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		hc = calloc(1, sizeof(HttpConn));
		*socket_context = hc;
		if (hc == NULL)
			return;				/* see wasend_http_request_begins */
		hc->conn = conn;
		hc->started_ms = mono_ms();
		dlist_push_tail(&srv->conns, &hc->node);
	}
	else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && hc != NULL)
	{
		dlist_delete(&hc->node);
		free(hc);
		*socket_context = NULL;
	}
}

/*
 * A request's headers are in: a later request on a kept-alive connection
 * gets a deadline of its own.  Returns false when the connection is not
 * tracked (no deadline applies to it): the caller must not read a body
 * on it.
 */
bool
wasend_http_request_begins(struct MHD_Connection *conn)
{
	HttpConn   *hc = conn_entry(conn);

	if (hc == NULL)
		return false;
	if (hc->requests++ > 0)
		hc->started_ms = mono_ms();
	return true;
}

/*
 * A request is done (MHD's completion callback): the connection's clock
 * restarts for the next request it may carry.
 */
void
wasend_http_request_ends(struct MHD_Connection *conn)
{
	HttpConn   *hc = conn_entry(conn);

	if (hc == NULL)
		return;
	hc->held = false;
	hc->started_ms = mono_ms();
}

/*
 * The worker holds a connection's request (held: suspended until it is
 * answered) or lets it go again: a held request is not cut, and one let
 * go gets a new deadline for its answer to be written.
 */
void
wasend_http_hold(struct MHD_Connection *conn, bool held)
{
	HttpConn   *hc = conn_entry(conn);

	if (hc != NULL)
	{
		hc->held = held;
		/* let go: its answer gets a whole deadline to be written */
		if (!held)
			hc->started_ms = mono_ms();
	}
}

/*
 * Close every connection whose request has outlived the server's
 * deadline, however slowly it trickles: shutdown() of its socket makes
 * epoll report it and MHD close it (and call the callbacks) in its next
 * pass.  Returns the milliseconds until the next deadline, or -1 if no
 * connection is open.
 */
static long
cut_overdue(HttpServer *srv)
{
	int64		now = mono_ms();
	int			timeout_ms = *srv->timeout_ms;
	int64		next = -1;
	int			ncut = 0;
	dlist_iter	iter;

	dlist_foreach(iter, &srv->conns)
	{
		HttpConn   *hc = dlist_container(HttpConn, node, iter.cur);
		int64		due = hc->started_ms + timeout_ms;

		if (hc->cut || hc->held)
			continue;
		if (now >= due)
		{
			const union MHD_ConnectionInfo *ci;

			ci = MHD_get_connection_info(hc->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
			if (ci != NULL)
				(void) shutdown(ci->connect_fd, SHUT_RDWR);
			hc->cut = true;
			ncut++;
		}
		else if (next < 0 || due - now < next)
			next = due - now;
	}
	if (ncut > 0)
		elog(DEBUG1, "%s: closed %d connection(s) past the %d ms deadline",
			 srv->name, ncut, timeout_ms);
	return (long) next;
}

/*
 * Start the endpoint's daemon in epoll mode, with suspend and resume (the
 * loop answers suspended requests), its connection limits, and
 * libmicrohttpd's idle timeout as a backstop to our own deadline.  FATAL
 * when it cannot: the server starts the worker again after 5 s.
 */
static struct MHD_Daemon *
start_daemon(const WasendHttpEndpoint *ep)
{
	struct MHD_OptionItem opts[8];
	struct MHD_Daemon *daemon_handle;
	int			n = 0;

	if (ep->listen_fd >= 0)
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_LISTEN_SOCKET, ep->listen_fd, NULL};
	else
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_SOCK_ADDR, 0, (void *) ep->addr};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_CONNECTION_TIMEOUT,
		(intptr_t) ((*ep->timeout_ms + 999) / 1000), NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_CONNECTION_LIMIT,
		(intptr_t) ep->max_connections, NULL};
	if (ep->max_per_address > 0)
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_PER_IP_CONNECTION_LIMIT,
			(intptr_t) ep->max_per_address, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_NOTIFY_COMPLETED,
		(intptr_t) ep->on_completed, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_NOTIFY_CONNECTION,
		(intptr_t) &notify_connection, &server};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_END, 0, NULL};

	daemon_handle = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
									 ep->port, NULL, NULL, ep->on_request, NULL,
									 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (daemon_handle == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s", ep->start_error),
				 errhint("%s", ep->start_hint)));
	return daemon_handle;
}

/*
 * Wait for the latch, for MHD's epoll descriptor, or until the sooner of
 * MHD's own timeout, the next request deadline (next_deadline ms, -1:
 * none), the endpoint's own wake-up (wake_ms, -1: none) and a second.
 */
static void
wait_for_work(WaitEventSet *wes, struct MHD_Daemon *daemon_handle,
			  long next_deadline, long wake_ms)
{
	WaitEvent	events[3];
	MHD_UNSIGNED_LONG_LONG mhd_timeout;
	long		timeout = 1000;
	int			nev;
	int			i;

	if (MHD_get_timeout(daemon_handle, &mhd_timeout) == MHD_YES)
		timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) timeout);
	if (next_deadline >= 0)
		timeout = Min(timeout, next_deadline + 1);
	if (wake_ms >= 0)
		timeout = Min(timeout, wake_ms);
	nev = WaitEventSetWait(wes, timeout, events, lengthof(events),
						   PG_WAIT_EXTENSION);
	for (i = 0; i < nev; i++)
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
}

/*
 * Serve the endpoint until SIGTERM (the worker's main work).
 *
 * One pass: take in what arrived, answer what it brought (the endpoint's
 * answer(), e.g. the webhook's group commit), cut overdue connections, and
 * wait only when no request is pending.  Interrupts are checked at every
 * pass, so SIGTERM and SIGHUP are seen under a load that never lets the
 * pending requests run dry.  libmicrohttpd must not be stopped with a
 * connection suspended: what is pending at SIGTERM is answered first.
 */
void
wasend_http_serve(const WasendHttpEndpoint *ep)
{
	struct MHD_Daemon *daemon_handle;
	const union MHD_DaemonInfo *info;
	WaitEventSet *wes;

	server.name = ep->name;
	server.timeout_ms = ep->timeout_ms;
	dlist_init(&server.conns);
	daemon_handle = start_daemon(ep);
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_EPOLL_FD);

	wes = wasend_worker_wait_set(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, info->epoll_fd, NULL, NULL);

	elog(LOG, "%s listening on %s", ep->name, ep->where);

	for (;;)
	{
		long		next_deadline;

		if (wasend_worker_interrupts() && ep->reloaded)
			ep->reloaded();
		if (ShutdownRequestPending)
			break;

		MHD_run(daemon_handle);
		if (ep->pending())
		{
			ep->answer();
			MHD_run(daemon_handle); /* send the answers */
		}
		if (ep->after_pass)
			ep->after_pass();
		next_deadline = cut_overdue(&server);
		if (ep->pending())
			continue;			/* more came in meanwhile: no wait */
		wait_for_work(wes, daemon_handle, next_deadline,
					  ep->wake_ms ? ep->wake_ms() : -1);
	}

	if (ep->pending())
	{
		ep->answer();
		MHD_run(daemon_handle);
	}
	MHD_stop_daemon(daemon_handle);
}
