/*
 * imap_fetch.c - reading a message: one BODY.PEEK[] streamed to the sink
 * for a RETR, BODY.PEEK ranges for a TOP, and the read-ahead cache that
 * answers a run of small RETRs, or of TOPs, with one UID FETCH.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_body.h"
#include "imap_internal.h"
#include "log.h"

#define FETCH_FIRST_MIN (4 * 1024)
#define FETCH_NEXT_MIN (64 * 1024)
#define FETCH_CHUNK_MAX (4 * 1024 * 1024)
/*
 * A body that goes on on a new connection after a cut starts FETCH_TAIL
 * octets before the cut, and must repeat those the client already had.
 * The last FETCH_HELD octets read of a literal go to the sink only once
 * more of it has come: a server that is stopped may write its BYE into
 * the literal before it closes (Dovecot does), and that text must not
 * reach the client as part of the message.
 */
#define FETCH_TAIL 512
#define FETCH_HELD 512

struct fetch_ctx {
	uint32_t uid;
	backend_sink_fn *sink;
	void *sink_ctx;
	uint64_t chunk_octets;  /* of the current part that reached the sink */
	uint64_t unchecked;     /* delivered before the response's UID came */
	int64_t announced;      /* the part's literal as first announced, or -1 */
	uint64_t literal_left;  /* of the literal being read */
	/* An answer on a new connection after a cut: the literal it must
	 * announce (-1: no such answer), and how many of its first octets
	 * must repeat the end of TAIL instead of going to the sink. */
	int64_t expect;
	size_t repeat;
	/* The last octets of the message that reached the sink. */
	char tail[FETCH_TAIL];
	size_t tail_len;
	/* Octets read and not yet sent on, the literal's latest. */
	char held[FETCH_HELD];
	size_t held_len;
	enum imap_body_presence presence;
	bool wrong_uid;         /* a body went out that was another message's */
	bool diverged;          /* a resumed answer was not the message's rest */
	bool stopped;           /* sink has all it wants: discard the rest */
	bool sink_failed;
};

/* Remember the end of what reached the sink. */
static void keep_tail(struct fetch_ctx *fc, const char *data, size_t len)
{
	size_t keep;

	if (len >= FETCH_TAIL) {
		memcpy(fc->tail, data + len - FETCH_TAIL, FETCH_TAIL);
		fc->tail_len = FETCH_TAIL;
		return;
	}
	keep = fc->tail_len < FETCH_TAIL - len ? fc->tail_len : FETCH_TAIL - len;
	memmove(fc->tail, fc->tail + fc->tail_len - keep, keep);
	memcpy(fc->tail + keep, data, len);
	fc->tail_len = keep + len;
}

/* Octets of the body to the sink; false once it wants no more. */
static bool to_sink(struct fetch_ctx *fc, uint32_t uid, const char *data,
		    size_t len)
{
	int r;

	if (fc->stopped || fc->sink_failed)
		return false;
	if (len == 0)
		return true;
	fc->chunk_octets += len;
	if (uid == 0)
		fc->unchecked += len;
	r = fc->sink(fc->sink_ctx, data, len);
	if (r < 0) {
		fc->sink_failed = true;
		return false;
	}
	keep_tail(fc, data, len);
	if (r > 0)
		fc->stopped = true;
	return r == 0;
}

/*
 * A piece of the literal, not its end: to the sink but its last
 * FETCH_HELD octets (with those held before), which are held instead.
 */
static void hold_back(struct fetch_ctx *fc, uint32_t uid, const char *data,
		      size_t len)
{
	size_t out, from_held;

	if (fc->held_len + len <= FETCH_HELD) {
		memcpy(fc->held + fc->held_len, data, len);
		fc->held_len += len;
		return;
	}
	out = fc->held_len + len - FETCH_HELD;
	from_held = out < fc->held_len ? out : fc->held_len;
	if (!to_sink(fc, uid, fc->held, from_held) ||
	    !to_sink(fc, uid, data, out - from_held))
		return;
	memmove(fc->held, fc->held + from_held, fc->held_len - from_held);
	fc->held_len -= from_held;
	memcpy(fc->held + fc->held_len, data + (out - from_held),
	       len - (out - from_held));
	fc->held_len = FETCH_HELD;
}

