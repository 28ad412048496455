/*-------------------------------------------------------------------------
 *
 * http_server.h
 *		The libmicrohttpd daemon and wait loop the webhook and metrics
 *		endpoints share; http_server.c owns them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_HTTP_SERVER_H
#define WASEND_HTTP_SERVER_H

#include "postgres.h"

#include <netinet/in.h>
#include <microhttpd.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

/*
 * One endpoint: where it listens, its limits, and what the loop calls
 * back.  on_request and on_completed are MHD's callbacks: they never
 * ereport.  After each MHD_run() pass, when pending() says requests wait
 * (suspended), answer() answers them all (it may use the database) and
 * resumes them; after_pass, if set, runs once per pass outside MHD;
 * wake_ms, if set, says how soon (ms, -1: no matter) the loop must look
 * at pending() again without any event; reloaded, if set, runs after a
 * configuration reload.
 */
typedef struct WasendHttpEndpoint
{
	const char *name;			/* "wasend webhook", for the log */
	const char *where;			/* "127.0.0.1:8080", for the log */
	const struct sockaddr_in *addr; /* bind to this ... */
	int			listen_fd;		/* ... or serve this socket (>= 0) */
	uint16		port;
	const int  *timeout_ms;		/* request deadline setting (a reload
								 * moves it) */
	unsigned int max_connections;
	unsigned int max_per_address;	/* 0: no limit */
	const char *start_error;	/* errmsg when the daemon does not start */
	const char *start_hint;
	MHD_AccessHandlerCallback on_request;
	MHD_RequestCompletedCallback on_completed;
	bool		(*pending) (void);
	void		(*answer) (void);
	void		(*after_pass) (void);
	long		(*wake_ms) (void);
	void		(*reloaded) (void);
} WasendHttpEndpoint;

extern void wasend_http_serve(const WasendHttpEndpoint *ep);
extern bool wasend_http_request_begins(struct MHD_Connection *conn);
extern void wasend_http_request_ends(struct MHD_Connection *conn);
extern void wasend_http_hold(struct MHD_Connection *conn, bool held);

#endif							/* WASEND_HTTP_SERVER_H */
