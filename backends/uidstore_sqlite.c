/*
 * uidstore_sqlite.c - the unique-id store in one SQLite file (see
 * uidstore_sqlite.h for the durability choices).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "uidstore_sqlite.h"

#define SCHEMA_VERSION 1
#define STR_(x) #x
#define STR(x) STR_(x)

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS mailbox ("
	" mailbox_id INTEGER PRIMARY KEY,"
	" upstream TEXT NOT NULL, user TEXT NOT NULL, folder TEXT NOT NULL,"
	" uidvalidity INTEGER NOT NULL, id_offset INTEGER NOT NULL,"
	" last_uid INTEGER NOT NULL, known INTEGER NOT NULL,"
	" high_water INTEGER NOT NULL, version INTEGER NOT NULL,"
	" UNIQUE (upstream, user, folder));"
	/* UNIQUE (mailbox_id, id): a last guard against ever serving one id
	 * for two messages, whatever the mapping logic does. */
	"CREATE TABLE IF NOT EXISTS record ("
	" mailbox_id INTEGER NOT NULL, imap_uid INTEGER NOT NULL,"
	" id INTEGER NOT NULL, fingerprint BLOB NOT NULL,"
	" PRIMARY KEY (mailbox_id, imap_uid), UNIQUE (mailbox_id, id))"
	" WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS exception ("
	" mailbox_id INTEGER NOT NULL, imap_uid INTEGER NOT NULL,"
	" id INTEGER, size INTEGER, size_pending INTEGER NOT NULL,"
	" PRIMARY KEY (mailbox_id, imap_uid)) WITHOUT ROWID;";

enum stmt_id {
	S_BEGIN_READ,
	S_BEGIN_WRITE,
	S_COMMIT,
	S_ROLLBACK,
	S_MAILBOX_GET,
	S_MAILBOX_INSERT,
	S_MAILBOX_UPDATE,
	S_MAILBOX_LIST_USER,
	S_MAILBOX_LIST_ALL,
	S_EXC_GET,
	S_EXC_PUT,
	S_REC_GET,
	S_REC_PUT,
	S_REC_CLEAR,
	S_EXC_CLEAR,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_BEGIN_READ] = "BEGIN DEFERRED",
	[S_BEGIN_WRITE] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_MAILBOX_GET] =
		"SELECT mailbox_id, uidvalidity, id_offset, last_uid, known,"
		" high_water, version FROM mailbox"
		" WHERE upstream = ?1 AND user = ?2 AND folder = ?3",
	[S_MAILBOX_INSERT] =
		"INSERT INTO mailbox (upstream, user, folder, uidvalidity,"
		" id_offset, last_uid, known, high_water, version)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[S_MAILBOX_UPDATE] =
		"UPDATE mailbox SET uidvalidity = ?4, id_offset = ?5,"
		" last_uid = ?6, known = ?7, high_water = ?8, version = ?9"
		" WHERE mailbox_id = ?10",
	[S_MAILBOX_LIST_USER] =
		"SELECT mailbox_id, uidvalidity, id_offset, last_uid, known,"
		" high_water, version, upstream, user, folder FROM mailbox"
		" WHERE user = ?1 ORDER BY upstream, folder",
	[S_MAILBOX_LIST_ALL] =
		"SELECT mailbox_id, uidvalidity, id_offset, last_uid, known,"
		" high_water, version, upstream, user, folder FROM mailbox"
		" ORDER BY user, upstream, folder",
	[S_EXC_GET] =
		"SELECT imap_uid, id, size, size_pending FROM exception"
		" WHERE mailbox_id = ?1 ORDER BY imap_uid",
	[S_EXC_PUT] =
		"INSERT OR REPLACE INTO exception (mailbox_id, imap_uid, id,"
		" size, size_pending) VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_REC_GET] =
		"SELECT imap_uid, id, fingerprint FROM record"
		" WHERE mailbox_id = ?1 ORDER BY imap_uid",
	[S_REC_PUT] =
		"INSERT INTO record (mailbox_id, imap_uid, id,"
		" fingerprint) VALUES (?1, ?2, ?3, ?4)",
	[S_REC_CLEAR] =
		"DELETE FROM record WHERE mailbox_id = ?1"
		" AND imap_uid BETWEEN ?2 AND ?3",
	[S_EXC_CLEAR] =
		"DELETE FROM exception WHERE mailbox_id = ?1"
		" AND imap_uid BETWEEN ?2 AND ?3",
};

