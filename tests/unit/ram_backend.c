/*
 * ram_backend.c - the unit tests' backend (see ram_backend.h).
 */
#include <stdlib.h>
#include <string.h>

#include "ram_backend.h"

static struct ram_backend *ram(struct backend *be)
{
	return (struct ram_backend *)be;
}

static void copy_text(char *dst, size_t size, const char *src)
{
	strncpy(dst, src, size - 1);
	dst[size - 1] = '\0';
}

static int ram_login(struct backend *be, const char *user, const char *pass,
		     struct backend_error *err)
{
	struct ram_backend *rb = ram(be);

	rb->logins++;
	copy_text(rb->last_user, sizeof(rb->last_user), user);
	copy_text(rb->last_pass, sizeof(rb->last_pass), pass);
	if (rb->login_fail != BACKEND_OK)
		return backend_fail(err, rb->login_fail, "Injected failure");
	if (strcmp(user, rb->user) != 0 || strcmp(pass, rb->pass) != 0)
		return backend_fail(err, BACKEND_AUTH, "Authentication failed");
	return 0;
}

static int ram_snapshot(struct backend *be, struct mail_snapshot *snap,
			struct backend_error *err)
{
	struct ram_backend *rb = ram(be);

	if (rb->snapshot_fail != BACKEND_OK)
		return backend_fail(err, rb->snapshot_fail, "No snapshot");
	snap->uidvalidity = 1;
	snap->count = rb->n_msgs;
	snap->msgs = calloc(rb->n_msgs + 1, sizeof(*snap->msgs));
	if (snap->msgs == NULL)
		return backend_fail(err, BACKEND_TEMP, "Out of memory");
	for (size_t i = 0; i < rb->n_msgs; i++) {
		snap->msgs[i].uid = rb->msgs[i].uid;
		snap->msgs[i].imap_uid = rb->msgs[i].imap_uid;
		snap->msgs[i].size = rb->msgs[i].listed_size;
	}
	return 0;
}

static const struct ram_message *find(struct ram_backend *rb, uint32_t uid)
{
	for (size_t i = 0; i < rb->n_msgs; i++) {
		if (rb->msgs[i].imap_uid == uid)
			return &rb->msgs[i];
	}
	return NULL;
}

static int ram_fetch(struct backend *be, const struct mail_entry *entry,
		     uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
		     struct backend_error *err)
{
	struct ram_backend *rb = ram(be);
	const struct ram_message *m = find(rb, entry->imap_uid);
	size_t off = 0;

	rb->fetches++;
	rb->last_first_chunk = first_chunk;
	if (m == NULL || m->vanished)
		return backend_fail(err, BACKEND_NO_MESSAGE, "Gone");
	if (rb->fetch_fail != BACKEND_OK)
		return backend_fail(err, rb->fetch_fail, "Injected failure");
	while (off < m->len) {
		size_t n = m->len - off;
		int ret;

		if (rb->chunk_size > 0 && n > rb->chunk_size)
			n = rb->chunk_size;
		if (rb->fetch_break_after >= 0) {
			if (off >= (uint64_t)rb->fetch_break_after)
				return backend_fail(err, BACKEND_BROKEN,
						    "Connection lost");
			if (off + n > (uint64_t)rb->fetch_break_after)
				n = (size_t)rb->fetch_break_after - off;
		}
		rb->octets_fetched += n;
		ret = sink(ctx, m->data + off, n);
		if (ret < 0)
			return backend_fail(err, BACKEND_SINK, "Client gone");
		off += n;
		if (ret > 0)
			return 0;
	}
	if (rb->fetch_break_after >= 0 && off >= (uint64_t)rb->fetch_break_after)
		return backend_fail(err, BACKEND_BROKEN, "Connection lost");
	return 0;
}

static int ram_update(struct backend *be,
		      const struct mail_entry *const *expunge, size_t n_expunge,
		      const struct mail_entry *const *seen, size_t n_seen,
		      struct backend_error *err)
{
	struct ram_backend *rb = ram(be);

	rb->update_called = true;
	for (size_t i = 0; i < n_expunge && i < RAM_MAX_MESSAGES; i++)
		rb->expunged[i] = expunge[i]->imap_uid;
	rb->n_expunged = n_expunge;
	for (size_t i = 0; i < n_seen && i < RAM_MAX_MESSAGES; i++)
		rb->seen[i] = seen[i]->imap_uid;
	rb->n_seen = n_seen;
	if (rb->update_fail != BACKEND_OK)
		return backend_fail(err, rb->update_fail,
				    "Some deleted messages were not removed");
	return 0;
}

static int ram_keepalive(struct backend *be, struct backend_error *err)
{
	(void)err;
	ram(be)->keepalives++;
	return 0;
}

static void ram_free(struct backend *be)
{
	free(ram(be));
}

static const struct backend_ops ram_ops = {
	.login = ram_login,
	.snapshot = ram_snapshot,
	.fetch = ram_fetch,
	.update = ram_update,
	.keepalive = ram_keepalive,
	.free = ram_free,
};

struct ram_backend *ram_backend_new(void)
{
	struct ram_backend *rb = calloc(1, sizeof(*rb));

	if (rb == NULL)
		return NULL;
	rb->be.ops = &ram_ops;
	rb->user = "alice";
	rb->pass = "secret";
	rb->fetch_break_after = -1;
	return rb;
}

void ram_backend_add(struct ram_backend *rb, const char *data,
		     uint32_t imap_uid)
{
	struct ram_message *m = &rb->msgs[rb->n_msgs++];

	m->data = data;
	m->len = strlen(data);
	m->uid = imap_uid;
	m->imap_uid = imap_uid;
	m->listed_size = m->len;
}
