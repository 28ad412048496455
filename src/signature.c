/*-------------------------------------------------------------------------
 *
 * signature.c
 *		HMAC-SHA256 with the Meta app secret (OpenSSL): webhook signatures
 *		and the appsecret_proof of outgoing requests.
 *
 * Meta signs every webhook POST with X-Hub-Signature-256: sha256=<hex of
 * HMAC-SHA256(raw body, app secret)>.  Both the SQL function
 * wasend_ingest_webhook() and the webhook worker check it here, comparing
 * in constant time.  The app secret comes from wasend.app_secret_file (see
 * secrets.c).  Graph API calls may carry appsecret_proof = hex of
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
#if PG_VERSION_NUM >= 160000
#include "varatt.h"				/* VARDATA_ANY: from postgres.h until 16 */
#endif

#include "secrets.h"
#include "signature.h"

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
	const char *secret;
	const char *error;

	secret = wasend_secret(WASEND_SECRET_APP, &error);
	if (header == NULL || secret == NULL)
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
	if (HMAC(EVP_sha256(), secret, strlen(secret),
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
	const char *error;

	if (wasend_secret(WASEND_SECRET_APP, &error) == NULL)
	{
		if (error != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("cannot verify webhook signatures: %s", error),
					 errhint("A superuser must put the Meta app secret in a file owned by the server's user with mode 0600 or 0640.")));
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend.app_secret_file is not set"),
				 errhint("A superuser must put the Meta app secret in a file owned by the server's user (mode 0600), set wasend.app_secret_file to its path and reload.")));
	}
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
				 errdetail("The signature is not the HMAC-SHA256 of this body with the app secret of wasend.app_secret_file."),
				 errhint("Pass the raw body byte for byte as received, and check that the file holds this app's secret.")));
	PG_RETURN_VOID();
}

/*
 * Does a webhook handshake's hub.verify_token equal the configured one?
 * Both are hashed first and the digests compared with CRYPTO_memcmp, so
 * the time taken says nothing about where they differ or how long the
 * configured token is.  Never throws.
 */
bool
wasend_verify_token_matches(const char *given, size_t len)
{
	const char *expected;
	const char *error;
	unsigned char a[EVP_MAX_MD_SIZE];
	unsigned char b[EVP_MAX_MD_SIZE];
	unsigned int alen = 0;
	unsigned int blen = 0;

	expected = wasend_secret(WASEND_SECRET_VERIFY_TOKEN, &error);
	if (expected == NULL || given == NULL)
		return false;
	if (EVP_Digest(given, len, a, &alen, EVP_sha256(), NULL) != 1 ||
		EVP_Digest(expected, strlen(expected), b, &blen, EVP_sha256(), NULL) != 1 ||
		alen != blen)
		return false;
	return CRYPTO_memcmp(a, b, alen) == 0;
}
