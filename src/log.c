/*
 * log.c - one line per event on stderr.
 *
 * A line is formatted completely in memory and written with a single
 * write(2), so lines from the master and the session processes, which share
 * stderr, never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 2048

static enum log_level log_min_level = PG_LOG_INFO;
static char log_session_id[64];

static const char *const level_names[] = {
	[PG_LOG_ERROR] = "error",
	[PG_LOG_WARN] = "warn",
	[PG_LOG_INFO] = "info",
	[PG_LOG_DEBUG] = "debug",
};

void log_set_level(enum log_level min)
{
	log_min_level = min;
}

int log_level_parse(const char *name, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	     i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_set_session(const char *sid)
{
	if (sid == NULL)
		log_session_id[0] = '\0';
	else
		snprintf(log_session_id, sizeof(log_session_id), "%s", sid);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	struct timeval now;
	struct tm tm;
	size_t len;
	int n, saved_errno = errno;
	va_list ap;

	if (level > log_min_level)
		return;

	gettimeofday(&now, NULL);
	gmtime_r(&now.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ popgate[%ld]: level=%s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, (long)(now.tv_usec / 1000),
		     (long)getpid(), level_names[level]);
	len = n > 0 ? (size_t)n : 0;
	if (log_session_id[0] != '\0' && len < sizeof(line)) {
		n = snprintf(line + len, sizeof(line) - len, "sid=%s ",
			     log_session_id);
		len += n > 0 ? (size_t)n : 0;
	}
	if (len < sizeof(line)) {
		va_start(ap, fmt);
		n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
		va_end(ap);
		len += n > 0 ? (size_t)n : 0;
	}
	/* A truncated line still ends with exactly one newline. */
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';

	/* A log line that cannot be written has nowhere else to go. */
	for (size_t off = 0; off < len;) {
		ssize_t w = write(STDERR_FILENO, line + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	errno = saved_errno;
}

static bool is_plain_value_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

const char *log_value(char *buf, size_t size, const char *s)
{
	bool need_quotes = (s[0] == '\0');
	size_t len = 0;
	static const char hex[] = "0123456789abcdef";

	if (size == 0)
		return buf;
	for (const char *p = s; *p != '\0'; p++) {
		if (!is_plain_value_char((unsigned char)*p)) {
			need_quotes = true;
			break;
		}
	}
	if (!need_quotes) {
		snprintf(buf, size, "%s", s);
		return buf;
	}

	/* Leave room for the closing quote and the NUL. */
	if (size < 3) {
		buf[0] = '\0';
		return buf;
	}
	buf[len++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0';
	     p++) {
		char esc[4];
		size_t n;

		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			n = 2;
		} else if (*p < 0x20 || *p >= 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[*p >> 4];
			esc[3] = hex[*p & 0xf];
			n = 4;
		} else {
			esc[0] = (char)*p;
			n = 1;
		}
		/* Never split an escape: drop the rest instead. */
		if (len + n + 2 > size)
			break;
		memcpy(buf + len, esc, n);
		len += n;
	}
	buf[len++] = '"';
	buf[len] = '\0';
	return buf;
}
