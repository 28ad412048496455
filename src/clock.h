/*-------------------------------------------------------------------------
 *
 * clock.h
 *		The monotonic clock the workers pace and schedule by, and the
 *		windowed minimum measured on it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_CLOCK_H
#define WASEND_CLOCK_H

#include <time.h>

/*
 * Microseconds of CLOCK_MONOTONIC: what the workers pace and schedule by.
 * Unlike GetCurrentTimestamp() it never steps when the wall clock is set,
 * and it is the same clock in every process of the machine.
 */
static inline int64
wasend_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * The least of a measurement over the last whole window: what a number's
 * latency is at best (number_queue.c), and its path's RTT variation
 * (rate_gate.c).  last is -1 before the first window ends.  Plain fields,
 * so that it can live in shared memory under its owner's lock.
 */
typedef struct WasendWindowMin
{
	int64		last;			/* least of the last whole window */
	int64		current;		/* least of the current one; -1: none yet */
	int64		since;			/* when the current one began (monotonic us) */
} WasendWindowMin;

/*
 * Start a window minimum at now, with nothing measured.
 */
static inline void
wasend_window_min_init(WasendWindowMin *w, int64 now)
{
	w->last = -1;
	w->current = -1;
	w->since = now;
}

/*
 * Fold value, measured at now, into the current window; a window of
 * window_us that is over becomes the last one.
 */
static inline void
wasend_window_min_note(WasendWindowMin *w, int64 value, int64 now, int64 window_us)
{
	if (w->current < 0 || value < w->current)
		w->current = value;
	if (now - w->since >= window_us)
	{
		w->last = w->current;
		w->current = -1;
		w->since = now;
	}
}

#endif							/* WASEND_CLOCK_H */
