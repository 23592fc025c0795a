/*
 * test_imap_faults.c - the IMAP backend against a scripted upstream that
 * misbehaves: PREAUTH, BYE, garbage, STARTTLS response injection,
 * LOGINDISABLED, stalls, a connection cut mid-literal, no UIDPLUS; and
 * the read-ahead of small messages, command by command and octet by octet.
 *
 * Each test forks a one-connection server on 127.0.0.1 running a script;
 * the child checks what the backend sends and exits 0 only if the whole
 * script ran.  alarm() bounds every child.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#define LEAKS_IGNORED_BEGIN() __lsan_disable()
#define LEAKS_IGNORED_END() __lsan_enable()
#else
#define LEAKS_IGNORED_BEGIN() do { } while (0)
#define LEAKS_IGNORED_END() do { } while (0)
#endif

#include "imap_backend.h"

/* --- the scripted server (runs in the child) ---------------------------- */

static int peer = -1;
static char tag[32];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(peer, buf, (size_t)n) != n)
		_exit(4);
}

/* Read one command line; exit 3 on EOF.  Sets TAG, returns the rest. */
static const char *next_line(void)
{
	static char line[2048];
	size_t len = 0;
	char c, *sp;

	while (len + 1 < sizeof(line)) {
		if (read(peer, &c, 1) != 1)
			_exit(3);
		if (c == '\n')
			break;
		if (c != '\r')
			line[len++] = c;
	}
	line[len] = '\0';
	sp = strchr(line, ' ');
	if (sp == NULL)
		return line;
	*sp = '\0';
	snprintf(tag, sizeof(tag), "%.31s", line);
	return sp + 1;
}

/* The client must close the connection without another command: exit 0
 * on EOF, 5 on anything else. */
static void expect_eof(void)
{
	char c;

	_exit(read(peer, &c, 1) <= 0 ? 0 : 5);
}

/* The next command must start with PREFIX (case-sensitive), else exit 2. */
static const char *expect(const char *prefix)
{
	const char *rest = next_line();

	if (strncmp(rest, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "script: expected %s, got %s\n", prefix, rest);
		_exit(2);
	}
	return rest;
}

static void serve_plain_auth(const char *caps_after)
{
	unsigned char b64[128];
	static const char raw[] = "\0alice\0secret";
	const char *line;

	expect("AUTHENTICATE PLAIN");
	say("+ \r\n");
	EVP_EncodeBlock(b64, (const unsigned char *)raw, sizeof(raw) - 1);
	line = next_line();
	/* The credentials line has no tag: next_line split it at no space. */
	if (strcmp(line, (const char *)b64) != 0)
		_exit(5);
	say("%s OK [CAPABILITY IMAP4rev1 %s] Logged in\r\n", tag, caps_after);
}

static void serve_select(void)
{
	expect("SELECT INBOX");
	say("* FLAGS (\\Seen \\Deleted)\r\n* 4 EXISTS\r\n* 0 RECENT\r\n"
	    "* OK [UIDVALIDITY 77] ok\r\n%s OK [READ-WRITE] done\r\n", tag);
	expect("UID FETCH 1:* (UID RFC822.SIZE)");
	/* Out of order on purpose: the snapshot must sort. */
	say("* 2 FETCH (UID 11 RFC822.SIZE 100)\r\n"
	    "* 1 FETCH (UID 10 RFC822.SIZE 5)\r\n"
	    "* 3 FETCH (UID 12 RFC822.SIZE 7)\r\n"
	    "* 3 FETCH (FLAGS (\\Seen))\r\n"
	    "* 4 FETCH (UID 14 RFC822.SIZE 9)\r\n%s OK done\r\n", tag);
}

static void sc_preauth(void)
{
	say("* PREAUTH welcome\r\n");
	next_line(); /* LOGOUT or EOF */
}

static void sc_bye(void)
{
	say("* BYE too busy\r\n");
}

static void sc_garbage(void)
{
	say("HTTP/1.1 400 Bad Request\r\n\r\n");
}

static void sc_starttls_injection(void)
{
	say("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n");
	expect("STARTTLS");
	say("%s OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] x\r\n",
	    tag);
	next_line(); /* the backend must not start a handshake: EOF */
}

static void sc_starttls_missing(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	next_line();
}

static void sc_logindisabled(void)
{
	say("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n");
	next_line();
}

static void sc_stall(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	expect("AUTHENTICATE PLAIN");
	next_line(); /* never answer; wait for the backend to give up */
}

/* Cut after 600 of 1000 octets: the sink has had the 88 before the last
 * 512 read, which are held back until more comes. */
static void sc_cut_mid_literal(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	serve_select();
	expect("UID FETCH 11 (BODY.PEEK[]<0.4096>)");
	say("* 2 FETCH (UID 11 BODY[]<0> {1000}\r\n%0600d", 7);
}


static void sc_bye_mid_session(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	expect("SELECT INBOX");
	say("* BYE server shutting down\r\n");
}

