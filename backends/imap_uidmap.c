/*
 * imap_uidmap.c - fetch what the unique-id store asks for, in as few IMAP
 * round trips as the protocol allows.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "imap_uid_fetch.h"
#include "imap_uidmap.h"
#include "monotime.h"

#define EXACT_RANGE (4u * 1024 * 1024)
/* A server that keeps sending past the announced size is not believed
 * forever: 1 GiB of 4 MiB ranges. */
#define EXACT_MAX_RANGES 256

/* Items come in ascending UID (uidmap asks in snapshot order). */
static struct uidmap_need *find_item(struct uidmap_need *items, size_t n,
				     uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (items[mid].imap_uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && items[lo].imap_uid == uid ? &items[lo] : NULL;
}

/* The UIDs of the items in IDX as a set of runs: short command lines. */
static struct mailimap_set *uid_set(const struct uidmap_need *items,
				    const size_t *idx, size_t count)
{
	struct mailimap_set *set = mailimap_set_new_empty();

	for (size_t i = 0; set != NULL && i < count;) {
		uint32_t first = items[idx[i]].imap_uid, last = first;

		while (++i < count && items[idx[i]].imap_uid == last + 1)
			last++;
		if (mailimap_set_add_interval(set, first, last) != 0) {
			mailimap_set_free(set);
			set = NULL;
		}
	}
	return set;
}

static uint32_t att_uid(const struct mailimap_msg_att *att)
{
	for (clistiter *it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		const struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
		    item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID)
			return item->att_data.att_static->att_data.att_uid;
	}
	return 0;
}

/* The body section ITEM carries, or NULL when it is another attribute. */
static const struct mailimap_msg_att_body_section *
item_body_section(const struct mailimap_msg_att_item *item)
{
	if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC ||
	    item->att_data.att_static->att_type != MAILIMAP_MSG_ATT_BODY_SECTION)
		return NULL;
	return item->att_data.att_static->att_data.att_body_section;
}

/* The msgtext type of a section (HEADER.FIELDS, TEXT), or -1 for BODY[]. */
static int section_type(const struct mailimap_section *sec)
{
	if (sec == NULL || sec->sec_spec == NULL)
		return -1;
	if (sec->sec_spec->sec_type != MAILIMAP_SECTION_SPEC_SECTION_MSGTEXT ||
	    sec->sec_spec->sec_data.sec_msgtext == NULL)
		return -2;
	return sec->sec_spec->sec_data.sec_msgtext->sec_type;
}

static int run_fetch(struct imap_uidmap_ctx *c, struct mailimap_set *set,
		     struct mailimap_fetch_type *ft, clist **result_r,
		     const char **error_r)
{
	int r;

	*result_r = NULL;
	if (set == NULL || ft == NULL) {
		r = MAILIMAP_ERROR_MEMORY;
	} else {
		r = mailimap_fetch_type_new_fetch_att_list_add(ft,
				mailimap_fetch_att_new_uid()) != 0 ?
		    MAILIMAP_ERROR_MEMORY :
		    imap_uid_fetch(c->imap, set, ft, result_r);
	}
	if (set != NULL)
		mailimap_set_free(set);
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (r != MAILIMAP_NO_ERROR) {
		c->imap_error = r;
		*error_r = r == MAILIMAP_ERROR_MEMORY ? "out of memory" :
			   "upstream UID FETCH for the unique-id store failed";
		return -1;
	}
	return 0;
}

static void free_field(void *data, void *context)
{
	(void)context;
	free(data);
}

/* BODY.PEEK[HEADER.FIELDS (...)] and BODY.PEEK[TEXT]<0.1024>. */
static struct mailimap_fetch_type *fingerprint_fetch_type(void)
{
	static const char *const names[] = {
		"MESSAGE-ID", "DATE", "FROM", "SUBJECT",
	};
	struct mailimap_fetch_type *ft =
		mailimap_fetch_type_new_fetch_att_list_empty();
	clist *fields = clist_new();
	struct mailimap_header_list *hl = NULL;
	struct mailimap_section *hsec = NULL, *tsec = NULL;
	struct mailimap_fetch_att *hatt = NULL, *tatt = NULL;

