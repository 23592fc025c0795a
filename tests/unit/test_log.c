/*
 * test_log.c - log_value() escaping and level names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"

static void test_plain_values_unchanged(void **state)
{
	char buf[64];

	(void)state;
	assert_string_equal(log_value(buf, sizeof(buf), "alice@example.com"),
			    "alice@example.com");
	assert_string_equal(log_value(buf, sizeof(buf), "RETR"), "RETR");
}

static void test_quotes_and_escapes(void **state)
{
	char buf[128];

	(void)state;
	assert_string_equal(log_value(buf, sizeof(buf), ""), "\"\"");
	assert_string_equal(log_value(buf, sizeof(buf), "a b"), "\"a b\"");
	assert_string_equal(log_value(buf, sizeof(buf), "k=v"), "\"k=v\"");
	assert_string_equal(log_value(buf, sizeof(buf), "say \"hi\""),
			    "\"say \\\"hi\\\"\"");
	assert_string_equal(log_value(buf, sizeof(buf), "back\\slash"),
			    "\"back\\\\slash\"");
	assert_string_equal(log_value(buf, sizeof(buf), "tab\there"),
			    "\"tab\\x09here\"");
	assert_string_equal(log_value(buf, sizeof(buf), "caf\xc3\xa9"),
			    "\"caf\\xc3\\xa9\"");
}

static void test_cannot_forge_a_line(void **state)
{
	char buf[128];
	const char *v;

	(void)state;
	v = log_value(buf, sizeof(buf),
		      "x\nlevel=info event=login user=root");
	assert_null(strchr(v, '\n'));
	assert_null(strchr(v, '\r'));
	assert_string_equal(v, "\"x\\x0alevel=info event=login user=root\"");
}

static void test_truncation_keeps_quotes(void **state)
{
	char buf[8];
	const char *v;

	(void)state;
	v = log_value(buf, sizeof(buf), "abcdefghijkl");
	assert_string_equal(v, "abcdefg");
	v = log_value(buf, sizeof(buf), "a b c d e f");
	assert_int_equal(strlen(v), 7);
	assert_int_equal(v[0], '"');
	assert_int_equal(v[6], '"');
	/* An escape is never cut in half. */
	v = log_value(buf, sizeof(buf), "ab\x01\x02");
	assert_string_equal(v, "\"ab\"");
	v = log_value(buf, 2, "a b");
	assert_string_equal(v, "");
}

static void test_level_names(void **state)
{
	enum log_level level;

	(void)state;
	assert_int_equal(log_level_parse("error", &level), 0);
	assert_int_equal(level, PG_LOG_ERROR);
	assert_int_equal(log_level_parse("warn", &level), 0);
	assert_int_equal(level, PG_LOG_WARN);
	assert_int_equal(log_level_parse("info", &level), 0);
	assert_int_equal(level, PG_LOG_INFO);
	assert_int_equal(log_level_parse("debug", &level), 0);
	assert_int_equal(level, PG_LOG_DEBUG);
	assert_int_equal(log_level_parse("INFO", &level), -1);
	assert_int_equal(log_level_parse("verbose", &level), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_values_unchanged),
		cmocka_unit_test(test_quotes_and_escapes),
		cmocka_unit_test(test_cannot_forge_a_line),
		cmocka_unit_test(test_truncation_keeps_quotes),
		cmocka_unit_test(test_level_names),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