static void sc_no_uidplus(void)
{
	/* No AUTH=PLAIN: LOGIN it is. */
	say("* OK [CAPABILITY IMAP4rev1] hi\r\n");
	expect("LOGIN alice secret");
	say("%s OK [CAPABILITY IMAP4rev1] Logged in\r\n", tag);
	serve_select();
	expect("UID STORE 10,12,14 +FLAGS.SILENT (\\Seen)");
	say("%s OK stored\r\n", tag);
	expect("UID STORE 11 +FLAGS.SILENT (\\Deleted)");
	say("%s OK stored\r\n", tag);
	/* Not EXPUNGE: the next command must be LOGOUT. */
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

static void sc_uidplus_ranges(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	serve_select();
	expect("UID STORE 10:12 +FLAGS.SILENT (\\Deleted)");
	say("%s OK stored\r\n", tag);
	expect("UID EXPUNGE 10:12");
	say("* 1 EXPUNGE\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\n%s OK done\r\n", tag);
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

static void sc_id_forwarding(void)
{
	const char *line;

	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] hi\r\n");
	line = expect("ID (");
	if (strstr(line, "\"x-originating-ip\" \"192.0.2.7\"") == NULL ||
	    strstr(line, "\"x-originating-port\" \"4321\"") == NULL)
		_exit(6);
	say("* ID NIL\r\n%s OK ID done\r\n", tag);
	serve_plain_auth("UIDPLUS");
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

static void sc_auth_refused_then_ok(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	expect("AUTHENTICATE PLAIN");
	say("+ \r\n");
	next_line();
	say("%s NO [AUTHENTICATIONFAILED] Authentication failed for alice\r\n",
	    tag);
	expect("CAPABILITY");
	say("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n%s OK done\r\n", tag);
	serve_plain_auth("UIDPLUS");
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

/* An authentication backend that is down (RFC 5530 UNAVAILABLE), then
 * a mailbox locked elsewhere (INUSE): neither is the user's password. */
static void sc_auth_refused_by_code(void)
{
	static const char *const codes[] = { "UNAVAILABLE", "INUSE" };

	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n");
	for (size_t i = 0; i < 2; i++) {
		expect("AUTHENTICATE PLAIN ");
		say("%s NO [%s] Not now\r\n", tag, codes[i]);
		expect("CAPABILITY");
		say("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n"
		    "%s OK done\r\n", tag);
	}
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

/*
 * The unique-id store asks the upstream about new messages; this upstream
 * answers that UID FETCH with a bare tagged NO.  libetpan has freed its
 * (empty) result list by then: touching it again crashed the session.
 */
static void sc_store_fetch_refused(void)
{
	const char *line;

	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	serve_select();
	expect("UID FETCH");
	say("%s NO [SERVERBUG] not now\r\n", tag);
	for (;;) {
		line = next_line();
		if (strncmp(line, "LOGOUT", 6) == 0) {
			say("* BYE bye\r\n%s OK done\r\n", tag);
			_exit(0);
		}
		say("%s NO still not\r\n", tag);
	}
}

#define MANY 100000

static void sc_many_messages(void)
{
	static char buf[64 * 1024];
	size_t len = 0;

	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	expect("SELECT INBOX");
	say("* %d EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\n%s OK done\r\n",
	    MANY, tag);
	expect("UID FETCH 1:* (UID RFC822.SIZE)");
	for (unsigned i = 1; i <= MANY; i++) {
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
			"* %u FETCH (UID %u RFC822.SIZE %u)\r\n", i, 2 * i,
			1000 + i);
		if (len > sizeof(buf) - 100) {
			if (write(peer, buf, len) != (ssize_t)len)
				_exit(4);
			len = 0;
		}
	}
	if (write(peer, buf, len) != (ssize_t)len)
		_exit(4);
	say("%s OK done\r\n", tag);
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

/* --- read-ahead: a mailbox of generated bodies -------------------------- */

struct upmsg {
	uint32_t uid;
	uint32_t size;
};

/* The mailbox both sides know; set before start_server(). */
static const struct upmsg *box;
static size_t box_count;

/* Octet I of message UID: lines of letters, so a shifted or mixed-up body
 * never compares equal. */
static char body_octet(uint32_t uid, size_t i)
{
	if (i % 64 == 62)
		return '\r';
	if (i % 64 == 63)
		return '\n';
	return (char)('A' + (uid * 7 + i) % 26);
}

static const struct upmsg *box_find(uint32_t uid, size_t *seq_r)
{
	for (size_t i = 0; i < box_count; i++) {
		if (box[i].uid == uid) {
			*seq_r = i + 1;
			return &box[i];
		}
	}
	return NULL;
}

static void serve_box(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	expect("SELECT INBOX");
	say("* %zu EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n%s OK done\r\n",
	    box_count, tag);
	expect("UID FETCH 1:* (UID RFC822.SIZE)");
	for (size_t i = 0; i < box_count; i++)
		say("* %zu FETCH (UID %u RFC822.SIZE %u)\r\n", i + 1,
		    box[i].uid, box[i].size);
	say("%s OK done\r\n", tag);
}

static void send_body(uint32_t uid, uint32_t offset, uint32_t len,
		      bool whole)
{
	const struct upmsg *m;
	size_t seq, end;
	char *buf;

	m = box_find(uid, &seq);
	if (m == NULL)
		return; /* gone: no response at all, as some servers do */
	end = offset >= m->size ? offset : offset + (size_t)len;
	if (end > m->size)
		end = m->size;
	if (whole)
		say("* %zu FETCH (UID %u BODY[] {%zu}\r\n", seq, uid,
		    end - offset);
	else
		say("* %zu FETCH (UID %u BODY[]<%u> {%zu}\r\n", seq, uid,
		    offset, end - offset);
	buf = malloc(end - offset + 1);
	if (buf == NULL)
		_exit(8);
	for (size_t i = offset; i < end; i++)
		buf[i - offset] = body_octet(uid, i);
	if (write(peer, buf, end - offset) != (ssize_t)(end - offset))
		_exit(4);
	free(buf);
	say(")\r\n");
}

enum fetch_fault {
	FETCH_OK,
	FETCH_NO,          /* tagged NO, nothing else */
	FETCH_SKIP_SECOND, /* no body for the second UID of the set */
};

/*
 * The next command must be exactly WANT, a UID FETCH of BODY.PEEK[] or
 * BODY.PEEK[]<o.n> over a set of single UIDs and ranges; answer it with
 * the bodies.
 */
static void serve_fetch(const char *want, enum fetch_fault fault)
{
	const char *line = next_line(), *p;
	unsigned long offset, len;
	size_t n = 0;
	bool whole;

	if (strcmp(line, want) != 0) {
		fprintf(stderr, "script: expected %s, got %s\n", want, line);
		_exit(2);
	}
	whole = strstr(line, "(BODY.PEEK[])") != NULL;
	offset = 0;
	len = UINT32_MAX;
	p = strstr(line, "BODY.PEEK[]<");
	if (!whole && (p == NULL ||
		       sscanf(p, "BODY.PEEK[]<%lu.%lu>", &offset, &len) != 2))
		_exit(9);
	if (fault == FETCH_NO) {
		say("%s NO Some messages could not be fetched\r\n", tag);
		return;
	}
	p = line + strlen("UID FETCH ");
	while (*p != ' ') {
		char *end;
		unsigned long first = strtoul(p, &end, 10), last = first;

		if (*end == ':')
			last = strtoul(end + 1, &end, 10);
		for (unsigned long u = first; u <= last; u++, n++) {
			if (!(fault == FETCH_SKIP_SECOND && n == 1))
				send_body((uint32_t)u, (uint32_t)offset,
					  (uint32_t)len, whole);
		}
		p = *end == ',' ? end + 1 : end;
	}
	say("%s OK Fetch completed\r\n", tag);
}

static void serve_logout(void)
{
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

/* The fetch of a message the ordinary way, as a RETR asks: all of it. */
static void serve_whole(uint32_t uid)
{
	char want[128];

	snprintf(want, sizeof(want), "UID FETCH %u (BODY.PEEK[])", uid);
	serve_fetch(want, FETCH_OK);
}

/* 10-12 small, 13 big, 14-15 small. */
static const struct upmsg box_mixed[] = {
	{ 10, 100 }, { 11, 2000 }, { 12, 300 }, { 13, 100000 },
	{ 14, 50 }, { 15, 60 },
};

static void sc_readahead_mixed(void)
{
	serve_box();
	serve_fetch("UID FETCH 10,11,12 (BODY.PEEK[]<0.131072>)", FETCH_OK);
	/* RETR 11 and 12 are served from what was read. */
	serve_whole(13); /* big: alone, and 14 is not read with it */
	serve_fetch("UID FETCH 14,15 (BODY.PEEK[]<0.131072>)", FETCH_OK);
	serve_logout();
}

#define MANY_SMALL 40

static struct upmsg box_many[MANY_SMALL];

static void sc_readahead_count_cap(void)
{
	char want[512];
	size_t len;

	serve_box();
	for (unsigned first = 1; first <= MANY_SMALL; first += 32) {
		len = (size_t)snprintf(want, sizeof(want), "UID FETCH %u",
				       first);
		for (unsigned u = first + 1; u < first + 32 && u <= MANY_SMALL;
		     u++)
			len += (size_t)snprintf(want + len, sizeof(want) - len,
						",%u", u);
		snprintf(want + len, sizeof(want) - len,
			 " (BODY.PEEK[]<0.131072>)");
		serve_fetch(want, FETCH_OK);
	}
	serve_logout();
}

/* 60000 octets each: four fit in the 256 KB budget, five do not. */
static const struct upmsg box_budget[] = {
	{ 1, 60000 }, { 2, 60000 }, { 3, 60000 }, { 4, 60000 }, { 5, 60000 },
	{ 6, 60000 },
};

static void sc_readahead_budget_cap(void)
{
	serve_box();
	serve_fetch("UID FETCH 1,2,3,4 (BODY.PEEK[]<0.131072>)", FETCH_OK);
	serve_fetch("UID FETCH 5,6 (BODY.PEEK[]<0.131072>)", FETCH_OK);
	serve_logout();
}

static const struct upmsg box_three[] = {
	{ 10, 100 }, { 11, 5000 }, { 12, 300 },
};

static void sc_readahead_no(void)
{
	serve_box();
	serve_fetch("UID FETCH 10,11,12 (BODY.PEEK[]<0.131072>)", FETCH_NO);
	serve_whole(10);
	serve_whole(11);
	serve_whole(12);
	serve_logout();
}

/* 11 is in the snapshot but gone by the time it is read. */
static const struct upmsg box_gone[] = {
	{ 10, 100 }, { 12, 300 }, { 13, 400 },
};
static const struct upmsg box_gone_listed[] = {
	{ 10, 100 }, { 11, 200 }, { 12, 300 }, { 13, 400 },
};

static void sc_readahead_missing_body(void)
{
	box = box_gone_listed;
	box_count = sizeof(box_gone_listed) / sizeof(box_gone_listed[0]);
	serve_box();
	box = box_gone;
	box_count = sizeof(box_gone) / sizeof(box_gone[0]);
	serve_fetch("UID FETCH 10,11,12,13 (BODY.PEEK[]<0.131072>)",
		    FETCH_OK);
	/* RETR 11: asked for alone, and still not there. */
	serve_whole(11);
	/* RETR 12 and 13 come from what was read. */
	serve_logout();
}

static void sc_readahead_skipped_body(void)
{
	serve_box();
	serve_fetch("UID FETCH 10,11,12 (BODY.PEEK[]<0.131072>)",
		    FETCH_SKIP_SECOND);
	serve_whole(11);
	serve_logout();
}

/* 60000 and 100 octets: a TOP of the first asks for its head only. */
static const struct upmsg box_top[] = {
	{ 20, 60000 }, { 21, 100 },
};

static void sc_top_no_readahead(void)
{
	serve_box();
	serve_fetch("UID FETCH 20 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	/* The RETR that follows still reads 21 with it. */
	serve_fetch("UID FETCH 20,21 (BODY.PEEK[]<0.131072>)", FETCH_OK);
	serve_logout();
}

/* A 3 MB message and a 100,000-octet one. */
static const struct upmsg box_top_ranges[] = {
	{ 30, 3000000 }, { 31, 100000 },
};

/* TOPs that want more than the first range: each next range doubles
 * (64 KiB at least) instead of asking for the rest of the message. */
static void sc_top_ranges_double(void)
{
	serve_box();
	/* 40,000 octets of 30. */
	serve_fetch("UID FETCH 30 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	serve_fetch("UID FETCH 30 (BODY.PEEK[]<16384.65536>)", FETCH_OK);
	/* 200,000 octets of 30. */
	serve_fetch("UID FETCH 30 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	serve_fetch("UID FETCH 30 (BODY.PEEK[]<16384.65536>)", FETCH_OK);
	serve_fetch("UID FETCH 30 (BODY.PEEK[]<81920.131072>)", FETCH_OK);
	/* All of 31: the range that reaches its end asks for one octet
	 * more than the rest, and the short answer ends it. */
	serve_fetch("UID FETCH 31 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	serve_fetch("UID FETCH 31 (BODY.PEEK[]<16384.65536>)", FETCH_OK);
	serve_fetch("UID FETCH 31 (BODY.PEEK[]<81920.131072>)", FETCH_OK);
	serve_logout();
}

/* Big and small, for a client going through the headers. */
static const struct upmsg box_heads[] = {
	{ 40, 60000 }, { 41, 100000 }, { 42, 500 }, { 43, 70000 },
	{ 44, 300000 },
};

static void sc_top_reads_heads_ahead(void)
{
	serve_box();
	/* The first TOP reads its own range only. */
	serve_fetch("UID FETCH 40 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	/* A TOP of the next message reads the next ones' first ranges. */
	serve_fetch("UID FETCH 41,42,43,44 (BODY.PEEK[]<0.16384>)", FETCH_OK);
	/* TOPs of 42 (whole) and 43 come from them; the second wants more
	 * than the range and goes on from where it ends. */
	serve_fetch("UID FETCH 43 (BODY.PEEK[]<16384.65536>)", FETCH_OK);
	/* A RETR does not take a head: 44 whole. */
	serve_whole(44);
	serve_logout();
}

/* 10-12 and 14, all small; 14 is last, so a RETR of it reads nothing
 * ahead. */
static const struct upmsg box_body[] = {
	{ 10, 5 }, { 11, 100 }, { 12, 7 }, { 14, 9 },
};

/* The shapes a body response may take, read by popgate's own parser. */
static void sc_body_shapes(void)
{
	serve_box();
	/* Unsolicited responses around it, the body before its UID and
	 * split across writes, more items after the literal. */
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 3 FETCH (FLAGS (\\Seen))\r\n* 5 EXISTS\r\n"
	    "* OK [ALERT] {3}\r\nabc\r\n* 4 FETCH (BODY[] {9}\r\nabc");
	say("defghi UID 14 FLAGS (\\Seen))\r\n%s OK done\r\n", tag);
	/* NIL: the message is gone.  (11 before 10: a TOP of the message
	 * after the last one fetched would read ahead.) */
	expect("UID FETCH 11 (BODY.PEEK[]<0.4096>)");
	say("* 2 FETCH (UID 11 BODY[]<0> NIL)\r\n%s OK done\r\n", tag);
	/* A quoted body, with escapes. */
	expect("UID FETCH 10 (BODY.PEEK[]<0.4096>)");
	say("* 1 FETCH (UID 10 BODY[]<0> \"a\\\"b\\\\c\")\r\n%s OK done\r\n",
	    tag);
	/* Another message's body, its UID first: not delivered. */
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 3 FETCH (UID 12 BODY[] {7}\r\n1234567)\r\n"
	    "* 4 FETCH (UID 14 BODY[] {9}\r\nabcdefghi)\r\n%s OK done\r\n",
	    tag);
	/* No UID at all (against RFC 3501): the one message asked for. */
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 4 FETCH (BODY[] {9}\r\nabcdefghi)\r\n%s OK done\r\n", tag);
	expect("LOGOUT");
	say("* BYE bye\r\n%s OK done\r\n", tag);
}

/* Another message's body, its UID only after it: the session is over. */
static void sc_body_other_uid_after(void)
{
	serve_box();
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 3 FETCH (BODY[] {7}\r\n1234567 UID 12)\r\n%s OK done\r\n", tag);
	expect_eof(); /* dropped, no LOGOUT */
}

/* Cut inside the octets held back: none has reached the sink. */
static void sc_cut_within_held(void)
{
	serve_box();
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 4 FETCH (UID 14 BODY[] {1000}\r\n%0500d", 7);
}

static void sc_cut_mid_literal_retr(void)
{
	serve_box();
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 4 FETCH (UID 14 BODY[] {1000}\r\n%0600d", 7);
}

/* The client is gone mid-message: the rest is not waited for. */
static void sc_body_sink_fails(void)
{
	serve_box();
	expect("UID FETCH 14 (BODY.PEEK[])");
	say("* 4 FETCH (UID 14 BODY[] {1000}\r\n%0600d", 7);
	expect_eof(); /* dropped while 400 octets were still due */
}

/* --- harness (parent) --------------------------------------------------- */

struct server {
	pid_t pid;
	unsigned port;
};

static struct server start_server(void (*script)(void))
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	struct server srv;
	int ls;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(ls >= 0);
	assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &len), 0);
	srv.port = ntohs(sa.sin_port);
	srv.pid = fork();
	assert_true(srv.pid >= 0);
	if (srv.pid == 0) {
		/* A bound, not a measure: generous enough for valgrind. */
		alarm(60);
		peer = accept(ls, NULL, NULL);
		if (peer < 0)
			_exit(7);
		script();
		_exit(0);
	}
	close(ls);
	return srv;
}

/* The child's exit code: 0 when its whole script ran. */
static int finish_server(struct server srv)
{
	int status = 0;

	assert_int_equal(waitpid(srv.pid, &status, 0), srv.pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

static struct upstream_settings settings_for(const struct server *srv)
{
	return (struct upstream_settings) {
		.host = "127.0.0.1",
		.port = srv->port,
		.tls = UPSTREAM_TLS_NONE,
		.verify = true,
		.folder = "INBOX",
		.connect_timeout_ms = 2000,
		.command_timeout_ms = 2000,
	};
}

/* Run SCRIPT and a login; returns the login's status. */
static enum backend_status login_status(void (*script)(void),
					enum upstream_tls tls,
					struct backend_error *err)
{
	struct server srv = start_server(script);
	struct upstream_settings set = settings_for(&srv);
	struct backend *be;
	int r;

	set.tls = tls;
	be = imap_backend_new(&set, NULL);
	r = backend_login(be, "alice", "secret", err);
	backend_free(be);
	finish_server(srv);
	return r == 0 ? BACKEND_OK : err->status;
}

static void test_preauth_is_perm(void **state)
{
	struct backend_error err;

	(void)state;
	assert_int_equal(login_status(sc_preauth, UPSTREAM_TLS_NONE, &err),
			 BACKEND_PERM);
}

static void test_bye_greeting_is_temp(void **state)
{
	struct backend_error err;

	(void)state;
	/* libetpan 1.9.4 leaks the parsed greeting when it is a BYE. */
	LEAKS_IGNORED_BEGIN();
	assert_int_equal(login_status(sc_bye, UPSTREAM_TLS_NONE, &err),
			 BACKEND_TEMP);
	LEAKS_IGNORED_END();
}

static void test_garbage_greeting_is_temp(void **state)
{
	struct backend_error err;

	(void)state;
	assert_int_equal(login_status(sc_garbage, UPSTREAM_TLS_NONE, &err),
			 BACKEND_TEMP);
}

static void test_starttls_injection_refused(void **state)
{
	struct backend_error err;

	(void)state;
	assert_int_equal(login_status(sc_starttls_injection,
				      UPSTREAM_TLS_STARTTLS, &err),
			 BACKEND_PERM);
	assert_non_null(strstr(err.text, "before the TLS handshake"));
}

static void test_starttls_required(void **state)
{
	struct backend_error err;

	(void)state;
	assert_int_equal(login_status(sc_starttls_missing,
				      UPSTREAM_TLS_STARTTLS, &err),
			 BACKEND_PERM);
}

static void test_logindisabled_is_perm(void **state)
{
	struct backend_error err;

	(void)state;
	assert_int_equal(login_status(sc_logindisabled, UPSTREAM_TLS_NONE,
				      &err), BACKEND_PERM);
}

static void test_stall_times_out(void **state)
{
	struct server srv = start_server(sc_stall);
	struct upstream_settings set = settings_for(&srv);
	struct backend_error err;
	struct timespec t0, t1;
	struct backend *be;

	(void)state;
	set.command_timeout_ms = 300;
	be = imap_backend_new(&set, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(backend_login(be, "alice", "secret", &err), -1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(err.status, BACKEND_TEMP);
	assert_non_null(strstr(err.text, "timeout"));
	assert_true(t1.tv_sec - t0.tv_sec < 3);
	backend_free(be);
	assert_int_equal(finish_server(srv), 3);
}

struct counter {
	size_t octets;
};

static int count_sink(void *ctx, const char *data, size_t len)
{
	struct counter *c = ctx;

	(void)data;
	c->octets += len;
	return 0;
}

static void test_cut_mid_literal_is_broken(void **state)
{
	struct server srv = start_server(sc_cut_mid_literal);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	struct counter c = { 0 };
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), 0);
	assert_int_equal(snap.uidvalidity, 77);
	assert_int_equal(snap.count, 4);
	assert_int_equal(snap.msgs[0].imap_uid, 10);
	assert_int_equal(snap.msgs[1].imap_uid, 11);
	assert_int_equal(snap.msgs[1].size, 100);
	assert_int_equal(snap.msgs[3].uid, 14);
	assert_int_equal(backend_fetch(be, &snap.msgs[1], 0, count_sink, &c,
				       &err), -1);
	assert_int_equal(err.status, BACKEND_BROKEN);
	assert_int_equal(c.octets, 88);
	/* The session was dropped: nothing more goes to that server. */
	assert_int_equal(backend_keepalive(be, &err), -1);
	mail_snapshot_clear(&snap);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_bye_mid_session_is_temp(void **state)
{
	struct server srv = start_server(sc_bye_mid_session);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), -1);
	assert_int_equal(err.status, BACKEND_TEMP);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void pick(const struct mail_snapshot *snap, const uint32_t *uids,
		 size_t n, const struct mail_entry **out)
{
	for (size_t i = 0; i < n; i++) {
		out[i] = NULL;
		for (size_t k = 0; k < snap->count; k++)
			if (snap->msgs[k].imap_uid == uids[i])
				out[i] = &snap->msgs[k];
		assert_non_null(out[i]);
	}
}

static void test_no_uidplus_leaves_flagged(void **state)
{
	static const uint32_t seen_uids[] = { 14, 10, 12 }, del_uids[] = { 11 };
	struct server srv = start_server(sc_no_uidplus);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	const struct mail_entry *seen[3], *del[1];
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), 0);
	pick(&snap, seen_uids, 3, seen);
	pick(&snap, del_uids, 1, del);
	assert_int_equal(backend_update(be, del, 1, seen, 3, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "server lacks UIDPLUS: 1 messages"));
	mail_snapshot_clear(&snap);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_uidplus_expunge_uses_ranges(void **state)
{
	static const uint32_t del_uids[] = { 12, 10, 11 };
	struct server srv = start_server(sc_uidplus_ranges);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	const struct mail_entry *del[3];
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), 0);
	pick(&snap, del_uids, 3, del);
	assert_int_equal(backend_update(be, del, 3, NULL, 0, &err), 0);
	mail_snapshot_clear(&snap);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_id_forwards_client_address(void **state)
{
	struct server srv = start_server(sc_id_forwarding);
	struct upstream_settings set = settings_for(&srv);
	struct client_origin origin = { .ip = "192.0.2.7", .port = 4321 };
	struct backend_error err;
	struct backend *be;

	(void)state;
	set.forward_client_ip = true;
	be = imap_backend_new(&set, &origin);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_auth_refused_then_retry(void **state)
{
	struct server srv = start_server(sc_auth_refused_then_ok);
	struct upstream_settings set = settings_for(&srv);
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "wrong", &err), -1);
	assert_int_equal(err.status, BACKEND_AUTH);
	/* Server text is not echoed to the client. */
	assert_null(strstr(err.text, "alice"));
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_auth_refusal_codes(void **state)
{
	struct server srv = start_server(sc_auth_refused_by_code);
	struct upstream_settings set = settings_for(&srv);
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), -1);
	assert_int_equal(err.status, BACKEND_TEMP);
	assert_int_equal(backend_login(be, "alice", "secret", &err), -1);
	assert_int_equal(err.status, BACKEND_IN_USE);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

static void test_store_question_refused_is_temp(void **state)
{
	struct server srv = start_server(sc_store_fetch_refused);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	struct backend *be;
	char dir[] = P_tmpdir "/popgate-faults-XXXXXX", path[64];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/uids.db", dir);
	set.uid_store = path;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), -1);
	assert_int_equal(err.status, BACKEND_TEMP);
	mail_snapshot_clear(&snap);
	backend_free(be);
	finish_server(srv); /* LOGOUT or EOF, whichever the backend chose */
	for (const char *const *sfx = (const char *const[]){ "", "-wal",
							      "-shm", NULL };
	     *sfx != NULL; sfx++) {
		char file[80];

		snprintf(file, sizeof(file), "%s%s", path, *sfx);
		unlink(file);
	}
	assert_int_equal(rmdir(dir), 0);
}

static void test_snapshot_of_100000_messages(void **state)
{
	struct server srv = start_server(sc_many_messages);
	struct upstream_settings set = settings_for(&srv);
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	struct backend *be;

	(void)state;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(be, &snap, &err), 0);
	assert_int_equal(snap.count, MANY);
	assert_int_equal(snap.msgs[MANY - 1].imap_uid, 2 * MANY);
	assert_int_equal(snap.msgs[MANY - 1].size, 1000 + MANY);
	mail_snapshot_clear(&snap);
	backend_free(be);
	assert_int_equal(finish_server(srv), 0);
}

/* --- read-ahead (parent side) ------------------------------------------- */

struct collected {
	char *data;
	size_t len;
};

static int collect_sink(void *ctx, const char *data, size_t len)
{
	struct collected *c = ctx;
	char *grown = realloc(c->data, c->len + len);

	if (grown == NULL)
		return -1;
	memcpy(grown + c->len, data, len);
	c->data = grown;
	c->len += len;
	return 0;
}

/* A TOP-like sink: wants LIMIT octets, then stops the fetch. */
struct head {
	struct collected got;
	size_t limit;
};

static int head_sink(void *ctx, const char *data, size_t len)
{
	struct head *h = ctx;
	size_t room = h->limit - h->got.len;

	if (collect_sink(&h->got, data, len < room ? len : room) < 0)
		return -1;
	return h->got.len >= h->limit ? 1 : 0;
}

static void assert_body(const struct collected *c, uint32_t uid, size_t size)
{
	assert_int_equal(c->len, size);
	for (size_t i = 0; i < size; i++) {
		if (c->data[i] != body_octet(uid, i))
			fail_msg("uid %u: octet %zu differs", uid, i);
	}
}

struct box_session {
	struct server srv;
	struct upstream_settings set; /* the backend keeps a pointer */
	struct backend *be;
	struct mail_snapshot snap;
};

static void box_open(struct box_session *bs, const struct upmsg *msgs,
		     size_t n, void (*script)(void))
{
	struct backend_error err;

	box = msgs;
	box_count = n;
	bs->srv = start_server(script);
	bs->set = settings_for(&bs->srv);
	memset(&bs->snap, 0, sizeof(bs->snap));
	bs->be = imap_backend_new(&bs->set, NULL);
	assert_int_equal(backend_login(bs->be, "alice", "secret", &err), 0);
	assert_int_equal(backend_snapshot(bs->be, &bs->snap, &err), 0);
}

/* RETR message I of the snapshot and check every octet of it. */
static void box_retr(struct box_session *bs, size_t i)
{
	const struct mail_entry *e = &bs->snap.msgs[i];
	struct collected c = { 0 };
	struct backend_error err;
	size_t seq;
	const struct upmsg *m = box_find(e->imap_uid, &seq);

	assert_non_null(m);
	assert_int_equal(backend_fetch(bs->be, e, e->size, collect_sink, &c,
				       &err), 0);
	assert_body(&c, m->uid, m->size);
	free(c.data);
}

/* RETR every message of the snapshot, in order, each checked. */
static void box_retr_all(struct box_session *bs)
{
	for (size_t i = 0; i < bs->snap.count; i++)
		box_retr(bs, i);
}

/* Log out; the server must have seen exactly its script. */
static void box_close(struct box_session *bs)
{
	mail_snapshot_clear(&bs->snap);
	backend_free(bs->be);
	assert_int_equal(finish_server(bs->srv), 0);
}

/* --- body responses (parent side) --------------------------------------- */

static int failing_sink(void *ctx, const char *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	return -1;
}

static void test_body_response_shapes(void **state)
{
	struct box_session bs;
	struct collected c = { 0 };
	struct backend_error err;
	const struct mail_entry *last;

	(void)state;
	box_open(&bs, box_body, sizeof(box_body) / sizeof(box_body[0]),
		 sc_body_shapes);
	assert_int_equal(bs.snap.count, 4);
	last = &bs.snap.msgs[3];
	assert_int_equal(backend_fetch(bs.be, last, last->size, collect_sink,
				       &c, &err), 0);
	assert_int_equal(c.len, 9);
	assert_memory_equal(c.data, "abcdefghi", 9);
	c.len = 0;
	assert_int_equal(backend_fetch(bs.be, &bs.snap.msgs[1], 0,
				       collect_sink, &c, &err), -1);
	assert_int_equal(err.status, BACKEND_NO_MESSAGE);
	assert_int_equal(c.len, 0);
	assert_int_equal(backend_fetch(bs.be, &bs.snap.msgs[0], 0,
				       collect_sink, &c, &err), 0);
	assert_int_equal(c.len, 5);
	assert_memory_equal(c.data, "a\"b\\c", 5);
	c.len = 0;
	assert_int_equal(backend_fetch(bs.be, last, last->size, collect_sink,
				       &c, &err), 0);
	assert_int_equal(c.len, 9);
	assert_memory_equal(c.data, "abcdefghi", 9);
	c.len = 0;
	assert_int_equal(backend_fetch(bs.be, last, last->size, collect_sink,
				       &c, &err), 0);
	assert_int_equal(c.len, 9);
	free(c.data);
	box_close(&bs);
}

/* Run SCRIPT, RETR the last message of box_body into SINK; returns the
 * fetch's status and checks that the upstream session was dropped. */
static enum backend_status retr_last(void (*script)(void),
				     backend_sink_fn *sink,
				     struct collected *c)
{
	struct box_session bs;
	struct backend_error err;
	const struct mail_entry *last;
	enum backend_status status = BACKEND_OK;

	box_open(&bs, box_body, sizeof(box_body) / sizeof(box_body[0]),
		 script);
	last = &bs.snap.msgs[3];
	if (backend_fetch(bs.be, last, last->size, sink, c, &err) < 0)
		status = err.status;
	/* Nothing more goes to that server. */
	assert_int_equal(backend_keepalive(bs.be, &err), -1);
	box_close(&bs);
	return status;
}

static void test_body_of_another_message_is_broken(void **state)
{
	struct collected c = { 0 };

	(void)state;
	assert_int_equal(retr_last(sc_body_other_uid_after, collect_sink, &c),
			 BACKEND_BROKEN);
	assert_int_equal(c.len, 7);
	free(c.data);
}

static void test_retr_cut_mid_literal_is_broken(void **state)
{
	struct collected c = { 0 };

	(void)state;
	assert_int_equal(retr_last(sc_cut_mid_literal_retr, collect_sink, &c),
			 BACKEND_BROKEN);
	assert_int_equal(c.len, 88);
	free(c.data);
}

/* What the client has not had can still be refused honestly. */
static void test_retr_cut_within_held_is_temp(void **state)
{
	struct collected c = { 0 };

	(void)state;
	assert_int_equal(retr_last(sc_cut_within_held, collect_sink, &c),
			 BACKEND_TEMP);
	assert_int_equal(c.len, 0);
	free(c.data);
}

static void test_retr_client_gone_drops_upstream(void **state)
{
	(void)state;
	assert_int_equal(retr_last(sc_body_sink_fails, failing_sink, NULL),
			 BACKEND_SINK);
}

static void test_readahead_batches_small_runs(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_mixed, sizeof(box_mixed) / sizeof(box_mixed[0]),
		 sc_readahead_mixed);
	assert_int_equal(bs.snap.count, 6);
	box_retr_all(&bs);
	box_close(&bs);
}

static void test_readahead_count_cap(void **state)
{
	struct box_session bs;

	(void)state;
	for (unsigned i = 0; i < MANY_SMALL; i++)
		box_many[i] = (struct upmsg) { .uid = i + 1, .size = 1000 + i };
	box_open(&bs, box_many, MANY_SMALL, sc_readahead_count_cap);
	box_retr_all(&bs);
	box_close(&bs);
}

static void test_readahead_budget_cap(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_budget, sizeof(box_budget) / sizeof(box_budget[0]),
		 sc_readahead_budget_cap);
	box_retr_all(&bs);
	box_close(&bs);
}

static void test_readahead_no_falls_back(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_three, sizeof(box_three) / sizeof(box_three[0]),
		 sc_readahead_no);
	box_retr_all(&bs);
	box_close(&bs);
}

