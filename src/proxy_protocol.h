/*
 * proxy_protocol.h - the PROXY protocol header (HAProxy's, versions 1 and
 * 2) that a load balancer sends before the client's first octet, telling
 * the address it accepted the client from.
 *
 * Behind a balancer every client would otherwise come from the balancer's
 * address: in the logs, in the failed-login lines fail2ban reads, and in
 * the address forwarded upstream for the server's per-client limits.  A
 * listener either requires the header on every connection or never reads
 * one: accepting it optionally would let any client claim any address.
 */
#ifndef POPGATE_PROXY_PROTOCOL_H
#define POPGATE_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest header accepted: version 1's own limit, and for version 2 the
 * addresses with room for the TLVs balancers add (AWS: an endpoint id). */
#define PROXY_V1_MAX 107
#define PROXY_V2_MAX 1024

enum proxy_parse {
	PROXY_NEED_MORE,  /* a valid beginning: every octet so far is header */
	PROXY_DONE,       /* a whole header in the first hdr->length octets */
	PROXY_INVALID,    /* not a header we accept; *ERROR_R says why */
};

struct proxy_header {
	size_t length;  /* octets the header takes */
	/* Whether it names the client: not for version 2's LOCAL (the
	 * balancer's own health check), version 1's UNKNOWN, or families
	 * other than TCP over IPv4 and IPv6. */
	bool has_source;
	struct sockaddr_storage source;
	socklen_t source_len;
};

/*
 * Parse the LEN octets received so far.  PROXY_NEED_MORE means all of
 * them belong to the header, so they may be consumed while waiting for
 * the rest.  On PROXY_INVALID, *ERROR_R is a static reason.
 */
enum proxy_parse proxy_header_parse(const unsigned char *buf, size_t len,
				    struct proxy_header *hdr,
				    const char **error_r);

/*
 * Read the header from the connected socket FD within TIMEOUT_MS,
 * consuming exactly its octets (a TLS ClientHello may follow at once).
 * Returns 0, or -1 with a static reason in *ERROR_R (invalid, timed out,
 * closed).
 */
int proxy_header_read(int fd, uint64_t timeout_ms, struct proxy_header *hdr,
		      const char **error_r);

#endif
