/*
 * test_imap_backend.c - the IMAP backend and its transport against a real
 * IMAP server (Dovecot in the test rig).
 *
 * Runs only when POPGATE_TEST_IMAP=host:port:user:pass names a plain IMAP
 * listener; otherwise it prints an empty TAP plan marked SKIP (cmocka's
 * own "not ok # SKIP" counts as a failure in automake's TAP driver).
 * POPGATE_TEST_IMAP_TLS=port:ca_file adds the STARTTLS (on the plain port)
 * and implicit-TLS tests; the server certificate must be self-signed by
 * ca_file, for 127.0.0.1.
 * Each run works in its own folder, created and deleted here.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "imap_backend.h"
#include "imap_reader.h"
#include "imap_transport.h"
#include "live_imap.h"

static struct {
	bool enabled;
	char host[128];
	unsigned port;
	char user[64];
	char pass[64];
	unsigned tls_port;
	char ca_file[512];
	char folder[64];
	uint32_t uids[8]; /* as appended: small, big, other, victim, ... */
	size_t big_len;
	char *big;
} rig;

#define BIG_LINES 60000

/* --- rig ---------------------------------------------------------------- */

static bool parse_env(void)
{
	const char *t = getenv("POPGATE_TEST_IMAP_TLS");

	if (!live_imap_from_env(rig.host, &rig.port, rig.user, rig.pass))
		return false;
	if (t != NULL && sscanf(t, "%u:%511s", &rig.tls_port, rig.ca_file) != 2)
		rig.tls_port = 0;
	return true;
}

static struct upstream_settings plain_settings(void)
{
	return (struct upstream_settings) {
		.host = rig.host,
		.port = rig.port,
		.tls = UPSTREAM_TLS_NONE,
		.verify = true,
		.folder = rig.folder,
		.connect_timeout_ms = 5000,
		.command_timeout_ms = 10000,
	};
}

/* A side connection for preparing and checking the folder. */
static mailimap *helper_connect(void)
{
	return live_imap_connect(rig.host, rig.port, rig.user, rig.pass);
}

static uint32_t helper_append(mailimap *imap, const char *msg, size_t len)
{
	uint32_t validity = 0, uid = 0;

	assert_int_equal(mailimap_uidplus_append(imap, rig.folder, NULL, NULL,
						 msg, len, &validity, &uid),
			 MAILIMAP_NO_ERROR);
	return uid;
}

static void helper_flag_deleted(mailimap *imap, uint32_t uid)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	struct mailimap_store_att_flags *sf;
	struct mailimap_set *set = mailimap_set_new_single(uid);

	mailimap_flag_list_add(fl, mailimap_flag_new_deleted());
	sf = mailimap_store_att_flags_new_add_flags_silent(fl);
	assert_int_equal(mailimap_select(imap, rig.folder), MAILIMAP_NO_ERROR);
	assert_int_equal(mailimap_uid_store(imap, set, sf), MAILIMAP_NO_ERROR);
	mailimap_store_att_flags_free(sf);
	mailimap_set_free(set);
}

static void helper_expunge_uid(mailimap *imap, uint32_t uid)
{
	struct mailimap_set *set = mailimap_set_new_single(uid);

	helper_flag_deleted(imap, uid);
	assert_int_equal(mailimap_uid_expunge(imap, set), MAILIMAP_NO_ERROR);
	mailimap_set_free(set);
}

static void helper_free(mailimap *imap)
{
	mailimap_logout(imap);
	mailimap_free(imap);
}

