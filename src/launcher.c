/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher background worker: starts and supervises the senders.
 *
 * The launcher is a static background worker registered at server start
 * with BgWorkerStart_RecoveryFinished, so it never runs on a standby and
 * starts by itself when a standby is promoted.  It keeps wasend.workers
 * sender workers alive (starting missing ones, stopping extra ones after a
 * reload) and is woken by the postmaster whenever one of them exits.
 *
 * It also settles the rows that senders leave behind when they die (killed,
 * crashed, or the server stopped in immediate mode): before it starts
 * senders, and whenever one has exited, rows still 'sending' under a claim
 * token that is not a live sender's are marked uncertain and, per
 * wasend.on_uncertain, queued again or failed.  A sender holds at most
 * wasend.max_inflight rows, so that is the most rows one death leaves
 * uncertain.
 *
 * Claim tokens.  Before it starts sender i, the launcher draws a random
 * 63-bit token, stores it in slot i and passes it to the sender, which
 * stamps claimed_by with it.  The set of live senders is the set of tokens
 * in the slots: a sender still starting up already counts, a sender that
 * exited counts until the launcher has seen it exit, and no pid or clock
 * is compared, so a recycled pid or a step of the wall clock cannot make a
 * live sender's rows look orphaned.
 *
 * A launcher can be restarted while its senders run (it was terminated,
 * or an error escaped): it has no handle on them and would start a second
 * set in the same slots.  So a launcher starts by retiring every sender it
 * finds: it clears the slots' tokens (a sender that has not registered yet
 * then leaves at once), asks the registered ones to stop (SIGTERM: they
 * finish what is in flight, record it and give back the rest), waits for
 * them to exit (however long that takes: their rows are theirs until they
 * are gone), and only then settles orphans and starts its own senders.
 *
 * A query cancel (pg_cancel_backend) only interrupts the launcher's own
 * recovery statement, if one runs, and that error is caught and retried
 * like any other; between transactions a cancel is dropped.  (SIGINT keeps
 * PostgreSQL's handler: lock_timeout works by the backend sending itself
 * SIGINT.)  On
 * SIGTERM it exits with code 1, so that the postmaster starts it again
 * unless the server is shutting down (pg_terminate_backend on it used to
 * leave no launcher at all).
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
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "queue.h"
#include "wasend.h"

/* a sender that keeps dying is restarted at most this often, in us */
#define RESTART_DELAY_US	(1000 * 1000)

/* a new launcher waiting for an earlier launcher's senders says so this often, in us */
#define RETIRE_WARN_US		(30 * 1000 * 1000)

/* after a failed recovery pass, try again this soon, in ms */
#define RECOVER_RETRY_MS	1000

static BackgroundWorkerHandle *handles[WASEND_MAX_SENDERS];
static int64 tokens[WASEND_MAX_SENDERS];	/* the token each handle's sender got */
static int64 last_start[WASEND_MAX_SENDERS];
static bool recover_needed = true;

/* the numbers' limits were marked due since this launcher started */
static bool limits_marked = false;

/*
 * A new claim token: random, positive, never 0.
 */
int64
wasend_new_token(void)
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
 * Start sender number i (0-based) as a dynamic background worker whose
 * exit wakes us, with a new claim token in its slot.
 */
static void
start_sender(int i)
{
	BackgroundWorker worker;
	WasendSenderSlot *slot = &WasendState->senders[i];
	int64		token = wasend_new_token();

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "wasend");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wasend_sender_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "wasend sender %d", i + 1);
	snprintf(worker.bgw_type, BGW_MAXLEN, "wasend sender %d", i + 1);
	worker.bgw_main_arg = Int32GetDatum(i);
	memcpy(worker.bgw_extra, &token, sizeof(token));
	worker.bgw_notify_pid = MyProcPid;

	SpinLockAcquire(&WasendState->mutex);
	slot->token = token;
	SpinLockRelease(&WasendState->mutex);
	tokens[i] = token;

	last_start[i] = wasend_mono_us();
	if (!RegisterDynamicBackgroundWorker(&worker, &handles[i]))
	{
		handles[i] = NULL;
		SpinLockAcquire(&WasendState->mutex);
		slot->token = 0;
		SpinLockRelease(&WasendState->mutex);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("wasend could not start sender %d", i + 1),
				 errhint("Raise max_worker_processes: wasend needs one worker for its launcher and one per sender (wasend.workers).")));
	}
}

/*
 * Settle rows held by senders that are no longer running (see header).
 * Returns false, the error logged and the transaction rolled back, when
 * it could not (a lock, a dropped table): the caller tries again later.
 */
