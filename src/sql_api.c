/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *		SQL-callable C functions: wake the senders at commit, and report
 *		the senders' statistics from shared memory.
 *
 * Most of wasend's SQL API is written in SQL (sql/wasend--*.sql): it
 * validates input and changes rows.  What needs C is what touches shared
 * memory: waking the senders when a transaction that started, resumed or
 * paused a campaign commits (never before, so senders never look for rows
 * that are not yet visible), and reading the senders' counters.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "pgtime.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "utils/varlena.h"

#include "http_client.h"
#include "graph_api.h"
#include "clock.h"
#include "durability.h"
#include "latency.h"
#include "rate_gate.h"
#include "secrets.h"
#include "settings.h"
#include "shmem.h"
#include "sql_api.h"

PG_FUNCTION_INFO_V1(wasend_wake_at_commit);
PG_FUNCTION_INFO_V1(wasend_worker_stats);
PG_FUNCTION_INFO_V1(wasend_http_post);
PG_FUNCTION_INFO_V1(wasend_announce_extension);
PG_FUNCTION_INFO_V1(wasend_is_zone_name);
PG_FUNCTION_INFO_V1(wasend_check_token_file);
PG_FUNCTION_INFO_V1(wasend_senders_blocked);
PG_FUNCTION_INFO_V1(wasend_log_line);
PG_FUNCTION_INFO_V1(wasend_in_worker);
PG_FUNCTION_INFO_V1(wasend_guard_drop);

/* set by wasend_wake_at_commit(), acted on by the transaction callback */
static bool wake_pending = false;
static bool announce_pending = false;
static bool callback_registered = false;

/*
 * Transaction callback: wake the senders when a transaction that asked for
 * it commits; forget the request if it aborts.
 */
static void
wasend_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
			{
				wake_pending = false;
				wasend_wake_senders();
			}
			if (announce_pending)
			{
				announce_pending = false;
				wasend_extension_created();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_pending = false;
			announce_pending = false;
			break;
		default:
			break;
	}
}

/*
 * Register the transaction callback once per process.
 */
void
wasend_xact_callback_init(void)
{
	if (callback_registered)
		return;
	RegisterXactCallback(wasend_xact_callback, NULL);
	callback_registered = true;
}

/*
 * The version of the extension installed in this database (palloc'd), or
 * NULL: one index lookup in pg_extension.
 */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("wasend"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Is this database named in wasend.databases ('*': every one)?  *bad is
 * set when the setting is not a list of names (nothing is sent then).
 */
static bool
database_listed(const char *name, bool *bad)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		listed = false;

	*bad = false;
	if (wasend_databases == NULL || strcmp(wasend_databases, "*") == 0)
		return true;
	copy = pstrdup(wasend_databases);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		*bad = true;
		return false;
	}
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			listed = true;
	list_free(names);
	pfree(copy);
	return listed;
}

/* a wait for durable claims shorter than this is no stall (a round trip) */
#define DURABLE_WAIT_SHOWN_MS	2000

/*
 * The senders of this database hold rows back because their claims are
 * not durable yet (durability.c), for more than a moment: the reason and
 * a hint, or NULL.
 */
static char *
durable_wait_reason(char **hint)
{
	TimestampTz oldest = 0;
	int			rows = 0;
	int			i;

	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *slot = &wasend_state->senders[i];
		TimestampTz since;

		/* dboid is read without the lock: a stale answer lasts one call */
		if (slot->dboid != MyDatabaseId)
			continue;
		since = (TimestampTz) pg_atomic_read_u64(&slot->awaiting_since);
		if (since == 0)
			continue;
		rows += pg_atomic_read_u32(&slot->awaiting_durable);
		if (oldest == 0 || since < oldest)
			oldest = since;
	}
	if (oldest == 0 ||
		!TimestampDifferenceExceeds(oldest, GetCurrentTimestamp(), DURABLE_WAIT_SHOWN_MS))
		return NULL;
	*hint = pstrdup("A claim must be flushed where a failover can promote before its message is sent: check pg_stat_replication. wasend.durability = local sends without waiting, and a failover may then send messages again unmarked.");
	return psprintf("sending waits for %s since %s (%d held)",
					wasend_durable_describe(), timestamptz_to_str(oldest), rows);
}

