/*-------------------------------------------------------------------------
 *
 * supervisor.c
 *		A database's supervisor: starts and supervises its senders, and
 *		settles the rows that dead senders leave in flight.
 *
 * The constraint: live senders are the claim tokens in the sender slots,
 * never pids or clocks, and a supervisor starts no sender of its own
 * before every sender of an earlier supervisor of its database is gone.
 * The full description: docs/internals/supervisor.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "commands/dbcommands.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/snapmgr.h"
#include "utils/memutils.h"

#include "queue.h"
#include "rate_gate.h"
#include "clock.h"
#include "metrics.h"
#include "settings.h"
#include "shmem.h"
#include "supervisor.h"
#include "worker.h"
#include "worker_session.h"

/* a sender that keeps dying is restarted at most this often, in us */
#define RESTART_DELAY_US	(1000 * 1000)

/* a supervisor waiting for earlier senders says so this often, in us */
#define RETIRE_WARN_US		(30 * 1000 * 1000)

/* how often the supervisor looks whether the extension is still there, in us */
#define PRESENCE_CHECK_US	(5 * 1000 * 1000)

/* how often campaign rows are published for the metrics, in us */
#define METRICS_PUBLISH_US	(5 * 1000 * 1000)

/* how often the supervisor prunes old rows (wasend.retention), in us */
#define PRUNE_INTERVAL_US	(60 * 1000 * 1000)

/* rows per pruning transaction, and transactions per turn of the loop */
#define PRUNE_BATCH			10000
#define PRUNE_BATCHES_PER_TURN	10

/* after a failed recovery pass, try again this soon, in ms */
#define RECOVER_RETRY_MS	1000

/* a sender that cannot start is warned about at most this often, in us */
#define START_WARN_US		((int64) 5 * 60 * 1000 * 1000)

/* per sender of this database (0 .. wasend.workers - 1) */
static BackgroundWorkerHandle *handles[WASEND_MAX_WORKERS];
static int	slot_of[WASEND_MAX_WORKERS];	/* its slot in wasend_state->senders */
static int64 tokens[WASEND_MAX_WORKERS];	/* the token each handle's sender got */
static int64 last_start[WASEND_MAX_WORKERS];
static bool recover_needed = true;

/* this database's slot in wasend_state->databases */
static WasendDbSlot *my_db = NULL;
static char *my_dbname = NULL;

/* what this supervisor last said in my_db->shortage (only it writes it) */
static WasendShortage my_shortage = WASEND_SHORT_NONE;

/* the numbers' limits were marked due since this supervisor started */
static bool limits_marked = false;

/* the last sure answer of extension_here() */
static int	last_dbstate = DBSTATE_SEND;

/* why nothing is sent now (DBSTATE_IDLE), or NULL; in TopMemoryContext */
static char *idle_why = NULL;

static int64 next_presence_check = 0;
static int64 next_metrics_publish = 0;

/* retention: when the next pass is due, where the current one is, its rows */
static int64 next_prune = 0;
static int	prune_retention = 0;
static bool prune_running = false;
static int64 prune_after = 0;
static int64 prune_total = 0;
static int	prune_batches = 0;

/*
 * Senders that could not start, for one cause (every sender slot taken,
 * or max_worker_processes reached): warned about at once, then at most
 * every START_WARN_US with the count of the attempts not warned about,
 * and a LOG line once every sender wanted runs again.
 */
typedef struct StartTrouble
{
	WasendWarnState warned;
	int64		failures;		/* failed starts since the trouble began */
	int64		unsaid;			/* of which not warned about */
} StartTrouble;

static StartTrouble no_sender_slot;
static StartTrouble no_worker_slot;

/*
 * Sender i failed to start for trouble's cause: is a warning due now?  If
 * not, the failure is counted for the next one (and said at DEBUG1).
 */
static bool
start_failed(StartTrouble *trouble, int i)
{
	trouble->failures++;
	if (!wasend_warn_due(&trouble->warned, START_WARN_US))
	{
		trouble->unsaid++;
		elog(DEBUG1, "wasend could not start sender %d in database \"%s\" again (" INT64_FORMAT " failed start(s) not warned about)",
			 i + 1, my_dbname, trouble->unsaid);
		return false;
	}
	return true;
}

