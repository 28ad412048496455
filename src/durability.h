/*-------------------------------------------------------------------------
 *
 * durability.h
 *		Where a commit of this server is safe from a failover, and a
 *		waiter's state while it is not yet; durability.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_DURABILITY_H
#define WASEND_DURABILITY_H

#include "access/xlogdefs.h"

/*
 * One process's wait for its commits to become durable: what it waits for,
 * what it last read, and the back-off of its polls.  Zeroed: nothing
 * waits.  Process-local; its owner passes it.
 */
typedef struct WasendDurableWait
{
	XLogRecPtr	want;			/* the newest commit something waits on */
	XLogRecPtr	upto;			/* durable position as last read */
	int64		since;			/* monotonic us since the wait began; 0 */
	int64		poll_us;		/* the next poll's delay (back-off) */
	bool		logged;			/* the wait was logged */
} WasendDurableWait;

extern XLogRecPtr wasend_last_commit_lsn(void);
extern XLogRecPtr wasend_durable_upto(void);
extern void wasend_durable_note(WasendDurableWait *dw, XLogRecPtr lsn);
extern XLogRecPtr wasend_durable_position(WasendDurableWait *dw);
extern void wasend_durable_settle(WasendDurableWait *dw, bool waiting,
								  int64 now, const char *who);
extern long wasend_durable_sleep_ms(const WasendDurableWait *dw);
extern const char *wasend_durable_describe(void);

#endif							/* WASEND_DURABILITY_H */
