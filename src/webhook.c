/*-------------------------------------------------------------------------
 *
 * webhook.c
 *		The webhook background worker: Meta's status and message webhooks,
 *		received over HTTP (http_server.c) and committed in groups.
 *
 * GET answers Meta's subscription handshake; a POST gets a 200 only once
 * its payload is committed.  Nothing but a well-formed signature gets a
 * body read, and all bodies share one budget.  The constraint: the MHD
 * callbacks never ereport (they only malloc and copy); checks, logging
 * and database work happen in the batch, outside MHD_run().  The full
 * description: docs/internals/webhook.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "clock.h"
#include "durability.h"
#include "http_server.h"
#include "queue.h"
#include "metrics.h"
#include "secrets.h"
#include "settings.h"
#include "shmem.h"
#include "signature.h"
#include "webhook.h"
#include "worker.h"
#include "worker_session.h"

/* Meta's payloads reach 3 MB; anything larger is refused with 413. */
#define MAX_BODY_BYTES		(3 * 1024 * 1024)

/*
 * Bodies up to this size may use all of wasend.webhook_max_buffer; larger
 * ones only 7/8 of it, so that a flood of big bodies (which cannot be told
 * from real ones before they are in) leaves room for ordinary
 * notifications, which are a few kB.
 */
#define SMALL_BODY_BYTES	(64 * 1024)

/* first allocation for a body sent without Content-Length (chunked) */
#define CHUNKED_FIRST_BYTES (16 * 1024)

/* "sha256=" and the 64 hex digits of an HMAC-SHA256 */
#define SIGNATURE_LEN		(7 + 64)

/* One request, from its first byte to its answer. */
typedef struct WebhookRequest
{
	struct MHD_Connection *conn;
	bool		tracked;		/* its connection has a deadline */
	bool		is_post;
	size_t		declared;		/* Content-Length, 0 if none */
	char	   *body;			/* malloc'd */
	size_t		len;
	size_t		cap;			/* allocated bytes of body */
	size_t		charged;		/* bytes counted in buffered_bytes */
	bool		too_big;
	bool		over_budget;	/* did not fit in the buffer: 503 */
	char	   *signature;		/* X-Hub-Signature-256, malloc'd */
	bool		waiting;		/* suspended, in the batch */
	int			status;			/* answer, once decided (0 = not yet) */
	char	   *answer;			/* malloc'd answer body */
	XLogRecPtr	commit_lsn;		/* stored: the end of its commit */
	int64		durable_by;		/* stored: 503 if not durable by then (us) */
	struct WebhookRequest *next;
} WebhookRequest;

static WebhookRequest *batch_head = NULL;
static WebhookRequest *batch_tail = NULL;
static int	batch_len = 0;
static MemoryContext batch_cxt = NULL;

/*
 * Stored notifications whose 200 waits until their commit is durable
 * where a failover can promote (wasend.durability): Meta never sends
 * again what got a 200, so a 200 for a commit a failover loses loses the
 * notification (a STOP among them).  They stay suspended, in commit
 * order; past wasend.webhook_durable_timeout they get 503 and Meta sends
 * them again (storing one twice changes nothing).
 */
static WebhookRequest *durable_head = NULL;
static WebhookRequest *durable_tail = NULL;
static WasendDurableWait durable_wait;
static WasendWarnState not_durable_warned;	/* 503s said, once per outage */

/* bytes allocated or reserved for bodies, all connections together */
static size_t buffered_bytes = 0;

/* a verify token file problem seen in a callback, logged by the loop */
static bool verify_token_checked = false;
static char verify_token_problem[256];

/* the secret file problems last logged, per WasendSecret */
static WasendWarnState secret_warned[2];

/* how often, at most, the launcher's census is read, in us */
#define CENSUS_LOOK_US		(100 * 1000)

/*
 * The database notifications are stored in.  With wasend.database empty
 * the worker starts connected to no database and connects, once, to the
 * one database the launcher found with the extension (follow_census).
 */
static bool auto_database = false;	/* wasend.database is empty */
static bool connected = false;
static char *database_name = NULL;	/* the connected one's, for the log */
static int64 next_census_look = 0;

