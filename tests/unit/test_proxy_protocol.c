/*
 * test_proxy_protocol.c - PROXY protocol headers (versions 1 and 2):
 * parsed strictly, every proper prefix of a valid one asks for more, and
 * reading one from a socket takes exactly its octets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy_protocol.h"

static enum proxy_parse parse(const void *buf, size_t len,
			      struct proxy_header *hdr)
{
	const char *error = NULL;
	enum proxy_parse r = proxy_header_parse(buf, len, hdr, &error);

	if (r == PROXY_INVALID)
		assert_non_null(error);
	return r;
}

static enum proxy_parse parse_text(const char *text, struct proxy_header *hdr)
{
	return parse(text, strlen(text), hdr);
}

/* Every proper prefix of the LEN octets at BUF needs more. */
static void assert_prefixes_need_more(const void *buf, size_t len)
{
	struct proxy_header hdr;

	for (size_t n = 0; n < len; n++)
		assert_int_equal(parse(buf, n, &hdr), PROXY_NEED_MORE);
}

static void assert_source(const struct proxy_header *hdr, const char *ip,
			  unsigned port)
{
	char text[INET6_ADDRSTRLEN];
	const struct sockaddr_in *sin = (const void *)&hdr->source;
	const struct sockaddr_in6 *sin6 = (const void *)&hdr->source;

	assert_true(hdr->has_source);
	if (hdr->source.ss_family == AF_INET) {
		assert_int_equal(hdr->source_len, sizeof(*sin));
		inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
		assert_int_equal(ntohs(sin->sin_port), port);
	} else {
		assert_int_equal(hdr->source.ss_family, AF_INET6);
		assert_int_equal(hdr->source_len, sizeof(*sin6));
		inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
		assert_int_equal(ntohs(sin6->sin6_port), port);
	}
	assert_string_equal(text, ip);
}

static void test_v1_tcp(void **state)
{
	const char *v4 = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\n";
	const char *v6 = "PROXY TCP6 2001:db8::7 2001:db8::1 65535 995\r\n";
	struct proxy_header hdr;

	(void)state;
	assert_int_equal(parse_text(v4, &hdr), PROXY_DONE);
	assert_int_equal(hdr.length, strlen(v4));
	assert_source(&hdr, "192.0.2.7", 40000);
	assert_prefixes_need_more(v4, strlen(v4));

	assert_int_equal(parse_text(v6, &hdr), PROXY_DONE);
	assert_int_equal(hdr.length, strlen(v6));
	assert_source(&hdr, "2001:db8::7", 65535);
	assert_prefixes_need_more(v6, strlen(v6));
}

static void test_v1_length_excludes_what_follows(void **state)
{
	const char *text = "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\nUSER x\r\n";
	struct proxy_header hdr;

	(void)state;
	assert_int_equal(parse_text(text, &hdr), PROXY_DONE);
	assert_int_equal(hdr.length, strlen(text) - strlen("USER x\r\n"));
}

static void test_v1_unknown(void **state)
{
	struct proxy_header hdr;

	(void)state;
	assert_int_equal(parse_text("PROXY UNKNOWN\r\n", &hdr), PROXY_DONE);
	assert_false(hdr.has_source);
	assert_int_equal(hdr.length, 15);
	/* Whatever follows UNKNOWN on the line is ignored. */
	assert_int_equal(parse_text("PROXY UNKNOWN ::1 ::1 1 2\r\n", &hdr),
			 PROXY_DONE);
	assert_false(hdr.has_source);
}

