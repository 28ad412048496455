/*-------------------------------------------------------------------------
 *
 * breaker.c
 *		A campaign's circuit breaker, as one sender sees it.
 *
 * Each sender keeps, per campaign, the outcomes of the last `window` rows
 * it settled (sent or failed for good; retries do not count).  When the
 * window is full and more than `threshold` of it failed, the breaker trips
 * and the sender pauses the campaign, saying why (db_cycle.c).  The window
 * starts afresh whenever the campaign is (re)started or resized.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "breaker.h"

/*
 * Start a breaker afresh with the given window and threshold; its ring
 * lives in cxt (the sender's context).
 */
void
wasend_breaker_reset(Breaker *b, int window, double threshold,
					 MemoryContext cxt)
{
	wasend_breaker_free(b);
	b->window = Max(window, 0);
	b->threshold = threshold;
	if (b->window > 0)
		b->outcomes = MemoryContextAllocZero(cxt,
											 sizeof(bool) * b->window);
	b->pos = b->filled = b->failures = 0;
}

/*
 * Release a breaker's memory.
 */
void
wasend_breaker_free(Breaker *b)
{
	if (b->outcomes != NULL)
		pfree(b->outcomes);
	b->outcomes = NULL;
	b->window = 0;
}

/*
 * Add final outcomes to the window; true if the breaker trips.
 */
bool
wasend_breaker_add(Breaker *b, int64 sent, int64 failed)
{
	int64		i;

	if (b->window == 0 || b->outcomes == NULL)
		return false;
	for (i = 0; i < sent + failed; i++)
	{
		bool		fail = i < failed;

		if (b->filled == b->window)
			b->failures -= b->outcomes[b->pos] ? 1 : 0;
		else
			b->filled++;
		b->outcomes[b->pos] = fail;
		b->failures += fail ? 1 : 0;
		b->pos = (b->pos + 1) % b->window;
	}
	return b->filled == b->window &&
		b->failures > b->threshold * b->window;
}