/*
 * Why signed POSTs are answered 503 now instead of stored: no single
 * database has the extension (census_refusal, wasend.database empty), or
 * the connected database has none (found per batch).  Each cause is
 * logged once; after a logged refusal, the first stored POST says so.
 */
static char *census_refusal = NULL;		/* TopMemoryContext */
static WasendWarnState census_warned;
static WasendWarnState absent_warned;
static WasendWarnState others_warned;	/* connected, and others have it too */
static bool refusal_logged = false;

/*
 * Let a request hold total bytes of body in all, if the shared budget
 * allows it; charges the difference.  Large bodies may not take the last
 * eighth of the budget (see SMALL_BODY_BYTES).  Never throws.
 */
static bool
buffer_charge(WebhookRequest *req, size_t total)
{
	size_t		budget = (size_t) wasend_webhook_max_buffer_kb * 1024;
	size_t		limit = total <= SMALL_BODY_BYTES ? budget : budget - budget / 8;

	if (total <= req->charged)
		return true;
	if (buffered_bytes - req->charged + total > limit)
		return false;
	buffered_bytes += total - req->charged;
	req->charged = total;
	return true;
}

/*
 * Free a request's body and give its bytes back to the shared budget: as
 * soon as the body has been checked, and at the latest when the request
 * ends however it ends.
 */
static void
buffer_release(WebhookRequest *req)
{
	free(req->body);
	req->body = NULL;
	req->len = 0;
	req->cap = 0;
	buffered_bytes -= req->charged;
	req->charged = 0;
}

/*
 * Is this X-Hub-Signature-256 value shaped like one ("sha256=" and 64 hex
 * digits)?  Anything else is refused from the headers, before the body.
 */
static bool
signature_well_formed(const char *sig)
{
	int			i;

	if (sig == NULL || strlen(sig) != SIGNATURE_LEN ||
		pg_strncasecmp(sig, "sha256=", 7) != 0)
		return false;
	for (i = 7; i < SIGNATURE_LEN; i++)
		if (!isxdigit((unsigned char) sig[i]))
			return false;
	return true;
}

/*
 * Set the answer of a request (copying the text).  Safe inside MHD
 * callbacks: it only mallocs.
 */
static void
set_answer(WebhookRequest *req, int status, const char *text)
{
	req->status = status;
	free(req->answer);
	req->answer = strdup(text ? text : "");
}

/*
 * Queue a request's decided answer on its connection.  A 503 says when to
 * come back; an answer queued before the body was read also makes MHD
 * close the connection after it, without reading the body.
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
	if (req->status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(resp, "Retry-After", "1");
	rc = MHD_queue_response(conn, req->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/*
 * GET: Meta's subscription handshake.  A problem with the verify token
 * file is noted for the worker loop to log (callbacks must not ereport).
 */
static void
answer_verification(struct MHD_Connection *conn, WebhookRequest *req)
{
	const char *mode = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.mode");
	const char *token = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.verify_token");
	const char *challenge = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.challenge");
	const char *error;

	if (wasend_secret(WASEND_SECRET_VERIFY_TOKEN, &error) == NULL)
		strlcpy(verify_token_problem,
				error ? error : "wasend.webhook_verify_token_file is not set",
				sizeof(verify_token_problem));
	else
		verify_token_problem[0] = '\0';
	verify_token_checked = true;

	if (mode != NULL && strcmp(mode, "subscribe") == 0 &&
		token != NULL && challenge != NULL &&
		wasend_verify_token_matches(token, strlen(token)))
		set_answer(req, 200, challenge);
	else
		set_answer(req, 403, "verification failed");
}

/*
 * The headers of a POST are in: decide what can be decided before reading
 * the body.  Returns false when an answer was set (and the body must not
 * be read).
 */
