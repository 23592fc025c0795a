/*
 * child_table.h - the master's list of its session processes.
 *
 * An unordered array: the master adds a process when it forks one, finds
 * it by pid when it is reaped or reports being idle, and removes it then.
 * The array grows by doubling and never shrinks, so that a master running
 * for months does not reallocate it on every connection: that scattered
 * free chunks over the master's heap, and every session process, which
 * starts with a copy of that heap, allocated into them and so copied
 * those pages (more page faults, and about half again as much memory per
 * idle session, after some thousands of sessions).
 */
#ifndef POPGATE_CHILD_TABLE_H
#define POPGATE_CHILD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct child {
	pid_t pid;
	size_t listener;  /* index of the listener it serves */
	bool idle;        /* waiting there for its next client */
};

struct child_table {
	struct child *children;
	size_t count;
	size_t capacity;
};

/* An empty table; nothing to free until the first add. */
#define CHILD_TABLE_INIT { NULL, 0, 0 }

/* Room for one more child, made before the fork so that adding the new
 * process cannot fail.  Returns 0, or -1 when out of memory. */
int child_table_reserve(struct child_table *t);

/* Add a (not idle) child, after child_table_reserve(). */
void child_table_add(struct child_table *t, pid_t pid, size_t listener);

/* The child with PID, or NULL.  Valid until the next reserve or remove. */
struct child *child_table_find(struct child_table *t, pid_t pid);

/* Remove C (from child_table_find); the last child takes its place. */
void child_table_remove(struct child_table *t, struct child *c);

void child_table_free(struct child_table *t);

#endif
