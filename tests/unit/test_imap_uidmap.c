/*
 * test_imap_uidmap.c - the unique-id store fed by a real IMAP server
 * (Dovecot in the test rig): fingerprints of real FETCH answers survive a
 * rebuild, size corrections match what is delivered.
 *
 * Runs only when POPGATE_TEST_IMAP=host:port:user:pass names a plain IMAP
 * listener (as for test_imap_backend); otherwise it prints an empty TAP
 * plan marked SKIP.  A rebuilt folder is modelled by a second folder with
 * the same messages appended in another order: a new UIDVALIDITY and new
 * UIDs, the same octets.  Both folders are created and deleted here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "imap_backend.h"
#include "imap_transport.h"
#include "imap_uidmap.h"
#include "live_imap.h"
#include "uidmap.h"
#include "uidstore_sqlite.h"

#define N_MSGS 6

static struct {
	char host[128];
	unsigned port;
	char user[64];
	char pass[64];
	char folder_a[64], folder_b[64];
	char dir[256], store[300];
	char *big;
} rig;

/* Message 2 ends without a line ending; 3 and 4 are identical. */
static const char *messages[N_MSGS];

static bool parse_env(void)
{
	return live_imap_from_env(rig.host, &rig.port, rig.user, rig.pass);
}

static mailimap *connect_imap(void)
{
	return live_imap_connect(rig.host, rig.port, rig.user, rig.pass);
}

static void disconnect(mailimap *imap)
{
	mailimap_logout(imap);
	mailimap_free(imap);
}

static void append(mailimap *imap, const char *folder, const char *msg)
{
	assert_int_equal(mailimap_append_simple(imap, folder, msg, strlen(msg)),
			 MAILIMAP_NO_ERROR);
}

/* SELECT FOLDER and list it as the backend does: UID and RFC822.SIZE. */
static size_t snapshot(mailimap *imap, const char *folder,
		       struct mail_entry *m, uint32_t *uidvalidity_r)
{
	struct mailimap_fetch_type *ft =
		mailimap_fetch_type_new_fetch_att_list_empty();
	struct mailimap_set *set = mailimap_set_new_interval(1, 0);
	clist *result = NULL;
	size_t n = 0;

	assert_int_equal(mailimap_select(imap, folder), MAILIMAP_NO_ERROR);
	*uidvalidity_r = imap->imap_selection_info->sel_uidvalidity;
	mailimap_fetch_type_new_fetch_att_list_add(ft,
		mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft,
		mailimap_fetch_att_new_rfc822_size());
	assert_int_equal(mailimap_uid_fetch(imap, set, ft, &result),
			 MAILIMAP_NO_ERROR);
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);

		assert_true(n < N_MSGS);
		for (clistiter *i2 = clist_begin(att->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			struct mailimap_msg_att_static *st;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			st = item->att_data.att_static;
			if (st->att_type == MAILIMAP_MSG_ATT_UID)
				m[n].imap_uid = st->att_data.att_uid;
			else if (st->att_type == MAILIMAP_MSG_ATT_RFC822_SIZE)
				m[n].size = st->att_data.att_rfc822_size;
		}
		n++;
	}
	mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return n;
}

/* The whole message as the server sends it. */
static char *fetch_whole(mailimap *imap, uint32_t uid, size_t *len_r)
{
	struct mailimap_fetch_type *ft =
		mailimap_fetch_type_new_fetch_att_list_empty();
	struct mailimap_set *set = mailimap_set_new_single(uid);
	clist *result = NULL;
	char *copy = NULL;

	mailimap_fetch_type_new_fetch_att_list_add(ft,
		mailimap_fetch_att_new_body_peek_section(mailimap_section_new(NULL)));
	assert_int_equal(mailimap_uid_fetch(imap, set, ft, &result),
			 MAILIMAP_NO_ERROR);
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);

		for (clistiter *i2 = clist_begin(att->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			struct mailimap_msg_att_body_section *b;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC ||
			    item->att_data.att_static->att_type !=
			    MAILIMAP_MSG_ATT_BODY_SECTION)
				continue;
			b = item->att_data.att_static->att_data.att_body_section;
			copy = malloc(b->sec_length + 1);
			assert_non_null(copy);
			memcpy(copy, b->sec_body_part, b->sec_length);
			*len_r = b->sec_length;
		}
	}
	mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	assert_non_null(copy);
	return copy;
}