static enum imap_body_verdict fetch_literal(void *context, uint32_t uid,
					    uint64_t size)
{
	struct fetch_ctx *fc = context;

	if (uid != 0 && uid != fc->uid)
		return IMAP_BODY_MORE;
	fc->literal_left = size;
	if (fc->expect < 0) {
		fc->announced = size <= INT64_MAX ? (int64_t)size : -1;
		return IMAP_BODY_MORE;
	}
	if (size != (uint64_t)fc->expect) {
		fc->diverged = true;
		return IMAP_BODY_ABORT;
	}
	return IMAP_BODY_MORE;
}

static enum imap_body_verdict fetch_body(void *context, uint32_t uid,
					 const char *data, size_t len)
{
	struct fetch_ctx *fc = context;
	/* A quoted body (no literal) comes whole, in one line. */
	bool ends = len >= fc->literal_left;

	if (uid != 0 && uid != fc->uid)
		return IMAP_BODY_MORE; /* only ours reaches the client */
	if (fc->stopped)
		return IMAP_BODY_ENOUGH;
	fc->literal_left = ends ? 0 : fc->literal_left - len;
	if (fc->repeat > 0) {
		size_t n = len < fc->repeat ? len : fc->repeat;

		if (memcmp(data, fc->tail + fc->tail_len - fc->repeat,
			   n) != 0) {
			fc->diverged = true;
			return IMAP_BODY_ABORT;
		}
		fc->repeat -= n;
		data += n;
		len -= n;
	}
	if (!ends) {
		hold_back(fc, uid, data, len);
	} else {
		/* The literal is whole: nothing after it can be taken for it. */
		if (to_sink(fc, uid, fc->held, fc->held_len))
			to_sink(fc, uid, data, len);
		fc->held_len = 0;
	}
	/* The client is gone: reading the rest is no use. */
	if (fc->sink_failed)
		return IMAP_BODY_ABORT;
	return fc->stopped ? IMAP_BODY_ENOUGH : IMAP_BODY_MORE;
}

static void fetch_done(void *context, uint32_t uid,
		       enum imap_body_presence presence)
{
	struct fetch_ctx *fc = context;

	/* A response without a UID (RFC 3501 wants one) can only be the
	 * answer about the one message asked for. */
	if (uid == fc->uid || uid == 0) {
		if (presence != IMAP_BODY_ABSENT)
			fc->presence = presence;
	} else if (fc->unchecked > 0) {
		/* Its body came before its UID and has gone out. */
		fc->wrong_uid = true;
	}
	fc->unchecked = 0;
}

static const struct imap_body_handler fetch_handler = {
	.literal = fetch_literal, .body = fetch_body, .fetch_done = fetch_done,
};

/* One UID FETCH of FC's message: BODY.PEEK[], or BODY.PEEK[]<OFFSET.LEN>
 * when LEN > 0. */
static int fetch_command(struct imap_backend *ib, struct fetch_ctx *fc,
			 uint32_t offset, uint32_t len,
			 struct imap_body_result *result)
{
	char uid[16];

	snprintf(uid, sizeof(uid), "%u", fc->uid);
	fc->unchecked = 0;
	fc->literal_left = 0;
	fc->held_len = 0; /* what a cut answer held is asked for again */
	fc->presence = IMAP_BODY_ABSENT;
	return imap_body_fetch(ib->imap, uid, offset, len, &fetch_handler, fc,
			       result);
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
 *
 * TOPs going through the messages one after another (a client fetching
 * headers only) read ahead the same way, but the first range of each
 * message, as the TOP that triggered it asked for: a body shorter than
 * the range is the whole message, one that fills it is kept as a prefix,
 * which answers a TOP that wants no more and is continued with ranges for
 * one that does.  A RETR never takes a prefix.
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
	bool whole;  /* else the first LEN octets of a longer message */
};

