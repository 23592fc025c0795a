/*
 * test_line_reader.c - command line splitting and the length limit
 * (X-E0006/E0007: max command size incl. CRLF, too-long lines consumed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "line_reader.h"

static int setup(void **state)
{
	*state = line_reader_new();
	return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	line_reader_free(*state);
	return 0;
}

static void feed(struct line_reader *lr, const char *s)
{
	assert_int_equal(line_reader_feed(lr, s, strlen(s)), 0);
}

static void expect_line(struct line_reader *lr, size_t limit, const char *want)
{
	char *line;
	size_t len;

	assert_int_equal(line_reader_next(lr, limit, &line, &len), LINE_OK);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(line, want, len);
	assert_int_equal(line[len], '\0');
}

static void expect_result(struct line_reader *lr, size_t limit,
			  enum line_result want)
{
	char *line;
	size_t len;

	assert_int_equal(line_reader_next(lr, limit, &line, &len), want);
}

static void test_crlf_and_bare_lf(void **state)
{
	struct line_reader *lr = *state;

	feed(lr, "USER a\r\nPASS b\nNOOP");
	expect_line(lr, 512, "USER a");
	expect_line(lr, 512, "PASS b");
	expect_result(lr, 512, LINE_NEED_MORE);
	feed(lr, "\r");
	expect_result(lr, 512, LINE_NEED_MORE);
	feed(lr, "\n");
	expect_line(lr, 512, "NOOP");
	expect_result(lr, 512, LINE_NEED_MORE);
	assert_int_equal(line_reader_pending(lr), 0);
}

static void test_one_octet_at_a_time(void **state)
{
	struct line_reader *lr = *state;
	const char *in = "STAT\r\nLIST 1\r\n";

	for (size_t i = 0; i < strlen(in); i++) {
		feed(lr, (char[]){ in[i], 0 });
		if (i == 5)
			expect_line(lr, 512, "STAT");
		else if (i == strlen(in) - 1)
			expect_line(lr, 512, "LIST 1");
		else
			expect_result(lr, 512, LINE_NEED_MORE);
	}
}

static void test_empty_line(void **state)
{
	struct line_reader *lr = *state;

	feed(lr, "\r\n\n");
	expect_line(lr, 512, "");
	expect_line(lr, 512, "");
}

/* X-E0006/E0007: the limit counts CRLF; 510 octets of text fit in 512. */
static void test_limit_counts_crlf_X_E0006(void **state)
{
	struct line_reader *lr = *state;
	char text[600];

	memset(text, 'a', sizeof(text));
	assert_int_equal(line_reader_feed(lr, text, 510), 0);
	feed(lr, "\r\n");
	expect_result(lr, 512, LINE_OK);

	assert_int_equal(line_reader_feed(lr, text, 511), 0);
	feed(lr, "\r\n");
	expect_result(lr, 512, LINE_TOO_LONG);

	/* a bare LF counts as if it were CRLF */
	assert_int_equal(line_reader_feed(lr, text, 511), 0);
	feed(lr, "\n");
	expect_result(lr, 512, LINE_TOO_LONG);
	assert_int_equal(line_reader_feed(lr, text, 510), 0);
	feed(lr, "\n");
	expect_result(lr, 512, LINE_OK);
}

/* X-E0007: a long line is dropped as it arrives and reported once, when its
 * end is seen; the next line is read normally. */
static void test_too_long_is_bounded_X_E0007(void **state)
{
	struct line_reader *lr = *state;
	char chunk[4096];

	memset(chunk, 'x', sizeof(chunk));
	for (int i = 0; i < 256; i++) {
		assert_int_equal(line_reader_feed(lr, chunk, sizeof(chunk)), 0);
		expect_result(lr, 512, LINE_NEED_MORE);
		assert_true(line_reader_pending(lr) == 0);
	}
	feed(lr, "tail\r\nNOOP\r\n");
	expect_result(lr, 512, LINE_TOO_LONG);
	expect_line(lr, 512, "NOOP");
	expect_result(lr, 512, LINE_NEED_MORE);
}

/* The limit comes with each call: SASL continuation lines get a larger one. */
static void test_limit_per_call(void **state)
{
	struct line_reader *lr = *state;
	char text[2000];

	memset(text, 'Q', sizeof(text));
	assert_int_equal(line_reader_feed(lr, text, sizeof(text)), 0);
	feed(lr, "\r\n");
	expect_result(lr, 16384, LINE_OK);
}

static void test_nul_inside_line(void **state)
{
	struct line_reader *lr = *state;
	char *line;
	size_t len;

	assert_int_equal(line_reader_feed(lr, "PASS a\0b\r\n", 10), 0);
	assert_int_equal(line_reader_next(lr, 512, &line, &len), LINE_OK);
	assert_int_equal(len, 8);
	assert_memory_equal(line, "PASS a\0b", 8);
}

static void test_discard(void **state)
{
	struct line_reader *lr = *state;

	feed(lr, "STLS\r\nCAPA\r\nPARTIAL");
	expect_line(lr, 512, "STLS");
	line_reader_discard(lr);
	assert_int_equal(line_reader_pending(lr), 0);
	expect_result(lr, 512, LINE_NEED_MORE);
	feed(lr, "NOOP\r\n");
	expect_line(lr, 512, "NOOP");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crlf_and_bare_lf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_octet_at_a_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_counts_crlf_X_E0006, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_long_is_bounded_X_E0007, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_per_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_inside_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
