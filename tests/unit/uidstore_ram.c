/*
 * uidstore_ram.c - the in-memory uidstore of the unit tests.
 */
#include <stdlib.h>
#include <string.h>

#include "uidstore_ram.h"

struct ram_mailbox {
	char *upstream, *user, *folder;
	struct uidstore_mailbox mb;
};

struct ram_record {
	int64_t mailbox_id;
	struct uidstore_record rec;
};

struct ram_exception {
	int64_t mailbox_id;
	struct uidstore_exception exc;
};

struct ram_state {
	struct ram_mailbox *mbs;
	size_t n_mbs;
	struct ram_record *recs;
	size_t n_recs;
	struct ram_exception *excs;
	size_t n_excs;
	int64_t next_id;
};

struct uidstore_ram {
	struct uidstore store;
	struct ram_state cur, saved;
	bool in_tx, write_tx, wrote;
	size_t fail_countdown;
	struct uidstore_ram_stats stats;
};

static struct uidstore_ram *ram(struct uidstore *st)
{
	return (struct uidstore_ram *)st;
}

static void state_free(struct ram_state *s)
{
	for (size_t i = 0; i < s->n_mbs; i++) {
		free(s->mbs[i].upstream);
		free(s->mbs[i].user);
		free(s->mbs[i].folder);
	}
	free(s->mbs);
	free(s->recs);
	free(s->excs);
	memset(s, 0, sizeof(*s));
}

static void *dup_array(const void *p, size_t n, size_t size)
{
	void *q = malloc(n * size + 1);

	if (q == NULL)
		abort();
	if (n > 0)
		memcpy(q, p, n * size);
	return q;
}

static void state_copy(struct ram_state *to, const struct ram_state *from)
{
	*to = *from;
	to->mbs = dup_array(from->mbs, from->n_mbs, sizeof(*from->mbs));
	for (size_t i = 0; i < from->n_mbs; i++) {
		to->mbs[i].upstream = strdup(from->mbs[i].upstream);
		to->mbs[i].user = strdup(from->mbs[i].user);
		to->mbs[i].folder = strdup(from->mbs[i].folder);
	}
	to->recs = dup_array(from->recs, from->n_recs, sizeof(*from->recs));
	to->excs = dup_array(from->excs, from->n_excs, sizeof(*from->excs));
}

static int write_op(struct uidstore_ram *r, const char **error_r)
{
	if (!r->in_tx || !r->write_tx) {
		*error_r = "ram store: write outside a write transaction";
		return -1;
	}
	r->stats.writes++;
	if (r->fail_countdown > 0 && --r->fail_countdown == 0) {
		*error_r = "ram store: injected write failure";
		return -1;
	}
	r->wrote = true;
	return 0;
}

static int ram_begin(struct uidstore *st, bool write, const char **error_r)
{
	struct uidstore_ram *r = ram(st);

	if (r->in_tx) {
		*error_r = "ram store: nested transaction";
		return -1;
	}
	r->in_tx = true;
	r->write_tx = write;
	r->wrote = false;
	state_copy(&r->saved, &r->cur);
	return 0;
}

static int ram_commit(struct uidstore *st, const char **error_r)
{
	struct uidstore_ram *r = ram(st);

	if (!r->in_tx) {
		*error_r = "ram store: commit without begin";
		return -1;
	}
	if (r->wrote)
		r->stats.write_transactions++;
	state_free(&r->saved);
	r->in_tx = false;
	return 0;
}

static void ram_rollback(struct uidstore *st)
{
	struct uidstore_ram *r = ram(st);

	if (!r->in_tx)
		return;
	state_free(&r->cur);
	r->cur = r->saved;
	memset(&r->saved, 0, sizeof(r->saved));
	r->in_tx = false;
}

