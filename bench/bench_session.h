/*
 * bench_session.h - what one benchmark session is asked to do and what it
 * reports back; shared by the POP3 and the IMAP client.
 */
#ifndef POPBENCH_SESSION_H
#define POPBENCH_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "bench_net.h"

enum bench_workload {
	WORKLOAD_SYNC,		/* list everything, fetch every message */
	WORKLOAD_UIDL_ONLY,	/* nothing new: STAT and UIDL only */
	WORKLOAD_LOGIN_ONLY,	/* log in, STAT (the snapshot), log out */
	WORKLOAD_TOP0,		/* headers of every message */
};

enum bench_tls {
	BENCH_TLS_NONE,
	BENCH_TLS_IMPLICIT,
	BENCH_TLS_STARTTLS,	/* STLS for POP3, STARTTLS for IMAP */
};

struct bench_target {
	const char *host;
	const char *port;
	const char *password;
	const char *folder;		/* IMAP: the mailbox to SELECT */
	enum bench_workload workload;
	unsigned long max_messages;	/* fetch at most this many; 0 = all */
	int timeout_ms;			/* per read or write */
	enum bench_tls tls;
	SSL_CTX *tls_ctx;
	/* Sessions still running this long after the end of the run are
	 * abandoned (CLOCK_MONOTONIC, ms). */
	double hard_deadline_ms;
};

struct session_result {
	bool ok;
	bool aborted;		/* stopped by the run's hard deadline */
	double total_ms;	/* connect to the reply to QUIT / LOGOUT */
	double login_ms;	/* POP3: PASS to +OK; IMAP: connect to sizes */
	/* POP3: PASS to the reply to the first STAT, when the mailbox is
	 * usable even for a server that answers PASS before opening it;
	 * IMAP: as login_ms */
	double ready_ms;
	uint64_t bytes;		/* message octets received, un-dot-stuffed */
	unsigned long messages;
	unsigned long mismatches;
	const char *error;	/* static string, set when !ok */
	char detail[96];	/* what the server said, when it said no */
};

struct bench_protocol {
	const char *name;
	/* Run one whole session as USER; fills RES. */
	void (*run_session)(const struct bench_target *target,
			    const char *user, struct session_result *res);
	/* Open an authenticated session and leave it idle; NULL on failure
	 * (RES says why).  Close it with close_idle(). */
	struct bnet *(*open_idle)(const struct bench_target *target,
				  const char *user,
				  struct session_result *res);
	void (*close_idle)(struct bnet *conn);
};

extern const struct bench_protocol bench_pop3;
extern const struct bench_protocol bench_imap;

/* CLOCK_MONOTONIC in milliseconds. */
double bench_now_ms(void);

/* Mark RES failed with ERROR (static) and an optional server reply LINE. */
void session_fail(struct session_result *res, const char *error,
		  const char *line, size_t len);

#endif
