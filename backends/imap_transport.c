/*
 * imap_transport.c - socket + OpenSSL transport with poll() and deadlines,
 * exposed to libetpan as a mailstream_low_driver.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "imap_transport.h"
#include "monotime.h"

#define TLS_READ_BUFFER (64 * 1024)
/* A TLS record on the wire at most: header, 16 KB, the cipher's expansion. */
#define TLS_RECORD_MAX (5 + 16384 + 2048)

struct imap_transport {
	int fd;
	SSL_CTX *ctx;  /* a reference of our own; NULL until needed */
	SSL *ssl;
	uint64_t connect_timeout_ms;
	uint64_t io_timeout_ms;
	bool verify;
	bool reply_pending;  /* a command went out since the last read */
	int rcvlowat;        /* SO_RCVLOWAT as set: 1 unless expecting */
	char *host;
	char *server_name;
	char *ca_file;
	struct transport_error last_error;
};

static int transport_fail(struct transport_error *err,
			  enum transport_error_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int transport_fail(struct transport_error *err,
			  enum transport_error_kind kind, const char *fmt, ...)
{
	va_list ap;

	err->kind = kind;
	va_start(ap, fmt);
	format_one_line(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Wait until FD is ready for EVENTS or DEADLINE (monotonic ms) passes.
 * Returns 1 when ready, 0 on timeout, -1 on a poll error (errno set).
 */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		uint64_t now = monotime_ms();
		int left, r;

		if (now >= deadline)
			return 0;
		left = deadline - now > 60000 ? 60000 : (int)(deadline - now);
		r = poll(&pfd, 1, left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* OpenSSL's queued error, or errno's, as one short string. */
static const char *tls_error_string(char *buf, size_t size, int saved_errno)
{
	unsigned long e = ERR_peek_last_error();

	if (e != 0)
		ERR_error_string_n(e, buf, size);
	else if (saved_errno != 0)
		snprintf(buf, size, "%s", strerror(saved_errno));
	else
		snprintf(buf, size, "unexpected end of stream");
	ERR_clear_error();
	return buf;
}

static int connect_one(const struct addrinfo *ai, uint64_t deadline,
		       int *fd_r, int *errno_r)
{
	int fd, r, soerr = 0;
	socklen_t len = sizeof(soerr);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0) {
		*errno_r = errno;
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			*errno_r = errno;
			close(fd);
			return -1;
		}
		r = wait_fd(fd, POLLOUT, deadline);
		if (r <= 0) {
			*errno_r = r == 0 ? ETIMEDOUT : errno;
			close(fd);
			return -1;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			soerr = errno;
		if (soerr != 0) {
			*errno_r = soerr;
			close(fd);
			return -1;
		}
	}
	/* IMAP is request/response: never wait for a delayed ACK. */
	r = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &r, sizeof(r));
	*fd_r = fd;
	return 0;
}

static char *strdup_or_null(const char *s, bool *failed)
{
	char *copy;

	if (s == NULL)
		return NULL;
	copy = strdup(s);
	if (copy == NULL)
		*failed = true;
	return copy;
}

static bool is_ip_address(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 ||
	       inet_pton(AF_INET6, name, buf) == 1;
}

struct imap_transport *imap_transport_connect(
	const struct transport_settings *set, struct transport_error *err)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_ADDRCONFIG,
	};
	struct addrinfo *res = NULL;
	struct imap_transport *tr;
	uint64_t deadline = monotime_ms() + set->connect_timeout_ms;
	char port[16];
	int r, fd = -1, last_errno = 0;
	bool failed = false;

	snprintf(port, sizeof(port), "%u", set->port);
	/* AI_ADDRCONFIG asks the kernel for every interface address on each
	 * call: pointless for a literal address, which is the usual case. */
	if (is_ip_address(set->host))
		hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	r = getaddrinfo(set->host, port, &hints, &res);
	if (r != 0) {
		transport_fail(err, TRANSPORT_ERR_RESOLVE, "cannot resolve %s: %s",
			       set->host, gai_strerror(r));
		return NULL;
	}
	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		if (monotime_ms() >= deadline) {
			last_errno = ETIMEDOUT;
			break;
		}
		if (connect_one(ai, deadline, &fd, &last_errno) == 0)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		transport_fail(err, last_errno == ETIMEDOUT ?
			       TRANSPORT_ERR_TIMEOUT : TRANSPORT_ERR_CONNECT,
			       "connect to %s port %u failed: %s", set->host,
			       set->port, strerror(last_errno));
		return NULL;
	}

	tr = calloc(1, sizeof(*tr));
	if (tr == NULL) {
		close(fd);
		transport_fail(err, TRANSPORT_ERR_NOMEM, "out of memory");
		return NULL;
	}
	tr->fd = fd;
	tr->rcvlowat = 1;
	tr->connect_timeout_ms = set->connect_timeout_ms;
	tr->io_timeout_ms = set->io_timeout_ms;
	tr->verify = set->verify;
	tr->host = strdup_or_null(set->host, &failed);
	tr->server_name = strdup_or_null(set->server_name != NULL ?
					 set->server_name : set->host, &failed);
	tr->ca_file = strdup_or_null(set->ca_file, &failed);
	/* Our own reference: the caller may free its context before us. */
	if (set->tls_ctx != NULL && SSL_CTX_up_ref(set->tls_ctx))
		tr->ctx = set->tls_ctx;
	if (failed) {
		imap_transport_free(tr);
		transport_fail(err, TRANSPORT_ERR_NOMEM, "out of memory");
		return NULL;
	}
	return tr;
}

