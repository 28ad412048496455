/*-------------------------------------------------------------------------
 *
 * durability.c
 *		Where a commit of this server is safe from a failover.
 *
 * A sender's claim commits with synchronous_commit = local, so that no
 * commit ever waits for a standby while curl has work.  A request must
 * still not start before its claim is where a failover can promote: a
 * promoted standby that lacks the claim sends the row again without any
 * mark.  So the sender remembers the commit LSN of each claim and starts
 * its rows only once wasend_durable_upto() has passed it; the webhook
 * worker answers Meta 200 only then.  Nobody blocks: the position is
 * polled, and only while something waits (WasendDurableWait).
 *
 * wasend.durability says what "durable" means:
 *
 *	synchronous	the flush position the synchronous standbys confirmed
 *				(WalSndCtl->lsn[SYNC_REP_WAIT_FLUSH], what a commit with
 *				synchronous_commit = on waits for), when
 *				synchronous_standby_names is set; else the local flush, as
 *				for such a commit.
 *	standby		the furthest flush position of any streaming physical
 *				standby; nothing while none streams.
 *	local		the local flush: a failover may lose the claim.
 *
 * walsender_private.h is installed but private: only lsn[] (with
 * SyncRepLock) and WalSnd's pid, state, flush, apply and mutex are read,
 * all unchanged from 15 to 18.  sync_standbys_defined is not read: its
 * meaning changed in minor releases.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "durability.h"
#include "settings.h"

/* polls of a wait back off from 1 ms to 50 ms while nothing moves */
#define POLL_MIN_US			1000
#define POLL_MAX_US			50000

/* a wait longer than this is logged (and its end) */
#define WAIT_LOG_AFTER_US	(2 * 1000000)

/*
 * The end of this process's last commit record, read right after the
 * commit.  A transaction that wrote nothing leaves the previous commit's
 * value, older and so never too early.
 */
XLogRecPtr
wasend_last_commit_lsn(void)
{
	return XactLastCommitEnd;
}

/*
 * Is this walsender a physical standby's?  A logical walsender is
 * connected to a database; pg_receivewal reports no apply position.
 * PGPROC's databaseId is read rather than WalSnd.kind, which 15 lacks.
 */
static bool
walsender_is_standby(pid_t pid, XLogRecPtr apply)
{
	PGPROC	   *proc;

	if (XLogRecPtrIsInvalid(apply))
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->databaseId == InvalidOid;
}

/*
 * The furthest flush position a streaming physical standby confirmed, or
 * InvalidXLogRecPtr when none streams (wasend.durability = standby).
 */
static XLogRecPtr
standby_flush(void)
{
	XLogRecPtr	best = InvalidXLogRecPtr;
	int			i;

	for (i = 0; i < max_wal_senders; i++)
	{
		WalSnd	   *walsnd = &WalSndCtl->walsnds[i];
		pid_t		pid;
		WalSndState state;
		XLogRecPtr	flush;
		XLogRecPtr	apply;

		/* a spinlock: four fields copied, as pg_stat_get_wal_senders does */
		SpinLockAcquire(&walsnd->mutex);
		pid = walsnd->pid;
		state = walsnd->state;
		flush = walsnd->flush;
		apply = walsnd->apply;
		SpinLockRelease(&walsnd->mutex);

		if (pid == 0 || state != WALSNDSTATE_STREAMING || flush <= best)
			continue;
		if (walsender_is_standby(pid, apply))
			best = flush;
	}
	return best;
}

/*
 * Up to where this server's commits are durable as wasend.durability
 * means it (see the file's comment).  PG_UINT64_MAX: every commit is.
 */
XLogRecPtr
wasend_durable_upto(void)
{
	XLogRecPtr	lsn;

	if (wasend_durability == WASEND_DURABLE_LOCAL)
		return PG_UINT64_MAX;
	if (wasend_durability == WASEND_DURABLE_STANDBY)
		return standby_flush();
	/* this process's parse of synchronous_standby_names, reloaded on SIGHUP */
	if (SyncRepConfig == NULL)
		return PG_UINT64_MAX;
	/* an LWLock, shared: the walsenders hold it exclusively to move lsn[] */
	LWLockAcquire(SyncRepLock, LW_SHARED);
	lsn = WalSndCtl->lsn[SYNC_REP_WAIT_FLUSH];
	LWLockRelease(SyncRepLock);
	return lsn;
}

/*
 * What a log line or stalled_reason says the wait is for: the setting and
 * its standbys (palloc'd).
 */
char *
wasend_durable_describe(void)
{
	if (wasend_durability == WASEND_DURABLE_STANDBY)
		return pstrdup("a streaming standby to flush them (wasend.durability = standby)");
	return psprintf("the synchronous standby to flush them (synchronous_standby_names = '%s')",
					SyncRepStandbyNames ? SyncRepStandbyNames : "");
}