struct uidstore_sqlite {
	struct uidstore store;
	sqlite3 *db;
	sqlite3_stmt *stmts[S_COUNT];
	bool in_transaction;
	char error[256];
};

static const struct uidstore_ops sqlite_ops;

static struct uidstore_sqlite *sq(struct uidstore *st)
{
	return (struct uidstore_sqlite *)st;
}

/* Keep SQLite's message: it says what went wrong (locked, disk full...). */
static int fail(struct uidstore_sqlite *s, const char *what,
		const char **error_r)
{
	snprintf(s->error, sizeof(s->error), "uid store: %s: %s", what,
		 sqlite3_errmsg(s->db));
	*error_r = s->error;
	return -1;
}

/*
 * Statement ID, prepared on first use: a login that finds nothing new uses
 * a third of them, and every session opens the store afresh.  NULL when
 * preparing failed; SQLite then refuses it with an error the caller
 * reports like any other (the message names the failed prepare).
 */
static sqlite3_stmt *stmt(struct uidstore_sqlite *s, enum stmt_id id)
{
	sqlite3_stmt *st = s->stmts[id];

	if (st == NULL) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1,
				       SQLITE_PREPARE_PERSISTENT, &s->stmts[id],
				       NULL) != SQLITE_OK)
			return NULL;
		return s->stmts[id];
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

/* Run a statement that returns no rows. */
static int run(struct uidstore_sqlite *s, sqlite3_stmt *st, const char *what,
	       const char **error_r)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, what, error_r);
	return 0;
}

static int sqlite_begin(struct uidstore *st, bool write, const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);

	if (run(s, stmt(s, write ? S_BEGIN_WRITE : S_BEGIN_READ),
		write ? "begin write" : "begin read", error_r) < 0)
		return -1;
	s->in_transaction = true;
	return 0;
}

static int sqlite_commit(struct uidstore *st, const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);

	if (run(s, stmt(s, S_COMMIT), "commit", error_r) < 0)
		return -1; /* still open: the caller rolls back */
	s->in_transaction = false;
	return 0;
}

static void sqlite_rollback(struct uidstore *st)
{
	struct uidstore_sqlite *s = sq(st);
	const char *ignored;

	/* Nothing to undo if SQLite already rolled back (e.g. after an I/O
	 * error); the statement then fails harmlessly. */
	if (sqlite3_get_autocommit(s->db) == 0)
		(void)run(s, stmt(s, S_ROLLBACK), "rollback", &ignored);
	s->in_transaction = false;
}

static void bind_key(sqlite3_stmt *st, const struct uidstore_key *key)
{
	sqlite3_bind_text(st, 1, key->upstream, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, key->folder, -1, SQLITE_STATIC);
}

static void column_mailbox(sqlite3_stmt *st, struct uidstore_mailbox *mb)
{
	mb->mailbox_id = sqlite3_column_int64(st, 0);
	mb->uidvalidity = (uint32_t)sqlite3_column_int64(st, 1);
	mb->offset = (uint64_t)sqlite3_column_int64(st, 2);
	mb->last_uid = (uint32_t)sqlite3_column_int64(st, 3);
	mb->known = (uint64_t)sqlite3_column_int64(st, 4);
	mb->high_water = (uint64_t)sqlite3_column_int64(st, 5);
	mb->version = (uint64_t)sqlite3_column_int64(st, 6);
}

static int sqlite_mailbox_get(struct uidstore *st,
			      const struct uidstore_key *key,
			      struct uidstore_mailbox *mb_r,
			      const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, S_MAILBOX_GET);
	int rc;

	bind_key(q, key);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		column_mailbox(q, mb_r);
		sqlite3_reset(q);
		return 1;
	}
	sqlite3_reset(q);
	if (rc == SQLITE_DONE)
		return 0;
	return fail(s, "read mailbox", error_r);
}

