/*
 * test_uidstore_sqlite.c - the SQLite unique-id store under real
 * conditions: several processes at once, restarts, kill -9 at any moment,
 * and the promise that a login without news writes nothing (issue 5).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "fingerprint.h"
#include "uidmap.h"
#include "uidstore_sqlite.h"

#define BIG 10000

static const struct uidstore_key key = { "127.0.0.1:143", "bob", "INBOX" };

struct fixture {
	char dir[256];
	char path[300];
};

/* The folder model: message i has UID uids[i] and content tag tags[i]. */
struct folder {
	uint32_t *uids;
	uint32_t *tags;
	size_t n;
	size_t kill_at_call;  /* SIGKILL ourselves in this callback call */
	size_t calls;
};

static int need(void *ctx, struct uidmap_need *items, size_t n,
		const char **error_r)
{
	struct folder *f = ctx;

	if (++f->calls == f->kill_at_call)
		raise(SIGKILL);
	for (size_t i = 0; i < n; i++) {
		size_t lo = 0, hi = f->n;
		char hdr[64];

		/* UIDs ascend: binary search. */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (f->uids[mid] < items[i].imap_uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == f->n || f->uids[lo] != items[i].imap_uid) {
			*error_r = "no such UID";
			return -1;
		}
		snprintf(hdr, sizeof(hdr), "Message-ID: <%u@test>\r\n",
			 f->tags[lo]);
		if (fingerprint_compute(hdr, strlen(hdr), 1000, "", 0,
					items[i].fingerprint, error_r) < 0)
			return -1;
		items[i].size_known = true;
		items[i].size = 1000;
	}
	return 0;
}

/* Content tags 1..N; UIDs FIRST_UID, FIRST_UID+STEP...; tags permuted by
 * a rotation ROT so that a rebuild reorders them. */
static void folder_init(struct folder *f, size_t n, uint32_t first_uid,
			uint32_t step, size_t rot)
{
	memset(f, 0, sizeof(*f));
	f->uids = calloc(n + 1, sizeof(*f->uids));
	f->tags = calloc(n + 1, sizeof(*f->tags));
	assert_non_null(f->uids);
	assert_non_null(f->tags);
	f->n = n;
	for (size_t i = 0; i < n; i++) {
		f->uids[i] = first_uid + (uint32_t)i * step;
		f->tags[i] = (uint32_t)((i + rot) % n) + 1;
	}
}

static void folder_free(struct folder *f)
{
	free(f->uids);
	free(f->tags);
}

/* Map F; returns 0/-1 and fills M (N entries) sorted by id. */
static int login(const char *path, uint32_t uidvalidity, struct folder *f,
		 struct mail_entry *m)
{
	const char *err = NULL;
	struct uidstore *st = uidstore_sqlite_open(path, &err);
	int r;

	if (st == NULL) {
		print_error("open: %s\n", err);
		return -1;
	}
	for (size_t i = 0; i < f->n; i++) {
		m[i].imap_uid = f->uids[i];
		m[i].size = 1000;
		m[i].uid = 0;
	}
	r = uidmap_assign(st, &key, uidvalidity, m, f->n, need, f, &err);
	if (r < 0)
		print_error("assign: %s\n", err);
	uidstore_close(st);
	return r;
}

/* Ids strictly increasing and in range. */
static void check_rules(const struct mail_entry *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		assert_true(m[i].uid >= 1 && m[i].uid <= UIDSTORE_ID_MAX);
		if (i > 0)
			assert_true(m[i].uid > m[i - 1].uid);
	}
}

/* The id each content tag got, indexed by tag. */
static void ids_by_tag(const struct folder *f, const struct mail_entry *m,
		       uint64_t *by_tag)
{
	for (size_t i = 0; i < f->n; i++) {
		size_t lo = 0, hi = f->n;

		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (f->uids[mid] < m[i].imap_uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		assert_true(lo < f->n && f->uids[lo] == m[i].imap_uid);
		by_tag[f->tags[lo]] = m[i].uid;
	}
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "%s/uidstore-XXXXXX",
		 tmp != NULL ? tmp : P_tmpdir);
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/uids.db", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	static const char *const suffixes[] = { "", "-wal", "-shm" };

	for (size_t i = 0; i < 3; i++) {
		char p[320];

		snprintf(p, sizeof(p), "%s%s", fx->path, suffixes[i]);
		unlink(p);
	}
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static int64_t data_version(sqlite3 *db)
{
	sqlite3_stmt *q;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &q,
					    NULL), SQLITE_OK);
	if (sqlite3_step(q) == SQLITE_ROW)
		v = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return v;
}