static void test_readahead_skipped_body_falls_back(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_three, sizeof(box_three) / sizeof(box_three[0]),
		 sc_readahead_skipped_body);
	box_retr_all(&bs);
	box_close(&bs);
}

static void test_readahead_message_gone(void **state)
{
	struct box_session bs;
	struct collected c = { 0 };
	struct backend_error err;

	(void)state;
	box_open(&bs, box_gone_listed,
		 sizeof(box_gone_listed) / sizeof(box_gone_listed[0]),
		 sc_readahead_missing_body);
	/* The parent's idea of the mailbox is what is really there. */
	box = box_gone;
	box_count = sizeof(box_gone) / sizeof(box_gone[0]);
	assert_int_equal(bs.snap.count, 4);
	box_retr(&bs, 0);
	assert_int_equal(backend_fetch(bs.be, &bs.snap.msgs[1],
				       bs.snap.msgs[1].size, collect_sink, &c,
				       &err), -1);
	assert_int_equal(err.status, BACKEND_NO_MESSAGE);
	assert_int_equal(c.len, 0);
	box_retr(&bs, 2);
	box_retr(&bs, 3);
	box_close(&bs);
}

static void test_top_does_not_read_ahead(void **state)
{
	struct box_session bs;
	struct head h = { .limit = 1000 };
	struct backend_error err;

	(void)state;
	box_open(&bs, box_top, sizeof(box_top) / sizeof(box_top[0]),
		 sc_top_no_readahead);
	assert_int_equal(backend_fetch(bs.be, &bs.snap.msgs[0], 16384,
				       head_sink, &h, &err), 0);
	assert_int_equal(h.got.len, 1000);
	for (size_t i = 0; i < h.got.len; i++)
		assert_int_equal(h.got.data[i], body_octet(20, i));
	free(h.got.data);
	box_retr(&bs, 0);
	box_retr(&bs, 1);
	box_close(&bs);
}