/*
 * The horizon of what a transaction that just committed wrote or saw:
 * its commit, and everything flushed here by then.  A webhook's
 * transaction that changed nothing (a notification stored before, whose
 * first answer was a 503) has no commit record of its own, yet must not
 * be acknowledged before what it found is durable; a transaction
 * committed with synchronous_commit on or local is flushed before others
 * see it.  (The insert position would also cover commits made with
 * synchronous_commit = off, at the price of waiting for the WAL writer.)
 * Only on a primary, like the webhook worker that calls it.
 */
XLogRecPtr
wasend_commit_horizon(void)
{
	return Max(XactLastCommitEnd, GetFlushRecPtr(NULL));
}

/*
 * Something now waits for a commit that ended at lsn: remember it, with
 * when it was made, until it is durable.  A full ring merges it into the
 * newest entry, whose age is then older than the commit's: a wait may
 * look longer, never shorter.
 */
void
wasend_durable_note(WasendDurableWait *dw, XLogRecPtr lsn)
{
	WasendDurableCommit *c;

	dw->newest = Max(dw->newest, lsn);
	if (lsn <= dw->upto)
		return;
	if (dw->count > 0)
	{
		c = &dw->ring[(dw->head + dw->count - 1) % WASEND_DURABLE_RING];
		if (lsn <= c->lsn)
			return;
		if (dw->count == WASEND_DURABLE_RING)
		{
			c->lsn = lsn;
			return;
		}
	}
	else
	{
		/* a new wait: read at once, then back off */
		dw->next_poll = 0;
		dw->poll_us = POLL_MIN_US;
	}
	c = &dw->ring[(dw->head + dw->count) % WASEND_DURABLE_RING];
	c->lsn = lsn;
	c->at_us = wasend_mono_us();
	c->at = GetCurrentTimestamp();
	dw->count++;
}

/*
 * The settings were reloaded: what was read under the old ones proves
 * nothing (local durability, or none of synchronous_standby_names, says
 * "everything").  Every commit noted so far may be waited on again (rows
 * held, answers suspended): the newest stands for them all, and the
 * position is read again at once.
 */
void
wasend_durable_forget(WasendDurableWait *dw)
{
	dw->upto = InvalidXLogRecPtr;
	if (dw->newest != InvalidXLogRecPtr)
		wasend_durable_note(dw, dw->newest);
	dw->next_poll = 0;
	dw->poll_us = POLL_MIN_US;
}

/*
 * Log the start of a wait that lasts, once, and its end, as "who" (e.g.
 * "sender 1").
 */
static void
log_wait(WasendDurableWait *dw, int64 now, const char *who)
{
	if (dw->count == 0)
	{
		if (dw->logged)
			ereport(LOG,
					(errmsg("wasend %s goes on: the commits it waited for are durable",
							who)));
		dw->logged = false;
		return;
	}
	if (!dw->logged && now - dw->ring[dw->head].at_us >= WAIT_LOG_AFTER_US)
	{
		ereport(LOG,
				(errmsg("wasend %s waits: its commits of the last %.1f s are not durable yet",
						who, (now - dw->ring[dw->head].at_us) / 1000000.0),
				 errdetail("It waits for %s: flushed up to %X/%X, its oldest waiting commit ends at %X/%X.",
						   wasend_durable_describe(),
						   LSN_FORMAT_ARGS(dw->upto),
						   LSN_FORMAT_ARGS(dw->ring[dw->head].lsn)),
				 errhint("Check pg_stat_replication on this server. wasend.durability = local does not wait, at the price of messages sent again unmarked and webhooks lost after a failover.")));
		dw->logged = true;
	}
}

/*
 * The durable position.  It is read only while some noted commit waits,
 * and then at most once per poll interval (1 ms, doubling to 50 ms while
 * it does not move); the commits it covers are forgotten.  A wait that
 * lasts is logged (log_wait).
 */
XLogRecPtr
wasend_durable_position(WasendDurableWait *dw, int64 now, const char *who)
{
	XLogRecPtr	upto;

	if (dw->count == 0 || now < dw->next_poll)
		return dw->upto;
	upto = wasend_durable_upto();
	if (upto > dw->upto)
		dw->poll_us = POLL_MIN_US;
	else
		dw->poll_us = Min(dw->poll_us * 2, POLL_MAX_US);
	dw->upto = upto;
	while (dw->count > 0 && dw->ring[dw->head].lsn <= upto)
	{
		dw->head = (dw->head + 1) % WASEND_DURABLE_RING;
		dw->count--;
	}
	dw->next_poll = now + dw->poll_us;
	log_wait(dw, now, who);
	return upto;
}

/*
 * When the oldest commit that is not durable yet was made (0: none).
 */
TimestampTz
wasend_durable_waiting_since(const WasendDurableWait *dw)
{
	return dw->count > 0 ? dw->ring[dw->head].at : 0;
}

/*
 * How long the owner may sleep before it reads the position again (-1:
 * nothing waits).
 */
long
wasend_durable_sleep_ms(const WasendDurableWait *dw, int64 now)
{
	if (dw->count == 0)
		return -1;
	if (now >= dw->next_poll)
		return 0;
	return (long) ((dw->next_poll - now + 999) / 1000);
}