/*
 * The detail of a start warning: how many failed starts were not warned
 * about since the last warning (none at the first).  Clears the count.
 */
static char *
unsaid_detail(StartTrouble *trouble)
{
	char	   *detail;

	if (trouble->unsaid == 0)
		return NULL;
	detail = psprintf(INT64_FORMAT " more failed start(s) since the last warning; said at most every %d minutes.",
					  trouble->unsaid, (int) (START_WARN_US / (60 * USECS_PER_SEC)));
	trouble->unsaid = 0;
	return detail;
}

/*
 * Every sender wanted runs: a start trouble is over.  Say so once, with
 * how many starts failed, and let the next one be warned about at once.
 */
static void
start_recovered(StartTrouble *trouble, const char *cause)
{
	if (trouble->failures == 0)
		return;
	ereport(LOG,
			(errmsg("wasend supervisor of \"%s\": every sender runs again, after " INT64_FORMAT " failed start(s) (%s)",
					my_dbname, trouble->failures, cause)));
	trouble->failures = 0;
	trouble->unsaid = 0;
	trouble->warned.said_at = 0;
}

/*
 * A new claim token: random, positive, never 0.
 */
static int64
new_token(void)
{
	uint64		t = 0;

	while (t == 0)
	{
		if (!pg_strong_random(&t, sizeof(t)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random sender token")));
		t &= INT64CONST(0x7FFFFFFFFFFFFFFF);
	}
	return (int64) t;
}

/*
 * Start sender number i (0-based) of this database as a dynamic background
 * worker whose exit wakes us, in a free sender slot, with a new claim token.
 * Returns what it lacked, or WASEND_SHORT_NONE once the sender is started.
 */
static WasendShortage
start_sender(int i)
{
	WasendWorkerSpec spec;
	char		name[BGW_MAXLEN];
	char		type[BGW_MAXLEN];
	char		extra[sizeof(int64) + sizeof(Oid)];
	WasendSenderSlot *slot = NULL;
	int64		token = new_token();
	int			k;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (k = 0; k < WASEND_MAX_SENDERS; k++)
	{
		WasendSenderSlot *s = &wasend_state->senders[k];

		if (s->dboid == InvalidOid && s->token == 0 && s->pid == 0)
		{
			slot = s;
			slot->dboid = MyDatabaseId;
			slot->token = token;
			break;
		}
	}
	LWLockRelease(wasend_state->lock);
	last_start[i] = wasend_mono_us();
	if (slot == NULL)
	{
		if (start_failed(&no_sender_slot, i))
		{
			char	   *detail = unsaid_detail(&no_sender_slot);

			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("wasend could not start sender %d in database \"%s\": all %d sender slots are in use",
							i + 1, my_dbname, WASEND_MAX_SENDERS),
					 detail ? errdetail("%s", detail) : 0,
					 errhint("Lower wasend.workers: every database that has the extension runs that many senders.")));
			if (detail)
				pfree(detail);
		}
		return WASEND_SHORT_SENDER_SLOT;
	}

	snprintf(name, sizeof(name), "wasend sender %d (%s)", i + 1, my_dbname);
	snprintf(type, sizeof(type), "wasend sender %d", i + 1);
	memcpy(extra, &token, sizeof(token));
	memcpy(extra + sizeof(token), &MyDatabaseId, sizeof(Oid));
	memset(&spec, 0, sizeof(spec));
	spec.name = name;
	spec.type = type;
	spec.function = "wasend_sender_main";
	spec.database = true;
	spec.arg = Int32GetDatum(k);
	spec.extra = extra;
	spec.extra_len = sizeof(extra);

	/* reap_senders() frees this slot when the sender is gone */
	slot_of[i] = k;
	tokens[i] = token;
	if (!wasend_register_worker(&spec, &handles[i]))
	{
		tokens[i] = 0;
		LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
		slot->token = 0;
		slot->dboid = InvalidOid;
		LWLockRelease(wasend_state->lock);
		if (start_failed(&no_worker_slot, i))
		{
			char	   *detail = unsaid_detail(&no_worker_slot);

			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("wasend could not start sender %d in database \"%s\"", i + 1, my_dbname),
					 detail ? errdetail("%s", detail) : 0,
					 errhint("Raise max_worker_processes: wasend needs one worker for its launcher, one supervisor and wasend.workers senders per database that has the extension, and one each for the webhook and metrics endpoints when they are on, besides PostgreSQL's own (logical replication launcher, parallel workers).")));
			if (detail)
				pfree(detail);
		}
		return WASEND_SHORT_WORKER;
	}
	return WASEND_SHORT_NONE;
}

