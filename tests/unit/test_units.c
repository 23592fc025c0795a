/*
 * test_units.c - sizes and durations as written in the configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "units.h"

static void test_sizes(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(units_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(units_parse_size("512", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(units_parse_size("16K", &v), 0);
	assert_int_equal(v, 16 * 1024);
	assert_int_equal(units_parse_size("50M", &v), 0);
	assert_int_equal(v, 50ULL * 1024 * 1024);
	assert_int_equal(units_parse_size("2G", &v), 0);
	assert_int_equal(v, 2ULL * 1024 * 1024 * 1024);
}

static void test_size_suffix_is_case_sensitive(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_int_equal(units_parse_size("16k", &v), -1);
	assert_int_equal(units_parse_size("50m", &v), -1);
	assert_int_equal(units_parse_size("1g", &v), -1);
	assert_int_equal(units_parse_size("1KB", &v), -1);
	assert_int_equal(units_parse_size("30s", &v), -1);
	assert_int_equal(v, 7);
}

static void test_durations(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(units_parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(units_parse_duration("30", &v), 0);
	assert_int_equal(v, 30000);
	assert_int_equal(units_parse_duration("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(units_parse_duration("30s", &v), 0);
	assert_int_equal(v, 30000);
	assert_int_equal(units_parse_duration("30m", &v), 0);
	assert_int_equal(v, 30ULL * 60 * 1000);
	assert_int_equal(units_parse_duration("2h", &v), 0);
	assert_int_equal(v, 2ULL * 3600 * 1000);
	assert_int_equal(units_parse_duration("1d", &v), 0);
	assert_int_equal(v, 86400ULL * 1000);
}

static void test_duration_suffix_is_case_sensitive(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(units_parse_duration("30M", &v), -1);
	assert_int_equal(units_parse_duration("30S", &v), -1);
	assert_int_equal(units_parse_duration("5MS", &v), -1);
	assert_int_equal(units_parse_duration("1H", &v), -1);
	assert_int_equal(units_parse_duration("16K", &v), -1);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"", " 5", "5 ", "-5", "+5", "5.5", "s", "K", "5ss", "5 s",
		"0x10", "5sK", NULL
	};
	uint64_t v;

	(void)state;
	for (size_t i = 0; bad[i] != NULL; i++) {
		assert_int_equal(units_parse_size(bad[i], &v), -1);
		assert_int_equal(units_parse_duration(bad[i], &v), -1);
	}
	assert_int_equal(units_parse_size(NULL, &v), -1);
	assert_int_equal(units_parse_duration(NULL, &v), -1);
}

static void test_overflow(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(units_parse_size("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(units_parse_size("18446744073709551616", &v), -1);
	assert_int_equal(units_parse_size("99999999999999999999999", &v), -1);
	assert_int_equal(units_parse_size("17179869184G", &v), -1);
	assert_int_equal(units_parse_size("17179869183G", &v), 0);
	/* A bare number of seconds is multiplied by 1000 too. */
	assert_int_equal(units_parse_duration("18446744073709552", &v), -1);
	assert_int_equal(units_parse_duration("18446744073709551615ms", &v),
			 0);
	assert_int_equal(units_parse_duration("213503982334601d", &v), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_size_suffix_is_case_sensitive),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_duration_suffix_is_case_sensitive),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_overflow),
	};

	return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
