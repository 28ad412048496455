/*-------------------------------------------------------------------------
 *
 * breaker.h
 *		A campaign's circuit breaker; breaker.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_BREAKER_H
#define WASEND_BREAKER_H

#include "utils/palloc.h"

/* A campaign's circuit breaker: this sender's last `window` outcomes. */
typedef struct Breaker
{
	double		threshold;		/* trips above this share of failures */
	int			window;
	bool	   *outcomes;		/* true = failed; ring of `window` entries */
	int			pos;
	int			filled;
	int			failures;
} Breaker;

extern void wasend_breaker_reset(Breaker *b, int window, double threshold,
								 MemoryContext cxt);
extern void wasend_breaker_free(Breaker *b);
extern bool wasend_breaker_add(Breaker *b, int64 sent, int64 failed);

#endif							/* WASEND_BREAKER_H */
