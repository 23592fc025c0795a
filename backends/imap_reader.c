/*
 * imap_reader.c - IMAP responses read in large pieces from libetpan's
 * stream, and the few tokens popgate's own parsers need.
 */
#include <stdlib.h>
#include <string.h>

#include "imap_reader.h"
#include "imap_transport.h"

int imap_reader_init(struct imap_reader *rd, mailstream *stream,
		     size_t size)
{
	*rd = (struct imap_reader) { .stream = stream, .size = size };
	rd->buf = malloc(size);
	return rd->buf != NULL ? MAILIMAP_NO_ERROR : MAILIMAP_ERROR_MEMORY;
}

void imap_reader_free(struct imap_reader *rd)
{
	free(rd->buf);
	free(rd->line);
	rd->buf = NULL;
	rd->line = NULL;
}

/*
 * Make more octets available after rd->end, moving the part not taken yet
 * to the front first (once per read, not once per line).  libetpan's
 * buffer is emptied before the transport is read, so the order of the
 * octets is kept; the transport is then read straight into our buffer,
 * as much as fits.  COMING octets are certain to arrive (the rest of a
 * literal): the transport may wait for that many, up to the space left.
 */
static int reader_fill(struct imap_reader *rd, uint64_t coming)
{
	mailstream *s = rd->stream;
	size_t space;
	ssize_t n;

	if (rd->start > 0) {
		memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	space = rd->size - rd->end;
	if (space == 0)
		return MAILIMAP_ERROR_PARSE; /* a line longer than we accept */
	if (s->read_buffer_len > 0)
		n = mailstream_read(s, rd->buf + rd->end,
				    space < s->read_buffer_len ?
				    space : s->read_buffer_len);
	else {
		imap_transport_expect(s->low, coming < space ?
					      (size_t)coming : space);
		n = mailstream_low_read(s->low, rd->buf + rd->end, space);
	}
	if (n <= 0)
		return MAILIMAP_ERROR_STREAM;
	rd->end += (size_t)n;
	return MAILIMAP_NO_ERROR;
}

int imap_reader_give_back(struct imap_reader *rd)
{
	mailstream *s = rd->stream;
	size_t left = rd->end - rd->start;

	if (left == 0)
		return MAILIMAP_NO_ERROR;
	/* Only unsolicited data can follow a tagged response, and little. */
	if (left + s->read_buffer_len > s->buffer_max_size)
		return MAILIMAP_ERROR_PROTOCOL;
	memmove(s->read_buffer + left, s->read_buffer, s->read_buffer_len);
	memcpy(s->read_buffer, rd->buf + rd->start, left);
	s->read_buffer_len += left;
	rd->start = rd->end;
	return MAILIMAP_NO_ERROR;
}

int imap_reader_raw_line(struct imap_reader *rd, const char **line_r,
			 size_t *len_r)
{
	size_t scanned = 0;

	for (;;) {
		char *line = rd->buf + rd->start, *nl;
		size_t len;
		int r;

		nl = memchr(line + scanned, '\n', rd->end - rd->start - scanned);
		if (nl == NULL) {
			scanned = rd->end - rd->start;
			r = reader_fill(rd, 0);
			if (r != MAILIMAP_NO_ERROR)
				return r;
			continue;
		}
		len = (size_t)(nl - line);
		rd->start += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		*line_r = line;
		*len_r = len;
		return MAILIMAP_NO_ERROR;
	}
}

int imap_reader_literal(struct imap_reader *rd, uint64_t len,
			imap_reader_fn *fn, void *ctx)
{
	int r = MAILIMAP_NO_ERROR;

	while (len > 0) {
		size_t have = rd->end - rd->start;

		if (have == 0) {
			r = reader_fill(rd, len);
			if (r != MAILIMAP_NO_ERROR)
				break;
			continue;
		}
		if (have > len)
			have = (size_t)len;
		if (fn != NULL && !fn(ctx, rd->buf + rd->start, have)) {
			r = IMAP_READER_STOPPED;
			break;
		}
		rd->start += have;
		len -= have;
	}
	/* What follows may be a short line read by libetpan: it must not
	 * wait for the literal's low-water mark. */
	imap_transport_expect(rd->stream->low, 0);
	return r;
}

/* Append LEN octets to the rebuilt line; false past the buffer size. */
static bool line_append(struct imap_reader *rd, const char *data, size_t len)
{
	if (rd->line_len + len > rd->size)
		return false;
	if (rd->line == NULL) {
		rd->line = malloc(rd->size);
		if (rd->line == NULL)
			return false;
	}
	memcpy(rd->line + rd->line_len, data, len);
	rd->line_len += len;
	return true;
}

int imap_reader_line(struct imap_reader *rd, const char **line_r,
		     size_t *len_r)
{
	bool rebuilt = false;

	rd->line_len = 0;
	for (;;) {
		const char *line;
		size_t len, at = 0;
		int64_t literal;
		int r;

		r = imap_reader_raw_line(rd, &line, &len);
		if (r != MAILIMAP_NO_ERROR)
			return r;
		literal = imap_trailing_literal(line, len, &at);
		if (literal < 0 && !rebuilt) {
			*line_r = line;
			*len_r = len;
			return MAILIMAP_NO_ERROR;
		}
		if (!line_append(rd, line, literal < 0 ? len : at))
			return MAILIMAP_ERROR_PARSE;
		if (literal < 0) {
			*line_r = rd->line;
			*len_r = rd->line_len;
			return MAILIMAP_NO_ERROR;
		}
		if (!line_append(rd, "\"\"", 2))
			return MAILIMAP_ERROR_PARSE;
		rebuilt = true;
		r = imap_reader_literal(rd, (uint64_t)literal, NULL, NULL);
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
}

bool imap_eat_number(const char **p, const char *end, uint32_t *value)
{
	const char *q = *p;
	uint64_t n = 0;

	while (q < end && *q >= '0' && *q <= '9') {
		n = n * 10 + (uint64_t)(*q - '0');
		if (n > UINT32_MAX)
			return false;
		q++;
	}
	if (q == *p)
		return false;
	*value = (uint32_t)n;
	*p = q;
	return true;
}

size_t imap_item_name(const char *p, const char *end)
{
	const char *q = p;
	int brackets = 0;

	while (q < end && (brackets > 0 || (*q != ' ' && *q != ')'))) {
		if (*q == '[')
			brackets++;
		else if (*q == ']' && brackets > 0)
			brackets--;
		q++;
	}
	return (size_t)(q - p);
}

bool imap_skip_value(const char **p, const char *end)
{
	const char *q = *p;
	int depth = 0;

	do {
		if (q >= end)
			return false;
		if (*q == '"') {
			for (q++; q < end && *q != '"'; q++) {
				if (*q == '\\' && ++q >= end)
					return false;
			}
			if (q >= end)
				return false;
			q++;
		} else if (*q == '(') {
			depth++;
			q++;
		} else if (*q == ')') {
			if (depth == 0)
				return false;
			depth--;
			q++;
		} else if (*q == ' ') {
			if (depth == 0)
				return false;
			q++;
		} else {
			while (q < end && *q != ' ' && *q != '(' &&
			       *q != ')' && *q != '"')
				q++;
		}
	} while (depth > 0);
	*p = q;
	return true;
}

int64_t imap_trailing_literal(const char *line, size_t len, size_t *at_r)
{
	size_t i, digits_end;
	uint64_t n = 0;

	if (len < 3 || line[len - 1] != '}')
		return -1;
	i = len - 1;
	if (line[i - 1] == '+')
		i--;
	digits_end = i;
	while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
		i--;
	if (i == digits_end || i == 0 || line[i - 1] != '{' ||
	    digits_end - i > 10)
		return -1;
	for (size_t k = i; k < digits_end; k++)
		n = n * 10 + (uint64_t)(line[k] - '0');
	*at_r = i - 1;
	return (int64_t)n;
}
