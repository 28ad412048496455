/*-------------------------------------------------------------------------
 *
 * rate_gate.h
 *		Per-phone-number send pacing shared by all senders; rate_gate.c
 *		owns it.  Times are wasend_mono_us().
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_RATE_GATE_H
#define WASEND_RATE_GATE_H

/* How many distinct phone numbers the gate can pace at once. */
#define WASEND_GATE_SLOTS		256

/* Highest max_send_rate_per_sec Meta grants, and the gate's ring size. */
#define WASEND_MAX_RATE			1000

extern Size wasend_rate_gate_shmem_size(void);
extern void wasend_rate_gate_request_locks(void);
extern void wasend_rate_gate_shmem_init(void);
extern int64 wasend_rate_gate_key(const char *phone_number_id);
extern int	wasend_rate_gate_take(int64 key, int rate_per_sec, int want,
								  int64 now, int64 *next_slot,
								  bool priority);
extern void wasend_rate_gate_on_wire(int64 key, int64 when, bool granted);
extern void wasend_rate_gate_unsent(int64 key);
extern void wasend_rate_gate_slow_down(int64 key, int64 now);
extern void wasend_rate_gate_note_rttvar(int64 key, int64 rttvar_us, int64 now);
extern double wasend_rate_gate_pace(int64 key, int rate, int64 now);

#endif							/* WASEND_RATE_GATE_H */
