/*
 * uidmap_bench - what the unique-id store adds to a login (issue 5).
 *
 *   uidmap_bench [STORE-PATH [MESSAGES [RUNS]]]
 *
 * Builds a store knowing one mailbox of MESSAGES (default 100,000), then
 * times RUNS (default 21) logins of it, each as a session process does it:
 * open the store, map the snapshot, close.  Two cases: a mailbox in its
 * first UIDVALIDITY epoch (no exception rows) and one after a rebuild in
 * which every message kept its id (one exception row per message, the
 * worst case).  Prints the median and the spread in milliseconds.  Not a
 * test: the numbers depend on the machine.
 *
 * With POPGATE_BENCH_IMAP=host:port:user:pass:folder (a plain IMAP
 * listener), it also times the whole login as the IMAP backend does it
 * (LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE)), without the store and
 * with a store that already knows the folder, and prints the overhead.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imap_backend.h"
#include "uidmap.h"
#include "uidstore_sqlite.h"

static const struct uidstore_key key = { "bench:143", "bench", "INBOX" };

struct folder {
	uint32_t first_uid;
	size_t n;
};

/* Fingerprint = the message number, whatever its UID: a rebuild that
 * renumbers UIDs keeps every message recognisable. */
static int need(void *ctx, struct uidmap_need *items, size_t n,
		const char **error_r)
{
	const struct folder *f = ctx;

	(void)error_r;
	for (size_t i = 0; i < n; i++) {
		uint64_t msgno = items[i].imap_uid - f->first_uid;

		memset(items[i].fingerprint, 0, FINGERPRINT_LEN);
		memcpy(items[i].fingerprint, &msgno, sizeof(msgno));
		items[i].size_known = true;
		items[i].size = items[i].upstream_size;
	}
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int login(const char *path, uint32_t uidvalidity,
		 const struct folder *f, struct mail_entry *m)
{
	const char *err = NULL;
	struct uidstore *st = uidstore_sqlite_open(path, &err);
	int r;

	if (st == NULL) {
		fprintf(stderr, "uidmap_bench: %s\n", err);
		return -1;
	}
	for (size_t i = 0; i < f->n; i++) {
		m[i].imap_uid = f->first_uid + (uint32_t)i;
		m[i].size = 4000 + i % 1000;
	}
	r = uidmap_assign(st, &key, uidvalidity, m, f->n, need, (void *)f,
			  &err);
	if (r < 0)
		fprintf(stderr, "uidmap_bench: %s\n", err);
	uidstore_close(st);
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int measure(const char *label, const char *path, uint32_t uidvalidity,
		   const struct folder *f, struct mail_entry *m, size_t runs)
{
	double *t = calloc(runs, sizeof(*t));

	if (t == NULL)
		return -1;
	for (size_t r = 0; r < runs; r++) {
		double start = now_ms();

		if (login(path, uidvalidity, f, m) < 0) {
			free(t);
			return -1;
		}
		t[r] = now_ms() - start;
	}
	qsort(t, runs, sizeof(*t), cmp_double);
	printf("%s: %zu messages, %zu runs: median %.2f ms (min %.2f, max %.2f)\n",
	       label, f->n, runs, t[runs / 2], t[0], t[runs - 1]);
	free(t);
	return 0;
}

/* One backend login + snapshot; returns milliseconds, or -1. */
static double backend_login_ms(const struct upstream_settings *set,
			       const char *user, const char *pass, size_t *n_r)
{
	struct client_origin origin = { "127.0.0.1", 1 };
	struct backend *be = imap_backend_new(set, &origin);
	struct mail_snapshot snap = { 0 };
	struct backend_error err;
	double start = now_ms(), ms = -1;

	if (be == NULL)
		return -1;
	if (backend_login(be, user, pass, &err) == 0 &&
	    backend_snapshot(be, &snap, &err) == 0) {
		ms = now_ms() - start;
		*n_r = snap.count;
	} else {
		fprintf(stderr, "uidmap_bench: %s\n", err.text);
	}
	mail_snapshot_clear(&snap);
	backend_free(be);
	return ms;
}

static double median_login(const struct upstream_settings *set,
			   const char *user, const char *pass, size_t runs,
			   size_t *n_r)
{
	double *t = calloc(runs, sizeof(*t)), m;

	if (t == NULL)
		return -1;
	for (size_t r = 0; r < runs; r++) {
		if ((t[r] = backend_login_ms(set, user, pass, n_r)) < 0) {
			free(t);
			return -1;
		}
	}
	qsort(t, runs, sizeof(*t), cmp_double);
	m = t[runs / 2];
	free(t);
	return m;
}

/* The criterion: login with the store costs at most 10% more. */
static int bench_imap(const char *spec, const char *path, size_t runs)
{
	char host[128], user[64], pass[64], folder[128];
	unsigned port;
	struct upstream_settings set = { 0 };
	double without, with;
	size_t n = 0;

	if (sscanf(spec, "%127[^:]:%u:%63[^:]:%63[^:]:%127s", host, &port,
		   user, pass, folder) != 5) {
		fprintf(stderr, "POPGATE_BENCH_IMAP: host:port:user:pass:folder\n");
		return -1;
	}
	set.host = host;
	set.port = port;
	set.tls = UPSTREAM_TLS_NONE;
	set.folder = folder;
	set.connect_timeout_ms = 10000;
	set.command_timeout_ms = 600000;
	/* Warm the server's index, then record the folder once. */
	if (backend_login_ms(&set, user, pass, &n) < 0)
		return -1;
	without = median_login(&set, user, pass, runs, &n);
	set.uid_store = path;
	if (without < 0 || backend_login_ms(&set, user, pass, &n) < 0)
		return -1;
	with = median_login(&set, user, pass, runs, &n);
	if (with < 0)
		return -1;
	printf("IMAP login of %zu messages, median of %zu: without store "
	       "%.1f ms, with store %.1f ms: %+.1f%%\n", n, runs, without,
	       with, (with - without) * 100 / without);
	return 0;
}

/* Start from nothing: the store and its WAL and shared-memory files. */
static void remove_store(const char *path)
{
	static const char *const suffixes[] = { "", "-wal", "-shm" };

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(*suffixes); i++) {
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		unlink(p);
	}
}

int main(int argc, char **argv)
{
	char default_path[256];
	const char *tmp = getenv("TMPDIR");
	const char *path;
	struct folder f = { 1, 100000 }, rebuilt;
	size_t runs = 21;
	struct mail_entry *m;
	double start;

	snprintf(default_path, sizeof(default_path), "%s/uidmap-bench.db",
		 tmp != NULL ? tmp : P_tmpdir);
	path = argc > 1 ? argv[1] : default_path;
	if (argc > 2)
		f.n = strtoul(argv[2], NULL, 10);
	if (argc > 3)
		runs = strtoul(argv[3], NULL, 10);
	if (f.n == 0 || runs == 0 || path[0] == '-') {
		fprintf(stderr, "usage: uidmap_bench [STORE [MESSAGES [RUNS]]]\n");
		return 2;
	}
	m = calloc(f.n, sizeof(*m));
	if (m == NULL)
		return 1;
	remove_store(path);

	start = now_ms();
	if (login(path, 1, &f, m) < 0)
		return 1;
	printf("first login (records every message): %.0f ms\n",
	       now_ms() - start);
	if (measure("known mailbox, first epoch", path, 1, &f, m, runs) < 0)
		return 1;

	rebuilt = f;
	rebuilt.first_uid = 1000;
	start = now_ms();
	if (login(path, 2, &rebuilt, m) < 0)
		return 1;
	printf("UIDVALIDITY change (re-identifies every message): %.0f ms\n",
	       now_ms() - start);
	if (measure("known mailbox, every id kept after a rebuild", path, 2,
		    &rebuilt, m, runs) < 0)
		return 1;
	free(m);
	if (getenv("POPGATE_BENCH_IMAP") != NULL) {
		remove_store(path);
		if (bench_imap(getenv("POPGATE_BENCH_IMAP"), path, runs) < 0)
			return 1;
	}
	return 0;
}
