/*-------------------------------------------------------------------------
 *
 * http_server.h
 *		What the webhook and metrics endpoints share around libmicrohttpd:
 *		every open connection tracked, and an absolute deadline per request
 *		that the worker enforces itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_HTTP_SERVER_H
#define WASEND_HTTP_SERVER_H

#include "postgres.h"

#include <microhttpd.h>

#include "lib/ilist.h"

/* The open connections of one endpoint and its deadline. */
typedef struct WasendHttpServer
{
	const char *name;			/* "wasend webhook", for the log */
	const int  *timeout_ms;		/* the deadline setting: a reload moves it */
	dlist_head	conns;			/* WasendHttpConn, in accept order */
} WasendHttpServer;

extern void wasend_http_server_init(WasendHttpServer *srv, const char *name,
									const int *timeout_ms);
extern int64 wasend_http_monotonic_ms(void);
extern void wasend_http_notify_connection(void *cls,
										  struct MHD_Connection *conn,
										  void **socket_context,
										  enum MHD_ConnectionNotificationCode toe);
extern bool wasend_http_request_begins(struct MHD_Connection *conn);
extern void wasend_http_request_ends(struct MHD_Connection *conn);
extern void wasend_http_hold(struct MHD_Connection *conn, bool held);
extern long wasend_http_cut_overdue(WasendHttpServer *srv);

#endif							/* WASEND_HTTP_SERVER_H */
