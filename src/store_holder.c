/*
 * store_holder.c - the process that keeps the unique-id store open.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_holder.h"
#include "uidstore_sqlite.h"

/* Sessions' changes reach the store file within this.  A tick with
 * nothing to copy costs a few lock calls. */
#define CHECKPOINT_INTERVAL_S 1

/* One tick's checkpoint; a failure is logged when it starts and ends,
 * not every second. */
static void checkpoint(struct uidstore *st, bool *failing)
{
	const char *error;
	char ebuf[256];

	if (uidstore_sqlite_checkpoint(st, &error) == 0) {
		if (*failing)
			log_info("event=store_checkpoint_recovered");
		*failing = false;
		return;
	}
	if (!*failing)
		log_warn("event=store_checkpoint_failed error=%s",
			 log_value(ebuf, sizeof(ebuf), error));
	*failing = true;
}

void store_holder_run(const char *path, pid_t master)
{
	struct uidstore *st;
	const struct timespec tick = { .tv_sec = CHECKPOINT_INTERVAL_S };
	bool failing = false;
	const char *error;
	char ebuf[256];
	sigset_t term;

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
	/* The checkpoints are the holder's too: without them the sessions'
	 * commits would find one to do whenever the -wal reached 1000 pages,
	 * and the store file would lag behind it. */
	for (;;) {
		int sig = sigtimedwait(&term, NULL, &tick);

		if (sig == SIGTERM)
			break;
		if (sig < 0 && errno == EAGAIN)
			checkpoint(st, &failing);
	}
	/* The last connection closed moves the -wal into the store. */
	uidstore_close(st);
	_exit(0);
}