struct prefetch_cache {
	struct prefetch_body bodies[PREFETCH_MESSAGES];
	size_t count;
	size_t held;            /* octets in bodies[] */
	/* UIDs the last read asked for: one it did not bring (a NO, an
	 * empty or missing body) is read alone, not in another batch. */
	uint32_t asked_first, asked_last;
	/* The range the last read asked for of each message, and whether a
	 * body that fills it is kept as a prefix (TOP) or dropped (RETR). */
	uint64_t range;
	bool keep_prefixes;
	/* The body being received (it comes in pieces, possibly before
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

static enum imap_body_verdict prefetch_body(void *context, uint32_t uid,
					    const char *data, size_t len)
{
	struct prefetch_cache *pc = context;
	char *grown;

	(void)uid;
	if (pc->cur_overflow)
		return IMAP_BODY_MORE;
	/* A body that fills the whole range may have been cut short. */
	if ((!pc->keep_prefixes && pc->cur_len + len >= pc->range) ||
	    pc->cur_len + len > pc->range ||
	    pc->held + pc->cur_len + len > PREFETCH_HELD_MAX) {
		pc->cur_overflow = true;
		return IMAP_BODY_MORE;
	}
	grown = realloc(pc->cur, pc->cur_len + len);
	if (grown == NULL) {
		pc->cur_overflow = true;
		return IMAP_BODY_MORE;
	}
	memcpy(grown + pc->cur_len, data, len);
	pc->cur = grown;
	pc->cur_len += len;
	return IMAP_BODY_MORE;
}

/* A whole FETCH response: file the body received with it under its UID. */
static void prefetch_done(void *context, uint32_t uid,
			  enum imap_body_presence presence)
{
	struct prefetch_cache *pc = context;

	/* Empty or NIL bodies are left to the ordinary path, which knows
	 * how to report them. */
	if (uid != 0 && presence == IMAP_BODY_STRING && pc->cur_len > 0 &&
	    !pc->cur_overflow && pc->count < PREFETCH_MESSAGES &&
	    uid >= pc->asked_first && uid <= pc->asked_last &&
	    prefetch_find(pc, uid) == NULL) {
		pc->bodies[pc->count++] = (struct prefetch_body) {
			.uid = uid, .len = pc->cur_len, .data = pc->cur,
			.whole = pc->cur_len < pc->range,
		};
		pc->held += pc->cur_len;
		pc->cur = NULL;
	}
	free(pc->cur);
	pc->cur = NULL;
	pc->cur_len = 0;
	pc->cur_overflow = false;
}

static const struct imap_body_handler prefetch_handler = {
	.body = prefetch_body, .fetch_done = prefetch_done,
};

/* The octets read ahead for ENTRY: all of a small message for a RETR
 * (HEAD 0), at most HEAD of any for a TOP; 0 when it does not qualify. */
static uint64_t ahead_octets(const struct mail_entry *entry, uint64_t head)
{
	if (head == 0)
		return entry->size <= PREFETCH_SMALL ? entry->size : 0;
	return entry->size < head ? entry->size : head;
}

/* The message after ENTRY in the snapshot handed out, or NULL. */
static const struct mail_entry *snap_next(const struct imap_backend *ib,
					  const struct mail_entry *entry)
{
	if (ib->snap_msgs == NULL || entry < ib->snap_msgs ||
	    entry + 1 >= ib->snap_msgs + ib->snap_count)
		return NULL;
	return entry + 1;
}

/*
 * The UIDs to read ahead with ENTRY, as a sequence set in SET, and the
 * last of them; false when read-ahead does not pay (ENTRY does not
 * qualify, or the message after it does not).  HEAD as above.
 */
