/*
 * imap_body.c - UID FETCH BODY.PEEK[] sent and its responses parsed here,
 * bodies streamed to the caller from imap_reader's buffer.
 *
 * The grammar taken is what a FETCH of bodies can bring: untagged FETCH
 * responses whose items are UID, the body (a literal, a quoted string or
 * NIL) and anything else as a skipped value (unsolicited FLAGS), other
 * untagged responses ignored (EXISTS, EXPUNGE, OK), BYE, and the tagged
 * end.  Anything else is a parse or protocol error that ends the session,
 * as it would in libetpan.
 */
#include <stdio.h>
#include <string.h>

#include "imap_body.h"
#include "imap_reader.h"

#define BODY_TAG "pgbody"

struct body_read {
	struct imap_reader rd;
	const struct imap_body_handler *h;
	void *ctx;
	uint32_t uid;                       /* of the FETCH being read */
	enum imap_body_presence presence;   /* of the FETCH being read */
	bool enough;                        /* drop the bodies from now on */
	bool aborted;
};

/* Whether to go on after the caller's verdict V. */
static bool heed(struct body_read *br, enum imap_body_verdict v)
{
	switch (v) {
	case IMAP_BODY_MORE:
		return true;
	case IMAP_BODY_ENOUGH:
		br->enough = true;
		return true;
	case IMAP_BODY_ABORT:
		break;
	}
	br->aborted = true;
	return false;
}

/* An imap_reader_fn: a piece of the body being read, to the caller. */
static bool deliver(void *context, const char *data, size_t len)
{
	struct body_read *br = context;

	if (br->enough || len == 0)
		return true;
	return heed(br, br->h->body(br->ctx, br->uid, data, len));
}

/* A body sent as a quoted string: delivered unescaped, run by run. */
static int quoted_body(struct body_read *br, const char **p, const char *end)
{
	const char *q = *p + 1, *run = q;

	for (; q < end && *q != '"'; q++) {
		if (*q != '\\')
			continue;
		if (!deliver(br, run, (size_t)(q - run)))
			return IMAP_READER_STOPPED;
		if (++q >= end)
			return MAILIMAP_ERROR_PARSE;
		run = q; /* the escaped octet starts the next run */
	}
	if (q >= end)
		return MAILIMAP_ERROR_PARSE;
	if (!deliver(br, run, (size_t)(q - run)))
		return IMAP_READER_STOPPED;
	*p = q + 1;
	return MAILIMAP_NO_ERROR;
}

/*
 * The items of one FETCH response, P at its "(".  A literal ends the
 * line it is announced on; it is read (a body's to the caller, any other
 * skipped) and the items go on on the next line.
 */
static int read_fetch(struct body_read *br, const char *p, const char *end)
{
	br->uid = 0;
	br->presence = IMAP_BODY_ABSENT;
	if (p >= end || *p++ != '(')
		return MAILIMAP_ERROR_PARSE;
	for (;;) {
		const char *name;
		size_t name_len, at;
		int64_t literal;
		bool is_body;
		int r;

		if (p < end && *p == ' ')
			p++;
		if (p >= end)
			return MAILIMAP_ERROR_PARSE;
		if (*p == ')')
			break;
		name = p;
		name_len = imap_item_name(p, end);
		p += name_len;
		if (name_len == 0 || p >= end || *p++ != ' ')
			return MAILIMAP_ERROR_PARSE;
		if (imap_item_is(name, name_len, "UID")) {
			if (!imap_eat_number(&p, end, &br->uid))
				return MAILIMAP_ERROR_PARSE;
			continue;
		}
		/* BODY[] or BODY[]<offset>: the only section asked for. */
		is_body = imap_eat_word(&name, name + name_len, "BODY[]");
		literal = imap_trailing_literal(p, (size_t)(end - p), &at);
		if (literal >= 0 && at == 0) {
			if (is_body) {
				br->presence = IMAP_BODY_STRING;
				if (br->h->literal != NULL && !br->enough &&
				    !heed(br, br->h->literal(br->ctx, br->uid,
							     (uint64_t)literal)))
					return IMAP_READER_STOPPED;
			}
			r = imap_reader_literal(&br->rd, (uint64_t)literal,
						is_body ? deliver : NULL,
						br);
			if (r != MAILIMAP_NO_ERROR)
				return r;
			r = imap_reader_raw_line(&br->rd, &p, &name_len);
			if (r != MAILIMAP_NO_ERROR)
				return r;
			end = p + name_len;
			continue;
		}
		if (!is_body) {
			if (!imap_skip_value(&p, end))
				return MAILIMAP_ERROR_PARSE;
		} else if (*p == '"') {
			br->presence = IMAP_BODY_STRING;
			r = quoted_body(br, &p, end);
			if (r != MAILIMAP_NO_ERROR)
				return r;
		} else if (imap_eat_word(&p, end, "NIL")) {
			if (br->presence == IMAP_BODY_ABSENT)
				br->presence = IMAP_BODY_NIL;
		} else {
			return MAILIMAP_ERROR_PARSE;
		}
	}
	if (p + 1 != end)
		return MAILIMAP_ERROR_PARSE; /* something after the ")" */
	br->h->fetch_done(br->ctx, br->uid, br->presence);
	return MAILIMAP_NO_ERROR;
}

