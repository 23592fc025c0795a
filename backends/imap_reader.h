/*
 * imap_reader.h - IMAP responses read in large pieces, for the responses
 * popgate parses itself: the login's listing and message bodies.
 *
 * libetpan's reader takes 8 KB per read, shifts its buffer down after
 * every line, and passes a message body through two more buffers before
 * its handler sees it.  This reader first takes what libetpan has already
 * buffered, then reads from the transport straight into its own buffer and
 * hands out lines and pieces of literals that point into it.  When the
 * caller is done, imap_reader_give_back() returns whatever was read past
 * the last response to libetpan's buffer, so libetpan's parser can take
 * the next command's response as if nothing had happened.
 *
 * Functions return libetpan codes (MAILIMAP_NO_ERROR, or the stream, parse
 * and memory errors that leave the session unusable), and block on the
 * upstream, each read bounded by the transport's deadlines.
 */
#ifndef POPGATE_IMAP_READER_H
#define POPGATE_IMAP_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libetpan/libetpan.h>

/*
 * Buffer sizes, each the longest line accepted and the most read at once.
 * Message bodies: a quarter of a megabyte keeps a long RETR to a few reads
 * (and wake-ups) per megabyte.  Responses of short lines (the listing):
 * a smaller buffer stays off the allocator's mmap() path, which every
 * login would otherwise pay for.
 */
#define IMAP_READER_SIZE (256 * 1024)
#define IMAP_READER_SMALL_SIZE (64 * 1024)

/* imap_reader_literal()'s answer when its callback asked it to stop. */
#define IMAP_READER_STOPPED (-1)

struct imap_reader {
	mailstream *stream;    /* borrowed */
	char *buf;             /* size octets */
	size_t size;
	size_t start, end;     /* the octets of buf not taken yet */
	char *line;            /* imap_reader_line()'s rebuilt line, or NULL */
	size_t line_len;       /* of line, whose room is size octets */
};

/* Set RD up to read from STREAM with a buffer of SIZE octets (one of the
 * sizes above).  MAILIMAP_ERROR_MEMORY or NO_ERROR; either way
 * imap_reader_free() is safe afterwards. */
int imap_reader_init(struct imap_reader *rd, mailstream *stream,
		     size_t size);

/* Free RD's buffers (not the stream).  Anything not given back is lost. */
void imap_reader_free(struct imap_reader *rd);

/* Put the octets not taken yet back in front of libetpan's buffer. */
int imap_reader_give_back(struct imap_reader *rd);

/* The next line without its line ending; it may end with a literal's
 * "{N}", which the caller then reads with imap_reader_literal().  Valid
 * until the next call on RD. */
int imap_reader_raw_line(struct imap_reader *rd, const char **line_r,
			 size_t *len_r);

/*
 * A piece of a literal.  Returns true to go on; false makes
 * imap_reader_literal() stop at once and return IMAP_READER_STOPPED, with
 * the rest of the literal unread (the session is then unusable).
 */
typedef bool imap_reader_fn(void *ctx, const char *data, size_t len);

/* Hand the LEN octets of a literal to FN in pieces (FN NULL: skip them). */
int imap_reader_literal(struct imap_reader *rd, uint64_t len,
			imap_reader_fn *fn, void *ctx);

/* A whole response line, every literal in it skipped and replaced by "".
 * Valid until the next call on RD. */
int imap_reader_line(struct imap_reader *rd, const char **line_r,
		     size_t *len_r);

/* --- tokens: each advances *P past what it took, only on success ------- */

/* WORD, case-insensitively (ASCII).  Inline: the parsers call it with
 * literal words several times per line, and the length then folds. */
static inline bool imap_eat_word(const char **p, const char *end,
				 const char *word)
{
	size_t n = __builtin_strlen(word);

	if ((size_t)(end - *p) < n)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)(*p)[i];
		unsigned char w = (unsigned char)word[i];

		/* Equal, or the same letter in the other case. */
		if (c != w && ((c | 0x20) != (w | 0x20) ||
			       (w | 0x20) < 'a' || (w | 0x20) > 'z'))
			return false;
	}
	*p += n;
	return true;
}

/* Whether the LEN octets at NAME are ITEM, case-insensitively. */
static inline bool imap_item_is(const char *name, size_t len,
				const char *item)
{
	return len == __builtin_strlen(item) &&
	       imap_eat_word(&name, name + len, item);
}

/* A number of at most 32 bits. */
bool imap_eat_number(const char **p, const char *end, uint32_t *value);

/* The length of the FETCH item name at P, "BODY[]<0>" included: up to a
 * space or ")" outside brackets.  P does not move. */
size_t imap_item_name(const char *p, const char *end);

/* One value: atom, number, NIL, quoted string or parenthesised list. */
bool imap_skip_value(const char **p, const char *end);

/* The N of a "{N}" or "{N+}" ending LINE, with *AT_R where it starts; -1
 * when the line does not end with one. */
int64_t imap_trailing_literal(const char *line, size_t len, size_t *at_r);

#endif
