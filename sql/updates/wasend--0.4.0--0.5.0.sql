/*
 * wasend--0.4.0--0.5.0.sql — what the senders measure (0.5.0).
 *
 * As before, there is no wasend--0.5.0.sql: CREATE EXTENSION wasend
 * installs 0.2.0 and runs the update scripts (test/t/020_upgrade.pl
 * compares a fresh install with an updated one).  The security rules of
 * wasend--0.2.0.sql hold here too.
 *
 * wasend_worker_stats() gains five columns (README: "Performance"):
 *
 *	hold_target		the rows the sender means to hold now: per number it
 *					sends for, its pace times its measured latency (Little's
 *					law) plus its queue, capped by wasend.max_inflight;
 *	latency_p50_ms, latency_p99_ms
 *					percentiles of the time from handing a request to curl
 *					to collecting its answer;
 *	added_p50_ms, added_p99_ms
 *					the same minus the time the server says it spent
 *					(Server-Timing), for the answers that say it: the
 *					latency wasend added.  NULL when no answer said it.
 *
 * A set-returning function's columns cannot change in place: it is dropped
 * and made again, with the same grants.
 */

\echo Use "ALTER EXTENSION wasend UPDATE TO '0.5.0'" to load this file. \quit

DROP FUNCTION wasend_worker_stats();
CREATE FUNCTION wasend_worker_stats(
    OUT sender integer, OUT pid integer, OUT in_flight integer, OUT held integer,
    OUT sent bigint, OUT failed bigint,
    OUT connections_opened bigint, OUT connections_reused bigint,
    OUT mean_latency_ms double precision,
    OUT hold_target integer,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT added_p50_ms double precision, OUT added_p99_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_worker_stats() TO wasend_viewer;
