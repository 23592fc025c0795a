/*
 * store_holder.h - a process that keeps the unique-id store open.
 *
 * Session processes open the SQLite store one after another, usually each
 * alone.  SQLite's first connection to a WAL database truncates the -shm
 * file and builds the index in it again, and its last one checkpoints and
 * truncates the -wal and the database file: file-system work on every
 * login that no login needs.  One process of the daemon's holding a
 * connection all along makes every session's connection a later one.
 *
 * It also moves the sessions' changes from the -wal into the store file
 * once a second, which their commits would otherwise do now and then.
 * Sessions work without it, paying those prices.
 */
#ifndef POPGATE_STORE_HOLDER_H
#define POPGATE_STORE_HOLDER_H

#include <sys/types.h>

/*
 * The body of the holder process, forked by MASTER with every signal
 * blocked: open the store at PATH, checkpoint it every second until
 * SIGTERM (which the master's death also sends), close it and exit.
 * Exits 1 when the store cannot be opened (logged).  Never returns.
 */
void store_holder_run(const char *path, pid_t master)
	__attribute__((noreturn));

#endif