static bool
recover_orphans(void)
{
	int64		tokens[WASEND_MAX_SENDERS];
	int			nlive = 0;
	int			i;
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	SpinLockAcquire(&WasendState->mutex);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
		if (WasendState->senders[i].token != 0)
			tokens[nlive++] = WasendState->senders[i].token;
	SpinLockRelease(&WasendState->mutex);

	PG_TRY();
	{
		wasend_begin_transaction("wasend launcher: settling orphaned rows");
		if (queue_extension_present())
		{
			int64		n = queue_recover(nlive, tokens,
										  wasend_on_uncertain == WASEND_UNCERTAIN_FAIL,
										  wasend_max_attempts);

			if (n > 0)
				ereport(LOG,
						(errmsg("wasend settled " INT64_FORMAT " rows left in flight by a stopped sender", n),
						 errdetail("They are marked uncertain and were %s (wasend.on_uncertain; rows that had wasend.max_attempts attempts are failed).",
								   wasend_on_uncertain == WASEND_UNCERTAIN_FAIL ?
								   "failed" : "queued again")));
			/* the senders read every number's tier, quality and health at start */
			if (!limits_marked && wasend_limits_refresh_interval > 0)
				queue_limits_all_due();
		}
		wasend_commit_transaction();
		limits_marked = true;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata = wasend_abort_transaction(cxt);

		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("wasend launcher could not settle orphaned rows: %s", edata->message),
				 errdetail("It tries again in a second.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);
	return ok;
}

/*
 * Stop the senders an earlier launcher left running (see header), and
 * wait until they are gone.
 */
static void
retire_previous_senders(void)
{
	pid_t		pids[WASEND_MAX_SENDERS];
	int			n = 0;
	int			i;
	int64		warn_at = wasend_mono_us() + RETIRE_WARN_US;

	SpinLockAcquire(&WasendState->mutex);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *slot = &WasendState->senders[i];

		slot->token = 0;
		if (slot->pid != 0)
			pids[n++] = slot->pid;
	}
	SpinLockRelease(&WasendState->mutex);
	if (n == 0)
		return;

	ereport(LOG,
			(errmsg("wasend launcher: stopping %d sender(s) of an earlier launcher", n)));
	for (i = 0; i < n; i++)
		kill(pids[i], SIGTERM);

	for (;;)
	{
		int			left = 0;

		SpinLockAcquire(&WasendState->mutex);
		for (i = 0; i < WASEND_MAX_SENDERS; i++)
			if (WasendState->senders[i].pid != 0)
				left++;
		SpinLockRelease(&WasendState->mutex);
		if (left == 0)
			break;
		if (wasend_mono_us() >= warn_at)
		{
			/* their rows are theirs until they are gone: keep waiting */
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("wasend launcher: %d sender(s) of an earlier launcher have not stopped yet", left),
					 errhint("No sender starts until they are gone; see pg_stat_activity for \"wasend sender\" processes.")));
			warn_at = wasend_mono_us() + RETIRE_WARN_US;
		}
		QueryCancelPending = false;	/* see the main loop */
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			proc_exit(1);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Make the running senders match wasend.workers.  Returns the longest the
 * launcher may sleep before it must look again (a sender waiting for its
 * restart delay, a recovery to retry), or -1.
 */
static long
supervise(void)
{
	int			i;
	long		wait_ms = -1;
	int64		now = wasend_mono_us();

	/* first, forget the senders that exited: their rows are orphans now */
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		pid_t		pid;

		if (handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(handles[i]);
			handles[i] = NULL;
			/*
			 * Its token goes (its rows are orphans now).  Its pid and latch
			 * it cleared itself at exit, and they are left alone here: a
			 * slot still held by an earlier launcher's sender must stay
			 * visible.
			 */
			SpinLockAcquire(&WasendState->mutex);
			if (WasendState->senders[i].token == tokens[i])
				WasendState->senders[i].token = 0;
			SpinLockRelease(&WasendState->mutex);
			tokens[i] = 0;
			recover_needed = true;
		}
	}
	if (recover_needed)
	{
		recover_needed = !recover_orphans();
		if (recover_needed)
			wait_ms = RECOVER_RETRY_MS;
	}

	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		bool		alive = handles[i] != NULL;

		if (i < wasend_workers && !alive)
		{
			int64		due = last_start[i] + RESTART_DELAY_US;

			if (last_start[i] == 0 || now >= due)
				start_sender(i);
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
	}
	return wait_ms;
}

/*
 * Clear the launcher's entry in shared memory at exit.
 */
static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&WasendState->mutex);
	if (WasendState->launcher_pid == MyProcPid)
	{
		WasendState->launcher_pid = 0;
		WasendState->launcher_latch = NULL;
	}
	SpinLockRelease(&WasendState->mutex);
}

/*
 * Entry point of the launcher.
 */
void
wasend_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(wasend_database, NULL, 0);
	pgstat_report_appname("wasend launcher");
	wasend_worker_session_setup("1s");

	SpinLockAcquire(&WasendState->mutex);
	WasendState->launcher_pid = MyProcPid;
	WasendState->launcher_latch = MyLatch;
	SpinLockRelease(&WasendState->mutex);
	before_shmem_exit(launcher_detach, 0);

	ereport(LOG,
			(errmsg("wasend launcher started: %d sender(s) in database \"%s\"",
					wasend_workers, wasend_database)));

	/* senders of an earlier launcher of this server must go first */
	retire_previous_senders();

	while (!ShutdownRequestPending)
	{
		long		wait_ms;
		int			rc;

		/*
		 * A cancel (pg_cancel_backend) interrupts the recovery statement if
		 * one runs, whose error is caught; between transactions there is
		 * nothing to cancel, and it is dropped, as PostgresMain does between
		 * commands.  SIGINT itself keeps PostgreSQL's handler, on which
		 * lock_timeout depends.
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		wait_ms = supervise();

		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
					   (wait_ms >= 0 ? WL_TIMEOUT : 0),
					   wait_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
	}

	/* code 1: the postmaster starts a launcher again unless it is stopping */
	proc_exit(1);
}
