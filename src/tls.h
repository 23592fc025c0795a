/*
 * tls.h - the server-side TLS context for client listeners.
 *
 * One context is created in the master before privileges are dropped (the
 * key is usually readable by root only) and inherited by every session
 * process.  Nothing here blocks on the network.
 */
#ifndef POPGATE_TLS_H
#define POPGATE_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

/*
 * Load the certificate chain and key of TLS, check that they match, and
 * apply the protocol profile and cipher settings.  Returns a context owned
 * by the caller (tls_server_ctx_free), or NULL with the reason in ERRBUF.
 */
SSL_CTX *tls_server_ctx_new(const struct tls_config *tls, char *errbuf,
			    size_t errlen);

void tls_server_ctx_free(SSL_CTX *ctx);

#endif
