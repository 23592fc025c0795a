/*
 * uidmap.h - decimal unique-ids that survive UIDVALIDITY changes.
 *
 * Per mailbox (upstream, user, folder), the first UIDVALIDITY epoch serves
 * the IMAP UID itself as the id.  A later epoch serves offset + UID, the
 * offset putting every such id above every id ever issued (the high-water
 * mark), except for messages re-identified by a unique fingerprint match,
 * which keep their old ids (stored as exception rows).  Ids never exceed
 * 2^63-1 and are never reused, not even after uidmap_forget().
 *
 * A login of a known mailbox in the same epoch reads the mailbox row and
 * its exception rows and writes nothing unless there is news: new messages
 * (their fingerprints and size corrections are recorded), vanished ones
 * (their records are dropped), or sizes still to compute.  The caller
 * supplies what only the upstream knows through a callback, asked only for
 * the messages that need it.  Pure logic over uidstore.h: no I/O of its own.
 */
#ifndef POPGATE_UIDMAP_H
#define POPGATE_UIDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "fingerprint.h"
#include "uidstore.h"

/* How the size served for a message is learned (popgate.conf store.size_mode). */
enum uidmap_size_mode {
	UIDMAP_SIZE_UPSTREAM, /* RFC822.SIZE, corrected for a missing final
				 line ending (default) */
	UIDMAP_SIZE_EXACT,    /* count what is delivered, once per message,
				 for servers whose RFC822.SIZE is estimated */
};

/* The callback is given at most this many messages at a time, and new
 * messages are committed in steps of this size (a crash loses one step). */
#define UIDMAP_NEED_BATCH 1000

/* One question to the caller about one message. */
struct uidmap_need {
	uint32_t imap_uid;
	uint64_t upstream_size;       /* RFC822.SIZE */
	bool want_fingerprint;
	bool want_size;
	/* answers */
	unsigned char fingerprint[FINGERPRINT_LEN]; /* if want_fingerprint */
	bool size_known;  /* if want_size; false: not computed this time
			     (e.g. exact-size budget spent): asked again at a
			     later login, upstream_size is served meanwhile */
	uint64_t size;    /* octets served, if size_known */
};

/*
 * Answer ITEMS[0..N-1] (N <= UIDMAP_NEED_BATCH), e.g. with one pipelined
 * UID FETCH.  Called with no store transaction open.  Returns 0, or -1 with
 * *error_r set (static or owned by CTX): uidmap_assign() then fails.
 */
typedef int uidmap_need_fn(void *ctx, struct uidmap_need *items, size_t n,
			   const char **error_r);

/*
 * Map the snapshot MSGS[0..N-1] of folder KEY at UIDVALIDITY.  On entry
 * MSGS is in strictly ascending imap_uid with size = RFC822.SIZE; on
 * success each uid is its unique-id, size is the size to serve, and the
 * array is in strictly ascending uid.  Returns 0, or -1 with *error_r set
 * (the store is unavailable, the callback failed, the id space is spent):
 * the session must then fail rather than invent ids; MSGS is then
 * unspecified.  Blocks on the store and inside NEED.
 */
int uidmap_assign(struct uidstore *st, const struct uidstore_key *key,
		  uint32_t uidvalidity, struct mail_entry *msgs, size_t n,
		  uidmap_need_fn *need, void *need_ctx, const char **error_r);

/*
 * Forget the mapping of USER's mailboxes (only those on UPSTREAM and in
 * FOLDER when not NULL) but keep their high-water marks: the next login
 * numbers every message above every id issued before.  *count_r gets the
 * number of mailboxes forgotten.  Returns 0 or -1 with *error_r.
 */
int uidmap_forget(struct uidstore *st, const char *user, const char *upstream,
		  const char *folder, size_t *count_r, const char **error_r);

/*
 * For a change of store.size_mode to "exact": mark the known messages of
 * USER's mailboxes (NULL: every user's; UPSTREAM and FOLDER filter as for
 * uidmap_forget) whose served size is the upstream's as still to be
 * learned, so that the next logins ask for their sizes (under "exact",
 * measured within the per-login budget).  Ids are not touched.
 * *count_r gets the number of messages marked.  0 or -1 with *error_r.
 */
int uidmap_measure_again(struct uidstore *st, const char *user,
			 const char *upstream, const char *folder,
			 size_t *count_r, const char **error_r);

#endif
