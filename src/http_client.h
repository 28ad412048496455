/*-------------------------------------------------------------------------
 *
 * http_client.h
 *		The sender's HTTP client: one curl multi handle, pooled connections.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_HTTP_CLIENT_H
#define WASEND_HTTP_CLIENT_H

#include "datatype/timestamp.h"

/* What a request is for. */
typedef enum HttpKind
{
	HTTP_SEND,					/* POST of a message */
	HTTP_LIMITS					/* GET of a number's tier, quality, health */
} HttpKind;

/*
 * What the owner of the sends is told (the sender wires it to the rate
 * gate): a send reached the wire (first: its first write), and a send
 * ended without ever reaching it.  Called outside curl, never for a GET.
 */
typedef void (*WasendHttpOnWire) (int64 owner_key, int64 when, bool first);
typedef void (*WasendHttpUnsent) (int64 owner_key);

/* One request in flight, and its outcome once done. */
typedef struct HttpRequest
{
	void	   *easy;			/* CURL *, reused across requests */
	void	   *headers;		/* struct curl_slist *, owned */
	char	   *body;			/* request body, owned */
	char	   *token;			/* the bearer token it carries, for
								 * redacting its answer (owned, reused) */
	size_t		token_cap;
	HttpKind	kind;
	int64		row_id;			/* wasend.send_queue.id (HTTP_SEND) */
	int64		campaign_id;
	int64		number_id;
	int64		owner_key;		/* the caller's key for its callbacks (a
								 * send's: its number's rate gate key) */
	int			refusals;		/* 130429s its row got before (HTTP_SEND) */
	int			priority;		/* its row's priority (-1: campaign row) */
	uint64		claim_lsn;		/* its row's claim commit (number_queue.c) */
	int			writes;			/* times curl began writing it (prereq_cb) */
	int			writes_reported;	/* of those, told to the caller */
	bool		in_wired_list;	/* waits in report_wired's list */

	/* response, filled by curl's write callback (malloc'd, not palloc'd) */
	char	   *resp;
	size_t		resp_len;
	size_t		resp_cap;
	size_t		header_bytes;	/* of the answer's headers, so far */
	bool		resp_too_big;	/* answer or headers over the cap */

	/* outcome, valid after wasend_http_next_done() returned the request */
	long		http_status;	/* 0 when no HTTP answer came */
	int			curl_code;		/* CURLcode; 0 on success */
	char		errbuf[256];	/* curl's error text */
	char		version_warning[256];	/* its X-Ad-Api-Version-Warning
										 * header (truncated), "" if none */
	long		new_connections;	/* connections this request opened */
	int64		started;		/* handed to curl (monotonic us) */
	int64		latency_us;		/* from curl taking it to curl reading the
								 * answer's last byte */
	int64		server_us;		/* the server's own time from its
								 * Server-Timing header; -1 if none */
	int64		rttvar_us;		/* the kernel's RTT variation of its
								 * connection (TCP_INFO); -1 if unknown */

	struct HttpRequest *next_free;
	struct HttpRequest *next_wired;
} HttpRequest;

extern void wasend_http_init(WasendHttpOnWire on_wire, WasendHttpUnsent unsent);
extern void wasend_http_configure(void);
extern void wasend_http_shutdown(void);
extern int	wasend_http_event_fd(void);
extern long wasend_http_timeout_ms(int64 now);
extern bool wasend_http_timer_due(int64 now);
extern void wasend_http_drive(bool socket_ready, bool timer_due);
extern void wasend_http_pump(void);
extern HttpRequest *wasend_http_start(const char *url, const char *token,
							   const char *body, int64 row_id,
							   int64 campaign_id, int64 number_id,
							   int64 owner_key);
extern HttpRequest *wasend_http_start_get(const char *url, const char *token,
								   int64 number_id);
extern HttpRequest *wasend_http_next_done(void);
extern void wasend_http_release(HttpRequest *req);
extern void wasend_http_trim_pool(void);
extern int	wasend_http_inflight(void);
extern void wasend_http_post_once(const char *url, const char *token,
						   const char *body, long *http_status,
						   char **answer);

#endif							/* WASEND_HTTP_CLIENT_H */