/*
 * Say in our database slot what the senders' starts lacked (see
 * WasendDbSlot.shortage): set by a failed start, cleared once every sender
 * runs.
 */
static void
set_shortage(WasendShortage shortage)
{
	if (shortage == my_shortage)
		return;
	my_shortage = shortage;
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (my_db != NULL && my_db->dboid == MyDatabaseId)
		my_db->shortage = shortage;
	LWLockRelease(wasend_state->lock);
}

/*
 * Run work(arg) in a transaction of its own, as the supervisor's every
 * database step does.  Returns NULL once it committed, or the error (the
 * transaction rolled back; the caller reports it and frees it): a lock, a
 * cancel or a dropped table never ends the supervisor.
 */
static ErrorData *
in_transaction(const char *activity, void (*work) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		wasend_begin_transaction(activity);
		work(arg);
		wasend_commit_transaction();
	}
	PG_CATCH();
	{
		edata = wasend_abort_transaction(cxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	return edata;
}

/* What recover_orphans hands its transaction. */
typedef struct RecoverArgs
{
	int64		tokens[WASEND_MAX_SENDERS];
	int			nlive;
} RecoverArgs;

/*
 * recover_orphans' transaction: settle, and the first time, mark every
 * number's limits due.
 */
static void
recover_work(void *arg)
{
	RecoverArgs *ra = (RecoverArgs *) arg;
	int64		n;

	if (!wasend_queue_extension_present())
		return;
	n = wasend_queue_recover(ra->nlive, ra->tokens,
					  wasend_on_uncertain == WASEND_UNCERTAIN_FAIL,
					  wasend_max_attempts, wasend_uncertain_retry_delay_s);
	if (n > 0 && wasend_uncertain_retry_delay_s > 0)
		ereport(LOG,
				(errmsg("wasend settled " INT64_FORMAT " rows left in flight by a stopped sender", n),
				 errdetail("They are marked uncertain and wait %d s for a status from Meta that settles them as sent; then they are %s (wasend.uncertain_retry_delay, wasend.on_uncertain; rows that had wasend.max_attempts attempts are failed).",
						   wasend_uncertain_retry_delay_s,
						   wasend_on_uncertain == WASEND_UNCERTAIN_FAIL ?
						   "failed" : "queued again")));
	else if (n > 0)
		ereport(LOG,
				(errmsg("wasend settled " INT64_FORMAT " rows left in flight by a stopped sender", n),
				 errdetail("They are marked uncertain and were %s (wasend.on_uncertain; rows that had wasend.max_attempts attempts are failed).",
						   wasend_on_uncertain == WASEND_UNCERTAIN_FAIL ?
						   "failed" : "queued again")));
	/* the senders read every number's tier, quality and health at start */
	if (!limits_marked && wasend_limits_refresh_interval > 0)
		wasend_queue_limits_all_due();
}

/*
 * Settle rows held by senders that are no longer running (see header).
 * Returns false, the error logged and the transaction rolled back, when
 * it could not (a lock, a dropped table): the caller tries again later.
 */
static bool
recover_orphans(void)
{
	RecoverArgs ra;
	ErrorData  *edata;
	int			i;

	ra.nlive = 0;
	LWLockAcquire(wasend_state->lock, LW_SHARED);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
		if (wasend_state->senders[i].token != 0)
			ra.tokens[ra.nlive++] = wasend_state->senders[i].token;
	LWLockRelease(wasend_state->lock);

	edata = in_transaction("wasend supervisor: settling orphaned rows", recover_work, &ra);
	pgstat_report_stat(false);
	if (edata != NULL)
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("wasend supervisor could not settle orphaned rows: %s", edata->message),
				 errdetail("It tries again in a second.")));
		FreeErrorData(edata);
		return false;
	}
	limits_marked = true;
	return true;
}

