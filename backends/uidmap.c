/*
 * uidmap.c - the unique-id mapping rules over a uidstore.
 *
 * Each call runs in rounds.  A round reads the mailbox state in a read
 * transaction; if nothing is new it computes the ids from that state and is
 * done (the normal login: no write).  Otherwise it asks the caller for what
 * it needs with no transaction open (fetching from the upstream can take a
 * while and must not hold the writer lock that every other user's login
 * needs), then writes in short write transactions that re-read the mailbox
 * row under the lock and give up the round if another process changed it
 * in a way that matters.  The next round then starts again from the store,
 * keeping the answers already obtained, so what is served is always what
 * is stored.  The number of rounds is bounded.
 */
#include <stdlib.h>
#include <string.h>

#include "uidmap.h"

/* A normal first login needs three rounds (create, record, read). */
#define MAX_ROUNDS 8

/* What the caller told us about one message during this call. */
struct answer {
	bool have_fingerprint;
	bool asked_size;
	bool size_known;
	uint64_t size;
	unsigned char fingerprint[FINGERPRINT_LEN];
};

struct job {
	struct uidstore *st;
	const struct uidstore_key *key;
	uint32_t uidvalidity;
	struct mail_entry *msgs;
	size_t n;
	struct answer *ans;
	uidmap_need_fn *need;
	void *need_ctx;
	struct uidmap_need *items; /* UIDMAP_NEED_BATCH questions */
	const char **error_r;
};

enum round_result { ROUND_FAILED = -1, ROUND_DONE = 0, ROUND_AGAIN = 1 };

static int fail(struct job *job, const char *error)
{
	*job->error_r = error;
	return -1;
}

/*
 * Ask the caller about messages IDX[0..COUNT-1] (COUNT <= batch size) for
 * whatever of WANT_FP / WANT_SIZE this call has not learned yet.
 */
static int ask(struct job *job, const size_t *idx, size_t count, bool want_fp,
	       bool want_size)
{
	size_t which[UIDMAP_NEED_BATCH];
	size_t k = 0;

	for (size_t i = 0; i < count && k < UIDMAP_NEED_BATCH; i++) {
		const struct answer *a = &job->ans[idx[i]];
		struct uidmap_need *q = &job->items[k];

		memset(q, 0, sizeof(*q));
		q->want_fingerprint = want_fp && !a->have_fingerprint;
		q->want_size = want_size && !a->asked_size;
		if (!q->want_fingerprint && !q->want_size)
			continue;
		q->imap_uid = job->msgs[idx[i]].imap_uid;
		q->upstream_size = job->msgs[idx[i]].size;
		which[k++] = idx[i];
	}
	if (k == 0)
		return 0;
	if (job->need(job->need_ctx, job->items, k, job->error_r) < 0)
		return -1;
	for (size_t i = 0; i < k; i++) {
		struct answer *a = &job->ans[which[i]];
		const struct uidmap_need *q = &job->items[i];

		if (q->want_fingerprint) {
			memcpy(a->fingerprint, q->fingerprint, FINGERPRINT_LEN);
			a->have_fingerprint = true;
		}
		if (q->want_size) {
			a->asked_size = true;
			a->size_known = q->size_known;
			a->size = q->size;
		}
	}
	return 0;
}

/* Ask about messages FIRST..LAST-1 in batches. */
static int ask_range(struct job *job, size_t first, size_t last, bool want_fp,
		     bool want_size)
{
	size_t idx[UIDMAP_NEED_BATCH];

	while (first < last) {
		size_t count = 0;

		while (first < last && count < UIDMAP_NEED_BATCH)
			idx[count++] = first++;
		if (ask(job, idx, count, want_fp, want_size) < 0)
			return -1;
	}
	return 0;
}

/* The exception row that records what we learned about a message's size,
 * or false when the upstream size is right and no row is needed. */
static bool size_exception(const struct job *job, size_t i,
			   struct uidstore_exception *exc)
{
	const struct answer *a = &job->ans[i];

	exc->has_size = false;
	exc->size = 0;
	exc->size_pending = false;
	if (!a->asked_size || (a->size_known && a->size == job->msgs[i].size))
		return false;
	exc->has_size = a->size_known;
	exc->size = a->size_known ? a->size : 0;
	exc->size_pending = !a->size_known;
	return true;
}

