/*-------------------------------------------------------------------------
 *
 * worker_session.h
 *		The session a worker runs in, settings pinned; worker_session.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_WORKER_SESSION_H
#define WASEND_WORKER_SESSION_H

extern void wasend_worker_connect(const char *dbname, Oid dboid,
								  const char *lock_timeout, bool sender);

#endif							/* WASEND_WORKER_SESSION_H */