/*
 * Why no sender of this database sends, as a reason for a person and a
 * hint (both palloc'd), or NULL when nothing at this level stops them:
 * the library not preloaded, this database left out of wasend.databases,
 * an extension version the library does not run, wasend.workers = 0, or
 * the last start of the database's supervisor or senders lacking a slot
 * while none of its senders runs.  *at_wake says whether
 * wasend._wake_at_commit() warns about it itself.  Reads settings, one
 * catalog row and the shared registry: cheap enough for a view watched
 * every second.  Nothing is said on a standby: the primary sends.
 */
static char *
blocked_reason(char **hint, bool *at_wake)
{
	char	   *dbname;
	char	   *version;
	bool		bad;
	WasendShortage shortage = WASEND_SHORT_NONE;
	bool		running = false;
	int			i;

	*hint = NULL;
	*at_wake = false;
	if (wasend_state == NULL)
	{
		*at_wake = true;
		*hint = pstrdup("Add wasend to shared_preload_libraries and restart the server; nothing is sent until then.");
		return pstrdup("wasend is not preloaded (shared_preload_libraries)");
	}
	if (RecoveryInProgress())
		return NULL;
	dbname = get_database_name(MyDatabaseId);
	if (dbname != NULL && !database_listed(dbname, &bad))
	{
		if (bad)
		{
			*hint = pstrdup("Give * or database names separated by commas, e.g. app,reports, and reload the configuration.");
			return psprintf("wasend.databases is not a list of database names: \"%s\"", wasend_databases);
		}
		*hint = pstrdup("Add this database to wasend.databases (or set it to *) and reload the configuration.");
		return psprintf("database \"%s\" is not in wasend.databases", dbname);
	}
	version = installed_version();
	if (version != NULL && strcmp(version, WASEND_VERSION) != 0)
	{
		*at_wake = true;
		*hint = pstrdup("Run ALTER EXTENSION wasend UPDATE in this database; nothing is sent until then.");
		return psprintf("extension version %s does not match the library %s: run ALTER EXTENSION wasend UPDATE",
						version, WASEND_VERSION);
	}
	if (wasend_workers <= 0)
	{
		*hint = pstrdup("Set wasend.workers to 1 or more and reload the configuration.");
		return pstrdup("no senders: wasend.workers = 0");
	}

	LWLockAcquire(wasend_state->lock, LW_SHARED);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
		if (wasend_state->databases[i].dboid == MyDatabaseId)
		{
			shortage = wasend_state->databases[i].shortage;
			break;
		}
	for (i = 0; i < WASEND_MAX_SENDERS && shortage != WASEND_SHORT_NONE; i++)
		if (wasend_state->senders[i].dboid == MyDatabaseId &&
			wasend_state->senders[i].pid != 0)
			running = true;
	LWLockRelease(wasend_state->lock);
	if (running || shortage == WASEND_SHORT_NONE)
		return durable_wait_reason(hint);
	if (shortage == WASEND_SHORT_SENDER_SLOT)
	{
		*hint = pstrdup("Lower wasend.workers: every database that has the extension runs that many senders.");
		return psprintf("all %d sender slots are taken by other databases", WASEND_MAX_SENDERS);
	}
	*hint = pstrdup("Raise max_worker_processes and restart the server: wasend needs one worker for its launcher, one supervisor per database with the extension, and wasend.workers senders in each.");
	return pstrdup("no free background worker slot (max_worker_processes)");
}

/*
 * wasend._wake_at_commit(): ask for the senders to be woken when the
 * current transaction commits.  Warns, once per transaction, when this
 * library cannot send for this database at all: it was not preloaded, or
 * the database's extension is of another version (an update not run yet:
 * that version's SQL calls this function too, so this is where it hears
 * of it).  Other reasons are said by wasend_start_campaign and shown by
 * wasend.campaign_progress (wasend._stalled_reason).
 */