SSL_CTX *imap_transport_ctx_new(const char *ca_file, bool verify,
				struct transport_error *err)
{
	char ebuf[160];
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		goto fail;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		goto fail;
	if (verify) {
		if (ca_file != NULL) {
			if (!SSL_CTX_load_verify_locations(ctx, ca_file, NULL)) {
				transport_fail(err, TRANSPORT_ERR_TLS,
					"cannot load CA file %s: %s", ca_file,
					tls_error_string(ebuf, sizeof(ebuf), 0));
				SSL_CTX_free(ctx);
				return NULL;
			}
		} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	transport_fail(err, TRANSPORT_ERR_TLS, "TLS context setup failed: %s",
		       tls_error_string(ebuf, sizeof(ebuf), 0));
	SSL_CTX_free(ctx);
	return NULL;
}

void imap_transport_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

static int tls_setup(struct imap_transport *tr, struct transport_error *err)
{
	char ebuf[160];

	if (tr->ctx == NULL) {
		tr->ctx = imap_transport_ctx_new(tr->ca_file, tr->verify, err);
		if (tr->ctx == NULL)
			return -1;
	}

	tr->ssl = SSL_new(tr->ctx);
	if (tr->ssl == NULL || !SSL_set_fd(tr->ssl, tr->fd))
		goto fail;
	/*
	 * Without read-ahead OpenSSL reads each record's 5-octet header and
	 * then its body: two recv() calls per 16 KB of a message.  With it,
	 * one recv() takes up to TLS_READ_BUFFER of records; the buffer is
	 * released whenever it is empty, so an idle session keeps none.
	 */
	SSL_set_read_ahead(tr->ssl, 1);
	SSL_set_default_read_buffer_len(tr->ssl, TLS_READ_BUFFER);
	SSL_set_mode(tr->ssl, SSL_MODE_RELEASE_BUFFERS);
	/* The context may be shared: this connection's own settings decide
	 * whether the peer is verified, never the context's. */
	SSL_set_verify(tr->ssl, tr->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
		       NULL);
	if (!SSL_set_min_proto_version(tr->ssl, TLS1_2_VERSION))
		goto fail;
	if (is_ip_address(tr->server_name)) {
		/* RFC 6066 forbids SNI with an address; check the SAN iPAddress. */
		if (tr->verify &&
		    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tr->ssl),
						   tr->server_name))
			goto fail;
	} else {
		if (!SSL_set_tlsext_host_name(tr->ssl, tr->server_name))
			goto fail;
		if (tr->verify && !SSL_set1_host(tr->ssl, tr->server_name))
			goto fail;
	}
	return 0;
fail:
	return transport_fail(err, TRANSPORT_ERR_TLS, "TLS setup for %s: %s",
			      tr->host, tls_error_string(ebuf, sizeof(ebuf), 0));
}

int imap_transport_start_tls(struct imap_transport *tr,
			     struct transport_error *err)
{
	uint64_t deadline = monotime_ms() + tr->connect_timeout_ms;
	char ebuf[160];

	if (tr->ssl != NULL)
		return transport_fail(err, TRANSPORT_ERR_TLS,
				      "TLS already active");
	ERR_clear_error();
	if (tls_setup(tr, err) < 0)
		return -1;

	for (;;) {
		int r, ssl_err, w;

		errno = 0;
		r = SSL_connect(tr->ssl);
		if (r == 1)
			return 0;
		ssl_err = SSL_get_error(tr->ssl, r);
		if (ssl_err == SSL_ERROR_WANT_READ ||
		    ssl_err == SSL_ERROR_WANT_WRITE) {
			w = wait_fd(tr->fd, ssl_err == SSL_ERROR_WANT_READ ?
				    POLLIN : POLLOUT, deadline);
			if (w > 0)
				continue;
			return transport_fail(err, TRANSPORT_ERR_TIMEOUT,
					"TLS handshake with %s timed out",
					tr->host);
		}
		long vr = SSL_get_verify_result(tr->ssl);
		if (tr->verify && vr != X509_V_OK) {
			ERR_clear_error();
			return transport_fail(err, TRANSPORT_ERR_VERIFY,
				"certificate verification failed for %s: %s",
				tr->server_name,
				X509_verify_cert_error_string(vr));
		}
		return transport_fail(err, TRANSPORT_ERR_TLS,
				      "TLS handshake with %s failed: %s",
				      tr->host,
				      tls_error_string(ebuf, sizeof(ebuf),
						       errno));
	}
}

