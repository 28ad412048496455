/*-------------------------------------------------------------------------
 *
 * rate_gate.c
 *		Per-phone-number send pacing, shared by all senders.
 *
 * Meta limits each phone number to max_send_rate_per_sec messages in any
 * one-second window and answers 130429 beyond it.  The gate spaces the
 * sends of one number on a grid of interval T = 1 s / (rate * HEADROOM):
 * a send may take grid slot s only at a time t >= s, and a slot left unused
 * for longer than LATENESS is dropped (the grid moves up to now - LATENESS).
 *
 * Why this never exceeds the rate: a send at time t used a slot s with
 * t - LATENESS <= s <= t.  The sends inside any window [a, a + 1 s) therefore
 * used slots inside [a - LATENESS, a + 1 s), and a grid of spacing T has at
 * most ceil((1 s + LATENESS) / T) = ceil(rate * HEADROOM * (1 + LATENESS))
 * points there: 199 at 200 msg/s, 994 at 1,000 msg/s, 1 at 1 msg/s.  The
 * remaining slot or more of the window absorbs network jitter between the
 * sender and Meta's clock.  Lateness up to LATENESS is caught up at once, so
 * a sender woken a little late still sends at HEADROOM of the rate.
 *
 * The grid of each number lives in shared memory behind one spinlock; a
 * take is a handful of instructions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "wasend.h"

/* fraction of the configured rate the grid targets */
#define HEADROOM		0.99

/* longest a free slot waits for a sender before it is dropped, in us */
#define LATENESS_US		3000

/*
 * Find (or create) the gate slot of a number.  Caller holds gate_mutex.
 * Open addressing on the number id; the table never shrinks, which is fine
 * for its few thousand entries.
 */
static WasendGateSlot *
gate_lookup(int64 number_id)
{
	uint32		h = (uint32) (number_id * 2654435761u) % WASEND_GATE_SLOTS;
	int			i;

	for (i = 0; i < WASEND_GATE_SLOTS; i++)
	{
		WasendGateSlot *g = &WasendState->gate[(h + i) % WASEND_GATE_SLOTS];

		if (g->number_id == number_id)
			return g;
		if (g->number_id == 0)
		{
			g->number_id = number_id;
			g->next_slot = 0;
			return g;
		}
	}
	return NULL;
}

/*
 * Take up to `want` send slots of a number at time `now`.
 *
 * Returns how many sends may start now; *next_slot receives the time at
 * which the next slot opens, so the caller knows how long to sleep.
 */
int
rate_gate_take(int64 number_id, int rate_per_sec, int want,
			   TimestampTz now, TimestampTz *next_slot)
{
	WasendGateSlot *g;
	double		interval_us;
	int			taken = 0;
	TimestampTz slot;

	Assert(rate_per_sec > 0);
	interval_us = 1000000.0 / (rate_per_sec * HEADROOM);

	SpinLockAcquire(&WasendState->gate_mutex);
	g = gate_lookup(number_id);
	if (g == NULL)
	{
		SpinLockRelease(&WasendState->gate_mutex);
		elog(ERROR, "wasend rate gate is full (%d numbers)", WASEND_GATE_SLOTS);
	}

	slot = g->next_slot;
	if (slot < now - LATENESS_US)
		slot = now - LATENESS_US;
	while (taken < want && slot <= now)
	{
		/* advance by the exact interval; keep sub-microsecond drift small */
		slot += (TimestampTz) interval_us;
		taken++;
	}
	g->next_slot = slot;
	SpinLockRelease(&WasendState->gate_mutex);

	*next_slot = slot;
	return taken;
}
