/*
 * test_imap_faults.c - the IMAP backend against a scripted upstream that
 * misbehaves: PREAUTH, BYE, garbage, STARTTLS response injection,
 * LOGINDISABLED, stalls, a connection cut mid-literal, no UIDPLUS.
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

static void sc_cut_mid_literal(void)
{
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
	serve_plain_auth("UIDPLUS");
	serve_select();
	expect("UID FETCH 11 (BODY.PEEK[]<0.4096>)");
	say("* 2 FETCH (UID 11 BODY[]<0> {100}\r\n%050d", 7);
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
	assert_int_equal(c.octets, 50);
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
		cmocka_unit_test(test_bye_mid_session_is_temp),
		cmocka_unit_test(test_no_uidplus_leaves_flagged),
		cmocka_unit_test(test_uidplus_expunge_uses_ranges),
		cmocka_unit_test(test_id_forwards_client_address),
		cmocka_unit_test(test_auth_refused_then_retry),
		cmocka_unit_test(test_snapshot_of_100000_messages),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
