/*
 * test_imap_reader.c - the response reader behind popgate's own IMAP
 * parsers: lines, literals in pieces, leftovers given back to libetpan in
 * order, the bounds, and the tokens.  The stream is libetpan's socket
 * stream over a socketpair; a child process writes what does not fit in
 * the socket buffer.  The low-water-mark tests run over popgate's own
 * transport on a loopback TCP connection instead, where the mark applies.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/ssl.h>

#include "imap_reader.h"
#include "imap_transport.h"
#include "tls_cert.h"

struct pipe_stream {
	mailstream *stream; /* the reading end */
	int writer;         /* the other end, or -1 once closed */
};

static struct pipe_stream open_stream(void)
{
	struct pipe_stream ps;
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	ps.stream = mailstream_socket_open(fds[0]);
	assert_non_null(ps.stream);
	ps.writer = fds[1];
	return ps;
}

static void put(struct pipe_stream *ps, const char *data, size_t len)
{
	assert_int_equal(write(ps->writer, data, len), (ssize_t)len);
}

static void put_str(struct pipe_stream *ps, const char *s)
{
	put(ps, s, strlen(s));
}

static void close_writer(struct pipe_stream *ps)
{
	close(ps->writer);
	ps->writer = -1;
}

static void close_stream(struct pipe_stream *ps)
{
	if (ps->writer >= 0)
		close_writer(ps);
	mailstream_close(ps->stream);
}

struct collect {
	char *data;
	size_t len, pieces, largest;
	size_t stop_after; /* pieces; 0: never stop */
};

static bool collect_piece(void *ctx, const char *data, size_t len)
{
	struct collect *c = ctx;

	c->data = realloc(c->data, c->len + len);
	assert_non_null(c->data);
	memcpy(c->data + c->len, data, len);
	c->len += len;
	c->pieces++;
	if (len > c->largest)
		c->largest = len;
	return c->stop_after == 0 || c->pieces < c->stop_after;
}

static void assert_line(struct imap_reader *rd, const char *want)
{
	const char *line;
	size_t len;

	assert_int_equal(imap_reader_raw_line(rd, &line, &len),
			 MAILIMAP_NO_ERROR);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(line, want, len);
}

static void test_lines_literal_and_give_back(void **state)
{
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	struct collect c = { 0 };
	const char *line;
	size_t len, at = 0;
	char rest[16];

	(void)state;
	put_str(&ps, "* 1 FETCH (BODY[] {5}\r\nhello)\r\nA OK done\n"
		"* 2 EXISTS\r\n");
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	assert_int_equal(imap_reader_raw_line(&rd, &line, &len),
			 MAILIMAP_NO_ERROR);
	assert_int_equal(imap_trailing_literal(line, len, &at), 5);
	assert_int_equal(at, strlen("* 1 FETCH (BODY[] "));
	assert_int_equal(imap_reader_literal(&rd, 5, collect_piece, &c),
			 MAILIMAP_NO_ERROR);
	assert_int_equal(c.len, 5);
	assert_memory_equal(c.data, "hello", 5);
	assert_line(&rd, ")");
	assert_line(&rd, "A OK done"); /* a bare LF ends a line too */
	/* What was read past the last response goes back to libetpan. */
	assert_int_equal(imap_reader_give_back(&rd), MAILIMAP_NO_ERROR);
	imap_reader_free(&rd);
	close_writer(&ps);
	assert_int_equal(mailstream_read(ps.stream, rest, sizeof(rest)), 12);
	assert_memory_equal(rest, "* 2 EXISTS\r\n", 12);
	free(c.data);
	close_stream(&ps);
}

static void test_libetpan_buffer_comes_first(void **state)
{
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	char first[2];

	(void)state;
	put_str(&ps, "* OK one\r\n* OK two\r\n");
	/* libetpan has buffered everything after the two octets it gave. */
	assert_int_equal(mailstream_read(ps.stream, first, 2), 2);
	assert_true(ps.stream->read_buffer_len > 0);
	put_str(&ps, "* OK three\r\n");
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	assert_line(&rd, "OK one");
	assert_line(&rd, "* OK two");
	assert_line(&rd, "* OK three");
	imap_reader_free(&rd);
	close_stream(&ps);
}

