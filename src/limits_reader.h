/*-------------------------------------------------------------------------
 *
 * limits_reader.h
 *		The answers of a sender's reads of its numbers' messaging limits,
 *		quality and health, until a database cycle stores them;
 *		limits_reader.c owns them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_LIMITS_READER_H
#define WASEND_LIMITS_READER_H

#include "http_client.h"
#include "queue.h"

/* An answer to a number's limits GET, waiting for the next cycle. */
typedef struct LimitsAnswer
{
	int64		number_id;
	long		http_status;	/* 0 when no HTTP answer came */
	char	   *body;			/* NULL when none */
	char	   *error;			/* transport error, or NULL */
	int			tries;			/* times storing it met a lock */
	int64		not_before;		/* monotonic us: try again from then */
	bool		done;			/* stored, or given up: forget it */
} LimitsAnswer;

#define MAX_LIMITS_ANSWERS		64

/* The answers a sender holds. */
typedef struct LimitsReader
{
	LimitsAnswer answers[MAX_LIMITS_ANSWERS];
	int			n;
	MemoryContext cxt;			/* holds their texts */
} LimitsReader;

extern void wasend_limits_init(LimitsReader *lr, MemoryContext cxt);
extern void wasend_limits_start_reads(const LimitsCheck *lc, int n);
extern void wasend_limits_collect(LimitsReader *lr, const HttpRequest *req);
extern void wasend_limits_forget_done(LimitsReader *lr);
extern void wasend_limits_mark(LimitsReader *lr, bool done);
extern bool wasend_limits_fresh(const LimitsReader *lr);

#endif							/* WASEND_LIMITS_READER_H */
