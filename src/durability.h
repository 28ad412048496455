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
#include "datatype/timestamp.h"

/* commits remembered for the age of a wait (older ones are merged) */
#define WASEND_DURABLE_RING		64

/* One commit something waits on: where it ends and when it was made. */
typedef struct WasendDurableCommit
{
	XLogRecPtr	lsn;
	int64		at_us;			/* monotonic */
	TimestampTz at;				/* wall clock, for users */
} WasendDurableCommit;

/*
 * One process's wait for its commits to become durable: the commits not
 * yet known durable (oldest first), the durable position last read, and
 * the pace of its polls.  Zeroed: nothing waits.  Process-local; its
 * owner passes it.
 */
typedef struct WasendDurableWait
{
	WasendDurableCommit ring[WASEND_DURABLE_RING];
	int			head;
	int			count;
	XLogRecPtr	upto;			/* durable position last read */
	XLogRecPtr	newest;			/* the newest commit ever noted */
	int64		next_poll;		/* monotonic us: no read before */
	int64		poll_us;		/* the back-off of the reads */
	bool		logged;			/* this wait was logged */
} WasendDurableWait;

extern XLogRecPtr wasend_last_commit_lsn(void);
extern XLogRecPtr wasend_commit_horizon(void);
extern XLogRecPtr wasend_durable_upto(void);
extern void wasend_durable_note(WasendDurableWait *dw, XLogRecPtr lsn);
extern void wasend_durable_forget(WasendDurableWait *dw);
extern XLogRecPtr wasend_durable_position(WasendDurableWait *dw, int64 now,
										  const char *who);
extern TimestampTz wasend_durable_waiting_since(const WasendDurableWait *dw);
extern long wasend_durable_sleep_ms(const WasendDurableWait *dw, int64 now);
extern char *wasend_durable_describe(void);

#endif							/* WASEND_DURABILITY_H */