bool imap_transport_is_tls(const struct imap_transport *tr)
{
	return tr->ssl != NULL;
}

const struct transport_error *
imap_transport_last_error(const struct imap_transport *tr)
{
	return &tr->last_error;
}

static void transport_close(struct imap_transport *tr)
{
	if (tr->ssl != NULL) {
		/* One non-blocking attempt at close_notify; never wait for it. */
		SSL_shutdown(tr->ssl);
		ERR_clear_error();
		SSL_free(tr->ssl);
		tr->ssl = NULL;
	}
	if (tr->fd >= 0) {
		close(tr->fd);
		tr->fd = -1;
	}
}

void imap_transport_free(struct imap_transport *tr)
{
	if (tr == NULL)
		return;
	transport_close(tr);
	SSL_CTX_free(tr->ctx);
	free(tr->host);
	free(tr->server_name);
	free(tr->ca_file);
	free(tr);
}

/* --- I/O with deadlines ------------------------------------------------ */

static ssize_t io_fail(struct imap_transport *tr,
		       enum transport_error_kind kind, const char *what,
		       int saved_errno)
{
	char ebuf[160];

	if (kind == TRANSPORT_ERR_TIMEOUT)
		transport_fail(&tr->last_error, kind, "%s %s timed out",
			       what, tr->host);
	else if (kind == TRANSPORT_ERR_CLOSED)
		transport_fail(&tr->last_error, kind,
			       "%s closed the connection", tr->host);
	else
		transport_fail(&tr->last_error, kind, "%s %s: %s", what,
			       tr->host, tls_error_string(ebuf, sizeof(ebuf),
							  saved_errno));
	return -1;
}

static ssize_t plain_read(struct imap_transport *tr, void *buf, size_t count,
			  uint64_t deadline)
{
	/* Right after a command its answer is seldom there yet, and while a
	 * literal is expected a recv() would take whatever trickled in: wait
	 * first (for the low-water mark) instead. */
	bool wait_first = tr->reply_pending || tr->rcvlowat > 1;

	tr->reply_pending = false;
	for (;;) {
		ssize_t n;
		int w;

		if (wait_first) {
			w = wait_fd(tr->fd, POLLIN, deadline);
			if (w == 0)
				return io_fail(tr, TRANSPORT_ERR_TIMEOUT,
					       "read from", 0);
			if (w < 0)
				return io_fail(tr, TRANSPORT_ERR_IO,
					       "read from", errno);
		}
		n = recv(tr->fd, buf, count, 0);
		if (n > 0)
			return n;
		if (n == 0)
			return io_fail(tr, TRANSPORT_ERR_CLOSED, "read from", 0);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return io_fail(tr, TRANSPORT_ERR_IO, "read from", errno);
		wait_first = true;
	}
}

static ssize_t plain_write(struct imap_transport *tr, const void *buf,
			   size_t count, uint64_t deadline)
{
	for (;;) {
		ssize_t n = send(tr->fd, buf, count, MSG_NOSIGNAL);
		int w;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return io_fail(tr, TRANSPORT_ERR_IO, "write to", errno);
		w = wait_fd(tr->fd, POLLOUT, deadline);
		if (w == 0)
			return io_fail(tr, TRANSPORT_ERR_TIMEOUT, "write to", 0);
		if (w < 0)
			return io_fail(tr, TRANSPORT_ERR_IO, "write to", errno);
	}
}

/* One SSL_read_ex or SSL_write_ex, retried across WANT_* until DEADLINE. */
static ssize_t tls_io(struct imap_transport *tr, void *rbuf,
		      const void *wbuf, size_t count, uint64_t deadline)
{
	const char *what = rbuf != NULL ? "read from" : "write to";

	for (;;) {
		size_t done = 0;
		int r, ssl_err, w;

		errno = 0;
		if (rbuf != NULL)
			r = SSL_read_ex(tr->ssl, rbuf, count, &done);
		else
			r = SSL_write_ex(tr->ssl, wbuf, count, &done);
		if (r == 1)
			return (ssize_t)done;
		ssl_err = SSL_get_error(tr->ssl, r);
		switch (ssl_err) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			w = wait_fd(tr->fd, ssl_err == SSL_ERROR_WANT_READ ?
				    POLLIN : POLLOUT, deadline);
			if (w == 0)
				return io_fail(tr, TRANSPORT_ERR_TIMEOUT, what, 0);
			if (w < 0)
				return io_fail(tr, TRANSPORT_ERR_IO, what, errno);
			continue;
		case SSL_ERROR_ZERO_RETURN:
			return io_fail(tr, TRANSPORT_ERR_CLOSED, what, 0);
		case SSL_ERROR_SYSCALL:
			if (errno == 0 && ERR_peek_last_error() == 0)
				return io_fail(tr, TRANSPORT_ERR_CLOSED, what, 0);
			return io_fail(tr, TRANSPORT_ERR_IO, what, errno);
		default:
			return io_fail(tr, TRANSPORT_ERR_IO, what, errno);
		}
	}
}

