/*
 * line_reader.h - splits client input into command lines.
 *
 * A line ends with CRLF or a bare LF.  The caller passes the length limit
 * with every call (it differs inside a SASL exchange); the limit counts the
 * line ending as two octets, so a limit of 512 admits 510 octets of text.
 * A longer line is dropped as it arrives, never buffered whole, and reported
 * once as LINE_TOO_LONG when its LF has been seen.
 *
 * Input that has not been taken as lines stays buffered until the next call
 * or line_reader_discard().  The reader copies what it is fed.
 */
#ifndef POPGATE_LINE_READER_H
#define POPGATE_LINE_READER_H

#include <stddef.h>

enum line_result {
	LINE_NEED_MORE, /* no complete line buffered */
	LINE_OK,        /* *line_r / *len_r hold one line without its ending */
	LINE_TOO_LONG,  /* a line over the limit was consumed and dropped */
};

struct line_reader;

/* Returns NULL when out of memory.  Free with line_reader_free(). */
struct line_reader *line_reader_new(void);
void line_reader_free(struct line_reader *lr);

/* Buffer LEN more octets.  Returns 0, or -1 when out of memory. */
int line_reader_feed(struct line_reader *lr, const char *data, size_t len);

/*
 * Take the next line of at most LIMIT octets including its ending.  On
 * LINE_OK the line is NUL-terminated (it may also contain NUL octets, so
 * use *len_r) and stays valid until the next call to any function here.
 */
enum line_result line_reader_next(struct line_reader *lr, size_t limit,
				  char **line_r, size_t *len_r);

/* Octets buffered and not yet returned as lines. */
size_t line_reader_pending(const struct line_reader *lr);

/* Forget every buffered octet (e.g. plaintext sent before a TLS handshake). */
void line_reader_discard(struct line_reader *lr);

#endif