static bool prefetch_set(const struct imap_backend *ib,
			 const struct mail_entry *entry, uint64_t head,
			 char *set, size_t size, uint32_t *last_uid_r)
{
	const struct mail_entry *next = snap_next(ib, entry), *end;
	uint64_t budget = ahead_octets(entry, head);
	size_t n = 1, len;

	if (budget == 0 || next == NULL || ahead_octets(next, head) == 0)
		return false;
	end = ib->snap_msgs + ib->snap_count;
	len = (size_t)snprintf(set, size, "%u", entry->imap_uid);
	for (; next < end && n < PREFETCH_MESSAGES; next++, n++) {
		uint64_t octets = ahead_octets(next, head);

		if (octets == 0 || budget + octets > PREFETCH_BUDGET)
			break;
		/* 32 UIDs of at most 10 digits always fit the caller's set. */
		len += (size_t)snprintf(set + len, size - len, ",%u",
					next->imap_uid);
		budget += octets;
		*last_uid_r = next->imap_uid;
	}
	return true;
}

/*
 * Read ENTRY and the messages after it into the cache: small ones whole
 * (HEAD 0, a RETR), or the first HEAD octets of each (a TOP).  Returns a
 * libetpan code; only session errors matter to the caller, which falls
 * back to the ordinary path whenever ENTRY is not in the cache afterwards.
 */
static int prefetch(struct imap_backend *ib, const struct mail_entry *entry,
		    uint64_t head)
{
	struct imap_body_result result;
	char set[PREFETCH_MESSAGES * 11 + 1];
	uint32_t last_uid = entry->imap_uid;
	int r;

	if (!prefetch_set(ib, entry, head, set, sizeof(set), &last_uid))
		return MAILIMAP_NO_ERROR;
	if (ib->cache == NULL)
		ib->cache = calloc(1, sizeof(*ib->cache));
	if (ib->cache == NULL)
		return MAILIMAP_NO_ERROR; /* the ordinary path will do */
	/* What was read ahead before and not asked for is dropped. */
	prefetch_cache_clear(ib->cache);
	/* The snapshot is in UID order and the set a run of it. */
	ib->cache->asked_first = entry->imap_uid;
	ib->cache->asked_last = last_uid;
	ib->cache->keep_prefixes = head != 0;
	ib->cache->range = head != 0 ? head : PREFETCH_BODY_MAX;
	/* Bounded by the request, whatever RFC822.SIZE said. */
	r = imap_body_fetch(ib->imap, set, 0, (uint32_t)ib->cache->range,
			    &prefetch_handler, ib->cache, &result);
	free(ib->cache->cur);
	ib->cache->cur = NULL;
	ib->cache->cur_len = 0;
	/* A NO (some message expunged meanwhile): trust nothing from it. */
	if (r != MAILIMAP_NO_ERROR ||
	    result.state != MAILIMAP_RESP_COND_STATE_OK)
		prefetch_cache_clear(ib->cache);
	return r;
}

/* A resumed answer that was not the rest of the message (see
 * fetch_part()): what reached the client must not be ended as if whole. */
static int rest_diverged(struct imap_backend *ib, struct backend_error *err)
{
	log_upstream_error(ib, "UID FETCH", "the answer on the new connection "
			   "is not the rest of the message");
	drop_connection(ib);
	return backend_fail(err, BACKEND_BROKEN, "upstream message changed");
}

/*
 * What one fetch_command() came to: 0 when the body (or the part of it)
 * arrived, or -1 with ERR set.  DELIVERED is what earlier parts gave.
 */
static int part_outcome(struct imap_backend *ib, const struct fetch_ctx *fc,
			uint64_t delivered, int r,
			const struct imap_body_result *result,
			struct backend_error *err)
{
	bool started = delivered + fc->chunk_octets > 0;

