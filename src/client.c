/*
 * client.c - one POP3 session, run inside its own session process.
 *
 * The engine is a pure state machine; this file gives it time.  Between
 * commands it waits for the client with the idle timeout the engine asks
 * for, keeps the upstream alive while an authenticated client idles, sleeps
 * through failed-login penalties, and turns a stop request into a polite
 * close.  The stop request is only ever honoured here, while waiting for a
 * command, so a session is never cut during UPDATE.
 */
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "client.h"
#include "conn.h"
#include "imap_backend.h"
#include "log.h"
#include "monotime.h"
#include "pop3_session.h"
#include "proxy_protocol.h"

#define CLIENT_READ_SIZE 16384

struct client {
	const struct client_params *params;
	struct conn *conn;
	struct pop3_session *session;
	const char *close_reason;
	uint64_t idle_deadline;
	uint64_t keepalive_at;   /* next NOOP upstream while idle */
};

/*
 * Only a complete command restarts the idle timer (X-V0002); otherwise a
 * client trickling one octet a minute would hold the session forever.
 */
static void restart_idle_timer(struct client *client)
{
	uint64_t now = monotime_ms();

	client->idle_deadline = now +
		pop3_session_idle_timeout_ms(client->session);
	client->keepalive_at = now + client->params->cfg->upstream_keepalive_ms;
}

static int client_write(void *ctx, const void *data, size_t len)
{
	struct client *client = ctx;

	if (conn_write_all(client->conn, data, len,
			   client->params->cfg->pop3.timeout_send_ms) < 0) {
		if (client->close_reason == NULL)
			client->close_reason = "send_failed";
		return -1;
	}
	return 0;
}

static void make_session_id(char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[5];
	size_t i;

	/*
	 * A log correlation id, not a secret: getrandom() instead of
	 * RAND_bytes(), whose first call in every forked session set up
	 * OpenSSL's DRBG again (seen in perf of short sessions).
	 */
	if (getrandom(raw, sizeof(raw), GRND_NONBLOCK) != (ssize_t)sizeof(raw))
		memset(raw, 0, sizeof(raw));
	for (i = 0; i < sizeof(raw) && 2 * i + 2 < size; i++) {
		buf[2 * i] = hex[raw[i] >> 4];
		buf[2 * i + 1] = hex[raw[i] & 0xf];
	}
	buf[2 * i] = '\0';
}

/* A handshake is part of logging in, so it gets the login idle timeout. */
static uint64_t handshake_timeout_ms(const struct client_params *params)
{
	return params->cfg->pop3.timeout_unauthenticated_ms;
}

/* Sleep through a failed-login penalty; returns early on a stop request.
 * Client input meanwhile stays unread in the socket. */
static void wait_penalty(const struct client_params *params, uint64_t ms)
{
	uint64_t deadline = monotime_ms() + ms;

	while (!*params->stop_requested) {
		uint64_t left = monotime_left_ms(deadline);
		struct timespec ts = monotime_timespec(left);

		if (left == 0)
			break;
		if (ppoll(NULL, 0, &ts, &params->wait_sigmask) == 0)
			break;
	}
}

/*
 * Wait for the next command and feed it to the engine.  Returns when the
 * engine has consumed input, or the session was closed (timeout, client
 * gone, stop request).
 */
static void wait_for_command(struct client *client)
{
	const struct pg_config *cfg = client->params->cfg;
	struct pop3_session *s = client->session;
	uint64_t deadline = client->idle_deadline;
	char buf[CLIENT_READ_SIZE];

	for (;;) {
		uint64_t wait_ms = monotime_left_ms(deadline);
		bool keepalive_due = false;
		enum conn_status status;
		size_t len;

		if (pop3_session_state(s) == POP3_STATE_TRANSACTION &&
		    cfg->upstream_keepalive_ms > 0 &&
		    monotime_left_ms(client->keepalive_at) < wait_ms) {
			wait_ms = monotime_left_ms(client->keepalive_at);
			keepalive_due = true;
		}
		status = conn_read(client->conn, buf, sizeof(buf), wait_ms,
				   &len);
		switch (status) {
		case CONN_DATA: {
			enum pop3_state before = pop3_session_state(s);

			pop3_session_input(s, buf, len);
			/*
			 * The login's transient buffers (listing read-ahead,
			 * parser state) are free now and the session may sit
			 * idle for its whole timeout: give their pages back.
			 */
			if (before != POP3_STATE_TRANSACTION &&
			    pop3_session_state(s) == POP3_STATE_TRANSACTION)
				malloc_trim(0);
			if (memchr(buf, '\n', len) != NULL)
				restart_idle_timer(client);
			return;
		}
		case CONN_TIMEOUT:
			if (keepalive_due && monotime_left_ms(deadline) > 0) {
				log_debug("event=keepalive");
				if (pop3_session_keepalive(s) < 0)
					log_info("event=keepalive_failed");
				if (pop3_session_state(s) == POP3_STATE_CLOSED) {
					client->close_reason = "upstream_gone";
					return;
				}
				client->keepalive_at = monotime_ms() +
					cfg->upstream_keepalive_ms;
				continue;
			}
			if (monotime_left_ms(deadline) > 0)
				continue;
			log_info("event=timeout state=%s",
				 pop3_session_state(s) ==
				 POP3_STATE_TRANSACTION ? "transaction" :
				 "authorization");
			client->close_reason = "idle_timeout";
			pop3_session_timeout(s);
			return;
		case CONN_INTERRUPTED:
			if (*client->params->stop_requested)
				return;
			continue;
		case CONN_EOF:
			client->close_reason = "client_closed";
			return;
		case CONN_ERROR:
			client->close_reason = "client_error";
			return;
		}
	}
}

