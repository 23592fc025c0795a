/*
 * bench_net.c - blocking TCP/TLS client connection with a read buffer.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench_net.h"

#define BNET_BUFSIZE (64 * 1024)

struct bnet {
	int fd;
	SSL *ssl;
	size_t start, end;
	char buf[BNET_BUFSIZE];
};

static int set_timeouts(int fd, int timeout_ms)
{
	struct timeval tv = {
		.tv_sec = timeout_ms / 1000,
		.tv_usec = (timeout_ms % 1000) * 1000,
	};
	int one = 1;

	/* On Linux SO_SNDTIMEO also bounds connect(). */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -1;
	return 0;
}

struct bnet *bnet_connect(const char *host, const char *port, int timeout_ms,
			  const char **error_r)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV,
	};
	struct addrinfo *res, *ai;
	struct bnet *conn;
	int fd = -1;

	if (getaddrinfo(host, port, &hints, &res) != 0) {
		*error_r = "cannot resolve host";
		return NULL;
	}
	*error_r = "connect failed";
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		if (set_timeouts(fd, timeout_ms) == 0 &&
		    connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS || errno == EAGAIN)
			*error_r = "connect timeout";
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return NULL;
	conn = malloc(sizeof(*conn));
	if (conn == NULL) {
		close(fd);
		*error_r = "out of memory";
		return NULL;
	}
	conn->fd = fd;
	conn->ssl = NULL;
	conn->start = conn->end = 0;
	return conn;
}

void bnet_free(struct bnet *conn)
{
	if (conn == NULL)
		return;
	if (conn->ssl != NULL)
		SSL_free(conn->ssl);
	close(conn->fd);
	free(conn);
}

int bnet_fd(const struct bnet *conn)
{
	return conn->fd;
}

int bnet_start_tls(struct bnet *conn, SSL_CTX *ctx, const char **error_r)
{
	if (conn->start != conn->end) {
		/* Plaintext pipelined behind the TLS go-ahead is an attack
		 * (CVE-2011-0411 class), never data to keep. */
		*error_r = "data buffered before TLS handshake";
		return -1;
	}
	conn->ssl = SSL_new(ctx);
	if (conn->ssl == NULL || SSL_set_fd(conn->ssl, conn->fd) != 1 ||
	    SSL_connect(conn->ssl) != 1) {
		*error_r = "TLS handshake failed";
		return -1;
	}
	return 0;
}

static const char *io_error(void)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return "timeout";
	if (errno == ECONNRESET || errno == EPIPE)
		return "connection reset";
	return "I/O error";
}

int bnet_write(struct bnet *conn, const void *data, size_t len,
	       const char **error_r)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n;

		if (conn->ssl != NULL) {
			size_t written;

			if (SSL_write_ex(conn->ssl, p, len, &written) != 1) {
				*error_r = "TLS write failed";
				return -1;
			}
			n = (ssize_t)written;
		} else {
			n = send(conn->fd, p, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				*error_r = io_error();
				return -1;
			}
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read more into the free tail of the buffer; 0 or -1. */
static int fill(struct bnet *conn, const char **error_r)
{
	size_t space;
	ssize_t n;

	if (conn->start == conn->end) {
		conn->start = conn->end = 0;
	} else if (conn->end == sizeof(conn->buf) && conn->start > 0) {
		memmove(conn->buf, conn->buf + conn->start,
			conn->end - conn->start);
		conn->end -= conn->start;
		conn->start = 0;
	}
	space = sizeof(conn->buf) - conn->end;
	if (space == 0) {
		*error_r = "line too long";
		return -1;
	}
	for (;;) {
		if (conn->ssl != NULL) {
			size_t got;

			if (SSL_read_ex(conn->ssl, conn->buf + conn->end,
					space, &got) != 1) {
				int err = SSL_get_error(conn->ssl, 0);

				*error_r = err == SSL_ERROR_ZERO_RETURN ?
					"connection closed" : "TLS read failed";
				return -1;
			}
			n = (ssize_t)got;
		} else {
			n = recv(conn->fd, conn->buf + conn->end, space, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				*error_r = io_error();
				return -1;
			}
			if (n == 0) {
				*error_r = "connection closed";
				return -1;
			}
		}
		conn->end += (size_t)n;
		return 0;
	}
}

int bnet_read_line(struct bnet *conn, const char **line_r, size_t *len_r,
		   const char **error_r)
{
	size_t scanned = 0;

	for (;;) {
		const char *start = conn->buf + conn->start;
		size_t avail = conn->end - conn->start;
		const char *lf = memchr(start + scanned, '\n', avail - scanned);

		if (lf != NULL) {
			*line_r = start;
			*len_r = (size_t)(lf - start) + 1;
			conn->start += *len_r;
			return 0;
		}
		scanned = avail;
		if (fill(conn, error_r) < 0)
			return -1;
	}
}

int bnet_peek(struct bnet *conn, const char **data_r, size_t *len_r,
	      const char **error_r)
{
	if (conn->start == conn->end && fill(conn, error_r) < 0)
		return -1;
	*data_r = conn->buf + conn->start;
	*len_r = conn->end - conn->start;
	return 0;
}

void bnet_consume(struct bnet *conn, size_t len)
{
	conn->start += len;
}