/* O-C0040: ids survive closing and reopening the store (a restart). */
static void test_ids_survive_reopen(void **state)
{
	struct fixture *fx = *state;
	struct folder f;
	struct mail_entry m[50], again[50];

	folder_init(&f, 50, 3, 2, 0);
	assert_int_equal(login(fx->path, 77, &f, m), 0);
	check_rules(m, 50);
	for (size_t i = 0; i < 50; i++)
		assert_int_equal(m[i].uid, f.uids[i]);
	assert_int_equal(login(fx->path, 77, &f, again), 0);
	for (size_t i = 0; i < 50; i++)
		assert_int_equal(again[i].uid, m[i].uid);
	folder_free(&f);
}

/*
 * The -wal and -shm files stay when the last session closes (the next
 * login would only create them again), and the WAL is left empty, its
 * pages in the main file: a store file replaced or copied on its own
 * finds nothing of the old one waiting to be replayed.
 */
static void test_wal_kept_empty_after_close(void **state)
{
	struct fixture *fx = *state;
	struct folder f;
	struct mail_entry m[200], again[200];
	struct stat wal, shm;
	char p[320];

	folder_init(&f, 200, 1, 1, 0);
	assert_int_equal(login(fx->path, 9, &f, m), 0);
	snprintf(p, sizeof(p), "%s-wal", fx->path);
	assert_int_equal(stat(p, &wal), 0);
	assert_int_equal(wal.st_size, 0);
	snprintf(p, sizeof(p), "%s-shm", fx->path);
	assert_int_equal(stat(p, &shm), 0);
	/* Without them the ids are all there. */
	assert_int_equal(unlink(p), 0);
	snprintf(p, sizeof(p), "%s-wal", fx->path);
	assert_int_equal(unlink(p), 0);
	f.calls = 0;
	assert_int_equal(login(fx->path, 9, &f, again), 0);
	assert_int_equal(f.calls, 0);
	for (size_t i = 0; i < 200; i++)
		assert_int_equal(again[i].uid, m[i].uid);
	folder_free(&f);
}

/* Records in the store file alone, as a copy of it without its -wal
 * would have them (immutable: SQLite reads that one file and nothing
 * else). */
static int records_in_file(const char *path)
{
	char uri[400];
	sqlite3 *db;
	sqlite3_stmt *q;
	int n = -1;

	snprintf(uri, sizeof(uri), "file:%s?immutable=1", path);
	assert_int_equal(sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY |
					 SQLITE_OPEN_URI, NULL), SQLITE_OK);
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM record", -1, &q,
			       NULL) != SQLITE_OK)
		n = 0;  /* not even the schema yet */
	else {
		if (sqlite3_step(q) == SQLITE_ROW)
			n = sqlite3_column_int(q, 0);
		sqlite3_finalize(q);
	}
	sqlite3_close(db);
	return n;
}

/*
 * With another connection open all along (the daemon's store holder), a
 * login is not the last to close and leaves its pages in the -wal; the
 * holder's checkpoint moves them into the store file, with the login's
 * connection gone or a reader's still open.
 */
static void test_checkpoint_of_the_holder(void **state)
{
	struct fixture *fx = *state;
	const char *err = NULL;
	struct uidstore *holder = uidstore_sqlite_open(fx->path, &err);
	struct folder f;
	struct mail_entry m[200], again[200];
	struct stat wal;
	char p[320];

	assert_non_null(holder);
	folder_init(&f, 200, 1, 1, 0);
	assert_int_equal(login(fx->path, 9, &f, m), 0);
	snprintf(p, sizeof(p), "%s-wal", fx->path);
	assert_int_equal(stat(p, &wal), 0);
	assert_true(wal.st_size > 0);
	assert_int_equal(records_in_file(fx->path), 0);

	assert_int_equal(uidstore_sqlite_checkpoint(holder, &err), 0);
	assert_int_equal(records_in_file(fx->path), 200);
	/* Nothing new: a second checkpoint has nothing to do. */
	assert_int_equal(uidstore_sqlite_checkpoint(holder, &err), 0);
	f.calls = 0;
	assert_int_equal(login(fx->path, 9, &f, again), 0);
	assert_int_equal(f.calls, 0);
	for (size_t i = 0; i < 200; i++)
		assert_int_equal(again[i].uid, m[i].uid);
	uidstore_close(holder);
	folder_free(&f);
}