static void test_v1_invalid(void **state)
{
	static const char *const bad[] = {
		"PROXY TCP5 192.0.2.7 198.51.100.1 40000 110\r\n",
		"PROXY TCP4 192.0.2.300 198.51.100.1 40000 110\r\n",
		"PROXY TCP4 2001:db8::7 198.51.100.1 40000 110\r\n",
		"PROXY TCP6 192.0.2.7 2001:db8::1 40000 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100 40000 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 65536 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 040000 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 -1 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 x\r\n",
		"PROXY TCP4  192.0.2.7 198.51.100.1 40000 110\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110 \r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110 7\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\rx",
		"PROXY\r\n",
		"proxy TCP4 192.0.2.7 198.51.100.1 40000 110\r\n",
		"USER alice\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	};
	struct proxy_header hdr;
	char line[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse_text(bad[i], &hdr), PROXY_INVALID);
	/* No line end within version 1's 107 octets. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY ", 6);
	assert_int_equal(parse(line, 106, &hdr), PROXY_NEED_MORE);
	assert_int_equal(parse(line, 107, &hdr), PROXY_INVALID);
}

/* A version 2 header: command CMD, family FAM, then BODY_LEN octets. */
static size_t v2_header(unsigned char *buf, unsigned char cmd,
			unsigned char fam, const void *body, size_t body_len)
{
	static const unsigned char sig[12] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
		0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
	};

	memcpy(buf, sig, sizeof(sig));
	buf[12] = cmd;
	buf[13] = fam;
	buf[14] = (unsigned char)(body_len >> 8);
	buf[15] = (unsigned char)body_len;
	if (body_len > 0)
		memcpy(buf + 16, body, body_len);
	return 16 + body_len;
}

static void test_v2_proxy(void **state)
{
	/* 192.0.2.7:40000 -> 198.51.100.1:110, then a TLV (an AWS-style
	 * endpoint id) that is skipped. */
	static const unsigned char v4[] = {
		192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x00, 0x6e,
		0xea, 0x00, 0x05, 'v', 'p', 'c', 'e', '1',
	};
	unsigned char v6[36] = { 0 }, buf[PROXY_V2_MAX + 16];
	struct proxy_header hdr;
	size_t len;

	(void)state;
	len = v2_header(buf, 0x21, 0x11, v4, sizeof(v4));
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_int_equal(hdr.length, len);
	assert_source(&hdr, "192.0.2.7", 40000);
	assert_prefixes_need_more(buf, len);

	inet_pton(AF_INET6, "2001:db8::7", v6);
	inet_pton(AF_INET6, "2001:db8::1", v6 + 16);
	v6[32] = 0x01; /* port 443 */
	v6[33] = 0xbb;
	v6[35] = 110;
	len = v2_header(buf, 0x21, 0x21, v6, sizeof(v6));
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_source(&hdr, "2001:db8::7", 443);
}

static void test_v2_without_source(void **state)
{
	static const unsigned char v4[12] = { 192, 0, 2, 7 };
	unsigned char buf[64];
	struct proxy_header hdr;
	size_t len;

	(void)state;
	/* LOCAL: the balancer's health check, addresses ignored. */
	len = v2_header(buf, 0x20, 0x11, v4, sizeof(v4));
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_false(hdr.has_source);
	assert_int_equal(hdr.length, len);
	/* LOCAL with no addresses at all. */
	len = v2_header(buf, 0x20, 0x00, NULL, 0);
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_false(hdr.has_source);
	/* PROXY over an unspecified family or UDP: nothing to use. */
	len = v2_header(buf, 0x21, 0x00, NULL, 0);
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_false(hdr.has_source);
	len = v2_header(buf, 0x21, 0x12, v4, sizeof(v4));
	assert_int_equal(parse(buf, len, &hdr), PROXY_DONE);
	assert_false(hdr.has_source);
}

static void test_v2_invalid(void **state)
{
	static const unsigned char v4[12] = { 192, 0, 2, 7 };
	static const unsigned char zeros[PROXY_V2_MAX];
	unsigned char buf[PROXY_V2_MAX + 16];
	struct proxy_header hdr;
	size_t len;

	(void)state;
	len = v2_header(buf, 0x11, 0x11, v4, sizeof(v4)); /* version 1 */
	assert_int_equal(parse(buf, len, &hdr), PROXY_INVALID);
	len = v2_header(buf, 0x22, 0x11, v4, sizeof(v4)); /* command 2 */
	assert_int_equal(parse(buf, len, &hdr), PROXY_INVALID);
	len = v2_header(buf, 0x21, 0x11, v4, 8); /* addresses cut short */
	assert_int_equal(parse(buf, len, &hdr), PROXY_INVALID);
	len = v2_header(buf, 0x21, 0x21, v4, sizeof(v4));
	assert_int_equal(parse(buf, len, &hdr), PROXY_INVALID);
	/* Longer than accepted: refused from its first 16 octets. */
	v2_header(buf, 0x21, 0x11, zeros, PROXY_V2_MAX - 15);
	assert_int_equal(parse(buf, 16, &hdr), PROXY_INVALID);
	/* A signature that goes wrong part-way. */
	len = v2_header(buf, 0x21, 0x11, v4, sizeof(v4));
	buf[7] = 'q';
	assert_int_equal(parse(buf, 8, &hdr), PROXY_INVALID);
}

/* --- reading from a socket ------------------------------------------------ */

static void socket_pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
}

