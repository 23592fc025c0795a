/*
 * imap_internal.h - what the files of the IMAP backend share: the backend
 * structure, the error mapping and the backend_ops each file implements.
 * Not for use outside backends/imap_{backend,login,listing,fetch,update}.c.
 *
 * Every function here runs on the session's own process and blocks on the
 * upstream, each read and write bounded by the transport's deadlines.
 */
#ifndef POPGATE_IMAP_INTERNAL_H
#define POPGATE_IMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "imap_backend.h"
#include "imap_transport.h"

struct prefetch_cache;

struct imap_backend {
	struct backend be; /* first: backend_* casts back to us */
	const struct upstream_settings *set;
	const struct client_origin *origin;
	mailimap *imap;            /* NULL while disconnected */
	struct imap_transport *tr; /* owned by imap's stream */
	bool authenticated;
	bool warned_no_verify;
	/* The tag of an ID sent with the login and not answered yet: its
	 * answer is read before the login's.  "" when there is none. */
	char id_tag[16];
	/* The logged-in user, for log lines and the unique-id store's key:
	 * user names have no length limit (X 2.1.2), so it is allocated. */
	char *user;
	/* The snapshot handed out (owned by the engine, which keeps it for
	 * the session): where the messages after a RETR are found. */
	const struct mail_entry *snap_msgs;
	size_t snap_count;
	struct prefetch_cache *cache; /* bodies already read; or NULL */
	/* The message after the last one fetched: a TOP of it is a client
	 * going through the messages in order, and reads the next ones'
	 * heads ahead. */
	uint32_t fetch_next_uid;
	/* What imap_resume() needs after a lost connection: the password
	 * (only with set->reconnect; cleansed when freed), the snapshot's
	 * UIDVALIDITY, and how often it has reconnected. */
	char *pass;
	bool have_snapshot;
	bool folder_reset;  /* UIDVALIDITY moved: the snapshot names nothing */
	uint32_t uidvalidity;
	unsigned resumes;
};

/* --- imap_backend.c: error mapping ---------------------------------------- */

/* The configured folder, or "INBOX": in UTF-8 for logs and the store's
 * key, and in modified UTF-7 for IMAP commands. */
const char *folder_name(const struct imap_backend *ib);
const char *folder_imap_name(const struct imap_backend *ib);

/* S as an IMAP quoted string, escapes included, NUL-terminated in BUF of
 * SIZE octets.  False when it does not fit or S holds what a quoted string
 * cannot (8-bit octets, controls): a literal's job. */
bool imap_quote(const char *s, char *buf, size_t size);

/* Close without LOGOUT and forget the login; a no-op while disconnected.
 * Afterwards ib->imap is NULL and the next login() reconnects. */
void drop_connection(struct imap_backend *ib);

/* Whether libetpan code R leaves the session unusable (stream, parse,
 * protocol, BYE, memory); such an error must end in session_failed(). */
bool is_session_error(int r);

/* Log a key=value upstream_error line for operation OP; ERROR is the
 * server's or transport's text, for the log only. */
void log_upstream_error(const struct imap_backend *ib, const char *op,
			const char *error);

/* The server's text of the last tagged response, for logs only; "" when
 * there is none.  Borrowed from libetpan until the next command. */
const char *server_text(const struct imap_backend *ib);

/* The response code of that response when libetpan knows no meaning for
 * it (RFC 5530's UNAVAILABLE, INUSE...), as the server spelled it; "" when
 * there is none.  Borrowed likewise. */
const char *server_code(const struct imap_backend *ib);

/* Log, drop the session and fail with STATUS after libetpan code R broke
 * operation OP.  Always returns -1 with ERR set to a client-safe reason. */
int session_failed(struct imap_backend *ib, const char *op, int r,
		   enum backend_status status, struct backend_error *err);

/* --- the backend_ops (backend.h), one file each ------------------------- */

/* imap_login.c: connect on first use (or after a drop), then authenticate;
 * a connection the server closed since the last attempt is retried once. */
int imap_login(struct backend *be, const char *user, const char *pass,
	       struct backend_error *err);

/* The server's capabilities after login, asked for (CAPABILITY) only where
 * the login's OK did not carry them; a libetpan code. */
int imap_learn_capabilities(struct imap_backend *ib);

/*
 * Make sure a session that has its snapshot is connected: after the
 * connection was lost, connect and log in again with the session's
 * credentials and SELECT the folder, which must have kept the snapshot's
 * UIDVALIDITY (else the snapshot's UIDs could name other messages).  At
 * most IMAP_RESUME_MAX times per session.  0 when connected, or -1 with
 * ERR set (BACKEND_TEMP).
 */
#define IMAP_RESUME_MAX 3
int imap_resume(struct imap_backend *ib, struct backend_error *err);

/* Whether imap_resume() would try to reconnect a lost connection. */
bool imap_resumable(const struct imap_backend *ib);

/* Whether an attempt that failed with ERR may be repeated after
 * imap_resume(): session_failed() dropped the connection, with
 * BACKEND_TEMP (not BROKEN: nothing had reached the client), and a resume
 * is allowed. */
bool imap_retry_possible(const struct imap_backend *ib,
			 const struct backend_error *err);

/* imap_listing.c: SELECT the folder and list it into SNAP; sets
 * ib->snap_msgs (owned by the engine) for the read-ahead. */
int imap_snapshot(struct backend *be, struct mail_snapshot *snap,
		  struct backend_error *err);

/* imap_listing.c, for imap_resume(): SELECT the folder again on a new
 * connection.  0 when it is still the one the snapshot was taken of (the
 * same UIDVALIDITY), or -1 with ERR set (BACKEND_TEMP) and the connection
 * dropped; a changed UIDVALIDITY also sets ib->folder_reset. */
int imap_reselect(struct imap_backend *ib, struct backend_error *err);

/* imap_fetch.c: stream ENTRY to SINK, from the read-ahead cache, in one
 * BODY.PEEK[] (FIRST_CHUNK >= its size: a RETR) or in ranges (TOP), going
 * on after a lost connection through imap_resume(); never sets \Seen. */
int imap_fetch(struct backend *be, const struct mail_entry *entry,
	       uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
	       struct backend_error *err);

/* imap_fetch.c: free the read-ahead cache and its bodies; NULL is fine. */
void prefetch_cache_free(struct prefetch_cache *pc);

/* imap_update.c: \Seen, then \Deleted and UID EXPUNGE (never a bare
 * EXPUNGE); a failure's text says what was done before it. */
int imap_update(struct backend *be,
		const struct mail_entry *const *expunge, size_t n_expunge,
		const struct mail_entry *const *seen, size_t n_seen,
		struct backend_error *err);

#endif