static char *make_big(size_t *len_r)
{
	size_t cap = 64 + (size_t)BIG_LINES * 160, len;
	char *p = malloc(cap);

	assert_non_null(p);
	len = (size_t)snprintf(p, cap, "Subject: big\r\n\r\n");
	for (unsigned i = 0; i < BIG_LINES; i++)
		len += (size_t)snprintf(p + len, cap - len, "line %u %.*s\r\n",
					i, (int)(i * 7919 % 120),
					"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
					"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
					"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	*len_r = len;
	return p;
}

static const char small_msg[] = "Subject: one\r\n\r\nhello\r\n";

static int group_setup(void **state)
{
	mailimap *imap;
	char name[32];

	(void)state;
	snprintf(rig.folder, sizeof(rig.folder), "popgate-test-%ld",
		 (long)getpid());
	rig.big = make_big(&rig.big_len);
	imap = helper_connect();
	if (mailimap_create(imap, rig.folder) != MAILIMAP_NO_ERROR)
		return -1;
	rig.uids[0] = helper_append(imap, small_msg, sizeof(small_msg) - 1);
	rig.uids[1] = helper_append(imap, rig.big, rig.big_len);
	for (int i = 2; i < 6; i++) {
		snprintf(name, sizeof(name), "Subject: m%d\r\n\r\nb%d\r\n", i, i);
		rig.uids[i] = helper_append(imap, name, strlen(name));
	}
	helper_free(imap);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (rig.enabled) {
		mailimap *imap = helper_connect();

		mailimap_delete(imap, rig.folder);
		helper_free(imap);
	}
	free(rig.big);
	return 0;
}


/* --- sinks -------------------------------------------------------------- */

struct collect {
	char *buf;
	size_t len, cap;
	size_t stop_after; /* 0: never stop */
	size_t calls;
};

static int collect_sink(void *ctx, const char *data, size_t len)
{
	struct collect *c = ctx;

	c->calls++;
	if (c->len + len > c->cap) {
		c->cap = (c->len + len) * 2;
		c->buf = realloc(c->buf, c->cap);
		assert_non_null(c->buf);
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	return c->stop_after != 0 && c->len >= c->stop_after ? 1 : 0;
}

static const struct mail_entry *find(const struct mail_snapshot *snap,
				     uint32_t uid)
{
	for (size_t i = 0; i < snap->count; i++)
		if (snap->msgs[i].imap_uid == uid)
			return &snap->msgs[i];
	return NULL;
}

static struct backend *login_ok(const struct upstream_settings *set,
				struct mail_snapshot *snap)
{
	struct backend_error err = { 0 };
	struct backend *be = imap_backend_new(set, NULL);

	assert_non_null(be);
	if (backend_login(be, rig.user, rig.pass, &err) < 0)
		fail_msg("login failed: %d %s", err.status, err.text);
	if (snap != NULL &&
	    backend_snapshot(be, snap, &err) < 0)
		fail_msg("snapshot failed: %d %s", err.status, err.text);
	return be;
}

/* --- tests -------------------------------------------------------------- */

static void test_bad_password_then_good(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, "wrong", &err), -1);
	assert_int_equal(err.status, BACKEND_AUTH);
	assert_null(strstr(err.text, "wrong"));
	/* RFC 1939 allows another try on the same session. */
	assert_int_equal(backend_login(be, rig.user, rig.pass, &err), 0);
	backend_free(be);
}

static void test_crlf_in_password_refused(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, "x\r\nA1 DELETE INBOX",
				       &err), -1);
	assert_int_equal(err.status, BACKEND_AUTH);
	backend_free(be);
}

static void test_unreachable_is_temp(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	set.port = 1;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, rig.pass, &err), -1);
	assert_int_equal(err.status, BACKEND_TEMP);
	backend_free(be);
}

static void test_missing_folder_is_perm(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct mail_snapshot snap = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	set.folder = "popgate-no-such-folder";
	be = login_ok(&set, NULL);
	assert_int_equal(backend_snapshot(be, &snap, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "popgate-no-such-folder"));
	backend_free(be);
}

