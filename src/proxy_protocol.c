/*
 * proxy_protocol.c - PROXY protocol headers, versions 1 (text) and 2
 * (binary), as HAProxy's specification describes them; parsed strictly,
 * since a header is trusted to say who the client is.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>

#include "monotime.h"
#include "proxy_protocol.h"

static const unsigned char v2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};
static const char v1_prefix[] = "PROXY ";

static enum proxy_parse invalid(const char **error_r, const char *why)
{
	*error_r = why;
	return PROXY_INVALID;
}

/* --- version 1: "PROXY TCP4 src dst sport dport\r\n" -------------------- */

/* The next space-separated field of [*P, END) in FIELD (NUL-terminated);
 * false when it is empty or does not fit. */
static bool next_field(const char **p, const char *end, char *field,
		       size_t size)
{
	const char *start = *p, *q = start;

	while (q < end && *q != ' ')
		q++;
	if (q == start || (size_t)(q - start) >= size)
		return false;
	memcpy(field, start, (size_t)(q - start));
	field[q - start] = '\0';
	*p = q < end ? q + 1 : q;
	return true;
}

/* A decimal port, 0..65535, without sign or leading zeros. */
static bool parse_port(const char *s, uint16_t *port_r)
{
	unsigned long v = 0;

	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return false;
	}
	*port_r = (uint16_t)v;
	return true;
}

/* The source address and port as text, in HDR. */
static bool set_source_text(struct proxy_header *hdr, int family,
			    const char *addr, const char *port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&hdr->source;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&hdr->source;
	uint16_t p;

	if (!parse_port(port, &p))
		return false;
	memset(&hdr->source, 0, sizeof(hdr->source));
	if (family == AF_INET) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(p);
		hdr->source_len = sizeof(*sin);
		return inet_pton(AF_INET, addr, &sin->sin_addr) == 1;
	}
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(p);
	hdr->source_len = sizeof(*sin6);
	return inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1;
}

static enum proxy_parse parse_v1(const char *buf, size_t len,
				 struct proxy_header *hdr,
				 const char **error_r)
{
	char proto[8], src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
	char sport[8], dport[8];
	const char *crlf = memchr(buf, '\r', len), *p, *end;
	struct in6_addr ignored;
	int family;

	if (memchr(buf, '\n', crlf != NULL ? (size_t)(crlf - buf) : len))
		return invalid(error_r, "malformed version 1 header");
	if (crlf == NULL || crlf + 1 >= buf + len) {
		if (len >= PROXY_V1_MAX)
			return invalid(error_r, "version 1 header too long");
		return PROXY_NEED_MORE;
	}
	if (crlf[1] != '\n' || crlf + 2 > buf + PROXY_V1_MAX)
		return invalid(error_r, "malformed version 1 header");
	hdr->length = (size_t)(crlf + 2 - buf);
	p = buf + sizeof(v1_prefix) - 1;
	end = crlf;
	if (!next_field(&p, end, proto, sizeof(proto)))
		return invalid(error_r, "malformed version 1 header");
	if (strcmp(proto, "UNKNOWN") == 0) {
		/* The rest of the line is to be ignored. */
		hdr->has_source = false;
		return PROXY_DONE;
	}
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return invalid(error_r, "unknown version 1 protocol");
	if (!next_field(&p, end, src, sizeof(src)) ||
	    !next_field(&p, end, dst, sizeof(dst)) ||
	    !next_field(&p, end, sport, sizeof(sport)) ||
	    !next_field(&p, end, dport, sizeof(dport)) || p != end ||
	    end[-1] == ' ')
		return invalid(error_r, "malformed version 1 header");
	if (!set_source_text(hdr, family, src, sport) ||
	    inet_pton(family, dst, &ignored) != 1 ||
	    !parse_port(dport, &(uint16_t){ 0 }))
		return invalid(error_r, "bad address in version 1 header");
	hdr->has_source = true;
	return PROXY_DONE;
}

/* --- version 2: signature, version and command, family, length ----------- */

