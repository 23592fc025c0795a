/*
 * test_dotstuff.c - the streaming dot-stuffing writer (X-C0011, O-C0014):
 * CRLF normalisation and dot-stuffing independent of how the message is
 * split into pieces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dotstuff.h"
#include "outbuf.h"

struct capture {
	char *data;
	size_t len;
};

static int capture_write(void *ctx, const void *data, size_t len)
{
	struct capture *c = ctx;

	c->data = realloc(c->data, c->len + len + 1);
	assert_non_null(c->data);
	memcpy(c->data + c->len, data, len);
	c->len += len;
	c->data[c->len] = '\0';
	return 0;
}

/* Run IN through the writer in pieces of CHUNK octets; compare the result. */
static void check_chunked(const char *in, size_t in_len, const char *want,
			  size_t chunk)
{
	struct outbuf *ob = outbuf_new();
	struct capture cap = { NULL, 0 };
	struct dotstuff ds;

	assert_non_null(ob);
	dotstuff_init(&ds);
	for (size_t off = 0; off < in_len; off += chunk) {
		size_t n = in_len - off < chunk ? in_len - off : chunk;

		assert_int_equal(dotstuff_write(&ds, ob, in + off, n), 0);
	}
	assert_int_equal(dotstuff_finish(&ds, ob), 0);
	assert_int_equal(outbuf_flush(ob, capture_write, &cap), 0);
	assert_int_equal(cap.len, strlen(want));
	assert_memory_equal(cap.data, want, cap.len);
	free(cap.data);
	outbuf_free(ob);
}

/* Every chunk size from 1 to the whole message gives the same output. */
static void check(const char *in, const char *want)
{
	size_t len = strlen(in);

	for (size_t chunk = 1; chunk <= len; chunk++)
		check_chunked(in, len, want, chunk);
	if (len == 0)
		check_chunked(in, 0, want, 1);
}

static void test_plain_crlf_message(void **state)
{
	(void)state;
	check("Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n");
}

/* X-C0011: bare LF and bare CR become CRLF. */
static void test_bare_lf_and_cr_X_C0011(void **state)
{
	(void)state;
	check("a\nb\rc\r\n", "a\r\nb\r\nc\r\n.\r\n");
	check("a\r\rb\n\nc\n", "a\r\n\r\nb\r\n\r\nc\r\n.\r\n");
	check("a\n\rb", "a\r\n\r\nb\r\n.\r\n");
}

/* O-C0014: dot-stuffing, including a "." at the very start and lines that
 * are exactly "." (even split across pieces). */
static void test_dot_stuffing_O_C0014(void **state)
{
	(void)state;
	check(".\r\n..x\r\nx.\r\n.", "..\r\n...x\r\nx.\r\n..\r\n.\r\n");
	check("a\n.\nb\r.\r", "a\r\n..\r\nb\r\n..\r\n.\r\n");
}

/* X-C0011: a message without a final line ending gets CRLF before the
 * terminator; an empty message is just the terminator. */
static void test_missing_final_newline_X_C0011(void **state)
{
	(void)state;
	check("no newline", "no newline\r\n.\r\n");
	check("", ".\r\n");
	check("\r", "\r\n.\r\n");
}

/* CR at the end of one piece and LF at the start of the next is one line
 * ending, not two. */
static void test_crlf_split_across_pieces(void **state)
{
	const char *in = "ab\r\ncd\r\n";

	(void)state;
	check_chunked(in, strlen(in), "ab\r\ncd\r\n.\r\n", 3);
	check_chunked("x\r", 2, "x\r\n.\r\n", 2);
}

/* The contract, one octet at a time: what the writer must match. */
static size_t reference_stuff(const char *in, size_t len, char *out)
{
	bool at_line_start = true, after_cr = false;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];

		if (c == '\n' && after_cr) {
			after_cr = false;
			continue;
		}
		after_cr = c == '\r';
		if (c == '\r' || c == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			at_line_start = true;
			continue;
		}
		if (at_line_start && c == '.')
			out[o++] = '.';
		out[o++] = c;
		at_line_start = false;
	}
	if (!at_line_start) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

/* Room for any output of an input of LEN octets: each octet doubled at
 * most, then a line ending and the terminator. */
#define STUFFED_MAX(len) (2 * (len) + 5)

