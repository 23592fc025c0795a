/*
 * bench_pop3.c - an Outlook-like POP3 client session for the benchmark.
 *
 * Checks what a careful client would notice: every multi-line response
 * ends with its terminator, LIST and UIDL agree with STAT, and each RETR
 * delivers exactly the octets LIST announced once the dot-stuffing is
 * undone.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "bench_session.h"

struct pop3 {
	struct bnet *conn;
	const struct bench_target *target;
	struct session_result *res;
	const char *line;	/* last status line */
	size_t line_len;
	double pass_sent;	/* ms */
};

static bool past_deadline(struct pop3 *p)
{
	if (bench_now_ms() <= p->target->hard_deadline_ms)
		return false;
	p->res->aborted = true;
	session_fail(p->res, "run deadline passed", NULL, 0);
	return true;
}

/* Send one command in one write and read its status line; 0 on +OK. */
static int command(struct pop3 *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int read_status(struct pop3 *p)
{
	const char *error;

	if (bnet_read_line(p->conn, &p->line, &p->line_len, &error) < 0) {
		session_fail(p->res, error, NULL, 0);
		return -1;
	}
	if (p->line_len >= 3 && memcmp(p->line, "+OK", 3) == 0)
		return 0;
	session_fail(p->res, "server said no", p->line, p->line_len);
	return -1;
}

static int command(struct pop3 *p, const char *fmt, ...)
{
	char buf[1024];
	const char *error;
	va_list args;
	int n;

	va_start(args, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, args);
	va_end(args);
	if (n < 0 || (size_t)n >= sizeof(buf) - 2) {
		session_fail(p->res, "command too long", NULL, 0);
		return -1;
	}
	memcpy(buf + n, "\r\n", 2);
	if (bnet_write(p->conn, buf, (size_t)n + 2, &error) < 0) {
		session_fail(p->res, error, NULL, 0);
		return -1;
	}
	return read_status(p);
}

/* Read the lines of a multi-line response up to its terminator, handing
 * each (dot-stuffing undone, CRLF kept) to LINE_CB. */
static int read_lines(struct pop3 *p,
		      int (*line_cb)(void *ctx, const char *line, size_t len),
		      void *ctx)
{
	const char *line, *error;
	size_t len;

	for (;;) {
		if (bnet_read_line(p->conn, &line, &len, &error) < 0) {
			p->res->mismatches++;
			session_fail(p->res, error, NULL, 0);
			return -1;
		}
		if (line[0] == '.') {
			if (len == 3 && line[1] == '\r')
				return 0;
			line++;
			len--;
		}
		if (line_cb != NULL && line_cb(ctx, line, len) < 0)
			return -1;
	}
}

/*
 * Offset of the first LF in DATA that has a "." after it, or LEN.  Only
 * there can a stuffed dot or the terminator begin, so the body is counted
 * a buffer at a time instead of a line at a time: this client shares the
 * machine with the server it measures.
 */
static size_t lf_dot_offset(const char *data, size_t len)
{
	size_t i = 0;

#ifdef __SSE2__
	const __m128i lf = _mm_set1_epi8('\n'), dot = _mm_set1_epi8('.');

	for (; i + 17 <= len; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(data + i));
		__m128i next = _mm_loadu_si128((const __m128i *)(data + i + 1));
		int mask = _mm_movemask_epi8(_mm_and_si128(
			_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(next, dot)));

		if (mask != 0)
			return i + (size_t)__builtin_ctz((unsigned)mask);
	}
#endif
	while (i + 1 < len) {
		const char *nl = memchr(data + i, '\n', len - 1 - i);

		if (nl == NULL)
			break;
		i = (size_t)(nl - data);
		if (data[i + 1] == '.')
			return i;
		i++;
	}
	return len;
}

/*
 * Count the octets of a multi-line response body as the client stores
 * them: the stuffed dots are dropped, the terminator is not counted.
 * Scans the read buffer in place.
 */