static bool
admit_post(struct MHD_Connection *conn, WebhookRequest *req)
{
	const char *len_header;
	const char *sig;

	req->is_post = true;
	len_header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
											 MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (len_header != NULL)
	{
		unsigned long long declared = strtoull(len_header, NULL, 10);

		if (declared > MAX_BODY_BYTES)
		{
			set_answer(req, 413, "payload too large");
			return false;
		}
		req->declared = (size_t) declared;
	}
	sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Hub-Signature-256");
	if (!signature_well_formed(sig))
	{
		set_answer(req, 401, "missing or malformed X-Hub-Signature-256");
		return false;
	}
	if (!req->tracked)
	{
		/* untracked (out of memory at accept): no deadline, so no body */
		set_answer(req, 503, "webhook endpoint busy, retry later");
		return false;
	}
	req->signature = strdup(sig);
	if (req->signature == NULL ||
		(req->declared > 0 && !buffer_charge(req, req->declared + 1)))
	{
		set_answer(req, 503, "webhook endpoint busy, retry later");
		return false;
	}
	return true;
}

/*
 * Append a chunk of body, growing the buffer within the shared budget.
 * What cannot be kept (over 3 MB, over the budget) is dropped, and the
 * answer given once the body is complete.
 */
static void
take_body(WebhookRequest *req, const char *data, size_t n)
{
	if (req->too_big || req->over_budget)
		return;
	if (req->len + n > MAX_BODY_BYTES)
	{
		req->too_big = true;
		buffer_release(req);
		return;
	}
	if (req->len + n + 1 > req->cap)
	{
		size_t		want = req->len + n + 1;
		size_t		cap;
		char	   *p;

		if (req->declared > 0 && want <= req->declared + 1)
			cap = req->declared + 1;
		else
			cap = Min(Max(Max(req->cap * 2, CHUNKED_FIRST_BYTES), want),
					  MAX_BODY_BYTES + 1);
		if (!buffer_charge(req, cap) ||
			(p = realloc(req->body, cap)) == NULL)
		{
			req->over_budget = true;
			buffer_release(req);
			return;
		}
		req->body = p;
		req->cap = cap;
	}
	memcpy(req->body + req->len, data, n);
	req->len += n;
	req->body[req->len] = '\0';
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
		req = calloc(1, sizeof(WebhookRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		/* a later request on a kept-alive connection: a new deadline */
		req->tracked = wasend_http_request_begins(conn);
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
		if (!admit_post(conn, req))
			return send_answer(conn, req);
		return MHD_YES;
	}

	if (req->status != 0)
		return send_answer(conn, req);	/* resumed, or decided early */

	if (*upload_data_size > 0)
	{
		take_body(req, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* the whole body is here */
	if (req->too_big)
	{
		set_answer(req, 413, "payload too large");
		return send_answer(conn, req);
	}
	if (req->over_budget)
	{
		set_answer(req, 503, "webhook endpoint busy, retry later");
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
		wasend_http_hold(conn, true);	/* about to be answered: not cut */
		MHD_suspend_connection(conn);
	}
	return MHD_YES;
}

/*
 * MHD completion callback: the connection is done with the request.  The
 * connection's clock restarts for the next request it may carry.
 */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	WebhookRequest *req = *con_cls;

	if (req == NULL)
		return;
	wasend_http_request_ends(conn);
	buffer_release(req);
	free(req->signature);
	free(req->answer);
	free(req);
	*con_cls = NULL;
}

/*
 * Log a problem with a secret file once, not at every request, and again
 * only if it changes or comes back after being fixed.  problem NULL means
 * the file is fine now.
 */
static void
report_secret_problem(WasendSecret which, const char *problem)
{
	WasendWarnState *w = &secret_warned[which];

	if (problem == NULL)
	{
		wasend_warn_clear(w);
		return;
	}
	if (!wasend_warn_changed(w, problem))
		return;
	if (which == WASEND_SECRET_APP)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wasend webhook cannot verify signatures: %s", problem),
				 errdetail("Signed POSTs are answered 500 (Meta retries them) until this is fixed."),
				 errhint("Put the Meta app secret in a file owned by the server's user with mode 0600 or 0640, and set wasend.app_secret_file to its path.")));
	else
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wasend webhook cannot answer the subscription handshake: %s", problem),
				 errhint("Put the verify token in a file owned by the server's user with mode 0600 or 0640, and set wasend.webhook_verify_token_file to its path.")));
}

