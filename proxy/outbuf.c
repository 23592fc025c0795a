/*
 * outbuf.c - a growable byte buffer with one flush operation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "outbuf.h"

struct outbuf {
	char *data;
	size_t len;
	size_t cap;
};

struct outbuf *outbuf_new(void)
{
	return calloc(1, sizeof(struct outbuf));
}

void outbuf_free(struct outbuf *ob)
{
	if (ob == NULL)
		return;
	free(ob->data);
	free(ob);
}

char *outbuf_reserve(struct outbuf *ob, size_t len)
{
	if (len > SIZE_MAX / 2 - ob->len)
		return NULL;
	if (ob->len + len > ob->cap) {
		size_t cap = ob->cap != 0 ? ob->cap : 1024;
		char *p;

		while (cap < ob->len + len)
			cap *= 2;
		p = realloc(ob->data, cap);
		if (p == NULL)
			return NULL;
		ob->data = p;
		ob->cap = cap;
	}
	return ob->data + ob->len;
}

void outbuf_commit(struct outbuf *ob, size_t len)
{
	ob->len += len;
}

int outbuf_append(struct outbuf *ob, const void *data, size_t len)
{
	char *p;

	if (len == 0)
		return 0;
	p = outbuf_reserve(ob, len);
	if (p == NULL)
		return -1;
	memcpy(p, data, len);
	ob->len += len;
	return 0;
}

size_t outbuf_length(const struct outbuf *ob)
{
	return ob->len;
}

void outbuf_clear(struct outbuf *ob)
{
	ob->len = 0;
}

int outbuf_flush(struct outbuf *ob, outbuf_write_fn *write, void *ctx)
{
	int ret = 0;

	if (ob->len > 0)
		ret = write(ctx, ob->data, ob->len);
	ob->len = 0;
	return ret < 0 ? -1 : 0;
}