Datum
wasend_wake_at_commit(PG_FUNCTION_ARGS)
{
	if (!wake_pending)
	{
		char	   *version;

		if (wasend_state == NULL)
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wasend senders are not running"),
					 errdetail("The wasend library was not loaded through shared_preload_libraries."),
					 errhint("Add wasend to shared_preload_libraries and restart the server; nothing is sent until then.")));
		else if (!creating_extension && (version = installed_version()) != NULL &&
				 strcmp(version, WASEND_VERSION) != 0)
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wasend sends nothing in this database: extension version %s does not match the library %s",
							version, WASEND_VERSION),
					 errhint("Run ALTER EXTENSION wasend UPDATE in this database; nothing is sent until then.")));
	}
	wake_pending = true;
	PG_RETURN_VOID();
}

/*
 * wasend._senders_blocked(): (reason, hint, said_at_wake) of
 * blocked_reason(), all NULL when nothing at the database's level stops
 * its senders.  wasend._stalled_reason() adds a campaign's own reasons.
 */
Datum
wasend_senders_blocked(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *hint;
	bool		at_wake;
	char	   *reason;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	reason = blocked_reason(&hint, &at_wake);
	if (reason == NULL)
		nulls[0] = nulls[1] = nulls[2] = true;
	else
	{
		values[0] = CStringGetTextDatum(reason);
		values[1] = CStringGetTextDatum(hint);
		values[2] = BoolGetDatum(at_wake);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * wasend_worker_stats(): one row per running sender, read from shared
 * memory: requests in flight, rows held, rows sent and failed, connections
 * opened versus reused, mean request latency; since 0.5.0 also the rows it
 * means to hold (Little's law, number_queue.c) and the 50th and 99th
 * percentiles of the request latency and of the part wasend added
 * (latency.c); since 0.6.0 the rows held back until their claim is
 * durable, and since when (durability.c).  A declaration of an older
 * version asks for fewer columns:
 * only those are filled.
 */
Datum
wasend_worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

#if PG_VERSION_NUM >= 150000
	InitMaterializedSRF(fcinfo, 0);
#else
	{
		TupleDesc	tupdesc;
		MemoryContext oldcxt;

		if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
			!(rsinfo->allowedModes & SFRM_Materialize))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("materialize mode required, but it is not allowed in this context")));
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		rsinfo->returnMode = SFRM_Materialize;
		rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
		rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
		MemoryContextSwitchTo(oldcxt);
	}
