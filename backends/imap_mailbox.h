/*
 * imap_mailbox.h - folder names as IMAP sends them.
 *
 * popgate.conf names folders in UTF-8.  IMAP4rev1 (RFC 3501, 5.1.3) sends
 * a mailbox name in modified UTF-7: printable US-ASCII stands for itself,
 * "&" is written "&-", and everything else is base64 of UTF-16 between
 * "&" and "-".  The conversion is the C library's iconv ("UTF-7-IMAP",
 * in glibc since 2.36 and GNU libiconv since 1.17); names that need none
 * do not depend on it.
 */
#ifndef POPGATE_IMAP_MAILBOX_H
#define POPGATE_IMAP_MAILBOX_H

/*
 * The modified UTF-7 form of the UTF-8 name NAME, allocated; the caller
 * frees it.  NULL with *ERROR_R set (a static string) when NAME is not
 * UTF-8, when the C library cannot convert to modified UTF-7, or when out
 * of memory.
 */
char *imap_mailbox_encode(const char *name, const char **error_r);

#endif