/*
 * Apply some payloads in one transaction.  Returns false (the transaction
 * rolled back, the error logged) if any of them failed.  On success each
 * request gets a 200 with its counts.  Allocates in the caller's (batch)
 * memory context.
 */
static bool
ingest_group(WebhookRequest **reqs, int n, int *sqlerrcode, bool *absent)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;
	char	  **answers = palloc0(sizeof(char *) * n);

	*absent = false;
	PG_TRY();
	{
		int			i;
		Oid			argtypes[1] = {TEXTOID};

		wasend_begin_transaction("wasend webhook: ingest");
		/* dropped, or never created here: nothing to store into */
		*absent = !wasend_queue_extension_present();
		for (i = 0; i < n && !*absent; i++)
		{
			Datum		arg = PointerGetDatum(cstring_to_text_with_len(reqs[i]->body,
																	   reqs[i]->len));
			char	   *res;

			if (SPI_execute_with_args("SELECT wasend._ingest_verified($1)::text",
									  1, argtypes, &arg, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "wasend: ingesting a webhook failed");
			res = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			answers[i] = MemoryContextStrdup(cxt, res ? res : "{}");
		}
		wasend_commit_transaction();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		edata = wasend_abort_transaction(cxt);
		*sqlerrcode = edata->sqlerrcode;
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* let autovacuum see this worker's updates (at most once a second) */
	pgstat_report_stat(false);

	if (ok && *absent)
		return false;
	if (ok)
	{
		/* what it wrote, and what it found (stored before, maybe not durable) */
		XLogRecPtr	lsn = wasend_commit_horizon();
		int			i;

		for (i = 0; i < n; i++)
		{
			set_answer(reqs[i], 200, answers[i]);
			reqs[i]->commit_lsn = lsn;
		}
		wasend_durable_note(&durable_wait, lsn);
		wasend_metrics_note_webhook(0, n, 0);
	}
	return ok;
}

/*
 * Note that signed POSTs are refused now for the reason why (a warning
 * state of its own per cause): logged once, with the hint, and again only
 * once the cause went away and came back.
 */
static void
log_refusal(WasendWarnState *w, const char *why, const char *hint)
{
	if (!wasend_warn_changed(w, why))
		return;
	refusal_logged = true;
	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("wasend webhook stores nothing: %s", why),
			 errdetail("Signed POSTs are answered 503 (Meta retries them) until this is fixed."),
			 errhint("%s", hint)));
}

/*
 * A POST was stored: the causes of earlier refusals are gone.
 */
static void
note_stored(void)
{
	wasend_warn_clear(&absent_warned);
	if (refusal_logged)
		ereport(LOG,
				(errmsg("wasend webhook stores notifications in database \"%s\" again",
						database_name)));
	refusal_logged = false;
}

/*
 * Refuse the signed POSTs of the batch (503, Meta retries): the extension
 * is not in the connected database.
 */
static void
refuse_absent(WebhookRequest **reqs, int n)
{
	char	   *why = psprintf("wasend is not installed in database \"%s\" (wasend.database)",
							   database_name);
	int			i;

	log_refusal(&absent_warned, why,
				auto_database ?
				"Run CREATE EXTENSION wasend in that database, or set wasend.database to the database that has it." :
				"Set wasend.database to the database that has the extension (a restart), or run CREATE EXTENSION wasend in that one.");
	for (i = 0; i < n; i++)
		set_answer(reqs[i], 503, why);
}

/*
 * Let a request's answer go: MHD calls on_request again, which sends it.
 */
static void
resume_request(WebhookRequest *req)
{
	req->waiting = false;
	if (req->status == 0)
		set_answer(req, 500, "internal error");
	buffer_release(req);
	wasend_http_hold(req->conn, false);
	MHD_resume_connection(req->conn);
}

/*
 * Answer the stored notifications whose commit is durable now (200), and
 * those past their deadline, or all when the worker stops (503: Meta
 * sends them again).  Commits are in order: the first that waits ends it.
 */