static struct ram_mailbox *find_mailbox(struct ram_state *s,
					const struct uidstore_key *key)
{
	for (size_t i = 0; i < s->n_mbs; i++) {
		if (strcmp(s->mbs[i].upstream, key->upstream) == 0 &&
		    strcmp(s->mbs[i].user, key->user) == 0 &&
		    strcmp(s->mbs[i].folder, key->folder) == 0)
			return &s->mbs[i];
	}
	return NULL;
}

static int ram_mailbox_get(struct uidstore *st, const struct uidstore_key *key,
			   struct uidstore_mailbox *mb_r, const char **error_r)
{
	struct ram_mailbox *m = find_mailbox(&ram(st)->cur, key);

	(void)error_r;
	if (m == NULL)
		return 0;
	*mb_r = m->mb;
	return 1;
}

static int ram_mailbox_put(struct uidstore *st, const struct uidstore_key *key,
			   struct uidstore_mailbox *mb, const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;

	if (write_op(r, error_r) < 0)
		return -1;
	if (mb->mailbox_id == 0) {
		struct ram_mailbox *m;

		s->mbs = realloc(s->mbs, (s->n_mbs + 1) * sizeof(*s->mbs));
		if (s->mbs == NULL)
			abort();
		m = &s->mbs[s->n_mbs++];
		m->upstream = strdup(key->upstream);
		m->user = strdup(key->user);
		m->folder = strdup(key->folder);
		mb->mailbox_id = ++s->next_id;
		m->mb = *mb;
		return 0;
	}
	for (size_t i = 0; i < s->n_mbs; i++) {
		if (s->mbs[i].mb.mailbox_id == mb->mailbox_id) {
			s->mbs[i].mb = *mb;
			return 0;
		}
	}
	*error_r = "ram store: no such mailbox";
	return -1;
}

static int ram_mailbox_list(struct uidstore *st, const char *user,
			    uidstore_mailbox_fn *fn, void *ctx,
			    const char **error_r)
{
	struct ram_state *s = &ram(st)->cur;

	(void)error_r;
	for (size_t i = 0; i < s->n_mbs; i++) {
		struct uidstore_key key = { s->mbs[i].upstream, s->mbs[i].user,
					    s->mbs[i].folder };

		if (user != NULL && strcmp(user, key.user) != 0)
			continue;
		if (fn(ctx, &key, &s->mbs[i].mb) != 0)
			break;
	}
	return 0;
}

static int cmp_exc(const void *a, const void *b)
{
	const struct uidstore_exception *x = a, *y = b;

	return x->imap_uid < y->imap_uid ? -1 : x->imap_uid > y->imap_uid;
}

static int cmp_rec(const void *a, const void *b)
{
	const struct uidstore_record *x = a, *y = b;

	return x->imap_uid < y->imap_uid ? -1 : x->imap_uid > y->imap_uid;
}

static int ram_exceptions_get(struct uidstore *st, int64_t mailbox_id,
			      struct uidstore_exception **list_r, size_t *n_r,
			      const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;
	struct uidstore_exception *list = malloc(s->n_excs * sizeof(*list) + 1);
	size_t n = 0;

	(void)error_r;
	if (list == NULL)
		abort();
	r->stats.exception_reads++;
	for (size_t i = 0; i < s->n_excs; i++) {
		if (s->excs[i].mailbox_id == mailbox_id)
			list[n++] = s->excs[i].exc;
	}
	qsort(list, n, sizeof(*list), cmp_exc);
	*list_r = list;
	*n_r = n;
	return 0;
}

static int ram_exception_put(struct uidstore *st, int64_t mailbox_id,
			     const struct uidstore_exception *exc,
			     const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;

	if (write_op(r, error_r) < 0)
		return -1;
	for (size_t i = 0; i < s->n_excs; i++) {
		if (s->excs[i].mailbox_id == mailbox_id &&
		    s->excs[i].exc.imap_uid == exc->imap_uid) {
			s->excs[i].exc = *exc;
			return 0;
		}
	}
	s->excs = realloc(s->excs, (s->n_excs + 1) * sizeof(*s->excs));
	if (s->excs == NULL)
		abort();
	s->excs[s->n_excs].mailbox_id = mailbox_id;
	s->excs[s->n_excs++].exc = *exc;
	return 0;
}

