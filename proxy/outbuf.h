/*
 * outbuf.h - the session's output buffer.
 *
 * Responses are appended here and handed to the writer in large pieces, so
 * that a pipelined burst of commands or a long RETR is a few writes rather
 * than one per line (a small write meets the client's delayed ACK).
 * The buffer grows as needed; the session flushes it often enough during
 * long responses that it stays near OUTBUF_FLUSH_SIZE.
 */
#ifndef POPGATE_OUTBUF_H
#define POPGATE_OUTBUF_H

#include <stddef.h>

/* Flush a long response once this much is buffered. */
#define OUTBUF_FLUSH_SIZE (64 * 1024)

struct outbuf;

/* Returns NULL when out of memory.  Free with outbuf_free(). */
struct outbuf *outbuf_new(void);
void outbuf_free(struct outbuf *ob);

/* Append LEN octets.  Returns 0, or -1 when out of memory (the buffer is
 * then unchanged). */
int outbuf_append(struct outbuf *ob, const void *data, size_t len);

/*
 * Room for LEN more octets at the end, for a writer that produces output
 * in place (dotstuff) instead of appending piece by piece.  Returns where
 * to write, or NULL when out of memory; outbuf_commit() then adds the
 * octets actually written (at most LEN).  Nothing else may touch the
 * buffer in between.
 */
char *outbuf_reserve(struct outbuf *ob, size_t len);
void outbuf_commit(struct outbuf *ob, size_t len);

size_t outbuf_length(const struct outbuf *ob);

/* Drop everything buffered (the client is gone). */
void outbuf_clear(struct outbuf *ob);

typedef int outbuf_write_fn(void *ctx, const void *data, size_t len);

/* Hand everything buffered to WRITE in one call and empty the buffer.
 * Returns 0, or WRITE's -1 (the buffer is emptied either way: after a
 * failed write the connection is gone). */
int outbuf_flush(struct outbuf *ob, outbuf_write_fn *write, void *ctx);

#endif
