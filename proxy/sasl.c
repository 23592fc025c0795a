/*
 * sasl.c - base64 and PLAIN message decoding for AUTH.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sasl.h"

static bool is_base64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

unsigned char *sasl_base64_decode(const char *in, size_t in_len,
				  size_t *len_r)
{
	unsigned char *out;
	size_t pad = 0;
	int n;

	/* EVP_DecodeBlock is lenient (it skips surrounding white space) and
	 * counts padding as decoded zero octets, so validate first and
	 * subtract the padding afterwards. */
	if (in_len % 4 != 0 || in_len > (size_t)(INT32_MAX / 4) * 3)
		return NULL;
	if (in_len > 0 && in[in_len - 1] == '=')
		pad = in_len > 1 && in[in_len - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < in_len - pad; i++) {
		if (!is_base64_char(in[i]))
			return NULL;
	}

	out = malloc(in_len / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	if (in_len == 0) {
		out[0] = '\0';
		*len_r = 0;
		return out;
	}
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)in_len);
	if (n < 0 || (size_t)n < pad) {
		sasl_secret_free(out, in_len / 4 * 3 + 1);
		return NULL;
	}
	*len_r = (size_t)n - pad;
	out[*len_r] = '\0';
	return out;
}

bool sasl_credential_unsafe(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			return true;
	}
	return false;
}

static char *dup_part(const unsigned char *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s != NULL) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

int sasl_plain_parse(const unsigned char *msg, size_t len,
		     struct sasl_plain *out, const char **error_r)
{
	const unsigned char *nul1, *nul2, *end = msg + len;

	memset(out, 0, sizeof(*out));
	nul1 = memchr(msg, '\0', len);
	nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1))
			    : NULL;
	if (nul2 == NULL) {
		*error_r = "Malformed PLAIN response";
		return -1;
	}
	/* A third NUL can only be part of the password. */
	if (memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL) {
		*error_r = "Credentials must not contain NUL";
		return -1;
	}
	if (nul2 == nul1 + 1) {
		*error_r = "Empty user name";
		return -1;
	}
	out->authzid = dup_part(msg, (size_t)(nul1 - msg));
	out->authcid = dup_part(nul1 + 1, (size_t)(nul2 - nul1 - 1));
	out->passwd = dup_part(nul2 + 1, (size_t)(end - nul2 - 1));
	if (out->authzid == NULL || out->authcid == NULL ||
	    out->passwd == NULL) {
		sasl_plain_clear(out);
		*error_r = "Out of memory";
		return -1;
	}
	return 0;
}

void sasl_secret_free(void *secret, size_t len)
{
	if (secret == NULL)
		return;
	OPENSSL_cleanse(secret, len);
	free(secret);
}

static void free_string(char **s)
{
	if (*s != NULL)
		sasl_secret_free(*s, strlen(*s));
	*s = NULL;
}

void sasl_plain_clear(struct sasl_plain *p)
{
	free_string(&p->authzid);
	free_string(&p->authcid);
	free_string(&p->passwd);
}
