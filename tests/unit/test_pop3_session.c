/*
 * test_pop3_session.c - the POP3 engine, driven like a client would drive
 * it: feed command bytes, compare the exact bytes that come back.  The
 * upstream is the RAM backend (ram_backend.h), which also injects faults.
 * Test names carry the SPEC.md statement ids they check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pop3_internal.h"
#include "pop3_session.h"
#include "ram_backend.h"

#define GREETING "+OK The popgate POP3 service is ready.\r\n"
#define LOGGED_ON "+OK\r\n+OK User successfully logged on.\r\n"
#define BYE "+OK popgate POP3 server signing off.\r\n"
#define LOGON_FAILED "-ERR [AUTH] Logon failure: unknown user name or " \
		     "bad password.\r\n"
#define NEED_TLS "-ERR Plaintext login is not permitted on an " \
		 "unencrypted connection; use STLS first\r\n"

#define MSG1 "Subject: one\r\n\r\nHello\r\n"
#define MSG2 "Subject: two\r\n\r\n.dot\r\nline2\r\n"
#define MSG3 "Subject: three\n\nbare\nlf\n.\nlast"

struct fx {
	struct pop3_settings set;
	struct ram_backend *rb;
	struct pop3_io io;
	struct pop3_session *s;
	char *out;
	size_t out_len;
	unsigned writes;
	bool fail_writes;
};

static int capture_write(void *ctx, const void *data, size_t len)
{
	struct fx *f = ctx;

	if (f->fail_writes)
		return -1;
	f->out = realloc(f->out, f->out_len + len + 1);
	assert_non_null(f->out);
	memcpy(f->out + f->out_len, data, len);
	f->out_len += len;
	f->out[f->out_len] = '\0';
	f->writes++;
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	pop3_settings_init(&f->set);
	f->set.login_type = POP3_LOGIN_PLAINTEXT;
	f->rb = ram_backend_new();
	assert_non_null(f->rb);
	ram_backend_add(f->rb, MSG1, 10);
	ram_backend_add(f->rb, MSG2, 20);
	ram_backend_add(f->rb, MSG3, 30);
	f->io.write = capture_write;
	f->io.ctx = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	pop3_session_free(f->s);
	backend_free(&f->rb->be);
	free(f->out);
	free(f);
	return 0;
}

static void reset_output(struct fx *f)
{
	f->out_len = 0;
	f->writes = 0;
	if (f->out != NULL)
		f->out[0] = '\0';
}

/* Create the session (after the test adjusted settings) and eat the
 * greeting. */
static void open_session(struct fx *f, bool secure)
{
	f->s = pop3_session_new(&f->set, &f->rb->be, &f->io, secure,
				"ip=192.0.2.1 port=5000");
	assert_non_null(f->s);
	pop3_session_start(f->s);
	assert_string_equal(f->out, GREETING);
	reset_output(f);
}

static int send_raw(struct fx *f, const char *data, size_t len)
{
	return pop3_session_input(f->s, data, len);
}

static int send(struct fx *f, const char *text)
{
	return send_raw(f, text, strlen(text));
}

static void expect_n(struct fx *f, const char *want, size_t len)
{
	if (f->out_len != len || memcmp(f->out, want, len) != 0)
		fail_msg("got [%.*s] want [%.*s]", (int)f->out_len,
			 f->out != NULL ? f->out : "", (int)len, want);
	reset_output(f);
}

static void expect(struct fx *f, const char *want)
{
	expect_n(f, want, strlen(want));
}

static void login(struct fx *f)
{
	open_session(f, false);
	assert_int_equal(send(f, "USER alice\r\nPASS secret\r\n"), 0);
	expect(f, LOGGED_ON);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_TRANSACTION);
}

/* ---- wire format ---------------------------------------------------- */

/* O-C0002, O-C0005, O-C0006: greeting, exactly one response per
 * command, every line CRLF. */
static void test_greeting_and_login_O_C0002(void **state)
{
	struct fx *f = *state;

	login(f);
	assert_string_equal(f->rb->last_user, "alice");
	assert_string_equal(f->rb->last_pass, "secret");
	send(f, "NOOP\r\n");
	expect(f, "+OK\r\n");
}

/* X 2.1.1: case-insensitive keywords, SPACE/TAB runs as separators. */
static void test_keywords_and_separators_X_2_1_1(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "uSeR \t alice\r\npAsS\t \tsecret\r\n");
	expect(f, LOGGED_ON);
	send(f, "list\t 1\r\nStAt\r\n");
	expect(f, "+OK 1 23\r\n+OK 3 82\r\n");
}