/* Octets a POP3 RETR sends before dot-stuffing (CRLF normalised, a final
 * line ending added), computed independently of the code under test. */
static uint64_t delivered_size(const char *p, size_t len)
{
	uint64_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')
			continue;
		n += p[i] == '\r' || p[i] == '\n' ? 2 : 1;
	}
	if (len > 0 && p[len - 1] != '\n' && p[len - 1] != '\r')
		n += 2;
	return n;
}

/* Which message (index into messages[]) a UID holds, by its Subject. */
static int which(mailimap *imap, uint32_t uid)
{
	size_t len;
	char *p = fetch_whole(imap, uid, &len);
	int found = -1;

	for (int i = 0; i < N_MSGS; i++) {
		if (strlen(messages[i]) == len &&
		    memcmp(messages[i], p, len) == 0 &&
		    (found < 0 || i == 4))
			found = i;
	}
	free(p);
	assert_true(found >= 0);
	return found;
}

static const struct uidstore_key key = { "rig", "tester", "INBOX" };

static int assign(mailimap *imap, struct mail_entry *m, size_t n,
		  uint32_t uidvalidity, enum uidmap_size_mode mode, uint64_t deadline)
{
	struct imap_uidmap_ctx ctx = {
		.imap = imap, .size_mode = mode, .exact_deadline_ms = deadline,
	};
	const char *err = NULL;
	struct uidstore *st;
	int r, imap_error;

	st = uidstore_sqlite_open(rig.store, &err);
	assert_non_null(st);
	if (deadline == 0) {
		/* The way the backend calls it. */
		r = imap_uidmap_snapshot(imap, st, &key, uidvalidity, m, n,
					 mode, 0, &imap_error, &err);
		if (r < 0)
			print_error("assign: %s (%d)\n", err, imap_error);
		uidstore_close(st);
		return r;
	}
	r = uidmap_assign(st, &key, uidvalidity, m, n, imap_uidmap_need, &ctx,
			  &err);
	if (r < 0)
		print_error("assign: %s\n", err);
	uidstore_close(st);
	return r;
}

static void remove_store(void)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };

	for (size_t i = 0; i < 3; i++) {
		char p[320];

		snprintf(p, sizeof(p), "%s%s", rig.store, sfx[i]);
		unlink(p);
	}
}

static void test_sizes_and_rebuild(void **state)
{
	mailimap *imap = connect_imap();
	struct mail_entry a[N_MSGS], b[N_MSGS];
	uint32_t uv_a, uv_b;
	uint64_t id_of_msg[N_MSGS] = { 0 }, max_a = 0;
	size_t n;

	(void)state;
	remove_store();
	n = snapshot(imap, rig.folder_a, a, &uv_a);
	assert_int_equal(n, N_MSGS);
	assert_int_equal(assign(imap, a, n, uv_a, UIDMAP_SIZE_UPSTREAM, 0), 0);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		char *p = fetch_whole(imap, a[i].imap_uid, &len);

		assert_int_equal(a[i].uid, a[i].imap_uid); /* first epoch */
		assert_int_equal(a[i].size, delivered_size(p, len));
		free(p);
		id_of_msg[which(imap, a[i].imap_uid)] = a[i].uid;
		if (a[i].uid > max_a)
			max_a = a[i].uid;
	}

	n = snapshot(imap, rig.folder_b, b, &uv_b);
	assert_int_equal(n, N_MSGS);
	assert_int_not_equal(uv_a, uv_b);
	assert_int_equal(assign(imap, b, n, uv_b, UIDMAP_SIZE_UPSTREAM, 0), 0);
	for (size_t i = 0; i < n; i++) {
		int msg = which(imap, b[i].imap_uid);

		if (i > 0)
			assert_true(b[i].uid > b[i - 1].uid);
		if (msg == 3 || msg == 4)
			assert_true(b[i].uid > max_a); /* ambiguous: new */
		else
			assert_int_equal(b[i].uid, id_of_msg[msg]);
	}
	disconnect(imap);
}

