/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The SQL a sender runs: claim a batch, record a batch of results,
 *		release rows of paused campaigns, complete finished campaigns.
 *
 * Every statement is set-based: one claims a batch of rows for several
 * campaigns at once (FOR UPDATE SKIP LOCKED, LIMIT per campaign); one writes
 * the outcomes of a batch of requests from parallel arrays
 * (UPDATE ... FROM unnest(...)).  Request bodies are built and responses
 * parsed by jsonb inside these statements; C never prints or parses JSON
 * beyond checking, with PostgreSQL's own JSON lexer, that a response is
 * JSON at all (so one garbage answer cannot abort a whole batch's cast).
 *
 * Plans are prepared once per sender and kept; callers run these inside
 * their own transaction, with SPI connected.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "queue.h"

static SPIPlanPtr plan_activate = NULL;
static SPIPlanPtr plan_running = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_record = NULL;
static SPIPlanPtr plan_release = NULL;
static SPIPlanPtr plan_lock_done = NULL;
static SPIPlanPtr plan_complete = NULL;
static SPIPlanPtr plan_breaker = NULL;
static SPIPlanPtr plan_pending = NULL;

/*
 * Numbers whose timed pause has run out resume, scheduled campaigns whose
 * time has come start; say when the next campaign is due.
 */
static const char *sql_activate =
"WITH resumed AS ("
"  UPDATE wasend.whatsapp_numbers"
"     SET status = 'active', pause_reason = NULL, paused_until = NULL,"
"         updated_at = now()"
"   WHERE status = 'paused' AND paused_until <= now()"
"  RETURNING id),"
" started AS ("
"  UPDATE wasend.campaigns"
"     SET status = 'running', started_at = coalesce(started_at, now()),"
"         updated_at = now()"
"   WHERE status = 'scheduled' AND start_at <= now()"
"  RETURNING id)"
" SELECT (SELECT count(*) FROM started) + (SELECT count(*) FROM resumed),"
"        (SELECT min(start_at) FROM wasend.campaigns"
"          WHERE status = 'scheduled' AND start_at > now())";

/* Running campaigns whose number may send, with what sending needs. */
static const char *sql_running =
"SELECT c.id, n.id, n.phone_number_id, n.access_token, n.max_send_rate_per_sec,"
"       c.error_threshold::float8, c.error_window"
"  FROM wasend.campaigns c"
"  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id"
" WHERE c.status = 'running' AND n.status = 'active'";

/*
 * Claim up to lim ready rows of each campaign, oldest first, skipping rows
 * another sender holds, and build each request body: the row's payload or
 * the campaign's message, plus the envelope fields.  Each campaign's rows
 * come from send_queue_ready_idx in id order (LIMIT stops the scan; the
 * sent_at / failed_at conditions are that index's predicate).  Setting
 * status = 'sending' touches no indexed column, so it is a HOT update when
 * the page has room (see the fillfactor in the extension script).  The
 * UPDATE finds the picked rows by ctid (a TID scan): they are locked, so
 * their ctid cannot change before it runs, and it saves a primary-key
 * descent and heap visit per row (measured with callgrind: see
 * bench/profile.sh).  A campaign paused meanwhile is caught by the
 * sender's next refresh, which releases rows.
 *
 * after_id is a keyset cursor: the highest id this sender claimed last time
 * for the campaign.  Without it each claim would walk again over the index
 * entries of every row claimed since the last vacuum (they stay in the
 * index until then); the sender resets it at every refresh, so rows put
 * back behind it (retries, released rows) are found within a second.
 */
static const char *sql_claim =
"WITH want AS ("
"  SELECT * FROM unnest($1::bigint[], $2::int[], $4::bigint[])"
"           AS w(campaign_id, lim, after_id)),"
" picked AS ("
"  SELECT p.ctid FROM want w CROSS JOIN LATERAL ("
"    SELECT q.ctid FROM wasend.send_queue q"
"     WHERE q.campaign_id = w.campaign_id AND q.id > w.after_id"
"       AND q.sent_at IS NULL AND q.failed_at IS NULL"
"       AND q.status = 'ready' AND q.next_attempt_at <= now()"
"     ORDER BY q.id LIMIT w.lim"
"       FOR UPDATE SKIP LOCKED) p)"
" UPDATE wasend.send_queue q"
"    SET status = 'sending', attempts = q.attempts + 1,"
"        claimed_at = now(), claimed_by = $3"
"  WHERE q.ctid = ANY (ARRAY(SELECT ctid FROM picked))"
" RETURNING q.id, q.campaign_id,"
"   (coalesce(q.payload, (SELECT c.message FROM wasend.campaigns c"
"                          WHERE c.id = q.campaign_id))"
"    || jsonb_build_object("
"      'messaging_product', 'whatsapp', 'recipient_type', 'individual',"
"      'to', q.recipient, 'biz_opaque_callback_data', 'wasend:' || q.id))::text";

/*
 * Write the outcomes of a batch and apply wasend.error_policy, all in one
 * statement:
 *
 *	- a 200 with a message id is sent, its wamid stored;
 *	- otherwise the error's key (the Graph API error.code, or the transport
 *	  class the sender gives) picks a policy row ('*' when none matches):
 *	  retry puts the row back to ready after backoff * factor^(attempt-1)
 *	  with +-20% jitter, and fails it once wasend.max_attempts is reached;
 *	  fail fails it; pause_number and pause_campaign put the row back to
 *	  ready (the attempt does not count) and pause the number (for
 *	  pause_for, or until resumed) or the campaign, with the reason stored.
 *
 * Returns one row per (campaign, number) of the batch: rows sent, rows
 * failed, answers asking to slow down, and how many numbers and campaigns
 * the batch paused.
 *
 * Rows are matched by id and claimed_by = this sender's pid ($8), which is
 * set only while a row is 'sending' for this sender: the primary key finds
 * them, whatever the number of rows other senders hold.  Each row is
 * looked up once, by the UPDATE itself: the outcome needs the row's
 * attempts, so it is computed in the SET list (the same CASE in status,
 * failed_at, next_attempt_at and attempts) rather than in a join before.
 * r and w are materialized: each answer is parsed once (r; inlined, the
 * cast ran once per reference to j: json_lex was 11% of a sender's
 * instructions under make profile), and searched, and its policy looked
 * up, once per row (w), not once per reference in the SET list nor in a
 * nested loop under the row lookups (measured: 110 us per row recorded
 * otherwise, against 45).
 * The pid is compared as a column of the batch (owner), not as a constant:
 * claimed_by is NULL in almost every row ANALYZE sees, so "claimed_by =
 * $8" alone is estimated at one row and the planner would scan the table
 * for it and join the batch in a nested loop (500 x 500 comparisons,
 * measured 123 ms for a batch against 36 ms).
 */
static const char *sql_record =
"WITH r AS MATERIALIZED ("
"  SELECT u.id, u.http, u.err, u.at, u.cls, u.body::jsonb AS j, $8::int AS owner"
"    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[],"
"                $5::timestamptz[], $6::text[]) AS u(id, http, body, err, at, cls)),"
" v AS ("
"  SELECT r.id, r.owner, r.at, r.http, r.cls, r.j #>> '{messages,0,id}' AS wamid,"
"         CASE WHEN jsonb_typeof(r.j #> '{error,code}') = 'number'"
"              THEN (r.j #>> '{error,code}')::numeric::int END AS code,"
"         coalesce(r.j #>> '{error,message}', r.err,"
"                  CASE WHEN r.http <> 200 THEN 'HTTP ' || r.http END,"
"                  'response without a message id') AS msg,"
"         r.http = 200 AND r.j #>> '{messages,0,id}' IS NOT NULL AS ok"
"    FROM r),"
" k AS ("
"  SELECT v.*,"
"         CASE WHEN v.ok THEN NULL WHEN v.code IS NOT NULL THEN 'api'"
"              ELSE coalesce(v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'"
"                                        ELSE 'bad_response' END) END AS class,"
"         coalesce(v.code::text, v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'"
"                                            ELSE 'bad_response' END) AS key"
"    FROM v),"
" w AS MATERIALIZED ("
"  SELECT k.*,"
"         CASE WHEN k.ok THEN 'sent' ELSE coalesce(ep.action, dp.action, 'fail') END AS action,"
"         coalesce(ep.backoff, dp.backoff, interval '2 seconds') AS backoff,"
"         coalesce(ep.backoff_factor, dp.backoff_factor, 2) AS factor,"
"         CASE WHEN ep.code IS NOT NULL THEN ep.pause_for ELSE dp.pause_for END AS pause_for,"
"         coalesce(ep.slow_down, dp.slow_down, false) AS slow_down"
"    FROM k"
"    LEFT JOIN wasend.error_policy ep ON ep.code = k.key AND NOT k.ok"
"    LEFT JOIN wasend.error_policy dp ON dp.code = '*' AND ep.code IS NULL AND NOT k.ok),"
" upd AS ("
"  UPDATE wasend.send_queue q"
"     SET status = CASE WHEN w.ok THEN 'sent'"
"                       WHEN w.action = 'retry' AND q.attempts < $7 THEN 'ready'"
"                       WHEN w.action IN ('pause_number', 'pause_campaign') THEN 'ready'"
"                       ELSE 'failed' END,"
"         wa_message_id = w.wamid,"
"         last_error_code = CASE WHEN w.ok THEN NULL ELSE w.code END,"
"         last_error_class = w.class,"
"         last_error = CASE WHEN w.ok THEN NULL ELSE w.msg END,"
"         sent_at = CASE WHEN w.ok THEN w.at END,"
"         failed_at = CASE WHEN w.ok OR (w.action = 'retry' AND q.attempts < $7)"
"                               OR w.action IN ('pause_number', 'pause_campaign')"
"                          THEN NULL ELSE w.at END,"
"         next_attempt_at = CASE WHEN w.action = 'retry' AND q.attempts < $7"
"              THEN w.at + w.backoff * power(w.factor, greatest(q.attempts - 1, 0))"
"                          * (0.8 + 0.4 * random())"
"              ELSE q.next_attempt_at END,"
"         attempts = CASE WHEN w.action IN ('pause_number', 'pause_campaign')"
"                         THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,"
"         claimed_by = NULL"
"    FROM w"
"   WHERE q.id = w.id AND q.claimed_by = w.owner"
"  RETURNING q.campaign_id, q.status AS outcome, w.ok, w.slow_down,"
"            w.action, w.key, w.msg, w.at, w.pause_for),"
" pn AS ("
"  UPDATE wasend.whatsapp_numbers n"
"     SET status = 'paused', updated_at = now(),"
"         pause_reason = format('error %s: %s', x.key, x.msg),"
"         paused_until = x.at + x.pause_for"
"    FROM (SELECT DISTINCT ON (c.number_id) c.number_id, u.key, u.msg, u.at, u.pause_for"
"            FROM upd u JOIN wasend.campaigns c ON c.id = u.campaign_id"
"           WHERE u.action = 'pause_number' AND NOT u.ok"
"           ORDER BY c.number_id, u.at) x"
"   WHERE n.id = x.number_id AND n.status = 'active'"
"  RETURNING n.id),"
" pc AS ("
"  UPDATE wasend.campaigns c"
"     SET status = 'paused', paused_at = now(), updated_at = now(),"
"         pause_reason = format('error %s: %s', x.key, x.msg)"
"    FROM (SELECT DISTINCT ON (campaign_id) campaign_id, key, msg"
"            FROM upd WHERE action = 'pause_campaign' AND NOT ok"
"           ORDER BY campaign_id, at) x"
"   WHERE c.id = x.campaign_id AND c.status = 'running'"
"  RETURNING c.id),"
" g AS ("
"  SELECT u.campaign_id,"
"         count(*) FILTER (WHERE u.outcome = 'sent') AS sent,"
"         count(*) FILTER (WHERE u.outcome = 'failed') AS failed,"
"         count(*) FILTER (WHERE u.slow_down AND NOT u.ok) AS slow"
"    FROM upd u GROUP BY 1)"
" SELECT g.campaign_id, c.number_id, g.sent, g.failed, g.slow,"
"        (SELECT count(*) FROM pn) + (SELECT count(*) FROM pc)"
"   FROM g JOIN wasend.campaigns c ON c.id = g.campaign_id";

/*
 * Give claimed, unsent rows back, as if never claimed: to the queue when
 * their campaign was paused, to 'cancelled' when it was cancelled (the
 * cancel itself only reaches rows no sender holds).  Rows are matched, as
 * in sql_record, by id and claimed_by = this sender's pid ($2), so that the
 * plan is primary-key lookups rather than a scan of every 'sending' row.
 */
static const char *sql_release =
"UPDATE wasend.send_queue q"
"   SET status = CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE 'ready' END,"
"       attempts = greatest(q.attempts - 1, 0),"
"       claimed_by = NULL, claimed_at = NULL"
"  FROM wasend.campaigns c"
" WHERE q.id = ANY ($1::bigint[]) AND q.claimed_by = $2"
"   AND c.id = q.campaign_id";

/*
 * Completing a campaign takes its row lock first, in its own statement:
 * wasend_enqueue() and the send_queue insert trigger hold a share lock on
 * the campaign while they add rows, so once we hold the lock, the next
 * statement's snapshot sees every row that will ever be added.  Campaigns
 * someone is adding to are skipped and retried on a later pass.
 */
static const char *sql_lock_done =
"SELECT id FROM wasend.campaigns"
" WHERE id = ANY ($1::bigint[]) AND status = 'running'"
" ORDER BY id FOR UPDATE SKIP LOCKED";

static const char *sql_complete =
"UPDATE wasend.campaigns c"
"   SET status = 'completed', completed_at = now(), updated_at = now()"
" WHERE c.id = ANY ($1::bigint[]) AND c.status = 'running'"
"   AND NOT EXISTS (SELECT 1 FROM wasend.send_queue q"
"                    WHERE q.campaign_id = c.id"
"                      AND q.sent_at IS NULL AND q.failed_at IS NULL"
"                      AND q.status IN ('ready', 'sending'))";

/*
 * Statuses that arrived before their send's commit wait in
 * wasend.pending_statuses; apply those whose wamid is now known.
 */
static const char *sql_pending =
"SELECT wasend._apply_pending_statuses()"
" WHERE EXISTS (SELECT 1 FROM wasend.pending_statuses)";

/* The circuit breaker pauses a campaign, saying why. */
static const char *sql_breaker =
"UPDATE wasend.campaigns"
"   SET status = 'paused', paused_at = now(), updated_at = now(),"
"       pause_reason = format('circuit breaker: %s of the last %s results failed (threshold %s%%)',"
"                             $2, $3, round(error_threshold * 100, 2))"
" WHERE id = $1 AND status = 'running'";

/*
 * Settle rows left 'sending' by senders that are gone: every live sender is
 * (pid, start time), and a row is its own when claimed_by = pid and it was
 * claimed after that sender started.  Whether the request went out is
 * unknown, so the row is marked uncertain and, per wasend.on_uncertain,
 * queued again or failed.  Rows claimed after this pass began belong to a
 * sender that started meanwhile and are left alone.  The rows are found
 * through send_queue_ready_idx (no index names status: see the claim); this
 * runs only when the launcher starts and after a sender exits.
 */
static const char *sql_recover =
"WITH live AS (SELECT * FROM unnest($1::int[], $2::timestamptz[]) AS l(pid, started)),"
" settled AS ("
"  UPDATE wasend.send_queue q"
"     SET status = CASE WHEN $3 THEN 'failed' ELSE 'ready' END,"
"         uncertain = true,"
"         last_error_class = 'uncertain',"
"         last_error = 'outcome unknown: the sender stopped while the message was claimed or in flight',"
"         failed_at = CASE WHEN $3 THEN now() END,"
"         next_attempt_at = now(),"
"         claimed_by = NULL"
"   WHERE q.sent_at IS NULL AND q.failed_at IS NULL"
"     AND q.status = 'sending' AND q.claimed_at < $4"
"     AND NOT EXISTS (SELECT 1 FROM live"
"                      WHERE live.pid = q.claimed_by AND q.claimed_at >= live.started)"
"  RETURNING 1)"
" SELECT count(*) FROM settled";

/*
 * Is the extension installed in this database?  Senders start before
 * CREATE EXTENSION and must survive DROP EXTENSION.
 */
bool
queue_extension_present(void)
{
	return OidIsValid(get_extension_oid("wasend", true));
}

/*
 * Prepare one statement and keep its plan for the life of the sender.
 */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "wasend: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "wasend: SPI_keepplan failed");
	return plan;
}