static void test_line_replaces_literals(void **state)
{
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	const char *line;
	size_t len;

	(void)state;
	put_str(&ps, "* LIST () \"/\" {3}\r\nabc (x {2+}\r\nyz)\r\n* OK\r\n");
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	assert_int_equal(imap_reader_line(&rd, &line, &len), MAILIMAP_NO_ERROR);
	assert_int_equal(len, strlen("* LIST () \"/\" \"\" (x \"\")"));
	assert_memory_equal(line, "* LIST () \"/\" \"\" (x \"\")", len);
	assert_int_equal(imap_reader_line(&rd, &line, &len), MAILIMAP_NO_ERROR);
	assert_int_equal(len, 4);
	imap_reader_free(&rd);
	close_stream(&ps);
}

static void test_literal_stop_and_skip(void **state)
{
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	struct collect c = { .stop_after = 1 };

	(void)state;
	put_str(&ps, "0123456789");
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	/* Skipped: no callback. */
	assert_int_equal(imap_reader_literal(&rd, 4, NULL, NULL),
			 MAILIMAP_NO_ERROR);
	assert_int_equal(imap_reader_literal(&rd, 6, collect_piece, &c),
			 IMAP_READER_STOPPED);
	assert_int_equal(c.pieces, 1);
	assert_memory_equal(c.data, "456789", c.len);
	free(c.data);
	imap_reader_free(&rd);
	close_stream(&ps);
}

static void test_bounds_and_eof(void **state)
{
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	char *big = malloc(IMAP_READER_SIZE + 10);
	const char *line;
	size_t len;
	pid_t pid;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', IMAP_READER_SIZE + 10);
	/* A child writes it: it is more than a socket buffer may take. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(30);
		_exit(write(ps.writer, big, IMAP_READER_SIZE + 10) ==
		      IMAP_READER_SIZE + 10 ? 0 : 1);
	}
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	/* A line longer than the buffer is refused, not grown into. */
	assert_int_equal(imap_reader_raw_line(&rd, &line, &len),
			 MAILIMAP_ERROR_PARSE);
	imap_reader_free(&rd);
	close_stream(&ps);
	waitpid(pid, NULL, 0);
	free(big);

	/* The end of the stream in a literal is a stream error. */
	ps = open_stream();
	put_str(&ps, "abc");
	close_writer(&ps);
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	assert_int_equal(imap_reader_literal(&rd, 10, NULL, NULL),
			 MAILIMAP_ERROR_STREAM);
	imap_reader_free(&rd);
	close_stream(&ps);
}

/* A literal of several MB arrives whole, in pieces of at most the
 * reader's buffer, in order. */
static void test_large_literal_in_pieces(void **state)
{
	enum { SIZE = 3 * 1024 * 1024 + 7 };
	struct pipe_stream ps = open_stream();
	struct imap_reader rd;
	struct collect c = { 0 };
	char *data = malloc(SIZE);
	pid_t pid;

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < SIZE; i++)
		data[i] = (char)('a' + (i * 7 + i / 251) % 26);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(30);
		_exit(write(ps.writer, data, SIZE) == SIZE &&
		      write(ps.writer, ")\r\n", 3) == 3 ? 0 : 1);
	}
	assert_int_equal(imap_reader_init(&rd, ps.stream, IMAP_READER_SIZE), MAILIMAP_NO_ERROR);
	assert_int_equal(imap_reader_literal(&rd, SIZE, collect_piece, &c),
			 MAILIMAP_NO_ERROR);
	assert_int_equal(c.len, SIZE);
	assert_memory_equal(c.data, data, SIZE);
	assert_true(c.largest <= IMAP_READER_SIZE);
	assert_line(&rd, ")");
	imap_reader_free(&rd);
	close_stream(&ps);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	free(c.data);
	free(data);
}

/* A listening socket on loopback; its port in *PORT_R. */
static int tcp_listener(unsigned *port_r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sin);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
	*port_r = ntohs(sin.sin_port);
	return lfd;
}

/* In a child: accept one connection on LFD (over TLS with a throw-away
 * certificate if asked), write DATA and the end of a response at once,
 * then wait for the reader to close. */
