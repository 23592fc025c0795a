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
/* The AVX2 version is built wherever the compiler can target it for one
 * function; DOTSTUFF_NO_AVX2 leaves it out (to test the other path). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(DOTSTUFF_NO_AVX2)
#define DOTSTUFF_HAVE_AVX2 1
#include <immintrin.h>
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
 * Copying the clean prefix.
 *
 * The longest prefix of DATA that goes out unchanged (every CR followed
 * by LF, every LF preceded by CR, no "." at a line start) is copied to OUT
 * while it is found, and its length returned.  Mail fetched over IMAP is
 * almost all such octets, so this is where a RETR spends its time: one
 * pass that loads each block once, judges it and stores it, rather than a
 * scan and then a memcpy() of what it found.
 *
 * A block is stored before it is judged, so OUT may receive up to the end
 * of the block past the returned length; the caller overwrites those
 * octets and has room for LEN of them.  An LF at offset 0 is never clean:
 * it is bare, or the dropped half of a CR that ended the previous piece.
 * Each octet is judged with the one before it, so a CR without its LF
 * shows up on the next octet and the prefix ends before the CR.
 */
typedef size_t copy_blocks_fn(char *out, const char *data, size_t len);

/*
 * The block loops: from offset 1, whole blocks are judged and copied
 * until one holds an octet that may end the prefix.  Each returns where
 * the octet-by-octet check must go on: that octet, or the tail after the
 * last whole block.
 */

/* 16 octets at a time where SSE2 is there (every x86-64), else none. */
static size_t copy_blocks_generic(char *out, const char *data, size_t len)
{
	size_t i = 1;

#ifdef __SSE2__
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'),
		dot = _mm_set1_epi8('.');

	for (; i + 16 <= len; i += 16) {
		__m128i prev = _mm_loadu_si128((const __m128i *)(data + i - 1));
		__m128i v = _mm_loadu_si128((const __m128i *)(data + i));
		__m128i bad = _mm_or_si128(
			_mm_xor_si128(_mm_cmpeq_epi8(v, lf),
				      _mm_cmpeq_epi8(prev, cr)),
			_mm_and_si128(_mm_cmpeq_epi8(v, dot),
				      _mm_cmpeq_epi8(prev, lf)));
		int mask = _mm_movemask_epi8(bad);

		_mm_storeu_si128((__m128i *)(out + i), v);
		if (mask != 0)
			return i + (size_t)__builtin_ctz((unsigned)mask);
	}
#else
	(void)out;
	(void)data;
	(void)len;
#endif
	return i;
}

#ifdef DOTSTUFF_HAVE_AVX2
/* 32 octets at a time: about twice the speed where the CPU has AVX2,
 * chosen at run time so one binary runs everywhere. */
__attribute__((target("avx2")))
static size_t copy_blocks_avx2(char *out, const char *data, size_t len)
{
	const __m256i cr = _mm256_set1_epi8('\r'),
		lf = _mm256_set1_epi8('\n'), dot = _mm256_set1_epi8('.');
	size_t i = 1;

	for (; i + 32 <= len; i += 32) {
		__m256i prev = _mm256_loadu_si256(
			(const __m256i *)(data + i - 1));
		__m256i v = _mm256_loadu_si256((const __m256i *)(data + i));
		__m256i bad = _mm256_or_si256(
			_mm256_xor_si256(_mm256_cmpeq_epi8(v, lf),
					 _mm256_cmpeq_epi8(prev, cr)),
			_mm256_and_si256(_mm256_cmpeq_epi8(v, dot),
					 _mm256_cmpeq_epi8(prev, lf)));
		unsigned mask = (unsigned)_mm256_movemask_epi8(bad);

		_mm256_storeu_si256((__m256i *)(out + i), v);
		if (mask != 0)
			return i + (size_t)__builtin_ctz(mask);
	}
	return i;
}
#endif

static copy_blocks_fn *copy_blocks_choose(void)
{
#ifdef DOTSTUFF_HAVE_AVX2
	if (__builtin_cpu_supports("avx2"))
		return copy_blocks_avx2;
#endif
	return copy_blocks_generic;
}

/* The clean prefix of DATA copied to OUT, with BLOCKS for the bulk; its
 * length.  A CR ends the prefix only once the octet after it is known. */
static size_t copy_clean(copy_blocks_fn *blocks, char *out, const char *data,
			 size_t len, bool at_line_start)
{
	size_t i;

	if (len == 0 || data[0] == '\n' || (data[0] == '.' && at_line_start))
		return 0;
	out[0] = data[0];
	for (i = blocks(out, data, len); i < len; i++) {
		bool lf = data[i] == '\n', after_cr = data[i - 1] == '\r';

		out[i] = data[i];
		if (lf != after_cr || (data[i] == '.' && data[i - 1] == '\n'))
			return after_cr ? i - 1 : i;
	}
	return data[len - 1] == '\r' ? len - 1 : len;
}

/*
 * The hot loop of every RETR, writing straight into the output buffer:
 * clean stretches (usually the whole slice) copied as they are found, and
 * from an octet that needs work, one line at a time.
 */
static size_t stuff_slice(struct dotstuff *ds, copy_blocks_fn *blocks,
			  char *out, const char *data, size_t len)
{
	char *o = out;
	size_t i = 0;

	while (i < len) {
		size_t n = copy_clean(blocks, o, data + i, len - i,
				      ds->at_line_start);
		size_t run;

		if (n > 0) {
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
	copy_blocks_fn *blocks = copy_blocks_choose();

	while (len > 0) {
		size_t slice = len < DOTSTUFF_SLICE ? len : DOTSTUFF_SLICE;
		char *out = outbuf_reserve(ob, 2 * slice);

		if (out == NULL)
			return -1;
		outbuf_commit(ob, stuff_slice(ds, blocks, out, data,
						 slice));
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
