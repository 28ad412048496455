/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The SQL a sender runs (src/queue.sql): claim a batch, record a
 *		batch of results, release rows of paused campaigns, complete
 *		finished campaigns.
 *
 * Every statement is set-based and prepared once per sender; callers run
 * them inside their own transaction, with SPI connected.  See
 * docs/internals/queue.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "graph_api.h"
#include "queue.h"
#include "metrics.h"
#include "secrets.h"
#include "settings.h"

/* the statements, generated from src/queue.sql (see queue_sql.awk) */
#include "queue_sql.h"

static SPIPlanPtr plan_activate = NULL;
static SPIPlanPtr plan_running = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_claim_lock = NULL;
static SPIPlanPtr plan_record = NULL;
static SPIPlanPtr plan_record_poison = NULL;
static SPIPlanPtr plan_release = NULL;
static SPIPlanPtr plan_lock_done = NULL;
static SPIPlanPtr plan_complete = NULL;
static SPIPlanPtr plan_breaker = NULL;
static SPIPlanPtr plan_pending = NULL;
static SPIPlanPtr plan_pending_recorded = NULL;
static SPIPlanPtr plan_limits_due = NULL;
static SPIPlanPtr plan_limits_apply = NULL;
static SPIPlanPtr plan_limits_failed = NULL;
static SPIPlanPtr plan_running_ids = NULL;
static SPIPlanPtr plan_fault_note = NULL;
static SPIPlanPtr plan_fault_clear = NULL;
static SPIPlanPtr plan_token_refused = NULL;

/*
 * Is the extension installed in this database?  Senders start before
 * CREATE EXTENSION and must survive DROP EXTENSION.
 */
bool
wasend_queue_extension_present(void)
{
	return OidIsValid(get_extension_oid("wasend", true));
}

/*
 * What the extension in database dboid (the current one) lets its senders
 * do: DBSTATE_ABSENT (no extension), DBSTATE_IDLE with *why (an extension
 * of another version than this library's, or a copy of another database,
 * see wasend.database_identity), or DBSTATE_SEND.  In a transaction.
 */