static void
settle_durable(void)
{
	int64		now = wasend_mono_us();
	XLogRecPtr	durable = wasend_durable_position(&durable_wait, now, "webhook");
	int			late = 0;
	int			confirmed = 0;

	while (durable_head != NULL)
	{
		WebhookRequest *req = durable_head;

		if (req->commit_lsn > durable)
		{
			if (now < req->durable_by && !ShutdownRequestPending)
				break;
			set_answer(req, 503, "stored, but not yet where a failover keeps it (wasend.durability): send it again");
			late++;
		}
		else
			confirmed++;
		durable_head = req->next;
		if (durable_head == NULL)
			durable_tail = NULL;
		resume_request(req);
	}
	if (confirmed > 0)
		wasend_warn_clear(&not_durable_warned);
	if (late > 0)
	{
		wasend_metrics_note_webhook(0, 0, late);
		if (wasend_warn_changed(&not_durable_warned, "not durable"))
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wasend webhook answers stored notifications 503: their commit is not durable within wasend.webhook_durable_timeout"),
					 errdetail("It waits for %s; Meta sends them again. Said once until a commit is durable again.",
							   wasend_durable_describe()),
					 errhint("Check pg_stat_replication on this server. wasend.durability = local answers at once, at the price of notifications lost in a failover.")));
	}
}

/*
 * A stored notification waits for its commit to be durable before its
 * 200 (settle_durable), unless that is so already.
 */
static void
await_durable(WebhookRequest *req)
{
	req->durable_by = wasend_mono_us() + (int64) wasend_webhook_durable_timeout_ms * 1000;
	req->next = NULL;
	buffer_release(req);
	if (durable_tail)
		durable_tail->next = req;
	else
		durable_head = req;
	durable_tail = req;
}

/*
 * Answer every request collected in the last MHD_run pass, and the stored
 * ones whose commit became durable.  All it and ingest_group allocate goes
 * in batch_cxt, reset at the end.
 */
static void
process_batch(void)
{
	MemoryContext oldcxt;
	WebhookRequest *req;
	WebhookRequest **valid;
	int			nvalid = 0;
	int			i;
	int			sqlerrcode = 0;
	bool		absent = false;
	const char *error;
	bool		have_secret;

	if (batch_head == NULL)
	{
		/* only stored notifications to answer */
		settle_durable();
		return;
	}
	oldcxt = MemoryContextSwitchTo(batch_cxt);
	valid = palloc(sizeof(WebhookRequest *) * Max(batch_len, 1));
	wasend_metrics_note_webhook(batch_len, 0, 0);
	have_secret = wasend_secret(WASEND_SECRET_APP, &error) != NULL;
	report_secret_problem(WASEND_SECRET_APP, have_secret ? NULL :
						  error ? error : "wasend.app_secret_file is not set");

	for (req = batch_head; req != NULL; req = req->next)
	{
		if (!have_secret)
			set_answer(req, 500, "webhook signatures cannot be verified now");
		else if (!wasend_signature_matches(req->body ? req->body : "", req->len,
										   req->signature))
			set_answer(req, 403, "invalid signature");
		else if (!wasend_text_is_json(req->body, req->len))
			set_answer(req, 400, "body is not JSON");
		else
			valid[nvalid++] = req;
	}

	/* no database to store into (yet): Meta retries a 503 */
	if (nvalid > 0 && (census_refusal != NULL || !connected))
	{
		for (i = 0; i < nvalid; i++)
			set_answer(valid[i], 503, census_refusal ? census_refusal :
					   "webhook endpoint starting, retry later");
		nvalid = 0;
	}

	/* one transaction for the whole group; one each if that fails */
	if (nvalid > 0 && !ingest_group(valid, nvalid, &sqlerrcode, &absent))
	{
		if (absent)
			refuse_absent(valid, nvalid);
		else
			for (i = 0; i < nvalid; i++)
				if (!ingest_group(&valid[i], 1, &sqlerrcode, &absent))
				{
					/* JSON, but not a notification: a retry cannot help */
					if (absent)
						refuse_absent(&valid[i], 1);
					else if (sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE)
						set_answer(valid[i], 400, "not a WhatsApp Business Account notification");
					else
						set_answer(valid[i], 500, "could not store the notification");
				}
	}
	for (i = 0; i < nvalid; i++)
		if (valid[i]->status == 200)
		{
			note_stored();
			break;
		}

	/* resume all but the stored ones, which wait until they are durable */
	req = batch_head;
	batch_head = batch_tail = NULL;
	batch_len = 0;
	while (req != NULL)
	{
		WebhookRequest *next = req->next;

		if (req->status == 200)
			await_durable(req);
		else
			resume_request(req);
		req = next;
	}
	settle_durable();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(batch_cxt);
}