	if (fc->sink_failed) {
		/* The rest of the body is still on its way. */
		if (result->aborted)
			drop_connection(ib);
		return backend_fail(err, BACKEND_SINK, "client write failed");
	}
	if (fc->diverged)
		return rest_diverged(ib, err);
	if (r != MAILIMAP_NO_ERROR)
		return session_failed(ib, "UID FETCH", r,
				      started ? BACKEND_BROKEN : BACKEND_TEMP,
				      err);
	if (fc->wrong_uid) {
		log_upstream_error(ib, "UID FETCH",
				   "a body came for another message");
		drop_connection(ib);
		return backend_fail(err, BACKEND_BROKEN,
				    "upstream sent another message");
	}
	if (result->state != MAILIMAP_RESP_COND_STATE_OK) {
		log_upstream_error(ib, "UID FETCH", result->text);
		if (started)
			return backend_fail(err, BACKEND_BROKEN,
				"upstream failed during the message");
		/* Dovecot answers NO for a message expunged elsewhere. */
		return backend_fail(err, BACKEND_NO_MESSAGE,
				    "message no longer exists upstream");
	}
	return 0;
}

/*
 * Whether the failed attempt at a part can go on on a new connection from
 * where it was cut: the connection was lost (a transport failure or BYE,
 * not a server that broke the protocol) inside the body's literal or
 * after it, or before the literal of a part after the first began; the
 * part's offsets fit IMAP's 32-bit partial fetch; and a resume is
 * allowed.  Where nothing reached the client, imap_fetch() repeats the
 * whole command instead.
 */
static bool cut_resumable(const struct imap_backend *ib,
			  const struct fetch_ctx *fc, int r, uint64_t offset,
			  const struct backend_error *err)
{
	return (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_FATAL) &&
		err->status == BACKEND_BROKEN && !fc->sink_failed &&
		!fc->wrong_uid && !fc->diverged &&
		(fc->announced >= 0 ?
		 offset + (uint64_t)fc->announced <= UINT32_MAX :
		 fc->chunk_octets == 0) &&
		ib->imap == NULL && imap_resumable(ib);
}

/*
 * A part of FC's message to the sink: BODY.PEEK[], or
 * BODY.PEEK[]<OFFSET.LEN> when LEN > 0, the OFFSET octets before it having
 * reached the sink.  0, with fc->chunk_octets the part's octets, or -1
 * with ERR set.
 *
 * A connection lost in the middle of the body (a server restarted or
 * failed over) need not cost the client the message.  UID and
 * UIDVALIDITY name one immutable message (RFC 3501 2.3.1.1), and
 * imap_resume() checks the UIDVALIDITY, so its rest is asked for on a new
 * connection, starting FETCH_TAIL octets early: the new answer must
 * announce exactly that many octets and repeat the end of what the client
 * already has, or the session ends as before, without a terminator.  A
 * stretch the first connection had mangled before it went (a literal
 * shorter than announced, then the response's end read as body) does not
 * repeat, and is never completed as if whole.
 */
static int fetch_part(struct imap_backend *ib, struct fetch_ctx *fc,
		      uint32_t offset, uint32_t len, struct backend_error *err)
{
	struct imap_body_result result;
	struct backend_error ignored;
	uint64_t got, rest;
	int r;

	fc->chunk_octets = 0;
	fc->announced = -1;
	fc->expect = -1;
	fc->repeat = 0;
	r = fetch_command(ib, fc, offset, len, &result);
	while (part_outcome(ib, fc, offset, r, &result, err) < 0) {
		/* Lost while the rest of a range was drained for a TOP whose
		 * lines have all gone out: the next command reconnects. */
		if (fc->stopped && err->status == BACKEND_BROKEN &&
		    (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_FATAL))
			return 0;
		if (!cut_resumable(ib, fc, r, offset, err) ||
		    imap_resume(ib, &ignored) < 0)
			return -1;
		got = fc->chunk_octets;
		log_info("event=upstream_fetch_resumed uid=%u octet=%" PRIu64,
			 fc->uid, offset + got);
		if (fc->announced < 0) {
			/* Nothing of this part had come: ask again. */
			r = fetch_command(ib, fc, offset, len, &result);
			continue;
		}
		rest = (uint64_t)fc->announced - got;
		/* The tail holds the octets just before the cut. */
		fc->repeat = fc->tail_len;
		fc->expect = (int64_t)(rest + fc->repeat);
		r = fetch_command(ib, fc, (uint32_t)(offset + got - fc->repeat),
				  (uint32_t)(rest + fc->repeat), &result);
	}
	/* A resumed answer must have brought all of the rest: not NIL, not
	 * a quoted string of another length. */
	if (fc->expect >= 0 && (fc->repeat > 0 ||
				fc->chunk_octets != (uint64_t)fc->announced))
		return rest_diverged(ib, err);
	return 0;
}

