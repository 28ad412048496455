/*-------------------------------------------------------------------------
 *
 * access.c
 *		Who may use wasend in this database: the checks behind the API
 *		wrappers and the row level security of wasend's tables.
 *
 * The constraint: an API gate passes only after the SECURITY INVOKER
 * wrapper armed a one-shot pass for its level in the same transaction;
 * wasend.database_access is read as the bootstrap superuser.  The full
 * description: docs/internals/access.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"


PG_FUNCTION_INFO_V1(wasend_access_may);
PG_FUNCTION_INFO_V1(wasend_access_enter);
PG_FUNCTION_INFO_V1(wasend_access_consume);

/* the levels, lowest first; 0 is no access */
static const char *const access_levels[] = {"viewer", "operator", "admin"};

/* the pass an API wrapper armed for its gate: the level, 0 for none */
static int	armed_level = 0;
static bool callbacks_registered = false;

/*
 * Level number of a level name (1 = viewer ... 3 = admin).  The functions
 * that take one may be called by hand, so an unknown name is a user's
 * error.
 */
static int
level_of(const char *name)
{
	int			i;

	for (i = 0; i < lengthof(access_levels); i++)
		if (strcmp(name, access_levels[i]) == 0)
			return i + 1;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown wasend access level \"%s\"", name),
			 errhint("The levels are viewer, operator and admin.")));
	return 0;					/* keep compiler quiet */
}

/*
 * The highest level role has in this database's wasend.database_access,
 * through any role it is a member of; superusers have every level.  0 if
 * none, or if the extension's table is not there.
 */
static int
access_of(Oid role)
{
	Oid			save_userid;
	int			save_sec;
	volatile int best = 0;

	if (superuser_arg(role))
		return lengthof(access_levels);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		Oid			argtypes[1] = {OIDOID};
		Datum		args[1];
		uint64		i;

		args[0] = ObjectIdGetDatum(role);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "wasend: SPI_connect failed");
		/* every name qualified: this runs inside the caller's statement */
		if (SPI_execute_with_args(
								  "SELECT a.access FROM wasend.database_access a"
								  " JOIN pg_catalog.pg_roles g"
								  " ON g.rolname OPERATOR(pg_catalog.=) a.role_name"
								  " WHERE pg_catalog.pg_has_role($1, g.oid, 'USAGE')",
								  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "wasend: reading wasend.database_access failed");
		for (i = 0; i < SPI_processed; i++)
		{
			char	   *level = SPI_getvalue(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1);
			int			n = level ? level_of(level) : 0;

			if (n > best)
				best = n;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	return best;
}

/*
 * Transaction callbacks: a pass never outlives the (sub)transaction that
 * armed it, so an error between wrapper and gate leaves nothing behind.
 */
static void
access_xact_callback(XactEvent event, void *arg)
{
	armed_level = 0;
}

static void
access_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		armed_level = 0;
}

/*
 * wasend._may(level): may the current role use wasend at this level in
 * this database?  The tables' row level security policies call it.
 */
Datum
wasend_access_may(PG_FUNCTION_ARGS)
{
	int			level = level_of(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	PG_RETURN_BOOL(access_of(GetUserId()) >= level);
}

/*
 * wasend._api_enter(level): an API wrapper's check of the role calling it.
 * An ERROR with the grant that would allow it, or arms the pass its gate
 * consumes.
 */
Datum
wasend_access_enter(PG_FUNCTION_ARGS)
{
	const char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			level = level_of(name);
	Oid			role = GetUserId();

	if (access_of(role) < level)
	{
		char	   *rolname = GetUserNameFromId(role, false);

		/*
		 * The refused statement may carry a token (wasend_add_number): it is
		 * not logged with the error.  The setting lasts until the error ends
		 * the transaction.
		 */
		(void) set_config_option("log_min_error_statement", "panic",
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: role %s has no wasend %s access in database %s",
						quote_identifier(rolname), name,
						quote_identifier(get_database_name(MyDatabaseId))),
				 errhint("A wasend admin of this database grants it with SELECT wasend.wasend_grant_access(%s, '%s');",
						 quote_literal_cstr(rolname), name)));
	}
	if (!callbacks_registered)
	{
		RegisterXactCallback(access_xact_callback, NULL);
		RegisterSubXactCallback(access_subxact_callback, NULL);
		callbacks_registered = true;
	}
	armed_level = level;
	PG_RETURN_VOID();
}

/*
 * wasend._api_consume(level): a gate's check that its wrapper armed a pass
 * of at least this level just before; disarms it.
 */
Datum
wasend_access_consume(PG_FUNCTION_ARGS)
{
	int			level = level_of(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	int			armed = armed_level;

	armed_level = 0;
	if (armed < level)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: wasend's functions are called through schema wasend"),
				 errhint("Call wasend.wasend_...() instead of the functions of schema wasend_impl.")));
	PG_RETURN_VOID();
}