/*
 * Are request bodies waiting for the batch, or stored ones for their
 * answer (durable now, past their deadline, or the worker stops)?
 */
static bool
batch_pending(void)
{
	int64		now;

	if (batch_head != NULL)
		return true;
	if (durable_head == NULL)
		return false;
	now = wasend_mono_us();
	return ShutdownRequestPending || now >= durable_head->durable_by ||
		durable_head->commit_lsn <= wasend_durable_position(&durable_wait, now, "webhook");
}

/*
 * The settings were reloaded: wasend.durability or
 * synchronous_standby_names may have changed.
 */
static void
durable_reloaded(void)
{
	wasend_durable_forget(&durable_wait);
}

/*
 * How long the loop may wait before it looks again whether stored
 * notifications became durable (-1: none waits).
 */
static long
durable_wake_ms(void)
{
	int64		now = wasend_mono_us();
	long		ms;
	long		left;

	if (durable_head == NULL)
		return -1;
	ms = wasend_durable_sleep_ms(&durable_wait, now);
	left = (long) Max(0, (durable_head->durable_by - now + 999) / 1000);
	return ms < 0 ? left : Min(ms, left);
}

/*
 * Is the database held by a DROP, RENAME or copy of it (launcher.c
 * release_database)?  Caller holds wasend_state->lock.
 */
static bool
database_held(Oid dboid, int64 now)
{
	int			i;

	for (i = 0; i < WASEND_MAX_DATABASES; i++)
		if (wasend_state->databases[i].dboid == dboid &&
			now < wasend_state->databases[i].hold_until)
			return true;
	return false;
}

/*
 * Take the webhook worker's entry out of shared memory at exit.
 */
static void
webhook_detach(int code, Datum arg)
{
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (wasend_state->webhook_pid == MyProcPid)
	{
		wasend_state->webhook_pid = 0;
		wasend_state->webhook_dboid = InvalidOid;
	}
	LWLockRelease(wasend_state->lock);
}

/*
 * Connect to the database notifications are stored in: by name
 * (wasend.database), or by oid (the one the launcher found).  Once per
 * process: a worker cannot switch databases.  The connection is published
 * so that a DROP, RENAME or copy of the database can ask the worker to
 * leave (SIGTERM); one that holds the database already makes it leave at
 * once (the postmaster starts it again).
 */
static void
connect_database(const char *dbname, Oid dboid)
{
	bool		held = false;

	/* a user's lock costs a 500 (Meta retries), not a hang: lock_timeout */
	wasend_worker_connect(dbname, dboid, "1s", false);
	pgstat_report_appname("wasend webhook");
	StartTransactionCommand();
	database_name = MemoryContextStrdup(TopMemoryContext,
										get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	if (wasend_state != NULL)
	{
		/* under the lock the hold is set under: it sees us, or we it */
		LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
		wasend_state->webhook_pid = MyProcPid;
		wasend_state->webhook_dboid = MyDatabaseId;
		held = database_held(MyDatabaseId, wasend_mono_us());
		LWLockRelease(wasend_state->lock);
		before_shmem_exit(webhook_detach, 0);
	}
	if (held)
	{
		ereport(LOG,
				(errmsg("wasend webhook leaves database \"%s\": it is being dropped, renamed or copied",
						database_name)));
		proc_exit(1);
	}
	connected = true;
}

/*
 * Set why signed POSTs are refused for want of a single database (NULL:
 * they are not), logging it once when log is set.
 */
static void
set_census_refusal(const char *why, const char *hint, bool log)
{
	if (census_refusal != NULL)
		pfree(census_refusal);
	census_refusal = why ? MemoryContextStrdup(TopMemoryContext, why) : NULL;
	if (why == NULL)
		wasend_warn_clear(&census_warned);
	else if (log)
		log_refusal(&census_warned, why, hint);
}

/*
 * Has the launcher looked at every database since the last CREATE
 * EXTENSION (those it can look at), and is none of them being dropped,
 * renamed or copied?  Then *census is what it found, and *mine says
 * whether it counts the database this worker is connected to.
 */
static bool
census_settled(WasendCensus *census, bool *mine)
{
	bool		settled;
	int64		now = wasend_mono_us();
	int			i;

	*mine = false;
	LWLockAcquire(wasend_state->lock, LW_SHARED);
	*census = wasend_state->census;
	settled = census->settled &&
		census->generation == pg_atomic_read_u64(&wasend_state->extension_generation);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		WasendDbSlot *db = &wasend_state->databases[i];

		if (!OidIsValid(db->dboid))
			continue;
		if (now < db->hold_until)
			settled = false;	/* its supervisor may not run: unknown */
		else if (db->state == WASEND_DB_PROBING ||
				 (db->state == WASEND_DB_NEW &&
				  !(db->pid == 0 && db->shortage == WASEND_SHORT_WORKER)))
			settled = false;	/* a CREATE EXTENSION not looked at yet */
		if (connected && db->dboid == MyDatabaseId)
			*mine = db->state == WASEND_DB_RUNNING && !db->copy;
	}
	LWLockRelease(wasend_state->lock);
	return settled;
}

