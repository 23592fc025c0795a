/*
 * imap_fetch.c - reading a message: BODY.PEEK in ranges streamed to the
 * sink, and the read-ahead cache that answers a run of small RETRs with
 * one UID FETCH.
 */
#include <stdlib.h>
#include <string.h>

#include "imap_internal.h"
#include "imap_uid_fetch.h"
#include "log.h"

#define FETCH_FIRST_MIN (4 * 1024)
#define FETCH_NEXT_MIN (64 * 1024)
#define FETCH_CHUNK_MAX (4 * 1024 * 1024)

struct fetch_ctx {
	backend_sink_fn *sink;
	void *sink_ctx;
	uint64_t chunk_octets;  /* received in the current range */
	bool stopped;           /* sink has all it wants: discard the rest */
	bool sink_failed;
};

/*
 * Never returns false: that makes libetpan abort the parse and leaves the
 * session unusable.  After the sink stops, the rest of the current range
 * (at most FETCH_CHUNK_MAX) is read and discarded to keep the session.
 */
static bool fetch_body(int att_type, struct mailimap_msg_att_body_section *sec,
		       const char *bytes, size_t len, void *context)
{
	struct fetch_ctx *fc = context;
	int r;

	(void)att_type;
	(void)sec;
	fc->chunk_octets += len;
	if (fc->stopped || len == 0)
		return true;
	r = fc->sink(fc->sink_ctx, bytes, len);
	if (r != 0) {
		fc->stopped = true;
		fc->sink_failed = r < 0;
	}
	return true;
}

enum body_presence {
	BODY_ABSENT, /* no FETCH response with a body for the UID */
	BODY_NIL,    /* BODY[]<o> NIL: past the end, or expunged (offset 0) */
	BODY_STRING, /* a literal or quoted string, possibly empty */
};

static enum body_presence body_for(clist *result, uint32_t uid)
{
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
		const struct mailimap_msg_att_body_section *body = NULL;
		bool uid_match = false, seen_body = false;

		for (clistiter *i2 = clist_begin(att->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			struct mailimap_msg_att_static *st;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			st = item->att_data.att_static;
			if (st->att_type == MAILIMAP_MSG_ATT_BODY_SECTION) {
				body = st->att_data.att_body_section;
				seen_body = true;
			} else if (st->att_type == MAILIMAP_MSG_ATT_UID &&
				   st->att_data.att_uid == uid) {
				uid_match = true;
			}
		}
		if (seen_body && uid_match)
			return body != NULL && body->sec_body_part != NULL ?
				BODY_STRING : BODY_NIL;
	}
	return BODY_ABSENT;
}

