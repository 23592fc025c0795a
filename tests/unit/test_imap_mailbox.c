/*
 * test_imap_mailbox.c - folder names from UTF-8 to modified UTF-7
 * (RFC 3501, 5.1.3; the examples are the RFC's and Dovecot's output),
 * and strings as IMAP quoted strings (folder names, ID values).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "imap_internal.h"
#include "imap_mailbox.h"

static void assert_encodes(const char *name, const char *expected)
{
	const char *error = NULL;
	char *got = imap_mailbox_encode(name, &error);

	assert_non_null(got);
	assert_string_equal(got, expected);
	free(got);
}

static void test_plain_names_unchanged(void **state)
{
	(void)state;
	assert_encodes("INBOX", "INBOX");
	assert_encodes("Sent Items", "Sent Items");
	assert_encodes("Archive/2026 (old)", "Archive/2026 (old)");
	assert_encodes("", "");
}

static void test_ampersand_is_escaped(void **state)
{
	(void)state;
	assert_encodes("Tom & Jerry", "Tom &- Jerry");
	assert_encodes("&", "&-");
}

static void test_non_ascii_in_base64_runs(void **state)
{
	(void)state;
	assert_encodes("Entw\xc3\xbc" "rfe", "Entw&APw-rfe");
	/* RFC 3501's example: "~peter/mail/" then Japanese, "/" and more. */
	assert_encodes("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		       "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		       "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	/* Outside the BMP: a surrogate pair in one run. */
	assert_encodes("\xf0\x9f\x98\x80", "&2D3eAA-");
	/* A control character is not printable: it is encoded too. */
	assert_encodes("a\tb", "a&AAk-b");
}

static void test_not_utf8_is_refused(void **state)
{
	const char *bad[] = {
		"a\xff" "b",            /* never in UTF-8 */
		"Entw\xfc" "rfe",       /* Latin-1 */
		"trunc\xc3",            /* a sequence cut short */
		"\xc0\xaf",             /* an overlong "/" */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *error = NULL;

		assert_null(imap_mailbox_encode(bad[i], &error));
		assert_string_equal(error, "not UTF-8");
	}
}

static void test_quoted_strings(void **state)
{
	char buf[16];

	(void)state;
	assert_true(imap_quote("Entw&APw-rfe", buf, sizeof(buf)));
	assert_string_equal(buf, "\"Entw&APw-rfe\"");
	assert_true(imap_quote("a\"b\\c", buf, sizeof(buf)));
	assert_string_equal(buf, "\"a\\\"b\\\\c\"");
	assert_true(imap_quote("", buf, sizeof(buf)));
	assert_string_equal(buf, "\"\"");
	assert_true(imap_quote("2001:db8::7", buf, sizeof(buf)));
	assert_string_equal(buf, "\"2001:db8::7\"");
	/* What only a literal can carry. */
	assert_false(imap_quote("a\r\nb", buf, sizeof(buf)));
	assert_false(imap_quote("caf\xc3\xa9", buf, sizeof(buf)));
	/* Too long for the buffer, quotes and NUL included. */
	assert_false(imap_quote("0123456789abcd", buf, sizeof(buf)));
	assert_true(imap_quote("0123456789abc", buf, sizeof(buf)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_names_unchanged),
		cmocka_unit_test(test_ampersand_is_escaped),
		cmocka_unit_test(test_non_ascii_in_base64_runs),
		cmocka_unit_test(test_not_utf8_is_refused),
		cmocka_unit_test(test_quoted_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
