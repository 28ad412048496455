/*-------------------------------------------------------------------------
 *
 * rate_gate.c
 *		Per-phone-number send pacing, shared by all senders: a grid of
 *		slots that paces, and a count of the last second's writes that
 *		keeps every window under the number's rate.
 *
 * One table in shared memory behind one LWLock, on the monotonic clock,
 * for every sender of every database.  See docs/internals/rate_gate.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/hashfn.h"
#include "datatype/timestamp.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "clock.h"
#include "rate_gate.h"
#include "settings.h"

/* the LWLock tranche of the gate's lock */
#define WASEND_GATE_TRANCHE		"wasend rate gate"

/* One phone number's pacing state.  Times: monotonic us. */
typedef struct WasendGateSlot
{
	int64		next_slot;		/* grid time of the next send */
	double		throttle;		/* pace factor after 130429s; 1 = none */
	int64		priority_until; /* a sender holds wasend_send rows of the
								 * number: other sends wait until then */
	int64		throttle_at;	/* when throttle was last set */
	int64		slowed_at;		/* the last 130429 (rate_gate_slow_down) */
	WasendWindowMin jitter;		/* RTT variation of the path to the
								 * number's API, least over a window */
	int			pending;		/* sends granted and not yet known written
								 * (or known unsent), all processes */
	uint64		writes;			/* writes recorded so far */
	int64		wrote[WASEND_MAX_RATE];	/* the last writes' times, at
										 * [writes % WASEND_MAX_RATE],
										 * never decreasing */
} WasendGateSlot;

/*
 * The gate's shared struct.  Every field but lock is read and written
 * under lock, by any process that sends (senders, a backend's test send).
 * An LWLock, not a spinlock: the holder scans the 256-entry index and
 * grants up to a batch of sends in a loop, far more than the few
 * instructions a spinlock may cover.
 */
typedef struct WasendGateShared
{
	LWLock	   *lock;
	/* dense index of gate[], scanned under lock */
	bool		gate_in_use[WASEND_GATE_SLOTS];	/* false: free */
	int64		gate_number[WASEND_GATE_SLOTS];	/* rate_gate_key of the entry */
	int64		gate_last_used[WASEND_GATE_SLOTS];	/* last grant or wire time */
	WasendGateSlot gate[WASEND_GATE_SLOTS];
} WasendGateShared;

/* NULL until attached, and when wasend was not preloaded */
static WasendGateShared *gate_state = NULL;

/*
 * longest a free grid slot waits for a sender before it is dropped, in us:
 * a sender busy with a database round trip catches up that much at once
 */
#define LATENESS_US		20000

/*
 * how much longer than 1 s a write counts in its number's window, in us:
 * the base for the receiver's clock, plus the measured jitter, at most
 * MAX_MARGIN_US (see header)
 */
#define BASE_MARGIN_US	10000
#define MAX_MARGIN_US	30000

/* the number's jitter is the least RTT variation seen in this long, in us */
#define JITTER_WINDOW_US	(10 * USECS_PER_SEC)

/* what the grid leaves free beyond the window's margin, in us */
#define GRID_SLACK_US	5000

/*
 * An entry unused this long, and with no send pending, may be given to
 * another number, in us: far longer than the 1 s + margin its writes
 * count, and than any request of the number can still be on its way (a
 * request times out after wasend.request_timeout_ms).
 */
#define EVICT_AFTER_US	((int64) wasend_request_timeout_ms * 1000 + \
						 USECS_PER_SEC + MAX_MARGIN_US + 2 * USECS_PER_SEC)

/* how long a priority take keeps other takes of the number waiting, in us */
#define PRIORITY_HOLD_US	20000

/* when the table is full of busy numbers, look again after this, in us */
#define FULL_RETRY_US	10000

/*
 * when R sends of a number are granted and none is known written yet, look
 * again after this, in us: those of other processes do not wake this one
 */
#define PENDING_RETRY_US	10000

/*
 * This process's grants not yet reported written or unsent, per gate
 * entry (an entry with any is never given to another number): what it
 * settles on its way out (release_mine).
 */
static int	my_pending[WASEND_GATE_SLOTS];
static bool release_registered = false;

