/*
 * live_imap.h - the real IMAP server some unit tests run against.
 *
 * POPGATE_TEST_IMAP=host:port:user:pass names a plain IMAP listener; the
 * tests that need one skip when it is absent.
 */
#ifndef POPGATE_LIVE_IMAP_H
#define POPGATE_LIVE_IMAP_H

#include <stdbool.h>

#include <libetpan/libetpan.h>

/* Parse POPGATE_TEST_IMAP into the buffers (HOST of 128 octets, USER and
 * PASS of 64).  Returns false when it is unset or malformed. */
bool live_imap_from_env(char *host, unsigned *port, char *user, char *pass);

/* A logged-in session over the project's transport, for preparing and
 * checking folders; fails the running cmocka test on any error.  The
 * caller logs out and frees it. */
mailimap *live_imap_connect(const char *host, unsigned port,
			    const char *user, const char *pass);

#endif
