/*
 * pop3_commands.c - the command table and the TRANSACTION commands,
 * CAPA, STLS, NOOP and QUIT.
 *
 * RETR and TOP stream: the backend calls fetch_sink() with each piece of
 * the message, which dot-stuffs it into the output buffer and flushes
 * every OUTBUF_FLUSH_SIZE octets, so memory does not grow with the message.
 * The "+OK" is sent with the first octet, so a failure before that can
 * still be answered with -ERR; the terminator only after the backend
 * reported success, so a client never takes a cut message as complete.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "dotstuff.h"
#include "log.h"
#include "pop3_internal.h"

#define IN_AUTH  (1u << POP3_STATE_AUTHORIZATION)
#define IN_TRANS (1u << POP3_STATE_TRANSACTION)

/* TOP fetches this much beyond the headers' estimate; the backend may
 * fetch more if the sink keeps asking. */
#define TOP_FIRST_CHUNK   (16 * 1024)
#define TOP_LINE_ESTIMATE 128

/*
 * Resolve a message-number argument.  Returns the index into the snapshot,
 * or -1 after answering -ERR (O-C0011: numbers are 1..n in snapshot order;
 * O-C0026: a deleted message is no longer there).
 */
static ssize_t message_arg(struct pop3_session *s, const char *arg)
{
	uint64_t n;

	if (pop3_parse_number(arg, &n) < 0 || n == 0 || n > s->snap.count) {
		pop3_err(s, "No such message");
		return -1;
	}
	if (s->marks[n - 1] & POP3_MSG_DELETED) {
		pop3_err(s, "Message %" PRIu64 " already deleted", n);
		return -1;
	}
	return (ssize_t)(n - 1);
}

static void cmd_capa(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	pop3_ok(s, "Capability list follows");
	pop3_line(s, "TOP");
	pop3_line(s, "UIDL");
	pop3_line(s, "RESP-CODES");
	pop3_line(s, "AUTH-RESP-CODE");
	pop3_line(s, "PIPELINING");
	if (s->state == POP3_STATE_AUTHORIZATION) {
		/* Only what can be used on this connection now: under the
		 * secure policy before TLS, no plaintext login at all. */
		if (pop3_plaintext_allowed(s)) {
			pop3_line(s, "USER");
			pop3_line(s, "SASL PLAIN LOGIN");
		}
		if (s->set->stls_available && !s->secure)
			pop3_line(s, "STLS");
	}
	pop3_line(s, ".");
}

static void cmd_stls(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	if (s->secure) {
		pop3_err(s, "Already using TLS");
		return;
	}
	if (!s->set->stls_available) {
		pop3_err(s, "STLS is not available on this port");
		return;
	}
	pop3_ok(s, "Begin TLS negotiation");
	/* Anything pipelined after STLS was sent in plaintext and could
	 * have been injected by an attacker: drop it (CVE-2011-0411). */
	line_reader_discard(s->input);
	s->wants_tls = true;
}

static void cmd_noop(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	pop3_ok(s, "%s", "");
}

static void cmd_last(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	pop3_err(s, "LAST is not supported");
}

/* X-V0004: "+OK count octets" and nothing after. */
static void cmd_stat(struct pop3_session *s, char *args, size_t args_len)
{
	uint64_t octets = 0;
	size_t count = 0;

	(void)args;
	(void)args_len;
	for (size_t i = 0; i < s->snap.count; i++) {
		if (s->marks[i] & POP3_MSG_DELETED)
			continue;
		count++;
		octets += s->snap.msgs[i].size;
	}
	pop3_ok(s, "%zu %" PRIu64, count, octets);
}

/* LIST and UIDL share their shape: all messages or one. */
static void listing(struct pop3_session *s, char *args, bool uidl)
{
	char *argv[1];
	ssize_t i;

	switch (pop3_split_args(args, argv, 1)) {
	case 0:
		break;
	case 1:
		i = message_arg(s, argv[0]);
		if (i < 0)
			return;
		pop3_ok(s, "%zd %" PRIu64, i + 1,
			uidl ? s->snap.msgs[i].uid : s->snap.msgs[i].size);
		return;
	default:
		pop3_bad_command(s, uidl ? "Syntax: UIDL [message]"
					 : "Syntax: LIST [message]");
		return;
	}
	pop3_ok(s, "%s", "");
	for (size_t n = 0; n < s->snap.count; n++) {
		if (s->marks[n] & POP3_MSG_DELETED)
			continue;
		pop3_line(s, "%zu %" PRIu64, n + 1,
			  uidl ? s->snap.msgs[n].uid : s->snap.msgs[n].size);
	}
	pop3_line(s, ".");
}

/* X-V0005 */
static void cmd_list(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args_len;
	listing(s, args, false);
}

static void cmd_uidl(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args_len;
	listing(s, args, true);
}

static void cmd_dele(struct pop3_session *s, char *args, size_t args_len)
{
	char *argv[1];
	ssize_t i;

	(void)args_len;
	if (pop3_split_args(args, argv, 1) != 1) {
		pop3_bad_command(s, "Syntax: DELE message");
		return;
	}
	i = message_arg(s, argv[0]);
	if (i < 0)
		return;
	s->marks[i] |= POP3_MSG_DELETED;
	pop3_ok(s, "Marked to be deleted.");
}

