/*
 * conn.h - one client connection, plain or TLS, with deadlines.
 *
 * Every call blocks at most for the time it is given, using poll() on the
 * non-blocking socket, never select() (descriptors above 1024 are normal
 * here).  Nothing is logged; the caller decides what a failure means.
 */
#ifndef POPGATE_CONN_H
#define POPGATE_CONN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

enum conn_status {
	CONN_DATA,         /* octets were read */
	CONN_TIMEOUT,      /* nothing arrived in time */
	CONN_EOF,          /* the client closed the connection */
	CONN_ERROR,        /* socket or TLS failure */
	CONN_INTERRUPTED,  /* a signal arrived while waiting */
};

struct conn;

/*
 * Take ownership of the connected socket FD: make it non-blocking and set
 * TCP_NODELAY (responses are written whole; see the TCP notes).  Returns
 * NULL only on allocation failure, and then closes FD.
 */
struct conn *conn_new(int fd);

/* Close the connection (a best-effort TLS close_notify) and free it. */
void conn_free(struct conn *c);

/*
 * While waiting inside conn_read(), replace the signal mask with MASK
 * (ppoll), so that signals blocked elsewhere interrupt only a wait for the
 * client.  NULL: keep the mask.  The set is copied.
 */
void conn_set_wait_sigmask(struct conn *c, const sigset_t *mask);

/*
 * Run the server side of a TLS handshake with CTX (implicit TLS, or after
 * STLS) within TIMEOUT_MS.  Returns 0, or -1 with a static reason in
 * *ERROR_R.
 */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, uint64_t timeout_ms,
		   const char **error_r);

bool conn_is_tls(const struct conn *c);

/*
 * Read up to SIZE octets, waiting at most TIMEOUT_MS for them.  Octets
 * already decrypted inside OpenSSL are returned without waiting.  Returns
 * CONN_DATA with *LEN_R > 0, or another status.
 */
enum conn_status conn_read(struct conn *c, void *buf, size_t size,
			   uint64_t timeout_ms, size_t *len_r);

/*
 * Write all LEN octets within TIMEOUT_MS.  Returns 0, or -1 when the client
 * is gone or too slow; the connection is unusable afterwards.
 */
int conn_write_all(struct conn *c, const void *data, size_t len,
		   uint64_t timeout_ms);

/* Octets read from / written to the client so far (after decryption). */
uint64_t conn_bytes_in(const struct conn *c);
uint64_t conn_bytes_out(const struct conn *c);

#endif