/*
 * Give a sender slot of this database back once its sender is gone.
 * Caller holds wasend_state->lock.
 */
static void
free_slot_locked(WasendSenderSlot *slot)
{
	if (slot->dboid == MyDatabaseId && slot->pid == 0)
	{
		slot->token = 0;
		slot->dboid = InvalidOid;
	}
}

/*
 * Stop the senders of this database that an earlier supervisor left
 * running (see header), and wait until they are gone; their slots are
 * free then.
 */
static void
retire_previous_senders(void)
{
	pid_t		pids[WASEND_MAX_SENDERS];
	int			n = 0;
	int			i;
	int64		warn_at = wasend_mono_us() + RETIRE_WARN_US;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *slot = &wasend_state->senders[i];

		if (slot->dboid != MyDatabaseId)
			continue;
		slot->token = 0;
		if (slot->pid != 0)
			pids[n++] = slot->pid;
		else
			free_slot_locked(slot);
	}
	LWLockRelease(wasend_state->lock);
	if (n == 0)
		return;

	ereport(LOG,
			(errmsg("wasend supervisor of \"%s\": stopping %d sender(s) of an earlier supervisor",
					my_dbname, n)));
	for (i = 0; i < n; i++)
		kill(pids[i], SIGTERM);

	for (;;)
	{
		int			left = 0;

		LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
		for (i = 0; i < WASEND_MAX_SENDERS; i++)
		{
			WasendSenderSlot *slot = &wasend_state->senders[i];

			if (slot->dboid != MyDatabaseId)
				continue;
			if (slot->pid != 0)
				left++;
			else
				free_slot_locked(slot);
		}
		LWLockRelease(wasend_state->lock);
		if (left == 0)
			break;
		if (wasend_mono_us() >= warn_at)
		{
			/* their rows are theirs until they are gone: keep waiting */
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("wasend supervisor of \"%s\": %d sender(s) of an earlier supervisor have not stopped yet",
							my_dbname, left),
					 errhint("No sender starts until they are gone; see pg_stat_activity for \"wasend sender\" processes.")));
			warn_at = wasend_mono_us() + RETIRE_WARN_US;
		}
		(void) wasend_worker_interrupts();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Forget the senders that exited: their tokens go (their rows are orphans
 * now, settled by the next recovery pass) and their slots are free again.
 * Returns how many are still running.
 */
static int
reap_senders(void)
{
	int			i;
	int			running = 0;

	for (i = 0; i < WASEND_MAX_WORKERS; i++)
	{
		pid_t		pid;

		if (handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			WasendSenderSlot *slot = &wasend_state->senders[slot_of[i]];

			pfree(handles[i]);
			handles[i] = NULL;
			LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
			if (slot->token == tokens[i])
				slot->token = 0;
			free_slot_locked(slot);
			LWLockRelease(wasend_state->lock);
			tokens[i] = 0;
			recover_needed = true;
		}
		else
			running++;
	}
	return running;
}

/*
 * Make the running senders match wasend.workers.  Returns the longest the
 * supervisor may sleep before it must look again (a sender waiting for its
 * restart delay, a recovery to retry), or -1.
 */
static long
supervise(void)
{
	int			i;
	long		wait_ms = -1;
	int64		now = wasend_mono_us();
	WasendShortage shortage = WASEND_SHORT_NONE;
	bool		all_run = true;

	reap_senders();
	if (recover_needed)
	{
		recover_needed = !recover_orphans();
		if (recover_needed)
			wait_ms = RECOVER_RETRY_MS;
	}

	for (i = 0; i < WASEND_MAX_WORKERS; i++)
	{
		bool		alive = handles[i] != NULL;

		if (i < wasend_workers && !alive)
		{
			int64		due = last_start[i] + RESTART_DELAY_US;

			if (last_start[i] == 0 || now >= due)
			{
				WasendShortage s = start_sender(i);

				if (s != WASEND_SHORT_NONE)
					shortage = s;
			}
			else
			{
				long		ms = (long) ((due - now) / 1000) + 1;

				if (wait_ms < 0 || ms < wait_ms)
					wait_ms = ms;
			}
		}
		else if (i >= wasend_workers && alive)
		{
			/* the handle stays, so that its rows are settled once it exits */
			TerminateBackgroundWorker(handles[i]);
		}
		if (i < wasend_workers && handles[i] == NULL)
			all_run = false;
	}
	/* a failed start says so; only every sender running clears it */
	if (shortage != WASEND_SHORT_NONE)
		set_shortage(shortage);
	else if (all_run)
	{
		set_shortage(WASEND_SHORT_NONE);
		start_recovered(&no_sender_slot, "sender slots were all in use");
		start_recovered(&no_worker_slot, "max_worker_processes was reached");
	}
	return wait_ms;
}

