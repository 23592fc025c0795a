/*
 * imap_body.h - message bodies by UID FETCH BODY.PEEK[], parsed by popgate.
 *
 * Every octet a client downloads passes through here, so the response is
 * read by imap_reader in large pieces and each piece of a body goes to the
 * caller straight from the reader's buffer, not through libetpan's parser
 * and its two intermediate copies.  One command covers one message or a
 * run of them (the read-ahead); the caller sees each FETCH response's body
 * in pieces, then the end of that response with its UID.
 */
#ifndef POPGATE_IMAP_BODY_H
#define POPGATE_IMAP_BODY_H

#include <stdint.h>

#include <libetpan/libetpan.h>

enum imap_body_presence {
	IMAP_BODY_ABSENT, /* the FETCH response had no body (flag updates) */
	IMAP_BODY_NIL,    /* BODY[] NIL: past the end, or expunged */
	IMAP_BODY_STRING, /* a literal or quoted string, possibly empty */
};

/* What the caller's body() answers for a piece. */
enum imap_body_verdict {
	IMAP_BODY_MORE,    /* go on */
	IMAP_BODY_ENOUGH,  /* read the rest of the command, drop the bodies */
	IMAP_BODY_ABORT,   /* stop reading now: the session is given up */
};

struct imap_body_handler {
	/* Optional: the body of the FETCH response being read comes as a
	 * literal of SIZE octets (UID as for body()).  Called before its
	 * first piece; IMAP_BODY_ENOUGH or _ABORT as for body(). */
	enum imap_body_verdict (*literal)(void *ctx, uint32_t uid,
					  uint64_t size);
	/* A piece of the body of the FETCH response being read; UID is the
	 * response's UID when it came before the body, else 0. */
	enum imap_body_verdict (*body)(void *ctx, uint32_t uid,
				       const char *data, size_t len);
	/* The end of a FETCH response: its UID (0 without one) and whether
	 * and how it carried a body. */
	void (*fetch_done)(void *ctx, uint32_t uid,
			   enum imap_body_presence presence);
};

struct imap_body_result {
	int state;       /* MAILIMAP_RESP_COND_STATE_OK, _NO or _BAD */
	char text[256];  /* the tagged response's text, for logs */
	bool aborted;    /* body() said IMAP_BODY_ABORT */
};

/*
 * Send "UID FETCH UIDS (BODY.PEEK[])", or BODY.PEEK[]<OFFSET.LEN> when LEN
 * is not 0, and read every response to its tagged end, calling H with
 * CTX.  UIDS is an IMAP sequence set ("7" or "7,9,12").  Returns a libetpan
 * code: MAILIMAP_NO_ERROR with the command's outcome in *RESULT, or an
 * error that leaves the session unusable (also after an abort).  Blocks on
 * the upstream.
 */
int imap_body_fetch(mailimap *imap, const char *uids, uint32_t offset,
		    uint32_t len, const struct imap_body_handler *h, void *ctx,
		    struct imap_body_result *result);

#endif
