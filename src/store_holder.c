/*
 * store_holder.c - the process that keeps the unique-id store open.
 */
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "store_holder.h"
#include "uidstore_sqlite.h"

void store_holder_run(const char *path, pid_t master)
{
	struct uidstore *st;
	const char *error;
	char ebuf[256];
	sigset_t term;
	int sig;

	/* ^C on a terminal reaches every process of the group; the master
	 * stops the holder itself, after the last session. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_SETMASK, &term, NULL);
	(void)prctl(PR_SET_NAME, "popgate-store");
	/* A master killed outright must not leave the holder behind; if it
	 * died before this, the holder has nothing to do. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != master)
		_exit(0);

	/* Opening reads the schema version, which maps the -shm file: from
	 * now on the index there stays valid for the sessions. */
	st = uidstore_sqlite_open(path, &error);
	if (st == NULL) {
		log_warn("event=store_holder_failed error=%s",
			 log_value(ebuf, sizeof(ebuf), error));
		_exit(1);
	}
	log_info("event=store_holder_started pid=%ld", (long)getpid());
	while (sigwait(&term, &sig) != 0)
		;
	/* The last connection closed moves the -wal into the store. */
	uidstore_close(st);
	_exit(0);
}