static void test_exact_sizes_and_budget(void **state)
{
	mailimap *imap = connect_imap();
	struct mail_entry a[N_MSGS];
	uint32_t uv;
	size_t n;

	(void)state;
	/* Budget already spent: upstream sizes now, measured next time. */
	remove_store();
	n = snapshot(imap, rig.folder_a, a, &uv);
	assert_int_equal(assign(imap, a, n, uv, UIDMAP_SIZE_EXACT, 1), 0);
	for (size_t i = 0; i < n; i++) {
		if (which(imap, a[i].imap_uid) == 2) {
			size_t len;
			char *p = fetch_whole(imap, a[i].imap_uid, &len);

			assert_int_equal(a[i].size, len);
			free(p);
		}
	}
	n = snapshot(imap, rig.folder_a, a, &uv);
	assert_int_equal(assign(imap, a, n, uv, UIDMAP_SIZE_EXACT, 0), 0);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		char *p = fetch_whole(imap, a[i].imap_uid, &len);

		assert_int_equal(a[i].size, delivered_size(p, len));
		free(p);
	}
	disconnect(imap);
}

/* A message expunged meanwhile: answered, never matching anything. */
static void test_vanished_message_answered(void **state)
{
	mailimap *imap = connect_imap();
	struct imap_uidmap_ctx ctx = { .imap = imap };
	struct uidmap_need q[2];
	const char *err = NULL;
	uint32_t uv;
	struct mail_entry a[N_MSGS];

	(void)state;
	(void)snapshot(imap, rig.folder_a, a, &uv);
	memset(q, 0, sizeof(q));
	q[0].imap_uid = 4000000000u;
	q[0].upstream_size = 99;
	q[0].want_fingerprint = q[0].want_size = true;
	q[1] = q[0];
	q[1].imap_uid = 4000000001u;
	assert_int_equal(imap_uidmap_need(&ctx, q, 2, &err), 0);
	assert_true(q[0].size_known);
	assert_int_equal(q[0].size, 99);
	assert_memory_not_equal(q[0].fingerprint, q[1].fingerprint,
				FINGERPRINT_LEN);
	disconnect(imap);
}

static struct upstream_settings backend_settings(const char *folder,
						 const char *store)
{
	return (struct upstream_settings) {
		.host = rig.host, .port = rig.port, .tls = UPSTREAM_TLS_NONE,
		.verify = true, .folder = folder,
		.connect_timeout_ms = 5000, .command_timeout_ms = 10000,
		.uid_store = store, .size_mode = UIDMAP_SIZE_UPSTREAM,
	};
}

/* Log in and take a snapshot through the IMAP backend. */
static int backend_snapshot_of(const struct upstream_settings *set,
			       struct mail_snapshot *snap,
			       struct backend_error *err)
{
	struct client_origin origin = { "127.0.0.1", 1 };
	struct backend *be = imap_backend_new(set, &origin);
	int r;

	assert_non_null(be);
	assert_int_equal(backend_login(be, rig.user, rig.pass, err), 0);
	r = backend_snapshot(be, snap, err);
	backend_free(be);
	return r;
}

/* The whole path: the backend serves stored ids, also after the folder is
 * deleted and recreated with the same messages (a new UIDVALIDITY). */
