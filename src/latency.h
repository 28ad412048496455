/*-------------------------------------------------------------------------
 *
 * latency.h
 *		The senders' latency histograms; latency.c owns them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_LATENCY_H
#define WASEND_LATENCY_H

#include "port/atomics.h"

/* Buckets of a sender's latency histograms. */
#define WASEND_LATENCY_BUCKETS	37

extern void wasend_latency_reset(pg_atomic_uint64 *hist);
extern void wasend_latency_note(pg_atomic_uint64 *hist, int64 us);
extern bool wasend_latency_percentile(pg_atomic_uint64 *hist, double q, double *ms);

#endif							/* WASEND_LATENCY_H */
