/*
 * ram_backend.h - an in-memory backend for the engine's unit tests, with
 * fault injection and a record of what the engine asked for.
 *
 * Messages are borrowed string literals; the backend owns nothing else.
 * Free it with backend_free(&rb->be).
 */
#ifndef POPGATE_RAM_BACKEND_H
#define POPGATE_RAM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define RAM_MAX_MESSAGES 16

struct ram_message {
	const char *data;
	size_t len;
	uint64_t uid;
	uint32_t imap_uid;
	uint64_t listed_size;  /* the size the snapshot reports */
	bool vanished;         /* removed upstream after the snapshot */
};

struct ram_backend {
	struct backend be;

	const char *user;
	const char *pass;
	struct ram_message msgs[RAM_MAX_MESSAGES];
	size_t n_msgs;

	/* fault injection; BACKEND_OK means "behave" */
	enum backend_status login_fail;
	enum backend_status snapshot_fail;
	enum backend_status fetch_fail;    /* before the first octet */
	int64_t fetch_break_after;         /* >= 0: BROKEN after N octets */
	enum backend_status update_fail;
	size_t chunk_size;                 /* 0: the whole message at once */

	/* what the engine did */
	unsigned logins;
	char last_user[256];
	char last_pass[256];
	unsigned fetches;
	uint64_t octets_fetched;
	uint64_t last_first_chunk;
	bool update_called;
	uint32_t expunged[RAM_MAX_MESSAGES];
	size_t n_expunged;
	uint32_t seen[RAM_MAX_MESSAGES];
	size_t n_seen;
	unsigned keepalives;
};

/* Credentials "alice" / "secret", no messages. */
struct ram_backend *ram_backend_new(void);

/* Add a message with upstream UID IMAP_UID (UIDL shows the same). */
void ram_backend_add(struct ram_backend *rb, const char *data,
		     uint32_t imap_uid);

#endif
