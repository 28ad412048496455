/*-------------------------------------------------------------------------
 *
 * limits_reader.c
 *		A sender's reads of its numbers' messaging limits, quality and
 *		health: the GETs, and their answers until a database cycle stores
 *		them (db_cycle.c).
 *
 * An answer is kept only as text valid in the database encoding, with
 * the token its GET carried redacted: a dump must restore what is stored.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "graph_api.h"
#include "http_client.h"
#include "limits_reader.h"

/*
 * Start with no answers; their texts go to cxt.
 */
void
wasend_limits_init(LimitsReader *lr, MemoryContext cxt)
{
	lr->n = 0;
	lr->cxt = cxt;
}

/*
 * Keep the answer of a limits GET for the next database cycle (the body
 * with the token the GET carried redacted: the number may have no state in
 * this sender, when it has no running campaign or is read for the first
 * time).  If the list is full the answer is dropped: the number is due
 * again soon anyway.
 */
void
wasend_limits_collect(LimitsReader *lr, const HttpRequest *req)
{
	LimitsAnswer *a;
	const char *body = req->curl_code == 0 && !req->resp_too_big ? req->resp : NULL;

	if (lr->n >= MAX_LIMITS_ANSWERS)
		return;
	a = &lr->answers[lr->n++];
	a->number_id = req->number_id;
	a->http_status = req->http_status;
	a->tries = 0;
	a->not_before = 0;
	a->done = false;
	a->error = req->curl_code != 0 || req->resp_too_big ?
		MemoryContextStrdup(lr->cxt, req->errbuf) : NULL;

	/*
	 * An answer that is not valid in the database encoding (a proxy's
	 * Latin-1 error page, say) must not reach a stored text: a dump would
	 * not restore.  It is an error of its own instead.
	 */
	if (body != NULL && !pg_verifymbstr(body, (int) strlen(body), true))
	{
		body = NULL;
		if (a->error == NULL)
			a->error = MemoryContextStrdup(lr->cxt,
										   "the answer is not valid in the database encoding");
	}
	a->body = NULL;
	if (body != NULL)
	{
		const char *redacted = wasend_redact_token(body, req->token);

		a->body = MemoryContextStrdup(lr->cxt, redacted);
		if (redacted != body)
			pfree(unconstify(char *, redacted));
	}
}

/*
 * Forget the limits answers a committed cycle stored (or gave up on); keep
 * those whose storing met a user's lock, for a later cycle
 * (store_limits_answers).
 */
void
wasend_limits_forget_done(LimitsReader *lr)
{
	int			i;
	int			kept = 0;

	for (i = 0; i < lr->n; i++)
	{
		if (!lr->answers[i].done)
		{
			lr->answers[kept++] = lr->answers[i];
			continue;
		}
		if (lr->answers[i].body)
			pfree(lr->answers[i].body);
		if (lr->answers[i].error)
			pfree(lr->answers[i].error);
	}
	lr->n = kept;
}

/*
 * Mark every limits answer done (nothing can store them: no extension) or
 * not done (the cycle that stored them failed, so the store is undone).
 */
void
wasend_limits_mark(LimitsReader *lr, bool done)
{
	int			i;

	for (i = 0; i < lr->n; i++)
		lr->answers[i].done = done;
}

/*
 * Is there a limits answer no cycle has tried to store yet?  The loop runs
 * a cycle for it at once: a number does not send until its limit is
 * stored, and the sender that read it may have nothing else to do.
 */
bool
wasend_limits_fresh(const LimitsReader *lr)
{
	int			i;

	for (i = 0; i < lr->n; i++)
		if (lr->answers[i].tries == 0 && !lr->answers[i].done)
			return true;
	return false;
}

/*
 * Start the GETs of the numbers whose limits are due (their tokens are in
 * lc, not necessarily in a NumberState: a number without a running
 * campaign is read too).
 */
void
wasend_limits_start_reads(const LimitsCheck *lc, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		char	   *url = wasend_graph_limits_url(lc[i].phone_number_id, lc[i].access_token);

		wasend_http_start_get(url, lc[i].access_token, lc[i].number_id);
		pfree(url);
	}
}

