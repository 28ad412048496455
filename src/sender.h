/*-------------------------------------------------------------------------
 *
 * sender.h
 *		What the parts of a sender share.
 *
 * A sender is one background worker made of five parts, one file each:
 *
 *	src/sender.c			the event loop: latch, curl's sockets, timers,
 *							collecting answers, shutdown
 *	src/number_queue.c		per phone number: the FIFO of claimed rows and
 *							starting requests as the rate gate allows
 *	src/campaign_cache.c	per campaign: what the sender knows of the
 *							running set, rows held, claim requests
 *	src/breaker.c			the circuit breaker of a campaign
 *	src/db_cycle.c			the database cycle: one short transaction,
 *							each step in a subtransaction, never waiting
 *							on a user's lock, never dying of data
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SENDER_H
#define WASEND_SENDER_H

#include "postgres.h"

#include <signal.h>

#include "fmgr.h"

#include "clock.h"
#include "queue.h"
#include "shmem.h"

/* A claimed row waiting for its turn at the rate gate. */
typedef struct PendingRow
{
	int64		id;
	int64		campaign_id;
	int			priority;		/* wasend_send row: 0-100; campaign row: -1 */
	int			refusals;		/* 130429s it got in this sender (see
								 * number_requeue) */
	char	   *body;
} PendingRow;

/* What this sender knows about one phone number. */
typedef struct NumberState
{
	int64		number_id;		/* hash key */
	int64		gate_key;		/* rate_gate_key(phone_number_id) */
	int64		pace_noted_at;	/* last metrics_note_pace, monotonic us */
	char	   *phone_number_id;
	char	   *access_token;
	char	   *url;
	int			rate;
	int64		latency_us;		/* moving average of its requests' latency */
	WasendWindowMin latency_floor;	/* least latency over a window */
	int			inflight;		/* its requests in flight in this sender */
	bool		was_mine;		/* mine as of the previous refresh */
	bool		active;			/* has a running campaign, number active */
	bool		mine;			/* this sender claims its rows (sender_share) */
	int			top_priority;	/* highest priority of its campaigns that
								 * want rows (campaigns_claim_request) */
	int			top_count;		/* how many of them have it */
	PendingRow *rows;			/* ring buffer of claimed, unsent rows */
	int			head;
	int			count;
	int			cap;
} NumberState;

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

/* What this sender knows about one campaign. */
typedef struct CampaignState
{
	int64		campaign_id;	/* hash key */
	int64		number_id;
	bool		running;		/* in the last refresh's running set */
	bool		running_before; /* ... and in the one before */
	bool		dry;			/* last claim found fewer rows than asked */
	bool		lock_logged;	/* said that completing it waits on a lock */
	int			held;			/* rows of it we hold (pending + in flight) */
	int64		claim_after;	/* keyset cursor of claims; see campaigns_refresh */
	int64		rewind_until;	/* until then (monotonic us) every refresh
								 * rewinds the cursor: an error answer may
								 * have put a row back behind it */
	int			priority;		/* campaigns.priority */
	bool		transactional;	/* the number's wasend_send lane */
	int			scan_extra;		/* due rows a claim looks at beyond what it
								 * asks for: rows of it were found waiting */
	bool		claim_again;	/* its last claim looked at all it might and
								 * found only rows that wait: claim again
								 * now, not at the next poll */
	Breaker		breaker;
} CampaignState;

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

/* sender.c */
extern PGDLLEXPORT void wasend_sender_main(Datum main_arg);
extern const char *wasend_redact_token(const char *resp, const char *token);

