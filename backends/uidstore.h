/*
 * uidstore.h - durable storage behind the unique-id mapping (uidmap.h).
 *
 * A store keeps, per mailbox (upstream, user, folder): one mailbox row (the
 * current UIDVALIDITY epoch, its id offset, the last UID recorded, the
 * high-water mark of ids ever issued), one record per known message (UID,
 * id, fingerprint; read only when UIDVALIDITY changes or messages vanished)
 * and exception rows (an explicit id or a size correction; read at every
 * login).  The store holds no mapping logic: uidmap.c decides, the store
 * keeps.  Several processes may use one store at once; consistency comes
 * from transactions: every read and write happens between begin() and
 * commit()/rollback(), and a write transaction excludes other writers.
 *
 * All functions block (file I/O, waiting for another writer's lock up to the
 * store's busy timeout).  They return 0 (or a count) on success and -1 on
 * failure with *error_r set to a static or store-owned string valid until
 * the next call on the same store; nothing is printed.  A struct uidstore
 * belongs to one thread; processes and threads share a store through its
 * file, each with its own struct uidstore.  Implementations:
 * uidstore_sqlite.c; a RAM store in the unit tests; PostgreSQL later.
 */
#ifndef POPGATE_UIDSTORE_H
#define POPGATE_UIDSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fingerprint.h"

/* The largest id: every client and database holds it as signed 64-bit. */
#define UIDSTORE_ID_MAX ((uint64_t)INT64_MAX)

struct uidstore_key {
	const char *upstream; /* e.g. "imap.example.com:993" */
	const char *user;
	const char *folder;
};

struct uidstore_mailbox {
	int64_t mailbox_id;   /* 0: not stored yet (mailbox_put assigns one) */
	uint32_t uidvalidity; /* 0: no epoch (new, or mapping forgotten) */
	uint64_t offset;      /* id = offset + UID unless an exception says */
	uint32_t last_uid;    /* highest UID recorded in this epoch */
	uint64_t known;       /* records with UID <= last_uid (present ones) */
	uint64_t high_water;  /* highest id ever issued in this mailbox */
	uint64_t version;     /* bumped by every write: optimistic checks */
};

struct uidstore_exception {
	uint32_t imap_uid;
	uint64_t id;          /* 0: the default offset + UID */
	bool has_size;
	uint64_t size;        /* octets served, when has_size */
	bool size_pending;    /* exact size still to be computed */
};

struct uidstore_record {
	uint32_t imap_uid;
	uint64_t id;
	unsigned char fingerprint[FINGERPRINT_LEN];
};

/* For listings: called once per mailbox; a non-zero return stops. */
typedef int uidstore_mailbox_fn(void *ctx, const struct uidstore_key *key,
				const struct uidstore_mailbox *mb);

struct uidstore;

struct uidstore_ops {
	/* Start a transaction; WRITE takes the writer lock at once (waiting
	 * up to the busy timeout), so what is read inside stays true. */
	int (*begin)(struct uidstore *st, bool write, const char **error_r);
	int (*commit)(struct uidstore *st, const char **error_r);
	void (*rollback)(struct uidstore *st);

	/* Returns 1 and fills *mb_r, 0 if the mailbox is unknown, or -1. */
	int (*mailbox_get)(struct uidstore *st, const struct uidstore_key *key,
			   struct uidstore_mailbox *mb_r, const char **error_r);
	/* Insert (mailbox_id 0: assigns mb->mailbox_id) or update a row. */
	int (*mailbox_put)(struct uidstore *st, const struct uidstore_key *key,
			   struct uidstore_mailbox *mb, const char **error_r);
	/* Every mailbox of USER (NULL: all), ordered by upstream, folder. */
	int (*mailbox_list)(struct uidstore *st, const char *user,
			    uidstore_mailbox_fn *fn, void *ctx,
			    const char **error_r);

	/* Exception rows in ascending UID; *list_r is malloc'ed (caller
	 * frees; NULL when none). */
	int (*exceptions_get)(struct uidstore *st, int64_t mailbox_id,
			      struct uidstore_exception **list_r, size_t *n_r,
			      const char **error_r);
	/* Insert or replace the row of exc->imap_uid. */
	int (*exception_put)(struct uidstore *st, int64_t mailbox_id,
			     const struct uidstore_exception *exc,
			     const char **error_r);

	/* Message records in ascending UID; *list_r as for exceptions. */
	int (*records_get)(struct uidstore *st, int64_t mailbox_id,
			   struct uidstore_record **list_r, size_t *n_r,
			   const char **error_r);
	/* Insert a new record; an existing UID or id is an error. */
	int (*record_put)(struct uidstore *st, int64_t mailbox_id,
			  const struct uidstore_record *rec,
			  const char **error_r);

	/* Delete records and exceptions with FIRST <= UID <= LAST. */
	int (*clear_range)(struct uidstore *st, int64_t mailbox_id,
			   uint32_t first, uint32_t last, const char **error_r);

	/* Roll back anything open and free the store. */
	void (*close)(struct uidstore *st);
};

struct uidstore {
	const struct uidstore_ops *ops;
};

/* Close ST (NULL is fine). */
static inline void uidstore_close(struct uidstore *st)
{ if (st != NULL) st->ops->close(st); }

#endif
