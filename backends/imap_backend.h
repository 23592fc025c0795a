/*
 * imap_backend.h - the backend over an upstream IMAP server (libetpan).
 *
 * libetpan only formats commands and parses responses; every byte goes
 * through popgate's own transport (imap_transport.h: OpenSSL 3, poll(),
 * certificate and host name verification, deadlines).  The connection is
 * opened lazily by the first login() call.
 *
 * Status mapping: unreachable, timeout, BYE -> BACKEND_TEMP; refused
 * credentials -> BACKEND_AUTH; TLS verification failure, PREAUTH,
 * LOGINDISABLED, missing STARTTLS, a folder that cannot be selected ->
 * BACKEND_PERM.  Messages are read with BODY.PEEK, so nothing is marked
 * \Seen before update().
 *
 * With set->reconnect, a connection lost after the snapshot is made again
 * (login, SELECT, the same UIDVALIDITY) by the next fetch(), update() or
 * keepalive(), and a command none of whose octets reached the sink is
 * repeated on it; at most 3 times per session.
 *
 * update() removes messages only with UID EXPUNGE (UIDPLUS).  A server
 * without UIDPLUS gets the \Deleted flags but never a bare EXPUNGE (that
 * would also remove messages other clients flagged): update() then fails
 * with BACKEND_PERM, "server lacks UIDPLUS: N messages flagged \Deleted but
 * not removed", and the messages stay until another client expunges.
 */
#ifndef POPGATE_IMAP_BACKEND_H
#define POPGATE_IMAP_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "backend.h"
#include "uidmap.h"

enum upstream_tls {
	UPSTREAM_TLS_NONE,     /* plain IMAP (loopback, test rigs) */
	UPSTREAM_TLS_STARTTLS, /* plain connect, then STARTTLS (required) */
	UPSTREAM_TLS_IMPLICIT, /* TLS from the first octet (port 993) */
};

struct upstream_settings {
	const char *host;
	unsigned port;
	enum upstream_tls tls;
	const char *ca_file;      /* NULL: the system trust store */
	bool verify;              /* chain + host name; default true */
	const char *server_name;  /* SNI and name to verify; NULL: host */
	/* From imap_transport_ctx_new(ca_file, verify), borrowed: built once
	 * (the daemon's master) for every connection; NULL: each connection
	 * builds its own. */
	SSL_CTX *tls_ctx;
	const char *folder;       /* UTF-8; default "INBOX" */
	/* The folder as IMAP names it (imap_mailbox_encode()); NULL: the
	 * same as folder. */
	const char *folder_mutf7;
	uint64_t connect_timeout_ms;
	uint64_t command_timeout_ms;
	bool forward_client_ip;   /* send IMAP ID x-originating-ip/port */
	/* After a connection lost in TRANSACTION, log in again and go on
	 * (the password stays in the session's memory); default true. */
	bool reconnect;
	/* Unique-id store file (uidmap.h, issue 5); NULL: serve IMAP UIDs. */
	const char *uid_store;
	enum uidmap_size_mode size_mode;  /* default UIDMAP_SIZE_UPSTREAM */
	uint64_t exact_budget_ms;         /* per login; 0: no limit */
};

/* Where the POP3 client connects from, for IMAP ID and for logs. */
struct client_origin {
	const char *ip;   /* numeric address */
	unsigned port;
};

/*
 * Create a backend for one session.  SET and ORIGIN are borrowed and must
 * outlive the backend.  Returns NULL only on allocation failure; nothing is
 * connected until login().  Free with backend_free().
 */
struct backend *imap_backend_new(const struct upstream_settings *set,
				 const struct client_origin *origin);

#endif
