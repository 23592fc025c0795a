/*
 * test_sasl.c - base64 and PLAIN decoding for POP3 AUTH (RFC 5034,
 * RFC 4616; issue: SASL on the POP3 side).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sasl.h"

static void expect_decode(const char *in, const char *want, size_t want_len)
{
	size_t len = 99;
	unsigned char *out = sasl_base64_decode(in, strlen(in), &len);

	assert_non_null(out);
	assert_int_equal(len, want_len);
	assert_memory_equal(out, want, want_len);
	assert_int_equal(out[len], '\0');
	sasl_secret_free(out, len);
}

static void expect_invalid(const char *in)
{
	size_t len;

	assert_null(sasl_base64_decode(in, strlen(in), &len));
}

/* EVP_DecodeBlock counts padding as octets: the padding must not leak
 * into the decoded length. */
static void test_base64_padding(void **state)
{
	(void)state;
	expect_decode("", "", 0);
	expect_decode("YQ==", "a", 1);
	expect_decode("YWI=", "ab", 2);
	expect_decode("YWJj", "abc", 3);
	expect_decode("VXNlcm5hbWU6", "Username:", 9);
	expect_decode("AHVzZXIAcGFzcw==", "\0user\0pass", 10);
}

static void test_base64_rejects_garbage(void **state)
{
	(void)state;
	expect_invalid("YQ=");
	expect_invalid("Y===");
	expect_invalid("====");
	expect_invalid("YQ==YQ==");
	expect_invalid(" YWJj");
	expect_invalid("YWJj ");
	expect_invalid("YW!j");
	expect_invalid("*");
	expect_invalid("=");
}

static void test_plain_parse(void **state)
{
	struct sasl_plain p;
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0user\0pa ss ",
					  12, &p, &error), 0);
	assert_string_equal(p.authzid, "");
	assert_string_equal(p.authcid, "user");
	assert_string_equal(p.passwd, "pa ss ");
	sasl_plain_clear(&p);

	assert_int_equal(sasl_plain_parse((const unsigned char *)"admin\0user\0pw",
					  13, &p, &error), 0);
	assert_string_equal(p.authzid, "admin");
	sasl_plain_clear(&p);
}

static void test_plain_malformed(void **state)
{
	struct sasl_plain p;
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_plain_parse((const unsigned char *)"userpass",
					  8, &p, &error), -1);
	assert_non_null(error);
	assert_int_equal(sasl_plain_parse((const unsigned char *)"", 0, &p,
					  &error), -1);
	/* a NUL inside the password */
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0u\0p\0q",
					  6, &p, &error), -1);
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0\0p",
					  3, &p, &error), -1);
}

static void test_credential_unsafe(void **state)
{
	(void)state;
	assert_false(sasl_credential_unsafe((const unsigned char *)"p w\t\xc3\xa9", 6));
	assert_true(sasl_credential_unsafe((const unsigned char *)"a\rb", 3));
	assert_true(sasl_credential_unsafe((const unsigned char *)"a\nb", 3));
	assert_true(sasl_credential_unsafe((const unsigned char *)"a\0b", 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_padding),
		cmocka_unit_test(test_base64_rejects_garbage),
		cmocka_unit_test(test_plain_parse),
		cmocka_unit_test(test_plain_malformed),
		cmocka_unit_test(test_credential_unsafe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