static void test_snapshot_sorted_with_sizes(void **state)
{
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	be = login_ok(&set, &snap);
	assert_true(snap.count >= 2);
	assert_int_not_equal(snap.uidvalidity, 0);
	for (size_t i = 1; i < snap.count; i++)
		assert_true(snap.msgs[i - 1].uid < snap.msgs[i].uid);
	assert_non_null(find(&snap, rig.uids[0]));
	assert_int_equal(find(&snap, rig.uids[0])->size, sizeof(small_msg) - 1);
	assert_int_equal(find(&snap, rig.uids[1])->size, rig.big_len);
	assert_int_equal(find(&snap, rig.uids[1])->uid, rig.uids[1]);
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void fetch_big_and_compare(const struct upstream_settings *set)
{
	struct mail_snapshot snap = { 0 };
	struct backend_error err = { 0 };
	struct collect c = { 0 };
	struct backend *be = login_ok(set, &snap);

	assert_int_equal(backend_fetch(be, find(&snap, rig.uids[1]), 4096,
				       collect_sink, &c, &err), 0);
	assert_int_equal(c.len, rig.big_len);
	assert_memory_equal(c.buf, rig.big, rig.big_len);
	free(c.buf);
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void test_fetch_big_message(void **state)
{
	struct upstream_settings set;

	(void)state;
	set = plain_settings();
	fetch_big_and_compare(&set);
}

static void test_fetch_wrong_size_hint(void **state)
{
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend_error err = { 0 };
	struct collect c = { 0 };
	struct mail_entry lying;
	struct backend *be;

	(void)state;
	set = plain_settings();
	be = login_ok(&set, &snap);
	/* Servers that estimate RFC822.SIZE must not truncate the message. */
	lying = *find(&snap, rig.uids[1]);
	lying.size = 1000;
	assert_int_equal(backend_fetch(be, &lying, 0, collect_sink, &c, &err), 0);
	assert_int_equal(c.len, rig.big_len);
	assert_memory_equal(c.buf, rig.big, rig.big_len);
	free(c.buf);
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void test_early_stop_keeps_session(void **state)
{
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend_error err = { 0 };
	struct collect top = { .stop_after = 100 }, whole = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	be = login_ok(&set, &snap);
	/* A big first range: the rest of it must be drained, not left. */
	assert_int_equal(backend_fetch(be, find(&snap, rig.uids[1]), 1 << 20,
				       collect_sink, &top, &err), 0);
	assert_true(top.len >= 100);
	/* Nothing reaches the sink after it said it has enough: at most
	 * the rest of the piece that carried the 100th octet. */
	assert_true(top.calls <= 2 && top.len < 100 + IMAP_READER_SIZE);
	assert_memory_equal(top.buf, rig.big, 100);
	assert_int_equal(backend_fetch(be, find(&snap, rig.uids[0]), 0,
				       collect_sink, &whole, &err), 0);
	assert_int_equal(whole.len, sizeof(small_msg) - 1);
	assert_memory_equal(whole.buf, small_msg, whole.len);
	assert_int_equal(backend_keepalive(be, &err), 0);
	free(top.buf);
	free(whole.buf);
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void test_vanished_message(void **state)
{
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend_error err = { 0 };
	struct collect c = { 0 };
	struct backend *be;
	mailimap *other;

	(void)state;
	set = plain_settings();
	be = login_ok(&set, &snap);
	other = helper_connect();
	helper_expunge_uid(other, rig.uids[5]);
	helper_free(other);
	assert_int_equal(backend_fetch(be, find(&snap, rig.uids[5]), 0,
				       collect_sink, &c, &err), -1);
	assert_int_equal(err.status, BACKEND_NO_MESSAGE);
	assert_int_equal(c.len, 0);
	/* The session carries on. */
	assert_int_equal(backend_keepalive(be, &err), 0);
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void test_update_expunges_only_ours(void **state)
{
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 }, after = { 0 };
	struct backend_error err = { 0 };
	const struct mail_entry *del[1], *seen[2];
	struct backend *be;
	mailimap *other;

	(void)state;
	set = plain_settings();
	be = login_ok(&set, &snap);
	/* X-V0006: another client's \Deleted message must survive. */
	other = helper_connect();
	helper_flag_deleted(other, rig.uids[2]);
	helper_free(other);
	del[0] = find(&snap, rig.uids[3]);
	seen[0] = find(&snap, rig.uids[0]);
	seen[1] = find(&snap, rig.uids[4]);
	if (backend_update(be, del, 1, seen, 2, &err) < 0)
		fail_msg("update: %d %s", err.status, err.text);
	backend_free(be);

	be = login_ok(&set, &after);
	assert_null(find(&after, rig.uids[3]));
	assert_non_null(find(&after, rig.uids[2]));
	assert_non_null(find(&after, rig.uids[0]));
	assert_non_null(find(&after, rig.uids[4]));
	mail_snapshot_clear(&snap);
	mail_snapshot_clear(&after);
	backend_free(be);
}

static void test_starttls_with_ca(void **state)
{
	struct upstream_settings set;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_STARTTLS;
	set.ca_file = rig.ca_file;
	fetch_big_and_compare(&set);
}

static void test_implicit_tls_default_verify_fails(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, rig.pass, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "self-signed certificate"));
	backend_free(be);
}

static void test_implicit_tls_verify_off(void **state)
{
	struct upstream_settings set;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	set.verify = false;
	set.server_name = "wrong.example";
	backend_free(login_ok(&set, NULL));
}

static void test_implicit_tls_wrong_name_fails(void **state)
{
	struct upstream_settings set;
	struct backend_error err = { 0 };
	struct backend *be;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	set.ca_file = rig.ca_file;
	set.server_name = "wrong.example";
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, rig.pass, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "hostname mismatch"));
	backend_free(be);
}