/*
 * Prepare all statements once.  Plans are revalidated by the plan cache if
 * the extension is dropped and created again.
 */
void
queue_prepare(void)
{
	Oid			claim_types[4] = {INT8ARRAYOID, INT4ARRAYOID, INT4OID, INT8ARRAYOID};
	Oid			record_types[8] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT4OID, INT4OID};
	Oid			breaker_types[3] = {INT8OID, INT4OID, INT4OID};
	Oid			ids_type[1] = {INT8ARRAYOID};
	Oid			release_types[2] = {INT8ARRAYOID, INT4OID};

	if (plan_activate != NULL)
		return;
	plan_activate = prepare(sql_activate, 0, NULL);
	plan_running = prepare(sql_running, 0, NULL);
	plan_claim = prepare(sql_claim, 4, claim_types);
	plan_record = prepare(sql_record, 8, record_types);
	plan_breaker = prepare(sql_breaker, 3, breaker_types);
	plan_pending = prepare(sql_pending, 0, NULL);
	plan_release = prepare(sql_release, 2, release_types);
	plan_lock_done = prepare(sql_lock_done, 1, ids_type);
	plan_complete = prepare(sql_complete, 1, ids_type);
}

/*
 * Build a bigint[] datum from a C array.
 */
static Datum
int8_array(int n, const int64 *values)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/*
 * Start scheduled campaigns that are due.  Returns the start time of the
 * next scheduled campaign, or 0 if none is waiting.
 */