	for (size_t i = 0; fields != NULL && i < 4; i++) {
		char *name = strdup(names[i]);

		if (name == NULL || clist_append(fields, name) < 0) {
			free(name);
			clist_foreach(fields, free_field, NULL);
			clist_free(fields);
			fields = NULL;
		}
	}
	if (fields != NULL && (hl = mailimap_header_list_new(fields)) == NULL) {
		clist_foreach(fields, free_field, NULL);
		clist_free(fields);
	}
	if (hl != NULL && (hsec = mailimap_section_new_header_fields(hl)) == NULL)
		mailimap_header_list_free(hl);
	if (hsec != NULL &&
	    (hatt = mailimap_fetch_att_new_body_peek_section(hsec)) == NULL)
		mailimap_section_free(hsec);
	tsec = mailimap_section_new_text();
	if (tsec != NULL &&
	    (tatt = mailimap_fetch_att_new_body_peek_section_partial(tsec, 0,
			FINGERPRINT_BODY_HEAD)) == NULL)
		mailimap_section_free(tsec);
	if (ft == NULL || hatt == NULL || tatt == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft, hatt) != 0) {
		if (hatt != NULL)
			mailimap_fetch_att_free(hatt);
		if (tatt != NULL)
			mailimap_fetch_att_free(tatt);
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		return NULL;
	}
	if (mailimap_fetch_type_new_fetch_att_list_add(ft, tatt) != 0) {
		mailimap_fetch_att_free(tatt);
		mailimap_fetch_type_free(ft);
		return NULL;
	}
	return ft;
}

/*
 * A message expunged upstream since the snapshot cannot be fingerprinted;
 * a random fingerprint never matches anything, and its record goes at the
 * next login, when it is seen to be gone.
 */
static int vanished_fingerprint(struct uidmap_need *q, const char **error_r)
{
	if (RAND_bytes(q->fingerprint, FINGERPRINT_LEN) != 1) {
		*error_r = "no random bytes";
		return -1;
	}
	return 0;
}

static int fetch_fingerprints(struct imap_uidmap_ctx *c,
			      struct uidmap_need *items, size_t n,
			      const char **error_r)
{
	size_t *idx = calloc(n, sizeof(*idx));
	bool *done = calloc(n, sizeof(*done));
	size_t count = 0;
	clist *result = NULL;
	int ret = -1;

	if (idx == NULL || done == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (items[i].want_fingerprint)
			idx[count++] = i;
	}
	if (count == 0) {
		ret = 0;
		goto out;
	}
	if (run_fetch(c, uid_set(items, idx, count), fingerprint_fetch_type(),
		      &result, error_r) < 0)
		goto out;
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		const struct mailimap_msg_att *att = clist_content(it);
		struct uidmap_need *q = find_item(items, n, att_uid(att));
		const char *hdr = NULL, *text = NULL;
		size_t hdr_len = 0, text_len = 0;

		if (q == NULL || !q->want_fingerprint || done[q - items])
			continue; /* unsolicited, or a repeat */
		for (clistiter *i2 = clist_begin(att->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			const struct mailimap_msg_att_body_section *b =
				item_body_section(clist_content(i2));

			if (b == NULL || b->sec_body_part == NULL)
				continue;
			if (section_type(b->sec_section) ==
			    MAILIMAP_SECTION_MSGTEXT_HEADER_FIELDS) {
				hdr = b->sec_body_part;
				hdr_len = b->sec_length;
			} else if (section_type(b->sec_section) ==
				   MAILIMAP_SECTION_MSGTEXT_TEXT) {
				text = b->sec_body_part;
				text_len = b->sec_length;
			}
		}
		if (hdr == NULL)
			continue; /* a FETCH of flags only, not our answer */
		if (fingerprint_compute(hdr, hdr_len, q->upstream_size,
					text != NULL ? text : "", text_len,
					q->fingerprint, error_r) < 0)
			goto out;
		done[q - items] = true;
	}
	for (size_t k = 0; k < count; k++) {
		if (!done[idx[k]] &&
		    vanished_fingerprint(&items[idx[k]], error_r) < 0)
			goto out;
	}
	ret = 0;
out:
	if (result != NULL)
		mailimap_fetch_list_free(result);
	free(idx);
	free(done);
	return ret;
}

