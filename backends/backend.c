/*
 * backend.c - helpers shared by every backend implementation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int backend_fail(struct backend_error *err, enum backend_status status,
		 const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	va_start(ap, fmt);
	vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	/* The text reaches a POP3 response line: keep it to one line. */
	for (char *p = err->text; *p != '\0'; p++) {
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	}
	return -1;
}

void mail_snapshot_clear(struct mail_snapshot *snap)
{
	free(snap->msgs);
	memset(snap, 0, sizeof(*snap));
}