static int fetch_range(struct imap_backend *ib, uint32_t uid, uint32_t offset,
		       uint32_t len, enum body_presence *body_r)
{
	struct mailimap_fetch_type *ft;
	struct mailimap_set *set;
	clist *result;
	int r;

	ft = imap_fetch_type_body_partial(offset, len);
	set = mailimap_set_new_single(uid);
	if (ft == NULL || set == NULL) {
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		if (set != NULL)
			mailimap_set_free(set);
		return MAILIMAP_ERROR_MEMORY;
	}
	r = imap_uid_fetch(ib->imap, set, ft, &result);
	*body_r = r == MAILIMAP_NO_ERROR ? body_for(result, uid) : BODY_ABSENT;
	if (result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return r;
}

/*
 * Small messages read ahead.
 *
 * An Outlook-like client RETRs every message in order, one command at a
 * time; for small messages the upstream round trip and its per-command
 * cost dominate.  A RETR of a small message therefore asks for it and for
 * the small messages that follow it in the snapshot in one UID FETCH, and
 * keeps the others here until they are asked for.  Memory stays bounded:
 * at most PREFETCH_MESSAGES bodies whose advertised sizes add up to at
 * most PREFETCH_BUDGET.  Each is read as BODY.PEEK[]<0.PREFETCH_BODY_MAX>;
 * one that fills that range (a server that under-announced RFC822.SIZE)
 * is not kept, nor is anything past PREFETCH_HELD_MAX octets in all.  A
 * message still reaches the client only whole, terminator after it.
 */
#define PREFETCH_SMALL (64 * 1024)        /* advertised size to qualify */
#define PREFETCH_BODY_MAX (2 * PREFETCH_SMALL)
#define PREFETCH_BUDGET (256 * 1024)     /* advertised octets per read */
#define PREFETCH_HELD_MAX (2 * PREFETCH_BUDGET) /* octets actually held */
#define PREFETCH_MESSAGES 32

struct prefetch_body {
	uint32_t uid;
	size_t len;
	char *data;
};

struct prefetch_cache {
	struct prefetch_body bodies[PREFETCH_MESSAGES];
	size_t count;
	size_t held;            /* octets in bodies[] */
	/* UIDs the last read asked for: one it did not bring (a NO, an
	 * empty or missing body) is read alone, not in another batch. */
	uint32_t asked_first, asked_last;
	/* The body being received (libetpan hands it over in chunks before
	 * the FETCH response's UID is known). */
	char *cur;
	size_t cur_len;
	bool cur_overflow;
};

static void prefetch_cache_clear(struct prefetch_cache *pc)
{
	for (size_t i = 0; i < pc->count; i++)
		free(pc->bodies[i].data);
	pc->count = 0;
	pc->held = 0;
	free(pc->cur);
	pc->cur = NULL;
	pc->cur_len = 0;
	pc->cur_overflow = false;
}

void prefetch_cache_free(struct prefetch_cache *pc)
{
	if (pc == NULL)
		return;
	prefetch_cache_clear(pc);
	free(pc);
}

/* Whether the last read ahead asked for UID. */
static bool prefetch_asked(const struct prefetch_cache *pc, uint32_t uid)
{
	return pc != NULL && pc->asked_last != 0 &&
	       uid >= pc->asked_first && uid <= pc->asked_last;
}

/* The cached body of UID, or NULL. */
static struct prefetch_body *prefetch_find(struct prefetch_cache *pc,
					   uint32_t uid)
{
	if (pc == NULL)
		return NULL;
	for (size_t i = 0; i < pc->count; i++) {
		if (pc->bodies[i].uid == uid)
			return &pc->bodies[i];
	}
	return NULL;
}

static void prefetch_forget(struct prefetch_cache *pc, struct prefetch_body *b)
{
	pc->held -= b->len;
	free(b->data);
	*b = pc->bodies[--pc->count];
}

static bool prefetch_body_chunk(int att_type,
				struct mailimap_msg_att_body_section *sec,
				const char *bytes, size_t len, void *context)
{
	struct prefetch_cache *pc = context;
	char *grown;

	(void)att_type;
	(void)sec;
	if (len == 0 || pc->cur_overflow)
		return true;
	/* A body that fills the whole range may have been cut short. */
	if (pc->cur_len + len >= PREFETCH_BODY_MAX ||
	    pc->held + pc->cur_len + len > PREFETCH_HELD_MAX) {
		pc->cur_overflow = true;
		return true; /* never false: that would break the session */
	}
	grown = realloc(pc->cur, pc->cur_len + len);
	if (grown == NULL) {
		pc->cur_overflow = true;
		return true;
	}
	memcpy(grown + pc->cur_len, bytes, len);
	pc->cur = grown;
	pc->cur_len += len;
	return true;
}

/* A whole FETCH response: file the body received with it under its UID. */
static void prefetch_att(struct mailimap_msg_att *att, void *context)
{
	struct prefetch_cache *pc = context;
	bool have_uid = false;
	uint32_t uid = 0;

	for (clistiter *it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
		    item->att_data.att_static->att_type ==
		    MAILIMAP_MSG_ATT_UID) {
			uid = item->att_data.att_static->att_data.att_uid;
			have_uid = true;
		}
	}
	/* Empty or NIL bodies are left to the ordinary path, which knows
	 * how to report them. */
	if (have_uid && pc->cur_len > 0 && !pc->cur_overflow &&
	    pc->count < PREFETCH_MESSAGES && prefetch_find(pc, uid) == NULL) {
		pc->bodies[pc->count++] = (struct prefetch_body) {
			.uid = uid, .len = pc->cur_len, .data = pc->cur,
		};
		pc->held += pc->cur_len;
		pc->cur = NULL;
	}
	free(pc->cur);
	pc->cur = NULL;
	pc->cur_len = 0;
	pc->cur_overflow = false;
}

