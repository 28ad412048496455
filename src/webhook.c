/*-------------------------------------------------------------------------
 *
 * webhook.c
 *		The webhook background worker: Meta's status and message webhooks,
 *		received over HTTP by libmicrohttpd and committed in groups.
 *
 * When wasend.webhook_port is set, a static background worker "wasend
 * webhook" serves HTTP on wasend.webhook_address:webhook_port with
 * libmicrohttpd, in its epoll mode, driven from the worker's own event loop
 * (the daemon's epoll descriptor sits in the WaitEventSet beside the latch),
 * so everything runs in this one thread and may use the database.
 *
 *	GET  ...?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C
 *		 200 with C when T equals the token in wasend.webhook_verify_token_file,
 *		 else 403.
 *	POST the notification, signed with X-Hub-Signature-256:
 *		 413 over 3 MB, 401 without a signature, 403 with a wrong one,
 *		 400 when the body is not JSON (or not a WABA notification),
 *		 200 only after the payload is committed, 500 if it could not be
 *		 (Meta retries everything but a 200).
 *
 * Group commit: the callbacks only collect bodies and suspend their
 * connections.  After each pass of MHD_run(), every body collected in that
 * pass is checked and applied by wasend._ingest_verified() inside ONE
 * transaction; its commit is then answered to all of them.  Under load,
 * bodies pile up while a commit runs, so batches grow by themselves.  If
 * the group's transaction fails, each payload is retried in a transaction
 * of its own so one bad payload cannot sink the others.
 *
 * The MHD callbacks never ereport: they only malloc and copy.  Signature and
 * JSON checks and all database work happen outside MHD_run().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "queue.h"
#include "wasend.h"

/* Meta's payloads reach 3 MB; anything larger is refused with 413. */
#define MAX_BODY_BYTES		(3 * 1024 * 1024)

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

/* One request, from its first byte to its answer. */
typedef struct WebhookRequest
{
	struct MHD_Connection *conn;
	bool		is_post;
	char	   *body;			/* malloc'd */
	size_t		len;
	size_t		cap;
	bool		too_big;
	char	   *signature;		/* X-Hub-Signature-256, malloc'd */
	bool		waiting;		/* suspended, in the batch */
	int			status;			/* answer, once decided (0 = not yet) */
	char	   *answer;			/* malloc'd answer body */
	struct WebhookRequest *next;
} WebhookRequest;

static struct MHD_Daemon *daemon_handle = NULL;
static WebhookRequest *batch_head = NULL;
static WebhookRequest *batch_tail = NULL;
static int	batch_len = 0;

/*
 * Set the answer of a request (copying the text).  Not called from inside
 * MHD callbacks with anything that could fail but malloc.
 */
static void
set_answer(WebhookRequest *req, int status, const char *text)
{
	req->status = status;
	free(req->answer);
	req->answer = strdup(text ? text : "");
}

/*
 * Queue a request's decided answer on its connection.
 */
