/*
 * sasl.h - decoding of SASL client responses (RFC 4648 base64, RFC 4616
 * PLAIN) for the POP3 AUTH command.  Pure functions: no I/O, no logging.
 *
 * Decoded credentials are secrets: callers must wipe and free them and
 * never log them.
 */
#ifndef POPGATE_SASL_H
#define POPGATE_SASL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Decode strict base64 (canonical alphabet, padding required, no spaces).
 * Returns a malloc'ed buffer NUL-terminated after *len_r octets (it may
 * contain NUL octets), or NULL when IN is not valid base64 or memory ran
 * out.  An empty IN decodes to an empty buffer.
 */
unsigned char *sasl_base64_decode(const char *in, size_t in_len,
				  size_t *len_r);

/* True when the LEN octets contain CR, LF or NUL: such a user name or
 * password must not go upstream (IMAP would see a command boundary). */
bool sasl_credential_unsafe(const unsigned char *s, size_t len);

struct sasl_plain {
	char *authzid;  /* "" when absent */
	char *authcid;
	char *passwd;
};

/*
 * Split a decoded PLAIN message "authzid NUL authcid NUL passwd".
 * Returns 0 and fills *out (free with sasl_plain_clear), or -1 with
 * *error_r set to a client-safe reason when the message is malformed.
 */
int sasl_plain_parse(const unsigned char *msg, size_t len,
		     struct sasl_plain *out, const char **error_r);

/* Wipe and free the strings; *p may be zeroed or partly filled. */
void sasl_plain_clear(struct sasl_plain *p);

/* Wipe LEN octets of a secret and free it (NULL is fine). */
void sasl_secret_free(void *secret, size_t len);

#endif