/*
 * The set to read ahead with ENTRY, or NULL when read-ahead does not pay
 * (not a small message, or no small message after it).
 */
static struct mailimap_set *prefetch_set_new(const struct imap_backend *ib,
					     const struct mail_entry *entry,
					     uint32_t *last_uid_r)
{
	struct mailimap_set *set;
	uint64_t budget = entry->size;
	size_t i, n = 1;

	if (entry->size > PREFETCH_SMALL || ib->snap_msgs == NULL ||
	    entry < ib->snap_msgs || entry >= ib->snap_msgs + ib->snap_count)
		return NULL;
	i = (size_t)(entry - ib->snap_msgs) + 1;
	if (i >= ib->snap_count || ib->snap_msgs[i].size > PREFETCH_SMALL)
		return NULL;
	set = mailimap_set_new_single(entry->imap_uid);
	if (set == NULL)
		return NULL;
	for (; i < ib->snap_count && n < PREFETCH_MESSAGES; i++, n++) {
		const struct mail_entry *next = &ib->snap_msgs[i];

		if (next->size > PREFETCH_SMALL ||
		    budget + next->size > PREFETCH_BUDGET)
			break;
		if (mailimap_set_add_single(set, next->imap_uid) != 0) {
			mailimap_set_free(set);
			return NULL;
		}
		budget += next->size;
		*last_uid_r = next->imap_uid;
	}
	return set;
}

/*
 * Read ENTRY and the small messages after it into the cache.  Returns a
 * libetpan code; only session errors matter to the caller, which falls
 * back to the ordinary path whenever ENTRY is not in the cache afterwards.
 */
