/*-------------------------------------------------------------------------
 *
 * http_server.c
 *		The protections the webhook and metrics endpoints share: every open
 *		connection is tracked with the time its current request's deadline
 *		counts from, and the worker loop closes the ones past it.
 *
 * libmicrohttpd has only an idle timeout, which a client that sends one
 * byte every few seconds resets for ever: a few such clients hold every
 * connection the endpoint takes, and real requests wait in the listen
 * queue for as long as they trickle.  So each endpoint passes
 * wasend_http_notify_connection as MHD_OPTION_NOTIFY_CONNECTION (with its
 * WasendHttpServer as the closure), tells this module when a request
 * begins and ends, and calls wasend_http_cut_overdue() at every pass of its
 * loop, waiting no longer than the next deadline it returns.
 *
 * A connection's deadline counts from its accept; on a kept-alive
 * connection, from the end of the previous request until the next one's
 * headers are in, then from there, so each request gets a deadline of its
 * own (and idling or slow headers at most one more).  A request the worker
 * holds (suspended until the database answers) is not cut: it is about to
 * be answered.
 *
 * The MHD callbacks here never ereport: they only malloc and read the
 * clock.  Each worker serves one endpoint, in one thread.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <time.h>

#include "http_server.h"

/* One TCP connection, from accept to close (MHD's socket context). */
typedef struct WasendHttpConn
{
	dlist_node	node;			/* in its server's conns */
	struct MHD_Connection *conn;
	int64		started_ms;		/* monotonic ms the deadline counts from */
	int			requests;		/* requests begun on this connection */
	bool		cut;			/* shut down past its deadline */
	bool		held;			/* its request waits for the worker */
} WasendHttpConn;

/*
 * Set up an endpoint's list of connections; timeout_ms points at its
 * deadline setting, read at every pass.
 */
void
wasend_http_server_init(WasendHttpServer *srv, const char *name,
						const int *timeout_ms)
{
	srv->name = name;
	srv->timeout_ms = timeout_ms;
	dlist_init(&srv->conns);
}

/*
 * Milliseconds of CLOCK_MONOTONIC: deadlines must not move when the wall
 * clock is set.  Safe inside MHD callbacks.
 */
int64
wasend_http_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The tracking entry of a connection, or NULL if it has none (out of
 * memory at accept).
 */
static WasendHttpConn *
conn_entry(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? (WasendHttpConn *) ci->socket_context : NULL;
}

/*
 * MHD connection notifier (cls: the WasendHttpServer): track every open
 * connection with its accept time.
 */
void
wasend_http_notify_connection(void *cls, struct MHD_Connection *conn,
							  void **socket_context,
							  enum MHD_ConnectionNotificationCode toe)
{
	WasendHttpServer *srv = (WasendHttpServer *) cls;
	WasendHttpConn *hc = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		hc = calloc(1, sizeof(WasendHttpConn));
		*socket_context = hc;
		if (hc == NULL)
			return;				/* see wasend_http_request_begins */
		hc->conn = conn;
		hc->started_ms = wasend_http_monotonic_ms();
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
	WasendHttpConn *hc = conn_entry(conn);

	if (hc == NULL)
		return false;
	if (hc->requests++ > 0)
		hc->started_ms = wasend_http_monotonic_ms();
	return true;
}

/*
 * A request is done (MHD's completion callback): the connection's clock
 * restarts for the next request it may carry.
 */
void
wasend_http_request_ends(struct MHD_Connection *conn)
{
	WasendHttpConn *hc = conn_entry(conn);

	if (hc == NULL)
		return;
	hc->held = false;
	hc->started_ms = wasend_http_monotonic_ms();
}

/*
 * The worker holds a connection's request (held: suspended until it is
 * answered) or lets it go again: a held request is not cut.
 */
void
wasend_http_hold(struct MHD_Connection *conn, bool held)
{
	WasendHttpConn *hc = conn_entry(conn);

	if (hc != NULL)
		hc->held = held;
}

/*
 * Close every connection whose request has outlived the server's
 * deadline, however slowly it trickles: shutdown() of its socket makes
 * epoll report it and MHD close it (and call the callbacks) in its next
 * pass.  Returns the milliseconds until the next deadline, or -1 if no
 * connection is open.
 */
long
wasend_http_cut_overdue(WasendHttpServer *srv)
{
	int64		now = wasend_http_monotonic_ms();
	int			timeout_ms = *srv->timeout_ms;
	int64		next = -1;
	int			ncut = 0;
	dlist_iter	iter;

	dlist_foreach(iter, &srv->conns)
	{
		WasendHttpConn *hc = dlist_container(WasendHttpConn, node, iter.cur);
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