static int cmp_entry_uid(const void *a, const void *b)
{
	const struct mail_entry *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Compute ids and sizes from a consistent read of the store. */
static int fill_result(struct job *job, const struct uidstore_mailbox *mb,
		       const struct uidstore_exception *exc, size_t n_exc)
{
	size_t j = 0;
	bool sorted = true;

	for (size_t i = 0; i < job->n; i++) {
		struct mail_entry *m = &job->msgs[i];
		const struct uidstore_exception *e = NULL;

		while (j < n_exc && exc[j].imap_uid < m->imap_uid)
			j++;
		if (j < n_exc && exc[j].imap_uid == m->imap_uid)
			e = &exc[j];
		if (e != NULL && e->id != 0) {
			m->uid = e->id;
		} else {
			if (m->imap_uid > UIDSTORE_ID_MAX - mb->offset)
				return fail(job, "uid store: id space exhausted");
			m->uid = mb->offset + m->imap_uid;
		}
		if (e != NULL && e->has_size)
			m->size = e->size;
		if (i > 0 && m->uid <= job->msgs[i - 1].uid)
			sorted = false;
	}
	if (sorted)
		return 0;
	/* Only after a UIDVALIDITY change: preserved ids keep their order. */
	qsort(job->msgs, job->n, sizeof(*job->msgs), cmp_entry_uid);
	for (size_t i = 1; i < job->n; i++) {
		if (job->msgs[i].uid == job->msgs[i - 1].uid)
			return fail(job, "uid store: one id for two messages");
	}
	return 0;
}

/* Re-read the mailbox under the writer lock.  Returns 1 if it is as
 * expected (EXPECT NULL: still absent), 0 if not, -1 on error. */
static int recheck(struct job *job, const struct uidstore_mailbox *expect,
		   struct uidstore_mailbox *now)
{
	int found = job->st->ops->mailbox_get(job->st, job->key, now,
					      job->error_r);

	if (found < 0)
		return -1;
	if (expect == NULL)
		return found == 0;
	return found == 1 && now->version == expect->version;
}

static int commit_or_rollback(struct job *job)
{
	if (job->st->ops->commit(job->st, job->error_r) < 0) {
		job->st->ops->rollback(job->st);
		return -1;
	}
	return 0;
}

/* Start an epoch with nothing to re-identify: first sight of the mailbox,
 * or its mapping was forgotten, or the old epoch had no records. */
static int start_fresh_epoch(struct job *job,
			     const struct uidstore_mailbox *old)
{
	struct uidstore *st = job->st;
	struct uidstore_mailbox mb, now;
	int r;

	if (st->ops->begin(st, true, job->error_r) < 0)
		return ROUND_FAILED;
	r = recheck(job, old, &now);
	if (r <= 0)
		goto out;
	memset(&mb, 0, sizeof(mb));
	if (old != NULL) {
		mb = now;
		r = st->ops->clear_range(st, mb.mailbox_id, 0, UINT32_MAX,
					 job->error_r);
		if (r < 0)
			goto out;
	}
	mb.uidvalidity = job->uidvalidity;
	/* The first epoch serves plain UIDs, as the gateway did before it had
	 * a store; any later one starts above every id issued. */
	mb.offset = mb.high_water;
	mb.last_uid = 0;
	mb.known = 0;
	mb.version++;
	r = st->ops->mailbox_put(st, job->key, &mb, job->error_r);
	if (r < 0)
		goto out;
	return commit_or_rollback(job) < 0 ? ROUND_FAILED : ROUND_AGAIN;
out:
	st->ops->rollback(st);
	return r < 0 ? ROUND_FAILED : ROUND_AGAIN;
}

static int cmp_record_fp(const void *a, const void *b)
{
	const struct uidstore_record *x = a, *y = b;

	return memcmp(x->fingerprint, y->fingerprint, FINGERPRINT_LEN);
}

struct fp_index {
	const unsigned char *fingerprint;
	size_t msg;
};

static int cmp_index_fp(const void *a, const void *b)
{
	const struct fp_index *x = a, *y = b;

	return memcmp(x->fingerprint, y->fingerprint, FINGERPRINT_LEN);
}

/*
 * PRESERVED[i] = the old id of message i when exactly one old record and
 * exactly one new message share its fingerprint, else 0.  A swapped id
 * would make a leave-on-server client delete the wrong message, so any
 * doubt means a new id.
 */
static int match_fingerprints(struct job *job, struct uidstore_record *old,
			      size_t n_old, uint64_t high_water,
			      uint64_t *preserved)
{
	struct fp_index *idx = calloc(job->n ? job->n : 1, sizeof(*idx));
	size_t i = 0, o = 0;

	if (idx == NULL)
		return fail(job, "uid store: out of memory");
	for (size_t k = 0; k < job->n; k++) {
		idx[k].fingerprint = job->ans[k].fingerprint;
		idx[k].msg = k;
	}
	qsort(idx, job->n, sizeof(*idx), cmp_index_fp);
	qsort(old, n_old, sizeof(*old), cmp_record_fp);
	while (i < job->n) {
		size_t new_end = i + 1, old_end;
		int c = 1;

		while (new_end < job->n &&
		       cmp_index_fp(&idx[i], &idx[new_end]) == 0)
			new_end++;
		while (o < n_old && (c = memcmp(old[o].fingerprint,
						idx[i].fingerprint,
						FINGERPRINT_LEN)) < 0)
			o++;
		old_end = o;
		while (old_end < n_old &&
		       memcmp(old[old_end].fingerprint, idx[i].fingerprint,
			      FINGERPRINT_LEN) == 0)
			old_end++;
		if (c == 0 && new_end - i == 1 && old_end - o == 1 &&
		    old[o].id != 0 && old[o].id <= high_water)
			preserved[idx[i].msg] = old[o].id;
		o = old_end;
		i = new_end;
	}
	free(idx);
	return 0;
}

/* Write the new epoch: every message recorded, preserved ids and size
 * corrections as exceptions.  Inside the write transaction. */
static int write_epoch(struct job *job, struct uidstore_mailbox *mb,
		       const uint64_t *preserved)
{
	struct uidstore *st = job->st;
	uint32_t last_uid = job->n > 0 ? job->msgs[job->n - 1].imap_uid : 0;
	uint64_t offset = mb->high_water;

	if (last_uid > UIDSTORE_ID_MAX - offset)
		return fail(job, "uid store: id space exhausted");
	if (st->ops->clear_range(st, mb->mailbox_id, 0, UINT32_MAX,
				 job->error_r) < 0)
		return -1;
	for (size_t i = 0; i < job->n; i++) {
		struct uidstore_record rec;
		struct uidstore_exception exc = { 0 };
		bool has_exc = size_exception(job, i, &exc);

		rec.imap_uid = job->msgs[i].imap_uid;
		rec.id = preserved[i] != 0 ? preserved[i] : offset + rec.imap_uid;
		memcpy(rec.fingerprint, job->ans[i].fingerprint,
		       FINGERPRINT_LEN);
		if (st->ops->record_put(st, mb->mailbox_id, &rec,
					job->error_r) < 0)
			return -1;
		exc.imap_uid = rec.imap_uid;
		exc.id = preserved[i];
		if ((has_exc || preserved[i] != 0) &&
		    st->ops->exception_put(st, mb->mailbox_id, &exc,
					   job->error_r) < 0)
			return -1;
	}
	mb->uidvalidity = job->uidvalidity;
	mb->offset = offset;
	mb->last_uid = last_uid;
	mb->known = job->n;
	if (offset + last_uid > mb->high_water)
		mb->high_water = offset + last_uid;
	mb->version++;
	return st->ops->mailbox_put(st, job->key, mb, job->error_r);
}

/* UIDVALIDITY changed (or the mailbox is new): re-identify or start over. */
static int new_epoch(struct job *job)
{
	struct uidstore *st = job->st;
	struct uidstore_mailbox mb, now;
	struct uidstore_record *old = NULL;
	uint64_t *preserved = NULL;
	size_t n_old = 0;
	int found, r;

	if (st->ops->begin(st, false, job->error_r) < 0)
		return ROUND_FAILED;
	found = st->ops->mailbox_get(st, job->key, &mb, job->error_r);
	if (found == 1)
		found = st->ops->records_get(st, mb.mailbox_id, &old, &n_old,
					     job->error_r) < 0 ? -1 : 1;
	st->ops->rollback(st);
	free(old);
	old = NULL;
	if (found < 0)
		return ROUND_FAILED;
	if (found == 1 && mb.uidvalidity == job->uidvalidity)
		return ROUND_AGAIN; /* another process started it meanwhile */
	if (found == 0 || n_old == 0)
		return start_fresh_epoch(job, found ? &mb : NULL);

	if (ask_range(job, 0, job->n, true, true) < 0)
		return ROUND_FAILED;
	preserved = calloc(job->n ? job->n : 1, sizeof(*preserved));
	if (preserved == NULL)
		return fail(job, "uid store: out of memory");
	if (st->ops->begin(st, true, job->error_r) < 0) {
		free(preserved);
		return ROUND_FAILED;
	}
	r = recheck(job, &mb, &now);
	if (r > 0)
		r = st->ops->records_get(st, mb.mailbox_id, &old, &n_old,
					 job->error_r) < 0 ? -1 : 1;
	if (r > 0)
		r = match_fingerprints(job, old, n_old, now.high_water,
				       preserved) < 0 ? -1 : 1;
	if (r > 0)
		r = write_epoch(job, &now, preserved) < 0 ? -1 : 1;
	free(old);
	free(preserved);
	if (r <= 0) {
		st->ops->rollback(st);
		return r < 0 ? ROUND_FAILED : ROUND_AGAIN;
	}
	return commit_or_rollback(job) < 0 ? ROUND_FAILED : ROUND_AGAIN;
}

/*
 * Drop the records and exceptions of messages that vanished: the UID gaps
 * among the present messages up to LAST_UID.  Range deletes, so the cost
 * follows the number of gaps, not of all records.
 */
static int prune_vanished(struct job *job, const struct uidstore_mailbox *mb,
			  size_t first_new)
{
	uint32_t prev = 0;

	for (size_t i = 0; i < first_new; i++) {
		uint32_t uid = job->msgs[i].imap_uid;

		if (uid > prev + 1 &&
		    job->st->ops->clear_range(job->st, mb->mailbox_id, prev + 1,
					      uid - 1, job->error_r) < 0)
			return -1;
		prev = uid;
	}
	if (prev < mb->last_uid)
		return job->st->ops->clear_range(job->st, mb->mailbox_id,
						 prev + 1, mb->last_uid,
						 job->error_r);
	return 0;
}

/* Same epoch, but messages vanished or sizes are pending. */
static int update_known(struct job *job, const struct uidstore_mailbox *mb,
			size_t first_new, const struct uidstore_exception *exc,
			size_t n_exc, const size_t *pending, size_t n_pending,
			bool prune)
{
	struct uidstore *st = job->st;
	struct uidstore_mailbox now;
	int r;

	for (size_t k = 0; k < n_pending; k += UIDMAP_NEED_BATCH) {
		size_t count = n_pending - k < UIDMAP_NEED_BATCH ?
			       n_pending - k : UIDMAP_NEED_BATCH;

		if (ask(job, pending + k, count, false, true) < 0)
			return ROUND_FAILED;
	}
	if (st->ops->begin(st, true, job->error_r) < 0)
		return ROUND_FAILED;
	r = recheck(job, mb, &now);
	if (r > 0 && prune) {
		r = prune_vanished(job, &now, first_new) < 0 ? -1 : 1;
		now.known = first_new;
	}
	for (size_t k = 0, j = 0; r > 0 && k < n_pending; k++) {
		struct uidstore_exception e = { 0 };
		size_t i = pending[k];

		while (j < n_exc && exc[j].imap_uid < job->msgs[i].imap_uid)
			j++;
		e.imap_uid = job->msgs[i].imap_uid;
		e.id = j < n_exc && exc[j].imap_uid == e.imap_uid ? exc[j].id : 0;
		(void)size_exception(job, i, &e);
		if (st->ops->exception_put(st, now.mailbox_id, &e,
					   job->error_r) < 0)
			r = -1;
	}
	if (r > 0) {
		now.version++;
		r = st->ops->mailbox_put(st, job->key, &now, job->error_r) < 0 ?
		    -1 : 1;
	}
	if (r <= 0) {
		st->ops->rollback(st);
		return r < 0 ? ROUND_FAILED : ROUND_AGAIN;
	}
	return commit_or_rollback(job) < 0 ? ROUND_FAILED : ROUND_AGAIN;
}

/* Record messages FIRST.. (above last_uid) in steps of one batch. */
static int record_new(struct job *job, size_t first)
{
	struct uidstore *st = job->st;

	while (first < job->n) {
		size_t end = job->n - first < UIDMAP_NEED_BATCH ?
			     job->n : first + UIDMAP_NEED_BATCH;
		struct uidstore_mailbox mb;
		size_t added = 0;
		int r;

		if (ask_range(job, first, end, true, true) < 0)
			return ROUND_FAILED;
		if (st->ops->begin(st, true, job->error_r) < 0)
			return ROUND_FAILED;
		r = st->ops->mailbox_get(st, job->key, &mb, job->error_r);
		/* Another process recording the same messages (two first
		 * logins at once) is fine: carry on above what it did. */
		if (r == 1 && mb.uidvalidity != job->uidvalidity)
			r = 0;
		for (size_t i = first; r > 0 && i < end; i++) {
			struct uidstore_record rec;
			struct uidstore_exception exc = { 0 };

			rec.imap_uid = job->msgs[i].imap_uid;
			if (rec.imap_uid <= mb.last_uid)
				continue;
			if (rec.imap_uid > UIDSTORE_ID_MAX - mb.offset) {
				r = fail(job, "uid store: id space exhausted");
				break;
			}
			rec.id = mb.offset + rec.imap_uid;
			memcpy(rec.fingerprint, job->ans[i].fingerprint,
			       FINGERPRINT_LEN);
			if (st->ops->record_put(st, mb.mailbox_id, &rec,
						job->error_r) < 0) {
				r = -1;
				break;
			}
			exc.imap_uid = rec.imap_uid;
			if (size_exception(job, i, &exc) &&
			    st->ops->exception_put(st, mb.mailbox_id, &exc,
						   job->error_r) < 0) {
				r = -1;
				break;
			}
			added++;
		}
		if (r > 0 && added > 0) {
			uint32_t last = job->msgs[end - 1].imap_uid;

			mb.last_uid = last;
			mb.known += added;
			if (mb.offset + last > mb.high_water)
				mb.high_water = mb.offset + last;
			mb.version++;
			r = st->ops->mailbox_put(st, job->key, &mb,
						 job->error_r) < 0 ? -1 : 1;
		}
		if (r <= 0) {
			st->ops->rollback(st);
			return r < 0 ? ROUND_FAILED : ROUND_AGAIN;
		}
		if (commit_or_rollback(job) < 0)
			return ROUND_FAILED;
		first = end;
	}
	return ROUND_AGAIN;
}

static int round_run(struct job *job)
{
	struct uidstore *st = job->st;
	struct uidstore_mailbox mb;
	struct uidstore_exception *exc = NULL;
	size_t n_exc = 0, first_new = 0, n_pending = 0, *pending = NULL;
	bool can_prune, prune;
	int found, ret;

	if (st->ops->begin(st, false, job->error_r) < 0)
		return ROUND_FAILED;
	found = st->ops->mailbox_get(st, job->key, &mb, job->error_r);
	if (found == 1 && mb.uidvalidity == job->uidvalidity &&
	    st->ops->exceptions_get(st, mb.mailbox_id, &exc, &n_exc,
				    job->error_r) < 0)
		found = -1;
	st->ops->rollback(st);
	if (found < 0)
		return ROUND_FAILED;
	if (found == 0 || mb.uidvalidity != job->uidvalidity)
		return new_epoch(job);

	while (first_new < job->n && job->msgs[first_new].imap_uid <= mb.last_uid)
		first_new++;
	for (size_t i = 0, j = 0; i < first_new; i++) {
		while (j < n_exc && exc[j].imap_uid < job->msgs[i].imap_uid)
			j++;
		if (j < n_exc && exc[j].imap_uid == job->msgs[i].imap_uid &&
		    exc[j].size_pending && !job->ans[i].asked_size) {
			if (pending == NULL &&
			    (pending = calloc(first_new, sizeof(*pending))) == NULL) {
				free(exc);
				return fail(job, "uid store: out of memory");
			}
			pending[n_pending++] = i;
		}
	}
	/*
	 * Fewer known messages than records means some vanished, unless the
	 * store has seen newer mail than this snapshot (another session
	 * recorded it after this one listed the folder): then the absent
	 * UIDs may simply be too new for us, and pruning waits.
	 */
	can_prune = first_new < job->n ||
		    (first_new > 0 &&
		     job->msgs[first_new - 1].imap_uid == mb.last_uid);
	prune = first_new != mb.known && can_prune;
	if (n_pending > 0 || prune)
		ret = update_known(job, &mb, first_new, exc, n_exc, pending,
				   n_pending, prune);
	else if (first_new < job->n)
		ret = record_new(job, first_new);
	else
		ret = fill_result(job, &mb, exc, n_exc) < 0 ? ROUND_FAILED :
							     ROUND_DONE;
	free(pending);
	free(exc);
	return ret;
}

int uidmap_assign(struct uidstore *st, const struct uidstore_key *key,
		  uint32_t uidvalidity, struct mail_entry *msgs, size_t n,
		  uidmap_need_fn *need, void *need_ctx, const char **error_r)
{
	struct job job = {
		.st = st, .key = key, .uidvalidity = uidvalidity,
		.msgs = msgs, .n = n, .need = need, .need_ctx = need_ctx,
		.error_r = error_r,
	};
	int r = ROUND_AGAIN;

	if (uidvalidity == 0) {
		*error_r = "uid store: UIDVALIDITY 0";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].imap_uid == 0 ||
		    (i > 0 && msgs[i].imap_uid <= msgs[i - 1].imap_uid)) {
			*error_r = "uid store: snapshot not in ascending UID order";
			return -1;
		}
	}
	job.ans = calloc(n ? n : 1, sizeof(*job.ans));
	job.items = calloc(UIDMAP_NEED_BATCH, sizeof(*job.items));
	if (job.ans == NULL || job.items == NULL) {
		*error_r = "uid store: out of memory";
		r = ROUND_FAILED;
	}
	for (int round = 0; r == ROUND_AGAIN && round < MAX_ROUNDS; round++)
		r = round_run(&job);
	if (r == ROUND_AGAIN)
		*error_r = "uid store: too many concurrent changes, try again";
	free(job.ans);
	free(job.items);
	return r == ROUND_DONE ? 0 : -1;
}