/* What the POP3 writer adds after the last octets TAIL: a CRLF when the
 * last line has no ending, an LF after a final bare CR. */
static uint64_t ending_correction(const char *tail, size_t len)
{
	if (len == 0)
		return 0; /* empty message: nothing is added */
	if (tail[len - 1] == '\n')
		return 0;
	if (tail[len - 1] == '\r')
		return 1;
	return 2;
}

static int cmp_size(const void *a, const void *b, void *arg)
{
	const struct uidmap_need *items = arg;
	const struct uidmap_need *x = &items[*(const size_t *)a];
	const struct uidmap_need *y = &items[*(const size_t *)b];

	if (x->upstream_size != y->upstream_size)
		return x->upstream_size < y->upstream_size ? -1 : 1;
	return x->imap_uid < y->imap_uid ? -1 : x->imap_uid > y->imap_uid;
}

/* BODY.PEEK[]<SIZE-2.2> for messages IDX[0..COUNT-1], all of this SIZE. */
static int fetch_tails(struct imap_uidmap_ctx *c, struct uidmap_need *items,
		       size_t n, const size_t *idx, size_t count,
		       const char **error_r)
{
	uint64_t size = items[idx[0]].upstream_size;
	uint32_t len = size >= 2 ? 2 : (uint32_t)size;
	clist *result = NULL;

	for (size_t k = 0; k < count; k++) {
		/* Gone or silent: serve the upstream size. */
		items[idx[k]].size_known = true;
		items[idx[k]].size = size;
	}
	if (size == 0 || size > UINT32_MAX) {
		/* No tail to read, or out of IMAP's partial range: keep it. */
		return 0;
	}
	if (run_fetch(c, uid_set(items, idx, count),
		      imap_fetch_type_body_partial((uint32_t)(size - len), len),
		      &result, error_r) < 0)
		return -1;
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		const struct mailimap_msg_att *ma = clist_content(it);
		struct uidmap_need *q = find_item(items, n, att_uid(ma));

		if (q == NULL || !q->want_size)
			continue;
		for (clistiter *i2 = clist_begin(ma->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			const struct mailimap_msg_att_body_section *b =
				item_body_section(clist_content(i2));

			if (b != NULL && b->sec_body_part != NULL &&
			    b->sec_length > 0)
				q->size = size + ending_correction(
					b->sec_body_part, b->sec_length);
		}
	}
	mailimap_fetch_list_free(result);
	return 0;
}

static int upstream_sizes(struct imap_uidmap_ctx *c, struct uidmap_need *items,
			  size_t n, const char **error_r)
{
	size_t *idx = calloc(n, sizeof(*idx));
	size_t count = 0;
	int ret = 0;

	if (idx == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (items[i].want_size)
			idx[count++] = i;
	}
	/* One command per distinct size: the offset is per command. */
	qsort_r(idx, count, sizeof(*idx), cmp_size, items);
	for (size_t k = 0; ret == 0 && k < count;) {
		size_t end = k + 1;

		while (end < count && items[idx[end]].upstream_size ==
				      items[idx[k]].upstream_size)
			end++;
		/* uid_set wants ascending UIDs: cmp_size sorted them so. */
		ret = fetch_tails(c, items, n, idx + k, end - k, error_r);
		k = end;
	}
	free(idx);
	return ret;
}

/* Counts the octets the POP3 writer sends for a message, before
 * dot-stuffing: every line ending becomes CRLF, a last line gets one. */
struct counter {
	uint64_t octets;
	bool after_cr;
	bool line_open;  /* octets since the last line ending */
	uint64_t received;
};

