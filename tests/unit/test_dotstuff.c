/*
 * test_dotstuff.c - the streaming dot-stuffing writer (X-C0011, O-C0014):
 * CRLF normalisation and dot-stuffing independent of how the message is
 * split into pieces.
 */
#include <setjmp.h>
#include <stdarg.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_crlf_message),
		cmocka_unit_test(test_bare_lf_and_cr_X_C0011),
		cmocka_unit_test(test_dot_stuffing_O_C0014),
		cmocka_unit_test(test_missing_final_newline_X_C0011),
		cmocka_unit_test(test_crlf_split_across_pieces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
