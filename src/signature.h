/*-------------------------------------------------------------------------
 *
 * signature.h
 *		HMAC-SHA256: webhook signatures, appsecret_proof; signature.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SIGNATURE_H
#define WASEND_SIGNATURE_H

extern void wasend_hmac_sha256_hex(const char *key, const char *data, size_t len,
								   char *hex_out);
extern bool wasend_signature_matches(const char *body, size_t len,
									 const char *header);
extern bool wasend_verify_token_matches(const char *given, size_t len);

#endif							/* WASEND_SIGNATURE_H */
