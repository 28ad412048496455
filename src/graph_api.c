/*-------------------------------------------------------------------------
 *
 * graph_api.c
 *		What wasend knows of Meta's Graph API: the URLs it calls (with
 *		appsecret_proof), the redaction of a token an answer echoes, and
 *		reading an answer's error code.
 *
 * Answers are read only with PostgreSQL's own JSON parser, guarded so
 * that no answer, however deep or broken, raises an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "graph_api.h"
#include "secrets.h"
#include "settings.h"
#include "signature.h"

/* the number's own token is redacted from error answers if this long */
#define MIN_REDACTED_TOKEN		8

/* Meta's error code of a throughput refusal */
#define THROUGHPUT_REFUSED		130429

/*
 * A Graph API URL of a number: base/{phone_number_id}{rest}, with
 * appsecret_proof (hex HMAC-SHA256 of the token keyed with the app secret,
 * see signature.c) when wasend.app_secret_file is set.  A secret file that
 * cannot be used is reported (by path, never content) and the requests go
 * without the proof: the API's answer then says what it thinks of that.
 */
static char *
graph_url(const char *phone_number_id, const char *rest, const char *token)
{
	static char last_error[256] = "";
	char		proof[65];
	const char *secret;
	const char *error;

	/* say it once, and again only when the problem changes */
	secret = wasend_secret(WASEND_SECRET_APP, &error);
	if (error != NULL && strcmp(error, last_error) != 0)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wasend sends without appsecret_proof: %s", error)));
	strlcpy(last_error, error ? error : "", sizeof(last_error));
	if (secret == NULL)
		return psprintf("%s/%s%s", wasend_api_base_url, phone_number_id, rest);
	wasend_hmac_sha256_hex(secret, token, strlen(token), proof);
	return psprintf("%s/%s%s%cappsecret_proof=%s",
					wasend_api_base_url, phone_number_id, rest,
					strchr(rest, '?') ? '&' : '?', proof);
}

/*
 * The URL a number's messages are posted to: base/{phone_number_id}/messages.
 */
char *
wasend_graph_number_url(const char *phone_number_id, const char *token)
{
	return graph_url(phone_number_id, "/messages", token);
}

/*
 * The URL that reads a number's messaging limit, quality and health:
 * base/{phone_number_id}?fields=..., with appsecret_proof as for sends.
 */
char *
wasend_graph_limits_url(const char *phone_number_id, const char *token)
{
	return graph_url(phone_number_id,
					 "?fields=whatsapp_business_manager_messaging_limit,quality_rating,health_status,display_phone_number,throughput",
					 token);
}

/*
 * An error answer with the access token its request carried replaced, as
 * Meta's text for a malformed token can echo it; the answer itself when it
 * does not contain the token.  The copy is palloc'd.
 */
const char *
wasend_redact_token(const char *resp, const char *token)
{
	StringInfoData buf;
	size_t		tlen;
	const char *p;
	const char *hit;

	if (resp == NULL || token == NULL ||
		(tlen = strlen(token)) < MIN_REDACTED_TOKEN ||
		strstr(resp, token) == NULL)
		return resp;
	initStringInfo(&buf);
	for (p = resp; (hit = strstr(p, token)) != NULL; p = hit + tlen)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, "[redacted token]");
	}
	appendStringInfoString(&buf, p);
	return buf.data;
}

/*
 * Parse text as JSON in the database encoding with PostgreSQL's parser,
 * running sem's actions: true if it is JSON.  The parser reports syntax
 * errors by return code, but its recursion raises an ERROR on a deeply
 * nested text (1 MB of "[" exhausts the stack check): that is caught here
 * and the text is simply not JSON.  So this never throws, and callers
 * outside a transaction (the webhook worker, a sender collecting answers)
 * can use it on anything a client or the API sends.  The lexer and what
 * the actions are given live in a context of their own, deleted before
 * returning, also after an error.
 */
