/*
 * uidstore_sqlite.h - the unique-id store in one SQLite file.
 *
 * WAL mode, so logins read while another process writes; a busy timeout, so
 * a writer waits for another one instead of failing; synchronous=FULL,
 * because writes only happen when there is new information (new mail, a
 * rebuilt folder) and a committed high-water mark must survive a power
 * failure, not only a crash of the process: a lost one could let a later
 * UIDVALIDITY change issue ids that a client has already seen.
 */
#ifndef POPGATE_UIDSTORE_SQLITE_H
#define POPGATE_UIDSTORE_SQLITE_H

#include "uidstore.h"

/* How long a writer waits for another process's write transaction. */
#define UIDSTORE_SQLITE_BUSY_MS 10000

/*
 * Set up SQLite's process-wide state (built-in functions, memory and
 * mutex subsystems).  The first open does it anyway; a daemon calls this
 * before it forks so that no session process does it again.  0, or -1.
 */
int uidstore_sqlite_init(void);

/*
 * Open (creating if needed) the store at PATH.  Returns the store (free
 * with uidstore_close()) or NULL with *error_r set to a static string.
 */
struct uidstore *uidstore_sqlite_open(const char *path, const char **error_r);

/*
 * Copy the changes the -wal holds into the store file, as far as no reader
 * still needs them, without waiting for anyone (SQLite's PASSIVE
 * checkpoint).  For the process that holds the store open, so that the
 * sessions' commits do not find checkpoints to do.  0 (also when another
 * checkpoint is running), or -1 with *error_r set.
 */
int uidstore_sqlite_checkpoint(struct uidstore *st, const char **error_r);

#endif
