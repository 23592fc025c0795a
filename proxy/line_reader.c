/*
 * line_reader.c - CRLF/LF line splitting with a per-call length limit.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "line_reader.h"

struct line_reader {
	char *buf;
	size_t start;    /* first unconsumed octet */
	size_t len;      /* unconsumed octets from start */
	size_t cap;
	bool skipping;   /* inside an over-long line: drop up to its LF */
};

struct line_reader *line_reader_new(void)
{
	return calloc(1, sizeof(struct line_reader));
}

void line_reader_free(struct line_reader *lr)
{
	if (lr == NULL)
		return;
	free(lr->buf);
	free(lr);
}

int line_reader_feed(struct line_reader *lr, const char *data, size_t len)
{
	if (len == 0)
		return 0;
	if (lr->start > 0) {
		memmove(lr->buf, lr->buf + lr->start, lr->len);
		lr->start = 0;
	}
	if (len > SIZE_MAX / 2 - lr->len)
		return -1;
	if (lr->len + len > lr->cap) {
		size_t cap = lr->cap != 0 ? lr->cap : 1024;
		char *p;

		while (cap < lr->len + len)
			cap *= 2;
		p = realloc(lr->buf, cap);
		if (p == NULL)
			return -1;
		lr->buf = p;
		lr->cap = cap;
	}
	memcpy(lr->buf + lr->len, data, len);
	lr->len += len;
	return 0;
}

static void consume(struct line_reader *lr, size_t n)
{
	lr->start += n;
	lr->len -= n;
	if (lr->len == 0)
		lr->start = 0;
}

enum line_result line_reader_next(struct line_reader *lr, size_t limit,
				  char **line_r, size_t *len_r)
{
	char *p = lr->buf + lr->start;
	char *lf = lr->len > 0 ? memchr(p, '\n', lr->len) : NULL;
	size_t text;

	if (lf == NULL) {
		/* A partial line that cannot fit even if its CRLF came next
		 * will be too long: drop it now so memory stays bounded. */
		text = lr->len;
		if (text > 0 && p[text - 1] == '\r')
			text--;
		if (lr->skipping || text + 2 > limit) {
			lr->skipping = true;
			consume(lr, lr->len);
		}
		return LINE_NEED_MORE;
	}

	text = (size_t)(lf - p);
	consume(lr, text + 1);
	if (text > 0 && p[text - 1] == '\r')
		text--;
	if (lr->skipping || text + 2 > limit) {
		lr->skipping = false;
		return LINE_TOO_LONG;
	}
	/* The line ending is consumed, so its first octet can hold the NUL. */
	p[text] = '\0';
	*line_r = p;
	*len_r = text;
	return LINE_OK;
}

size_t line_reader_pending(const struct line_reader *lr)
{
	return lr->len;
}

void line_reader_discard(struct line_reader *lr)
{
	lr->start = 0;
	lr->len = 0;
	lr->skipping = false;
}
