/*-------------------------------------------------------------------------
 *
 * number_queue.c
 *		Per phone number: the rows a sender claimed and has not sent yet,
 *		and starting their requests as the rate gate allows.
 *
 * Each number has a FIFO (a ring buffer that grows) of claimed rows with
 * their request bodies.  Every turn of the event loop, numbers_start_sends
 * asks the shared rate gate (rate_gate.c) how many sends each number may
 * start now and hands that many rows to the HTTP client.  Rows of
 * campaigns that stopped (paused, cancelled) are taken out again by
 * numbers_take_stopped, to be given back to the queue.  It knows nothing
 * of campaigns: whether a campaign still sends is the caller's answer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "clock.h"
#include "graph_api.h"
#include "http_client.h"
#include "metrics.h"
#include "number_queue.h"
#include "rate_gate.h"
#include "settings.h"

static MemoryContext numbers_context = NULL;	/* the sender's */
static HTAB *numbers = NULL;
static int	active_numbers = 0; /* numbers sending, as of the last refresh */
static int	share_ordinal = 0;	/* sender_share, as of the last refresh */
static int	share_count = 1;

/* a number's current pace goes to the metrics at most this often, in us */
#define PACE_NOTE_US	(500 * 1000)

/* the latency assumed for a number until its first answers, in us */
#define FIRST_LATENCY_US	(250 * 1000)

/*
 * the most one answer adds to a number's latency average, in us: a number
 * whose API stalls (answers after many seconds, timeouts) must not size
 * its in flight to the stall and take the sender's whole budget
 */
#define MAX_LATENCY_SAMPLE_US	(1 * USECS_PER_SEC)

/* the window of a number's least latency, in us (number_latency) */
#define LATENCY_WINDOW_US		(5 * USECS_PER_SEC)

/*
 * A sender that waited less than this share of a second (BUSY_WINDOW_US)
 * for events was busy all along: see numbers_note_turn
 */
#define BUSY_WINDOW_US			USECS_PER_SEC
#define BUSY_IDLE_SHARE			0.05

/* the sender's loop had no idle time in its last BUSY_WINDOW_US */
static bool sender_busy = false;
static int64 busy_window_at = 0;
static int64 busy_window_idle = 0;

/*
 * What a number keeps in flight is its pace times its latency (Little's
 * law) times this: room for answers slower than the average
 */
#define INFLIGHT_MARGIN		1.5

/*
 * plus this much of its pace, in seconds: the average hides the moments
 * the sender's loop is in a database cycle (an fsync'd commit), when
 * answers wait to be collected and their places stay taken
 */
#define INFLIGHT_SLACK_SEC	0.05

/*
 * Create the numbers table; it and the FIFOs live in cxt.
 */
void
wasend_numbers_init(MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(NumberState);
	numbers_context = cxt;
	ctl.hcxt = cxt;
	numbers = hash_create("wasend numbers", 64, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Find or create this sender's state for a number.
 */
NumberState *
wasend_number_get(int64 number_id)
{
	bool		found;
	NumberState *ns = hash_search(numbers, &number_id, HASH_ENTER, &found);

	if (!found)
	{
		ns->phone_number_id = NULL;
		ns->access_token = NULL;
		ns->url = NULL;
		ns->rate = 1;
		ns->latency_us = FIRST_LATENCY_US;
		wasend_window_min_init(&ns->latency_floor, wasend_mono_us());
		ns->inflight = 0;
		ns->mine = false;
		ns->was_mine = false;
		ns->gate_key = 0;
		ns->pace_noted_at = 0;
		ns->active = false;
		ns->cap = 64;
		ns->rows = MemoryContextAlloc(numbers_context, sizeof(PendingRow) * ns->cap);
		ns->head = 0;
		ns->count = 0;
	}
	return ns;
}

/*
 * This sender's state for a number, or NULL.
 */
NumberState *
wasend_number_find(int64 number_id)
{
	return hash_search(numbers, &number_id, HASH_FIND, NULL);
}

/*
 * Before a refresh: no number is active until the running set says so.
 * This sender is share_ordinal of its database's share_count senders
 * (see sender_share in db_cycle.c).
 */
void
wasend_numbers_begin_refresh(int ordinal, int count)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		ns->active = false;
		ns->was_mine = ns->mine;
		ns->mine = false;
	}
	active_numbers = 0;
	share_ordinal = ordinal;
	share_count = count;
}

/*
 * Replace a string owned by the sender if it changed.
 */