#endif

	if (rsinfo->setDesc->natts != 9 && rsinfo->setDesc->natts != 14 &&
		rsinfo->setDesc->natts != 16)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend_worker_stats() is declared with %d columns, this library returns 9, 14 or 16",
						rsinfo->setDesc->natts),
				 errhint("Run ALTER EXTENSION wasend UPDATE.")));
	if (wasend_state == NULL)
		PG_RETURN_VOID();

	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *s = &wasend_state->senders[i];
		Datum		values[16];
		bool		nulls[16] = {0};
		double		ms;
		int			natts = rsinfo->setDesc->natts;
		pid_t		pid;
		uint64		requests;
		uint64		latency;

		LWLockAcquire(wasend_state->lock, LW_SHARED);
		pid = s->dboid == MyDatabaseId ? s->pid : 0;
		LWLockRelease(wasend_state->lock);
		if (pid == 0)
			continue;	/* no sender, or one of another database */

		requests = pg_atomic_read_u64(&s->requests);
		latency = pg_atomic_read_u64(&s->latency_us_sum);
		values[0] = Int32GetDatum(i + 1);
		values[1] = Int32GetDatum(pid);
		values[2] = Int32GetDatum(pg_atomic_read_u32(&s->inflight));
		values[3] = Int32GetDatum(pg_atomic_read_u32(&s->held));
		values[4] = Int64GetDatum(pg_atomic_read_u64(&s->sent));
		values[5] = Int64GetDatum(pg_atomic_read_u64(&s->failed));
		values[6] = Int64GetDatum(pg_atomic_read_u64(&s->conns_opened));
		values[7] = Int64GetDatum(pg_atomic_read_u64(&s->conns_reused));
		if (requests > 0)
			values[8] = Float8GetDatum((double) latency / requests / 1000.0);
		else
			nulls[8] = true;
		if (natts >= 14)
		{
			values[9] = Int32GetDatum(pg_atomic_read_u32(&s->hold_target));
			nulls[10] = !wasend_latency_percentile(s->latency_hist, 0.50, &ms);
			values[10] = Float8GetDatum(ms);
			nulls[11] = !wasend_latency_percentile(s->latency_hist, 0.99, &ms);
			values[11] = Float8GetDatum(ms);
			nulls[12] = !wasend_latency_percentile(s->added_hist, 0.50, &ms);
			values[12] = Float8GetDatum(ms);
			nulls[13] = !wasend_latency_percentile(s->added_hist, 0.99, &ms);
			values[13] = Float8GetDatum(ms);
		}
		if (natts >= 16)
		{
			uint64		since = pg_atomic_read_u64(&s->awaiting_since);

			values[14] = Int32GetDatum(pg_atomic_read_u32(&s->awaiting_durable));
			values[15] = TimestampTzGetDatum((TimestampTz) since);
			nulls[15] = since == 0;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * The token file of a number, or an ERROR saying why it cannot be used
 * (by path, never content), with a hint for each case.
 */
static const char *
token_from_file(const char *phone_number_id)
{
	WasendTokenStatus status;
	const char *error;
	const char *token = wasend_number_token(phone_number_id, &status, &error);

	if (token != NULL)
		return token;
	if (status == WASEND_TOKEN_NO_DIRECTORY)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("access token must not be null while wasend.token_directory is not set"),
				 errhint("Have a superuser set wasend.token_directory and write the number's token into <directory>/<database>/<phone_number_id>; see README \"Roles and secrets\".")));
	if (status == WASEND_TOKEN_BAD_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s", error),
				 errhint("Token files are named <directory>/<database>/<phone_number_id>: rename the database, or give this number its token another way.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("%s", error),
			 errhint("Write the number's token on one line into that file as the database server's operating system user, readable by that user only (umask 077), and rename it into place.")));
	return NULL;				/* not reached */
}

/*
 * wasend._check_token_file(phone_number_id): an ERROR, with a hint, if
 * the number could not take its token from its file now.  Never returns
 * or shows the token.  The functions that register or resume a number
 * without a token call it (EXECUTE is revoked from PUBLIC).
 */
Datum
wasend_check_token_file(PG_FUNCTION_ARGS)
{
	char	   *pnid = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) token_from_file(pnid);
	PG_RETURN_VOID();
}

/*
 * wasend._http_post(phone_number_id, access_token, rate, body): POST a
 * message body to the number's /messages endpoint from this backend and
 * return (http_status, answer).  A NULL access_token is the number's token
 * file (an ERROR if it cannot be used); the answer then comes back with
 * that token redacted.  Only wasend_test_send calls it (EXECUTE is
 * revoked from PUBLIC).  The request first takes a slot of the number's
 * shared rate gate, as a sender's would, so that a test send never pushes
 * the number over its rate while its campaigns run; it waits for the slot
 * on this backend's latch, and a cancel ends the wait.
 */