bool
wasend_json_parse_guarded(const char *text, size_t len,
						  const JsonSemAction *sem, bool need_escapes)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext tmp;
	volatile bool ok = false;

	if (text == NULL || len == 0 || !pg_verifymbstr(text, len, true))
		return false;
	tmp = AllocSetContextCreate(cxt, "wasend JSON parse", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(tmp);
	PG_TRY();
	{
		JsonLexContext *lex;
#if PG_VERSION_NUM >= 170000
		/* since PostgreSQL 17 the caller may provide the lexer's memory */
		JsonLexContext lexbuf;

		lex = makeJsonLexContextCstringLen(&lexbuf, unconstify(char *, text), len,
										   GetDatabaseEncoding(), need_escapes);
#else
		lex = makeJsonLexContextCstringLen(unconstify(char *, text), len,
										   GetDatabaseEncoding(), need_escapes);
#endif
#if PG_VERSION_NUM >= 180000
		ok = pg_parse_json(lex, sem) == JSON_SUCCESS;
#else
		/* the actions are const since PostgreSQL 18 (nullSemAction too) */
		ok = pg_parse_json(lex, unconstify(JsonSemAction *, sem)) == JSON_SUCCESS;
#endif
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(tmp);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(tmp);
	return ok;
}

/*
 * Semantic actions of wasend_answer_error_code: follow the parser down to
 * the number at error.code.  A key given twice counts by its last value,
 * as jsonb keeps it, so that the sender and the record statement (which
 * reads error.code through jsonb) never disagree about one answer.
 */
typedef struct ErrorCodeState
{
	int			depth;			/* objects and arrays open */
	bool		in_error;		/* inside the top-level "error" object */
	bool		at_code;		/* at the value of error.code */
	bool		found;
	int			code;
} ErrorCodeState;

/* since PostgreSQL 16 a semantic action returns an error code */
#if PG_VERSION_NUM >= 160000
#define JSON_ACTION_RESULT	JsonParseErrorType
#define JSON_ACTION_DONE	return JSON_SUCCESS
#else
#define JSON_ACTION_RESULT	void
#define JSON_ACTION_DONE	return
#endif

/* an object or array opens: one level deeper */
static JSON_ACTION_RESULT
ec_open(void *state)
{
	((ErrorCodeState *) state)->depth++;
	JSON_ACTION_DONE;
}

/* an object or array closes; leaving the top-level "error" object */
static JSON_ACTION_RESULT
ec_close(void *state)
{
	ErrorCodeState *st = (ErrorCodeState *) state;

	if (--st->depth == 1)
		st->in_error = false;
	JSON_ACTION_DONE;
}

/* a key: "error" at the top, "code" directly inside it */
static JSON_ACTION_RESULT
ec_field_start(void *state, char *fname, bool isnull)
{
	ErrorCodeState *st = (ErrorCodeState *) state;

	if (st->depth == 1)
	{
		st->in_error = strcmp(fname, "error") == 0;
		if (st->in_error)
			st->found = false;	/* a later "error" replaces an earlier one */
	}
	else if (st->depth == 2 && st->in_error && strcmp(fname, "code") == 0)
	{
		st->at_code = true;
		st->found = false;		/* a later "code" replaces an earlier one */
	}
	JSON_ACTION_DONE;
}

/* a key's value ends */
static JSON_ACTION_RESULT
ec_field_end(void *state, char *fname, bool isnull)
{
	ErrorCodeState *st = (ErrorCodeState *) state;

	if (st->depth == 2)
		st->at_code = false;
	JSON_ACTION_DONE;
}

/*
 * A scalar: the value of error.code counts if it is a number of at most
 * 9 digits, the record statement's test (larger ones are no code of
 * Meta's and would not fit an int)
 */
static JSON_ACTION_RESULT
ec_scalar(void *state, char *token, JsonTokenType tokentype)
{
	ErrorCodeState *st = (ErrorCodeState *) state;

	if (st->at_code && st->depth == 2 && tokentype == JSON_TOKEN_NUMBER)
	{
		const char *d = token[0] == '-' ? token + 1 : token;
		size_t		n = strspn(d, "0123456789");

		if (n >= 1 && n <= 9 && d[n] == '\0')
		{
			st->found = true;
			st->code = pg_strtoint32(token);
		}
	}
	JSON_ACTION_DONE;
}

/*
 * The Graph API error code of an answer, {"error": {"code": N, ...}}, read
 * with PostgreSQL's JSON parser: true and *code if the text is JSON in the
 * database encoding with a number at error.code, false otherwise.  Like
 * wasend_text_is_json it never throws (a deeply nested or huge answer is
 * simply not one), and what it allocates is freed before it returns.  For
 * the sender, before an answer reaches the record statement (a 130429 is
 * sent again instead of recorded).
 */
bool
wasend_answer_error_code(const char *text, size_t len, int *code)
{
	JsonSemAction sem;
	ErrorCodeState st;

	memset(&st, 0, sizeof(st));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = ec_open;
	sem.object_end = ec_close;
	sem.array_start = ec_open;
	sem.array_end = ec_close;
	sem.object_field_start = ec_field_start;
	sem.object_field_end = ec_field_end;
	sem.scalar = ec_scalar;
	if (!wasend_json_parse_guarded(text, len, &sem, true) || !st.found)
		return false;
	*code = st.code;
	return true;
}

/*
 * Is this answer Meta's 130429 (throughput limit reached)?  Only non-200
 * answers are looked at, for the number at error.code
 * (wasend_answer_error_code): the same field the record statement reads.
 */
bool
wasend_graph_throughput_refused(long http_status, const char *answer)
{
	int			code;

	if (http_status == 200 || answer == NULL)
		return false;
	return wasend_answer_error_code(answer, strlen(answer), &code) &&
		code == THROUGHPUT_REFUSED;
}