static int sqlite_mailbox_put(struct uidstore *st,
			      const struct uidstore_key *key,
			      struct uidstore_mailbox *mb, const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	bool insert = mb->mailbox_id == 0;
	sqlite3_stmt *q = stmt(s, insert ? S_MAILBOX_INSERT : S_MAILBOX_UPDATE);

	bind_key(q, key);
	sqlite3_bind_int64(q, 4, mb->uidvalidity);
	sqlite3_bind_int64(q, 5, (sqlite3_int64)mb->offset);
	sqlite3_bind_int64(q, 6, mb->last_uid);
	sqlite3_bind_int64(q, 7, (sqlite3_int64)mb->known);
	sqlite3_bind_int64(q, 8, (sqlite3_int64)mb->high_water);
	sqlite3_bind_int64(q, 9, (sqlite3_int64)mb->version);
	if (!insert)
		sqlite3_bind_int64(q, 10, mb->mailbox_id);
	if (run(s, q, "write mailbox", error_r) < 0)
		return -1;
	if (insert)
		mb->mailbox_id = sqlite3_last_insert_rowid(s->db);
	return 0;
}

static int sqlite_mailbox_list(struct uidstore *st, const char *user,
			       uidstore_mailbox_fn *fn, void *ctx,
			       const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, user != NULL ? S_MAILBOX_LIST_USER :
					       S_MAILBOX_LIST_ALL);
	int rc;

	if (user != NULL)
		sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct uidstore_mailbox mb;
		struct uidstore_key key = {
			(const char *)sqlite3_column_text(q, 7),
			(const char *)sqlite3_column_text(q, 8),
			(const char *)sqlite3_column_text(q, 9),
		};

		column_mailbox(q, &mb);
		if (fn(ctx, &key, &mb) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(q);
	if (rc != SQLITE_DONE)
		return fail(s, "list mailboxes", error_r);
	return 0;
}

/* Grow *LIST (of SIZE-octet elements) so that index N fits. */
static int grow(void **list, size_t *cap, size_t n, size_t size)
{
	void *p;
	size_t new_cap;

	if (n < *cap)
		return 0;
	new_cap = *cap == 0 ? 64 : *cap * 2;
	p = reallocarray(*list, new_cap, size);
	if (p == NULL)
		return -1;
	*list = p;
	*cap = new_cap;
	return 0;
}

static int sqlite_exceptions_get(struct uidstore *st, int64_t mailbox_id,
				 struct uidstore_exception **list_r,
				 size_t *n_r, const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, S_EXC_GET);
	struct uidstore_exception *list = NULL;
	size_t n = 0, cap = 0;
	int rc;

	sqlite3_bind_int64(q, 1, mailbox_id);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct uidstore_exception *e;

		if (grow((void **)&list, &cap, n, sizeof(*list)) < 0) {
			sqlite3_reset(q);
			free(list);
			*error_r = "uid store: out of memory";
			return -1;
		}
		e = &list[n++];
		e->imap_uid = (uint32_t)sqlite3_column_int64(q, 0);
		e->id = (uint64_t)sqlite3_column_int64(q, 1); /* NULL -> 0 */
		e->has_size = sqlite3_column_type(q, 2) != SQLITE_NULL;
		e->size = (uint64_t)sqlite3_column_int64(q, 2);
		e->size_pending = sqlite3_column_int(q, 3) != 0;
	}
	sqlite3_reset(q);
	if (rc != SQLITE_DONE) {
		free(list);
		return fail(s, "read exceptions", error_r);
	}
	*list_r = list;
	*n_r = n;
	return 0;
}

static int sqlite_exception_put(struct uidstore *st, int64_t mailbox_id,
				const struct uidstore_exception *exc,
				const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, S_EXC_PUT);

	sqlite3_bind_int64(q, 1, mailbox_id);
	sqlite3_bind_int64(q, 2, exc->imap_uid);
	if (exc->id != 0)
		sqlite3_bind_int64(q, 3, (sqlite3_int64)exc->id);
	if (exc->has_size)
		sqlite3_bind_int64(q, 4, (sqlite3_int64)exc->size);
	sqlite3_bind_int(q, 5, exc->size_pending);
	return run(s, q, "write exception", error_r);
}

