/*
 * pop3_auth.c - the AUTHORIZATION state: USER/PASS, APOP, AUTH (RFC 5034)
 * and the login itself.
 *
 * Every way of logging in ends in do_login(), which checks the credentials
 * for CR, LF and NUL (they must never reach the upstream, where they would
 * end an IMAP command), asks the backend, and on success takes the
 * snapshot the whole session works from (X-C0004).  SASL mechanisms are
 * rows of one table so that more can be added.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pop3_internal.h"
#include "sasl.h"

#define LOGON_FAILED "Logon failure: unknown user name or bad password."
#define NEED_TLS "Plaintext login is not permitted on an unencrypted " \
		 "connection; use STLS first"

struct sasl_mech {
	const char *name;
	bool plaintext;   /* sends a reusable password: obeys login_type */
	/* RESP is NULL when the AUTH command had no initial response. */
	void (*start)(struct pop3_session *s, const unsigned char *resp,
		      size_t len);
	/* One decoded continuation line. */
	void (*step)(struct pop3_session *s, const unsigned char *resp,
		     size_t len);
};

/* X-V0010: Exchange's SecureLogin allows plaintext credentials only
 * over TLS. */
bool pop3_plaintext_allowed(const struct pop3_session *s)
{
	return s->secure || s->set->login_type == POP3_LOGIN_PLAINTEXT;
}

static void log_auth_failed(struct pop3_session *s, const char *user,
			    const char *why)
{
	char value[256];

	/* One line per failure that fail2ban can match on ip=. */
	log_info("event=auth_failed %s user=%s reason=%s", s->peer,
		 log_value(value, sizeof(value), user), why);
}

static int take_snapshot(struct pop3_session *s)
{
	struct backend_error err;

	if (backend_snapshot(s->be, &s->snap, &err) < 0) {
		pop3_err(s, "%s%s", pop3_status_code(err.status), err.text);
		return -1;
	}
	s->marks = calloc(s->snap.count + 1, 1);
	if (s->marks == NULL) {
		pop3_err(s, "[SYS/TEMP] Out of memory");
		return -1;
	}
	return 0;
}

static void login_refused(struct pop3_session *s, const char *user)
{
	log_auth_failed(s, user, "upstream");
	s->failed_logins++;
	if (s->set->max_failed_logins > 0 &&
	    s->failed_logins >= s->set->max_failed_logins) {
		pop3_err(s, "[AUTH] " LOGON_FAILED
			 " Too many failed logins, closing");
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return;
	}
	pop3_err(s, "[AUTH] " LOGON_FAILED);
	/* The driver waits this long before it lets us read on, so one
	 * connection cannot try passwords quickly. */
	if (s->set->failed_login_delay_ms > 0) {
		s->penalty_ms = s->set->failed_login_delay_ms;
		s->paused = true;
	}
}

static void do_login(struct pop3_session *s, const char *user,
		     size_t user_len, const char *pass, size_t pass_len)
{
	struct backend_error err;
	char value[256], reason[256];

	if (user_len == 0 ||
	    sasl_credential_unsafe((const unsigned char *)user, user_len) ||
	    sasl_credential_unsafe((const unsigned char *)pass, pass_len)) {
		log_auth_failed(s, user, "bad_characters");
		pop3_err(s, "[AUTH] User name or password contains a "
			 "character that is not allowed");
		return;
	}
	if (backend_login(s->be, user, pass, &err) < 0) {
		if (err.status == BACKEND_AUTH) {
			login_refused(s, user);
			return;
		}
		/* The upstream failed, not the user: no penalty, no count. */
		log_info("event=login_error %s user=%s reason=%s", s->peer,
			 log_value(value, sizeof(value), user),
			 log_value(reason, sizeof(reason), err.text));
		pop3_err(s, "%s%s", pop3_status_code(err.status), err.text);
		return;
	}
	s->user = strdup(user);
	if (s->user == NULL || take_snapshot(s) < 0) {
		if (s->user == NULL)
			pop3_err(s, "[SYS/TEMP] Out of memory");
		/* Logged in but without a maildrop to serve: give up. */
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return;
	}
	log_info("event=login %s user=%s messages=%zu", s->peer,
		 log_value(value, sizeof(value), user), s->snap.count);
	pop3_enter_state(s, POP3_STATE_TRANSACTION);
	pop3_ok(s, "User successfully logged on.");
}