static void test_backend_serves_stored_ids(void **state)
{
	char folder[64];
	struct upstream_settings set;
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	mailimap *imap = connect_imap();
	uint64_t id_of_msg[N_MSGS] = { 0 }, max_id = 0;
	uint32_t first_uidvalidity;
	static const int order[N_MSGS] = { 2, 5, 4, 0, 3, 1 };

	(void)state;
	remove_store();
	snprintf(folder, sizeof(folder), "popgate-uidmap-c-%ld", (long)getpid());
	set = backend_settings(folder, rig.store);
	assert_int_equal(mailimap_create(imap, folder), MAILIMAP_NO_ERROR);
	for (int i = 0; i < N_MSGS; i++)
		append(imap, folder, messages[i]);
	assert_int_equal(backend_snapshot_of(&set, &snap, &err), 0);
	assert_int_equal(snap.count, N_MSGS);
	first_uidvalidity = snap.uidvalidity;
	assert_int_equal(mailimap_select(imap, folder), MAILIMAP_NO_ERROR);
	for (size_t i = 0; i < snap.count; i++) {
		size_t len;
		char *p = fetch_whole(imap, snap.msgs[i].imap_uid, &len);

		assert_int_equal(snap.msgs[i].uid, snap.msgs[i].imap_uid);
		assert_int_equal(snap.msgs[i].size, delivered_size(p, len));
		free(p);
		id_of_msg[which(imap, snap.msgs[i].imap_uid)] = snap.msgs[i].uid;
		max_id = snap.msgs[i].uid;
	}
	mail_snapshot_clear(&snap);

	/* Rebuilt: same name, new UIDVALIDITY, other order. */
	assert_int_equal(mailimap_select(imap, "INBOX"), MAILIMAP_NO_ERROR);
	assert_int_equal(mailimap_delete(imap, folder), MAILIMAP_NO_ERROR);
	assert_int_equal(mailimap_create(imap, folder), MAILIMAP_NO_ERROR);
	for (int i = 0; i < N_MSGS; i++)
		append(imap, folder, messages[order[i]]);
	assert_int_equal(backend_snapshot_of(&set, &snap, &err), 0);
	assert_int_not_equal(snap.uidvalidity, first_uidvalidity);
	assert_int_equal(mailimap_select(imap, folder), MAILIMAP_NO_ERROR);
	for (size_t i = 0; i < snap.count; i++) {
		int msg = which(imap, snap.msgs[i].imap_uid);

		if (i > 0)
			assert_true(snap.msgs[i].uid > snap.msgs[i - 1].uid);
		if (msg == 3 || msg == 4)
			assert_true(snap.msgs[i].uid > max_id);
		else
			assert_int_equal(snap.msgs[i].uid, id_of_msg[msg]);
	}
	mail_snapshot_clear(&snap);

	/* A store that cannot be opened: no ids are invented. */
	set.uid_store = "/nonexistent-dir/uids.db";
	assert_int_equal(backend_snapshot_of(&set, &snap, &err), -1);
	assert_int_equal(err.status, BACKEND_TEMP);

	assert_int_equal(mailimap_select(imap, "INBOX"), MAILIMAP_NO_ERROR);
	mailimap_delete(imap, folder);
	disconnect(imap);
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	static const int order_b[N_MSGS] = { 5, 3, 0, 4, 1, 2 };
	mailimap *imap;
	size_t cap = 8192;

	(void)state;
	rig.big = malloc(cap);
	if (rig.big == NULL)
		return -1;
	snprintf(rig.big, cap, "Message-ID: <big@rig>\r\nSubject: big\r\n\r\n");
	while (strlen(rig.big) < cap - 100)
		strcat(rig.big, "a line of a long body, past the first KiB\r\n");
	messages[0] = "Message-ID: <m0@rig>\r\nFrom: a@rig\r\nSubject: zero\r\n"
		      "\r\nhello\r\n";
	messages[1] = "Subject: one\r\n\r\nno id\r\n";
	messages[2] = "Subject: two\r\n\r\nno final line ending";
	messages[3] = "Subject: copy\r\n\r\nsame\r\n";
	messages[4] = "Subject: copy\r\n\r\nsame\r\n";
	messages[5] = rig.big;
	snprintf(rig.folder_a, sizeof(rig.folder_a), "popgate-uidmap-a-%ld",
		 (long)getpid());
	snprintf(rig.folder_b, sizeof(rig.folder_b), "popgate-uidmap-b-%ld",
		 (long)getpid());
	snprintf(rig.dir, sizeof(rig.dir), "%s/imap-uidmap-XXXXXX",
		 tmp != NULL ? tmp : P_tmpdir);
	if (mkdtemp(rig.dir) == NULL)
		return -1;
	snprintf(rig.store, sizeof(rig.store), "%s/uids.db", rig.dir);
	imap = connect_imap();
	if (mailimap_create(imap, rig.folder_a) != MAILIMAP_NO_ERROR ||
	    mailimap_create(imap, rig.folder_b) != MAILIMAP_NO_ERROR)
		return -1;
	for (int i = 0; i < N_MSGS; i++)
		append(imap, rig.folder_a, messages[i]);
	for (int i = 0; i < N_MSGS; i++)
		append(imap, rig.folder_b, messages[order_b[i]]);
	disconnect(imap);
	return 0;
}

static int group_teardown(void **state)
{
	mailimap *imap = connect_imap();

	(void)state;
	mailimap_delete(imap, rig.folder_a);
	mailimap_delete(imap, rig.folder_b);
	disconnect(imap);
	remove_store();
	rmdir(rig.dir);
	free(rig.big);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes_and_rebuild),
		cmocka_unit_test(test_exact_sizes_and_budget),
		cmocka_unit_test(test_vanished_message_answered),
		cmocka_unit_test(test_backend_serves_stored_ids),
	};

	if (!parse_env()) {
		printf("1..0 # SKIP POPGATE_TEST_IMAP not set\n");
		return 0;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