/* sender.c: the process-wide state of this sender */
extern volatile sig_atomic_t wasend_shutdown_requested;
extern MemoryContext wasend_sender_context;
extern WasendSenderSlot *wasend_my_slot;
extern int64 wasend_my_token;
extern int	wasend_held_total;
extern ResultBatch wasend_results;
extern bool wasend_results_have_error;
extern LimitsAnswer wasend_limits_answers[MAX_LIMITS_ANSWERS];
extern int	wasend_nlimits_answers;
extern void wasend_start_limits_reads(const LimitsCheck *lc, int n);
extern void wasend_sender_share(int *ordinal, int *count);
extern void wasend_limits_answers_done(void);
extern bool wasend_limits_answers_fresh(void);
extern void wasend_limits_answers_mark(bool done);

/* number_queue.c */
extern int	wasend_active_numbers;	/* active numbers this sender claims for */
extern void wasend_numbers_init(void);
extern NumberState *wasend_number_get(int64 number_id);
extern NumberState *wasend_number_find(int64 number_id);
extern void wasend_numbers_begin_refresh(void);
extern void wasend_number_refresh(NumberState *ns, int rate,
						   const char *phone_number_id,
						   const char *access_token);
extern int	wasend_number_target(NumberState *ns);
extern void wasend_number_note_latency(NumberState *ns, int64 latency_us, int64 now);
extern void wasend_sender_note_turn(int64 idle_us, int64 now);
extern int	wasend_sender_budget(void);
extern int	wasend_number_inflight_need(NumberState *ns);
extern void wasend_number_answered(NumberState *ns);
extern void wasend_number_push(NumberState *ns, const ClaimedRow *row);
extern void wasend_number_requeue(NumberState *ns, int64 id, int64 campaign_id,
						   int priority, int refusals, const char *body);
extern void wasend_numbers_reset_shares(void);
extern int	wasend_numbers_take_stopped(int64 *ids, int64 *campaign_ids, bool drop_all);
extern int64 wasend_numbers_start_sends(int64 now);
extern char *wasend_number_url(const char *phone_number_id, const char *token);
extern char *wasend_number_limits_url(const char *phone_number_id, const char *token);

/* campaign_cache.c */
extern void wasend_campaigns_init(void);
extern CampaignState *wasend_campaign_find(int64 campaign_id);
extern bool wasend_refresh_rewinds;
extern void wasend_campaigns_refresh(const RunningCampaign *rc, int n);
extern void wasend_campaign_note_error(int64 campaign_id);
extern void wasend_hold(int64 campaign_id, int delta);
extern bool wasend_campaigns_want_claim(void);
extern int	wasend_campaigns_claim_request(int64 *ids, int32 *lims, int32 *scans,
									int64 *after);
extern bool wasend_campaigns_claim_again(void);
extern void wasend_campaigns_mark_dry(const int64 *ids, const int32 *lims,
							   const int32 *scans, int n,
							   const ClaimedRow *rows, int nrows);
extern void wasend_campaigns_claimed(const ClaimedRow *rows, int nrows);
extern int	wasend_campaigns_dry_done(int64 *ids);
extern int	wasend_campaigns_count(void);

/* what failed on a campaign set aside (campaign_fault) */
#define FAULT_REFRESH	1
#define FAULT_CLAIM		2
extern int64 wasend_campaign_fault(int64 campaign_id, int step);
extern int	wasend_campaign_faults_excluded(int64 *excl);
extern int	wasend_campaign_faults_count(void);
extern int	wasend_campaign_faults_passed(const int64 *ids, int n, int step, bool all,
								   int64 *cleared);

/* breaker.c */
extern void wasend_breaker_reset(Breaker *b, int window, double threshold);
extern void wasend_breaker_free(Breaker *b);
extern bool wasend_breaker_add(Breaker *b, int64 sent, int64 failed);

/* db_cycle.c */
extern int64 wasend_next_scheduled_start;	/* monotonic us; 0 = none */
extern bool wasend_db_cycle(bool refresh, bool release_all);
extern int64 wasend_db_cycle_not_before(void);
extern int64 wasend_db_record_not_before(void);
extern bool wasend_db_cycle_settled(void);

#endif							/* WASEND_SENDER_H */