static void cmd_rset(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	/* Retrieved marks go too: RSET means "as if nothing happened". */
	memset(s->marks, 0, s->snap.count);
	pop3_ok(s, "%s", "");
}

struct fetch {
	struct pop3_session *s;
	const struct mail_entry *entry;
	struct dotstuff ds;
	bool top;
	bool started;       /* "+OK" sent */
	uint64_t octets;    /* message octets passed to the client */

	/* TOP: where we are in the message, in normalised lines. */
	bool in_body;
	bool line_empty;
	bool after_cr;
	uint64_t lines_left;
};

static void fetch_start(struct fetch *f)
{
	f->started = true;
	if (f->top)
		pop3_ok(f->s, "Top of message follows");
	else
		pop3_ok(f->s, "%" PRIu64 " octets", f->entry->size);
}

/*
 * How many of the LEN octets TOP still wants; *done when the last wanted
 * line ends inside them.  Line ends are counted exactly as dotstuff.c
 * normalises them: CR, LF and CRLF each end one line.
 */
static size_t top_take(struct fetch *f, const char *data, size_t len,
		       bool *done)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];

		if (c == '\n' && f->after_cr) {
			f->after_cr = false;
			continue;
		}
		if (c != '\r' && c != '\n') {
			f->after_cr = false;
			f->line_empty = false;
			continue;
		}
		f->after_cr = c == '\r';
		if (!f->in_body) {
			if (f->line_empty) {
				f->in_body = true;
				if (f->lines_left == 0) {
					*done = true;
					return i + 1;
				}
			}
		} else if (--f->lines_left == 0) {
			*done = true;
			return i + 1;
		}
		f->line_empty = true;
	}
	return len;
}

static int fetch_sink(void *ctx, const char *data, size_t len)
{
	struct fetch *f = ctx;
	bool done = false;

	if (len == 0)
		return 0;
	if (!f->started)
		fetch_start(f);
	if (f->top)
		len = top_take(f, data, len, &done);
	if (dotstuff_write(&f->ds, f->s->output, data, len) < 0)
		return -1;
	f->octets += len;
	if (outbuf_length(f->s->output) >= OUTBUF_FLUSH_SIZE &&
	    pop3_flush(f->s) < 0)
		return -1;
	return done ? 1 : 0;
}

static void send_message(struct pop3_session *s, size_t i, bool top,
			 uint64_t lines)
{
	const struct mail_entry *entry = &s->snap.msgs[i];
	struct fetch f = {
		.s = s, .entry = entry, .top = top,
		.line_empty = true, .lines_left = lines,
	};
	struct backend_error err;
	uint64_t first_chunk = entry->size;
	char value[256], reason[256];

	dotstuff_init(&f.ds);
	if (top) {
		uint64_t estimate = TOP_FIRST_CHUNK;

		if (lines < (UINT64_MAX - estimate) / TOP_LINE_ESTIMATE)
			estimate += lines * TOP_LINE_ESTIMATE;
		else
			estimate = UINT64_MAX;
		if (estimate < first_chunk)
			first_chunk = estimate;
	}
	if (backend_fetch(s->be, entry, first_chunk, fetch_sink, &f,
			  &err) == 0) {
		if (!f.started)
			fetch_start(&f);
		if (dotstuff_finish(&f.ds, s->output) < 0) {
			pop3_enter_state(s, POP3_STATE_CLOSED);
			return;
		}
		if (!top)
			s->marks[i] |= POP3_MSG_RETRIEVED;
		log_debug("event=%s uid=%" PRIu64 " octets=%" PRIu64,
			  top ? "top" : "retr", entry->uid, f.octets);
		/* LIST promised entry->size; a client may rely on it. */
		if (!top && f.octets != entry->size)
			log_warn("event=size_mismatch user=%s uid=%" PRIu32
				 " listed=%" PRIu64 " sent=%" PRIu64,
				 log_value(value, sizeof(value), s->user),
				 entry->imap_uid, entry->size, f.octets);
		return;
	}
	if (f.started || err.status == BACKEND_SINK || s->write_failed) {
		/* POP3 cannot abort a multi-line response: closing without
		 * the terminator is the only honest signal. */
		if (!s->write_failed)
			log_error("event=fetch_failed user=%s uid=%" PRIu32
				  " sent=%" PRIu64 " reason=%s",
				  log_value(value, sizeof(value), s->user),
				  entry->imap_uid, f.octets,
				  log_value(reason, sizeof(reason), err.text));
		pop3_enter_state(s, POP3_STATE_CLOSED);
		return;
	}
	if (err.status == BACKEND_NO_MESSAGE) {
		/* X-C0004: removed upstream since the snapshot. */
		pop3_err(s, "Message %zu was removed from the server", i + 1);
		return;
	}
	pop3_err(s, "%s%s", err.status == BACKEND_PERM ? "[SYS/PERM] "
			     : "[SYS/TEMP] ", err.text);
}

