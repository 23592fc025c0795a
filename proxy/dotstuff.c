/*
 * dotstuff.c - line-ending normalisation and dot-stuffing, streaming.
 *
 * Every CR ends a line at once (it is written as CRLF); an LF right after
 * a CR belongs to it and is dropped, even when the CR ended the previous
 * piece.  This keeps the output independent of where the pieces split.
 */
#include <string.h>

#include "dotstuff.h"

void dotstuff_init(struct dotstuff *ds)
{
	ds->at_line_start = true;
	ds->after_cr = false;
}

/* Each input octet becomes at most two ("." -> "..", CR or LF -> CRLF),
 * so a slice of input needs twice its size of room. */
#define DOTSTUFF_SLICE (32 * 1024)

/*
 * The hot loop of every RETR: runs of ordinary octets are found with
 * memchr() and copied whole, straight into the output buffer.
 */
static size_t stuff_slice(struct dotstuff *ds, char *out, const char *data,
			  size_t len)
{
	char *o = out;
	size_t i = 0;

	while (i < len) {
		const char *nl, *cr;
		size_t stop, run;

		if (ds->at_line_start && data[i] == '.')
			*o++ = '.';
		nl = memchr(data + i, '\n', len - i);
		stop = nl != NULL ? (size_t)(nl - data) : len;
		cr = memchr(data + i, '\r', stop - i);
		run = cr != NULL ? (size_t)(cr - data) : stop;
		if (run > i) {
			memcpy(o, data + i, run - i);
			o += run - i;
			ds->at_line_start = false;
			ds->after_cr = false;
			i = run;
			if (i == len)
				break;
		}
		if (data[i] == '\n' && ds->after_cr) {
			/* The LF of a CRLF whose CR ended the previous piece. */
			ds->after_cr = false;
			i++;
			continue;
		}
		*o++ = '\r';
		*o++ = '\n';
		ds->at_line_start = true;
		if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') {
			ds->after_cr = false;
			i += 2;
		} else {
			ds->after_cr = data[i] == '\r';
			i++;
		}
	}
	return (size_t)(o - out);
}

int dotstuff_write(struct dotstuff *ds, struct outbuf *ob,
		   const char *data, size_t len)
{
	while (len > 0) {
		size_t slice = len < DOTSTUFF_SLICE ? len : DOTSTUFF_SLICE;
		char *out = outbuf_reserve(ob, 2 * slice);

		if (out == NULL)
			return -1;
		outbuf_commit(ob, stuff_slice(ds, out, data, slice));
		data += slice;
		len -= slice;
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
