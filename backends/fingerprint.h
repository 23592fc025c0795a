/*
 * fingerprint.h - a message identity that survives a folder rebuild.
 *
 * When an upstream folder's UIDVALIDITY changes, the unique-id store
 * re-identifies the messages it knew by this fingerprint: SHA-256 (OpenSSL
 * EVP) over the Message-ID, Date, From and Subject header values, the
 * RFC822.SIZE and the first KiB of the body.  Those are what a rebuild or a
 * migration keeps, and they are cheap to fetch with partial BODY.PEEK
 * requests, so no whole message is ever downloaded for this.
 *
 * Normalisation (why): header fields come from HEADER.FIELDS, which servers
 * may re-fold or re-case differently after a migration, so names match
 * case-insensitively, folding is undone and each run of white space becomes
 * one space, trimmed at both ends; a missing field and an empty one are the
 * same.  Values are not decoded (RFC 2047) because the stored octets do not
 * change.  Only the first occurrence of a field counts.  In the body head,
 * CR octets are dropped so that a CRLF and an LF copy of one message agree.
 * Every part is length-prefixed, so no two different inputs share a stream.
 */
#ifndef POPGATE_FINGERPRINT_H
#define POPGATE_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#define FINGERPRINT_LEN 32

/* How much of the body the fingerprint covers: fetch BODY.PEEK[TEXT]<0.N>. */
#define FINGERPRINT_BODY_HEAD 1024

/*
 * Compute the fingerprint of one message into OUT.
 * HEADERS: the raw header block (at least the four fields; more is fine,
 * e.g. BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]).
 * BODY_HEAD: the first octets of the body; anything past
 * FINGERPRINT_BODY_HEAD is ignored.  Returns 0, or -1 with *error_r set
 * (OpenSSL failure).  Does not block.
 */
int fingerprint_compute(const char *headers, size_t headers_len,
			uint64_t rfc822_size,
			const char *body_head, size_t body_head_len,
			unsigned char out[FINGERPRINT_LEN],
			const char **error_r);

#endif