/* X 2.1.2: no per-argument limit; a 100-character user name is fine. */
static void test_long_user_name_X_2_1_2(void **state)
{
	struct fx *f = *state;
	char line[200], name[101];

	memset(name, 'u', 100);
	name[100] = '\0';
	open_session(f, false);
	snprintf(line, sizeof(line), "USER %s\r\nPASS x\r\n", name);
	send(f, line);
	expect(f, "+OK\r\n" LOGON_FAILED);
	assert_string_equal(f->rb->last_user, name);
}

/* X-E0006: 512 octets incl. CRLF is the default limit; the session
 * survives a longer line. */
static void test_command_too_long_X_E0006(void **state)
{
	struct fx *f = *state;
	char line[600];

	open_session(f, false);
	memcpy(line, "USER ", 5);
	memset(line + 5, 'a', 505);
	memcpy(line + 510, "\r\n", 2);
	send_raw(f, line, 512);
	expect(f, "+OK\r\n");
	memset(line + 5, 'a', 506);
	memcpy(line + 511, "\r\n", 2);
	send_raw(f, line, 513);
	expect(f, "-ERR Command line too long\r\n");
	send(f, "QUIT\r\n");
	expect(f, BYE);
}

/* X-E0007: the limit is configurable; a line is consumed to its end. */
static void test_command_limit_configurable_X_E0007(void **state)
{
	struct fx *f = *state;

	f->set.max_command_size = 40;
	open_session(f, false);
	/* 38 octets + CRLF = 40 */
	send(f, "USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
	expect(f, "+OK\r\n");
	send(f, "USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	send(f, "aaaaaaaaaaaaaaa\r\nCAPA\r\n");
	expect(f, "-ERR Command line too long\r\n"
		  "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\n"
		  "SASL PLAIN LOGIN\r\n.\r\n");
}

/* X-C0001: status lines are cut to 512 octets incl. CRLF, text only. */
static void test_response_line_limit_X_C0001(void **state)
{
	struct fx *f = *state;
	char text[1000];

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	open_session(f, false);
	pop3_err(f->s, "%s", text);
	pop3_flush(f->s);
	assert_int_equal(f->out_len, 512);
	assert_memory_equal(f->out, "-ERR xxx", 8);
	assert_memory_equal(f->out + 510, "\r\n", 2);
}

/* X-V0001: every -ERR says why. */
static void test_errors_have_text_X_V0001(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "XYZZY\r\nSTAT\r\n\r\nPASS x\r\n");
	expect(f, "-ERR Unknown command\r\n"
		  "-ERR Command is not valid in this state\r\n"
		  "-ERR Unknown command\r\n"
		  "-ERR USER command required first\r\n");
}

/* O-C0003: control characters other than TAB are refused; 8-bit octets
 * only in credentials. */
static void test_control_and_8bit_O_C0003(void **state)
{
	struct fx *f = *state;

	f->rb->pass = "p\xc3\xa4ss";
	open_session(f, false);
	send(f, "CAPA\x01\r\nCAPA \xc3\xa4\r\n");
	expect(f, "-ERR Invalid character in command\r\n"
		  "-ERR Invalid character in command\r\n");
	send(f, "USER alice\r\nPASS p\xc3\xa4ss\r\n");
	expect(f, LOGGED_ON);
}

/* X-C0005: after max_bad_commands, a final -ERR and close; nothing is
 * deleted. */
static void test_too_many_bad_commands_X_C0005(void **state)
{
	struct fx *f = *state;

	f->set.max_bad_commands = 3;
	login(f);
	send(f, "DELE 1\r\n");
	expect(f, "+OK Marked to be deleted.\r\n");
	assert_int_equal(send(f, "FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n"), -1);
	expect(f, "-ERR Unknown command\r\n-ERR Unknown command\r\n"
		  "-ERR Too many bad commands, closing\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_false(f->rb->update_called);
}

/* O-C0006: pipelined commands are answered in order, in one write. */
static void test_pipelining_one_write(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n");
	expect(f, "+OK 3 82\r\n"
		  "+OK\r\n1 23\r\n2 29\r\n3 30\r\n.\r\n"
		  "+OK\r\n1 10\r\n2 20\r\n3 30\r\n.\r\n"
		  "+OK 23 octets\r\n" MSG1 ".\r\n");
}

static void test_pipelining_single_write(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "STAT\r\nLIST\r\nUIDL\r\n");
	assert_int_equal(f->writes, 1);
}

/* ---- authorization -------------------------------------------------- */

/* X-V0008, X-V0009: USER is +OK for any name; PASS decides. */
static void test_user_always_ok_X_V0008_V0009(void **state)
{
	struct fx *f = *state;

	f->set.failed_login_delay_ms = 0;
	open_session(f, false);
	send(f, "USER nobody-here\r\n");
	expect(f, "+OK\r\n");
	assert_int_equal(f->rb->logins, 0);
	send(f, "PASS x\r\n");
	expect(f, LOGON_FAILED);
}

/* X-V0010: under the secure policy, no plaintext login before TLS. */
static void test_secure_policy_refuses_plaintext_X_V0010(void **state)
{
	struct fx *f = *state;

	f->set.login_type = POP3_LOGIN_SECURE;
	f->set.stls_available = true;
	open_session(f, false);
	send(f, "USER alice\r\nPASS secret\r\nAUTH PLAIN\r\nAUTH LOGIN\r\n");
	expect(f, NEED_TLS NEED_TLS NEED_TLS NEED_TLS);
	assert_int_equal(f->rb->logins, 0);
	send(f, "CAPA\r\n");
	expect(f, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
		  ".\r\n");
	send(f, "AUTH\r\n");
	expect(f, "+OK\r\n.\r\n");
}

/* X-V0010: on a TLS connection the secure policy allows USER/PASS. */
static void test_secure_policy_allows_tls_X_V0010(void **state)
{
	struct fx *f = *state;

	f->set.login_type = POP3_LOGIN_SECURE;
	open_session(f, true);
	send(f, "USER alice\r\nPASS secret\r\n");
	expect(f, LOGGED_ON);
}

/* X-V0011: the password is the rest of the line, spaces included. */
static void test_pass_keeps_trailing_spaces_X_V0011(void **state)
{
	struct fx *f = *state;

	f->rb->pass = " pa ss\t ";
	open_session(f, false);
	send(f, "USER alice\r\nPASS  \t pa ss\t \r\n");
	expect(f, "+OK\r\n" LOGON_FAILED);
	assert_string_equal(f->rb->last_pass, "pa ss\t ");
	send(f, "USER alice\r\n");
	expect(f, "");
	pop3_session_take_penalty_ms(f->s);
	send(f, "");
	expect(f, "+OK\r\n");
	f->rb->pass = "pa ss\t ";
	send(f, "PASS pa ss\t \r\n");
	expect(f, "+OK User successfully logged on.\r\n");
}

/* X-V0012 */
static void test_apop_refused_X_V0012(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n");
	expect(f, "-ERR APOP is not supported\r\n");
}

/* Credentials with NUL never go upstream. */
static void test_nul_in_credentials_refused(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send_raw(f, "USER al\0ice\r\n", 13);
	expect(f, "-ERR [AUTH] User name contains a character that is not "
		  "allowed\r\n");
	send_raw(f, "USER alice\r\nPASS se\0cret\r\n", 26);
	expect(f, "+OK\r\n-ERR [AUTH] User name or password contains a "
		  "character that is not allowed\r\n");
	assert_int_equal(f->rb->logins, 0);
}

/* A failed login answers [AUTH], sets the penalty, and stops reading
 * until the driver resumes. */
static void test_failed_login_penalty(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\n");
	expect(f, "+OK\r\n" LOGON_FAILED);
	assert_int_equal(pop3_session_take_penalty_ms(f->s), 1000);
	assert_int_equal(pop3_session_take_penalty_ms(f->s), 0);
	assert_int_equal(send_raw(f, NULL, 0), 0);
	expect(f, LOGGED_ON);
}

static void test_max_failed_logins_closes(void **state)
{
	struct fx *f = *state;

	f->set.failed_login_delay_ms = 0;
	open_session(f, false);
	send(f, "USER alice\r\nPASS a\r\nUSER alice\r\nPASS b\r\n");
	expect(f, "+OK\r\n" LOGON_FAILED "+OK\r\n" LOGON_FAILED);
	assert_int_equal(send(f, "USER alice\r\nPASS c\r\nNOOP\r\n"), -1);
	expect(f, "+OK\r\n-ERR [AUTH] Logon failure: unknown user name or "
		  "bad password. Too many failed logins, closing\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
}

/* X-V0001 / RFC 3206: upstream trouble is [SYS/TEMP] or [SYS/PERM] and
 * does not count as a failed login. */
static void test_upstream_failures_sys_codes_X_V0001(void **state)
{
	struct fx *f = *state;

	f->set.max_failed_logins = 1;
	open_session(f, false);
	f->rb->login_fail = BACKEND_TEMP;
	send(f, "USER alice\r\nPASS secret\r\n");
	expect(f, "+OK\r\n-ERR [SYS/TEMP] Injected failure\r\n");
	f->rb->login_fail = BACKEND_PERM;
	send(f, "USER alice\r\nPASS secret\r\n");
	expect(f, "+OK\r\n-ERR [SYS/PERM] Injected failure\r\n");
	f->rb->login_fail = BACKEND_OK;
	send(f, "USER alice\r\nPASS secret\r\n");
	expect(f, LOGGED_ON);
}

static void test_snapshot_failure_closes(void **state)
{
	struct fx *f = *state;

	f->rb->snapshot_fail = BACKEND_PERM;
	open_session(f, false);
	assert_int_equal(send(f, "USER alice\r\nPASS secret\r\n"), -1);
	expect(f, "+OK\r\n-ERR [SYS/PERM] No snapshot\r\n");
}

/* ---- SASL (RFC 5034, X-E0002) ------------------------------------- */

/* "\0alice\0secret" */
#define PLAIN_B64 "AGFsaWNlAHNlY3JldA=="

static void test_auth_lists_mechanisms_X_E0002(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH\r\n");
	expect(f, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

static void test_auth_plain_initial_response_X_E0002(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH PLAIN " PLAIN_B64 "\r\n");
	expect(f, "+OK User successfully logged on.\r\n");
}

static void test_auth_plain_continuation_X_E0002(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "auth plain\r\n");
	expect(f, "+ \r\n");
	send(f, PLAIN_B64 "\r\n");
	expect(f, "+OK User successfully logged on.\r\n");
}

static void test_auth_login(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH LOGIN\r\n");
	expect(f, "+ VXNlcm5hbWU6\r\n");
	send(f, "YWxpY2U=\r\n");
	expect(f, "+ UGFzc3dvcmQ6\r\n");
	send(f, "c2VjcmV0\r\n");
	expect(f, "+OK User successfully logged on.\r\n");
}

static void test_auth_login_initial_response(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n");
	expect(f, "+ UGFzc3dvcmQ6\r\n+OK User successfully logged on.\r\n");
}

static void test_auth_cancel_and_bad_base64(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH PLAIN\r\n*\r\n");
	expect(f, "+ \r\n-ERR AUTH command cancelled\r\n");
	send(f, "AUTH PLAIN\r\nnot base64!\r\n");
	expect(f, "+ \r\n-ERR Invalid base64 in SASL response\r\n");
	send(f, "AUTH PLAIN %%%%\r\nAUTH CRAM-MD5\r\n");
	expect(f, "-ERR Invalid base64 in initial response\r\n"
		  "-ERR Unrecognized authentication type\r\n");
	assert_int_equal(f->rb->logins, 0);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_AUTHORIZATION);
}

/* RFC 5034: "=" is an empty initial response; empty PLAIN is malformed. */
static void test_auth_empty_initial_response(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "AUTH PLAIN =\r\n");
	expect(f, "-ERR [AUTH] Malformed PLAIN response\r\n");
	assert_int_equal(f->rb->logins, 0);
}

static void test_auth_plain_authzid(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	/* "bob\0alice\0secret" */
	send(f, "AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n");
	expect(f, "-ERR [AUTH] Authorization identity not permitted\r\n");
	assert_int_equal(f->rb->logins, 0);
	/* "alice\0alice\0secret" */
	send(f, "AUTH PLAIN YWxpY2UAYWxpY2UAc2VjcmV0\r\n");
	expect(f, "+OK User successfully logged on.\r\n");
}

/* SASL continuation lines have their own, larger limit (X-E0006). */
static void test_sasl_line_limit_X_E0006(void **state)
{
	struct fx *f = *state;
	char *line = malloc(3000);

	f->set.max_sasl_size = 2000;
	open_session(f, false);
	send(f, "AUTH PLAIN\r\n");
	expect(f, "+ \r\n");
	memset(line, 'Q', 1000);
	memcpy(line + 1000, "\r\n", 2);
	send_raw(f, line, 1002);
	expect(f, "-ERR [AUTH] Malformed PLAIN response\r\n");
	send(f, "AUTH PLAIN\r\n");
	expect(f, "+ \r\n");
	memset(line, 'A', 2400);
	memcpy(line + 2400, "\r\n", 2);
	send_raw(f, line, 2402);
	expect(f, "-ERR SASL response too long\r\n");
	free(line);
}

/* ---- CAPA and STLS ------------------------------------------------ */

static void test_capa_after_login(void **state)
{
	struct fx *f = *state;

	f->set.stls_available = true;
	login(f);
	send(f, "CAPA\r\n");
	expect(f, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n.\r\n");
}

/* CVE-2011-0411: input pipelined after STLS is discarded. */
static void test_stls_discards_pipelined_input(void **state)
{
	struct fx *f = *state;

	f->set.login_type = POP3_LOGIN_SECURE;
	f->set.stls_available = true;
	open_session(f, false);
	send(f, "STLS\r\nCAPA\r\n");
	expect(f, "+OK Begin TLS negotiation\r\n");
	assert_true(pop3_session_wants_tls(f->s));
	send(f, "USER alice\r\n");
	expect(f, "");
	pop3_session_tls_started(f->s);
	assert_false(pop3_session_wants_tls(f->s));
	send(f, "CAPA\r\nSTLS\r\n");
	expect(f, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\n"
		  "SASL PLAIN LOGIN\r\n.\r\n-ERR Already using TLS\r\n");
	send(f, "USER alice\r\nPASS secret\r\n");
	expect(f, LOGGED_ON);
}

static void test_stls_unavailable(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	send(f, "STLS\r\n");
	expect(f, "-ERR STLS is not available on this port\r\n");
	assert_false(pop3_session_wants_tls(f->s));
}

/* ---- transaction ---------------------------------------------------- */

/* X-V0004: "+OK count octets" and nothing after (Outlook would tolerate
 * more, O-C0017; Exchange sends nothing, and so does popgate). */
static void test_stat_X_V0004(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "STAT\r\n");
	expect(f, "+OK 3 82\r\n");
}

/* X-V0005: scan listings with nothing after (O-C0021 would tolerate more);
 * LIST n single line. */
static void test_list_X_V0005(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "LIST\r\nLIST 2\r\nLIST 4\r\n");
	expect(f, "+OK\r\n1 23\r\n2 29\r\n3 30\r\n.\r\n+OK 2 29\r\n"
		  "-ERR No such message\r\n");
}