/* A fixed-seed xorshift32: the same cases on every run. */
static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* Feed IN in the pieces whose lengths are in SPLITS (the last piece takes
 * the rest) and check the result against the reference. */
static void check_split(const char *in, size_t len, const size_t *splits,
			size_t nsplits)
{
	struct outbuf *ob = outbuf_new();
	struct capture cap = { NULL, 0 };
	struct dotstuff ds;
	char *want = malloc(STUFFED_MAX(len));
	size_t want_len, off = 0;

	assert_non_null(ob);
	assert_non_null(want);
	want_len = reference_stuff(in, len, want);
	dotstuff_init(&ds);
	for (size_t k = 0; k < nsplits && off < len; k++) {
		size_t n = splits[k] < len - off ? splits[k] : len - off;

		assert_int_equal(dotstuff_write(&ds, ob, in + off, n), 0);
		off += n;
	}
	assert_int_equal(dotstuff_write(&ds, ob, in + off, len - off), 0);
	assert_int_equal(dotstuff_finish(&ds, ob), 0);
	assert_int_equal(outbuf_flush(ob, capture_write, &cap), 0);
	assert_int_equal(cap.len, want_len);
	assert_memory_equal(cap.data, want, want_len);
	free(cap.data);
	free(want);
	outbuf_free(ob);
}

/* The fast path for clean stretches and the per-line code must agree with
 * the reference wherever the pieces split: inputs dense in CR, LF and "."
 * (every kind of line start and ending, 16-octet blocks at every offset),
 * and mostly clean CRLF text with a rare octet that needs work. */
static void test_random_pieces_match_reference(void **state)
{
	static const char dense[] = "\r\n.a\r\n.a\r\n.ab";
	char in[300];
	size_t splits[16];

	(void)state;
	for (int n = 0; n < 2000; n++) {
		size_t len = rng() % (sizeof(in) + 1), nsplits = rng() % 16;
		bool clean = n % 2 == 1;

		for (size_t i = 0; i < len; i++) {
			uint32_t r = rng();

			if (!clean)
				in[i] = dense[r % (sizeof(dense) - 1)];
			else if (r % 64 == 0)
				in[i] = "\r\n."[r / 64 % 3];
			else if (r % 64 < 3 && i + 1 < len) {
				in[i++] = '\r';
				in[i] = '\n';
			} else
				in[i] = 'a';
		}
		for (size_t k = 0; k < nsplits; k++)
			splits[k] = rng() % 4 == 0 ? rng() % 3 : rng() % 80;
		check_split(in, len, splits, nsplits);
	}
}

/* A clean 1 MB message goes through unchanged, in one write (cut into the
 * writer's 32 KB slices with a CRLF across the first cut) or in odd
 * pieces; with a "." line right after that cut, it is stuffed. */
static void test_clean_megabyte_across_slices(void **state)
{
	const size_t len = 1024 * 1024, slice = 32 * 1024;
	const size_t line = 78, first = (slice - 1) % line + 2;
	char *in = malloc(len + 4);
	size_t odd[64];

	(void)state;
	assert_non_null(in);
	/* The first line's CR is octet FIRST - 2, every later line's CR is a
	 * multiple of LINE after it: the one at SLICE - 1 ends a slice. */
	for (size_t i = 0; i < len; i++)
		in[i] = (char)('a' + i % 26);
	for (size_t cr = first - 2; cr + 1 < len; cr += line) {
		in[cr] = '\r';
		in[cr + 1] = '\n';
	}
	in[len - 2] = '\r';
	in[len - 1] = '\n';
	assert_memory_equal(in + slice - 1, "\r\n", 2);
	memcpy(in + len, ".\r\n", 4);
	check_chunked(in, len, in, len);
	for (size_t k = 0; k < 64; k++)
		odd[k] = 4093 * (k % 4 + 1) + 2 * k;
	check_split(in, len, odd, 64);

	in[slice + 1] = '.';
	check_split(in, len, NULL, 0);
	check_split(in, len, odd, 64);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_crlf_message),
		cmocka_unit_test(test_bare_lf_and_cr_X_C0011),
		cmocka_unit_test(test_dot_stuffing_O_C0014),
		cmocka_unit_test(test_missing_final_newline_X_C0011),
		cmocka_unit_test(test_crlf_split_across_pieces),
		cmocka_unit_test(test_random_pieces_match_reference),
		cmocka_unit_test(test_clean_megabyte_across_slices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