QueueDatabaseState
wasend_queue_database_state(Oid dboid, char **why)
{
	Datum		arg[1];
	Oid			types[1] = {OIDOID};
	bool		isnull;
	char	   *version;

	*why = NULL;
	if (!wasend_queue_extension_present())
		return DBSTATE_ABSENT;
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'wasend'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return DBSTATE_ABSENT;
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version == NULL || strcmp(version, WASEND_VERSION) != 0)
	{
		*why = psprintf("the extension is version %s, the library %s",
						version ? version : "?", WASEND_VERSION);
		return DBSTATE_IDLE;
	}
	arg[0] = ObjectIdGetDatum(dboid);
	if (SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM wasend.database_identity WHERE dboid = $1)",
							  1, types, arg, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "wasend: reading the database identity failed");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		*why = pstrdup(WASEND_WHY_COPY);
		return DBSTATE_IDLE;
	}
	return DBSTATE_SEND;
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
wasend_queue_prepare(void)
{
	Oid			claim_types[6] = {INT8ARRAYOID, INT4ARRAYOID, INT8OID, INT8ARRAYOID, TEXTARRAYOID,
	INT4ARRAYOID};
	Oid			record_types[8] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT4OID, INT8OID};
	Oid			poison_types[4] = {INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID};
	Oid			breaker_types[3] = {INT8OID, INT4OID, INT4OID};
	Oid			ids_type[1] = {INT8ARRAYOID};
	Oid			release_types[2] = {INT8ARRAYOID, INT8OID};
	Oid			int_type[1] = {INT4OID};
	Oid			apply_types[3] = {INT8OID, INT4OID, TEXTOID};
	Oid			failed_types[2] = {INT8OID, TEXTOID};
	Oid			running_types[3] = {BOOLOID, INT8ARRAYOID, INT8ARRAYOID};
	Oid			fault_types[3] = {INT8OID, TEXTOID, FLOAT8OID};
	SPIPlanPtr	plans[19];

	if (plan_complete != NULL)
		return;

	/*
	 * Prepare all, then publish all: a failure (a lock_timeout while a user
	 * holds a table lock, say) leaves nothing half prepared, and the next
	 * cycle simply tries again.  (A plan kept by SPI_keepplan before the
	 * failure is not freed; that happens at most once per failed attempt.)
	 */
	plans[0] = prepare(sql_activate, 0, NULL);
	plans[1] = prepare(sql_running, 3, running_types);
	plans[2] = prepare(sql_claim, 6, claim_types);
	plans[3] = prepare(sql_record, 8, record_types);
	plans[4] = prepare(sql_record_poison, 4, poison_types);
	plans[5] = prepare(sql_breaker, 3, breaker_types);
	plans[6] = prepare(sql_pending, 0, NULL);
	plans[7] = prepare(sql_release, 2, release_types);
	plans[8] = prepare(sql_lock_done, 1, ids_type);
	plans[9] = prepare(sql_complete, 1, ids_type);
	plans[10] = prepare(sql_limits_due, 1, int_type);
	plans[11] = prepare(sql_limits_apply, 3, apply_types);
	plans[12] = prepare(sql_limits_failed, 2, failed_types);
	plans[13] = prepare(sql_claim_lock, 1, ids_type);
	plans[14] = prepare(sql_running_ids, 1, ids_type);
	plans[15] = prepare(sql_fault_note, 3, fault_types);
	plans[16] = prepare(sql_fault_clear, 1, ids_type);
	plans[17] = prepare(sql_token_refused, 2, failed_types);
	plans[18] = prepare(sql_pending_recorded, 1, ids_type);
	plan_activate = plans[0];
	plan_running = plans[1];
	plan_claim = plans[2];
	plan_record = plans[3];
	plan_record_poison = plans[4];
	plan_breaker = plans[5];
	plan_pending = plans[6];
	plan_release = plans[7];
	plan_lock_done = plans[8];
	plan_limits_due = plans[10];
	plan_limits_apply = plans[11];
	plan_limits_failed = plans[12];
	plan_claim_lock = plans[13];
	plan_running_ids = plans[14];
	plan_fault_note = plans[15];
	plan_fault_clear = plans[16];
	plan_token_refused = plans[17];
	plan_pending_recorded = plans[18];
	plan_complete = plans[9];
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
 * Start scheduled campaigns that are due and resume numbers whose timed
 * pause ran out.  Returns the start time of the next scheduled campaign,
 * or 0 if none is waiting.
 */
