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
 * What a log line says the wait is for: the setting and its standbys.
 */
const char *
wasend_durable_describe(void)
{
	if (wasend_durability == WASEND_DURABLE_STANDBY)
		return "a streaming standby to flush them (wasend.durability = standby)";
	return psprintf("the synchronous standby to flush them (synchronous_standby_names = '%s')",
					SyncRepStandbyNames ? SyncRepStandbyNames : "");
}

/*
 * Something now waits for a commit that ended at lsn.
 */
void
wasend_durable_note(WasendDurableWait *dw, XLogRecPtr lsn)
{
	if (lsn > dw->want)
		dw->want = lsn;
}

/*
 * The durable position, read again only when something noted waits
 * beyond what was read last: nothing polls while nothing waits.
 */
XLogRecPtr
wasend_durable_position(WasendDurableWait *dw)
{
	XLogRecPtr	upto;

	if (dw->upto >= dw->want)
		return dw->upto;
	upto = wasend_durable_upto();
	if (upto > dw->upto)
		dw->poll_us = POLL_MIN_US;
	else
		dw->poll_us = Min(Max(dw->poll_us * 2, POLL_MIN_US), POLL_MAX_US);
	/*
	 * "Everything" is kept as what was asked for, so that a later commit
	 * asks again: the setting may change meanwhile
	 */
	dw->upto = upto == PG_UINT64_MAX ? dw->want : upto;
	return upto;
}

/*
 * After the owner used the position: does something still wait?  A wait
 * that lasts is logged once, and its end, as "who" (e.g. "sender 1").
 */
void
wasend_durable_settle(WasendDurableWait *dw, bool waiting, int64 now,
					  const char *who)
{
	if (!waiting)
	{
		if (dw->logged)
			ereport(LOG,
					(errmsg("wasend %s goes on: its commits are durable again after %.1f s",
							who, (now - dw->since) / 1000000.0)));
		dw->want = Min(dw->want, dw->upto);
		dw->since = 0;
		dw->logged = false;
		dw->poll_us = POLL_MIN_US;
		return;
	}
	if (dw->since == 0)
		dw->since = now;
	if (!dw->logged && now - dw->since >= WAIT_LOG_AFTER_US)
	{
		ereport(LOG,
				(errmsg("wasend %s waits: its commits are not yet durable", who),
				 errdetail("It waits for %s; they are flushed up to %X/%X, it waits for %X/%X.",
						   wasend_durable_describe(),
						   LSN_FORMAT_ARGS(dw->upto), LSN_FORMAT_ARGS(dw->want)),
				 errhint("Check pg_stat_replication on this server. wasend.durability = local sends without waiting, at the price of messages sent again unmarked after a failover.")));
		dw->logged = true;
	}
}

/*
 * How long the owner may sleep before it polls again (-1: no limit).
 */
long
wasend_durable_sleep_ms(const WasendDurableWait *dw)
{
	if (dw->since == 0 && dw->upto >= dw->want)
		return -1;
	return (long) ((Max(dw->poll_us, POLL_MIN_US) + 999) / 1000);
}