/* X-C0007: UIDL shows decimal ids. */
static void test_uidl_X_C0007(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "UIDL\r\nUIDL 3\r\n");
	expect(f, "+OK\r\n1 10\r\n2 20\r\n3 30\r\n.\r\n+OK 3 30\r\n");
}

/* O-C0011: numbers are 1..n, strictly decimal. */
static void test_message_numbers_O_C0011(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "LIST 0\r\nLIST +1\r\nLIST -1\r\nLIST 1x\r\n"
		"LIST 99999999999999999999999\r\nLIST 18446744073709551617\r\n");
	expect(f, "-ERR No such message\r\n-ERR No such message\r\n"
		  "-ERR No such message\r\n-ERR No such message\r\n"
		  "-ERR No such message\r\n-ERR No such message\r\n");
	send(f, "LIST 1 2\r\nRETR\r\n");
	expect(f, "-ERR Syntax: LIST [message]\r\n-ERR Syntax: RETR message\r\n");
}

/* O-C0026/O-C0029: DELE hides the message; RSET and NOOP. */
static void test_dele_rset_noop_O_C0026_O_C0029(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "DELE 2\r\nDELE 2\r\nLIST 2\r\nRETR 2\r\nTOP 2 0\r\nUIDL 2\r\n");
	expect(f, "+OK Marked to be deleted.\r\n"
		  "-ERR Message 2 already deleted\r\n"
		  "-ERR Message 2 already deleted\r\n"
		  "-ERR Message 2 already deleted\r\n"
		  "-ERR Message 2 already deleted\r\n"
		  "-ERR Message 2 already deleted\r\n");
	send(f, "STAT\r\nLIST\r\n");
	expect(f, "+OK 2 53\r\n+OK\r\n1 23\r\n3 30\r\n.\r\n");
	send(f, "RSET\r\nNOOP\r\nSTAT\r\n");
	expect(f, "+OK\r\n+OK\r\n+OK 3 82\r\n");
}