static ssize_t transport_read(struct imap_transport *tr, void *buf,
			      size_t count)
{
	uint64_t deadline = monotime_ms() + tr->io_timeout_ms;

	if (tr->fd < 0)
		return io_fail(tr, TRANSPORT_ERR_CLOSED, "read from", 0);
	if (count == 0)
		return 0;
	if (tr->ssl != NULL)
		return tls_io(tr, buf, NULL, count, deadline);
	return plain_read(tr, buf, count, deadline);
}

/* Writes everything or fails: libetpan treats a short write as an error. */
static ssize_t transport_write(struct imap_transport *tr, const void *buf,
			       size_t count)
{
	uint64_t deadline = monotime_ms() + tr->io_timeout_ms;
	size_t done = 0;

	if (tr->fd < 0)
		return io_fail(tr, TRANSPORT_ERR_CLOSED, "write to", 0);
	while (done < count) {
		const char *p = (const char *)buf + done;
		ssize_t n;

		if (tr->ssl != NULL)
			n = tls_io(tr, NULL, p, count - done, deadline);
		else
			n = plain_write(tr, p, count - done, deadline);
		if (n < 0)
			return -1;
		done += (size_t)n;
	}
	tr->reply_pending = true;
	return (ssize_t)count;
}

/*
 * Waking popgate for every segment of a long body costs a context switch
 * each; with a low-water mark the kernel wakes it once a large piece is
 * queued.  Never more than the octets certain to come, or the last read
 * of a literal would wait for octets that are not coming.  Over TLS the
 * socket carries at least as many octets as the plaintext they encrypt,
 * but OpenSSL may already hold up to its read buffer and a record of them.
 */
static void transport_expect(struct imap_transport *tr, size_t n)
{
	/* Below this a system call to set the mark costs more than the
	 * wake-ups it saves. */
	const size_t batch_min = 32 * 1024;
	const size_t tls_held_max = TLS_READ_BUFFER + TLS_RECORD_MAX;
	int lowat = 1;

	if (tr->fd < 0)
		return;
	if (tr->ssl != NULL)
		n = n > tls_held_max ? n - tls_held_max : 0;
	if (n >= batch_min)
		lowat = n < INT_MAX ? (int)n : INT_MAX;
	if (lowat == tr->rcvlowat)
		return;
	/* On failure reads simply wake early, as they did before. */
	if (setsockopt(tr->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat,
		       sizeof(lowat)) == 0)
		tr->rcvlowat = lowat;
}

/* --- libetpan glue ----------------------------------------------------- */

static ssize_t low_read(mailstream_low *s, void *buf, size_t count)
{
	return transport_read(s->data, buf, count);
}

static ssize_t low_write(mailstream_low *s, const void *buf, size_t count)
{
	return transport_write(s->data, buf, count);
}

static int low_close(mailstream_low *s)
{
	transport_close(s->data);
	return 0;
}

static int low_get_fd(mailstream_low *s)
{
	const struct imap_transport *tr = s->data;

	return tr->fd;
}

static void low_free(mailstream_low *s)
{
	imap_transport_free(s->data);
	s->data = NULL;
	free(s);
}

static void low_cancel(mailstream_low *s)
{
	struct imap_transport *tr = s->data;

	/* Makes any blocked or later read fail at once. */
	if (tr->fd >= 0)
		shutdown(tr->fd, SHUT_RDWR);
}

static mailstream_low_driver transport_driver = {
	.mailstream_read = low_read,
	.mailstream_write = low_write,
	.mailstream_close = low_close,
	.mailstream_get_fd = low_get_fd,
	.mailstream_free = low_free,
	.mailstream_cancel = low_cancel,
};

void imap_transport_expect(mailstream_low *low, size_t n)
{
	if (low != NULL && low->driver == &transport_driver)
		transport_expect(low->data, n);
}

mailstream_low *imap_transport_low_new(struct imap_transport *tr)
{
	return mailstream_low_new(tr, &transport_driver);
}
