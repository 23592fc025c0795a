/*
 * pop3_session.h - the POP3 protocol engine: a state machine over bytes.
 *
 * The engine never touches a socket or a clock.  The driver (src/client.c)
 * feeds it the octets the client sent; it answers through the output
 * callback and calls the backend synchronously.  Output is buffered and
 * handed to io->write in large pieces: at the end of each pop3_session_input()
 * call, and whenever the buffer fills during a long response.
 *
 * Time is the driver's business: it asks which idle timeout applies now
 * (pop3_session_idle_timeout_ms), calls pop3_session_timeout() when it runs
 * out, and honours the penalty delay after a failed login.
 */
#ifndef POPGATE_POP3_SESSION_H
#define POPGATE_POP3_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum pop3_login_type {
	POP3_LOGIN_SECURE,    /* plaintext credentials only over TLS (default) */
	POP3_LOGIN_PLAINTEXT, /* USER/PASS and AUTH PLAIN on any connection */
};

/* Behaviour profile settings; see popgate.conf(5) for each. */
struct pop3_settings {
	enum pop3_login_type login_type;
	size_t max_command_size;     /* incl. CRLF; 40..1024, default 512 */
	size_t max_sasl_size;        /* SASL continuation line; default 16K */
	unsigned max_bad_commands;   /* default 10 */
	unsigned max_failed_logins;  /* default 3 */
	uint64_t failed_login_delay_ms;       /* default 1000 */
	uint64_t timeout_unauthenticated_ms;  /* default 60 s */
	uint64_t timeout_authenticated_ms;    /* default 1800 s */
	uint64_t timeout_send_ms;             /* default 60 s (driver only) */
	bool mark_read_on_retr;               /* default true */
	bool stls_available;  /* a TLS context exists for STLS on this port */
};

/* Fill SET with the defaults above. */
void pop3_settings_init(struct pop3_settings *set);

enum pop3_state {
	POP3_STATE_AUTHORIZATION,
	POP3_STATE_TRANSACTION,
	POP3_STATE_UPDATE,
	POP3_STATE_CLOSED,   /* nothing more will be read; flush and close */
};

struct pop3_io {
	/* Write all LEN octets to the client; 0 or -1 (client gone, send
	 * timeout).  After a failure the engine closes without UPDATE. */
	int (*write)(void *ctx, const void *data, size_t len);
	void *ctx;
};

struct pop3_session;

/*
 * Create a session.  SET, BE and IO are borrowed: they must outlive the
 * session, and the caller frees the backend after pop3_session_free().
 * SECURE says whether the connection is already TLS (implicit TLS port).
 * PEER is a printable client description for logs ("ip=1.2.3.4 port=5").
 */
struct pop3_session *pop3_session_new(const struct pop3_settings *set,
				      struct backend *be,
				      const struct pop3_io *io, bool secure,
				      const char *peer);
void pop3_session_free(struct pop3_session *s);

/* Queue the greeting and flush it. */
void pop3_session_start(struct pop3_session *s);

/*
 * Consume LEN octets from the client (LEN may be 0 to resume processing of
 * buffered input after a penalty delay).  Processes every complete command
 * line in order, unless the session closes, starts TLS or begins a failed-
 * login penalty; unprocessed octets stay buffered inside the session.
 * Returns 0, or -1 if the session is now closed.
 */
int pop3_session_input(struct pop3_session *s, const char *data, size_t len);

enum pop3_state pop3_session_state(const struct pop3_session *s);

/* The idle timeout that applies while waiting for the next command. */
uint64_t pop3_session_idle_timeout_ms(const struct pop3_session *s);

/* The driver's idle timer expired: send the closing response and close
 * without entering UPDATE. */
void pop3_session_timeout(struct pop3_session *s);

/* The daemon is stopping: send -ERR [SYS/TEMP] and close without UPDATE.
 * Only call while waiting for a command. */
void pop3_session_shutdown(struct pop3_session *s);

/* Milliseconds the driver must wait before calling pop3_session_input()
 * again (a failed login); 0 when none.  Reading it clears it. */
uint64_t pop3_session_take_penalty_ms(struct pop3_session *s);

/* STLS was accepted and "+OK" flushed: the driver must now run the TLS
 * handshake and then call pop3_session_tls_started().  Any input received
 * before the handshake has already been discarded by the engine. */
bool pop3_session_wants_tls(const struct pop3_session *s);
void pop3_session_tls_started(struct pop3_session *s);

/* The driver wants the upstream kept alive while the client idles. */
int pop3_session_keepalive(struct pop3_session *s);

#endif