TimestampTz
wasend_queue_activate_scheduled(void)
{
	bool		isnull;
	Datum		next;

	if (SPI_execute_plan(plan_activate, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: activating scheduled campaigns failed");
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(next);
}

/*
 * The token file of a number whose row has no token, copied into cxt; or
 * NULL with *error saying why (by path, never content).
 */
static char *
token_or_refuse(const char *phone_number_id, const char **error,
				MemoryContext cxt)
{
	WasendTokenStatus status;
	const char *token = wasend_number_token(phone_number_id, &status, error);

	return token ? MemoryContextStrdup(cxt, token) : NULL;
}

/*
 * A running number's token file cannot be used: pause the number with
 * the reason (see token_refused in queue.sql), and say so in the log
 * when this sender paused it.
 */
static void
token_refused(int64 number_id, const char *phone_number_id, const char *error)
{
	Datum		args[2];

	args[0] = Int64GetDatum(number_id);
	args[1] = CStringGetTextDatum(error);
	if (SPI_execute_plan(plan_token_refused, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "wasend: pausing a number whose token file is refused failed");
	if (SPI_processed > 0)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wasend paused number %s: %s", phone_number_id, error),
				 errhint("Fix the file, then resume the number with wasend.wasend_resume_number().")));
}

/*
 * List the running campaigns whose number is active, but the nexcl ones
 * in excl[], and only those in only[] when only is not NULL.  The result
 * is allocated in cxt.
 */
int
wasend_queue_running_campaigns(int nexcl, const int64 *excl, int nonly, const int64 *only,
						RunningCampaign **out, MemoryContext cxt)
{
	uint64		i;
	uint64		kept;
	int			n;
	RunningCampaign *rc;
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	/* while limits are read, a number waits for its first read */
	args[0] = BoolGetDatum(wasend_limits_refresh_interval > 0);
	args[1] = int8_array(nexcl, excl);
	if (only != NULL)
		args[2] = int8_array(nonly, only);
	else
	{
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	if (SPI_execute_plan(plan_running, args, nulls, true, 0) != SPI_OK_SELECT)
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
		rc[i].priority = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		rc[i].transactional = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		old = MemoryContextSwitchTo(cxt);
		rc[i].phone_number_id = SPI_getvalue(tup, desc, 3);
		rc[i].access_token = SPI_getvalue(tup, desc, 4);
		MemoryContextSwitchTo(old);
	}
	n = (int) SPI_processed;

	/* numbers whose token is a file: read it, or leave the number out */
	for (i = 0, kept = 0; i < n; i++)
	{
		if (rc[i].access_token == NULL)
		{
			const char *error;

			rc[i].access_token = token_or_refuse(rc[i].phone_number_id,
												 &error, cxt);
			if (rc[i].access_token == NULL)
			{
				token_refused(rc[i].number_id, rc[i].phone_number_id, error);
				continue;
			}
		}
		rc[kept++] = rc[i];
	}
	*out = rc;
	return kept;
}

/*
 * The ids of the campaigns the running set would hold, but the nexcl ones
 * in excl[], in *out (allocated in cxt).  Returns how many.
 */
int
wasend_queue_running_ids(int nexcl, const int64 *excl, int64 **out, MemoryContext cxt)
{
	Datum		args[1];
	int64	   *ids;
	uint64		i;

	args[0] = int8_array(nexcl, excl);
	if (SPI_execute_plan(plan_running_ids, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: listing running campaigns failed");
	ids = MemoryContextAlloc(cxt, sizeof(int64) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	*out = ids;
	return (int) SPI_processed;
}

/*
 * Say on the campaign why the sender set it aside, and for how many
 * seconds (wasend.campaign_faults, shown in campaign_progress.waiting).
 */
void
wasend_queue_fault_note(int64 campaign_id, const char *error, double secs)
{
	Datum		args[3];

	args[0] = Int64GetDatum(campaign_id);
	args[1] = CStringGetTextDatum(error);
	args[2] = Float8GetDatum(secs);
	if (SPI_execute_plan(plan_fault_note, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "wasend: noting a campaign fault failed");
}

/*
 * Forget what was said of campaigns set aside that went through again.
 */
void
wasend_queue_fault_clear(int n, const int64 *campaign_ids)
{
	Datum		args[1];

	args[0] = int8_array(n, campaign_ids);
	if (SPI_execute_plan(plan_fault_clear, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "wasend: clearing campaign faults failed");
}

/*
 * Take up to 16 numbers whose messaging limit is due to be read (see
 * limits_due in queue.sql); they are due again in resume_secs unless the
 * answer is written first.  The result is allocated in cxt.
 */
int
wasend_queue_limits_due(int resume_secs, LimitsCheck **out, MemoryContext cxt)
{
	Datum		args[1];
	LimitsCheck *lc;
	uint64		i;
	uint64		kept;
	int			n;

	args[0] = Int32GetDatum(resume_secs);
	if (SPI_execute_plan(plan_limits_due, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "wasend: listing numbers whose limits are due failed");
	lc = MemoryContextAllocZero(cxt, sizeof(LimitsCheck) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old;

		lc[i].number_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		old = MemoryContextSwitchTo(cxt);
		lc[i].phone_number_id = SPI_getvalue(tup, desc, 2);
		lc[i].access_token = SPI_getvalue(tup, desc, 3);
		MemoryContextSwitchTo(old);
	}
	n = (int) SPI_processed;

	/*
	 * A number whose token file cannot be used is not read: its read
	 * counts as failed, with the reason (so that it is not held up
	 * waiting for a first read; the refresh pauses it if it sends).
	 */
	for (i = 0, kept = 0; i < n; i++)
	{
		if (lc[i].access_token == NULL)
		{
			const char *error;

			lc[i].access_token = token_or_refuse(lc[i].phone_number_id,
												 &error, cxt);
			if (lc[i].access_token == NULL)
			{
				wasend_queue_limits_failed(lc[i].number_id, error);
				continue;
			}
		}
		lc[kept++] = lc[i];
	}
	*out = lc;
	return kept;
}

/*
 * Store the answer to a number's limits GET (body NULL when none came);
 * raises the error of wasend._apply_number_limits for an answer it cannot
 * use.
 */
void
wasend_queue_limits_apply(int64 number_id, long http_status, const char *body)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	args[0] = Int64GetDatum(number_id);
	args[1] = Int32GetDatum((int32) http_status);
	if (body != NULL)
		args[2] = CStringGetTextDatum(body);
	else
	{
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	if (SPI_execute_plan(plan_limits_apply, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: storing a number's limits failed");
}

/*
 * A number's limits could not be read: say why on the number.
 */
void
wasend_queue_limits_failed(int64 number_id, const char *message)
{
	Datum		args[2];

	args[0] = Int64GetDatum(number_id);
	args[1] = CStringGetTextDatum(message);
	if (SPI_execute_plan(plan_limits_failed, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: noting a failed limits read failed");
}

/*
 * The launcher starts the senders: every number's limits are read again.
 * Runs in the launcher (plan not kept).
 */
void
wasend_queue_limits_all_due(void)
{
	if (SPI_execute(sql_limits_all_due, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: marking numbers' limits due failed");
}

/*
 * Claim up to limits[i] rows of campaign_ids[i], marking them sending by
 * the sender whose claim token is given, looking at up to scans[i] due
 * rows to find them.  Returns the rows (allocated in cxt); a row the claim
 * decided not to send now (it waits for a limit, or its recipient is
 * suppressed) comes back with a NULL body.
 */
int
wasend_queue_claim(int n, const int64 *campaign_ids, const int32 *limits,
			const int32 *scans, const int64 *after_ids, int64 token,
			ClaimedRow **out, MemoryContext cxt)
{
	Datum		args[6];
	Datum	   *lims = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *looks = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *locked;
	ClaimedRow *rows;
	uint64		i;
	int			j;

	for (j = 0; j < n; j++)
	{
		lims[j] = Int32GetDatum(limits[j]);
		looks[j] = Int32GetDatum(scans[j]);
	}
	args[0] = int8_array(n, campaign_ids);
	args[1] = PointerGetDatum(construct_array(lims, n, INT4OID, 4, true,
											  TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_array(looks, n, INT4OID, 4, true,
											  TYPALIGN_INT));
	args[2] = Int64GetDatum(token);
	args[3] = int8_array(n, after_ids);

	/* first the budgets: locked in a statement of their own (see claim_lock) */
	if (SPI_execute_plan(plan_claim_lock, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: locking the messaging-limit budgets failed");
	locked = palloc(sizeof(Datum) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		locked[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
	}
	args[4] = PointerGetDatum(construct_array(locked, (int) SPI_processed, TEXTOID, -1, false,
											  TYPALIGN_INT));

	if (SPI_execute_plan(plan_claim, args, NULL, false, 0) != SPI_OK_SELECT)
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
		rows[i].priority = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		if (isnull)
			rows[i].priority = -1;
		rows[i].advance = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		if (isnull)
			rows[i].advance = 0;
		MemoryContextSwitchTo(old);
	}
	*out = rows;
	return (int) SPI_processed;
}

/*
 * Read a record row's error answers by key (columns 7 and 8: keys text[],
 * counts bigint[], both NULL when there are none) into group, allocated
 * in the caller's context.
 */
static void
record_errors(RecordGroup *group, HeapTuple tup, TupleDesc desc)
{
	bool		keys_null;
	bool		counts_null;
	Datum		keys = SPI_getbinval(tup, desc, 7, &keys_null);
	Datum		counts = SPI_getbinval(tup, desc, 8, &counts_null);
	Datum	   *key_values;
	Datum	   *count_values;
	int			nkeys;
	int			ncounts;
	int			i;

	group->nerrors = 0;
	if (keys_null || counts_null)
		return;
	deconstruct_array(DatumGetArrayTypeP(keys), TEXTOID, -1, false,
					  TYPALIGN_INT, &key_values, NULL, &nkeys);
	deconstruct_array(DatumGetArrayTypeP(counts), INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &count_values, NULL, &ncounts);
	group->nerrors = Min(nkeys, ncounts);
	group->error_keys = palloc(sizeof(char *) * Max(group->nerrors, 1));
	group->error_counts = palloc(sizeof(int64) * Max(group->nerrors, 1));
	for (i = 0; i < group->nerrors; i++)
	{
		group->error_keys[i] = TextDatumGetCString(key_values[i]);
		group->error_counts[i] = DatumGetInt64(count_values[i]);
	}
}

/*
 * Write the outcomes of some entries of a batch (idx[0..n-1]) in one
 * statement.  Returns one RecordGroup per (campaign, number) in *out
 * (allocated in the caller's context).  The batch itself is not changed.
 */
int
wasend_queue_record(ResultBatch *b, const int *idx, int n, int max_attempts,
			 int64 token, RecordGroup **out)
{
	Datum		args[8];
	int			dims[1];
	int			lbs[1] = {1};
	RecordGroup *groups;
	uint64		i;
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *http = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *body = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *body_null = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *err = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *err_null = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *cls = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *cls_null = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *at = palloc(sizeof(Datum) * Max(n, 1));
	int			j;

	*out = NULL;
	if (n == 0)
		return 0;
	for (j = 0; j < n; j++)
	{
		int			k = idx[j];

		ids[j] = b->ids[k];
		http[j] = b->http_status[k];
		body[j] = b->body[k];
		body_null[j] = b->body_null[k];
		err[j] = b->error[k];
		err_null[j] = b->error_null[k];
		cls[j] = b->error_class[k];
		cls_null[j] = b->error_class_null[k];
		at[j] = b->at[k];
	}
	dims[0] = n;
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(http, n, INT4OID, 4,
											  true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(body, body_null, 1, dims,
												 lbs, TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_md_array(err, err_null, 1, dims,
												 lbs, TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(at, n, TIMESTAMPTZOID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[5] = PointerGetDatum(construct_md_array(cls, cls_null, 1, dims, lbs,
												 TEXTOID, -1, false,
												 TYPALIGN_INT));
	args[6] = Int32GetDatum(max_attempts);
	args[7] = Int64GetDatum(token);

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
		record_errors(&groups[i], tup, desc);
	}
	*out = groups;
	return (int) SPI_processed;
}

/*
 * Fail one claimed row as bad_response because its answer could not be
 * recorded (see record_poison in queue.sql).  Returns whether the row was
 * still this sender's.
 */
bool
wasend_queue_record_poison(int64 row_id, int64 token, TimestampTz at, const char *error)
{
	Datum		args[4];

	args[0] = Int64GetDatum(row_id);
	args[1] = Int64GetDatum(token);
	args[2] = TimestampTzGetDatum(at);
	args[3] = CStringGetTextDatum(error);
	if (SPI_execute_plan(plan_record_poison, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: failing an unrecordable answer failed");
	return SPI_processed > 0;
}

/*
 * Apply the status webhooks that were waiting for their wamid.
 */
void
wasend_queue_apply_pending_statuses(void)
{
	if (SPI_execute_plan(plan_pending, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: applying pending statuses failed");
}

/*
 * The ids of the rows idx[0..n-1] of a batch, as an int8[] Datum.
 */
static Datum
batch_ids(ResultBatch *b, const int *idx, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			j;

	for (j = 0; j < n; j++)
		ids[j] = b->ids[idx[j]];
	return PointerGetDatum(construct_array(ids, n, INT8OID, 8,
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Apply the status webhooks that waited for the wamids of the rows
 * idx[0..n-1] of a batch, just recorded.
 */
void
wasend_queue_apply_pending_recorded(ResultBatch *b, const int *idx, int n)
{
	Datum		arg = batch_ids(b, idx, n);

	if (SPI_execute_plan(plan_pending_recorded, &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: applying the statuses of recorded messages failed");
}

/*
 * After wasend_queue_apply_pending_recorded failed for the rows idx[0..n-1]
 * of a batch: mark the statuses it would have applied unsettled, for the
 * senders' refresh (rare: its plan is not kept).
 */
void
wasend_queue_unsettle_recorded(ResultBatch *b, const int *idx, int n)
{
	Datum		arg = batch_ids(b, idx, n);
	Oid			ids_type = INT8ARRAYOID;

	if (SPI_execute_with_args(sql_unsettle_recorded, 1, &ids_type, &arg, NULL,
							  false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: marking the statuses of recorded messages unsettled failed");
}

/*
 * Pause a campaign whose recent failures tripped the circuit breaker.
 * Returns false when the campaign was not paused (no longer running, or a
 * user holds it locked).
 */
bool
wasend_queue_trip_breaker(int64 campaign_id, int failures, int window)
{
	Datum		args[3];

	args[0] = Int64GetDatum(campaign_id);
	args[1] = Int32GetDatum(failures);
	args[2] = Int32GetDatum(window);
	if (SPI_execute_plan(plan_breaker, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: pausing a campaign failed");
	return SPI_processed > 0;
}

/*
 * Run fn(arg) in a subtransaction.  Returns NULL when it succeeded;
 * otherwise the subtransaction is rolled back and its error returned
 * (allocated in the caller's memory context; the caller frees it), so
 * that the caller decides whether to go on, log or throw it again.
 */
ErrorData *
wasend_queue_in_subxact(void (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return edata;
}

/*
 * Whether an error is about the data a statement read (an answer or a
 * status, or what a user's trigger made of it): what carries that data can
 * be set aside.  Anything else (a lock, a cancel, no memory, disk full, a
 * read-only or dropped schema) says nothing about the data, which is then
 * kept and tried again later.
 */
bool
wasend_queue_is_data_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_TO_CATEGORY(ERRCODE_DATA_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_PROGRAM_LIMIT_EXCEEDED) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_SQL_ROUTINE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION);
}

/* the rows whose waiting statuses apply_row_statuses applies */
typedef struct RowStatuses
{
	Datum		ids;
	const char *what;
} RowStatuses;

/*
 * apply_row_statuses' work, for wasend_queue_in_subxact.
 */
static void
row_statuses(void *arg)
{
	RowStatuses *rs = arg;
	Oid			ids_type = INT8ARRAYOID;

	if (SPI_execute_with_args(sql_row_statuses, 1, &ids_type, &rs->ids, NULL,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: applying the statuses of %s failed", rs->what);
}

/*
 * Apply the statuses that wait for the rows ids (an int8[]) (row_statuses),
 * in a subtransaction.  A status whose data cannot be applied keeps
 * waiting, with a WARNING, and the recovery or release that asked goes on,
 * so that no status can keep a row held.  Any other error (a lock, a
 * cancel, no memory) is thrown again once the subtransaction is rolled
 * back: the caller's whole step is then tried again, the statuses with
 * it.  what names those rows in the WARNING.
 */
static void
apply_row_statuses(Datum ids, const char *what)
{
	RowStatuses rs = {ids, what};
	ErrorData  *edata = wasend_queue_in_subxact(row_statuses, &rs);

	if (edata == NULL)
		return;
	if (!wasend_queue_is_data_error(edata->sqlerrcode))
		ReThrowError(edata);
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("wasend: the status webhooks waiting for %s were not applied: %s",
					what, edata->message ? edata->message : "unknown error"),
			 errdetail("They keep waiting in wasend.pending_statuses; the rows go on.")));
	FreeErrorData(edata);
}

/*
 * Settle the rows of senders that are gone (see recover in queue.sql): they
 * wait delay_s seconds for a status that settles them, and the statuses
 * already waiting for them are applied (row_statuses).  Runs in the
 * supervisor, whose plan is not kept: it runs rarely.
 */
int64
wasend_queue_recover(int ntokens, const int64 *tokens, bool fail_uncertain,
					 int max_attempts, int delay_s)
{
	Datum		args[4];
	Oid			types[4] = {INT8ARRAYOID, BOOLOID, INT4OID, INT4OID};
	bool		isnull;
	int64		n;
	Datum		ids;

	args[0] = int8_array(ntokens, tokens);
	args[1] = BoolGetDatum(fail_uncertain);
	args[2] = Int32GetDatum(max_attempts);
	args[3] = Int32GetDatum(delay_s);
	if (SPI_execute_with_args(sql_recover, 4, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: settling orphaned rows failed");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull));
	if (n == 0)
		return 0;
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		return n;
	/* the array lives in SPI's memory, which the next call keeps */
	apply_row_statuses(ids, "the rows of a stopped sender");
	return n;
}

/*
 * Put rows this sender claimed and never sent back (see release), then
 * apply the statuses that waited for them while they were claimed
 * (row_statuses; rare: a release follows a pause or a cancel, so its plan
 * is not kept).
 */
void
wasend_queue_release(int n, const int64 *row_ids, int64 token)
{
	Datum		args[2];

	if (n == 0)
		return;
	args[0] = int8_array(n, row_ids);
	args[1] = Int64GetDatum(token);
	if (SPI_execute_plan(plan_release, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: releasing rows failed");
	apply_row_statuses(args[0], "the rows given back");
}

/*
 * Mark completed those of the given running campaigns that have nothing
 * left to send.  Only the campaigns whose row lock was free are looked at
 * (lock_done); the others are tried again on a later pass.  locked[] (room
 * for n) receives the ids of the campaigns that were locked and looked at,
 * *nlocked their number.  Returns how many were completed.
 */
int
wasend_queue_complete(int n, const int64 *campaign_ids, int64 *locked, int *nlocked_out)
{
	Datum		args[1];
	uint64		i;
	int			nlocked;

	*nlocked_out = 0;
	if (n == 0)
		return 0;
	args[0] = int8_array(n, campaign_ids);
	if (SPI_execute_plan(plan_lock_done, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: locking campaigns failed");
	nlocked = (int) SPI_processed;
	*nlocked_out = nlocked;
	if (nlocked == 0)
		return 0;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		locked[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	args[0] = int8_array(nlocked, locked);
	if (SPI_execute_plan(plan_complete, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wasend: completing campaigns failed");
	return (int) SPI_processed;
}

/*
 * Create an empty result batch with room for cap outcomes.
 */
void
wasend_result_batch_init(ResultBatch *b, int cap, MemoryContext parent)
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
	b->campaign_ids = MemoryContextAlloc(parent, sizeof(int64) * cap);
}

/*
 * Make room for cap outcomes (after wasend.max_inflight was raised).
 */
void
wasend_result_batch_grow(ResultBatch *b, int cap)
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
	b->campaign_ids = repalloc(b->campaign_ids, sizeof(int64) * cap);
	b->cap = cap;
}

/*
 * Forget the outcomes once written.
 */
void
wasend_result_batch_reset(ResultBatch *b)
{
	b->n = 0;
	b->oldest = 0;
	MemoryContextReset(b->cxt);
}

/*
 * Keep only the entries whose keep[i] is true (their texts stay where they
 * are, in the batch's context, which is reset once the batch is empty).
 */
void
wasend_result_batch_keep(ResultBatch *b, const bool *keep)
{
	int			i;
	int			n = 0;

	for (i = 0; i < b->n; i++)
	{
		if (!keep[i])
			continue;
		b->ids[n] = b->ids[i];
		b->http_status[n] = b->http_status[i];
		b->body[n] = b->body[i];
		b->body_null[n] = b->body_null[i];
		b->error[n] = b->error[i];
		b->error_null[n] = b->error_null[i];
		b->error_class[n] = b->error_class[i];
		b->error_class_null[n] = b->error_class_null[i];
		b->at[n] = b->at[i];
		b->campaign_ids[n] = b->campaign_ids[i];
		n++;
	}
	if (n == 0)
		wasend_result_batch_reset(b);
	else
		b->n = n;
}

/*
 * Is this text valid in the database encoding and JSON?  PostgreSQL's
 * JSON parser with no semantic actions; never throws
 * (wasend_json_parse_guarded).
 */
bool
wasend_text_is_json(const char *text, size_t len)
{
	return wasend_json_parse_guarded(text, len, &nullSemAction, false);
}

/*
 * Add one request's outcome.  A response that is not JSON is kept out of
 * the jsonb cast and reported as an error text instead.
 */
void
wasend_result_batch_add(ResultBatch *b, int64 row_id, int64 campaign_id,
				 long http_status, const char *body, const char *error,
				 const char *error_class, TimestampTz at, int64 mono_now)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int			i = b->n;

	Assert(i < b->cap);
	b->ids[i] = Int64GetDatum(row_id);
	b->campaign_ids[i] = campaign_id;
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
		b->oldest = mono_now;
	b->n++;
	MemoryContextSwitchTo(old);
}

/*
 * Rows by status of recent campaigns, for the metrics (see
 * campaign_metrics); at most max campaigns, in a palloc'd array.
 */
int
wasend_queue_campaign_metrics(MetricsCampaign **out, int max)
{
	Datum		args[1];
	Oid			types[1] = {INT4OID};
	MetricsCampaign *mc;
	uint64		i;

	/*
	 * As the senders' claims (worker_session.c): the index of each
	 * campaign's rows rather than a scan of the whole queue per campaign,
	 * which the default random_page_cost prefers while campaigns are few
	 * and large.  For this transaction only.
	 */
	if (SPI_execute("SELECT pg_catalog.set_config('random_page_cost', '1.1', true)", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: setting random_page_cost for the campaign metrics failed");
	args[0] = Int32GetDatum(max);
	if (SPI_execute_with_args(sql_campaign_metrics, 1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: reading campaign metrics failed");
	mc = palloc0(sizeof(MetricsCampaign) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *v;
		int			k;

		mc[i].campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		v = SPI_getvalue(tup, desc, 2);
		if (v != NULL)
		{
			/* cut at a character boundary */
			int			len = pg_mbcliplen(v, strlen(v), sizeof(mc[i].name) - 1);

			memcpy(mc[i].name, v, len);
			mc[i].name[len] = '\0';
		}
		v = SPI_getvalue(tup, desc, 3);
		strlcpy(mc[i].status, v ? v : "", sizeof(mc[i].status));
		for (k = 0; k < WASEND_METRICS_STATUSES; k++)
			mc[i].rows[k] = DatumGetInt64(SPI_getbinval(tup, desc, 4 + k, &isnull));
	}
	*out = mc;
	return (int) SPI_processed;
}

/*
 * Each number of this database and whether it is paused, for the metrics
 * endpoint (see number_metrics); at most max, in a palloc'd array.
 */
int
wasend_queue_number_metrics(MetricsNumberStatus **out, int max)
{
	Datum		args[1];
	Oid			types[1] = {INT4OID};
	MetricsNumberStatus *ns;
	uint64		i;

	args[0] = Int32GetDatum(max);
	if (SPI_execute_with_args(sql_number_metrics, 1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wasend: reading number metrics failed");
	ns = palloc0(sizeof(MetricsNumberStatus) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *v = SPI_getvalue(tup, desc, 1);
		Datum		paused = SPI_getbinval(tup, desc, 2, &isnull);

		strlcpy(ns[i].pnid, v ? v : "", sizeof(ns[i].pnid));
		ns[i].paused = !isnull && DatumGetBool(paused);
	}
	*out = ns;
	return (int) SPI_processed;
}

/*
 * Retention: prune one batch of at most batch rows of campaigns finished
 * more than minutes ago, with ids above after (see prune_batch).  Returns
 * the rows pruned; *last_id is the last one's id (unchanged when none).
 */
int64
wasend_queue_prune_batch(int minutes, int batch, int64 after, int64 *last_id)
{
	Datum		args[3];
	Oid			types[3] = {INT4OID, INT4OID, INT8OID};
	bool		isnull;
	int64		pruned;
	Datum		d;

	args[0] = Int32GetDatum(minutes);
	args[1] = Int32GetDatum(batch);
	args[2] = Int64GetDatum(after);
	if (SPI_execute_with_args(sql_prune_batch, 3, types, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "wasend: pruning a batch of old rows failed");
	pruned = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		*last_id = DatumGetInt64(d);
	return pruned;
}

/*
 * Retention: delete at most batch expired rows of each cache (see
 * expire_caches).  Returns the rows deleted.
 */
int64
wasend_queue_expire_caches(int minutes, int batch)
{
	Datum		args[2];
	Oid			types[2] = {INT4OID, INT4OID};
	bool		isnull;
	int64		n;

	args[0] = Int32GetDatum(minutes);
	args[1] = Int32GetDatum(batch);
	if (SPI_execute_with_args(sql_expire_caches, 2, types, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "wasend: expiring cached rows failed");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return isnull ? 0 : n;
}
