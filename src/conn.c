/*
 * conn.c - one client connection, plain or TLS, with deadlines.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "conn.h"
#include "monotime.h"

struct conn {
	int fd;
	SSL *ssl;
	bool have_wait_mask;
	bool input_unlikely;  /* a response went out since the last read */
	sigset_t wait_mask;
	uint64_t bytes_in, bytes_out;
};

struct conn *conn_new(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1, flags;

	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	flags = fcntl(fd, F_GETFL);
	if (flags >= 0)
		(void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	/* Fails harmlessly on non-TCP sockets (unit tests use socketpairs). */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
}

void conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->ssl != NULL) {
		/* One non-blocking attempt: a client that is gone must not
		 * hold the process. */
		(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	close(c->fd);
	free(c);
}

void conn_set_wait_sigmask(struct conn *c, const sigset_t *mask)
{
	c->have_wait_mask = mask != NULL;
	if (mask != NULL)
		c->wait_mask = *mask;
}

bool conn_is_tls(const struct conn *c)
{
	return c->ssl != NULL;
}

/* Wait for EVENTS until the deadline.  1 ready, 0 timeout, -1 error,
 * -2 interrupted (only when INTERRUPTIBLE). */
static int wait_fd(struct conn *c, short events, uint64_t deadline,
		   bool interruptible)
{
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = events };
		struct timespec ts = monotime_timespec(
			monotime_left_ms(deadline));
		int n;

		if (interruptible && c->have_wait_mask)
			n = ppoll(&pfd, 1, &ts, &c->wait_mask);
		else
			n = ppoll(&pfd, 1, &ts, NULL);
		if (n > 0)
			return 1;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -1;
		if (interruptible)
			return -2;
	}
}

int conn_start_tls(struct conn *c, SSL_CTX *ctx, uint64_t timeout_ms,
		   const char **error_r)
{
	uint64_t deadline = monotime_ms() + timeout_ms;

	if (c->ssl != NULL) {
		*error_r = "TLS already active";
		return -1;
	}
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		*error_r = "cannot create TLS session";
		return -1;
	}
	for (;;) {
		int ret = SSL_accept(c->ssl), w;

		if (ret == 1)
			return 0;
		switch (SSL_get_error(c->ssl, ret)) {
		case SSL_ERROR_WANT_READ:
			w = wait_fd(c, POLLIN, deadline, false);
			break;
		case SSL_ERROR_WANT_WRITE:
			w = wait_fd(c, POLLOUT, deadline, false);
			break;
		default:
			ERR_clear_error();
			*error_r = "TLS handshake failed";
			return -1;
		}
		if (w == 0) {
			*error_r = "TLS handshake timed out";
			return -1;
		}
		if (w < 0) {
			*error_r = "TLS handshake failed";
			return -1;
		}
	}
}

/* One read attempt: >0 octets, 0 EOF, -1 error, -2 want read, -3 want
 * write. */
static ssize_t read_once(struct conn *c, void *buf, size_t size)
{
	size_t n;
	ssize_t r;

	if (c->ssl == NULL) {
		r = recv(c->fd, buf, size, 0);
		if (r >= 0)
			return r;
		return errno == EAGAIN || errno == EWOULDBLOCK ||
			errno == EINTR ? -2 : -1;
	}
	if (SSL_read_ex(c->ssl, buf, size, &n) == 1)
		return (ssize_t)n;
	switch (SSL_get_error(c->ssl, 0)) {
	case SSL_ERROR_WANT_READ:
		return -2;
	case SSL_ERROR_WANT_WRITE:
		return -3;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		/* A client that just drops the TCP connection. */
		ERR_clear_error();
		return errno == 0 || errno == ECONNRESET ? 0 : -1;
	default:
		ERR_clear_error();
		return -1;
	}
}

/* wait_fd() on the way to a read: CONN_DATA when the descriptor is ready,
 * else why the read ends. */
static enum conn_status wait_to_read(struct conn *c, short events,
				     uint64_t deadline)
{
	int w = wait_fd(c, events, deadline, true);

	if (w > 0)
		return CONN_DATA;
	if (w == 0)
		return CONN_TIMEOUT;
	return w == -2 ? CONN_INTERRUPTED : CONN_ERROR;
}

enum conn_status conn_read(struct conn *c, void *buf, size_t size,
			   uint64_t timeout_ms, size_t *len_r)
{
	enum conn_status st;
	uint64_t deadline = monotime_ms() + timeout_ms;

	*len_r = 0;
	/*
	 * A client that was just answered has rarely sent its next command
	 * yet: on a plain connection wait first instead of paying for a
	 * recv() that only says EAGAIN.  With TLS, reading first also drains
	 * what OpenSSL already decrypted, which poll() cannot see.
	 */
	if (c->input_unlikely && c->ssl == NULL &&
	    (st = wait_to_read(c, POLLIN, deadline)) != CONN_DATA)
		return st;
	c->input_unlikely = false;
	for (;;) {
		ssize_t r;

		errno = 0;
		r = read_once(c, buf, size);
		if (r > 0) {
			*len_r = (size_t)r;
			c->bytes_in += (uint64_t)r;
			return CONN_DATA;
		}
		if (r == 0)
			return CONN_EOF;
		if (r == -1)
			return CONN_ERROR;
		st = wait_to_read(c, r == -3 ? POLLOUT : POLLIN, deadline);
		if (st != CONN_DATA)
			return st;
	}
}

int conn_write_all(struct conn *c, const void *data, size_t len,
		   uint64_t timeout_ms)
{
	uint64_t deadline = monotime_ms() + timeout_ms;
	const char *p = data;

	c->input_unlikely = true;
	while (len > 0) {
		short want = POLLOUT;
		size_t n = 0;

		if (c->ssl == NULL) {
			ssize_t r = send(c->fd, p, len, MSG_NOSIGNAL);

			if (r > 0)
				n = (size_t)r;
			else if (r < 0 && errno != EAGAIN &&
				 errno != EWOULDBLOCK && errno != EINTR)
				return -1;
		} else if (SSL_write_ex(c->ssl, p, len, &n) != 1) {
			switch (SSL_get_error(c->ssl, 0)) {
			case SSL_ERROR_WANT_WRITE:
				break;
			case SSL_ERROR_WANT_READ:
				want = POLLIN;
				break;
			default:
				ERR_clear_error();
				return -1;
			}
			n = 0;
		}
		if (n > 0) {
			p += n;
			len -= n;
			c->bytes_out += n;
			continue;
		}
		if (wait_fd(c, want, deadline, false) <= 0)
			return -1;
	}
	return 0;
}

uint64_t conn_bytes_in(const struct conn *c)
{
	return c->bytes_in;
}

uint64_t conn_bytes_out(const struct conn *c)
{
	return c->bytes_out;
}
