/*
 * pop3_session.c - session lifetime, input loop, dispatch and responses.
 *
 * The input loop takes one line at a time from the line reader and hands
 * it to a command handler from the table in pop3_commands.c, or to the
 * SASL exchange in progress.  Everything the handlers answer collects in
 * the output buffer and reaches the client in one write per input call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pop3_internal.h"
#include "sasl.h"

#define GREETING "+OK The popgate POP3 service is ready."

void pop3_settings_init(struct pop3_settings *set)
{
	memset(set, 0, sizeof(*set));
	set->login_type = POP3_LOGIN_SECURE;
	set->max_command_size = 512;
	set->max_sasl_size = 16 * 1024;
	set->max_bad_commands = 10;
	set->max_failed_logins = 3;
	set->failed_login_delay_ms = 1000;
	set->timeout_unauthenticated_ms = 60 * 1000;
	set->timeout_authenticated_ms = 1800 * 1000;
	set->timeout_send_ms = 60 * 1000;
	set->mark_read_on_retr = true;
	set->stls_available = false;
}

static const char *state_name(enum pop3_state state)
{
	switch (state) {
	case POP3_STATE_AUTHORIZATION:
		return "AUTHORIZATION";
	case POP3_STATE_TRANSACTION:
		return "TRANSACTION";
	case POP3_STATE_UPDATE:
		return "UPDATE";
	case POP3_STATE_CLOSED:
		return "CLOSED";
	}
	return "?";
}

/* The only place where the state changes. */
void pop3_enter_state(struct pop3_session *s, enum pop3_state to)
{
	if (s->state == to)
		return;
	log_debug("event=state from=%s to=%s", state_name(s->state),
		  state_name(to));
	s->state = to;
}

struct pop3_session *pop3_session_new(const struct pop3_settings *set,
				      struct backend *be,
				      const struct pop3_io *io, bool secure,
				      const char *peer)
{
	struct pop3_session *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->set = set;
	s->be = be;
	s->io = io;
	s->secure = secure;
	s->state = POP3_STATE_AUTHORIZATION;
	s->peer = strdup(peer != NULL ? peer : "ip=unknown");
	s->input = line_reader_new();
	s->output = outbuf_new();
	if (s->peer == NULL || s->input == NULL || s->output == NULL) {
		pop3_session_free(s);
		return NULL;
	}
	return s;
}

static void free_user(char **user)
{
	if (*user != NULL)
		sasl_secret_free(*user, strlen(*user));
	*user = NULL;
}

void pop3_session_free(struct pop3_session *s)
{
	if (s == NULL)
		return;
	pop3_auth_abort(s);
	free_user(&s->pending_user);
	free_user(&s->user);
	mail_snapshot_clear(&s->snap);
	free(s->marks);
	line_reader_free(s->input);
	outbuf_free(s->output);
	free(s->peer);
	free(s);
}

int pop3_flush(struct pop3_session *s)
{
	if (s->write_failed) {
		outbuf_clear(s->output);
		return -1;
	}
	if (outbuf_flush(s->output, s->io->write, s->io->ctx) < 0) {
		s->write_failed = true;
		log_info("event=client_write_failed state=%s",
			 state_name(s->state));
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return -1;
	}
	return 0;
}

void pop3_out(struct pop3_session *s, const void *data, size_t len)
{
	/* Out of memory leaves the response short; the client then sees a
	 * closed connection, which is what it would see if we aborted. */
	if (outbuf_append(s->output, data, len) < 0) {
		log_error("event=out_of_memory where=output");
		s->write_failed = true;
		pop3_enter_state(s, POP3_STATE_CLOSED);
	}
}

/* Format PREFIX + FMT as one status line of at most POP3_MAX_RESPONSE
 * octets: the informational text is cut, the prefix never (X-C0001). */
