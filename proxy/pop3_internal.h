/*
 * pop3_internal.h - what the engine's files share: the session structure,
 * response helpers and the command handlers.  Not for use outside proxy/.
 *
 * Handlers answer the client themselves (exactly one response per
 * command) through pop3_ok()/pop3_err()/pop3_out(); they never write to the
 * client directly, and change state only through pop3_enter_state().
 */
#ifndef POPGATE_POP3_INTERNAL_H
#define POPGATE_POP3_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "line_reader.h"
#include "outbuf.h"
#include "pop3_session.h"

/* RFC 1939 / X-C0001: a status line, CRLF included, never exceeds this. */
#define POP3_MAX_RESPONSE 512

/* Per-message marks, one octet per snapshot entry. */
#define POP3_MSG_DELETED   0x01
#define POP3_MSG_RETRIEVED 0x02  /* fully sent by RETR: \Seen at UPDATE */

struct sasl_mech;

struct pop3_session {
	const struct pop3_settings *set;
	struct backend *be;
	const struct pop3_io *io;
	char *peer;
	bool secure;

	enum pop3_state state;
	struct line_reader *input;
	struct outbuf *output;
	bool write_failed;

	unsigned bad_commands;
	unsigned failed_logins;
	uint64_t penalty_ms;
	bool paused;      /* after a failed login, until the next input call */
	bool wants_tls;   /* STLS accepted, handshake not yet done */

	char *pending_user;  /* from USER, waiting for PASS */
	char *user;          /* the logged-in user, for logs */

	/* An AUTH exchange waiting for a continuation line. */
	const struct sasl_mech *sasl;
	unsigned sasl_step;
	unsigned char *sasl_user;
	size_t sasl_user_len;

	struct mail_snapshot snap;
	uint8_t *marks;      /* snap.count entries of POP3_MSG_* */
};

typedef void pop3_command_fn(struct pop3_session *s, char *args,
			     size_t args_len);

/* pop3_session.c */
void pop3_enter_state(struct pop3_session *s, enum pop3_state to);
void pop3_ok(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void pop3_err(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A line of a multi-line response (or a SASL challenge): CRLF is added;
 * not limited to POP3_MAX_RESPONSE. */
void pop3_line(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void pop3_out(struct pop3_session *s, const void *data, size_t len);
/* Hand buffered output to the client; -1 when the client is gone (the
 * session is then closed). */
int pop3_flush(struct pop3_session *s);
/* Answer a protocol error and count it; closes at max_bad_commands. */
void pop3_bad_command(struct pop3_session *s, const char *text);
/* The "-ERR [CODE] " prefix for a backend failure. */
const char *pop3_status_code(enum backend_status status);
/* Split ARGS in place at SPACE/TAB runs; returns the number of words, or
 * MAX + 1 when there are more than MAX. */
size_t pop3_split_args(char *args, char **argv, size_t max);
/* Strict decimal: digits only, no sign, no overflow. */
int pop3_parse_number(const char *s, uint64_t *value_r);

/* pop3_auth.c */
bool pop3_plaintext_allowed(const struct pop3_session *s);
void pop3_auth_continue(struct pop3_session *s, char *line, size_t len);
void pop3_auth_abort(struct pop3_session *s);
void pop3_auth_list_mechanisms(struct pop3_session *s);
void pop3_cmd_user(struct pop3_session *s, char *args, size_t args_len);
void pop3_cmd_pass(struct pop3_session *s, char *args, size_t args_len);
void pop3_cmd_apop(struct pop3_session *s, char *args, size_t args_len);
void pop3_cmd_auth(struct pop3_session *s, char *args, size_t args_len);

/* pop3_commands.c */
struct pop3_command {
	const char *name;
	unsigned states;        /* bit (1 << POP3_STATE_x) per allowed state */
	bool credentials;       /* 8-bit octets and NUL reach the handler */
	pop3_command_fn *handler;
};

/* The command named by the LEN octets at NAME (any case), or NULL. */
const struct pop3_command *pop3_command_find(const char *name, size_t len);

#endif
