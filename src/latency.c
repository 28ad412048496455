/*-------------------------------------------------------------------------
 *
 * latency.c
 *		The senders' latency histograms: what a request took, and the part
 *		of it wasend added.
 *
 * Each sender slot carries two histograms over the same bucket bounds:
 *
 *	latency		from the moment the sender handed a request to curl to the
 *				moment it collected the answer: what a message waits for
 *				its answer in this sender;
 *	added		that latency minus the time the server says it spent
 *				(Server-Timing, see http_client.c), for the answers that
 *				say it: the time wasend itself added (curl queueing, the
 *				event loop busy with a database cycle, the machine).
 *
 * The buckets are 1 ms wide up to 10 ms, where the added latency of a
 * healthy sender lies, and grow after that.  A percentile is read by linear
 * interpolation inside its bucket (wasend_worker_stats); the counters are
 * atomics bumped by the sender alone, so a reader never blocks it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "latency.h"

/* upper bounds of the buckets, in us; the last bucket is unbounded */
static const int64 latency_bound_us[WASEND_LATENCY_BUCKETS - 1] = {
	1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000,
	12000, 14000, 16000, 18000, 20000, 25000, 30000, 40000, 50000, 60000,
	80000, 100000, 125000, 150000, 175000, 200000, 250000, 300000, 400000,
	500000, 750000, 1000000, 2000000, 5000000, 10000000, 30000000
};

StaticAssertDecl(lengthof(latency_bound_us) == WASEND_LATENCY_BUCKETS - 1,
				 "latency bucket bounds and WASEND_LATENCY_BUCKETS disagree");

/*
 * Zero a histogram (at sender start).
 */
void
wasend_latency_reset(pg_atomic_uint64 *hist)
{
	int			i;

	for (i = 0; i < WASEND_LATENCY_BUCKETS; i++)
		pg_atomic_write_u64(&hist[i], 0);
}

/*
 * Count one observation of us microseconds (negative counts as 0: a server
 * that reports more time than the request took, clocks apart).
 */
void
wasend_latency_note(pg_atomic_uint64 *hist, int64 us)
{
	int			lo = 0;
	int			hi = WASEND_LATENCY_BUCKETS - 1;

	/* the first bucket whose bound is >= us (binary search) */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (us <= latency_bound_us[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	pg_atomic_fetch_add_u64(&hist[lo], 1);
}

/*
 * The q-quantile (0 < q < 1) of a histogram in milliseconds, interpolated
 * linearly inside its bucket; false when it is empty.  An observation in
 * the unbounded last bucket reads as that bucket's lower bound.
 */
bool
wasend_latency_percentile(pg_atomic_uint64 *hist, double q, double *ms)
{
	uint64		counts[WASEND_LATENCY_BUCKETS];
	uint64		total = 0;
	double		rank;
	uint64		below = 0;
	int			i;

	for (i = 0; i < WASEND_LATENCY_BUCKETS; i++)
		total += counts[i] = pg_atomic_read_u64(&hist[i]);
	if (total == 0)
		return false;
	rank = q * total;
	for (i = 0; i < WASEND_LATENCY_BUCKETS; i++)
	{
		double		lo = i == 0 ? 0 : latency_bound_us[i - 1];
		double		hi;

		if (below + counts[i] < rank || counts[i] == 0)
		{
			below += counts[i];
			continue;
		}
		if (i == WASEND_LATENCY_BUCKETS - 1)
		{
			*ms = lo / 1000.0;
			return true;
		}
		hi = latency_bound_us[i];
		*ms = (lo + (hi - lo) * (rank - below) / counts[i]) / 1000.0;
		return true;
	}
	*ms = latency_bound_us[WASEND_LATENCY_BUCKETS - 2] / 1000.0;
	return true;
}