static void status_line(struct pop3_session *s, const char *prefix,
			const char *fmt, va_list ap)
{
	char text[POP3_MAX_RESPONSE];
	char line[POP3_MAX_RESPONSE];
	size_t len = strlen(prefix);

	memcpy(line, prefix, len);
	vsnprintf(text, sizeof(text), fmt, ap);
	if (text[0] != '\0') {
		size_t n;

		line[len++] = ' ';
		n = strnlen(text, sizeof(line) - 2 - len);
		memcpy(line + len, text, n);
		len += n;
	}
	memcpy(line + len, "\r\n", 2);
	pop3_out(s, line, len + 2);
}

void pop3_ok(struct pop3_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	status_line(s, "+OK", fmt, ap);
	va_end(ap);
}

void pop3_err(struct pop3_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	status_line(s, "-ERR", fmt, ap);
	va_end(ap);
}

void pop3_line(struct pop3_session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	memcpy(line + n, "\r\n", 2);
	pop3_out(s, line, (size_t)n + 2);
}

void pop3_bad_command(struct pop3_session *s, const char *text)
{
	s->bad_commands++;
	if (s->set->max_bad_commands > 0 &&
	    s->bad_commands >= s->set->max_bad_commands) {
		log_info("event=too_many_bad_commands %s count=%u", s->peer,
			 s->bad_commands);
		pop3_err(s, "Too many bad commands, closing");
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return;
	}
	pop3_err(s, "%s", text);
}

const char *pop3_status_code(enum backend_status status)
{
	switch (status) {
	case BACKEND_AUTH:
		return "[AUTH] ";
	case BACKEND_PERM:
		return "[SYS/PERM] ";
	case BACKEND_IN_USE:
		return "[IN-USE] ";
	case BACKEND_NO_MESSAGE:
		return "";
	case BACKEND_OK:
	case BACKEND_TEMP:
	case BACKEND_BROKEN:
	case BACKEND_SINK:
		break;
	}
	return "[SYS/TEMP] ";
}

static bool is_separator(char c)
{
	return c == ' ' || c == '\t';
}

size_t pop3_split_args(char *args, char **argv, size_t max)
{
	size_t n = 0;
	char *p = args;

	for (;;) {
		while (is_separator(*p))
			p++;
		if (*p == '\0')
			return n;
		if (n == max)
			return max + 1;
		argv[n++] = p;
		while (*p != '\0' && !is_separator(*p))
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
}

int pop3_parse_number(const char *s, uint64_t *value_r)
{
	uint64_t value = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (value > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		value = value * 10 + (uint64_t)(*s - '0');
	}
	*value_r = value;
	return 0;
}

/*
 * O-C0003: commands are printable ASCII plus TAB.  Credential commands may
 * carry 8-bit octets (UTF-8 passwords) and NUL, which their handlers refuse
 * with [AUTH] before anything goes upstream.
 */
static bool line_chars_ok(const char *line, size_t len, bool credentials)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c == '\t')
			continue;
		if (c == '\0' && credentials)
			continue;
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c >= 0x80 && !credentials)
			return false;
	}
	return true;
}

static void dispatch(struct pop3_session *s, char *line, size_t len)
{
	const struct pop3_command *cmd;
	size_t name_len = 0, rest;

	while (name_len < len && !is_separator(line[name_len]))
		name_len++;
	cmd = pop3_command_find(line, name_len);
	if (!line_chars_ok(line, len, cmd != NULL && cmd->credentials)) {
		pop3_bad_command(s, "Invalid character in command");
		return;
	}
	if (cmd == NULL) {
		pop3_bad_command(s, "Unknown command");
		return;
	}
	if ((cmd->states & (1u << s->state)) == 0) {
		pop3_bad_command(s, "Command is not valid in this state");
		return;
	}
	/* X 2.1.1: a run of SPACE/TAB separates the keyword from the rest. */
	rest = name_len;
	while (rest < len && is_separator(line[rest]))
		rest++;
	cmd->handler(s, line + rest, len - rest);
}

