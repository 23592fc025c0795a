/*
 * child_table.c - the master's list of its session processes.
 */
#include <stdlib.h>

#include "child_table.h"

#define CHILD_TABLE_FIRST 64

int child_table_reserve(struct child_table *t)
{
	size_t cap;
	struct child *grown;

	if (t->count < t->capacity)
		return 0;
	cap = t->capacity != 0 ? 2 * t->capacity : CHILD_TABLE_FIRST;
	grown = reallocarray(t->children, cap, sizeof(*grown));
	if (grown == NULL)
		return -1;
	t->children = grown;
	t->capacity = cap;
	return 0;
}

void child_table_add(struct child_table *t, pid_t pid, size_t listener)
{
	t->children[t->count++] = (struct child){
		.pid = pid, .listener = listener,
	};
}

struct child *child_table_find(struct child_table *t, pid_t pid)
{
	for (size_t i = 0; i < t->count; i++) {
		if (t->children[i].pid == pid)
			return &t->children[i];
	}
	return NULL;
}

void child_table_remove(struct child_table *t, struct child *c)
{
	*c = t->children[--t->count];
}

void child_table_free(struct child_table *t)
{
	free(t->children);
	*t = (struct child_table)CHILD_TABLE_INIT;
}