/*
 * 130429 means the number is over its limit in Meta's eyes (another sender
 * outside wasend, an app sharing the number, Meta's own accounting): each
 * batch with such answers multiplies the pace by SLOW_FACTOR (never below
 * SLOW_FLOOR), and the pace climbs back by RECOVERY_PER_SEC of the rate per
 * second without them.  A single 130429 after none for SLOW_QUIET_US is
 * more likely a receiver's hiccup than a number over its limit: it costs
 * FIRST_SLOW_FACTOR only (5% of the pace, back within a second), so that a
 * stray one does not cost a campaign seconds.
 */
#define FIRST_SLOW_FACTOR	0.95
#define SLOW_QUIET_US		(2 * USECS_PER_SEC)

/*
 * 130429s of one burst (the requests in flight when the receiver hiccuped)
 * slow the number down once: later ones within this window are the same
 * event
 */
#define SLOW_BURST_US		(100 * 1000)
#define SLOW_FACTOR			0.75
#define SLOW_FLOOR			0.1
#define RECOVERY_PER_SEC	0.05

/*
 * Find the entry of a number and note its use at `now`, or with create,
 * give it one: a free entry, else the one idle longest if it has been idle
 * for EVICT_AFTER_US and has no send pending.  Returns NULL when there is
 * none.  Caller holds gate_lock.  A linear scan of the dense index: 256
 * comparisons over a few kB are cheaper than keeping a hash table with
 * deletions consistent in shared memory.
 */
static WasendGateSlot *
gate_lookup(int64 key, bool create, int64 now, int *index)
{
	WasendGateShared *st = gate_state;
	int			free_slot = -1;
	int			idlest = -1;
	int			i;
	WasendGateSlot *g;

	for (i = 0; i < WASEND_GATE_SLOTS; i++)
	{
		if (!st->gate_in_use[i])
		{
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (st->gate_number[i] == key)
		{
			st->gate_last_used[i] = Max(st->gate_last_used[i], now);
			*index = i;
			return &st->gate[i];
		}
		if ((idlest < 0 || st->gate_last_used[i] < st->gate_last_used[idlest]) &&
			st->gate[i].pending == 0)
			idlest = i;
	}
	if (!create)
		return NULL;
	if (free_slot < 0)
	{
		if (idlest < 0 || st->gate_last_used[idlest] > now - EVICT_AFTER_US)
			return NULL;
		free_slot = idlest;
	}
	st->gate_in_use[free_slot] = true;
	st->gate_number[free_slot] = key;
	st->gate_last_used[free_slot] = now;
	g = &st->gate[free_slot];
	g->next_slot = 0;
	g->throttle = 1.0;
	g->throttle_at = 0;
	g->slowed_at = 0;
	wasend_window_min_init(&g->jitter, now);
	g->priority_until = 0;
	g->pending = 0;
	g->writes = 0;
	*index = free_slot;
	return g;
}

/*
 * Record a write of a number's send at `when`: the last writes stay in
 * order, so one reported after a later one is stamped as late as that one
 * (it counts a little longer, never shorter).  Caller holds gate_lock.
 */
static void
note_write(WasendGateSlot *g, int64 when)
{
	if (g->writes > 0)
		when = Max(when, g->wrote[(g->writes - 1) % WASEND_MAX_RATE]);
	g->wrote[g->writes % WASEND_MAX_RATE] = when;
	g->writes++;
}

/*
 * On this process's way out (before_shmem_exit): the sends it was granted
 * and never reported count as written now, which is no earlier than they
 * could have been (its sockets close as it exits).  So a process that
 * ends with requests in flight, or that an error ended between a grant
 * and its request, leaves no grant behind.
 */
static void
release_mine(int code, Datum arg)
{
	int64		now = wasend_mono_us();
	int			i;

	if (gate_state == NULL)
		return;
	if (LWLockHeldByMe(gate_state->lock))
		LWLockRelease(gate_state->lock);
	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_GATE_SLOTS; i++)
	{
		WasendGateSlot *g = &gate_state->gate[i];

		if (my_pending[i] == 0)
			continue;
		g->pending = Max(0, g->pending - my_pending[i]);
		while (my_pending[i] > 0)
		{
			note_write(g, now);
			my_pending[i]--;
		}
		gate_state->gate_last_used[i] = Max(gate_state->gate_last_used[i], now);
	}
	LWLockRelease(gate_state->lock);
}

/*
 * Size of the gate's shared struct.
 */
