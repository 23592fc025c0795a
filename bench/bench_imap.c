/*
 * bench_imap.c - the reference client: the work of a POP3 sync session
 * done directly over IMAP, so that "gateway / raw IMAP" is the gateway's
 * overhead.
 *
 * connect, LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE), then one
 * UID FETCH n BODY.PEEK[] (or BODY.PEEK[HEADER] for the top0 workload) at
 * a time, LOGOUT.  Literals are read by their announced length, wherever
 * they appear in a response line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_session.h"

#define RESPONSE_TEXT_MAX 2048

struct imap_message {
	unsigned long uid;
	uint64_t size;
};

struct imap {
	struct bnet *conn;
	const struct bench_target *target;
	struct session_result *res;
	unsigned int tag;
	/* the current response: its text without literal contents */
	char text[RESPONSE_TEXT_MAX];
	size_t text_len;
	uint64_t literal_bytes;
	unsigned int literals;
	/* the snapshot */
	unsigned long exists;
	struct imap_message *msgs;
	unsigned long count, alloc;
};

static void text_append(struct imap *m, const char *s, size_t len)
{
	size_t room = sizeof(m->text) - 1 - m->text_len;

	if (len > room)
		len = room;
	memcpy(m->text + m->text_len, s, len);
	m->text_len += len;
	m->text[m->text_len] = '\0';
}

/* The literal length announced at the end of LINE ("{123}\r\n" or
 * "{123+}\r\n"), or -1 when it does not end with one. */
static long long literal_length(const char *line, size_t len)
{
	const char *open;
	size_t i;
	long long n = 0;

	if (len < 4 || memcmp(line + len - 3, "}\r\n", 3) != 0)
		return -1;
	open = memrchr(line, '{', len - 3);
	if (open == NULL)
		return -1;
	for (i = (size_t)(open - line) + 1; i < len - 3; i++) {
		if (line[i] == '+' && i == len - 4)
			break;
		if (line[i] < '0' || line[i] > '9' || n > (1LL << 40))
			return -1;
		n = n * 10 + (line[i] - '0');
	}
	return n;
}

static int skip_literal(struct imap *m, uint64_t n)
{
	const char *data, *error;
	size_t len;

	while (n > 0) {
		if (bnet_peek(m->conn, &data, &len, &error) < 0) {
			m->res->mismatches++;
			session_fail(m->res, error, NULL, 0);
			return -1;
		}
		if (len > n)
			len = (size_t)n;
		bnet_consume(m->conn, len);
		n -= len;
	}
	return 0;
}

/* Read one whole response (a line, with every literal it carries). */
static int read_response(struct imap *m)
{
	const char *line, *error;
	size_t len;
	long long lit;

	m->text_len = 0;
	m->text[0] = '\0';
	m->literal_bytes = 0;
	m->literals = 0;
	for (;;) {
		if (bnet_read_line(m->conn, &line, &len, &error) < 0) {
			session_fail(m->res, error, NULL, 0);
			return -1;
		}
		text_append(m, line, len);
		lit = literal_length(line, len);
		if (lit < 0)
			return 0;
		if (skip_literal(m, (uint64_t)lit) < 0)
			return -1;
		m->literal_bytes += (uint64_t)lit;
		m->literals++;
	}
}

/* The number after KEY ("UID ", "RFC822.SIZE ") in the response text. */
static bool text_number(const struct imap *m, const char *key,
			unsigned long long *value_r)
{
	const char *p = m->text;
	size_t klen = strlen(key);

	while ((p = strstr(p, key)) != NULL) {
		if (p > m->text && (p[-1] == ' ' || p[-1] == '(')) {
			char *end;

			*value_r = strtoull(p + klen, &end, 10);
			if (end != p + klen)
				return true;
		}
		p += klen;
	}
	return false;
}

