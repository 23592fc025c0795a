/*
 * imap_uidmap.h - answers the unique-id store's questions (uidmap.h) from
 * an upstream IMAP session.
 *
 * Fingerprints: one UID FETCH per batch of at most UIDMAP_NEED_BATCH
 * messages, BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)] and
 * BODY.PEEK[TEXT]<0.1024>: about 1.3 KiB per message, never a whole one.
 * Sizes, mode "upstream": RFC822.SIZE plus what the POP3 writer adds at the
 * end (2 for a message without a final line ending), learned from the last
 * two octets, BODY.PEEK[]<size-2.2>, one UID FETCH per distinct size (so a
 * command per new message at worst).  Mode "exact": each message is
 * streamed once (4 MiB ranges) and counted as the POP3 writer will send it,
 * until the time budget is spent; the rest are left for a later login.
 *
 * The session must be logged in with the folder selected.  Blocks on the
 * upstream (the transport's deadlines apply).  After a failure,
 * ctx->imap_error holds the libetpan code, so the caller can tell whether
 * the IMAP session is still usable.
 */
#ifndef POPGATE_IMAP_UIDMAP_H
#define POPGATE_IMAP_UIDMAP_H

#include <stdint.h>

#include <libetpan/libetpan.h>

#include "uidmap.h"

struct imap_uidmap_ctx {
	mailimap *imap;
	enum uidmap_size_mode size_mode;
	/* UIDMAP_SIZE_EXACT: CLOCK_MONOTONIC milliseconds after which no more
	 * messages are measured in this login (0: no limit). */
	uint64_t exact_deadline_ms;
	int imap_error;     /* out: libetpan code of the failed command */
};

/* A uidmap_need_fn; CTX is a struct imap_uidmap_ctx. */
int imap_uidmap_need(void *ctx, struct uidmap_need *items, size_t n,
		     const char **error_r);

/*
 * Give the snapshot MSGS[0..N-1] (ascending UID, RFC822.SIZE) of the folder
 * selected in IMAP its unique-ids and served sizes from the open store ST
 * (the caller's, who closes it as soon as this returns: an idle session
 * keeps no store); see uidmap_assign() for MSGS.  Exact sizes are measured
 * for at most BUDGET_MS (0: no limit).  Returns 0, or -1 with *error_r set
 * (valid while ST is open) and *imap_error_r the libetpan code if the
 * upstream failed (MAILIMAP_NO_ERROR if the store did).
 */
int imap_uidmap_snapshot(mailimap *imap, struct uidstore *st,
			 const struct uidstore_key *key, uint32_t uidvalidity,
			 struct mail_entry *msgs, size_t n,
			 enum uidmap_size_mode mode, uint64_t budget_ms,
			 int *imap_error_r, const char **error_r);

#endif