/*
 * wasend.database set: connect to it once the launcher has read
 * pg_database and found it.  A name that does not exist (a typo) is said
 * once, POSTs are answered 503, and the worker keeps looking: connecting
 * to it would end the worker with FATAL every 5 s.
 */
static void
follow_named_database(void)
{
	bool		listed;
	bool		exists;
	int64		now = wasend_mono_us();

	if (connected || now < next_census_look)
		return;
	next_census_look = now + CENSUS_LOOK_US;
	LWLockAcquire(wasend_state->lock, LW_SHARED);
	listed = wasend_state->census.listed;
	exists = wasend_state->census.named_exists;
	LWLockRelease(wasend_state->lock);
	if (!listed)
		set_census_refusal("the launcher has not read the list of databases yet", NULL, false);
	else if (!exists)
		set_census_refusal(psprintf("database \"%s\" does not exist or allows no connections (wasend.database)",
									wasend_database),
						   "Set wasend.database to the database that has the extension (a restart), or leave it empty for the one database that has it.",
						   true);
	else
	{
		connect_database(wasend_database, InvalidOid);
		set_census_refusal(NULL, NULL, false);
	}
}

/*
 * wasend.database empty: store into the one database that has the
 * extension.  Until the launcher has looked at every database, POSTs are
 * answered 503; with none or several, 503 and a warning naming them.
 * Connected, the worker follows the census: while it names another single
 * database, the worker exits and is started again (5 s), to connect there;
 * while it counts the connected one among several, the worker warns once
 * and keeps storing there (Meta does not retry a notification forever).
 */
static void
follow_census(void)
{
	WasendCensus census;
	bool		mine;
	int64		now = wasend_mono_us();

	if (!auto_database)
	{
		follow_named_database();
		return;
	}
	if (connected && now < next_census_look)
		return;
	next_census_look = now + CENSUS_LOOK_US;
	if (!census_settled(&census, &mine))
	{
		if (!connected)
			set_census_refusal("the launcher is still looking for the database that has the extension",
							   NULL, false);
		return;
	}
	if (census.count == 1)
	{
		if (!connected)
		{
			connect_database(NULL, census.dboid);
			ereport(LOG,
					(errmsg("wasend webhook stores notifications in database \"%s\", the one that has the extension (wasend.database is empty)",
							database_name)));
		}
		else if (census.dboid != MyDatabaseId)
		{
			ereport(LOG,
					(errmsg("wasend webhook restarts: the extension is now only in database \"%s\", not in \"%s\" (wasend.database is empty)",
							census.names, database_name)));
			proc_exit(1);
		}
		set_census_refusal(NULL, NULL, false);
		wasend_warn_clear(&others_warned);
	}
	else if (census.count >= 2 && connected && mine)
	{
		/* connected and storing: another database does not change that */
		set_census_refusal(NULL, NULL, false);
		if (wasend_warn_changed(&others_warned, census.names))
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wasend webhook keeps storing notifications in database \"%s\", but %d databases have the extension now: %s",
							database_name, census.count, census.names),
					 errdetail("After a restart, signed POSTs are answered 503 until wasend.database names one of them."),
					 errhint("Name the database that takes webhooks in wasend.database (a restart); the others take webhooks through wasend.wasend_ingest_webhook().")));
	}
	else if (census.count == 0)
		set_census_refusal("no database has the extension (wasend.database is empty: the one database that has it)",
						   "Run CREATE EXTENSION wasend in the database that should take webhooks, or set wasend.database to it.",
						   true);
	else
		set_census_refusal(psprintf("%d databases have the extension: set wasend.database to one of: %s",
									census.count, census.names),
						   "Name the database that takes webhooks in wasend.database (a restart); the others take webhooks through wasend.wasend_ingest_webhook().",
						   true);
}