static int sqlite_records_get(struct uidstore *st, int64_t mailbox_id,
			      struct uidstore_record **list_r, size_t *n_r,
			      const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, S_REC_GET);
	struct uidstore_record *list = NULL;
	size_t n = 0, cap = 0;
	int rc;

	sqlite3_bind_int64(q, 1, mailbox_id);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct uidstore_record *r;
		const void *fp = sqlite3_column_blob(q, 2);

		if (grow((void **)&list, &cap, n, sizeof(*list)) < 0) {
			sqlite3_reset(q);
			free(list);
			*error_r = "uid store: out of memory";
			return -1;
		}
		r = &list[n++];
		r->imap_uid = (uint32_t)sqlite3_column_int64(q, 0);
		r->id = (uint64_t)sqlite3_column_int64(q, 1);
		memset(r->fingerprint, 0, FINGERPRINT_LEN);
		if (fp != NULL && sqlite3_column_bytes(q, 2) == FINGERPRINT_LEN)
			memcpy(r->fingerprint, fp, FINGERPRINT_LEN);
	}
	sqlite3_reset(q);
	if (rc != SQLITE_DONE) {
		free(list);
		return fail(s, "read records", error_r);
	}
	*list_r = list;
	*n_r = n;
	return 0;
}

static int sqlite_record_put(struct uidstore *st, int64_t mailbox_id,
			     const struct uidstore_record *rec,
			     const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	sqlite3_stmt *q = stmt(s, S_REC_PUT);

	sqlite3_bind_int64(q, 1, mailbox_id);
	sqlite3_bind_int64(q, 2, rec->imap_uid);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)rec->id);
	sqlite3_bind_blob(q, 4, rec->fingerprint, FINGERPRINT_LEN,
			  SQLITE_STATIC);
	return run(s, q, "write record", error_r);
}

static int sqlite_clear_range(struct uidstore *st, int64_t mailbox_id,
			      uint32_t first, uint32_t last,
			      const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	static const enum stmt_id which[] = { S_REC_CLEAR, S_EXC_CLEAR };

	for (size_t i = 0; i < 2; i++) {
		sqlite3_stmt *q = stmt(s, which[i]);

		sqlite3_bind_int64(q, 1, mailbox_id);
		sqlite3_bind_int64(q, 2, first);
		sqlite3_bind_int64(q, 3, last);
		if (run(s, q, "clear", error_r) < 0)
			return -1;
	}
	return 0;
}

static void sqlite_close(struct uidstore *st)
{
	struct uidstore_sqlite *s = sq(st);

	if (s->db != NULL && sqlite3_get_autocommit(s->db) == 0)
		sqlite_rollback(st);
	for (size_t i = 0; i < S_COUNT; i++)
		sqlite3_finalize(s->stmts[i]);
	sqlite3_close(s->db);
	free(s);
}

static int read_schema_version(struct uidstore_sqlite *s)
{
	sqlite3_stmt *q;
	int version = -1;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL) ==
	    SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW)
			version = sqlite3_column_int(q, 0);
		sqlite3_finalize(q);
	}
	return version;
}

/* Create the schema under the writer lock, so that two processes opening
 * a new file at once do not race. */