static void assert_next_octets(int fd, const char *want)
{
	char got[64] = { 0 };
	size_t have = 0, len = strlen(want);

	while (have < len) {
		ssize_t n = read(fd, got + have, len - have);

		assert_true(n > 0);
		have += (size_t)n;
	}
	assert_memory_equal(got, want, len);
}

static void test_read_takes_exactly_the_header(void **state)
{
	const char *header = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\n";
	const char *after = "\x16\x03\x01 hello";
	struct proxy_header hdr;
	const char *error;
	pid_t pid;
	int fds[2], status;

	(void)state;
	socket_pair(fds);
	/* One octet per write: the reader must cope with any grouping. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		for (const char *p = header; *p != '\0'; p++)
			if (write(fds[1], p, 1) != 1)
				_exit(1);
		_exit(write(fds[1], after, strlen(after)) ==
		      (ssize_t)strlen(after) ? 0 : 1);
	}
	close(fds[1]);
	assert_int_equal(proxy_header_read(fds[0], 5000, &hdr, &error), 0);
	assert_int_equal(hdr.length, strlen(header));
	assert_source(&hdr, "192.0.2.7", 40000);
	assert_next_octets(fds[0], after);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(status, 0);
	close(fds[0]);
}

static void test_read_v2_then_data(void **state)
{
	static const unsigned char v4[12] = { 192, 0, 2, 9, 0, 0, 0, 0, 0, 80 };
	unsigned char buf[64];
	struct proxy_header hdr;
	const char *error;
	size_t len;
	int fds[2];

	(void)state;
	socket_pair(fds);
	len = v2_header(buf, 0x21, 0x11, v4, sizeof(v4));
	memcpy(buf + len, "CAPA\r\n", 6);
	assert_int_equal(write(fds[1], buf, len + 6), (ssize_t)(len + 6));
	assert_int_equal(proxy_header_read(fds[0], 5000, &hdr, &error), 0);
	assert_source(&hdr, "192.0.2.9", 80);
	assert_next_octets(fds[0], "CAPA\r\n");
	close(fds[0]);
	close(fds[1]);
}

static void test_read_failures(void **state)
{
	struct proxy_header hdr;
	const char *error = NULL;
	int fds[2];

	(void)state;
	/* Part of a header, then nothing: the deadline ends the wait. */
	socket_pair(fds);
	assert_int_equal(write(fds[1], "PROXY TCP4 ", 11), 11);
	assert_int_equal(proxy_header_read(fds[0], 50, &hdr, &error), -1);
	assert_string_equal(error, "timed out");
	/* Then the peer goes away. */
	close(fds[1]);
	assert_int_equal(proxy_header_read(fds[0], 5000, &hdr, &error), -1);
	assert_string_equal(error, "closed before the header ended");
	close(fds[0]);

	/* A client speaking POP3 straight away. */
	socket_pair(fds);
	assert_int_equal(write(fds[1], "USER alice\r\n", 12), 12);
	assert_int_equal(proxy_header_read(fds[0], 5000, &hdr, &error), -1);
	assert_string_equal(error, "not a PROXY protocol header");
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp),
		cmocka_unit_test(test_v1_length_excludes_what_follows),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_invalid),
		cmocka_unit_test(test_v2_proxy),
		cmocka_unit_test(test_v2_without_source),
		cmocka_unit_test(test_v2_invalid),
		cmocka_unit_test(test_read_takes_exactly_the_header),
		cmocka_unit_test(test_read_v2_then_data),
		cmocka_unit_test(test_read_failures),
	};

	return cmocka_run_group_tests_name("proxy_protocol", tests, NULL,
					   NULL);
}