/* The mailboxes a change applies to, copied out of the listing. */
struct selection {
	struct uidstore_mailbox *mbs;
	char **upstreams, **users, **folders;
	size_t n, cap;
	const char *upstream, *folder; /* filters; NULL: any */
	bool oom;
};

static int select_mailbox(void *ctx, const struct uidstore_key *key,
			  const struct uidstore_mailbox *mb)
{
	struct selection *sel = ctx;
	size_t i;

	if ((sel->upstream != NULL && strcmp(sel->upstream, key->upstream) != 0) ||
	    (sel->folder != NULL && strcmp(sel->folder, key->folder) != 0))
		return 0;
	if (sel->n == sel->cap) {
		size_t cap = sel->cap ? sel->cap * 2 : 8;
		void *a = reallocarray(sel->mbs, cap, sizeof(*sel->mbs));
		void *b = a ? reallocarray(sel->upstreams, cap, sizeof(char *)) : NULL;
		void *c = b ? reallocarray(sel->users, cap, sizeof(char *)) : NULL;
		void *d = c ? reallocarray(sel->folders, cap, sizeof(char *)) : NULL;

		if (a != NULL)
			sel->mbs = a;
		if (b != NULL)
			sel->upstreams = b;
		if (c != NULL)
			sel->users = c;
		if (d == NULL) {
			sel->oom = true;
			return 1;
		}
		sel->folders = d;
		sel->cap = cap;
	}
	i = sel->n++;
	sel->mbs[i] = *mb;
	sel->upstreams[i] = strdup(key->upstream);
	sel->users[i] = strdup(key->user);
	sel->folders[i] = strdup(key->folder);
	if (sel->upstreams[i] == NULL || sel->users[i] == NULL ||
	    sel->folders[i] == NULL) {
		sel->oom = true;
		return 1;
	}
	return 0;
}

