/*
 * backend.h - what the POP3 engine needs from an upstream mail store.
 *
 * One backend serves one POP3 session, in one process, synchronously: every
 * call blocks until the upstream has answered or a deadline has passed.
 * Functions return 0 on success and -1 on failure with *err filled in; the
 * status tells the engine which POP3 response code applies.  Backends print
 * nothing themselves except through log.h, and never log credentials.
 *
 * Implementations: imap_backend.c (IMAP over libetpan), and a RAM backend in
 * the unit tests.
 */
#ifndef POPGATE_BACKEND_H
#define POPGATE_BACKEND_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum backend_status {
	BACKEND_OK = 0,
	BACKEND_AUTH,       /* credentials refused: -ERR [AUTH] */
	BACKEND_TEMP,       /* transient (unreachable, timeout, BYE): -ERR [SYS/TEMP] */
	BACKEND_PERM,       /* needs an administrator (TLS verification, no
			       such folder, LOGINDISABLED): -ERR [SYS/PERM] */
	BACKEND_IN_USE,     /* the mailbox is locked upstream: -ERR [IN-USE] */
	BACKEND_NO_MESSAGE, /* the message is gone upstream: plain -ERR */
	BACKEND_BROKEN,     /* failed after data was delivered: the upstream
			       session is unusable and a response in progress
			       cannot be completed */
	BACKEND_SINK,       /* the sink returned -1 (client write failed) */
};

struct backend_error {
	enum backend_status status;
	char text[200]; /* safe to show a client: no secrets, no CR/LF */
};

/* Format FMT/AP into BUF (truncated to fit) with CR and LF turned into
 * spaces, so that the text can end up on a protocol line. */
void format_one_line(char *buf, size_t size, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* Fill *err (printf-style text, truncated to fit) and return -1. */
int backend_fail(struct backend_error *err, enum backend_status status,
		 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct mail_entry {
	uint64_t uid;   /* decimal unique-id served by UIDL (issue: uid store) */
	uint32_t imap_uid; /* the upstream UID used to fetch and delete it */
	uint64_t size;  /* octets RETR will deliver before dot-stuffing */
};

/* Message list taken at login; ascending uid.  Owned by the snapshot,
 * released with mail_snapshot_clear(). */
struct mail_snapshot {
	uint32_t uidvalidity;
	size_t count;
	struct mail_entry *msgs;
};

void mail_snapshot_clear(struct mail_snapshot *snap);

/*
 * Receives the octets of a message exactly as the upstream sends them, in
 * order, in pieces of any size.  Returns 0 to continue, 1 when it has all it
 * wants (the backend then stops fetching and returns success), or -1 when it
 * failed (the backend stops and returns BACKEND_SINK).
 */
typedef int backend_sink_fn(void *ctx, const char *data, size_t len);

struct backend;

struct backend_ops {
	/* Connect if needed and authenticate.  USER and PASS have already been
	 * checked for CR, LF and NUL.  Called again after a failed attempt. */
	int (*login)(struct backend *be, const char *user, const char *pass,
		     struct backend_error *err);
	/* Open the folder and list its messages into *snap (which the caller
	 * passes zeroed and clears later).  Called once, after login. */
	int (*snapshot)(struct backend *be, struct mail_snapshot *snap,
			struct backend_error *err);
	/* Stream message ENTRY to SINK from its first octet.  FIRST_CHUNK is a
	 * hint of how many octets the sink probably needs (small for TOP) so the
	 * backend can avoid fetching far more than that.  If the message has
	 * vanished and no octet was delivered: BACKEND_NO_MESSAGE.  If the
	 * upstream fails after the first octet: BACKEND_BROKEN. */
	int (*fetch)(struct backend *be, const struct mail_entry *entry,
		     uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
		     struct backend_error *err);
	/* The UPDATE state: mark SEEN (may be 0 entries) \Seen, then remove
	 * exactly the EXPUNGE entries and nothing else.  On failure part-way
	 * the text says what was and was not done. */
	int (*update)(struct backend *be,
		      const struct mail_entry *const *expunge, size_t n_expunge,
		      const struct mail_entry *const *seen, size_t n_seen,
		      struct backend_error *err);
	/* Keep an idle upstream session alive (e.g. IMAP NOOP). */
	int (*keepalive)(struct backend *be, struct backend_error *err);
	/* Log out politely if connected, and free everything. */
	void (*free)(struct backend *be);
};

struct backend {
	const struct backend_ops *ops;
};

static inline int backend_login(struct backend *be, const char *user,
				const char *pass, struct backend_error *err)
{ return be->ops->login(be, user, pass, err); }

static inline int backend_snapshot(struct backend *be,
				   struct mail_snapshot *snap,
				   struct backend_error *err)
{ return be->ops->snapshot(be, snap, err); }

static inline int backend_fetch(struct backend *be,
				const struct mail_entry *entry,
				uint64_t first_chunk, backend_sink_fn *sink,
				void *ctx, struct backend_error *err)
{ return be->ops->fetch(be, entry, first_chunk, sink, ctx, err); }

static inline int backend_update(struct backend *be,
				 const struct mail_entry *const *expunge,
				 size_t n_expunge,
				 const struct mail_entry *const *seen,
				 size_t n_seen, struct backend_error *err)
{ return be->ops->update(be, expunge, n_expunge, seen, n_seen, err); }

static inline int backend_keepalive(struct backend *be,
				    struct backend_error *err)
{ return be->ops->keepalive(be, err); }

static inline void backend_free(struct backend *be)
{ if (be != NULL) be->ops->free(be); }

#endif