static void test_last_not_supported(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "LAST\r\n");
	expect(f, "-ERR LAST is not supported\r\n");
}

/* X-C0011/O-C0014: CRLF normalisation, dot-stuffing, final CRLF. */
static void test_retr_normalises_and_stuffs_X_C0011(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "RETR 2\r\n");
	expect(f, "+OK 29 octets\r\nSubject: two\r\n\r\n..dot\r\nline2\r\n"
		  ".\r\n");
	send(f, "RETR 3\r\n");
	expect(f, "+OK 30 octets\r\nSubject: three\r\n\r\nbare\r\nlf\r\n"
		  "..\r\nlast\r\n.\r\n");
}

/* The same, delivered one octet at a time (chunk boundaries). */
static void test_retr_one_octet_chunks_X_C0011(void **state)
{
	struct fx *f = *state;

	f->rb->chunk_size = 1;
	login(f);
	send(f, "RETR 3\r\nRETR 2\r\n");
	expect(f, "+OK 30 octets\r\nSubject: three\r\n\r\nbare\r\nlf\r\n"
		  "..\r\nlast\r\n.\r\n"
		  "+OK 29 octets\r\nSubject: two\r\n\r\n..dot\r\nline2\r\n"
		  ".\r\n");
}

/* X 2.1.4/2.1.5: RETR announces the size LIST showed, and delivers that
 * many octets before dot-stuffing. */