/*
 * Stop every sender this supervisor started and wait until they are gone
 * (they finish what is in flight and give back the rest), then settle
 * what they left.
 */
static void
stop_senders(void)
{
	int			i;

	for (i = 0; i < WASEND_MAX_WORKERS; i++)
		if (handles[i] != NULL)
			TerminateBackgroundWorker(handles[i]);
	while (reap_senders() > 0)
	{
		(void) wasend_worker_interrupts();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	if (recover_needed)
		(void) recover_orphans();
}

/* What extension_here hands its transaction, and gets back. */
typedef struct StateArgs
{
	int			state;
	char	   *why;
	MemoryContext cxt;
} StateArgs;

/*
 * extension_here's transaction.
 */
static void
state_work(void *arg)
{
	StateArgs  *sa = (StateArgs *) arg;
	char	   *reason = NULL;

	sa->state = wasend_queue_database_state(MyDatabaseId, &reason);
	if (reason != NULL)
		sa->why = MemoryContextStrdup(sa->cxt, reason);
}

/*
 * What the extension in this database allows (see queue_database_state):
 * DBSTATE_ABSENT, DBSTATE_SEND, or DBSTATE_IDLE with *why set (palloc'd).
 * An error (a lock, a cancel) keeps the last answer: only a sure answer
 * changes what the senders do.
 */
static int
extension_here(char **why)
{
	StateArgs	sa;
	ErrorData  *edata;

	sa.state = last_dbstate;
	sa.why = NULL;
	sa.cxt = CurrentMemoryContext;
	edata = in_transaction("wasend supervisor: looking for the extension", state_work, &sa);
	if (edata != NULL)
	{
		FreeErrorData(edata);
		sa.state = last_dbstate;	/* not a sure answer: keep the last one */
		sa.why = NULL;
	}
	last_dbstate = sa.state;
	*why = sa.why;
	return sa.state;
}

/*
 * publish_campaign_metrics' transaction.
 */
static void
publish_work(void *arg)
{
	MetricsCampaign *mc;
	MetricsNumberStatus *ns;
	int			n;

	n = wasend_queue_campaign_metrics(&mc, 512);
	wasend_metrics_publish_campaigns(MyDatabaseId, my_dbname, mc, n);
	n = wasend_queue_number_metrics(&ns, WASEND_GATE_SLOTS);
	wasend_metrics_publish_numbers(MyDatabaseId, my_dbname, ns, n);
}

/*
 * Publish each unfinished (or recently finished) campaign's rows by status,
 * and each number's status, for the metrics endpoint.  Errors are logged and skipped: metrics never
 * stop the supervisor.
 */
static void
publish_campaign_metrics(void)
{
	ErrorData  *edata = in_transaction("wasend supervisor: campaign metrics",
									   publish_work, NULL);

	if (edata != NULL)
	{
		ereport(LOG,
				(errmsg("wasend supervisor of \"%s\" could not read campaign metrics: %s",
						my_dbname, edata->message)));
		FreeErrorData(edata);
	}
}

/* What prune_work hands its transaction and gets back. */
typedef struct PruneArgs
{
	int			minutes;
	int64		after;
	int64		pruned;
} PruneArgs;

/*
 * prune_work's transaction: one batch of rows; the last batch of a pass
 * (fewer rows than a full one) also expires a batch of each cache.
 */
static void
prune_work(void *arg)
{
	PruneArgs  *pa = (PruneArgs *) arg;

	pa->pruned = wasend_queue_prune_batch(pa->minutes, PRUNE_BATCH, pa->after, &pa->after);
	if (pa->pruned < PRUNE_BATCH)
		(void) wasend_queue_expire_caches(pa->minutes, PRUNE_BATCH);
}

/*
 * Retention: delete the rows of campaigns that finished more than
 * wasend.retention ago (and expired cache rows), a batch per transaction,
 * at most PRUNE_BATCHES_PER_TURN batches per turn of the supervisor's
 * loop so that it keeps supervising its senders.  Returns true while the
 * pass has more to do.  The pass that deleted rows ends with one LOG
 * line.  Errors are logged and the pass ends: it runs again later.
 */
static bool
prune_old_rows(void)
{
	int			i;

	if (!prune_running)
	{
		prune_running = true;
		prune_retention = wasend_retention_min;
		prune_after = 0;
		prune_total = 0;
		prune_batches = 0;
	}
	for (i = 0; i < PRUNE_BATCHES_PER_TURN; i++)
	{
		PruneArgs	pa;
		ErrorData  *edata;

		pa.minutes = prune_retention;
		pa.after = prune_after;
		pa.pruned = 0;
		edata = in_transaction("wasend supervisor: retention", prune_work, &pa);
		if (edata != NULL)
		{
			ereport(LOG,
					(errmsg("wasend supervisor of \"%s\" could not prune old rows: %s",
							my_dbname, edata->message)));
			FreeErrorData(edata);
			break;
		}
		prune_after = pa.after;
		prune_total += pa.pruned;
		prune_batches++;
		if (pa.pruned < PRUNE_BATCH)
			break;
		if (i == PRUNE_BATCHES_PER_TURN - 1)
			return true;
	}
	if (prune_total > 0)
		ereport(LOG,
				(errmsg_plural("wasend supervisor of \"%s\" pruned " INT64_FORMAT " rows of campaigns finished more than %d minutes ago (wasend.retention), in %d transaction",
							   "wasend supervisor of \"%s\" pruned " INT64_FORMAT " rows of campaigns finished more than %d minutes ago (wasend.retention), in %d transactions",
							   prune_batches,
							   my_dbname, prune_total, prune_retention, prune_batches),
				 errdetail("Their figures are kept in wasend.campaign_summaries.")));
	prune_running = false;
	return false;
}

/*
 * Clear the supervisor's entry in its database slot at exit, and wake the
 * launcher, which starts a new supervisor if the database still needs one.
 */
static void
supervisor_detach(int code, Datum arg)
{
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (my_db != NULL && my_db->pid == MyProcPid)
	{
		my_db->pid = 0;
		my_db->latch = NULL;
	}
	LWLockRelease(wasend_state->lock);
	wasend_wake_launcher();
}

/*
 * Say in our database slot what we found, under wasend_state->lock; copy:
 * the database is a copy that may not send (why is WASEND_WHY_COPY), which
 * the launcher's census leaves out.  Wakes the launcher when that changed,
 * so that its census follows.
 */
static void
set_db_state(WasendDbState state, bool copy)
{
	bool		changed = false;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (my_db != NULL && my_db->dboid == MyDatabaseId)
	{
		my_db->state = state;
		changed = my_db->copy != copy;
		my_db->copy = copy;
	}
	LWLockRelease(wasend_state->lock);
	if (changed)
		wasend_wake_launcher();
}

/*
 * Is this what extension_here says of a copy that may not send?
 */
static bool
is_copy(int st, const char *why)
{
	return st == DBSTATE_IDLE && why != NULL && strcmp(why, WASEND_WHY_COPY) == 0;
}

/*
 * Take our database slot (main_arg of the launcher: its index), or leave
 * at once if the launcher gave it to another database meanwhile, or the
 * database is being dropped, renamed or copied (launcher.c).
 */
static void
attach_db_slot(int idx, Oid dboid)
{
	my_db = &wasend_state->databases[idx];
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (my_db->dboid != dboid || my_db->pid != 0 ||
		wasend_mono_us() < my_db->hold_until)
	{
		LWLockRelease(wasend_state->lock);
		my_db = NULL;
		proc_exit(0);
	}
	my_db->pid = MyProcPid;
	my_db->latch = MyLatch;
	my_db->shortage = WASEND_SHORT_NONE;	/* the launcher found a worker */
	LWLockRelease(wasend_state->lock);
	before_shmem_exit(supervisor_detach, 0);
}

/*
 * Look whether the extension is still there and allows sending: once it
 * is dropped, stop the senders and leave (RUNNING -> ABSENT); while it
 * does not allow sending, stop them and say why, once per reason.
 */
static void
check_presence(void)
{
	char	   *why;
	int			st = extension_here(&why);

	if (st == DBSTATE_ABSENT)
	{
		ereport(LOG,
				(errmsg("wasend supervisor: the extension was dropped from database \"%s\", its senders stop",
						my_dbname)));
		stop_senders();
		set_db_state(WASEND_DB_ABSENT, false);
		proc_exit(0);
	}
	/*
	 * An error keeps the last state without its reason: no sure answer, so
	 * nothing changes (and there is no reason to compare or say).
	 */
	if (st == DBSTATE_IDLE && why == NULL)
		return;
	set_db_state(WASEND_DB_RUNNING, is_copy(st, why));
	if (st == DBSTATE_IDLE && (idle_why == NULL || strcmp(why, idle_why) != 0))
	{
		/* say it once, and again when the reason changes */
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend sends nothing in database \"%s\": %s", my_dbname, why),
				 errhint("%s", strstr(why, "version") ?
						 "Run ALTER EXTENSION wasend UPDATE in that database." :
						 "If this database is meant to send (its queue is its own), run SELECT wasend.wasend_enable_sending() in it as a wasend_admin.")));
		stop_senders();
	}
	if (st == DBSTATE_SEND && idle_why != NULL)
		ereport(LOG,
				(errmsg("wasend supervisor: database \"%s\" sends again", my_dbname)));
	if (idle_why != NULL)
		pfree(idle_why);
	idle_why = (st == DBSTATE_IDLE) ? MemoryContextStrdup(TopMemoryContext, why) : NULL;
}

