/*-------------------------------------------------------------------------
 *
 * signature.c
 *		HMAC-SHA256 with the Meta app secret (OpenSSL): webhook signatures
 *		and the appsecret_proof of outgoing requests.
 *
 * Meta signs every webhook POST with X-Hub-Signature-256: sha256=<hex of
 * HMAC-SHA256(raw body, app secret)>.  Both the SQL function
 * wasend_ingest_webhook() and the webhook worker check it here, comparing
 * in constant time.  Graph API calls may carry appsecret_proof = hex of
 * HMAC-SHA256(access token, app secret).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "wasend.h"

PG_FUNCTION_INFO_V1(wasend_verify_signature);

/*
 * hex_out (at least 65 bytes) receives the hex HMAC-SHA256 of data keyed
 * with key.
 */
void
wasend_hmac_sha256_hex(const char *key, const char *data, size_t len,
					   char *hex_out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), key, strlen(key), (const unsigned char *) data,
			 len, mac, &maclen) == NULL || maclen != 32)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256")));
	hex_out[hex_encode((const char *) mac, maclen, hex_out)] = '\0';
}

/*
 * Does the X-Hub-Signature-256 value match the body?  Never throws: the
 * webhook worker calls it outside a transaction.  The comparison takes the
 * same time wherever the first difference is.
 */
bool
wasend_signature_matches(const char *body, size_t len, const char *header)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	unsigned char given[32];
	int			i;

	if (header == NULL || wasend_app_secret == NULL || wasend_app_secret[0] == '\0')
		return false;
	if (pg_strncasecmp(header, "sha256=", 7) != 0 || strlen(header) != 7 + 64)
		return false;
	for (i = 0; i < 32; i++)
	{
		char		byte[3] = {header[7 + 2 * i], header[8 + 2 * i], '\0'};
		char	   *end;
		long		v = strtol(byte, &end, 16);

		if (*end != '\0' || !isxdigit((unsigned char) byte[0]))
			return false;
		given[i] = (unsigned char) v;
	}
	if (HMAC(EVP_sha256(), wasend_app_secret, strlen(wasend_app_secret),
			 (const unsigned char *) body, len, mac, &maclen) == NULL ||
		maclen != 32)
		return false;
	return CRYPTO_memcmp(mac, given, 32) == 0;
}

/*
 * wasend._verify_signature(body, signature): raise an ERROR unless the
 * signature is right, so that nothing of a forged payload is applied.
 */
Datum
wasend_verify_signature(PG_FUNCTION_ARGS)
{
	text	   *body;

	if (wasend_app_secret == NULL || wasend_app_secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend.app_secret is not set"),
				 errhint("A superuser must set wasend.app_secret to the Meta app secret (ALTER SYSTEM, then reload) to verify webhook signatures.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("webhook body must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("missing webhook signature"),
				 errhint("Pass the X-Hub-Signature-256 header, \"sha256=<hex>\", as the second argument.")));
	body = PG_GETARG_TEXT_PP(0);
	if (!wasend_signature_matches(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body),
								  text_to_cstring(PG_GETARG_TEXT_PP(1))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("invalid webhook signature"),
				 errdetail("The signature is not the HMAC-SHA256 of this body with wasend.app_secret."),
				 errhint("Pass the raw body byte for byte as received, and check that wasend.app_secret is this app's secret.")));
	PG_RETURN_VOID();
}