static pid_t serve_literal(int lfd, bool tls, const char *data, size_t size)
{
	static const char tail[] = ")\r\nA OK\r\n";
	pid_t pid = fork();
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	EVP_PKEY *pkey;
	X509 *x509;
	char drain[256];
	int fd;

	assert_true(pid >= 0);
	if (pid > 0)
		return pid;
	alarm(30);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(1);
	if (tls) {
		if (tls_cert_new(&pkey, &x509) < 0 ||
		    (ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
		    SSL_CTX_use_certificate(ctx, x509) != 1 ||
		    SSL_CTX_use_PrivateKey(ctx, pkey) != 1 ||
		    (ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
		    SSL_accept(ssl) != 1)
			_exit(2);
		/* Records of every size, as a server's writes come. */
		for (size_t at = 0, step = 1000; at < size; step += 7919) {
			size_t n = step % 40000 + 1;

			if (n > size - at)
				n = size - at;
			if (SSL_write(ssl, data + at, (int)n) != (int)n)
				_exit(3);
			at += n;
		}
		if (SSL_write(ssl, tail, sizeof(tail) - 1) !=
		    (int)sizeof(tail) - 1)
			_exit(3);
		while (SSL_read(ssl, drain, sizeof(drain)) > 0)
			;
		_exit(0);
	}
	if (write(fd, data, size) != (ssize_t)size ||
	    write(fd, tail, sizeof(tail) - 1) != (ssize_t)sizeof(tail) - 1)
		_exit(3);
	while (read(fd, drain, sizeof(drain)) > 0)
		;
	_exit(0);
}

/* A mailstream over popgate's transport to PORT on loopback. */
static mailstream *transport_stream(unsigned port, bool tls)
{
	struct transport_settings set = {
		.host = "127.0.0.1", .port = port, .server_name = "localhost",
		.connect_timeout_ms = 5000,
		/* A read left waiting for octets that are not coming fails
		 * the test here instead of hanging it. */
		.io_timeout_ms = 3000,
	};
	struct transport_error err;
	struct imap_transport *tr = imap_transport_connect(&set, &err);
	mailstream_low *low;
	mailstream *stream;

	assert_non_null(tr);
	if (tls)
		assert_int_equal(imap_transport_start_tls(tr, &err), 0);
	low = imap_transport_low_new(tr);
	assert_non_null(low);
	stream = mailstream_new(low, 8192);
	assert_non_null(stream);
	return stream;
}

static int stream_rcvlowat(mailstream *stream)
{
	int fd = mailstream_low_get_fd(mailstream_get_low(stream));
	int lowat = -1;
	socklen_t len = sizeof(lowat);

	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, &len),
			 0);
	return lowat;
}

/*
 * Literals of every size against the low-water mark, in plaintext and
 * over TLS (where OpenSSL holds part of what the socket has delivered):
 * one that fits the buffer, one several buffers long, a last piece just
 * above and below the mark's threshold.  Each is written whole with the
 * response's end right behind it, so a mark set past the literal's end
 * (nothing more is coming) or left set for the next line makes a read
 * time out.
 */
static void test_literal_batches_end_exactly(void **state)
{
	static const size_t sizes[] = {
		100 * 1000, 3 * IMAP_READER_SIZE + 33 * 1024,
		IMAP_READER_SIZE + 31 * 1024, 40 * 1024,
		IMAP_READER_SIZE + 120 * 1024,
	};

	(void)state;
	for (int tls = 0; tls <= 1; tls++) {
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			size_t size = sizes[k];
			struct imap_reader rd;
			struct collect c = { 0 };
			char *data = malloc(size);
			unsigned port;
			int lfd = tcp_listener(&port);
			mailstream *stream;
			pid_t pid;

			assert_non_null(data);
			for (size_t i = 0; i < size; i++)
				data[i] = (char)('a' + (i * 13 + k) % 26);
			pid = serve_literal(lfd, tls, data, size);
			close(lfd);
			stream = transport_stream(port, tls);
			assert_int_equal(imap_reader_init(&rd, stream,
							  IMAP_READER_SIZE),
					 MAILIMAP_NO_ERROR);
			assert_int_equal(imap_reader_literal(&rd, size,
							     collect_piece, &c),
					 MAILIMAP_NO_ERROR);
			assert_int_equal(c.len, size);
			assert_memory_equal(c.data, data, size);
			assert_line(&rd, ")");
			assert_line(&rd, "A OK");
			assert_int_equal(stream_rcvlowat(stream), 1);
			imap_reader_free(&rd);
			mailstream_close(stream);
			assert_int_equal(waitpid(pid, NULL, 0), pid);
			free(c.data);
			free(data);
		}
	}
}