Size
wasend_rate_gate_shmem_size(void)
{
	return MAXALIGN(sizeof(WasendGateShared));
}

/*
 * Ask for the gate's LWLock (from the shmem request hook).
 */
void
wasend_rate_gate_request_locks(void)
{
	RequestNamedLWLockTranche(WASEND_GATE_TRANCHE, 1);
}

/*
 * Create or attach to the gate's shared struct (from the shmem startup
 * hook, which holds AddinShmemInitLock).
 */
void
wasend_rate_gate_shmem_init(void)
{
	bool		found;

	gate_state = ShmemInitStruct("wasend rate gate",
								 MAXALIGN(sizeof(WasendGateShared)), &found);
	if (!found)
	{
		memset(gate_state, 0, sizeof(WasendGateShared));
		gate_state->lock = &(GetNamedLWLockTranche(WASEND_GATE_TRANCHE))->lock;
	}
}

/*
 * The gate's key of a number: a hash of Meta's phone_number_id, not the
 * row id of wasend.whatsapp_numbers, so that a number registered in two
 * databases is paced as the one number Meta counts.
 */
int64
wasend_rate_gate_key(const char *phone_number_id)
{
	return (int64) hash_bytes_extended((const unsigned char *) phone_number_id,
									   (int) strlen(phone_number_id), 0);
}

/*
 * The slot's pace factor now, after the recovery since it was last set.
 * Caller holds gate_lock.
 */
static double
current_throttle(WasendGateSlot *g, int64 now)
{
	double		t = g->throttle;

	if (t < 1.0 && now > g->throttle_at)
		t = Min(1.0, t + RECOVERY_PER_SEC * (now - g->throttle_at) / 1000000.0);
	return t;
}

/*
 * The window's margin of an entry now: BASE_MARGIN_US plus twice its
 * measured jitter, at most MAX_MARGIN_US.  Caller holds gate_lock.
 */
static int64
entry_margin(WasendGateSlot *g)
{
	return Min(BASE_MARGIN_US + 2 * Max(g->jitter.last, 0), MAX_MARGIN_US);
}

/*
 * The fraction of the rate the grid paces an entry at: wasend.rate_headroom,
 * or less when the margin asks (see header).  Caller holds gate_lock.
 */
static double
entry_headroom(WasendGateSlot *g)
{
	double		derived = (double) USECS_PER_SEC /
		(USECS_PER_SEC + entry_margin(g) + GRID_SLACK_US);

	return Min(wasend_rate_headroom, derived);
}

/*
 * Take up to `want` send slots of a number at monotonic time `now`.
 *
 * Returns how many sends may start now.  Each one granted counts in the
 * number's window until the caller reports it written (rate_gate_on_wire)
 * or unsent (rate_gate_unsent); one this process never reports is settled
 * when it exits.  *next_slot receives the time at which the gate may open
 * again, so the caller knows how long to sleep.  With priority, the sends
 * are wasend_send rows: other takes of the number wait meanwhile (see
 * header).  Never throws (but for registering its exit callback, once).
 */
int
wasend_rate_gate_take(int64 key, int rate, int want, int64 now,
			   int64 *next_slot, bool priority)
{
	WasendGateSlot *g;
	int64		interval_us;
	int			taken = 0;
	int64		slot;
	int64		blocked_until = 0;
	int64		window;
	int			index;

	if (!release_registered)
	{
		before_shmem_exit(release_mine, 0);
		release_registered = true;
	}
	rate = Max(1, Min(rate, WASEND_MAX_RATE));
	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, true, now, &index);
	if (g == NULL)
	{
		/* every entry is busy: wait for one to become idle */
		LWLockRelease(gate_state->lock);
		*next_slot = now + FULL_RETRY_US;
		return 0;
	}
	if (!priority && now < g->priority_until)
	{
		/* another sender's wasend_send rows go first */
		*next_slot = g->priority_until;
		LWLockRelease(gate_state->lock);
		return 0;
	}
	interval_us = (int64) ceil(1000000.0 /
							   (rate * entry_headroom(g) * current_throttle(g, now)));
	/* W: at least 1 s + margin, since H <= 1 s / (1 s + margin + slack) */
	window = (int64) (USECS_PER_SEC / entry_headroom(g)) - GRID_SLACK_US;

	slot = Max(g->next_slot, now - LATENESS_US);
	while (taken < want && slot <= now)
	{
		/*
		 * With this one, pending + the writes of the last window must not
		 * exceed the rate: fewer than `room` of those writes may be recent
		 */
		int			room = rate - g->pending;
		int64		last;

		if (room <= 0)
		{
			/* R sends on their way, none known written yet */
			blocked_until = now + PENDING_RETRY_US;
			break;
		}
		if (g->writes >= (uint64) room)
		{
			/* the room-th last write: the writes are in order */
			last = g->wrote[(g->writes - room) % WASEND_MAX_RATE];
			if (last + window > now)
			{
				blocked_until = last + window;
				break;
			}
		}
		g->pending++;
		taken++;
		slot += interval_us;
	}
	g->next_slot = slot;
	my_pending[index] += taken;
	/* wasend_send rows still wait: the next slot is theirs */
	if (priority && taken < want)
		g->priority_until = Max(g->priority_until,
								Max(slot, blocked_until) + PRIORITY_HOLD_US);
	LWLockRelease(gate_state->lock);

	*next_slot = Max(slot, blocked_until);
	return taken;
}