static void
set_string(char **field, const char *value)
{
	if (*field != NULL && strcmp(*field, value) == 0)
		return;
	if (*field != NULL)
		pfree(*field);
	*field = MemoryContextStrdup(numbers_context, value);
}

/*
 * A number is in the running set: take its current rate, id and token.
 */
void
wasend_number_refresh(NumberState *ns, int rate, const char *phone_number_id,
			   const char *access_token)
{
	char	   *url;

	/* which sender claims the number's rows: see sender_share */
	ns->mine = (ns->number_id % share_count) == share_ordinal;
	if (!ns->active && ns->mine)
		active_numbers++;
	ns->active = true;
	ns->rate = rate;
	set_string(&ns->phone_number_id, phone_number_id);
	ns->gate_key = wasend_rate_gate_key(phone_number_id);
	set_string(&ns->access_token, access_token);
	url = wasend_graph_number_url(phone_number_id, access_token);
	set_string(&ns->url, url);
	pfree(url);
}

/*
 * How many rows this sender should hold for a number: about one second of
 * its rate, at most a batch, and a fair share of wasend.max_inflight among
 * the numbers that are sending (otherwise the first numbers claimed would
 * take the whole budget and the others would wait).
 */
int
wasend_number_target(NumberState *ns)
{
	return Min(Min(wasend_batch_size, ns->rate),
			   Max(1, wasend_max_inflight / Max(active_numbers, 1)));
}

/*
 * How many wasend_send rows (priority >= 0) wait at the front of the
 * number's FIFO.
 */
int
wasend_number_priority_rows(NumberState *ns)
{
	int			n = 0;

	while (n < ns->count && ns->rows[(ns->head + n) % ns->cap].priority >= 0)
		n++;
	return n;
}

/*
 * A request of the number is no longer in flight (its answer came back).
 */
void
wasend_number_answered(NumberState *ns)
{
	if (ns->inflight > 0)
		ns->inflight--;
}

/*
 * An answer of the number came back after latency_us: fold it into the
 * number's moving average (weight 1/8, so a change of the API's latency
 * shows within a few dozen answers and one slow answer does not), and
 * into the least latency of the current window (see number_latency).
 */
void
wasend_number_note_latency(NumberState *ns, int64 latency_us, int64 now)
{
	latency_us = Min(Max(latency_us, 0), MAX_LATENCY_SAMPLE_US);

	/*
	 * A busy sender reads its answers late: what it measures is its own
	 * lateness as much as the API's, and in flight sized by it feeds back
	 * (more in flight, more work, later reads, more in flight).  So while
	 * the sender is busy its answers do not move the number's latency:
	 * what it holds stays where it was when it last had time to spare,
	 * and the pace it reaches is what its CPU delivers.
	 */
	if (sender_busy)
		return;
	ns->latency_us += (latency_us - ns->latency_us) / 8;
	wasend_window_min_note(&ns->latency_floor, latency_us, now, LATENCY_WINDOW_US);
}

/*
 * One turn of the sender's loop ended at now, after waiting idle_us for
 * events.  Over each BUSY_WINDOW_US, a sender that waited less than
 * BUSY_IDLE_SHARE of it is busy: its CPU, not the API, sets its pace, and
 * number_note_latency stops answers from moving the latencies (one
 * window of waiting again lifts that).
 */
void
wasend_numbers_note_turn(int64 idle_us, int64 now)
{
	busy_window_idle += idle_us;
	if (busy_window_at == 0)
		busy_window_at = now;
	else if (now - busy_window_at >= BUSY_WINDOW_US)
	{
		bool		busy = busy_window_idle < BUSY_IDLE_SHARE * (now - busy_window_at);

		if (busy != sender_busy)
			elog(DEBUG1, "wasend sender is %s", busy ? "busy" : "no longer busy");
		sender_busy = busy;
		busy_window_idle = 0;
		busy_window_at = now;
	}
}

/*
 * The latency Little's law uses for a number: the moving average, but
 * never more than twice the least latency of the last window.  A sender
 * whose CPU cannot keep up reads answers late, so the latency it measures
 * grows with what it has in flight; sizing in flight by that feeds back
 * (more in flight, more work per socket event, later reads, more in
 * flight: a 1,000,000-message run went up to wasend.max_inflight, 17,000
 * requests, and 1.7 s of latency).  The least latency of a window is the
 * API's own (some answer is always read at once), and twice it covers an
 * API whose answers spread.
 */