/* A RETR: the whole message in one command, whatever size was listed. */
static int fetch_whole(struct imap_backend *ib, struct fetch_ctx *fc,
		       struct backend_error *err)
{
	if (fetch_part(ib, fc, 0, 0, err) < 0)
		return -1;
	/* Dovecot answers "BODY[] NIL" for a message another client
	 * expunged, other servers nothing at all. */
	if (fc->presence != IMAP_BODY_STRING && fc->chunk_octets == 0)
		return backend_fail(err, BACKEND_NO_MESSAGE,
				    "message no longer exists upstream");
	return 0;
}

/* The first range of a TOP that estimated FIRST_CHUNK octets. */
static uint64_t first_range(uint64_t first_chunk)
{
	return first_chunk < FETCH_FIRST_MIN ? FETCH_FIRST_MIN : first_chunk;
}

/*
 * The range after one of LEN octets that ended at DELIVERED: twice as long
 * (FETCH_NEXT_MIN at least), or, where doubling would pass the end, one
 * octet more than the advertised rest, so that a correct RFC822.SIZE ends
 * without an extra empty round trip.  Past the end (a server that
 * announced too little), doubling goes on.
 */
static uint64_t next_range(uint64_t len, uint64_t size, uint64_t delivered)
{
	uint64_t rest = size >= delivered ? size - delivered + 1 : 0;

	len = 2 * len < FETCH_NEXT_MIN ? FETCH_NEXT_MIN : 2 * len;
	return rest >= FETCH_NEXT_MIN && rest < len ? rest : len;
}

/*
 * A TOP: ranges, the first sized by the caller's estimate, so that a few
 * lines of a big message do not bring all of it.  After the sink has
 * enough, the rest of the current range is read and dropped (at most
 * FETCH_CHUNK_MAX) to keep the session, so a range that falls short is
 * followed by one twice its size, not by the rest of the message: a TOP
 * whose lines are longer than estimated usually wants a little more.
 * DELIVERED octets went to the sink already (a prefix read ahead); the
 * first range starts after them and is FIRST_CHUNK long.
 */
static int fetch_ranges(struct imap_backend *ib, struct fetch_ctx *fc,
			uint64_t size, uint64_t delivered, uint64_t first_chunk,
			struct backend_error *err)
{
	uint64_t len;

	len = first_range(first_chunk);
	for (;;) {
		if (len > FETCH_CHUNK_MAX)
			len = FETCH_CHUNK_MAX;
		if (delivered + len > UINT32_MAX) {
			log_upstream_error(ib, "UID FETCH",
					   "message larger than 4 GiB");
			return backend_fail(err, delivered ? BACKEND_BROKEN :
					    BACKEND_PERM, "message too large");
		}
		if (fetch_part(ib, fc, (uint32_t)delivered, (uint32_t)len,
			       err) < 0)
			return -1;
		if (fc->stopped)
			return 0;
		if (fc->chunk_octets == 0 && fc->presence != IMAP_BODY_STRING) {
			if (delivered == 0)
				return backend_fail(err, BACKEND_NO_MESSAGE,
					"message no longer exists upstream");
			/* NIL past the end is the end; nothing at all is
			 * a message that vanished while being read. */
			if (fc->presence == IMAP_BODY_ABSENT) {
				log_upstream_error(ib, "UID FETCH",
					"message vanished while being read");
				return backend_fail(err, BACKEND_BROKEN,
						    "message vanished upstream");
			}
		}
		delivered += fc->chunk_octets;
		/* A short range is the end; NIL or "" past the end too. */
		if (fc->chunk_octets < len)
			return 0;
		len = next_range(len, size, delivered);
	}
}

