/*
 * client.h - one POP3 session, run inside its own session process.
 *
 * Wires the accepted socket (conn.h), the POP3 engine (pop3_session.h) and
 * the IMAP backend together and owns the session's clock: idle timeouts,
 * the failed-login penalty, upstream keepalives and the stop request.
 */
#ifndef POPGATE_CLIENT_H
#define POPGATE_CLIENT_H

#include <signal.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "config.h"

struct client_params {
	const struct pg_config *cfg;
	const struct listener_config *listener;
	SSL_CTX *tls_ctx;             /* NULL: no TLS configured */
	/* For every upstream connection (imap_transport_ctx_new); NULL:
	 * the upstream has no TLS, or each connection builds its own. */
	SSL_CTX *upstream_tls_ctx;
	/* Set by the SIGTERM handler.  SIGTERM must be blocked by the caller;
	 * it is let through only while waiting for the client. */
	volatile sig_atomic_t *stop_requested;
	sigset_t wait_sigmask;        /* the mask to use while waiting */
};

/*
 * Serve the client on FD (an accepted socket, owned from now on; closed
 * before returning) coming from PEER.  Blocks until the session ends.
 * Logs connect and disconnect lines with a fresh session id.
 */
void client_run(const struct client_params *params, int fd,
		const struct sockaddr *peer, socklen_t peer_len);

#endif
