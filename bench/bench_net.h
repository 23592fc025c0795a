/*
 * bench_net.h - the load generator's blocking client connection.
 *
 * One connection per session, used by one thread.  TCP_NODELAY is always
 * set, and callers hand each command to bnet_write() in one piece, so the
 * client never meets a delayed ACK of its own making.  Every read and write
 * is bounded by the timeout given to bnet_connect().  Errors are static
 * strings: valid forever, never freed.
 */
#ifndef POPBENCH_NET_H
#define POPBENCH_NET_H

#include <stddef.h>
#include <openssl/ssl.h>

struct bnet;

/* Connect to HOST:PORT (TCP); NULL and *error_r on failure.  Free with
 * bnet_free(). */
struct bnet *bnet_connect(const char *host, const char *port, int timeout_ms,
			  const char **error_r);
void bnet_free(struct bnet *conn);

/* Run a TLS handshake on the connection (implicit TLS, or after STLS /
 * STARTTLS when nothing is buffered).  The peer is not verified: this is
 * a benchmark against servers on the loopback. */
int bnet_start_tls(struct bnet *conn, SSL_CTX *ctx, const char **error_r);

/* Write all of DATA in as few send()/SSL_write() calls as the kernel
 * allows; 0 or -1. */
int bnet_write(struct bnet *conn, const void *data, size_t len,
	       const char **error_r);

/* The next line including its LF; the pointer stays valid until the next
 * call on CONN.  Lines longer than the buffer (64 KiB) are an error.
 * Returns 0, or -1. */
int bnet_read_line(struct bnet *conn, const char **line_r, size_t *len_r,
		   const char **error_r);

/* Buffered bytes, reading more when none are: at least one byte on
 * success.  Consume what was used with bnet_consume().  0 or -1. */
int bnet_peek(struct bnet *conn, const char **data_r, size_t *len_r,
	      const char **error_r);
void bnet_consume(struct bnet *conn, size_t len);

int bnet_fd(const struct bnet *conn);

#endif