/*
 * Entry point of a database's supervisor; main_arg is the index of its
 * database slot.
 */
void
wasend_supervisor_main(Datum main_arg)
{
	Oid			dboid;
	int			first_state;
	char	   *first_why;

	wasend_worker_signals();

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	attach_db_slot(DatumGetInt32(main_arg), dboid);

	wasend_worker_connect(NULL, dboid, "1s", false);
	pgstat_report_appname("wasend supervisor");

	StartTransactionCommand();
	my_dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	/* PROBING -> ABSENT or RUNNING */
	first_state = extension_here(&first_why);
	if (first_state == DBSTATE_ABSENT)
	{
		set_db_state(WASEND_DB_ABSENT, false);
		proc_exit(0);
	}
	set_db_state(WASEND_DB_RUNNING, is_copy(first_state, first_why));
	wasend_wake_launcher();		/* its census now counts this database */

	ereport(LOG,
			(errmsg("wasend supervisor started: %d sender(s) in database \"%s\"",
					wasend_workers, my_dbname)));

	/* senders of an earlier supervisor of this database must go first */
	retire_previous_senders();

	while (!ShutdownRequestPending)
	{
		long		wait_ms;
		int			rc;
		int64		now;

		wasend_worker_interrupts();

		now = wasend_mono_us();
		if (now >= next_presence_check)
		{
			next_presence_check = now + PRESENCE_CHECK_US;
			check_presence();
		}
		if (wasend_metrics_port > 0 && now >= next_metrics_publish)
		{
			next_metrics_publish = now + METRICS_PUBLISH_US;
			publish_campaign_metrics();
		}

		wait_ms = idle_why != NULL ? -1 : supervise();
		if (wait_ms < 0 || wait_ms > PRESENCE_CHECK_US / 1000)
			wait_ms = PRESENCE_CHECK_US / 1000;

		/*
		 * Retention, in a database that sends: every PRUNE_INTERVAL_US, and
		 * at once when wasend.retention changed; a pass with more to do
		 * goes on at the next turn.
		 */
		if (wasend_retention_min != prune_retention && !prune_running)
			next_prune = 0;
		if (idle_why == NULL && wasend_retention_min > 0 &&
			(prune_running || wasend_mono_us() >= next_prune))
		{
			if (prune_old_rows())
				wait_ms = 0;
			else
				next_prune = wasend_mono_us() + PRUNE_INTERVAL_US;
		}

		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_TIMEOUT,
					   wait_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
	}

	/* SIGTERM: the senders go first, then we */
	stop_senders();
	proc_exit(0);
}