static enum proxy_parse parse_v2(const unsigned char *buf, size_t len,
				 struct proxy_header *hdr,
				 const char **error_r)
{
	size_t body;

	if (len < 16)
		return PROXY_NEED_MORE;
	if ((buf[12] >> 4) != 2)
		return invalid(error_r, "unknown version 2 version");
	body = (size_t)buf[14] << 8 | buf[15];
	if (16 + body > PROXY_V2_MAX)
		return invalid(error_r, "version 2 header too long");
	if (len < 16 + body)
		return PROXY_NEED_MORE;
	hdr->length = 16 + body;
	hdr->has_source = false;
	switch (buf[12] & 0x0f) {
	case 0x0: /* LOCAL: the balancer's own connection */
		return PROXY_DONE;
	case 0x1: /* PROXY */
		break;
	default:
		return invalid(error_r, "unknown version 2 command");
	}
	memset(&hdr->source, 0, sizeof(hdr->source));
	if (buf[13] == 0x11) { /* TCP over IPv4 */
		struct sockaddr_in *sin = (struct sockaddr_in *)&hdr->source;

		if (body < 12)
			return invalid(error_r, "short version 2 addresses");
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, buf + 16, 4);
		memcpy(&sin->sin_port, buf + 24, 2);
		hdr->source_len = sizeof(*sin);
		hdr->has_source = true;
	} else if (buf[13] == 0x21) { /* TCP over IPv6 */
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&hdr->source;

		if (body < 36)
			return invalid(error_r, "short version 2 addresses");
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, buf + 16, 16);
		memcpy(&sin6->sin6_port, buf + 48, 2);
		hdr->source_len = sizeof(*sin6);
		hdr->has_source = true;
	}
	/* Other families (UNSPEC, UNIX, datagrams): the addresses are to be
	 * ignored, as for LOCAL.  TLVs after the addresses are skipped. */
	return PROXY_DONE;
}

enum proxy_parse proxy_header_parse(const unsigned char *buf, size_t len,
				    struct proxy_header *hdr,
				    const char **error_r)
{
	size_t n;

	if (len == 0)
		return PROXY_NEED_MORE;
	if (buf[0] == v1_prefix[0]) {
		n = len < sizeof(v1_prefix) - 1 ? len : sizeof(v1_prefix) - 1;
		if (memcmp(buf, v1_prefix, n) != 0)
			return invalid(error_r, "not a PROXY protocol header");
		return parse_v1((const char *)buf, len, hdr, error_r);
	}
	n = len < sizeof(v2_signature) ? len : sizeof(v2_signature);
	if (memcmp(buf, v2_signature, n) != 0)
		return invalid(error_r, "not a PROXY protocol header");
	return parse_v2(buf, len, hdr, error_r);
}

/* --- reading it from the socket ------------------------------------------ */

int proxy_header_read(int fd, uint64_t timeout_ms, struct proxy_header *hdr,
		      const char **error_r)
{
	unsigned char buf[PROXY_V2_MAX];
	uint64_t deadline = monotime_ms() + timeout_ms;
	size_t have = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		enum proxy_parse r;
		uint64_t left;
		ssize_t n;
		int w;

		left = monotime_left_ms(deadline);
		w = poll(&pfd, 1, left < INT_MAX ? (int)left : INT_MAX);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			*error_r = "poll failed";
			return -1;
		}
		if (w == 0) {
			*error_r = "timed out";
			return -1;
		}
		/* Peeked, so that nothing after the header is taken. */
		n = recv(fd, buf + have, sizeof(buf) - have, MSG_PEEK);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			*error_r = n == 0 ? "closed before the header ended" :
				"read failed";
			return -1;
		}
		r = proxy_header_parse(buf, have + (size_t)n, hdr, error_r);
		if (r == PROXY_INVALID)
			return -1;
		/* What is consumed now was peeked: it is there. */
		n = r == PROXY_DONE ? (ssize_t)(hdr->length - have) : n;
		if (recv(fd, buf + have, (size_t)n, 0) != n) {
			*error_r = "read failed";
			return -1;
		}
		have += (size_t)n;
		if (r == PROXY_DONE)
			return 0;
	}
}