static int read_body(struct pop3 *p, uint64_t *octets_r)
{
	enum { BOL, MID, DOT, DOT_CR } state = BOL;
	uint64_t octets = 0;
	const char *data, *error;
	size_t len, i;

	for (;;) {
		if (bnet_peek(p->conn, &data, &len, &error) < 0) {
			p->res->mismatches++;
			session_fail(p->res, error, NULL, 0);
			return -1;
		}
		for (i = 0; i < len; ) {
			size_t lf;

			switch (state) {
			case BOL:
				if (data[i] == '.') {
					state = DOT;
					i++;
				} else {
					state = MID;
				}
				break;
			case DOT:
				if (data[i] == '\r') {
					state = DOT_CR;
					i++;
				} else {
					state = MID;
				}
				break;
			case DOT_CR:
				if (data[i] == '\n') {
					bnet_consume(p->conn, i + 1);
					*octets_r = octets;
					return 0;
				}
				/* ".\r" then something else: a line that
				 * was a stuffed "\r..." - keep the CR. */
				octets++;
				state = MID;
				break;
			case MID:
				/* An LF at the end of the buffer may have
				 * its "." in the next one. */
				lf = i + lf_dot_offset(data + i, len - i);
				if (lf == len) {
					octets += len - i;
					i = len;
					if (data[len - 1] == '\n')
						state = BOL;
				} else {
					octets += lf + 1 - i;
					i = lf + 1;
					state = BOL;
				}
				break;
			}
		}
		bnet_consume(p->conn, len);
	}
}

struct listing {
	unsigned long count;
	uint64_t *sizes;	/* index 0 is message 1 */
	unsigned long entries;
	bool bad;
};

static int list_line(void *ctx, const char *line, size_t len)
{
	struct listing *l = ctx;
	unsigned long msg;
	unsigned long long size;
	char buf[64];

	if (len >= sizeof(buf))
		len = sizeof(buf) - 1;
	memcpy(buf, line, len);
	buf[len] = '\0';
	if (sscanf(buf, "%lu %llu", &msg, &size) != 2 || msg == 0 ||
	    msg > l->count || msg != l->entries + 1)
		l->bad = true;
	else
		l->sizes[msg - 1] = size;
	l->entries++;
	return 0;
}

static int uidl_line(void *ctx, const char *line, size_t len)
{
	struct listing *l = ctx;

	/* "n unique-id\r\n": n ascending from 1, an id of 1 to 70 chars. */
	if (len < 5 || strtoul(line, NULL, 10) != l->entries + 1 ||
	    memchr(line, ' ', len) == NULL)
		l->bad = true;
	l->entries++;
	return 0;
}

static int stat_reply(struct pop3 *p, struct listing *l)
{
	char buf[64];
	size_t len = p->line_len < sizeof(buf) - 1 ? p->line_len :
		sizeof(buf) - 1;
	unsigned long long total;

	memcpy(buf, p->line, len);
	buf[len] = '\0';
	if (sscanf(buf, "+OK %lu %llu", &l->count, &total) != 2) {
		session_fail(p->res, "unparsable STAT reply", p->line,
			     p->line_len);
		return -1;
	}
	return 0;
}

static int connect_and_login(struct pop3 *p, const char *user)
{
	const struct bench_target *t = p->target;
	const char *error;

	p->conn = bnet_connect(t->host, t->port, t->timeout_ms, &error);
	if (p->conn == NULL) {
		session_fail(p->res, error, NULL, 0);
		return -1;
	}
	if (t->tls == BENCH_TLS_IMPLICIT &&
	    bnet_start_tls(p->conn, t->tls_ctx, &error) < 0) {
		session_fail(p->res, error, NULL, 0);
		return -1;
	}
	if (read_status(p) < 0)
		return -1;
	if (t->tls == BENCH_TLS_STARTTLS) {
		if (command(p, "STLS") < 0)
			return -1;
		if (bnet_start_tls(p->conn, t->tls_ctx, &error) < 0) {
			session_fail(p->res, error, NULL, 0);
			return -1;
		}
	}
	if (t->workload != WORKLOAD_LOGIN_ONLY) {
		if (command(p, "CAPA") < 0 || read_lines(p, NULL, NULL) < 0)
			return -1;
	}
	if (command(p, "USER %s", user) < 0)
		return -1;
	p->pass_sent = bench_now_ms();
	if (command(p, "PASS %s", t->password) < 0)
		return -1;
	p->res->login_ms = bench_now_ms() - p->pass_sent;
	return 0;
}

