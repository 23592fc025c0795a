/*
 * dotstuff.c - line-ending normalisation and dot-stuffing, streaming.
 *
 * Every CR ends a line at once (it is written as CRLF); an LF right after
 * a CR belongs to it and is dropped, even when the CR ended the previous
 * piece.  This keeps the output independent of where the pieces split.
 */
#include "dotstuff.h"

void dotstuff_init(struct dotstuff *ds)
{
	ds->at_line_start = true;
	ds->after_cr = false;
}

int dotstuff_write(struct dotstuff *ds, struct outbuf *ob,
		   const char *data, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t run = i;
		char c;

		if (ds->at_line_start && data[i] == '.') {
			if (outbuf_append(ob, ".", 1) < 0)
				return -1;
		}
		/* Copy a run of ordinary octets in one piece. */
		while (run < len && data[run] != '\r' && data[run] != '\n')
			run++;
		if (run > i) {
			if (outbuf_append(ob, data + i, run - i) < 0)
				return -1;
			ds->at_line_start = false;
			ds->after_cr = false;
			i = run;
			continue;
		}

		c = data[i++];
		if (c == '\n' && ds->after_cr) {
			ds->after_cr = false;
			continue;
		}
		if (outbuf_append(ob, "\r\n", 2) < 0)
			return -1;
		ds->at_line_start = true;
		ds->after_cr = c == '\r';
	}
	return 0;
}

int dotstuff_finish(struct dotstuff *ds, struct outbuf *ob)
{
	if (!ds->at_line_start && outbuf_append(ob, "\r\n", 2) < 0)
		return -1;
	ds->at_line_start = true;
	ds->after_cr = false;
	return outbuf_append(ob, ".\r\n", 3);
}