static int create_schema(struct uidstore_sqlite *s, const char **error_r)
{
	int version;

	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return fail(s, "create schema", error_r);
	version = read_schema_version(s);
	if (version == 0 &&
	    (sqlite3_exec(s->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
	     sqlite3_exec(s->db, "PRAGMA user_version = " STR(SCHEMA_VERSION), NULL, NULL,
			  NULL) != SQLITE_OK)) {
		fail(s, "create schema", error_r);
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		fail(s, "create schema", error_r);
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

/*
 * Switching a new file to WAL takes an exclusive lock that SQLite does not
 * wait for (it skips the busy handler there, to avoid deadlocks), so two
 * first logins opening a new store at once can get SQLITE_BUSY: retry,
 * within the same bound as every other wait for the store.  On a file
 * already in WAL mode this only reads the mode.
 */
static int enter_wal_mode(struct uidstore_sqlite *s)
{
	const int pause_ms = 10;
	int r;

	for (int waited = 0;; waited += pause_ms) {
		r = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", NULL, NULL,
				 NULL);
		if (r != SQLITE_BUSY || waited >= UIDSTORE_SQLITE_BUSY_MS)
			return r;
		sqlite3_sleep(pause_ms);
	}
}

/*
 * Every open of an existing store only reads: a login without news must
 * not write, not even here.
 *
 * Sessions open the store one after another, each usually alone.  By
 * default the last connection to close deletes the -wal and -shm files
 * and the next one creates them again.  They are kept instead.  With a
 * size limit set, the last close still empties the WAL after its
 * checkpoint (so nothing waits in it for a store file put in place of
 * this one), and a busy WAL shrinks back to WAL_LIMIT after each one.
 */
#define WAL_LIMIT "1048576"

static int setup(struct uidstore_sqlite *s, const char **error_r)
{
	int version, persist = 1;

	if (sqlite3_busy_timeout(s->db, UIDSTORE_SQLITE_BUSY_MS) != SQLITE_OK ||
	    enter_wal_mode(s) != SQLITE_OK ||
	    sqlite3_file_control(s->db, "main", SQLITE_FCNTL_PERSIST_WAL,
				 &persist) != SQLITE_OK ||
	    sqlite3_exec(s->db, "PRAGMA journal_size_limit = " WAL_LIMIT
			 "; PRAGMA synchronous = FULL", NULL, NULL,
			 NULL) != SQLITE_OK)
		return fail(s, "setup", error_r);
	version = read_schema_version(s);
	if (version == 0) {
		if (create_schema(s, error_r) < 0)
			return -1;
		version = read_schema_version(s);
	}
	if (version != SCHEMA_VERSION) {
		*error_r = version < 0 ?
			   "uid store: cannot read the schema version" :
			   "uid store: unknown schema version";
		return -1;
	}
	return 0;
}

int uidstore_sqlite_init(void)
{
	return sqlite3_initialize() == SQLITE_OK ? 0 : -1;
}

struct uidstore *uidstore_sqlite_open(const char *path, const char **error_r)
{
	/* The store's own buffer goes with it: failures to open are copied
	 * here (one per thread). */
	static __thread char open_error[320];
	struct uidstore_sqlite *s = calloc(1, sizeof(*s));
	const char *err = NULL;

	if (s == NULL) {
		*error_r = "uid store: out of memory";
		return NULL;
	}
	s->store.ops = &sqlite_ops;
	if (sqlite3_open_v2(path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(open_error, sizeof(open_error), "uid store: open %s: %s",
			 path, s->db != NULL ? sqlite3_errmsg(s->db) :
					       "out of memory");
		err = open_error;
	} else if (setup(s, &err) < 0) {
		snprintf(open_error, sizeof(open_error), "%s (%s)", err, path);
		err = open_error;
	}
	if (err != NULL) {
		*error_r = err;
		sqlite_close(&s->store);
		return NULL;
	}
	return &s->store;
}

int uidstore_sqlite_checkpoint(struct uidstore *st, const char **error_r)
{
	struct uidstore_sqlite *s = sq(st);
	int r = sqlite3_wal_checkpoint_v2(s->db, NULL,
					  SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

	if (r == SQLITE_OK || r == SQLITE_BUSY)
		return 0;
	return fail(s, "checkpoint", error_r);
}

static const struct uidstore_ops sqlite_ops = {
	.begin = sqlite_begin,
	.commit = sqlite_commit,
	.rollback = sqlite_rollback,
	.mailbox_get = sqlite_mailbox_get,
	.mailbox_put = sqlite_mailbox_put,
	.mailbox_list = sqlite_mailbox_list,
	.exceptions_get = sqlite_exceptions_get,
	.exception_put = sqlite_exception_put,
	.records_get = sqlite_records_get,
	.record_put = sqlite_record_put,
	.clear_range = sqlite_clear_range,
	.close = sqlite_close,
};