/* TOP N of message I wanting LIMIT octets, with the caller's first range
 * of 16 KiB: what the sink got is the message's first octets. */
static void box_top_octets(struct box_session *bs, size_t i, size_t limit)
{
	const struct mail_entry *e = &bs->snap.msgs[i];
	struct head h = { .limit = limit };
	struct backend_error err;

	assert_int_equal(backend_fetch(bs->be, e, 16384, head_sink, &h,
				       &err), 0);
	assert_int_equal(h.got.len, limit);
	for (size_t k = 0; k < h.got.len; k++)
		assert_int_equal(h.got.data[k], body_octet(e->imap_uid, k));
	free(h.got.data);
}

static void test_top_reads_heads_ahead(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_heads, sizeof(box_heads) / sizeof(box_heads[0]),
		 sc_top_reads_heads_ahead);
	box_top_octets(&bs, 0, 1000);
	box_top_octets(&bs, 1, 1000);
	box_top_octets(&bs, 2, 500);
	box_top_octets(&bs, 3, 20000);
	box_retr(&bs, 4);
	box_close(&bs);
}

static void test_top_ranges_double(void **state)
{
	struct box_session bs;

	(void)state;
	box_open(&bs, box_top_ranges,
		 sizeof(box_top_ranges) / sizeof(box_top_ranges[0]),
		 sc_top_ranges_double);
	box_top_octets(&bs, 0, 40000);
	box_top_octets(&bs, 0, 200000);
	box_top_octets(&bs, 1, 100000);
	box_close(&bs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_preauth_is_perm),
		cmocka_unit_test(test_bye_greeting_is_temp),
		cmocka_unit_test(test_garbage_greeting_is_temp),
		cmocka_unit_test(test_starttls_injection_refused),
		cmocka_unit_test(test_starttls_required),
		cmocka_unit_test(test_logindisabled_is_perm),
		cmocka_unit_test(test_stall_times_out),
		cmocka_unit_test(test_cut_mid_literal_is_broken),
		cmocka_unit_test(test_body_response_shapes),
		cmocka_unit_test(test_body_of_another_message_is_broken),
		cmocka_unit_test(test_retr_cut_mid_literal_is_broken),
		cmocka_unit_test(test_retr_cut_within_held_is_temp),
		cmocka_unit_test(test_retr_client_gone_drops_upstream),
		cmocka_unit_test(test_bye_mid_session_is_temp),
		cmocka_unit_test(test_no_uidplus_leaves_flagged),
		cmocka_unit_test(test_uidplus_expunge_uses_ranges),
		cmocka_unit_test(test_id_forwards_client_address),
		cmocka_unit_test(test_auth_refused_then_retry),
		cmocka_unit_test(test_auth_refusal_codes),
		cmocka_unit_test(test_store_question_refused_is_temp),
		cmocka_unit_test(test_snapshot_of_100000_messages),
		cmocka_unit_test(test_readahead_batches_small_runs),
		cmocka_unit_test(test_readahead_count_cap),
		cmocka_unit_test(test_readahead_budget_cap),
		cmocka_unit_test(test_readahead_no_falls_back),
		cmocka_unit_test(test_readahead_skipped_body_falls_back),
		cmocka_unit_test(test_readahead_message_gone),
		cmocka_unit_test(test_top_does_not_read_ahead),
		cmocka_unit_test(test_top_ranges_double),
		cmocka_unit_test(test_top_reads_heads_ahead),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