/* A login without news commits nothing (seen from another connection). */
static void test_known_login_writes_nothing(void **state)
{
	struct fixture *fx = *state;
	struct folder f;
	struct mail_entry m[100];
	sqlite3 *observer;
	int64_t v;

	folder_init(&f, 99, 1, 1, 0);
	assert_int_equal(login(fx->path, 5, &f, m), 0);
	assert_int_equal(sqlite3_open(fx->path, &observer), SQLITE_OK);
	v = data_version(observer);
	f.calls = 0;
	assert_int_equal(login(fx->path, 5, &f, m), 0);
	assert_int_equal(f.calls, 0);
	assert_int_equal(data_version(observer), v);
	/* The probe does see a commit: one new message. */
	f.n = 99;
	f.uids[f.n] = 200;
	f.tags[f.n] = 1000;
	f.n++;
	assert_int_equal(login(fx->path, 5, &f, m), 0);
	assert_int_equal(m[99].uid, 200);
	assert_true(data_version(observer) != v);
	sqlite3_close(observer);
	folder_free(&f);
}

static void test_unavailable_store_is_an_error(void **state)
{
	struct fixture *fx = *state;
	const char *err = NULL;
	char bad[400];

	snprintf(bad, sizeof(bad), "%s/missing/dir/uids.db", fx->dir);
	assert_null(uidstore_sqlite_open(bad, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "uid store"));
}

/*
 * Run CHILDREN processes that each map F at UIDVALIDITY at the same moment
 * (released together through a pipe) and write their ids to a file each.
 */
static void run_concurrently(struct fixture *fx, struct folder *f,
			     uint32_t uidvalidity, size_t children,
			     uint64_t **ids_r)
{
	int go[2];
	pid_t pids[8];

	assert_true(children <= 8);
	assert_int_equal(pipe(go), 0);
	for (size_t c = 0; c < children; c++) {
		pids[c] = fork();
		assert_true(pids[c] >= 0);
		if (pids[c] == 0) {
			struct mail_entry *m = calloc(f->n + 1, sizeof(*m));
			char out[340], byte;
			FILE *fp;

			alarm(60); /* a hung child must not hang the suite */
			close(go[1]);
			if (m == NULL || read(go[0], &byte, 1) != 0 ||
			    login(fx->path, uidvalidity, f, m) < 0)
				_exit(1);
			snprintf(out, sizeof(out), "%s/ids.%zu", fx->dir, c);
			fp = fopen(out, "w");
			for (size_t i = 0; fp != NULL && i < f->n; i++)
				fprintf(fp, "%u %llu\n", m[i].imap_uid,
					(unsigned long long)m[i].uid);
			_exit(fp != NULL && fclose(fp) == 0 ? 0 : 1);
		}
	}
	close(go[0]);
	close(go[1]); /* EOF releases every child at once */
	for (size_t c = 0; c < children; c++) {
		int status;
		char out[340];
		FILE *fp;

		assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		snprintf(out, sizeof(out), "%s/ids.%zu", fx->dir, c);
		fp = fopen(out, "r");
		assert_non_null(fp);
		ids_r[c] = calloc(f->n + 1, sizeof(uint64_t));
		for (size_t i = 0; i < f->n; i++) {
			unsigned u;
			unsigned long long id;

			assert_int_equal(fscanf(fp, "%u %llu", &u, &id), 2);
			/* Stored by position in the folder, i.e. by UID. */
			for (size_t k = 0; k < f->n; k++) {
				if (f->uids[k] == u)
					ids_r[c][k] = id;
			}
		}
		fclose(fp);
		unlink(out);
	}
}

/* Two first logins at once, then two rebuild logins at once: one answer. */
static void test_concurrent_logins_agree(void **state)
{
	struct fixture *fx = *state;
	struct folder f, g;
	uint64_t *ids[4] = { NULL };
	const size_t n = 3000;

	folder_init(&f, n, 1, 1, 0);
	run_concurrently(fx, &f, 10, 4, ids);
	for (size_t c = 0; c < 4; c++) {
		for (size_t i = 0; i < n; i++)
			assert_int_equal(ids[c][i], f.uids[i]);
		free(ids[c]);
	}
	/* The folder is rebuilt: every process must find the same ids. */
	folder_init(&g, n, 1, 1, 17);
	run_concurrently(fx, &g, 11, 4, ids);
	for (size_t c = 0; c < 4; c++) {
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(ids[c][i], ids[0][i]);
			/* Tag t had id t in the first epoch. */
			assert_int_equal(ids[c][i], g.tags[i]);
		}
	}
	for (size_t c = 0; c < 4; c++)
		free(ids[c]);
	folder_free(&f);
	folder_free(&g);
}