/* X-V0008/V0009: nothing is checked until PASS. */
void pop3_cmd_user(struct pop3_session *s, char *args, size_t args_len)
{
	char *argv[1];

	if (!pop3_plaintext_allowed(s)) {
		pop3_err(s, NEED_TLS);
		return;
	}
	if (memchr(args, '\0', args_len) != NULL) {
		pop3_err(s, "[AUTH] User name contains a character that is "
			 "not allowed");
		return;
	}
	if (pop3_split_args(args, argv, 1) != 1) {
		pop3_bad_command(s, "Syntax: USER name");
		return;
	}
	free(s->pending_user);
	s->pending_user = strdup(argv[0]);
	if (s->pending_user == NULL) {
		pop3_err(s, "[SYS/TEMP] Out of memory");
		return;
	}
	pop3_ok(s, "%s", "");
}

/* X-V0011: the password is the whole rest of the line after the
 * separator run, interior and trailing spaces included. */
void pop3_cmd_pass(struct pop3_session *s, char *args, size_t args_len)
{
	char *user;

	if (!pop3_plaintext_allowed(s)) {
		pop3_err(s, NEED_TLS);
		return;
	}
	if (s->pending_user == NULL) {
		pop3_bad_command(s, "USER command required first");
		return;
	}
	if (args_len == 0) {
		pop3_bad_command(s, "Syntax: PASS password");
		return;
	}
	/* RFC 1939: a failed PASS needs a new USER. */
	user = s->pending_user;
	s->pending_user = NULL;
	do_login(s, user, strlen(user), args, args_len);
	sasl_secret_free(user, strlen(user));
	/* The line buffer held the password: wipe it. */
	memset(args, 0, args_len);
}

/* X-V0012 */
void pop3_cmd_apop(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	pop3_err(s, "APOP is not supported");
}

static void sasl_end(struct pop3_session *s)
{
	s->sasl = NULL;
	s->sasl_step = 0;
	sasl_secret_free(s->sasl_user, s->sasl_user_len + 1);
	s->sasl_user = NULL;
	s->sasl_user_len = 0;
}

void pop3_auth_abort(struct pop3_session *s)
{
	sasl_end(s);
}

/* RFC 4616: authzid NUL authcid NUL passwd. */
static void plain_finish(struct pop3_session *s, const unsigned char *resp,
			 size_t len)
{
	struct sasl_plain plain;
	const char *error;

	sasl_end(s);
	if (sasl_plain_parse(resp, len, &plain, &error) < 0) {
		log_auth_failed(s, "", "bad_plain_response");
		pop3_err(s, "[AUTH] %s", error);
		return;
	}
	if (plain.authzid[0] != '\0' &&
	    strcmp(plain.authzid, plain.authcid) != 0) {
		/* Acting as another user needs a master login upstream,
		 * which is not offered. */
		log_auth_failed(s, plain.authcid, "authzid");
		pop3_err(s, "[AUTH] Authorization identity not permitted");
	} else {
		do_login(s, plain.authcid, strlen(plain.authcid),
			 plain.passwd, strlen(plain.passwd));
	}
	sasl_plain_clear(&plain);
}

static void plain_start(struct pop3_session *s, const unsigned char *resp,
			size_t len)
{
	if (resp != NULL) {
		plain_finish(s, resp, len);
		return;
	}
	pop3_line(s, "+ ");
}

static void plain_step(struct pop3_session *s, const unsigned char *resp,
		       size_t len)
{
	plain_finish(s, resp, len);
}

static int login_take_user(struct pop3_session *s, const unsigned char *resp,
			   size_t len)
{
	s->sasl_user = malloc(len + 1);
	if (s->sasl_user == NULL) {
		sasl_end(s);
		pop3_err(s, "[SYS/TEMP] Out of memory");
		return -1;
	}
	memcpy(s->sasl_user, resp, len);
	s->sasl_user[len] = '\0';
	s->sasl_user_len = len;
	s->sasl_step = 1;
	pop3_line(s, "+ UGFzc3dvcmQ6");   /* "Password:" */
	return 0;
}