Datum
wasend_http_post(PG_FUNCTION_ARGS)
{
	char	   *pnid;
	const char *token;
	int32		rate;
	char	   *body;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	long		http_status = 0;
	char	   *answer = NULL;
	char	   *url;
	int64		key;
	bool		from_file = PG_ARGISNULL(1);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		elog(ERROR, "wasend._http_post: only the access token may be null");
	pnid = text_to_cstring(PG_GETARG_TEXT_PP(0));
	rate = PG_GETARG_INT32(2);
	body = text_to_cstring(PG_GETARG_TEXT_PP(3));
	key = wasend_rate_gate_key(pnid);
	/* a NULL token: the number's token file (checked before any wait) */
	token = from_file ? pstrdup(token_from_file(pnid)) :
		text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (wasend_state != NULL)
	{
		for (;;)
		{
			int64		next;
			int64		now = wasend_mono_us();

			if (wasend_rate_gate_take(key, rate, 1, now, &next, false) == 1)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(1, (next - now + 999) / 1000), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}

	/*
	 * The send counts in the number's window until the request is over
	 * (written, or failed), since curl_easy_perform does not say when it
	 * wrote it; an error counts it as written then too.
	 */
	url = wasend_graph_number_url(pnid, token);
	PG_TRY();
	{
		wasend_http_post_once(url, token, body, &http_status, &answer);
	}
	PG_FINALLY();
	{
		if (wasend_state != NULL)
			wasend_rate_gate_on_wire(key, wasend_mono_us(), true);
	}
	PG_END_TRY();

	/* the caller redacts a token it passed; this one it never saw */
	if (from_file)
		answer = unconstify(char *, wasend_redact_token(answer, token));
	values[0] = Int32GetDatum((int32) http_status);
	values[1] = CStringGetTextDatum(answer);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * wasend._extension_created(): called by the extension's script, so that
 * once CREATE EXTENSION commits, the launcher looks for the new database's
 * extension and starts its senders (launcher.c).
 */
Datum
wasend_announce_extension(PG_FUNCTION_ARGS)
{
	announce_pending = true;
	PG_RETURN_VOID();
}

/*
 * wasend._is_zone_name(zone): is it a zone of the server's time zone
 * database (pg_tzset)?  An abbreviation is not: what "EST" or "SAT" means
 * depends on the session's timezone_abbreviations, which a user sets and
 * the senders do not share, so a zone a user's session accepts could make
 * every claim of the senders fail.
 */
Datum
wasend_is_zone_name(PG_FUNCTION_ARGS)
{
	char	   *zone = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strlen(zone) >= TZ_STRLEN_MAX)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(pg_tzset(zone) != NULL);
}

/*
 * wasend._log_line(line): one line in the server log at LOG level, for
 * the triggers that say when a campaign or a number changes state.  The
 * statement and the PL/pgSQL context are left out: the line stays one
 * line to grep, and a statement that carries a token (wasend_resume_number
 * with a new one) never reaches the log.
 */
Datum
wasend_log_line(PG_FUNCTION_ARGS)
{
	char	   *line = text_to_cstring(PG_GETARG_TEXT_PP(0));

	ereport(LOG,
			(errmsg_internal("%s", line),
			 errhidestmt(true),
			 errhidecontext(true)));
	PG_RETURN_VOID();
}

/*
 * wasend._in_worker(): is this session one of wasend's background workers
 * (a sender, the webhook endpoint)?  Their changes are made by a rule,
 * a person's by the person.
 */
Datum
wasend_in_worker(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(MyBgworkerEntry != NULL &&
				   strncmp(MyBgworkerEntry->bgw_type, "wasend", 6) == 0);
}

/*
 * Does a DROP EXTENSION statement name the extension "wasend"?
 */
static bool
drops_wasend(Node *parsetree)
{
	DropStmt   *stmt;
	ListCell   *lc;

	if (parsetree == NULL || !IsA(parsetree, DropStmt))
		return false;
	stmt = (DropStmt *) parsetree;
	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *name = (Node *) lfirst(lc);

		if (IsA(name, String) && strcmp(strVal(name), "wasend") == 0)
			return true;
	}
	return false;
}

/*
 * Does a DROP OWNED statement name a role that owns the extension (owner)?
 * A role that does not exist is skipped: DROP OWNED says so itself.
 */
static bool
drops_owned_by(Node *parsetree, Oid owner)
{
	ListCell   *lc;

	if (parsetree == NULL || !IsA(parsetree, DropOwnedStmt))
		return false;
	foreach(lc, ((DropOwnedStmt *) parsetree)->roles)
	{
		RoleSpec   *role = (RoleSpec *) lfirst(lc);

		if (get_rolespec_oid(role, true) == owner)
			return true;
	}
	return false;
}

/*
 * The owner of extension extoid, from pg_extension.extowner.
 */
