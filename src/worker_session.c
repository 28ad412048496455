/*-------------------------------------------------------------------------
 *
 * worker_session.c
 *		How a wasend worker connects to its database, and the settings its
 *		session runs with whatever the database or a role says.
 *
 * The constraint: every setting from pg_db_role_setting except wasend.*
 * goes back to the server's value, and the settings the workers rely on
 * are pinned with PGC_S_OVERRIDE.  The full description:
 * docs/internals/worker_session.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"

#include "worker_session.h"

/* a setting's value as the server gave it to the worker, before connecting */
typedef struct ServerSetting
{
	char	   *name;
	char	   *value;			/* NULL: none (a string setting without one) */
} ServerSetting;

static ServerSetting *server_settings = NULL;
static int	nserver_settings = 0;

/*
 * Every setting the server knows, in an array the caller pfrees; their
 * number in *n.  PostgreSQL 16 keeps them in a hash table and
 * get_guc_variables() returns a palloc'd copy and its length; until 15 it
 * returned the array itself, counted by GetNumConfigOptions(), so this
 * copies it for both to be freed alike.
 */
static struct config_generic **
all_settings(int *n)
{
#if PG_VERSION_NUM >= 160000
	return get_guc_variables(n);
#else
	struct config_generic **vars;

	*n = GetNumConfigOptions();
	vars = palloc(sizeof(struct config_generic *) * *n);
	memcpy(vars, get_guc_variables(), sizeof(struct config_generic *) * *n);
	return vars;
#endif
}

/*
 * Remember the value of every setting a database or role could set
 * (user- and superuser-settable ones), as the server gave it to this
 * process: the worker has not connected yet, so none of
 * pg_db_role_setting applies.  PL/pgSQL is loaded first, so that its
 * settings are real ones here and not placeholders (wasend's functions
 * are PL/pgSQL, and plpgsql.variable_conflict or plpgsql.extra_errors
 * change how they run).
 */
static void
capture_server_settings(void)
{
	struct config_generic **vars;
	int			n;
	int			i;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	load_file("plpgsql", false);
	vars = all_settings(&n);
	server_settings = palloc(sizeof(ServerSetting) * n);
	nserver_settings = 0;
	for (i = 0; i < n; i++)
	{
		struct config_generic *g = vars[i];
		const char *value;

		if ((g->context != PGC_USERSET && g->context != PGC_SUSET) ||
			(g->flags & GUC_CUSTOM_PLACEHOLDER))
			continue;
		value = GetConfigOption(g->name, true, false);
		server_settings[nserver_settings].name = pstrdup(g->name);
		server_settings[nserver_settings].value = value ? pstrdup(value) : NULL;
		nserver_settings++;
	}
	pfree(vars);
	MemoryContextSwitchTo(old);
}

/*
 * Forget the captured values once the session is set up.
 */
static void
forget_server_settings(void)
{
	int			i;

	for (i = 0; i < nserver_settings; i++)
	{
		pfree(server_settings[i].name);
		if (server_settings[i].value)
			pfree(server_settings[i].value);
	}
	pfree(server_settings);
	server_settings = NULL;
	nserver_settings = 0;
}

/*
 * The value the server gave this worker for a setting, or NULL.
 */
static const ServerSetting *
server_setting(const char *name)
{
	int			i;

	for (i = 0; i < nserver_settings; i++)
		if (pg_strcasecmp(server_settings[i].name, name) == 0)
			return &server_settings[i];
	return NULL;
}

/*
 * Set one setting for the worker's whole session, over any database,
 * role or postgresql.conf value.  A value its check refuses is logged and
 * the setting left as it was (with elevel WARNING); the fixed pins below
 * are all valid.
 */
static void
pin(const char *name, const char *value, int elevel)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_OVERRIDE,
							 GUC_ACTION_SET, true, elevel, false);
}

/*
 * Put every setting that pg_db_role_setting gave this session back to the
 * server's value; says which ones in names (comma-separated).
 */
static void
revert_imposed_settings(StringInfo names)
{
	int			n;
	struct config_generic **vars = all_settings(&n);
	int			i;

	for (i = 0; i < n; i++)
	{
		struct config_generic *g = vars[i];
		const ServerSetting *s;

		if (g->source != PGC_S_GLOBAL && g->source != PGC_S_DATABASE &&
			g->source != PGC_S_USER && g->source != PGC_S_DATABASE_USER)
			continue;
		/*
		 * A placeholder (a prefix no loaded module defines, such as
		 * myapp.x) has no server value to go back to, and wasend reads no
		 * such setting.
		 */
		if ((g->flags & GUC_CUSTOM_PLACEHOLDER) ||
			pg_strncasecmp(g->name, "wasend.", 7) == 0)
			continue;
		appendStringInfo(names, "%s%s", names->len > 0 ? ", " : "", g->name);
		s = server_setting(g->name);
		/* role and session_authorization have none: they are pinned */
		if (s != NULL && s->value != NULL)
			pin(g->name, s->value, WARNING);
	}
	pfree(vars);
}

