/*
 * bench_session.c - helpers shared by the POP3 and IMAP clients.
 */
#include <string.h>
#include <time.h>

#include "bench_session.h"

double bench_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void session_fail(struct session_result *res, const char *error,
		  const char *line, size_t len)
{
	size_t i, o = 0;

	res->ok = false;
	if (res->error != NULL)
		return;
	res->error = error;
	/* Keep the server's words, minus the line ending and anything that
	 * is not printable. */
	for (i = 0; line != NULL && i < len && o + 1 < sizeof(res->detail);
	     i++) {
		char c = line[i];

		if (c == '\r' || c == '\n')
			break;
		res->detail[o++] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	res->detail[o] = '\0';
}
