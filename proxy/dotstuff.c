/*
 * dotstuff.c - line-ending normalisation and dot-stuffing, streaming.
 *
 * Every CR ends a line at once (it is written as CRLF); an LF right after
 * a CR belongs to it and is dropped, even when the CR ended the previous
 * piece.  This keeps the output independent of where the pieces split.
 */
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "dotstuff.h"

void dotstuff_init(struct dotstuff *ds)
{
	ds->at_line_start = true;
	ds->after_cr = false;
}

/* Each input octet becomes at most two ("." -> "..", CR or LF -> CRLF),
 * so a slice of input needs twice its size of room. */
#define DOTSTUFF_SLICE (32 * 1024)

/*
 * Offset of the first CR or LF in DATA, or LEN.  One pass, 16 octets at a
 * time where SSE2 is there (every x86-64): two memchr() calls per line
 * cost more than the scan itself for lines of typical mail length.
 */
static size_t line_end_offset(const char *data, size_t len)
{
	size_t i = 0;

#ifdef __SSE2__
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');

	for (; i + 16 <= len; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(data + i));
		int mask = _mm_movemask_epi8(_mm_or_si128(
			_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));

		if (mask != 0)
			return i + (size_t)__builtin_ctz((unsigned)mask);
	}
#endif
	for (; i < len; i++) {
		if (data[i] == '\r' || data[i] == '\n')
			return i;
	}
	return len;
}

/*
 * Length of the longest prefix of DATA that goes out unchanged (every CR
 * followed by LF, every LF preceded by CR, no "." at a line start).  Mail
 * fetched over IMAP is almost all such octets: finding them 16 at a time
 * and copying them whole costs less than stopping at every line end.
 * An LF at offset 0 is never clean: it is bare, or the dropped half of a
 * CR that ended the previous piece.
 */
static size_t clean_prefix(const char *data, size_t len, bool at_line_start)
{
	size_t i = 1;

	if (len == 0 || data[0] == '\n' || (data[0] == '.' && at_line_start))
		return 0;
#ifdef __SSE2__
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'),
		dot = _mm_set1_epi8('.');

	/* Each octet is judged with the one before it, so a CR without its
	 * LF shows up on the next octet and the prefix ends before the CR. */
	for (; i + 16 <= len; i += 16) {
		__m128i prev = _mm_loadu_si128((const __m128i *)(data + i - 1));
		__m128i v = _mm_loadu_si128((const __m128i *)(data + i));
		__m128i bad = _mm_or_si128(
			_mm_xor_si128(_mm_cmpeq_epi8(v, lf),
				      _mm_cmpeq_epi8(prev, cr)),
			_mm_and_si128(_mm_cmpeq_epi8(v, dot),
				      _mm_cmpeq_epi8(prev, lf)));
		int mask = _mm_movemask_epi8(bad);

		if (mask != 0) {
			i += (size_t)__builtin_ctz((unsigned)mask);
			return data[i - 1] == '\r' ? i - 1 : i;
		}
	}
#endif
	for (; i < len; i++) {
		if ((data[i] == '\n') != (data[i - 1] == '\r') ||
		    (data[i] == '.' && data[i - 1] == '\n'))
			return data[i - 1] == '\r' ? i - 1 : i;
	}
	return data[len - 1] == '\r' ? len - 1 : len;
}

/*
 * The hot loop of every RETR, writing straight into the output buffer:
 * clean stretches (usually the whole slice) in one copy, and from an octet
 * that needs work, one line at a time.
 */
static size_t stuff_slice(struct dotstuff *ds, char *out, const char *data,
			  size_t len)
{
	char *o = out;
	size_t i = 0;

	while (i < len) {
		size_t n = clean_prefix(data + i, len - i, ds->at_line_start);
		size_t run;

		if (n > 0) {
			memcpy(o, data + i, n);
			o += n;
			i += n;
			ds->at_line_start = data[i - 1] == '\n';
			ds->after_cr = false;
			if (i == len)
				break;
		}
		if (ds->at_line_start && data[i] == '.')
			*o++ = '.';
		run = i + line_end_offset(data + i, len - i);
		if (run > i) {
			memcpy(o, data + i, run - i);
			o += run - i;
			ds->at_line_start = false;
			ds->after_cr = false;
			i = run;
			if (i == len)
				break;
		}
		if (data[i] == '\n' && ds->after_cr) {
			/* The LF of a CRLF whose CR ended the previous piece. */
			ds->after_cr = false;
			i++;
			continue;
		}
		*o++ = '\r';
		*o++ = '\n';
		ds->at_line_start = true;
		if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') {
			ds->after_cr = false;
			i += 2;
		} else {
			ds->after_cr = data[i] == '\r';
			i++;
		}
	}
	return (size_t)(o - out);
}

int dotstuff_write(struct dotstuff *ds, struct outbuf *ob,
		   const char *data, size_t len)
{
	while (len > 0) {
		size_t slice = len < DOTSTUFF_SLICE ? len : DOTSTUFF_SLICE;
		char *out = outbuf_reserve(ob, 2 * slice);

		if (out == NULL)
			return -1;
		outbuf_commit(ob, stuff_slice(ds, out, data, slice));
		data += slice;
		len -= slice;
	}
	return 0;
}

int dotstuff_finish(struct dotstuff *ds, struct outbuf *ob)
{
	if (!ds->at_line_start && outbuf_append(ob, "\r\n", 2) < 0)
		return -1;
	ds->at_line_start = true;
	ds->after_cr = false;
	return outbuf_append(ob, ".\r\n", 3);
}
