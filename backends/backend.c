/*
 * backend.c - helpers shared by every backend implementation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

void format_one_line(char *buf, size_t size, const char *fmt, va_list ap)
{
	vsnprintf(buf, size, fmt, ap);
	for (char *p = buf; *p != '\0'; p++) {
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	}
}

int backend_fail(struct backend_error *err, enum backend_status status,
		 const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	/* The text reaches a POP3 response line: keep it to one line. */
	va_start(ap, fmt);
	format_one_line(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return -1;
}

void mail_snapshot_clear(struct mail_snapshot *snap)
{
	free(snap->msgs);
	memset(snap, 0, sizeof(*snap));
}
