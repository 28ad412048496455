/*
 * recipient.c: the judge of a recipient (wasend._recipient_verdict) and
 * the national-number parser (wasend._phone_parse), in C.
 *
 * Every row queued passes the verdict (the send_queue trigger,
 * wasend_enqueue, wasend_send, ...), so it must cost little: a
 * well-formed number is judged without a query.  The country calling
 * codes and countries it needs come from wasend.country_zones, which
 * admins may change; this backend keeps them in a hash table, loaded on
 * first use and dropped when the table changes.  A statement trigger on
 * the table (wasend._country_zones_changed) registers a relcache
 * invalidation of it: PostgreSQL delivers that to this backend after the
 * changing command (and again if its transaction rolls back) and to every
 * other backend when it commits, and each drops its copy.  A copy loaded
 * under a transaction snapshot (REPEATABLE READ, SERIALIZABLE) may be
 * older than a change already delivered: it is dropped at the end of that
 * transaction.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "phone.h"

PG_FUNCTION_INFO_V1(wasend_recipient_verdict);
PG_FUNCTION_INFO_V1(wasend_country_zones_changed);
PG_FUNCTION_INFO_V1(wasend_phone_parse_sql);

/* A hash key: 'c' and a calling code, or 'r' and a country. */
#define ZONE_KEY_LEN 9

typedef struct ZoneEntry
{
	char		key[ZONE_KEY_LEN];
} ZoneEntry;

static HTAB *zones = NULL;		/* this backend's copy, or NULL */
static Oid	zones_relid = InvalidOid;	/* wasend.country_zones when loaded */
static bool zones_stale = false;	/* changed since it was loaded */
static bool zones_xact_only = false;	/* drop it when the transaction ends */
static bool zones_callbacks = false;

static const char *const HINT_NULL = "Give the phone number in international format, e.g. 15551234567, or the user's BSUID, e.g. US.13491208655302741918.";
static const char *const HINT_INTL = "Give the number in international format with its country code, e.g. 4915112345678 or 15551234567.";

/* A change of wasend.country_zones (or of every relation): drop the copy. */
static void
zones_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == zones_relid)
		zones_stale = true;
}

/* A copy loaded under a transaction snapshot lives as long as it. */
static void
zones_xact_callback(XactEvent event, void *arg)
{
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		 event == XACT_EVENT_PREPARE) && zones_xact_only)
		zones_stale = true;
}

/*
 * The calling codes and countries of wasend.country_zones, loaded with one
 * query when there is no current copy.  The query runs as the caller, as
 * the SQL judge's did.
 */
static HTAB *
zones_get(void)
{
	HASHCTL		ctl;
	HTAB	   *h;
	uint64		i;
	bool		read_only;

	if (zones != NULL && !zones_stale)
		return zones;
	if (!zones_callbacks)
	{
		CacheRegisterRelcacheCallback(zones_relcache_callback, (Datum) 0);
		RegisterXactCallback(zones_xact_callback, NULL);
		zones_callbacks = true;
	}
	if (zones != NULL)
	{
		hash_destroy(zones);
		zones = NULL;
	}
	zones_stale = false;
	/*
	 * A parallel worker may not start a command of its own: it reads with
	 * the query's snapshot, which may be older than a change already
	 * delivered, as a transaction snapshot may.
	 */
	read_only = IsInParallelMode();
	zones_xact_only = IsolationUsesXactSnapshot() || read_only;
	zones_relid = get_relname_relid("country_zones", get_namespace_oid("wasend", false));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ZONE_KEY_LEN;
	ctl.entrysize = sizeof(ZoneEntry);
	ctl.hcxt = TopMemoryContext;
	h = hash_create("wasend country_zones", 512, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT z.calling_code, z.country FROM wasend.country_zones z", read_only, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading wasend.country_zones failed");
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;
			char	   *code = SPI_getvalue(t, d, 1);
			char	   *country = SPI_getvalue(t, d, 2);
			char		key[ZONE_KEY_LEN];

			if (code != NULL && strlen(code) <= 7)
			{
				snprintf(key, sizeof(key), "c%s", code);
				hash_search(h, key, HASH_ENTER, NULL);
			}
			if (country != NULL && strlen(country) == 2)
			{
				snprintf(key, sizeof(key), "r%s", country);
				hash_search(h, key, HASH_ENTER, NULL);
			}
		}
		/*
		 * No rows: the table is empty, or row level security hid it from
		 * this role.  Kept for this call only, not for other roles.
		 */
		if (SPI_processed == 0)
			zones_stale = true;
		SPI_finish();
	}
	PG_CATCH();
	{
		hash_destroy(h);
		PG_RE_THROW();
	}
	PG_END_TRY();
	zones = h;
	return h;
}