/*
 * After each pass: log a verify token file problem a GET ran into (the
 * callback cannot log), and follow the database census.
 */
static void
after_pass(void)
{
	if (verify_token_checked)
	{
		verify_token_checked = false;
		report_secret_problem(WASEND_SECRET_VERIFY_TOKEN,
							  verify_token_problem[0] ? verify_token_problem : NULL);
	}
	follow_census();
}

/*
 * Entry point of the webhook worker.
 */
void
wasend_webhook_main(Datum main_arg)
{
	struct sockaddr_in addr;
	WasendHttpEndpoint ep;

	wasend_worker_signals();
	auto_database = wasend_database == NULL || wasend_database[0] == '\0';
	if (auto_database && wasend_state == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend webhook has no shared memory"),
				 errhint("Load wasend through shared_preload_libraries.")));
	if (wasend_state == NULL)
		connect_database(wasend_database, InvalidOid);
	else
		follow_census();

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16) wasend_webhook_port);
	if (inet_pton(AF_INET, wasend_webhook_address, &addr.sin_addr) != 1)
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid wasend.webhook_address \"%s\"", wasend_webhook_address),
				 errhint("Give an IPv4 address, e.g. 127.0.0.1 or 0.0.0.0.")));

	/* the sockets must fit beside the files PostgreSQL keeps open */
	wasend_worker_raise_file_limit(wasend_webhook_max_connections + 256);
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "wasend webhook batch",
									  ALLOCSET_DEFAULT_SIZES);

	memset(&ep, 0, sizeof(ep));
	ep.name = "wasend webhook";
	ep.where = psprintf("%s:%d", wasend_webhook_address, wasend_webhook_port);
	ep.addr = &addr;
	ep.listen_fd = -1;
	ep.port = (uint16) wasend_webhook_port;
	ep.timeout_ms = &wasend_webhook_request_timeout_ms;
	ep.max_connections = (unsigned int) wasend_webhook_max_connections;
	ep.max_per_address = (unsigned int) wasend_webhook_max_connections_per_address;
	ep.start_error = psprintf("wasend webhook could not listen on %s:%d",
							  wasend_webhook_address, wasend_webhook_port);
	ep.start_hint = "Is the port in use? Change wasend.webhook_port or wasend.webhook_address.";
	ep.on_request = &on_request;
	ep.on_completed = &on_completed;
	ep.pending = batch_pending;
	ep.answer = process_batch;
	ep.wake_ms = durable_wake_ms;
	ep.reloaded = durable_reloaded;
	ep.after_pass = after_pass;
	wasend_http_serve(&ep);

	/*
	 * Asked to leave a database that is being dropped, renamed or copied:
	 * code 1, so that the postmaster starts the worker again.
	 */
	if (connected && wasend_state != NULL)
	{
		bool		held;

		LWLockAcquire(wasend_state->lock, LW_SHARED);
		held = database_held(MyDatabaseId, wasend_mono_us());
		LWLockRelease(wasend_state->lock);
		if (held)
		{
			ereport(LOG,
					(errmsg("wasend webhook leaves database \"%s\": it is being dropped, renamed or copied",
							database_name)));
			proc_exit(1);
		}
	}
	proc_exit(0);
}
