/*
 * fingerprint.c - SHA-256 over the normalised identity of a message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "fingerprint.h"

enum { F_MESSAGE_ID, F_DATE, F_FROM, F_SUBJECT, F_COUNT };

static const char *const field_names[F_COUNT] = {
	"message-id", "date", "from", "subject",
};

struct span {
	const char *start;
	size_t len;
};

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Offset of the next LF at or after POS, or LEN. */
static size_t next_lf(const char *s, size_t len, size_t pos)
{
	const char *lf = memchr(s + pos, '\n', len - pos);

	return lf != NULL ? (size_t)(lf - s) : len;
}

/* Record the raw value of the first occurrence of each wanted field. */
static void find_fields(const char *h, size_t len, struct span spans[F_COUNT])
{
	size_t pos = 0;

	while (pos < len) {
		size_t line_end = next_lf(h, len, pos);
		size_t end = line_end;
		const char *colon;

		if (line_end == pos || (line_end == pos + 1 && h[pos] == '\r'))
			break; /* the empty line that ends the header */
		/* A line starting with white space continues the field. */
		while (end + 1 < len && (h[end + 1] == ' ' || h[end + 1] == '\t'))
			end = next_lf(h, len, end + 1);
		colon = memchr(h + pos, ':', line_end - pos);
		if (colon != NULL) {
			size_t name_len = (size_t)(colon - (h + pos));

			while (name_len > 0 && is_wsp(h[pos + name_len - 1]))
				name_len--;
			for (int f = 0; f < F_COUNT; f++) {
				if (spans[f].start == NULL &&
				    strlen(field_names[f]) == name_len &&
				    strncasecmp(h + pos, field_names[f],
						name_len) == 0) {
					spans[f].start = colon + 1;
					spans[f].len = (size_t)(h + end -
								(colon + 1));
				}
			}
		}
		pos = end < len ? end + 1 : len;
	}
}

/* Collapse white space runs to one space and trim; OUT holds LEN octets. */
static size_t normalise_value(const char *in, size_t len, char *out)
{
	size_t n = 0;
	bool space = false;

	for (size_t i = 0; i < len; i++) {
		if (is_wsp(in[i])) {
			space = true;
			continue;
		}
		if (space && n > 0)
			out[n++] = ' ';
		space = false;
		out[n++] = in[i];
	}
	return n;
}

static int digest_part(EVP_MD_CTX *md, const void *data, size_t len)
{
	unsigned char prefix[8];
	uint64_t v = len;

	for (int i = 7; i >= 0; i--) {
		prefix[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
	if (EVP_DigestUpdate(md, prefix, sizeof(prefix)) != 1)
		return -1;
	if (len > 0 && EVP_DigestUpdate(md, data, len) != 1)
		return -1;
	return 0;
}

static int digest_all(EVP_MD_CTX *md, const char *headers, size_t headers_len,
		      uint64_t rfc822_size, const char *body_head,
		      size_t body_head_len, char *scratch)
{
	static const char version[] = "popgate-fingerprint-1";
	struct span spans[F_COUNT] = { { NULL, 0 } };
	char size_text[24];
	char body[FINGERPRINT_BODY_HEAD];
	size_t body_len = 0;

	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    digest_part(md, version, sizeof(version) - 1) < 0)
		return -1;
	find_fields(headers, headers_len, spans);
	for (int f = 0; f < F_COUNT; f++) {
		size_t n = 0;

		if (spans[f].start != NULL)
			n = normalise_value(spans[f].start, spans[f].len,
					    scratch);
		if (digest_part(md, scratch, n) < 0)
			return -1;
	}
	/* Decimal text keeps the stream independent of byte order. */
	snprintf(size_text, sizeof(size_text), "%llu",
		 (unsigned long long)rfc822_size);
	if (digest_part(md, size_text, strlen(size_text)) < 0)
		return -1;
	if (body_head_len > FINGERPRINT_BODY_HEAD)
		body_head_len = FINGERPRINT_BODY_HEAD;
	for (size_t i = 0; i < body_head_len; i++) {
		if (body_head[i] != '\r')
			body[body_len++] = body_head[i];
	}
	return digest_part(md, body, body_len);
}

int fingerprint_compute(const char *headers, size_t headers_len,
			uint64_t rfc822_size,
			const char *body_head, size_t body_head_len,
			unsigned char out[FINGERPRINT_LEN],
			const char **error_r)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char *scratch = malloc(headers_len + 1);
	unsigned int out_len = 0;
	int ret = -1;

	if (md == NULL || scratch == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	if (digest_all(md, headers, headers_len, rfc822_size, body_head,
		       body_head_len, scratch) < 0 ||
	    EVP_DigestFinal_ex(md, out, &out_len) != 1 ||
	    out_len != FINGERPRINT_LEN) {
		*error_r = "SHA-256 digest failed";
		goto out;
	}
	ret = 0;
out:
	free(scratch);
	EVP_MD_CTX_free(md);
	return ret;
}
