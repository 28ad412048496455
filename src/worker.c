/*-------------------------------------------------------------------------
 *
 * worker.c
 *		What every wasend background worker does the same way: its
 *		registration, its signals and interrupt point, and the bracket of
 *		its own transactions.
 *
 * No error inside a worker's transaction ends the worker: the caller
 * catches it, wasend_abort_transaction() rolls back and hands it over.
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
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

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
 * Register a static background worker of this library that starts once
 * recovery has finished (never on a standby, by itself after a promotion)
 * and is restarted 5 s after it exits abnormally.
 */
void
wasend_register_static_worker(const char *name, const char *function)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "wasend");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	RegisterBackgroundWorker(&worker);
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
