/*-------------------------------------------------------------------------
 *
 * worker.h
 *		What every wasend background worker does the same way; worker.c
 *		owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_WORKER_H
#define WASEND_WORKER_H

#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/elog.h"
#include "utils/palloc.h"

/* A worker of this library to register: see wasend_register_worker(). */
typedef struct WasendWorkerSpec
{
	const char *name;			/* bgw_name: "wasend sender 1 (app)" */
	const char *type;			/* bgw_type: "wasend sender 1" */
	const char *function;		/* its entry point in this library */
	bool		database;		/* it connects to a database */
	Datum		arg;			/* bgw_main_arg */
	const void *extra;			/* copied into bgw_extra, or NULL */
	Size		extra_len;
} WasendWorkerSpec;

/*
 * A warning that is not to be repeated at every pass: said again only
 * after an interval (wasend_warn_due) or when its text changes
 * (wasend_warn_changed).  Zeroed: nothing said yet.  Process-local.
 */
typedef struct WasendWarnState
{
	int64		said_at;		/* wasend_mono_us() when last said, 0: never */
	char	   *said;			/* what was said last, in TopMemoryContext */
} WasendWarnState;

extern bool wasend_register_worker(const WasendWorkerSpec *spec,
								   BackgroundWorkerHandle **handle);
extern void wasend_worker_signals(void);
extern bool wasend_worker_interrupts(void);
extern void wasend_worker_raise_file_limit(int files);
extern WaitEventSet *wasend_worker_wait_set(int nevents);
extern bool wasend_warn_due(WasendWarnState *w, int64 interval_us);
extern bool wasend_warn_changed(WasendWarnState *w, const char *text);
extern void wasend_warn_clear(WasendWarnState *w);
extern void wasend_begin_transaction(const char *activity);
extern void wasend_commit_transaction(void);
extern ErrorData *wasend_abort_transaction(MemoryContext cxt);

#endif							/* WASEND_WORKER_H */