/*
 * A request of the number is known to have been written by `when`
 * (monotonic us): it counts in the number's window until when + W (see
 * header).  With granted, it is the first write of a send this process was
 * granted, which stops being pending; without, it is a write no grant
 * covered (libcurl sending a request again on a new connection after a
 * reused one closed), counted all the same.  Never throws.
 */
void
wasend_rate_gate_on_wire(int64 key, int64 when, bool granted)
{
	WasendGateSlot *g;
	int			index;

	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, true, when, &index);
	if (g != NULL)
	{
		note_write(g, when);
		if (granted && my_pending[index] > 0)
		{
			my_pending[index]--;
			g->pending--;
		}
	}
	LWLockRelease(gate_state->lock);
}

/*
 * A send this process was granted failed before any of it was written (no
 * connection could be made): it never reached the API, so it stops
 * counting.  Never throws.
 */
void
wasend_rate_gate_unsent(int64 key)
{
	WasendGateSlot *g;
	int			index;

	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, false, wasend_mono_us(), &index);
	if (g != NULL && my_pending[index] > 0)
	{
		my_pending[index]--;
		g->pending--;
	}
	LWLockRelease(gate_state->lock);
}

/*
 * The number was told to slow down (130429): lower its pace.
 */
void
wasend_rate_gate_slow_down(int64 key, int64 now)
{
	WasendGateSlot *g;
	int			index;

	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, false, now, &index);
	if (g != NULL && (g->slowed_at == 0 || now - g->slowed_at >= SLOW_BURST_US))
	{
		double		factor = g->slowed_at != 0 && now - g->slowed_at < SLOW_QUIET_US ?
			SLOW_FACTOR : FIRST_SLOW_FACTOR;

		g->throttle = Max(SLOW_FLOOR, current_throttle(g, now) * factor);
		g->throttle_at = now;
		g->slowed_at = now;
	}
	LWLockRelease(gate_state->lock);
}

/*
 * An answer of the number came back on a connection whose RTT varies by
 * rttvar_us (TCP_INFO): the number's jitter J becomes, every
 * JITTER_WINDOW_US, the least such variation seen in the window (see the
 * header for why the least).  Never throws.
 */
void
wasend_rate_gate_note_rttvar(int64 key, int64 rttvar_us, int64 now)
{
	WasendGateSlot *g;
	int			index;

	rttvar_us = Max(rttvar_us, 0);
	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, false, now, &index);
	if (g != NULL)
		wasend_window_min_note(&g->jitter, rttvar_us, now, JITTER_WINDOW_US);
	LWLockRelease(gate_state->lock);
}

/*
 * The pace a number is granted now, in messages per second: its rate
 * times its headroom (entry_headroom) times what is left of a slow-down
 * (for the metrics).
 */
double
wasend_rate_gate_pace(int64 key, int rate, int64 now)
{
	WasendGateSlot *g;
	int			index;
	double		t = 1.0;
	double		h = wasend_rate_headroom;

	LWLockAcquire(gate_state->lock, LW_EXCLUSIVE);
	g = gate_lookup(key, false, now, &index);
	if (g != NULL)
	{
		t = current_throttle(g, now);
		h = entry_headroom(g);
	}
	LWLockRelease(gate_state->lock);
	return rate * h * t;
}