TimestampTz
queue_activate_scheduled(void)
{
	bool		isnull;
	Datum		next;

	if (SPI_execute_plan(plan_activate, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: activating scheduled campaigns failed");
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(next);
}

/*
 * List the running campaigns whose number is active.  The result is
 * allocated in cxt.
 */
int
queue_running_campaigns(RunningCampaign **out, MemoryContext cxt)
{
	uint64		i;
	RunningCampaign *rc;

	if (SPI_execute_plan(plan_running, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: listing running campaigns failed");

	rc = MemoryContextAllocZero(cxt, sizeof(RunningCampaign) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old;

		rc[i].campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rc[i].number_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		rc[i].rate = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		rc[i].error_threshold = DatumGetFloat8(SPI_getbinval(tup, desc, 6, &isnull));
		rc[i].error_window = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		old = MemoryContextSwitchTo(cxt);
		rc[i].phone_number_id = SPI_getvalue(tup, desc, 3);
		rc[i].access_token = SPI_getvalue(tup, desc, 4);
		MemoryContextSwitchTo(old);
	}
	*out = rc;
	return (int) SPI_processed;
}

/*
 * Claim up to limits[i] rows of campaign_ids[i], marking them sending by
 * this sender.  Returns the rows (allocated in cxt).
 */
int
queue_claim(int n, const int64 *campaign_ids, const int32 *limits,
			const int64 *after_ids, int32 claimer_pid, ClaimedRow **out,
			MemoryContext cxt)
{
	Datum		args[4];
	Datum	   *lims = palloc(sizeof(Datum) * Max(n, 1));
	ClaimedRow *rows;
	uint64		i;
	int			j;

	for (j = 0; j < n; j++)
		lims[j] = Int32GetDatum(limits[j]);
	args[0] = int8_array(n, campaign_ids);
	args[1] = PointerGetDatum(construct_array(lims, n, INT4OID, 4, true,
											  TYPALIGN_INT));
	args[2] = Int32GetDatum(claimer_pid);
	args[3] = int8_array(n, after_ids);

	if (SPI_execute_plan(plan_claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "wasend: claiming rows failed");

	rows = MemoryContextAlloc(cxt, sizeof(ClaimedRow) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old;

		rows[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rows[i].campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		old = MemoryContextSwitchTo(cxt);
		rows[i].body = SPI_getvalue(tup, desc, 3);
		MemoryContextSwitchTo(old);
	}
	*out = rows;
	return (int) SPI_processed;
}

/*
 * Write a batch of outcomes in one statement.  Returns one RecordGroup per
 * (campaign, number) in *out (allocated in the caller's context).  The
 * batch is left for the caller to reset.
 */
int
queue_record(ResultBatch *b, int max_attempts, int32 claimer_pid,
			 RecordGroup **out)
{
	Datum		args[8];
	int			dims[1];
	int			lbs[1] = {1};
	RecordGroup *groups;
	uint64		i;

	*out = NULL;
	if (b->n == 0)
		return 0;
	dims[0] = b->n;
	args[0] = PointerGetDatum(construct_array(b->ids, b->n, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(b->http_status, b->n, INT4OID, 4,
											  true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(b->body, b->body_null, 1, dims,
												 lbs, TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_md_array(b->error, b->error_null, 1, dims,
												 lbs, TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(b->at, b->n, TIMESTAMPTZOID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[5] = PointerGetDatum(construct_md_array(b->error_class, b->error_class_null,
												 1, dims, lbs, TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[6] = Int32GetDatum(max_attempts);
	args[7] = Int32GetDatum(claimer_pid);

	if (SPI_execute_plan(plan_record, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: recording results failed");

	groups = palloc0(sizeof(RecordGroup) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		groups[i].campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		groups[i].number_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		groups[i].sent = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		groups[i].failed = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		groups[i].slow_down = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		groups[i].paused = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
	}
	*out = groups;
	return (int) SPI_processed;
}

/*
 * Apply the status webhooks that were waiting for their wamid.
 */
void
queue_apply_pending_statuses(void)
{
	if (SPI_execute_plan(plan_pending, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: applying pending statuses failed");
}

/*
 * Pause a campaign whose recent failures tripped the circuit breaker.
 */
void
queue_trip_breaker(int64 campaign_id, int failures, int window)
{
	Datum		args[3];

	args[0] = Int64GetDatum(campaign_id);
	args[1] = Int32GetDatum(failures);
	args[2] = Int32GetDatum(window);
	if (SPI_execute_plan(plan_breaker, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: pausing a campaign failed");
}

/*
 * Settle the rows of senders that are gone (see sql_recover).  Runs in the
 * launcher, whose plan is not kept: it runs rarely.
 */
int64
queue_recover(int nlive, const int32 *pids, const TimestampTz *started,
			  bool fail_uncertain, TimestampTz pass_start)
{
	Datum		args[4];
	Oid			types[4] = {INT4ARRAYOID, TIMESTAMPTZARRAYOID, BOOLOID, TIMESTAMPTZOID};
	Datum	   *p = palloc(sizeof(Datum) * Max(nlive, 1));
	Datum	   *t = palloc(sizeof(Datum) * Max(nlive, 1));
	bool		isnull;
	int			i;

	for (i = 0; i < nlive; i++)
	{
		p[i] = Int32GetDatum(pids[i]);
		t[i] = TimestampTzGetDatum(started[i]);
	}
	args[0] = PointerGetDatum(construct_array(p, nlive, INT4OID, 4, true, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(t, nlive, TIMESTAMPTZOID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = BoolGetDatum(fail_uncertain);
	args[3] = TimestampTzGetDatum(pass_start);
	if (SPI_execute_with_args(sql_recover, 4, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: settling orphaned rows failed");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/*
 * Put rows this sender claimed and never sent back (see sql_release).
 */
void
queue_release(int n, const int64 *row_ids, int32 claimer_pid)
{
	Datum		args[2];

	if (n == 0)
		return;
	args[0] = int8_array(n, row_ids);
	args[1] = Int32GetDatum(claimer_pid);
	if (SPI_execute_plan(plan_release, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: releasing rows failed");
}

/*
 * Mark completed those of the given running campaigns that have nothing
 * left to send.  Returns how many were completed.
 */
int
queue_complete(int n, const int64 *campaign_ids)
{
	Datum		args[1];

	if (n == 0)
		return 0;
	args[0] = int8_array(n, campaign_ids);
	if (SPI_execute_plan(plan_lock_done, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: locking campaigns failed");
	if (SPI_processed == 0)
		return 0;
	if (SPI_execute_plan(plan_complete, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: completing campaigns failed");
	return (int) SPI_processed;
}

/*
 * Create an empty result batch with room for cap outcomes.
 */
void
result_batch_init(ResultBatch *b, int cap, MemoryContext parent)
{
	memset(b, 0, sizeof(*b));
	b->cxt = AllocSetContextCreate(parent, "wasend results",
								   ALLOCSET_DEFAULT_SIZES);
	b->cap = cap;
	b->ids = MemoryContextAlloc(parent, sizeof(Datum) * cap);
	b->http_status = MemoryContextAlloc(parent, sizeof(Datum) * cap);
	b->body = MemoryContextAlloc(parent, sizeof(Datum) * cap);
	b->body_null = MemoryContextAlloc(parent, sizeof(bool) * cap);
	b->error = MemoryContextAlloc(parent, sizeof(Datum) * cap);
	b->error_null = MemoryContextAlloc(parent, sizeof(bool) * cap);
	b->error_class = MemoryContextAlloc(parent, sizeof(Datum) * cap);
	b->error_class_null = MemoryContextAlloc(parent, sizeof(bool) * cap);
	b->at = MemoryContextAlloc(parent, sizeof(Datum) * cap);
}

/*
 * Make room for cap outcomes (after wasend.max_inflight was raised).
 */
void
result_batch_grow(ResultBatch *b, int cap)
{
	if (cap <= b->cap)
		return;
	b->ids = repalloc(b->ids, sizeof(Datum) * cap);
	b->http_status = repalloc(b->http_status, sizeof(Datum) * cap);
	b->body = repalloc(b->body, sizeof(Datum) * cap);
	b->body_null = repalloc(b->body_null, sizeof(bool) * cap);
	b->error = repalloc(b->error, sizeof(Datum) * cap);
	b->error_null = repalloc(b->error_null, sizeof(bool) * cap);
	b->error_class = repalloc(b->error_class, sizeof(Datum) * cap);
	b->error_class_null = repalloc(b->error_class_null, sizeof(bool) * cap);
	b->at = repalloc(b->at, sizeof(Datum) * cap);
	b->cap = cap;
}

/*
 * Forget the outcomes once written.
 */
void
result_batch_reset(ResultBatch *b)
{
	b->n = 0;
	b->oldest = 0;
	MemoryContextReset(b->cxt);
}

/*
 * Is this text valid in the database encoding and JSON?  Uses PostgreSQL's
 * JSON parser with no semantic actions, which reports errors by return code
 * instead of throwing: the sender checks answers with it before the jsonb
 * cast of a whole batch, the webhook worker checks bodies outside any
 * transaction.
 */
bool
wasend_text_is_json(const char *text, size_t len)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;

	if (text == NULL || len == 0 || !pg_verifymbstr(text, len, true))
		return false;
#if PG_VERSION_NUM >= 170000
	{
		JsonLexContext lexbuf;

		lex = makeJsonLexContextCstringLen(&lexbuf, unconstify(char *, text), len,
										   GetDatabaseEncoding(), false);
		rc = pg_parse_json(lex, &nullSemAction);
		freeJsonLexContext(lex);
	}
#else
	lex = makeJsonLexContextCstringLen(unconstify(char *, text), len,
									   GetDatabaseEncoding(), false);
	rc = pg_parse_json(lex, &nullSemAction);
#endif
	return rc == JSON_SUCCESS;
}

/*
 * Add one request's outcome.  A response that is not JSON is kept out of
 * the jsonb cast and reported as an error text instead.
 */
void
result_batch_add(ResultBatch *b, int64 row_id, long http_status,
				 const char *body, const char *error, const char *error_class,
				 TimestampTz at)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int			i = b->n;

	Assert(i < b->cap);
	b->ids[i] = Int64GetDatum(row_id);
	b->http_status[i] = Int32GetDatum((int32) http_status);
	b->body_null[i] = true;
	b->error_null[i] = true;
	b->error_class_null[i] = true;
	if (error_class != NULL)
	{
		b->error_class[i] = CStringGetTextDatum(error_class);
		b->error_class_null[i] = false;
	}
	if (body != NULL && body[0] != '\0')
	{
		size_t		len = strlen(body);

		if (wasend_text_is_json(body, len))
		{
			b->body[i] = CStringGetTextDatum(body);
			b->body_null[i] = false;
		}
		else if (error == NULL)
			error = http_status == 200 ? "response is not JSON" :
				psprintf("HTTP %ld, response is not JSON", http_status);
	}
	if (error != NULL && error[0] != '\0')
	{
		b->error[i] = CStringGetTextDatum(error);
		b->error_null[i] = false;
	}
	b->at[i] = TimestampTzGetDatum(at);
	if (i == 0)
		b->oldest = at;
	b->n++;
	MemoryContextSwitchTo(old);
}