static int ram_records_get(struct uidstore *st, int64_t mailbox_id,
			   struct uidstore_record **list_r, size_t *n_r,
			   const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;
	struct uidstore_record *list = malloc(s->n_recs * sizeof(*list) + 1);
	size_t n = 0;

	(void)error_r;
	if (list == NULL)
		abort();
	r->stats.record_reads++;
	for (size_t i = 0; i < s->n_recs; i++) {
		if (s->recs[i].mailbox_id == mailbox_id)
			list[n++] = s->recs[i].rec;
	}
	qsort(list, n, sizeof(*list), cmp_rec);
	*list_r = list;
	*n_r = n;
	return 0;
}

static int ram_record_put(struct uidstore *st, int64_t mailbox_id,
			  const struct uidstore_record *rec,
			  const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;

	if (write_op(r, error_r) < 0)
		return -1;
	for (size_t i = 0; i < s->n_recs; i++) {
		if (s->recs[i].mailbox_id != mailbox_id)
			continue;
		/* The SQLite schema's keys, checked here too so that the
		 * logic cannot rely on one store's leniency. */
		if (s->recs[i].rec.id == rec->id ||
		    s->recs[i].rec.imap_uid == rec->imap_uid) {
			*error_r = "ram store: duplicate record";
			return -1;
		}
	}
	s->recs = realloc(s->recs, (s->n_recs + 1) * sizeof(*s->recs));
	if (s->recs == NULL)
		abort();
	s->recs[s->n_recs].mailbox_id = mailbox_id;
	s->recs[s->n_recs++].rec = *rec;
	return 0;
}

static int ram_clear_range(struct uidstore *st, int64_t mailbox_id,
			   uint32_t first, uint32_t last, const char **error_r)
{
	struct uidstore_ram *r = ram(st);
	struct ram_state *s = &r->cur;
	size_t k = 0;

	if (write_op(r, error_r) < 0)
		return -1;
	for (size_t i = 0; i < s->n_recs; i++) {
		uint32_t uid = s->recs[i].rec.imap_uid;

		if (s->recs[i].mailbox_id != mailbox_id || uid < first ||
		    uid > last)
			s->recs[k++] = s->recs[i];
	}
	s->n_recs = k;
	k = 0;
	for (size_t i = 0; i < s->n_excs; i++) {
		uint32_t uid = s->excs[i].exc.imap_uid;

		if (s->excs[i].mailbox_id != mailbox_id || uid < first ||
		    uid > last)
			s->excs[k++] = s->excs[i];
	}
	s->n_excs = k;
	return 0;
}

static void ram_close(struct uidstore *st)
{
	struct uidstore_ram *r = ram(st);

	ram_rollback(st);
	state_free(&r->cur);
	free(r);
}

static const struct uidstore_ops ram_ops = {
	.begin = ram_begin,
	.commit = ram_commit,
	.rollback = ram_rollback,
	.mailbox_get = ram_mailbox_get,
	.mailbox_put = ram_mailbox_put,
	.mailbox_list = ram_mailbox_list,
	.exceptions_get = ram_exceptions_get,
	.exception_put = ram_exception_put,
	.records_get = ram_records_get,
	.record_put = ram_record_put,
	.clear_range = ram_clear_range,
	.close = ram_close,
};

struct uidstore *uidstore_ram_new(void)
{
	struct uidstore_ram *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->store.ops = &ram_ops;
	return &r->store;
}

struct uidstore_ram_stats uidstore_ram_stats(struct uidstore *st)
{
	return ram(st)->stats;
}

void uidstore_ram_fail_write(struct uidstore *st, size_t nth)
{
	ram(st)->fail_countdown = nth;
}
