/*
 * daemon.h - the master process: listeners, privileges, one child per
 * session, and an orderly stop.
 *
 * daemon_run() binds every listener, creates the TLS context while still
 * privileged, drops to cfg->user, then accepts and forks one session
 * process per client (a crash in one session cannot touch another).
 * SIGTERM/SIGINT: stop accepting, let sessions finish for drain_time, then
 * ask the rest to close between commands, and return.  SIGHUP: load the
 * TLS certificate and key again for new sessions (kept if they fail).
 */
#ifndef POPGATE_DAEMON_H
#define POPGATE_DAEMON_H

#include "config.h"

/* Exit codes shared with main.c. */
enum popgate_exit {
	POPGATE_EXIT_OK = 0,
	POPGATE_EXIT_CONFIG = 1,
	POPGATE_EXIT_USAGE = 2,
	POPGATE_EXIT_STARTUP = 3,
};

/* Runs until stopped by a signal; blocks.  Returns POPGATE_EXIT_OK, or
 * POPGATE_EXIT_STARTUP when binding, TLS or privileges failed (logged). */
int daemon_run(const struct pg_config *cfg);

#endif
