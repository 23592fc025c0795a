/*
 * log.h - one line per event on stderr.
 *
 * Every line carries the time, the level and, inside a session process, the
 * session id, followed by the caller's "key=value ..." text.  Values that come
 * from a client (user names, commands) must go through log_value() so that a
 * hostile value cannot forge a second log line or a fake key.  Never pass a
 * password, token or SASL response to these functions.
 */
#ifndef POPGATE_LOG_H
#define POPGATE_LOG_H

#include <stddef.h>

enum log_level {
	PG_LOG_ERROR,
	PG_LOG_WARN,
	PG_LOG_INFO,
	PG_LOG_DEBUG,
};

/* Set the minimum level printed (default PG_LOG_INFO). */
void log_set_level(enum log_level min);

/* Parse "error", "warn", "info" or "debug"; returns 0, or -1 if unknown. */
int log_level_parse(const char *name, enum log_level *level_r);

/* Tag every following line of this process with sid=ID (NULL: no tag).
 * The string is copied. */
void log_set_session(const char *sid);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(PG_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(PG_LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(PG_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(PG_LOG_DEBUG, __VA_ARGS__)

/*
 * Render an untrusted string as one log value: printable ASCII without
 * spaces, quotes, backslashes or '=' is copied as is, anything else is
 * written as a double-quoted string with \" \\ and \xHH escapes.  The result
 * is truncated to fit BUF (always NUL-terminated) and returned.
 */
const char *log_value(char *buf, size_t size, const char *s);

#endif