static int snapshot_add(struct imap *m)
{
	unsigned long long uid, size;

	if (!text_number(m, "UID ", &uid) ||
	    !text_number(m, "RFC822.SIZE ", &size)) {
		m->res->mismatches++;
		return 0;
	}
	if (m->count == m->alloc) {
		unsigned long alloc = m->alloc ? m->alloc * 2 : 64;
		struct imap_message *grown =
			realloc(m->msgs, alloc * sizeof(*grown));

		if (grown == NULL) {
			session_fail(m->res, "out of memory", NULL, 0);
			return -1;
		}
		m->msgs = grown;
		m->alloc = alloc;
	}
	m->msgs[m->count].uid = uid;
	m->msgs[m->count].size = size;
	m->count++;
	return 0;
}

enum command_kind { CMD_PLAIN, CMD_SELECT, CMD_SIZES, CMD_BODY };

/*
 * Send one tagged command in one write and read up to its completion,
 * looking at the untagged responses KIND cares about.  For CMD_BODY,
 * EXPECT is the message whose literal must arrive.  0 on tagged OK.
 */
static int command(struct imap *m, enum command_kind kind,
		   const struct imap_message *expect, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int command(struct imap *m, enum command_kind kind,
		   const struct imap_message *expect, const char *fmt, ...)
{
	char buf[1024], tag[16];
	const char *error;
	bool body_seen = false;
	va_list args;
	int n, tag_len;

	tag_len = snprintf(tag, sizeof(tag), "a%u ", ++m->tag);
	memcpy(buf, tag, (size_t)tag_len);
	va_start(args, fmt);
	n = vsnprintf(buf + tag_len, sizeof(buf) - (size_t)tag_len - 2, fmt,
		      args);
	va_end(args);
	if (n < 0 || (size_t)n >= sizeof(buf) - (size_t)tag_len - 2) {
		session_fail(m->res, "command too long", NULL, 0);
		return -1;
	}
	n += tag_len;
	memcpy(buf + n, "\r\n", 2);
	if (bnet_write(m->conn, buf, (size_t)n + 2, &error) < 0) {
		session_fail(m->res, error, NULL, 0);
		return -1;
	}
	for (;;) {
		unsigned long long uid;

		if (read_response(m) < 0)
			return -1;
		if (strncmp(m->text, tag, (size_t)tag_len) == 0)
			break;
		if (strncmp(m->text, "* ", 2) != 0)
			continue;
		if (kind == CMD_SELECT && strstr(m->text, " EXISTS") != NULL) {
			m->exists = strtoul(m->text + 2, NULL, 10);
		} else if (kind == CMD_SIZES && strstr(m->text, " FETCH ")) {
			if (snapshot_add(m) < 0)
				return -1;
		} else if (kind == CMD_BODY && m->literals == 1 &&
			   strstr(m->text, " FETCH ") != NULL) {
			if (!text_number(m, "UID ", &uid) ||
			    uid != expect->uid)
				m->res->mismatches++;
			if (m->target->workload == WORKLOAD_TOP0 ?
			    m->literal_bytes > expect->size :
			    m->literal_bytes != expect->size)
				m->res->mismatches++;
			m->res->bytes += m->literal_bytes;
			m->res->messages++;
			body_seen = true;
		}
	}
	if (strncmp(m->text + tag_len, "OK", 2) != 0) {
		session_fail(m->res, "server said no", m->text, m->text_len);
		return -1;
	}
	if (kind == CMD_BODY && !body_seen)
		m->res->mismatches++;
	return 0;
}

/* An IMAP quoted string for S into BUF; false when it does not fit or
 * holds a character a quoted string cannot carry. */
static bool quote(char *buf, size_t size, const char *s)
{
	size_t o = 0;

	if (size < 3)
		return false;
	buf[o++] = '"';
	for (; *s != '\0'; s++) {
		if (*s == '\r' || *s == '\n' || o + 4 >= size)
			return false;
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return true;
}

static int connect_and_login(struct imap *m, const char *user)
{
	const struct bench_target *t = m->target;
	char quser[300], qpass[300], qfolder[300];
	const char *error;

	if (!quote(quser, sizeof(quser), user) ||
	    !quote(qpass, sizeof(qpass), t->password) ||
	    !quote(qfolder, sizeof(qfolder), t->folder)) {
		session_fail(m->res, "user, password or folder unusable",
			     NULL, 0);
		return -1;
	}
	m->conn = bnet_connect(t->host, t->port, t->timeout_ms, &error);
	if (m->conn == NULL) {
		session_fail(m->res, error, NULL, 0);
		return -1;
	}
	if (t->tls == BENCH_TLS_IMPLICIT &&
	    bnet_start_tls(m->conn, t->tls_ctx, &error) < 0) {
		session_fail(m->res, error, NULL, 0);
		return -1;
	}
	if (read_response(m) < 0)
		return -1;
	if (strncmp(m->text, "* OK", 4) != 0) {
		session_fail(m->res, "bad greeting", m->text, m->text_len);
		return -1;
	}
	if (t->tls == BENCH_TLS_STARTTLS) {
		if (command(m, CMD_PLAIN, NULL, "STARTTLS") < 0)
			return -1;
		if (bnet_start_tls(m->conn, t->tls_ctx, &error) < 0) {
			session_fail(m->res, error, NULL, 0);
			return -1;
		}
	}
	if (command(m, CMD_PLAIN, NULL, "LOGIN %s %s", quser, qpass) < 0 ||
	    command(m, CMD_SELECT, NULL, "SELECT %s", qfolder) < 0)
		return -1;
	return 0;
}

static int fetch_messages(struct imap *m)
{
	const char *item = m->target->workload == WORKLOAD_TOP0 ?
		"BODY.PEEK[HEADER]" : "BODY.PEEK[]";
	unsigned long n = m->count, i;

	if (m->target->max_messages != 0 && n > m->target->max_messages)
		n = m->target->max_messages;
	for (i = 0; i < n; i++) {
		if (bench_now_ms() > m->target->hard_deadline_ms) {
			m->res->aborted = true;
			session_fail(m->res, "run deadline passed", NULL, 0);
			return -1;
		}
		if (command(m, CMD_BODY, &m->msgs[i], "UID FETCH %lu %s",
			    m->msgs[i].uid, item) < 0)
			return -1;
	}
	return 0;
}

static void imap_run_session(const struct bench_target *target,
			     const char *user, struct session_result *res)
{
	struct imap *m = calloc(1, sizeof(*m));
	double start = bench_now_ms();

	if (m == NULL) {
		session_fail(res, "out of memory", NULL, 0);
		return;
	}
	m->target = target;
	m->res = res;
	if (connect_and_login(m, user) < 0 ||
	    command(m, CMD_SIZES, NULL, "UID FETCH 1:* (UID RFC822.SIZE)") < 0)
		goto out;
	res->login_ms = bench_now_ms() - start;
	res->ready_ms = res->login_ms;
	if (m->count != m->exists)
		res->mismatches++;
	if ((target->workload == WORKLOAD_SYNC ||
	     target->workload == WORKLOAD_TOP0) && fetch_messages(m) < 0)
		goto out;
	if (command(m, CMD_PLAIN, NULL, "LOGOUT") < 0)
		goto out;
	res->ok = true;
	res->total_ms = bench_now_ms() - start;
out:
	bnet_free(m->conn);
	free(m->msgs);
	free(m);
}

static struct bnet *imap_open_idle(const struct bench_target *target,
				   const char *user,
				   struct session_result *res)
{
	struct imap *m = calloc(1, sizeof(*m));
	struct bnet *conn = NULL;

	if (m == NULL) {
		session_fail(res, "out of memory", NULL, 0);
		return NULL;
	}
	m->target = target;
	m->res = res;
	if (connect_and_login(m, user) < 0) {
		bnet_free(m->conn);
	} else {
		conn = m->conn;
		res->ok = true;
	}
	free(m->msgs);
	free(m);
	return conn;
}

static void imap_close_idle(struct bnet *conn)
{
	const char *error;

	(void)bnet_write(conn, "z LOGOUT\r\n", 10, &error);
	bnet_free(conn);
}

const struct bench_protocol bench_imap = {
	.name = "imap",
	.run_session = imap_run_session,
	.open_idle = imap_open_idle,
	.close_idle = imap_close_idle,
};