static bool may_process(const struct pop3_session *s)
{
	return (s->state == POP3_STATE_AUTHORIZATION ||
		s->state == POP3_STATE_TRANSACTION) &&
	       !s->paused && !s->wants_tls;
}

static void process_lines(struct pop3_session *s)
{
	while (may_process(s)) {
		size_t limit = s->sasl != NULL ? s->set->max_sasl_size
					       : s->set->max_command_size;
		char *line;
		size_t len;

		switch (line_reader_next(s->input, limit, &line, &len)) {
		case LINE_NEED_MORE:
			return;
		case LINE_TOO_LONG:
			if (s->sasl != NULL) {
				pop3_auth_abort(s);
				pop3_err(s, "SASL response too long");
			} else {
				pop3_bad_command(s, "Command line too long");
			}
			break;
		case LINE_OK:
			if (s->sasl != NULL)
				pop3_auth_continue(s, line, len);
			else
				dispatch(s, line, len);
			break;
		}
	}
}

void pop3_session_start(struct pop3_session *s)
{
	/* No APOP timestamp in the greeting: APOP is not offered (X-V0012). */
	pop3_line(s, GREETING);
	pop3_flush(s);
}

int pop3_session_input(struct pop3_session *s, const char *data, size_t len)
{
	if (s->state == POP3_STATE_CLOSED)
		return -1;
	if (s->wants_tls) {
		/* Plaintext sent before the handshake is never a command
		 * (CVE-2011-0411). */
		return 0;
	}
	if (line_reader_feed(s->input, data, len) < 0) {
		log_error("event=out_of_memory where=input");
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return -1;
	}
	/* Once the driver has taken the penalty it is the one waiting. */
	if (s->penalty_ms == 0)
		s->paused = false;
	process_lines(s);
	pop3_flush(s);
	return s->state == POP3_STATE_CLOSED ? -1 : 0;
}

enum pop3_state pop3_session_state(const struct pop3_session *s)
{
	return s->state;
}

uint64_t pop3_session_idle_timeout_ms(const struct pop3_session *s)
{
	if (s->state == POP3_STATE_TRANSACTION)
		return s->set->timeout_authenticated_ms;
	return s->set->timeout_unauthenticated_ms;
}

/* X-V0002/X-V0003: say why, then close; nothing marked is deleted. */
void pop3_session_timeout(struct pop3_session *s)
{
	if (s->state == POP3_STATE_CLOSED)
		return;
	log_info("event=idle_timeout %s state=%s", s->peer,
		 state_name(s->state));
	pop3_err(s, "Connection is closed. Idle timeout.");
	pop3_enter_state(s, POP3_STATE_CLOSED);
	pop3_flush(s);
}

void pop3_session_shutdown(struct pop3_session *s)
{
	if (s->state == POP3_STATE_CLOSED)
		return;
	pop3_err(s, "[SYS/TEMP] Server shutting down, try again later");
	pop3_enter_state(s, POP3_STATE_CLOSED);
	pop3_flush(s);
}

uint64_t pop3_session_take_penalty_ms(struct pop3_session *s)
{
	uint64_t ms = s->penalty_ms;

	s->penalty_ms = 0;
	return ms;
}

bool pop3_session_wants_tls(const struct pop3_session *s)
{
	return s->wants_tls;
}

void pop3_session_tls_started(struct pop3_session *s)
{
	s->wants_tls = false;
	s->secure = true;
	/* Nothing from before the handshake carries over (RFC 2595). */
	line_reader_discard(s->input);
	free_user(&s->pending_user);
}

int pop3_session_keepalive(struct pop3_session *s)
{
	struct backend_error err;

	if (s->state != POP3_STATE_TRANSACTION)
		return 0;
	if (backend_keepalive(s->be, &err) < 0) {
		char reason[256];

		log_info("event=keepalive_failed reason=%s",
			 log_value(reason, sizeof(reason), err.text));
		return -1;
	}
	return 0;
}