/*
 * Serve a message from the cache entry B, which is then dropped: all of
 * it, or a prefix that the rest follows in ranges while the sink wants
 * more.
 */
static int send_prefetched(struct imap_backend *ib, struct prefetch_body *b,
			   struct fetch_ctx *fc, uint64_t size,
			   struct backend_error *err)
{
	uint64_t len = b->len;
	bool whole = b->whole;
	int r = fc->sink(fc->sink_ctx, b->data, b->len);

	if (r >= 0)
		keep_tail(fc, b->data, b->len);
	prefetch_forget(ib->cache, b);
	if (r < 0)
		return backend_fail(err, BACKEND_SINK, "client write failed");
	if (r > 0 || whole)
		return 0;
	return fetch_ranges(ib, fc, size, len, next_range(len, size, len),
			    err);
}

/* One attempt at imap_fetch() on the current connection. */
static int fetch_once(struct imap_backend *ib, const struct mail_entry *entry,
		      uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
		      struct backend_error *err)
{
	struct fetch_ctx fc = {
		.uid = entry->imap_uid, .sink = sink, .sink_ctx = ctx,
	};
	const struct mail_entry *next;
	struct prefetch_body *b;
	bool retr = first_chunk >= entry->size, heads;
	/* What a read ahead asks of each message: 0, all of a small one. */
	uint64_t head = retr ? 0 : first_range(first_chunk);
	int r;

	/* A TOP going through the messages in order, asking for no more
	 * than a small message's worth. */
	heads = !retr && head <= PREFETCH_SMALL &&
		entry->imap_uid == ib->fetch_next_uid;
	next = snap_next(ib, entry);
	ib->fetch_next_uid = next != NULL ? next->imap_uid : 0;
	b = prefetch_find(ib->cache, entry->imap_uid);
	if (b != NULL && retr && !b->whole) {
		prefetch_forget(ib->cache, b);
		b = NULL;
	}
	if (b == NULL && (retr || heads) &&
	    !prefetch_asked(ib->cache, entry->imap_uid)) {
		r = prefetch(ib, entry, head);
		if (r != MAILIMAP_NO_ERROR && is_session_error(r))
			return session_failed(ib, "UID FETCH", r, BACKEND_TEMP,
					      err);
		b = prefetch_find(ib->cache, entry->imap_uid);
	}
	if (b != NULL)
		return send_prefetched(ib, b, &fc, entry->size, err);
	if (retr)
		return fetch_whole(ib, &fc, err);
	return fetch_ranges(ib, &fc, entry->size, 0, first_chunk, err);
}

int imap_fetch(struct backend *be, const struct mail_entry *entry,
	       uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
	       struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	int r;

	if (imap_resume(ib, err) < 0)
		return -1;
	r = fetch_once(ib, entry, first_chunk, sink, ctx, err);
	/*
	 * A connection that failed before the first octet reached the client
	 * was most likely closed by the server between commands (a restart,
	 * a failover, an idle limit): once more on a new one.
	 */
	if (r < 0 && imap_retry_possible(ib, err)) {
		if (imap_resume(ib, err) < 0)
			return -1;
		r = fetch_once(ib, entry, first_chunk, sink, ctx, err);
	}
	return r;
}