static void test_retr_size_matches_list_X_2_1_4(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "LIST 2\r\nRETR 2\r\n");
	expect(f, "+OK 2 29\r\n+OK 29 octets\r\n"
		  "Subject: two\r\n\r\n..dot\r\nline2\r\n.\r\n");
	assert_int_equal(f->rb->octets_fetched, strlen(MSG2));
}

static void test_retr_empty_message(void **state)
{
	struct fx *f = *state;

	ram_backend_add(f->rb, "", 40);
	login(f);
	send(f, "RETR 4\r\n");
	expect(f, "+OK 0 octets\r\n.\r\n");
}

/* X-C0004: a message removed upstream since the snapshot is -ERR, and
 * the session carries on. */
static void test_retr_vanished_message_X_C0004(void **state)
{
	struct fx *f = *state;

	login(f);
	f->rb->msgs[1].vanished = true;
	send(f, "RETR 2\r\nTOP 2 1\r\nNOOP\r\n");
	expect(f, "-ERR Message 2 was removed from the server\r\n"
		  "-ERR Message 2 was removed from the server\r\n+OK\r\n");
}

static void test_retr_failure_before_data(void **state)
{
	struct fx *f = *state;

	login(f);
	f->rb->fetch_fail = BACKEND_TEMP;
	send(f, "RETR 1\r\n");
	expect(f, "-ERR [SYS/TEMP] Injected failure\r\n");
	f->rb->fetch_fail = BACKEND_OK;
	send(f, "RETR 1\r\n");
	expect(f, "+OK 23 octets\r\n" MSG1 ".\r\n");
}