static void selection_free(struct selection *sel)
{
	for (size_t i = 0; i < sel->n; i++) {
		free(sel->upstreams[i]);
		free(sel->users[i]);
		free(sel->folders[i]);
	}
	free(sel->upstreams);
	free(sel->users);
	free(sel->folders);
	free(sel->mbs);
}

/* What a change does to one mailbox, inside the caller's write
 * transaction; adds what it changed to *COUNT.  0 or -1 with *error_r. */
typedef int mailbox_change_fn(struct uidstore *st,
			      const struct uidstore_key *key,
			      struct uidstore_mailbox *mb, size_t *count,
			      const char **error_r);

/* CHANGE every mailbox of USER (NULL: all) on UPSTREAM and in FOLDER (NULL:
 * any), all in one write transaction. */
static int change_mailboxes(struct uidstore *st, const char *user,
			    const char *upstream, const char *folder,
			    mailbox_change_fn *change, size_t *count_r,
			    const char **error_r)
{
	struct selection sel = { .upstream = upstream, .folder = folder };
	size_t count = 0;
	int r;

	*count_r = 0;
	if (st->ops->begin(st, true, error_r) < 0)
		return -1;
	r = st->ops->mailbox_list(st, user, select_mailbox, &sel, error_r);
	if (r == 0 && sel.oom) {
		*error_r = "uid store: out of memory";
		r = -1;
	}
	for (size_t i = 0; r == 0 && i < sel.n; i++) {
		struct uidstore_key key = {
			sel.upstreams[i], sel.users[i], sel.folders[i],
		};

		r = change(st, &key, &sel.mbs[i], &count, error_r);
	}
	if (r == 0 && st->ops->commit(st, error_r) < 0)
		r = -1;
	if (r < 0)
		st->ops->rollback(st);
	else
		*count_r = count;
	selection_free(&sel);
	return r;
}