static void test_implicit_tls_with_ca_and_high_fd(void **state)
{
	struct upstream_settings set;
	struct rlimit rl;
	int fds[1100];
	size_t n = 0;

	(void)state;
	/* select() aborts on fd >= 1024: push the socket above it. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_max < 2048)
		fail_msg("need a descriptor limit of 2048, hard limit is %lu",
			 (unsigned long)rl.rlim_max);
	rl.rlim_cur = 2048;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	while (n < sizeof(fds) / sizeof(fds[0])) {
		fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fds[n] >= 0);
		if (fds[n++] >= 1030)
			break;
	}
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	set.ca_file = rig.ca_file;
	fetch_big_and_compare(&set);
	while (n > 0)
		close(fds[--n]);
}

/*
 * One context shared by many connections, as the daemon's master builds it:
 * each connection still checks its own server name, and a connection
 * outlives the caller's reference.
 */
static void test_shared_ctx_verifies_each_connection(void **state)
{
	struct transport_error te = { 0 };
	struct backend_error err = { 0 };
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend *be, *wrong;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	set.ca_file = rig.ca_file;
	set.tls_ctx = imap_transport_ctx_new(rig.ca_file, true, &te);
	if (set.tls_ctx == NULL)
		fail_msg("context: %s", te.text);
	be = login_ok(&set, NULL);

	set.server_name = "wrong.example";
	wrong = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(wrong, rig.user, rig.pass, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "hostname mismatch"));
	backend_free(wrong);

	imap_transport_ctx_free(set.tls_ctx);
	set.tls_ctx = NULL;
	if (backend_snapshot(be, &snap, &err) < 0)
		fail_msg("snapshot failed: %d %s", err.status, err.text);
	assert_non_null(find(&snap, rig.uids[0]));
	mail_snapshot_clear(&snap);
	backend_free(be);
}

static void test_shared_ctx_default_store_rejects_self_signed(void **state)
{
	struct transport_error te = { 0 };
	struct backend_error err = { 0 };
	struct upstream_settings set;
	struct backend *be;

	(void)state;
	set = plain_settings();
	set.tls = UPSTREAM_TLS_IMPLICIT;
	set.port = rig.tls_port;
	set.tls_ctx = imap_transport_ctx_new(NULL, true, &te);
	if (set.tls_ctx == NULL)
		fail_msg("context: %s", te.text);
	be = imap_backend_new(&set, NULL);
	assert_int_equal(backend_login(be, rig.user, rig.pass, &err), -1);
	assert_int_equal(err.status, BACKEND_PERM);
	assert_non_null(strstr(err.text, "self-signed certificate"));
	backend_free(be);
	imap_transport_ctx_free(set.tls_ctx);
}

static void test_ctx_bad_ca_file(void **state)
{
	struct transport_error te = { 0 };
	const char *dir = getenv("TMPDIR");
	char path[600];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/popgate-ca-XXXXXX",
		 dir != NULL ? dir : ".");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a certificate\n", 18), 18);
	close(fd);
	assert_null(imap_transport_ctx_new(path, true, &te));
	unlink(path);
	assert_int_equal(te.kind, TRANSPORT_ERR_TLS);
	assert_non_null(strstr(te.text, path));
}

int main(void)
{
	/* The TLS tests come last so that a plain-only run can stop early. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_password_then_good),
		cmocka_unit_test(test_crlf_in_password_refused),
		cmocka_unit_test(test_unreachable_is_temp),
		cmocka_unit_test(test_missing_folder_is_perm),
		cmocka_unit_test(test_snapshot_sorted_with_sizes),
		cmocka_unit_test(test_fetch_big_message),
		cmocka_unit_test(test_fetch_wrong_size_hint),
		cmocka_unit_test(test_early_stop_keeps_session),
		cmocka_unit_test(test_vanished_message),
		cmocka_unit_test(test_update_expunges_only_ours),
		cmocka_unit_test(test_starttls_with_ca),
		cmocka_unit_test(test_implicit_tls_default_verify_fails),
		cmocka_unit_test(test_implicit_tls_wrong_name_fails),
		cmocka_unit_test(test_implicit_tls_verify_off),
		cmocka_unit_test(test_implicit_tls_with_ca_and_high_fd),
		cmocka_unit_test(test_shared_ctx_verifies_each_connection),
		cmocka_unit_test(test_shared_ctx_default_store_rejects_self_signed),
		cmocka_unit_test(test_ctx_bad_ca_file),
	};
	const size_t n_plain = 10, n_all = sizeof(tests) / sizeof(tests[0]);

	signal(SIGPIPE, SIG_IGN);
	rig.enabled = parse_env();
	if (!rig.enabled) {
		printf("1..0 # SKIP POPGATE_TEST_IMAP is not set\n");
		return 0;
	}
	return _cmocka_run_group_tests("imap_backend", tests,
				       rig.tls_port != 0 ? n_all : n_plain,
				       group_setup, group_teardown);
}