static MHD_Result_t
send_answer(struct MHD_Connection *conn, WebhookRequest *req)
{
	struct MHD_Response *resp;
	MHD_Result_t rc;
	const char *text = req->answer ? req->answer : "";

	resp = MHD_create_response_from_buffer(strlen(text), (void *) text,
										   MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type",
							req->status == 200 && req->is_post ?
							"application/json" : "text/plain");
	rc = MHD_queue_response(conn, req->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/*
 * GET: Meta's subscription handshake.
 */
static void
answer_verification(struct MHD_Connection *conn, WebhookRequest *req)
{
	const char *mode = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.mode");
	const char *token = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.verify_token");
	const char *challenge = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.challenge");

	if (mode != NULL && strcmp(mode, "subscribe") == 0 &&
		token != NULL && challenge != NULL &&
		wasend_verify_token_matches(token, strlen(token)))
		set_answer(req, 200, challenge);
	else
		set_answer(req, 403, "verification failed");
}

/*
 * MHD access handler: called when headers arrive, for each chunk of the
 * body, once when the body is complete, and again after a resume.
 */
static MHD_Result_t
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version, const char *upload_data,
		   size_t *upload_data_size, void **con_cls)
{
	WebhookRequest *req = *con_cls;

	if (req == NULL)
	{
		const char *len_header;

		req = calloc(1, sizeof(WebhookRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		*con_cls = req;
		if (strcmp(method, "GET") == 0)
		{
			answer_verification(conn, req);
			return send_answer(conn, req);
		}
		if (strcmp(method, "POST") != 0)
		{
			set_answer(req, 405, "method not allowed");
			return send_answer(conn, req);
		}
		req->is_post = true;
		len_header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (len_header != NULL && strtoull(len_header, NULL, 10) > MAX_BODY_BYTES)
		{
			set_answer(req, 413, "payload too large");
			return send_answer(conn, req);
		}
		{
			const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														  "X-Hub-Signature-256");

			if (sig != NULL)
				req->signature = strdup(sig);
		}
		return MHD_YES;
	}

	if (req->status != 0)
		return send_answer(conn, req);	/* resumed, or decided early */

	if (*upload_data_size > 0)
	{
		size_t		n = *upload_data_size;

		*upload_data_size = 0;
		if (req->too_big || req->len + n > MAX_BODY_BYTES)
		{
			req->too_big = true;
			return MHD_YES;		/* read and drop the rest */
		}
		if (req->len + n + 1 > req->cap)
		{
			size_t		cap = Max(req->cap * 2, req->len + n + 1);
			char	   *p = realloc(req->body, cap);

			if (p == NULL)
				return MHD_NO;
			req->body = p;
			req->cap = cap;
		}
		memcpy(req->body + req->len, upload_data, n);
		req->len += n;
		req->body[req->len] = '\0';
		return MHD_YES;
	}

	/* the whole body is here */
	if (req->too_big)
	{
		set_answer(req, 413, "payload too large");
		return send_answer(conn, req);
	}
	if (!req->waiting)
	{
		req->waiting = true;
		req->next = NULL;
		if (batch_tail)
			batch_tail->next = req;
		else
			batch_head = req;
		batch_tail = req;
		batch_len++;
		MHD_suspend_connection(conn);
	}
	return MHD_YES;
}

/*
 * MHD completion callback: the connection is done with the request.
 */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	WebhookRequest *req = *con_cls;

	if (req == NULL)
		return;
	free(req->body);
	free(req->signature);
	free(req->answer);
	free(req);
	*con_cls = NULL;
}

/*
 * Apply some payloads in one transaction.  Returns false (the transaction
 * rolled back, the error logged) if any of them failed.  On success each
 * request gets a 200 with its counts.
 */
static bool
ingest_group(WebhookRequest **reqs, int n, int *sqlerrcode)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = false;
	char	  **answers = palloc0(sizeof(char *) * n);

	PG_TRY();
	{
		int			i;
		Oid			argtypes[1] = {TEXTOID};

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "wasend webhook: ingest");
		for (i = 0; i < n; i++)
		{
			Datum		arg = PointerGetDatum(cstring_to_text_with_len(reqs[i]->body,
																	   reqs[i]->len));
			char	   *res;

			if (SPI_execute_with_args("SELECT wasend._ingest_verified($1)::text",
									  1, argtypes, &arg, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "wasend: ingesting a webhook failed");
			res = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			answers[i] = MemoryContextStrdup(oldcxt, res ? res : "{}");
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		*sqlerrcode = edata->sqlerrcode;
		EmitErrorReport();
		FlushErrorState();
		FreeErrorData(edata);
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (ok)
	{
		int			i;

		for (i = 0; i < n; i++)
			set_answer(reqs[i], 200, answers[i]);
	}
	return ok;
}

/*
 * Answer every request collected in the last MHD_run pass.
 */
static void
process_batch(void)
{
	WebhookRequest *req;
	WebhookRequest **valid = palloc(sizeof(WebhookRequest *) * Max(batch_len, 1));
	int			nvalid = 0;
	int			i;
	int			sqlerrcode = 0;

	for (req = batch_head; req != NULL; req = req->next)
	{
		if (req->signature == NULL)
			set_answer(req, 401, "missing X-Hub-Signature-256");
		else if (!wasend_signature_matches(req->body ? req->body : "", req->len,
										   req->signature))
			set_answer(req, 403, "invalid signature");
		else if (!wasend_text_is_json(req->body, req->len))
			set_answer(req, 400, "body is not JSON");
		else
			valid[nvalid++] = req;
	}

	/* one transaction for the whole group; one each if that fails */
	if (nvalid > 0 && !ingest_group(valid, nvalid, &sqlerrcode))
	{
		for (i = 0; i < nvalid; i++)
			if (!ingest_group(&valid[i], 1, &sqlerrcode))
			{
				/* JSON, but not a notification: a retry cannot help */
				if (sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE)
					set_answer(valid[i], 400, "not a WhatsApp Business Account notification");
				else
					set_answer(valid[i], 500, "could not store the notification");
			}
	}

	/* resume all: MHD calls on_request again, which sends the answer */
	req = batch_head;
	batch_head = batch_tail = NULL;
	batch_len = 0;
	while (req != NULL)
	{
		WebhookRequest *next = req->next;

		req->waiting = false;
		if (req->status == 0)
			set_answer(req, 500, "internal error");
		MHD_resume_connection(req->conn);
		req = next;
	}
	pfree(valid);
}

/*
 * Define the settings of the webhook endpoint (called from _PG_init).
 */
void
wasend_webhook_define_settings(void)
{
}

/*
 * Entry point of the webhook worker.
 */
void
wasend_webhook_main(Datum main_arg)
{
	struct sockaddr_in addr;
	const union MHD_DaemonInfo *info;
	WaitEventSet *wes;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(wasend_database, NULL, 0);
	pgstat_report_appname("wasend webhook");

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16) wasend_webhook_port);
	if (inet_pton(AF_INET, wasend_webhook_address, &addr.sin_addr) != 1)
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid wasend.webhook_address \"%s\"", wasend_webhook_address),
				 errhint("Give an IPv4 address, e.g. 127.0.0.1 or 0.0.0.0.")));

	daemon_handle = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
									 (uint16) wasend_webhook_port,
									 NULL, NULL, &on_request, NULL,
									 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
									 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 10,
									 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 1000,
									 MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) 0,
									 MHD_OPTION_NOTIFY_COMPLETED, &on_completed, NULL,
									 MHD_OPTION_END);
	if (daemon_handle == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("wasend webhook could not listen on %s:%d",
						wasend_webhook_address, wasend_webhook_port),
				 errhint("Is the port in use? Change wasend.webhook_port or wasend.webhook_address.")));
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_EPOLL_FD);

	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, info->epoll_fd, NULL, NULL);

	elog(LOG, "wasend webhook listening on %s:%d", wasend_webhook_address,
		 wasend_webhook_port);

	while (!ShutdownRequestPending)
	{
		WaitEvent	events[3];
		MHD_UNSIGNED_LONG_LONG mhd_timeout;
		long		timeout = 1000;
		int			nev;
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MHD_run(daemon_handle);
		while (batch_head != NULL)
		{
			process_batch();
			MHD_run(daemon_handle);		/* send the answers */
		}

		if (MHD_get_timeout(daemon_handle, &mhd_timeout) == MHD_YES)
			timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) 1000);
		nev = WaitEventSetWait(wes, timeout, events, lengthof(events),
							   PG_WAIT_EXTENSION);
		for (i = 0; i < nev; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
	}

	MHD_stop_daemon(daemon_handle);
	proc_exit(0);
}