static Oid
extension_owner(Oid extoid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * The rows of table relid that committed before now, counted once the
 * table is locked against every writer (AccessExclusiveLock, which the
 * drop takes anyway), under a snapshot taken after the lock: a row a
 * concurrent transaction committed after the dropping transaction's own
 * snapshot (REPEATABLE READ) is counted too.  An empty table is one read
 * of its heap; the full count is made only when a row exists.  A direct
 * scan of the heap: no permission check, no row security (the drop
 * deletes every row), no SQL.
 */
static int64
count_rows_locked(Oid relid)
{
	Relation	rel;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int64		rows = 0;

	rel = table_open(relid, AccessExclusiveLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		CHECK_FOR_INTERRUPTS();
		rows++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	/* keep the lock until the end of the transaction, as the drop would */
	table_close(rel, NoLock);
	return rows;
}

/*
 * wasend._guard_drop(): the event trigger wasend_drop_guard, at the start
 * of every DROP EXTENSION and DROP OWNED.  Dropping wasend (by name, or
 * as an object its owner owns) deletes wasend.suppressions, and a
 * reinstall would message again everyone who opted out: refuse it while
 * the table holds a row, unless wasend.drop_suppressions is on.  Only a
 * statement that may drop it is checked: by the extension's owner (or a
 * superuser) for DROP EXTENSION, by one who has the owner's privileges
 * for DROP OWNED; anyone else gets PostgreSQL's own permission error,
 * and never locks the table.  The table is the extension's own (its
 * schema, and a member of it), so no object another role made is ever
 * read; nothing is written.
 */
Datum
wasend_guard_drop(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	Node	   *parsetree;
	Oid			extoid;
	Oid			owner;
	Oid			nspoid;
	Oid			relid;
	int64		rows;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "wasend._guard_drop() is called by the event trigger wasend_drop_guard only");
	trigdata = (EventTriggerData *) fcinfo->context;
	parsetree = trigdata->parsetree;
	if (wasend_drop_suppressions ||
		parsetree == NULL ||
		!(IsA(parsetree, DropStmt) || IsA(parsetree, DropOwnedStmt)))
		PG_RETURN_VOID();

	extoid = get_extension_oid("wasend", true);
	if (!OidIsValid(extoid))
		PG_RETURN_VOID();
	owner = extension_owner(extoid);
	if (IsA(parsetree, DropStmt))
	{
		if (!drops_wasend(parsetree))
			PG_RETURN_VOID();
		/* not the owner: PostgreSQL's "must be owner of extension" */
#if PG_VERSION_NUM >= 160000
		if (!object_ownercheck(ExtensionRelationId, extoid, GetUserId()))
			PG_RETURN_VOID();
#else
		/* PostgreSQL 15 has one ownercheck function per catalog */
		if (!pg_extension_ownercheck(extoid, GetUserId()))
			PG_RETURN_VOID();
#endif
	}
	else
	{
		if (!drops_owned_by(parsetree, owner))
			PG_RETURN_VOID();
		/* without the owner's privileges: DROP OWNED's own error */
		if (!has_privs_of_role(GetUserId(), owner))
			PG_RETURN_VOID();
	}

	/* the schema wasend and its table suppressions, both the extension's */
	nspoid = get_namespace_oid("wasend", true);
	if (!OidIsValid(nspoid) ||
		getExtensionOfObject(NamespaceRelationId, nspoid) != extoid)
		PG_RETURN_VOID();
	relid = get_relname_relid("suppressions", nspoid);
	if (!OidIsValid(relid) ||
		getExtensionOfObject(RelationRelationId, relid) != extoid)
		PG_RETURN_VOID();

	rows = count_rows_locked(relid);
	if (rows > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_plural("dropping extension wasend would delete the %lld recipient of wasend.suppressions",
							   "dropping extension wasend would delete the %lld recipients of wasend.suppressions",
							   rows, (long long) rows),
				 errdetail("They opted out or cannot be reached; after a new CREATE EXTENSION wasend, nothing would keep them from being messaged again."),
				 errhint("Export them first (\\copy wasend.suppressions TO 'suppressions.csv' csv header), then drop in a transaction that confirms it: BEGIN; SET LOCAL wasend.drop_suppressions = on; DROP EXTENSION wasend; COMMIT;")));
	PG_RETURN_VOID();
}
