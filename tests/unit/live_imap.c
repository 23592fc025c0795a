/*
 * live_imap.c - the real IMAP server some unit tests run against.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "imap_transport.h"
#include "live_imap.h"

bool live_imap_from_env(char *host, unsigned *port, char *user, char *pass)
{
	const char *v = getenv("POPGATE_TEST_IMAP");

	return v != NULL && sscanf(v, "%127[^:]:%u:%63[^:]:%63s", host, port,
				   user, pass) == 4;
}

mailimap *live_imap_connect(const char *host, unsigned port,
			    const char *user, const char *pass)
{
	struct transport_settings ts = {
		.host = host, .port = port, .verify = true,
		.connect_timeout_ms = 5000, .io_timeout_ms = 10000,
	};
	struct transport_error te;
	struct imap_transport *tr = imap_transport_connect(&ts, &te);
	mailimap *imap;

	assert_non_null(tr);
	imap = mailimap_new(0, NULL);
	assert_non_null(imap);
	assert_int_equal(mailimap_connect(imap,
		mailstream_new(imap_transport_low_new(tr), 8192)),
		MAILIMAP_NO_ERROR_NON_AUTHENTICATED);
	assert_int_equal(mailimap_login(imap, user, pass), MAILIMAP_NO_ERROR);
	return imap;
}