static void login_start(struct pop3_session *s, const unsigned char *resp,
			size_t len)
{
	if (resp != NULL) {
		login_take_user(s, resp, len);
		return;
	}
	pop3_line(s, "+ VXNlcm5hbWU6");   /* "Username:" */
}

static void login_step(struct pop3_session *s, const unsigned char *resp,
		       size_t len)
{
	unsigned char *user;
	size_t user_len;

	if (s->sasl_step == 0) {
		login_take_user(s, resp, len);
		return;
	}
	user = s->sasl_user;
	user_len = s->sasl_user_len;
	s->sasl_user = NULL;
	sasl_end(s);
	do_login(s, (const char *)user, user_len, (const char *)resp, len);
	sasl_secret_free(user, user_len + 1);
}

static const struct sasl_mech sasl_mechs[] = {
	{ "PLAIN", true, plain_start, plain_step },
	{ "LOGIN", true, login_start, login_step },
};

static bool mech_usable(const struct pop3_session *s,
			const struct sasl_mech *mech)
{
	return !mech->plaintext || pop3_plaintext_allowed(s);
}

/* For CAPA's SASL line and bare AUTH: the mechanisms usable now. */
void pop3_auth_list_mechanisms(struct pop3_session *s)
{
	for (size_t i = 0; i < sizeof(sasl_mechs) / sizeof(sasl_mechs[0]); i++) {
		if (mech_usable(s, &sasl_mechs[i]))
			pop3_line(s, "%s", sasl_mechs[i].name);
	}
}

static const struct sasl_mech *find_mech(const char *name)
{
	for (size_t i = 0; i < sizeof(sasl_mechs) / sizeof(sasl_mechs[0]); i++) {
		if (strcasecmp(sasl_mechs[i].name, name) == 0)
			return &sasl_mechs[i];
	}
	return NULL;
}

void pop3_cmd_auth(struct pop3_session *s, char *args, size_t args_len)
{
	const struct sasl_mech *mech;
	unsigned char *resp;
	size_t n, resp_len;
	char *argv[2];

	if (memchr(args, '\0', args_len) != NULL) {
		pop3_bad_command(s, "Invalid character in command");
		return;
	}
	n = pop3_split_args(args, argv, 2);
	if (n == 0) {
		/* The de-facto mechanism list that Outlook asks for. */
		pop3_ok(s, "%s", "");
		pop3_auth_list_mechanisms(s);
		pop3_line(s, ".");
		return;
	}
	if (n > 2) {
		pop3_bad_command(s, "Syntax: AUTH mechanism [initial-response]");
		return;
	}
	mech = find_mech(argv[0]);
	if (mech == NULL) {
		pop3_err(s, "Unrecognized authentication type");
		return;
	}
	if (!mech_usable(s, mech)) {
		pop3_err(s, NEED_TLS);
		return;
	}
	s->sasl = mech;
	s->sasl_step = 0;
	if (n == 1) {
		mech->start(s, NULL, 0);
		return;
	}
	/* RFC 5034: "=" is an empty initial response. */
	if (strcmp(argv[1], "=") == 0)
		resp = sasl_base64_decode("", 0, &resp_len);
	else
		resp = sasl_base64_decode(argv[1], strlen(argv[1]), &resp_len);
	memset(argv[1], 0, strlen(argv[1]));
	if (resp == NULL) {
		sasl_end(s);
		pop3_err(s, "Invalid base64 in initial response");
		return;
	}
	mech->start(s, resp, resp_len);
	sasl_secret_free(resp, resp_len + 1);
}

void pop3_auth_continue(struct pop3_session *s, char *line, size_t len)
{
	unsigned char *resp;
	size_t resp_len;

	if (len == 1 && line[0] == '*') {
		sasl_end(s);
		pop3_err(s, "AUTH command cancelled");
		return;
	}
	resp = sasl_base64_decode(line, len, &resp_len);
	memset(line, 0, len);
	if (resp == NULL) {
		sasl_end(s);
		pop3_err(s, "Invalid base64 in SASL response");
		return;
	}
	s->sasl->step(s, resp, resp_len);
	sasl_secret_free(resp, resp_len + 1);
}