static void cmd_retr(struct pop3_session *s, char *args, size_t args_len)
{
	char *argv[1];
	ssize_t i;

	(void)args_len;
	if (pop3_split_args(args, argv, 1) != 1) {
		pop3_bad_command(s, "Syntax: RETR message");
		return;
	}
	i = message_arg(s, argv[0]);
	if (i >= 0)
		send_message(s, (size_t)i, false, 0);
}

/* X-V0007, O-C0034 */
static void cmd_top(struct pop3_session *s, char *args, size_t args_len)
{
	char *argv[2];
	uint64_t lines;
	ssize_t i;

	(void)args_len;
	if (pop3_split_args(args, argv, 2) != 2) {
		pop3_bad_command(s, "Syntax: TOP message lines");
		return;
	}
	if (pop3_parse_number(argv[1], &lines) < 0) {
		pop3_bad_command(s, "Invalid number of lines");
		return;
	}
	i = message_arg(s, argv[0]);
	if (i >= 0)
		send_message(s, (size_t)i, true, lines);
}

/* Comma-separated upstream UIDs of the entries, or "-" when none. */
static char *uid_list(const struct mail_entry *const *v, size_t n)
{
	char *out = malloc(n * 11 + 2);
	size_t len = 0;

	if (out == NULL)
		return NULL;
	if (n == 0)
		strcpy(out, "-");
	for (size_t i = 0; i < n; i++) {
		len += (size_t)sprintf(out + len, "%s%" PRIu32,
				       i > 0 ? "," : "", v[i]->imap_uid);
	}
	return out;
}

/* X-V0006: remove exactly the marked messages, report a failure. */
static void update(struct pop3_session *s)
{
	const struct mail_entry **expunge, **seen;
	size_t n_expunge = 0, n_seen = 0;
	struct backend_error err;
	char *expunged_log, *seen_log;
	char value[256];
	int ret;

	pop3_enter_state(s, POP3_STATE_UPDATE);
	expunge = calloc(s->snap.count + 1, sizeof(*expunge));
	seen = calloc(s->snap.count + 1, sizeof(*seen));
	if (expunge == NULL || seen == NULL) {
		free(expunge);
		free(seen);
		pop3_err(s, "[SYS/TEMP] Out of memory, nothing deleted");
		return;
	}
	for (size_t i = 0; i < s->snap.count; i++) {
		if (s->marks[i] & POP3_MSG_DELETED)
			expunge[n_expunge++] = &s->snap.msgs[i];
		else if ((s->marks[i] & POP3_MSG_RETRIEVED) &&
			 s->set->mark_read_on_retr)
			seen[n_seen++] = &s->snap.msgs[i];
	}
	ret = backend_update(s->be, expunge, n_expunge, seen, n_seen, &err);
	expunged_log = uid_list(expunge, n_expunge);
	seen_log = uid_list(seen, n_seen);
	log_info("event=update user=%s expunged=%s seen=%s result=%s",
		 log_value(value, sizeof(value), s->user),
		 expunged_log != NULL ? expunged_log : "?",
		 seen_log != NULL ? seen_log : "?",
		 ret == 0 ? "ok" : "failed");
	free(expunged_log);
	free(seen_log);
	free(expunge);
	free(seen);
	if (ret == 0)
		pop3_ok(s, "popgate POP3 server signing off.");
	else
		pop3_err(s, "%s%s", pop3_status_code(err.status), err.text);
}

static void cmd_quit(struct pop3_session *s, char *args, size_t args_len)
{
	(void)args;
	(void)args_len;
	if (s->state == POP3_STATE_TRANSACTION)
		update(s);
	else
		pop3_ok(s, "popgate POP3 server signing off.");
	pop3_enter_state(s, POP3_STATE_CLOSED);
}

static const struct pop3_command commands[] = {
	{ "USER", IN_AUTH, true, pop3_cmd_user },
	{ "PASS", IN_AUTH, true, pop3_cmd_pass },
	{ "AUTH", IN_AUTH, true, pop3_cmd_auth },
	{ "APOP", IN_AUTH, false, pop3_cmd_apop },
	{ "STLS", IN_AUTH, false, cmd_stls },
	{ "CAPA", IN_AUTH | IN_TRANS, false, cmd_capa },
	{ "QUIT", IN_AUTH | IN_TRANS, false, cmd_quit },
	{ "NOOP", IN_TRANS, false, cmd_noop },
	{ "STAT", IN_TRANS, false, cmd_stat },
	{ "LIST", IN_TRANS, false, cmd_list },
	{ "UIDL", IN_TRANS, false, cmd_uidl },
	{ "RETR", IN_TRANS, false, cmd_retr },
	{ "TOP", IN_TRANS, false, cmd_top },
	{ "DELE", IN_TRANS, false, cmd_dele },
	{ "RSET", IN_TRANS, false, cmd_rset },
	{ "LAST", IN_TRANS, false, cmd_last },
};

const struct pop3_command *pop3_command_find(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strlen(commands[i].name) == len &&
		    strncasecmp(commands[i].name, name, len) == 0)
			return &commands[i];
	}
	return NULL;
}