/* RETR or TOP every message (or the first max_messages). */
static int fetch_messages(struct pop3 *p, const struct listing *l)
{
	unsigned long n = l->count, i;
	uint64_t octets;

	if (p->target->max_messages != 0 && n > p->target->max_messages)
		n = p->target->max_messages;
	for (i = 1; i <= n; i++) {
		if (past_deadline(p))
			return -1;
		if (p->target->workload == WORKLOAD_TOP0) {
			if (command(p, "TOP %lu 0", i) < 0 ||
			    read_body(p, &octets) < 0)
				return -1;
			if (octets > l->sizes[i - 1])
				p->res->mismatches++;
		} else {
			if (command(p, "RETR %lu", i) < 0 ||
			    read_body(p, &octets) < 0)
				return -1;
			if (octets != l->sizes[i - 1])
				p->res->mismatches++;
		}
		p->res->bytes += octets;
		p->res->messages++;
	}
	return 0;
}

static int transaction(struct pop3 *p)
{
	enum bench_workload w = p->target->workload;
	struct listing l = { 0 };
	int ret = -1;

	if (command(p, "STAT") < 0 || stat_reply(p, &l) < 0)
		return -1;
	p->res->ready_ms = bench_now_ms() - p->pass_sent;
	if (w == WORKLOAD_LOGIN_ONLY)
		return 0;
	if (w == WORKLOAD_SYNC || w == WORKLOAD_UIDL_ONLY) {
		if (command(p, "UIDL") < 0 || read_lines(p, uidl_line, &l) < 0)
			return -1;
		if (l.bad || l.entries != l.count)
			p->res->mismatches++;
	}
	if (w == WORKLOAD_UIDL_ONLY)
		return 0;
	l.sizes = calloc(l.count + 1, sizeof(*l.sizes));
	if (l.sizes == NULL) {
		session_fail(p->res, "out of memory", NULL, 0);
		return -1;
	}
	l.entries = 0;
	l.bad = false;
	if (command(p, "LIST") < 0 || read_lines(p, list_line, &l) < 0)
		goto out;
	if (l.bad || l.entries != l.count)
		p->res->mismatches++;
	ret = fetch_messages(p, &l);
out:
	free(l.sizes);
	return ret;
}

static void pop3_run_session(const struct bench_target *target,
			     const char *user, struct session_result *res)
{
	struct pop3 p = { .target = target, .res = res };
	double start = bench_now_ms();

	if (connect_and_login(&p, user) == 0 && transaction(&p) == 0 &&
	    command(&p, "QUIT") == 0) {
		res->ok = true;
		res->total_ms = bench_now_ms() - start;
	}
	bnet_free(p.conn);
}

static struct bnet *pop3_open_idle(const struct bench_target *target,
				   const char *user,
				   struct session_result *res)
{
	struct pop3 p = { .target = target, .res = res };

	if (connect_and_login(&p, user) < 0) {
		bnet_free(p.conn);
		return NULL;
	}
	res->ok = true;
	return p.conn;
}

static void pop3_close_idle(struct bnet *conn)
{
	const char *error;

	/* Best effort: the reply is not waited for. */
	(void)bnet_write(conn, "QUIT\r\n", 6, &error);
	bnet_free(conn);
}

const struct bench_protocol bench_pop3 = {
	.name = "pop3",
	.run_session = pop3_run_session,
	.open_idle = pop3_open_idle,
	.close_idle = pop3_close_idle,
};
