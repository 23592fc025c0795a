/*
 * imap_mailbox.c - UTF-8 folder names to IMAP's modified UTF-7, by iconv.
 */
#include <iconv.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "imap_mailbox.h"

/* True when NAME is its own modified UTF-7 form. */
static bool plain_name(const char *name)
{
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '&')
			return false;
	}
	return true;
}

char *imap_mailbox_encode(const char *name, const char **error_r)
{
	size_t in_left = strlen(name);
	/* Worst case: a control character alone, one octet of UTF-8, is
	 * "&", three base64 octets of its UTF-16 unit and "-". */
	size_t out_size = 5 * in_left + 1, out_left = out_size;
	char *in = (char *)name, *out, *o;
	iconv_t cd;

	if (plain_name(name)) {
		if ((out = strdup(name)) == NULL)
			*error_r = "out of memory";
		return out;
	}
	cd = iconv_open("UTF-7-IMAP", "UTF-8");
	if (cd == (iconv_t)-1) {
		*error_r = "this C library's iconv has no UTF-7-IMAP";
		return NULL;
	}
	if ((out = o = malloc(out_size)) == NULL) {
		iconv_close(cd);
		*error_r = "out of memory";
		return NULL;
	}
	/* The second call ends an open base64 run with its "-". */
	if (iconv(cd, &in, &in_left, &o, &out_left) == (size_t)-1 ||
	    iconv(cd, NULL, NULL, &o, &out_left) == (size_t)-1 ||
	    out_left == 0) {
		*error_r = "not UTF-8";
		iconv_close(cd);
		free(out);
		return NULL;
	}
	*o = '\0';
	iconv_close(cd);
	return out;
}
