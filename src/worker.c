/*-------------------------------------------------------------------------
 *
 * worker.c
 *		What every wasend background worker does the same way: its
 *		registration, its signals and interrupt point, its open-file limit,
 *		its warnings that must not repeat at every pass, and the bracket of
 *		its own transactions.
 *
 * No error inside a worker's transaction ends the worker: the caller
 * catches it, wasend_abort_transaction() rolls back and hands it over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "clock.h"
#include "worker.h"

/*
 * Start one of a worker's own transactions, with SPI connected and a
 * snapshot, and say what it does in pg_stat_activity.
 */
void
wasend_begin_transaction(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * Commit what wasend_begin_transaction started.
 */
void
wasend_commit_transaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * In the PG_CATCH block around a worker's own transaction: take the error
 * out of the error state, roll the transaction back, and return the error
 * (allocated in cxt) for the caller to report as it sees fit.  The worker
 * then goes on: no error of a worker's transaction ends the worker.
 */
ErrorData *
wasend_abort_transaction(MemoryContext cxt)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	RESUME_INTERRUPTS();
	if (edata->message == NULL)
		edata->message = pstrdup("unknown error");
	return edata;
}

/*
 * Register a background worker of this library.  With handle NULL it is a
 * static worker (from _PG_init) that starts once recovery has finished
 * (never on a standby, by itself after a promotion) and is restarted 5 s
 * after it exits abnormally.  Otherwise it is a dynamic worker of the
 * calling worker, never restarted, whose exit wakes the caller; returns
 * false (and *handle NULL) when none could be registered
 * (max_worker_processes).
 */
bool
wasend_register_worker(const WasendWorkerSpec *spec,
					   BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	if (spec->database)
		worker.bgw_flags |= BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "wasend");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", spec->function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", spec->name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", spec->type ? spec->type : spec->name);
	worker.bgw_main_arg = spec->arg;
	Assert(spec->extra_len <= BGW_EXTRALEN);
	if (spec->extra != NULL)
		memcpy(worker.bgw_extra, spec->extra, spec->extra_len);

	if (handle == NULL)
	{
		worker.bgw_restart_time = 5;
		RegisterBackgroundWorker(&worker);
		return true;
	}
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	if (RegisterDynamicBackgroundWorker(&worker, handle))
		return true;
	*handle = NULL;
	return false;
}

/*
 * Raise the soft limit on open files towards the hard one, to files at
 * most: room for an endpoint's sockets beside the files PostgreSQL itself
 * keeps open.  Only the webhook worker needs it (its log line says so).
 */
void
wasend_worker_raise_file_limit(int files)
{
	struct rlimit rl;
	rlim_t		want = (rlim_t) files;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want) ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		elog(LOG, "wasend webhook: could not raise the open files limit: %m");
}

/*
 * Is a throttled warning due: never said, or said interval_us ago or
 * more?  If so, it counts as said now.
 */
bool
wasend_warn_due(WasendWarnState *w, int64 interval_us)
{
	int64		now = wasend_mono_us();

	if (w->said_at != 0 && now < w->said_at + interval_us)
		return false;
	w->said_at = now;
	return true;
}

/*
 * Is text a warning not said last time (the first, or a changed one)?  If
 * so, it counts as said.
 */
bool
wasend_warn_changed(WasendWarnState *w, const char *text)
{
	if (w->said != NULL && strcmp(w->said, text) == 0)
		return false;
	if (w->said != NULL)
		pfree(w->said);
	w->said = MemoryContextStrdup(TopMemoryContext, text);
	return true;
}

/*
 * What was warned about is fixed: the same warning is due again if it
 * comes back.
 */
void
wasend_warn_clear(WasendWarnState *w)
{
	if (w->said != NULL)
		pfree(w->said);
	w->said = NULL;
}

/*
 * Set up a worker's signals: PostgreSQL's stock handlers (SIGHUP sets
 * ConfigReloadPending, SIGTERM ShutdownRequestPending, and each sets the
 * latch), then unblock them.  SIGINT keeps PostgreSQL's handler, on which
 * lock_timeout and statement_timeout depend.
 */
void
wasend_worker_signals(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
}

/*
 * A wait event set for the whole life of a worker's main loop, with room
 * for nevents events, allocated in TopMemoryContext.  Until PostgreSQL
 * 16 CreateWaitEventSet took the memory context to allocate in; 17 made
 * it take the resource owner that tracks the set (and always allocates in
 * TopMemoryContext).  NULL there means session lifetime: the set must not
 * be released with the owner of whatever transaction happens to be
 * current when it is made.
 */
WaitEventSet *
wasend_worker_wait_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

/*
 * A worker's interrupt point, between two of its own transactions.  A
 * cancel (pg_cancel_backend) has nothing to cancel there: it is dropped,
 * as PostgresMain does between commands, instead of ending the worker.
 * Other interrupts are served; after a SIGHUP the configuration is
 * reloaded.  Returns true when it was, for the caller to apply it.
 */
bool
wasend_worker_interrupts(void)
{
	QueryCancelPending = false;
	CHECK_FOR_INTERRUPTS();
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}