static void test_tokens(void **state)
{
	const char *p, *s;
	uint32_t n = 0;
	size_t at = 0;

	(void)state;
	s = "4294967295 x";
	p = s;
	assert_true(imap_eat_number(&p, s + strlen(s), &n));
	assert_int_equal(n, UINT32_MAX);
	assert_int_equal(p - s, 10);
	s = "4294967296";
	p = s;
	assert_false(imap_eat_number(&p, s + strlen(s), &n));
	assert_ptr_equal(p, s); /* not moved on failure */
	s = "ok";
	p = s;
	assert_true(imap_eat_word(&p, s + 2, "OK"));
	assert_false(imap_eat_word(&p, s + 2, "NO"));
	/* Case folds for letters only: "{" is not "[", "@" is not "`". */
	s = "Ok {UidValidity @";
	p = s;
	assert_true(imap_eat_word(&p, s + strlen(s), "oK "));
	assert_false(imap_eat_word(&p, s + strlen(s), "[UIDVALIDITY"));
	assert_true(imap_eat_word(&p, s + strlen(s), "{UIDVALIDITY "));
	assert_false(imap_eat_word(&p, s + strlen(s), "`"));
	assert_true(imap_eat_word(&p, s + strlen(s), "@"));
	assert_ptr_equal(p, s + strlen(s));
	p = s;
	assert_false(imap_eat_word(&p, s + 1, "OK")); /* past the end */
	assert_ptr_equal(p, s);

	/* Item names end at a space or ")" outside brackets only. */
	s = "BODY[HEADER.FIELDS (A B)]<0> {5}";
	assert_int_equal(imap_item_name(s, s + strlen(s)), 28);
	s = "uid 7)";
	assert_int_equal(imap_item_name(s, s + strlen(s)), 3);
	assert_true(imap_item_is(s, 3, "UID"));
	assert_false(imap_item_is(s, 3, "UIDX"));
	assert_false(imap_item_is(s, 2, "UID"));
	s = "RFC822.SIZE)";
	assert_int_equal(imap_item_name(s, s + strlen(s)), 11);

	s = "(a (b \"c) \\\"d\") e) rest";
	p = s;
	assert_true(imap_skip_value(&p, s + strlen(s)));
	assert_string_equal(p, " rest");
	s = "(a (b)";
	p = s;
	assert_false(imap_skip_value(&p, s + strlen(s)));
	s = "\"open";
	p = s;
	assert_false(imap_skip_value(&p, s + strlen(s)));

	assert_int_equal(imap_trailing_literal("x {12}", 6, &at), 12);
	assert_int_equal(at, 2);
	assert_int_equal(imap_trailing_literal("x {12+}", 7, &at), 12);
	assert_int_equal(imap_trailing_literal("{0}", 3, &at), 0);
	assert_int_equal(imap_trailing_literal("x {}", 4, &at), -1);
	assert_int_equal(imap_trailing_literal("x 12}", 5, &at), -1);
	assert_int_equal(imap_trailing_literal("{99999999999}", 13, &at), -1);
	assert_int_equal(imap_trailing_literal("}", 1, &at), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_literal_and_give_back),
		cmocka_unit_test(test_libetpan_buffer_comes_first),
		cmocka_unit_test(test_line_replaces_literals),
		cmocka_unit_test(test_literal_stop_and_skip),
		cmocka_unit_test(test_bounds_and_eof),
		cmocka_unit_test(test_large_literal_in_pieces),
		cmocka_unit_test(test_literal_batches_end_exactly),
		cmocka_unit_test(test_tokens),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