/* Drive the engine until it closes or the client goes away. */
static void serve(struct client *client)
{
	const struct client_params *params = client->params;
	struct pop3_session *s = client->session;

	pop3_session_start(s);
	restart_idle_timer(client);
	while (pop3_session_state(s) != POP3_STATE_CLOSED &&
	       client->close_reason == NULL) {
		uint64_t penalty_ms;
		const char *error;

		if (pop3_session_wants_tls(s)) {
			if (conn_start_tls(client->conn, params->tls_ctx,
					   handshake_timeout_ms(params), &error) < 0) {
				log_info("event=tls_failed phase=stls "
					 "reason=\"%s\"", error);
				client->close_reason = "tls_failed";
				break;
			}
			pop3_session_tls_started(s);
			restart_idle_timer(client);
			continue;
		}
		penalty_ms = pop3_session_take_penalty_ms(s);
		if (penalty_ms > 0) {
			wait_penalty(params, penalty_ms);
			if (!*params->stop_requested)
				pop3_session_input(s, NULL, 0);
			restart_idle_timer(client);
			continue;
		}
		if (*params->stop_requested) {
			client->close_reason = "shutdown";
			pop3_session_shutdown(s);
			break;
		}
		wait_for_command(client);
	}
}

/*
 * On a listener behind a load balancer, the PROXY protocol header that
 * comes first: the client's address replaces the balancer's in IP and
 * PORT.  0, or -1 after logging why the connection is refused (without a
 * greeting: a balancer that sends no header is misconfigured, and a
 * client that sends none is not one of its).
 */
static int read_proxy_header(const struct client_params *params, int fd,
			     char *ip, size_t ip_size, char *port,
			     size_t port_size)
{
	struct proxy_header hdr;
	const char *error;

	if (proxy_header_read(fd, handshake_timeout_ms(params), &hdr,
			      &error) < 0) {
		log_info("event=proxy_header_failed ip=%s port=%s "
			 "listener_port=%u reason=\"%s\"", ip, port,
			 params->listener->port, error);
		return -1;
	}
	/* LOCAL or UNKNOWN: the balancer's own connection (a health check). */
	if (hdr.has_source)
		(void)getnameinfo((const struct sockaddr *)&hdr.source,
				  hdr.source_len, ip, ip_size, port, port_size,
				  NI_NUMERICHOST | NI_NUMERICSERV);
	return 0;
}

void client_run(const struct client_params *params, int fd,
		const struct sockaddr *peer, socklen_t peer_len)
{
	const struct pg_config *cfg = params->cfg;
	char sid[16], ip[NI_MAXHOST] = "unknown", port[NI_MAXSERV] = "0";
	char balancer[NI_MAXHOST + 16] = "";
	char peer_text[NI_MAXHOST + NI_MAXSERV + 16];
	struct client client = { .params = params };
	struct pop3_settings settings = cfg->pop3;
	struct upstream_settings upstream = cfg->upstream;
	struct pop3_io io = { client_write, &client };
	struct client_origin origin;
	uint64_t started = monotime_ms();
	struct backend *be = NULL;
	const char *error;

	make_session_id(sid, sizeof(sid));
	log_set_session(sid);
	(void)getnameinfo(peer, peer_len, ip, sizeof(ip), port, sizeof(port),
			  NI_NUMERICHOST | NI_NUMERICSERV);
	if (params->listener->proxy_protocol) {
		snprintf(balancer, sizeof(balancer), " proxy_ip=%s", ip);
		if (read_proxy_header(params, fd, ip, sizeof(ip), port,
				      sizeof(port)) < 0) {
			close(fd);
			return;
		}
	}
	snprintf(peer_text, sizeof(peer_text), "ip=%s port=%s", ip, port);
	log_info("event=connect %s%s listener_port=%u tls=%s", peer_text,
		 balancer, params->listener->port,
		 params->listener->tls ? "yes" : "no");

	client.conn = conn_new(fd);
	if (client.conn == NULL) {
		log_error("event=disconnect reason=out_of_memory");
		return;
	}
	conn_set_wait_sigmask(client.conn, &params->wait_sigmask);

	if (params->listener->tls &&
	    conn_start_tls(client.conn, params->tls_ctx,
			   handshake_timeout_ms(params), &error) < 0) {
		log_info("event=tls_failed phase=implicit reason=\"%s\"",
			 error);
		client.close_reason = "tls_failed";
		goto out;
	}

	origin.ip = ip;
	origin.port = (unsigned)strtoul(port, NULL, 10);
	upstream.tls_ctx = params->upstream_tls_ctx;
	be = imap_backend_new(&upstream, &origin);
	settings.stls_available = !params->listener->tls &&
		params->tls_ctx != NULL;
	if (be != NULL)
		client.session = pop3_session_new(&settings, be, &io,
						  params->listener->tls,
						  peer_text);
	if (client.session == NULL) {
		log_error("event=disconnect reason=out_of_memory");
		client.close_reason = "out_of_memory";
		goto out;
	}
	serve(&client);

out:
	if (client.session != NULL)
		pop3_session_free(client.session);
	backend_free(be);
	log_info("event=disconnect reason=%s bytes_in=%llu bytes_out=%llu "
		 "duration_ms=%llu",
		 client.close_reason != NULL ? client.close_reason : "closed",
		 (unsigned long long)conn_bytes_in(client.conn),
		 (unsigned long long)conn_bytes_out(client.conn),
		 (unsigned long long)(monotime_ms() - started));
	conn_free(client.conn);
}
