/*
 * dotstuff.h - turns message octets into a POP3 multi-line response body.
 *
 * A streaming writer: feed the message in pieces of any size, split
 * anywhere.  Bare LF and bare CR become CRLF, a line starting with "." gets
 * another "." in front, and dotstuff_finish() ends the message with CRLF (if
 * its last line had no ending) and the ".CRLF" terminator.  The output is
 * appended to an outbuf; nothing is written to the client here.
 */
#ifndef POPGATE_DOTSTUFF_H
#define POPGATE_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>

#include "outbuf.h"

struct dotstuff {
	bool at_line_start;  /* the next octet begins a line */
	bool after_cr;       /* the last octet was CR: a following LF is its */
};

/* Prepare DS for a new message. */
void dotstuff_init(struct dotstuff *ds);

/* Append LEN message octets to OB.  Returns 0, or -1 when out of memory. */
int dotstuff_write(struct dotstuff *ds, struct outbuf *ob,
		   const char *data, size_t len);

/* Append the final line ending if missing and ".CRLF".  Returns 0 or -1. */
int dotstuff_finish(struct dotstuff *ds, struct outbuf *ob);

#endif