/* Run F at UIDVALIDITY in a child that kills itself in callback call
 * KILL_AT; assert it died that way. */
static void die_while_mapping(struct fixture *fx, struct folder *f,
			      uint32_t uidvalidity, size_t kill_at)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct mail_entry *m = calloc(f->n + 1, sizeof(*m));

		alarm(60);
		f->kill_at_call = kill_at;
		f->calls = 0;
		_exit(m != NULL && login(fx->path, uidvalidity, f, m) == 0 ?
		      0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* kill -9 in the middle of recording 10,000 new messages, then again in
 * the middle of a rebuild: what is served afterwards obeys every rule. */
static void test_kill9_while_recording(void **state)
{
	struct fixture *fx = *state;
	struct folder f, g;
	struct mail_entry *m = calloc(BIG + 2, sizeof(*m));
	uint64_t *by_tag = calloc(BIG + 2, sizeof(*by_tag));
	uint64_t max_id;

	assert_non_null(m);
	assert_non_null(by_tag);
	folder_init(&f, BIG, 1, 1, 0);
	/* Six batches asked, five committed. */
	die_while_mapping(fx, &f, 3, 6);
	assert_int_equal(login(fx->path, 3, &f, m), 0);
	check_rules(m, BIG);
	for (size_t i = 0; i < BIG; i++)
		assert_int_equal(m[i].uid, f.uids[i]);
	max_id = m[BIG - 1].uid;

	/* Rebuilt with a new message: die while asking about it all. */
	folder_init(&g, BIG + 1, 1, 1, 0);
	for (size_t i = 0; i < BIG; i++)
		g.tags[i] = (uint32_t)((i + 4321) % BIG) + 1;
	g.tags[BIG] = BIG + 1; /* a message not seen before */
	die_while_mapping(fx, &g, 4, 5);
	f.calls = 0;
	assert_int_equal(login(fx->path, 4, &g, m), 0);
	check_rules(m, BIG + 1);
	ids_by_tag(&g, m, by_tag);
	for (uint32_t t = 1; t <= BIG; t++)
		assert_int_equal(by_tag[t], t);
	assert_true(by_tag[BIG + 1] > max_id);
	free(m);
	free(by_tag);
	folder_free(&f);
	folder_free(&g);
}

/*
 * kill -9 at an arbitrary moment (including inside a commit): a child
 * rebuilds the folder again and again with the same messages, so every
 * id must stay what it was whenever the child dies.
 */
static void test_kill9_at_any_moment(void **state)
{
	struct fixture *fx = *state;
	struct folder f;
	struct mail_entry *m = calloc(BIG + 1, sizeof(*m));
	uint64_t *by_tag = calloc(BIG + 1, sizeof(*by_tag));
	uint32_t uidvalidity = 100;

	assert_non_null(m);
	assert_non_null(by_tag);
	folder_init(&f, BIG, 1, 1, 0);
	assert_int_equal(login(fx->path, uidvalidity, &f, m), 0);
	srand((unsigned)getpid());
	for (int round = 0; round < 5; round++) {
		pid_t pid = fork();
		int status;

		assert_true(pid >= 0);
		if (pid == 0) {
			alarm(60);
			for (uint32_t uv = 1000 + 100 * (uint32_t)round;; uv++) {
				struct folder g;

				folder_init(&g, BIG, 1, 1, uv % BIG);
				if (login(fx->path, uv, &g, m) < 0)
					_exit(1);
				folder_free(&g);
			}
		}
		/* Not synchronisation: a random moment to die at. */
		usleep(50000 + (useconds_t)(rand() % 400000));
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));

		{
			struct folder g;

			folder_init(&g, BIG, 1, 1, 77 + (size_t)round);
			assert_int_equal(login(fx->path, 50 + (uint32_t)round,
					       &g, m), 0);
			check_rules(m, BIG);
			ids_by_tag(&g, m, by_tag);
			for (uint32_t t = 1; t <= BIG; t++)
				assert_int_equal(by_tag[t], t);
			folder_free(&g);
		}
	}
	free(m);
	free(by_tag);
	folder_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ids_survive_reopen,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_wal_kept_empty_after_close,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_of_the_holder,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_known_login_writes_nothing,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_unavailable_store_is_an_error,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_logins_agree,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9_while_recording,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9_at_any_moment,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