/* Never a false complete: a failure mid-message closes without the
 * terminator, and nothing is deleted. */
static void test_retr_broken_midway_no_terminator(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "DELE 3\r\n");
	expect(f, "+OK Marked to be deleted.\r\n");
	f->rb->fetch_break_after = 10;
	assert_int_equal(send(f, "RETR 1\r\nNOOP\r\n"), -1);
	expect(f, "+OK 23 octets\r\nSubject: o");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_false(f->rb->update_called);
}

/* A big message is flushed in pieces, not held whole. */
static void test_retr_large_message_flushes(void **state)
{
	struct fx *f = *state;
	size_t len = 300 * 1024;
	char *big = malloc(len + 1);
	char *want = malloc(len + 64);
	int n;

	memset(big, 'a', len);
	for (size_t i = 99; i < len; i += 100)
		big[i] = '\n';
	big[len] = '\0';
	ram_backend_add(f->rb, big, 50);
	f->rb->chunk_size = 8192;
	login(f);
	send(f, "RETR 4\r\n");
	assert_true(f->writes >= 4);
	n = snprintf(want, 64, "+OK %zu octets\r\n", len);
	assert_memory_equal(f->out, want, (size_t)n);
	assert_int_equal(f->out_len, (size_t)n + len + len / 100 + 3);
	assert_memory_equal(f->out + f->out_len - 3, ".\r\n", 3);
	free(big);
	free(want);
}

/* X-V0007/O-C0034: headers, blank line, k body lines. */
static void test_top_X_V0007_O_C0034(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "TOP 3 0\r\n");
	expect(f, "+OK Top of message follows\r\nSubject: three\r\n\r\n.\r\n");
	send(f, "TOP 3 2\r\n");
	expect(f, "+OK Top of message follows\r\nSubject: three\r\n\r\n"
		  "bare\r\nlf\r\n.\r\n");
	/* a body line that is exactly "." */
	send(f, "TOP 3 3\r\n");
	expect(f, "+OK Top of message follows\r\nSubject: three\r\n\r\n"
		  "bare\r\nlf\r\n..\r\n.\r\n");
	/* k beyond the end: the whole message */
	send(f, "TOP 3 99\r\n");
	expect(f, "+OK Top of message follows\r\nSubject: three\r\n\r\n"
		  "bare\r\nlf\r\n..\r\nlast\r\n.\r\n");
	send(f, "TOP 3\r\nTOP 3 x\r\n");
	expect(f, "-ERR Syntax: TOP message lines\r\n"
		  "-ERR Invalid number of lines\r\n");
}