static int prefetch(struct imap_backend *ib, const struct mail_entry *entry)
{
	struct mailimap_fetch_type *ft;
	struct mailimap_set *set;
	clist *result;
	uint32_t last_uid = entry->imap_uid;
	int r;

	set = prefetch_set_new(ib, entry, &last_uid);
	if (set == NULL)
		return MAILIMAP_NO_ERROR;
	if (ib->cache == NULL)
		ib->cache = calloc(1, sizeof(*ib->cache));
	/* Bounded by the request, whatever RFC822.SIZE said. */
	ft = imap_fetch_type_body_partial(0, PREFETCH_BODY_MAX);
	if (ib->cache == NULL || ft == NULL) {
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		mailimap_set_free(set);
		return MAILIMAP_NO_ERROR; /* the ordinary path will do */
	}
	/* What was read ahead before and not asked for is dropped. */
	prefetch_cache_clear(ib->cache);
	/* The snapshot is in UID order and the set a run of it. */
	ib->cache->asked_first = entry->imap_uid;
	ib->cache->asked_last = last_uid;
	mailimap_set_progress_callback(ib->imap, NULL, ignore_progress, NULL);
	mailimap_set_msg_att_handler(ib->imap, prefetch_att, ib->cache);
	mailimap_set_msg_body_handler(ib->imap, prefetch_body_chunk, ib->cache);
	r = imap_uid_fetch(ib->imap, set, ft, &result);
	if (ib->imap != NULL) {
		mailimap_set_msg_body_handler(ib->imap, NULL, NULL);
		mailimap_set_msg_att_handler(ib->imap, NULL, NULL);
		mailimap_set_progress_callback(ib->imap, NULL, NULL, NULL);
	}
	if (result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	free(ib->cache->cur);
	ib->cache->cur = NULL;
	ib->cache->cur_len = 0;
	/* A NO (some message expunged meanwhile): trust nothing from it. */
	if (r != MAILIMAP_NO_ERROR)
		prefetch_cache_clear(ib->cache);
	return r;
}

/* Serve a message from the cache entry B, which is then dropped. */
static int send_prefetched(struct imap_backend *ib,
			   struct prefetch_body *b, backend_sink_fn *sink,
			   void *ctx, struct backend_error *err)
{
	int r = sink(ctx, b->data, b->len);

	prefetch_forget(ib->cache, b);
	if (r < 0)
		return backend_fail(err, BACKEND_SINK, "client write failed");
	return 0;
}

int imap_fetch(struct backend *be, const struct mail_entry *entry,
	       uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
	       struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct fetch_ctx fc = { .sink = sink, .sink_ctx = ctx };
	struct prefetch_body *b;
	uint64_t delivered = 0, len;
	enum body_presence body;
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not available");
	b = prefetch_find(ib->cache, entry->imap_uid);
	if (b == NULL && first_chunk >= entry->size &&
	    !prefetch_asked(ib->cache, entry->imap_uid)) {
		/* Only a RETR reads ahead; TOP wants a part of one. */
		r = prefetch(ib, entry);
		if (r != MAILIMAP_NO_ERROR && is_session_error(r))
			return session_failed(ib, "UID FETCH", r, BACKEND_TEMP,
					      err);
		b = prefetch_find(ib->cache, entry->imap_uid);
	}
	if (b != NULL)
		return send_prefetched(ib, b, sink, ctx, err);
	len = first_chunk < FETCH_FIRST_MIN ? FETCH_FIRST_MIN : first_chunk;
	for (;;) {
		if (len > FETCH_CHUNK_MAX)
			len = FETCH_CHUNK_MAX;
		if (delivered + len > UINT32_MAX) {
			log_upstream_error(ib, "UID FETCH",
					   "message larger than 4 GiB");
			return backend_fail(err, delivered ? BACKEND_BROKEN :
					    BACKEND_PERM, "message too large");
		}
		fc.chunk_octets = 0;
		mailimap_set_msg_body_handler(ib->imap, fetch_body, &fc);
		r = fetch_range(ib, entry->imap_uid, (uint32_t)delivered,
				(uint32_t)len, &body);
		if (ib->imap != NULL)
			mailimap_set_msg_body_handler(ib->imap, NULL, NULL);

		if (r != MAILIMAP_NO_ERROR) {
			bool started = delivered + fc.chunk_octets > 0;

			if (is_session_error(r))
				return session_failed(ib, "UID FETCH", r,
					started ? BACKEND_BROKEN : BACKEND_TEMP,
					err);
			log_upstream_error(ib, "UID FETCH", server_text(ib));
			if (started)
				return backend_fail(err, BACKEND_BROKEN,
					"upstream failed during the message");
			/* Dovecot answers NO for a message expunged elsewhere. */
			return backend_fail(err, BACKEND_NO_MESSAGE,
				"message no longer exists upstream");
		}
		if (fc.sink_failed)
			return backend_fail(err, BACKEND_SINK,
					    "client write failed");
		if (fc.stopped)
			return 0;
		/*
		 * Dovecot answers "BODY[]<0> NIL" for a message another
		 * client expunged, and nothing at all elsewhere.
		 */
		if (fc.chunk_octets == 0 && delivered == 0 && body != BODY_STRING)
			return backend_fail(err, BACKEND_NO_MESSAGE,
					    "message no longer exists upstream");
		if (body == BODY_ABSENT && fc.chunk_octets == 0) {
			if (delivered == 0)
				return backend_fail(err, BACKEND_NO_MESSAGE,
					"message no longer exists upstream");
			log_upstream_error(ib, "UID FETCH",
					   "message vanished while being read");
			return backend_fail(err, BACKEND_BROKEN,
					    "message vanished upstream");
		}
		delivered += fc.chunk_octets;
		/* A short range is the end; NIL or "" past the end too. */
		if (fc.chunk_octets < len)
			return 0;
		/*
		 * Ask for one octet more than the advertised rest so that a
		 * correct RFC822.SIZE ends without an extra empty round trip.
		 */
		len = entry->size >= delivered ? entry->size - delivered + 1 : 0;
		if (len < FETCH_NEXT_MIN)
			len = FETCH_NEXT_MIN;
	}
}