static int64
number_latency(NumberState *ns)
{
	if (ns->latency_floor.last <= 0)
		return ns->latency_us;
	return Min(ns->latency_us, 2 * ns->latency_floor.last);
}

/*
 * How many requests this sender should be able to keep in flight for a
 * number so that the number's pace is never held back by waiting answers:
 * by Little's law, pace times latency, with INFLIGHT_MARGIN.  One sender
 * claims a number's rows (sender_share), so it is the whole pace.
 */
int
wasend_number_inflight_need(NumberState *ns)
{
	double		pace = ns->rate * wasend_rate_headroom;
	double		need = pace * (number_latency(ns) / 1000000.0 * INFLIGHT_MARGIN +
							   INFLIGHT_SLACK_SEC);

	return (int) Min(need + 1, (double) WASEND_MAX_INFLIGHT);
}

/*
 * The most rows this sender holds at once (waiting in the FIFOs or in
 * flight): for every number that sends, what its FIFO keeps
 * (number_target) and what its latency needs in flight, never more than
 * wasend.max_inflight.  So nobody has to tune wasend.max_inflight to the
 * API's latency: it is the cap on memory and on what a crash leaves
 * uncertain, not the working figure.
 */
int
wasend_numbers_budget(void)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	int64		total = 0;

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		if (ns->active && ns->mine)
			total += wasend_number_target(ns) + wasend_number_inflight_need(ns);
	}
	return (int) Min(total, (int64) wasend_max_inflight);
}

/*
 * Put a row into its number's FIFO, growing the ring if needed: at the
 * back when ahead_of < 0, else in front of every row whose priority is
 * below ahead_of (behind those at or above it).  Returns the row's place
 * in the ring (valid until the next insertion).
 */
static PendingRow *
fifo_insert(NumberState *ns, const ClaimedRow *row, int ahead_of,
			XLogRecPtr claim_lsn)
{
	PendingRow *p;
	int			pos;
	int			k;

	if (ns->count == ns->cap)
	{
		PendingRow *grown = MemoryContextAlloc(numbers_context,
											   sizeof(PendingRow) * ns->cap * 2);
		int			i;

		for (i = 0; i < ns->count; i++)
			grown[i] = ns->rows[(ns->head + i) % ns->cap];
		pfree(ns->rows);
		ns->rows = grown;
		ns->head = 0;
		ns->cap *= 2;
	}
	pos = ns->count;
	if (ahead_of >= 0)
	{
		pos = 0;
		while (pos < ns->count &&
			   ns->rows[(ns->head + pos) % ns->cap].priority >= ahead_of)
			pos++;
		for (k = ns->count; k > pos; k--)
			ns->rows[(ns->head + k) % ns->cap] = ns->rows[(ns->head + k - 1) % ns->cap];
	}
	p = &ns->rows[(ns->head + pos) % ns->cap];
	p->id = row->id;
	p->campaign_id = row->campaign_id;
	p->priority = row->priority;
	p->refusals = 0;
	p->claim_lsn = claim_lsn;
	p->body = MemoryContextStrdup(numbers_context, row->body);
	ns->count++;
	return p;
}

/*
 * Add a claimed row to its number's FIFO.  A campaign row goes to the
 * back.  A wasend_send row (priority >= 0) goes to the front, behind the
 * wasend_send rows already there of the same or a higher priority: it
 * takes the number's next free slot of the rate gate, ahead of every
 * campaign row this sender holds.  claim_lsn is the end of the claim's
 * commit: the row's request waits until that is durable.
 */
void
wasend_number_push(NumberState *ns, const ClaimedRow *row, XLogRecPtr claim_lsn)
{
	(void) fifo_insert(ns, row, row->priority, claim_lsn);
}

/*
 * Put a row refused with 130429 back at the front of its number's FIFO, to
 * go in the number's next gate slot (sender.c: a stray 130429 costs one
 * slot, not a retry backoff and a database round trip): a campaign row
 * behind the wasend_send rows waiting there, a wasend_send row where
 * number_push puts it.  The row is still held and still 'sending' with
 * this sender's token.  It keeps its claim's LSN: the settings may have
 * changed since it started.
 */
void
wasend_number_requeue(NumberState *ns, int64 id, int64 campaign_id, int priority,
			   int refusals, const char *body, XLogRecPtr claim_lsn)
{
	ClaimedRow	row;

	row.id = id;
	row.campaign_id = campaign_id;
	row.body = unconstify(char *, body);
	row.priority = priority;
	row.advance = 0;
	fifo_insert(ns, &row, Max(priority, 0), claim_lsn)->refusals = refusals;
}