/* O-C0034: TOP with one-octet chunks, and a message without a body. */
static void test_top_chunks_and_no_body_O_C0034(void **state)
{
	struct fx *f = *state;

	ram_backend_add(f->rb, "Subject: headers only\r\nX: y", 40);
	f->rb->chunk_size = 1;
	login(f);
	send(f, "TOP 2 1\r\nTOP 4 0\r\n");
	expect(f, "+OK Top of message follows\r\nSubject: two\r\n\r\n"
		  "..dot\r\n.\r\n"
		  "+OK Top of message follows\r\nSubject: headers only\r\n"
		  "X: y\r\n.\r\n");
}

/* TOP asks the backend for little and stops it early. */
static void test_top_fetches_little(void **state)
{
	struct fx *f = *state;
	size_t len = 200 * 1024;
	char *big = malloc(len + 1);

	memset(big, 'b', len);
	memcpy(big, "Subject: big\r\n\r\n", 16);
	for (size_t i = 99; i < len; i += 100)
		big[i] = '\n';
	big[len] = '\0';
	ram_backend_add(f->rb, big, 50);
	f->rb->chunk_size = 1024;
	login(f);
	send(f, "TOP 4 1\r\n");
	assert_true(f->rb->last_first_chunk < 32 * 1024);
	assert_true(f->rb->octets_fetched <= 1024);
	free(big);
}

/* ---- update and timers ---------------------------------------------- */

/* X-V0006: exactly the marked messages are removed; RETR'd ones are
 * marked seen. */
static void test_quit_updates_X_V0006(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "DELE 1\r\nRETR 2\r\nTOP 3 0\r\n");
	reset_output(f);
	assert_int_equal(send(f, "QUIT\r\nNOOP\r\n"), -1);
	expect(f, BYE);
	assert_true(f->rb->update_called);
	assert_int_equal(f->rb->n_expunged, 1);
	assert_int_equal(f->rb->expunged[0], 10);
	assert_int_equal(f->rb->n_seen, 1);
	assert_int_equal(f->rb->seen[0], 20);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
}

static void test_quit_no_seen_when_disabled_X_V0006(void **state)
{
	struct fx *f = *state;

	f->set.mark_read_on_retr = false;
	login(f);
	send(f, "RETR 2\r\nRETR 1\r\nDELE 1\r\n");
	reset_output(f);
	send(f, "QUIT\r\n");
	expect(f, BYE);
	assert_int_equal(f->rb->n_expunged, 1);
	assert_int_equal(f->rb->n_seen, 0);
}

/* RSET forgets deletions and retrievals. */
static void test_rset_forgets_marks_X_V0006(void **state)
{
	struct fx *f = *state;

	login(f);
	send(f, "RETR 2\r\nDELE 1\r\nRSET\r\n");
	reset_output(f);
	send(f, "QUIT\r\n");
	expect(f, BYE);
	assert_int_equal(f->rb->n_expunged, 0);
	assert_int_equal(f->rb->n_seen, 0);
}

