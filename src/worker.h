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

#include "utils/elog.h"
#include "utils/palloc.h"

extern void wasend_register_static_worker(const char *name, const char *function);
extern void wasend_worker_signals(void);
extern bool wasend_worker_interrupts(void);
extern void wasend_begin_transaction(const char *activity);
extern void wasend_commit_transaction(void);
extern ErrorData *wasend_abort_transaction(MemoryContext cxt);

#endif							/* WASEND_WORKER_H */