/*
 * Remove, from every number's FIFO, the rows of campaigns that may no
 * longer send (sends says which may; all rows with drop_all), and store
 * their ids and campaigns in the caller's arrays (room for every row
 * held), so that they can be given back.  They stay counted as held until
 * they are.
 */
int
wasend_numbers_take_stopped(int64 *ids, int64 *campaign_ids,
							WasendCampaignSends sends, bool drop_all)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	int			n = 0;

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		int			kept = 0;
		int			i;

		for (i = 0; i < ns->count; i++)
		{
			PendingRow row = ns->rows[(ns->head + i) % ns->cap];

			if (drop_all || !ns->active || !sends(row.campaign_id))
			{
				ids[n] = row.id;
				campaign_ids[n] = row.campaign_id;
				n++;
				pfree(row.body);
			}
			else
				ns->rows[(ns->head + kept++) % ns->cap] = row;
		}
		ns->count = kept;
	}
	return n;
}

/*
 * How many rows at the front of a number's FIFO have a durable claim
 * (claim_lsn <= durable), at most limit.
 */
static int
durable_prefix(NumberState *ns, XLogRecPtr durable, int limit)
{
	int			n = 0;

	while (n < limit && n < ns->count &&
		   ns->rows[(ns->head + n) % ns->cap].claim_lsn <= durable)
		n++;
	return n;
}

/*
 * How many rows of a number's FIFO have a claim that is not durable yet.
 */
static int
not_durable(NumberState *ns, XLogRecPtr durable)
{
	int			n = 0;
	int			i;

	for (i = 0; i < ns->count; i++)
		if (ns->rows[(ns->head + i) % ns->cap].claim_lsn > durable)
			n++;
	return n;
}

/*
 * Start as many requests as the rate gate allows (none while the sender
 * is stopping), from the rows at the front of each FIFO whose claim is
 * durable up to durable (durability.c).  With count_awaiting, *awaiting
 * counts the rows of active numbers whose claim is not (a scan of the
 * FIFOs: the caller asks only while some claim is not durable).  Returns
 * the earliest monotonic time at which the gate opens again for a number
 * that still has rows waiting (0 if none waits).
 */
int64
wasend_numbers_start_sends(int64 now, bool stopping, XLogRecPtr durable,
						   bool count_awaiting, int *awaiting)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	int64		wake = 0;

	*awaiting = 0;
	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		int			granted;
		int			i;
		int64		next;
		int			npri;
		int			room;
		int			ready;

		if (ns->count == 0 || !ns->active || stopping)
			continue;
		/* rows whose claim a failover could still lose do not start */
		if (count_awaiting)
			*awaiting += not_durable(ns, durable);
		ready = durable_prefix(ns, durable, WASEND_MAX_RATE);
		if (ready == 0)
			continue;
		/*
		 * never more in flight than twice what Little's law asks for the
		 * number (so that one number whose API stalls cannot take the
		 * sender's whole budget, while a slow turn of the loop does not
		 * hold the number back): its answers make room, and wake the loop
		 */
		room = 2 * wasend_number_inflight_need(ns) - ns->inflight;
		if (room <= 0)
			continue;
		/* wasend_send rows at the front go first, with priority */
		npri = wasend_number_priority_rows(ns);
		granted = wasend_rate_gate_take(ns->gate_key, ns->rate,
								 Min(Min(npri > 0 ? Min(npri, ready) : ready, WASEND_MAX_RATE), room),
								 now, &next, npri > 0);
		for (i = 0; i < granted; i++)
		{
			PendingRow *p = &ns->rows[ns->head];

			HttpRequest *req = wasend_http_start(ns->url, ns->access_token, p->body, p->id,
										  p->campaign_id, ns->number_id,
										  ns->gate_key);

			req->refusals = p->refusals;
			req->priority = p->priority;
			req->claim_lsn = p->claim_lsn;
			ns->inflight++;
			pfree(p->body);
			ns->head = (ns->head + 1) % ns->cap;
			ns->count--;
		}
		if (granted > 0)
			wasend_metrics_note_inflight(ns->phone_number_id, granted);
		if (now >= ns->pace_noted_at + PACE_NOTE_US)
		{
			wasend_metrics_note_pace(ns->phone_number_id, wasend_rate_gate_pace(ns->gate_key, ns->rate, now));
			ns->pace_noted_at = now;
		}
		if (ns->count > 0 && (wake == 0 || next < wake))
			wake = next;
	}
	return wake;
}