/* X-V0006: a failure is reported, not hidden. */
static void test_quit_update_failure_X_V0006(void **state)
{
	struct fx *f = *state;

	login(f);
	f->rb->update_fail = BACKEND_TEMP;
	send(f, "DELE 1\r\nQUIT\r\n");
	expect(f, "+OK Marked to be deleted.\r\n-ERR [SYS/TEMP] Some deleted "
		  "messages were not removed\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
}

static void test_quit_in_authorization(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	assert_int_equal(send(f, "QUIT\r\n"), -1);
	expect(f, BYE);
	assert_false(f->rb->update_called);
}

/* X-V0002/X-V0003: two idle timeouts; expiry says so and does not
 * enter UPDATE. */
static void test_idle_timeout_X_V0002_X_V0003(void **state)
{
	struct fx *f = *state;

	f->set.timeout_unauthenticated_ms = 60000;
	f->set.timeout_authenticated_ms = 1800000;
	open_session(f, false);
	assert_int_equal(pop3_session_idle_timeout_ms(f->s), 60000);
	send(f, "USER alice\r\nPASS secret\r\n");
	reset_output(f);
	assert_int_equal(pop3_session_idle_timeout_ms(f->s), 1800000);
	send(f, "DELE 1\r\n");
	reset_output(f);
	pop3_session_timeout(f->s);
	expect(f, "-ERR Connection is closed. Idle timeout.\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_false(f->rb->update_called);
	assert_int_equal(send(f, "QUIT\r\n"), -1);
	expect(f, "");
}

/* X-C0005: a client that drops the connection deletes nothing: a write
 * failure in the middle of a long RETR closes the session before the
 * pipelined QUIT is read, so there is no UPDATE. */
static void test_write_failure_closes_X_C0005(void **state)
{
	struct fx *f = *state;
	size_t len = 200 * 1024;
	char *big = malloc(len + 1);

	memset(big, 'c', len);
	big[len] = '\0';
	ram_backend_add(f->rb, big, 50);
	f->rb->chunk_size = 4096;
	login(f);
	send(f, "DELE 1\r\n");
	f->fail_writes = true;
	assert_int_equal(send(f, "RETR 4\r\nQUIT\r\n"), -1);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_false(f->rb->update_called);
	assert_true(f->rb->octets_fetched < len);
	free(big);
}

static void test_shutdown(void **state)
{
	struct fx *f = *state;

	login(f);
	pop3_session_shutdown(f->s);
	expect(f, "-ERR [SYS/TEMP] Server shutting down, try again later\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_false(f->rb->update_called);
}

static void test_keepalive(void **state)
{
	struct fx *f = *state;

	open_session(f, false);
	assert_int_equal(pop3_session_keepalive(f->s), 0);
	assert_int_equal(f->rb->keepalives, 0);
	send(f, "USER alice\r\nPASS secret\r\n");
	assert_int_equal(pop3_session_keepalive(f->s), 0);
	assert_int_equal(f->rb->keepalives, 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_greeting_and_login_O_C0002),
		T(test_keywords_and_separators_X_2_1_1),
		T(test_long_user_name_X_2_1_2),
		T(test_command_too_long_X_E0006),
		T(test_command_limit_configurable_X_E0007),
		T(test_response_line_limit_X_C0001),
		T(test_errors_have_text_X_V0001),
		T(test_control_and_8bit_O_C0003),
		T(test_too_many_bad_commands_X_C0005),
		T(test_pipelining_one_write),
		T(test_pipelining_single_write),
		T(test_user_always_ok_X_V0008_V0009),
		T(test_secure_policy_refuses_plaintext_X_V0010),
		T(test_secure_policy_allows_tls_X_V0010),
		T(test_pass_keeps_trailing_spaces_X_V0011),
		T(test_apop_refused_X_V0012),
		T(test_nul_in_credentials_refused),
		T(test_failed_login_penalty),
		T(test_max_failed_logins_closes),
		T(test_upstream_failures_sys_codes_X_V0001),
		T(test_snapshot_failure_closes),
		T(test_auth_lists_mechanisms_X_E0002),
		T(test_auth_plain_initial_response_X_E0002),
		T(test_auth_plain_continuation_X_E0002),
		T(test_auth_login),
		T(test_auth_login_initial_response),
		T(test_auth_cancel_and_bad_base64),
		T(test_auth_empty_initial_response),
		T(test_auth_plain_authzid),
		T(test_sasl_line_limit_X_E0006),
		T(test_capa_after_login),
		T(test_stls_discards_pipelined_input),
		T(test_stls_unavailable),
		T(test_stat_X_V0004),
		T(test_list_X_V0005),
		T(test_uidl_X_C0007),
		T(test_message_numbers_O_C0011),
		T(test_dele_rset_noop_O_C0026_O_C0029),
		T(test_last_not_supported),
		T(test_retr_normalises_and_stuffs_X_C0011),
		T(test_retr_one_octet_chunks_X_C0011),
		T(test_retr_size_matches_list_X_2_1_4),
		T(test_retr_empty_message),
		T(test_retr_vanished_message_X_C0004),
		T(test_retr_failure_before_data),
		T(test_retr_broken_midway_no_terminator),
		T(test_retr_large_message_flushes),
		T(test_top_X_V0007_O_C0034),
		T(test_top_chunks_and_no_body_O_C0034),
		T(test_top_fetches_little),
		T(test_quit_updates_X_V0006),
		T(test_quit_no_seen_when_disabled_X_V0006),
		T(test_rset_forgets_marks_X_V0006),
		T(test_quit_update_failure_X_V0006),
		T(test_quit_in_authorization),
		T(test_idle_timeout_X_V0002_X_V0003),
		T(test_write_failure_closes_X_C0005),
		T(test_shutdown),
		T(test_keepalive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