/* An untagged response that is not ours to read: skipped, with any
 * literals it carries. */
static int skip_response(struct body_read *br, const char *line, size_t len)
{
	for (;;) {
		size_t at;
		int64_t literal = imap_trailing_literal(line, len, &at);
		int r;

		if (literal < 0)
			return MAILIMAP_NO_ERROR;
		r = imap_reader_literal(&br->rd, (uint64_t)literal, NULL, NULL);
		if (r == MAILIMAP_NO_ERROR)
			r = imap_reader_raw_line(&br->rd, &line, &len);
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
}

static int read_tagged(struct imap_body_result *result, const char *p,
		       const char *end)
{
	if (imap_eat_word(&p, end, "OK"))
		result->state = MAILIMAP_RESP_COND_STATE_OK;
	else if (imap_eat_word(&p, end, "NO"))
		result->state = MAILIMAP_RESP_COND_STATE_NO;
	else if (imap_eat_word(&p, end, "BAD"))
		result->state = MAILIMAP_RESP_COND_STATE_BAD;
	else
		return MAILIMAP_ERROR_PARSE;
	if (p < end && *p != ' ')
		return MAILIMAP_ERROR_PARSE;
	if (p < end)
		p++;
	snprintf(result->text, sizeof(result->text), "%.*s",
		 (int)(end - p), p);
	return MAILIMAP_NO_ERROR;
}

static int read_responses(struct body_read *br,
			  struct imap_body_result *result)
{
	int r = MAILIMAP_NO_ERROR;

	while (result->state < 0) {
		const char *line, *p, *end;
		size_t len;
		uint32_t n;

		r = imap_reader_raw_line(&br->rd, &line, &len);
		if (r != MAILIMAP_NO_ERROR)
			return r;
		p = line;
		end = line + len;
		if (imap_eat_word(&p, end, "* ")) {
			if (imap_eat_number(&p, end, &n) &&
			    imap_eat_word(&p, end, " FETCH "))
				r = read_fetch(br, p, end);
			else if (imap_eat_word(&p, end, "BYE"))
				r = MAILIMAP_ERROR_FATAL;
			else
				r = skip_response(br, line, len);
		} else if (imap_eat_word(&p, end, BODY_TAG " ")) {
			r = read_tagged(result, p, end);
		} else {
			r = MAILIMAP_ERROR_PROTOCOL;
		}
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
	return r;
}

int imap_body_fetch(mailimap *imap, const char *uids, uint32_t offset,
		    uint32_t len, const struct imap_body_handler *h, void *ctx,
		    struct imap_body_result *result)
{
	struct body_read br = { .h = h, .ctx = ctx };
	char command[1024];
	int n, r;

	*result = (struct imap_body_result) { .state = -1 };
	if (len == 0)
		n = snprintf(command, sizeof(command),
			     BODY_TAG " UID FETCH %s (BODY.PEEK[])\r\n", uids);
	else
		n = snprintf(command, sizeof(command),
			     BODY_TAG " UID FETCH %s (BODY.PEEK[]<%u.%u>)\r\n",
			     uids, offset, len);
	if (n < 0 || (size_t)n >= sizeof(command))
		return MAILIMAP_ERROR_MEMORY;
	if (mailstream_write(imap->imap_stream, command, (size_t)n) < 0 ||
	    mailstream_flush(imap->imap_stream) < 0)
		return MAILIMAP_ERROR_STREAM;
	r = imap_reader_init(&br.rd, imap->imap_stream, IMAP_READER_SIZE);
	if (r == MAILIMAP_NO_ERROR)
		r = read_responses(&br, result);
	if (r == MAILIMAP_NO_ERROR)
		r = imap_reader_give_back(&br.rd);
	imap_reader_free(&br.rd);
	if (br.aborted) {
		result->aborted = true;
		return MAILIMAP_ERROR_STREAM;
	}
	return r == IMAP_READER_STOPPED ? MAILIMAP_ERROR_STREAM : r;
}