/* Does wasend.country_zones list a calling code that starts digits? */
static bool
zones_know_number(const char *digits, int len)
{
	HTAB	   *h = zones_get();
	char		key[ZONE_KEY_LEN];
	int			n;

	key[0] = 'c';
	for (n = 1; n <= 7 && n <= len; n++)
	{
		memcpy(key + 1, digits, n);
		key[n + 1] = '\0';
		if (hash_search(h, key, HASH_FIND, NULL) != NULL)
			return true;
	}
	return false;
}

/* Does wasend.country_zones list the country of a BSUID? */
static bool
zones_know_country(const char *r)
{
	char		key[ZONE_KEY_LEN] = {'r', r[0], r[1], '\0'};

	return hash_search(zones_get(), key, HASH_FIND, NULL) != NULL;
}

/* Is s (len bytes) a BSUID: ^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$ ? */
static bool
is_bsuid(const char *s, int len)
{
	int			i = 3;

	if (len < 4 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' || s[2] != '.')
		return false;
	if (len > 7 && memcmp(s + 3, "ENT.", 4) == 0)
		i = 7;
	if (len - i < 1 || len - i > 128)
		return false;
	for (; i < len; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/*
 * Why d (dlen bytes, a recipient without its leading "+") is not a phone
 * number wasend takes, or NULL (and *pbuf NULL) when it is one; *hint
 * says how to fix it.  A problem with a figure in it comes in *pbuf.
 */
static const char *
judge_digits(const char *d, int dlen, char **pbuf, const char **hint)
{
	bool		digits = true;
	bool		letters = false;
	int			i;

	if (dlen == 0)
	{
		*hint = HINT_NULL;
		return "it is empty";
	}
	for (i = 0; i < dlen; i++)
	{
		if (d[i] < '0' || d[i] > '9')
			digits = false;
		if ((d[i] >= 'A' && d[i] <= 'Z') || (d[i] >= 'a' && d[i] <= 'z'))
			letters = true;
	}
	if (!digits && letters)
	{
		*hint = "A BSUID is two capital letters, a dot, and up to 128 letters and digits (\"ENT.\" after the dot for a parent BSUID), e.g. US.13491208655302741918; a phone number has digits only.";
		return "it has letters but is not a BSUID";
	}
	if (!digits)
	{
		*hint = "Normalise it first: SELECT wasend.wasend_normalize_phone(phone, default_country) drops spaces, dashes, dots and brackets, reads a leading 00 and makes a national number international.";
		return "it has characters other than digits and a leading \"+\"";
	}
	if (dlen >= 2 && d[0] == '0' && d[1] == '0')
	{
		*hint = "Give it without the 00 (00491512345678 is 491512345678), or normalise it with SELECT wasend.wasend_normalize_phone(phone).";
		return "it starts with the international prefix 00";
	}
	if (d[0] == '0')
	{
		*hint = "Make it international with SELECT wasend.wasend_normalize_phone(phone, default_country), e.g. wasend.wasend_normalize_phone('01512345678', 'DE') is 491512345678.";
		return "it is a national number (leading 0) without its country calling code";
	}
	if (dlen < 7 || dlen > 15)
	{
		*hint = HINT_INTL;
		*pbuf = psprintf("it has %d digits, a phone number in international format 7 to 15", dlen);
		return NULL;
	}
	if (!zones_know_number(d, dlen))
	{
		*hint = HINT_INTL;
		return "no country calling code wasend.country_zones lists starts it";
	}
	return NULL;
}

/*
 * wasend._recipient_verdict(r text, OUT normalized text, OUT problem
 * text, OUT hint text): the recipient as wasend stores it, or why it is
 * not one and how to fix it (the rules: sql/src/01_helpers.sql).
 */
Datum
wasend_recipient_verdict(PG_FUNCTION_ARGS)
{
	TupleDesc	desc = (TupleDesc) fcinfo->flinfo->fn_extra;
	Datum		values[3] = {0};
	bool		nulls[3] = {true, true, true};
	const char *problem = NULL;
	const char *hint = NULL;
	char	   *pbuf = NULL;

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "wasend._recipient_verdict must return a record");
		desc = BlessTupleDesc(CreateTupleDescCopy(desc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = desc;
	}

	if (PG_ARGISNULL(0))
	{
		problem = "it is null";
		hint = HINT_NULL;
	}
	else
	{
		text	   *t = PG_GETARG_TEXT_PP(0);
		const char *r = VARDATA_ANY(t);
		int			len = VARSIZE_ANY_EXHDR(t);
		const char *d = r;
		int			dlen = len;

		if (is_bsuid(r, len))
		{
			if (zones_know_country(r))
			{
				values[0] = PointerGetDatum(t);
				nulls[0] = false;
			}
			else
			{
				pbuf = psprintf("the BSUID's country %.2s is not one wasend.country_zones lists", r);
				hint = "Give the BSUID exactly as Meta gave it; its first two letters are the user's country.";
			}
		}
		else
		{
			if (dlen > 0 && d[0] == '+')
				d++, dlen--;
			problem = judge_digits(d, dlen, &pbuf, &hint);
			if (problem == NULL && pbuf == NULL)
			{
				values[0] = d == r ? PointerGetDatum(t) : PointerGetDatum(cstring_to_text_with_len(d, dlen));
				nulls[0] = false;
			}
		}
	}
	if (pbuf != NULL)
		problem = pbuf;
	if (problem != NULL)
	{
		values[1] = CStringGetTextDatum(problem);
		nulls[1] = false;
	}
	if (hint != NULL)
	{
		values[2] = CStringGetTextDatum(hint);
		nulls[2] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * The statement trigger of wasend.country_zones: every backend drops its
 * copy of the table (see the top of this file).
 */
Datum
wasend_country_zones_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wasend._country_zones_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	zones_stale = true;
	return PointerGetDatum(NULL);
}

/*
 * wasend._phone_parse(phone text, country text, OUT normalized text, OUT
 * problem text): a number written as in country (an ISO 3166 code, or a
 * calling code in digits: its main country) made international by
 * libphonenumber: its digits in E.164 without the "+", or why not.
 */
Datum
wasend_phone_parse_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2] = {0};
	bool		nulls[2] = {true, true};
	char	   *phone = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *country = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char		region[8];
	char		out[64];
	const char *problem = NULL;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "wasend._phone_parse must return a record");
	desc = BlessTupleDesc(desc);

	if (strspn(country, "0123456789") == strlen(country) && strlen(country) > 0 && strlen(country) <= 3)
	{
		if (!wasend_phone_region_of(atoi(country), region, sizeof(region)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("no country of calling code %s has national numbers", country),
					 errhint("Give the country's ISO 3166 code (e.g. DE), or the number in international format.")));
	}
	else
		strlcpy(region, country, sizeof(region));

	switch (wasend_phone_parse(phone, region, out, sizeof(out)))
	{
		case WASEND_PHONE_OK:
			values[0] = CStringGetTextDatum(out + 1);
			nulls[0] = false;
			break;
		case WASEND_PHONE_NOT_A_NUMBER:
			problem = "it is not a phone number";
			break;
		case WASEND_PHONE_NO_COUNTRY:
			problem = psprintf("libphonenumber knows no national numbers of country %s", region);
			break;
		case WASEND_PHONE_TOO_SHORT:
			problem = psprintf("it is too short for a number of country %s", region);
			break;
		case WASEND_PHONE_TOO_LONG:
			problem = psprintf("it is too long for a number of country %s", region);
			break;
		case WASEND_PHONE_BAD_LENGTH:
			problem = psprintf("no number of country %s has its length", region);
			break;
		case WASEND_PHONE_LOCAL_ONLY:
			problem = psprintf("it is a local number of country %s without its area code", region);
			break;
		case WASEND_PHONE_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("libphonenumber failed to parse a phone number")));
	}
	if (problem != NULL)
	{
		values[1] = CStringGetTextDatum(problem);
		nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