static int forget_mailbox(struct uidstore *st, const struct uidstore_key *key,
			  struct uidstore_mailbox *mb, size_t *count,
			  const char **error_r)
{
	/* The high-water mark stays: the next epoch starts above it. */
	mb->uidvalidity = 0;
	mb->offset = mb->high_water;
	mb->last_uid = 0;
	mb->known = 0;
	mb->version++;
	if (st->ops->clear_range(st, mb->mailbox_id, 0, UINT32_MAX,
				 error_r) < 0 ||
	    st->ops->mailbox_put(st, key, mb, error_r) < 0)
		return -1;
	(*count)++;
	return 0;
}

int uidmap_forget(struct uidstore *st, const char *user, const char *upstream,
		  const char *folder, size_t *count_r, const char **error_r)
{
	return change_mailboxes(st, user, upstream, folder, &forget_mailbox,
				count_r, error_r);
}

/*
 * Mark every known message of MB whose size came from the upstream as
 * still to be measured: an exception row without a size gets
 * size_pending (its id, if any, stays), and a message without a row gets
 * one.  Rows that hold a size were measured or corrected already.
 */
static int measure_mailbox(struct uidstore *st, const struct uidstore_key *key,
			   struct uidstore_mailbox *mb, size_t *count,
			   const char **error_r)
{
	struct uidstore_record *rec = NULL;
	struct uidstore_exception *exc = NULL;
	size_t n_rec = 0, n_exc = 0, marked = 0;
	int r = 0;

	if (mb->uidvalidity == 0) /* forgotten: nothing is known */
		return 0;
	if (st->ops->records_get(st, mb->mailbox_id, &rec, &n_rec,
				 error_r) < 0 ||
	    st->ops->exceptions_get(st, mb->mailbox_id, &exc, &n_exc,
				    error_r) < 0)
		r = -1;
	for (size_t i = 0, j = 0; r == 0 && i < n_rec; i++) {
		struct uidstore_exception e = { .imap_uid = rec[i].imap_uid };

		while (j < n_exc && exc[j].imap_uid < e.imap_uid)
			j++;
		if (j < n_exc && exc[j].imap_uid == e.imap_uid)
			e = exc[j];
		if (e.has_size || e.size_pending)
			continue;
		e.size_pending = true;
		r = st->ops->exception_put(st, mb->mailbox_id, &e, error_r);
		marked++;
	}
	if (r == 0 && marked > 0) {
		mb->version++;
		r = st->ops->mailbox_put(st, key, mb, error_r);
	}
	free(rec);
	free(exc);
	*count += marked;
	return r;
}

int uidmap_measure_again(struct uidstore *st, const char *user,
			 const char *upstream, const char *folder,
			 size_t *count_r, const char **error_r)
{
	return change_mailboxes(st, user, upstream, folder, &measure_mailbox,
				count_r, error_r);
}
