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
 * senders, and whenever one has exited, rows still 'sending' under a pid
 * that is not a live sender are marked uncertain and, per
 * wasend.on_uncertain, queued again or failed.  A sender holds at most
 * wasend.max_inflight rows, so that is the most rows one death leaves
 * uncertain.
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
#include "utils/timestamp.h"

#include "queue.h"
#include "wasend.h"

/* a sender that keeps dying is restarted at most this often, in ms */
#define RESTART_DELAY_MS	1000

static BackgroundWorkerHandle *handles[WASEND_MAX_SENDERS];
static TimestampTz last_start[WASEND_MAX_SENDERS];

/*
 * Start sender number i (0-based) as a dynamic background worker whose
 * exit wakes us.
 */
static void
start_sender(int i)
{
	BackgroundWorker worker;

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
	worker.bgw_notify_pid = MyProcPid;

	last_start[i] = GetCurrentTimestamp();
	if (!RegisterDynamicBackgroundWorker(&worker, &handles[i]))
	{
		handles[i] = NULL;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("wasend could not start sender %d", i + 1),
				 errhint("Raise max_worker_processes: wasend needs one worker for its launcher and one per sender (wasend.workers).")));
	}
}

/*
 * Settle rows held by senders that are no longer running (see header).
 */
static void
recover_orphans(void)
{
	int32		pids[WASEND_MAX_SENDERS];
	TimestampTz started[WASEND_MAX_SENDERS];
	int			nlive = 0;
	int			i;
	TimestampTz pass_start = GetCurrentTimestamp();

	SpinLockAcquire(&WasendState->mutex);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
		if (WasendState->senders[i].pid != 0)
		{
			pids[nlive] = WasendState->senders[i].pid;
			started[nlive] = WasendState->senders[i].started_at;
			nlive++;
		}
	SpinLockRelease(&WasendState->mutex);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "wasend launcher: settling orphaned rows");
	if (queue_extension_present())
	{
		int64		n = queue_recover(nlive, pids, started,
									  wasend_on_uncertain == WASEND_UNCERTAIN_FAIL,
									  pass_start);

		if (n > 0)
			ereport(LOG,
					(errmsg("wasend settled " INT64_FORMAT " rows left in flight by a stopped sender", n),
					 errdetail("They are marked uncertain and were %s (wasend.on_uncertain).",
							   wasend_on_uncertain == WASEND_UNCERTAIN_FAIL ?
							   "failed" : "queued again")));
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Make the running senders match wasend.workers.  Returns the longest the
 * launcher may sleep before it must look again (a sender waiting for its
 * restart delay), or -1.
 */
static long
supervise(void)
{
	int			i;
	long		wait_ms = -1;
	TimestampTz now = GetCurrentTimestamp();
	bool		some_stopped = false;

	/* first, settle what senders that exited left behind */
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		pid_t		pid;

		if (handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(handles[i]);
			handles[i] = NULL;
			some_stopped = true;
		}
	}
	if (some_stopped)
		recover_orphans();

	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		pid_t		pid;
		bool		alive = handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED;

		if (i < wasend_workers && !alive)
		{
			TimestampTz due = TimestampTzPlusMilliseconds(last_start[i],
														  RESTART_DELAY_MS);

			if (now >= due)
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
	WasendState->launcher_pid = 0;
	WasendState->launcher_latch = NULL;
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

	SpinLockAcquire(&WasendState->mutex);
	WasendState->launcher_pid = MyProcPid;
	WasendState->launcher_latch = MyLatch;
	SpinLockRelease(&WasendState->mutex);
	before_shmem_exit(launcher_detach, 0);

	elog(LOG, "wasend launcher started: %d sender(s) in database \"%s\"",
		 wasend_workers, wasend_database);

	/* after a crash or an immediate shutdown, no sender of before is alive */
	recover_orphans();

	while (!ShutdownRequestPending)
	{
		long		wait_ms;
		int			rc;

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

	proc_exit(0);
}