static bool count_body(int att_type, struct mailimap_msg_att_body_section *sec,
		       const char *bytes, size_t len, void *context)
{
	struct counter *k = context;

	(void)att_type;
	(void)sec;
	k->received += len;
	for (size_t i = 0; i < len; i++) {
		char ch = bytes[i];

		if (ch == '\r') {
			k->octets += 2;
			k->after_cr = true;
			k->line_open = false;
		} else if (ch == '\n') {
			if (!k->after_cr)
				k->octets += 2;
			k->after_cr = false;
			k->line_open = false;
		} else {
			k->octets++;
			k->after_cr = false;
			k->line_open = true;
		}
	}
	return true;
}

/* Stream one message in ranges; *found_r false if it is gone. */
static int measure_one(struct imap_uidmap_ctx *c, uint32_t uid,
		       uint64_t *octets_r, bool *found_r, const char **error_r)
{
	struct counter k = { 0 };

	*found_r = false;
	for (uint32_t range = 0; range < EXACT_MAX_RANGES; range++) {
		struct mailimap_fetch_type *ft = imap_fetch_type_body_partial(
			range * EXACT_RANGE, EXACT_RANGE);
		uint64_t before = k.received;
		clist *result = NULL;
		int r;

		/* libetpan calls the handler only with a progress callback. */
		mailimap_set_progress_callback(c->imap, NULL,
					       imap_ignore_progress, NULL);
		mailimap_set_msg_body_handler(c->imap, count_body, &k);
		r = run_fetch(c, mailimap_set_new_single(uid), ft, &result,
			      error_r);
		if (c->imap != NULL) {
			mailimap_set_msg_body_handler(c->imap, NULL, NULL);
			mailimap_set_progress_callback(c->imap, NULL, NULL,
						       NULL);
		}
		if (result != NULL) {
			for (clistiter *it = clist_begin(result); it != NULL;
			     it = clist_next(it)) {
				if (att_uid(clist_content(it)) == uid)
					*found_r = true;
			}
			mailimap_fetch_list_free(result);
		}
		if (r < 0)
			return -1;
		if (k.received - before < EXACT_RANGE)
			break;
	}
	*octets_r = k.octets + (k.line_open ? 2 : 0);
	return 0;
}

static int exact_sizes(struct imap_uidmap_ctx *c, struct uidmap_need *items,
		       size_t n, const char **error_r)
{
	for (size_t i = 0; i < n; i++) {
		struct uidmap_need *q = &items[i];
		bool found;

		if (!q->want_size)
			continue;
		if (c->exact_deadline_ms != 0 &&
		    monotime_ms() >= c->exact_deadline_ms) {
			q->size_known = false; /* a later login measures it */
			continue;
		}
		if (measure_one(c, q->imap_uid, &q->size, &found, error_r) < 0)
			return -1;
		if (!found)
			q->size = q->upstream_size;
		q->size_known = true;
	}
	return 0;
}

int imap_uidmap_need(void *ctx, struct uidmap_need *items, size_t n,
		     const char **error_r)
{
	struct imap_uidmap_ctx *c = ctx;

	c->imap_error = MAILIMAP_NO_ERROR;
	if (fetch_fingerprints(c, items, n, error_r) < 0)
		return -1;
	if (c->size_mode == UIDMAP_SIZE_EXACT)
		return exact_sizes(c, items, n, error_r);
	return upstream_sizes(c, items, n, error_r);
}

int imap_uidmap_snapshot(mailimap *imap, struct uidstore *st,
			 const struct uidstore_key *key, uint32_t uidvalidity,
			 struct mail_entry *msgs, size_t n,
			 enum uidmap_size_mode mode, uint64_t budget_ms,
			 int *imap_error_r, const char **error_r)
{
	struct imap_uidmap_ctx ctx = {
		.imap = imap,
		.size_mode = mode,
		.exact_deadline_ms = budget_ms != 0 ?
				     monotime_ms() + budget_ms : 0,
		.imap_error = MAILIMAP_NO_ERROR,
	};
	int r;

	r = uidmap_assign(st, key, uidvalidity, msgs, n, imap_uidmap_need,
			  &ctx, error_r);
	*imap_error_r = ctx.imap_error;
	return r;
}