/*
 * Connect this worker to its database (by dboid if valid, else by dbname;
 * neither, for the launcher, which reads only shared catalogs), then set
 * up its session: ignore what pg_db_role_setting imposed (see the file's
 * header) and pin what the workers rely on:
 *
 *	session_authorization, role: the bootstrap superuser the worker
 *	connected as, never a role a database names;
 *	search_path = pg_catalog, pg_temp: the workers run as superuser, so no
 *	function or operator they call may resolve through public, a schema
 *	named in ALTER DATABASE/ROLE ... SET search_path, or pg_temp (every
 *	wasend object is schema-qualified);
 *	exit_on_error = off: an ERROR inside a worker's PG_TRY is handled there
 *	(the row or campaign at fault is recorded); turned into a FATAL, it
 *	would end the worker with requests in flight, whose rows are then sent
 *	again;
 *	lock_timeout (unless NULL: the launcher's): a statement that would wait
 *	on a lock a user holds gives up quickly and is tried again on a later
 *	turn (see db_cycle.c);
 *	synchronous_commit = local: a commit never waits for a synchronous
 *	standby, during which curl would not be driven and answers that
 *	arrived would turn into timeouts and duplicates; nor is it off, which
 *	could lose a recorded send in a crash and send it again;
 *	read committed, read-write, not deferrable, no statement, idle or
 *	idle-in-transaction timeout: a database default of repeatable read
 *	would give the completion check an old snapshot (and strand rows),
 *	read-only would stop all work, a timeout would cancel it;
 *	session_replication_role = origin: wasend's triggers always fire;
 *	standard_conforming_strings = on, transform_null_equals = off: the
 *	SQL means what it says;
 *	jit = off: the workers' statements run in milliseconds, and their
 *	estimated cost over a large queue crosses jit_above_cost, so JIT
 *	compiled every claim (1.7 s per claim at 1M queued rows, against
 *	9 ms without, bench/claim.sh);
 *	timezone_abbreviations = Default: zones are checked as names
 *	(wasend._is_zone_name), abbreviations fixed;
 *	for a sender, random_page_cost = 1.1: the part of the queue the claims
 *	touch is hot in shared buffers; with the default the planner prefers
 *	walking the primary key in id order (the heap is perfectly correlated
 *	with id) over send_queue_ready_idx, and then filters past every row
 *	already sent.
 *
 * The settings it ignored are logged, once, by name.
 */
void
wasend_worker_connect(const char *dbname, Oid dboid, const char *lock_timeout,
					  bool sender)
{
	StringInfoData ignored;

	capture_server_settings();
	if (OidIsValid(dboid))
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
		BackgroundWorkerInitializeConnection(dbname, NULL, 0);

	initStringInfo(&ignored);
	/* role and session_authorization look their role up */
	StartTransactionCommand();
	revert_imposed_settings(&ignored);
	pin("session_authorization",
		GetUserNameFromId(GetAuthenticatedUserId(), false), ERROR);
	pin("role", "none", ERROR);
	pin("search_path", "pg_catalog, pg_temp", ERROR);
	pin("exit_on_error", "off", ERROR);
	if (lock_timeout != NULL)
		pin("lock_timeout", lock_timeout, ERROR);
	pin("synchronous_commit", "local", ERROR);
	pin("default_transaction_isolation", "read committed", ERROR);
	pin("default_transaction_read_only", "off", ERROR);
	pin("default_transaction_deferrable", "off", ERROR);
	pin("statement_timeout", "0", ERROR);
	pin("idle_in_transaction_session_timeout", "0", ERROR);
	pin("idle_session_timeout", "0", ERROR);
	pin("session_replication_role", "origin", ERROR);
	pin("standard_conforming_strings", "on", ERROR);
	pin("transform_null_equals", "off", ERROR);
	pin("jit", "off", ERROR);
	pin("timezone_abbreviations", "Default", ERROR);
	if (sender)
		pin("random_page_cost", "1.1", ERROR);
	CommitTransactionCommand();
	forget_server_settings();

	if (ignored.len > 0)
		ereport(LOG,
				(errmsg("%s ignores settings of ALTER DATABASE/ROLE ... SET: %s",
						MyBgworkerEntry->bgw_type, ignored.data),
				 errdetail("A wasend worker runs with the server's settings and its own pinned ones.")));
	pfree(ignored.data);
}
