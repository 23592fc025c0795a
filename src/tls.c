/*
 * tls.c - the server-side TLS context for client listeners.
 */
#include <stdarg.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

static SSL_CTX *tls_fail(SSL_CTX *ctx, char *errbuf, size_t errlen,
			 const char *what, const char *file)
{
	char reason[256] = "unknown error";
	unsigned long code = ERR_peek_last_error();

	if (code != 0)
		ERR_error_string_n(code, reason, sizeof(reason));
	ERR_clear_error();
	if (file != NULL)
		snprintf(errbuf, errlen, "%s %s: %s", what, file, reason);
	else
		snprintf(errbuf, errlen, "%s: %s", what, reason);
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_server_ctx_new(const struct tls_config *tls, char *errbuf,
			    size_t errlen)
{
	bool legacy = tls->profile == TLS_PROFILE_LEGACY;
	char cipher_list[1024];
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return tls_fail(NULL, errbuf, errlen, "creating TLS context",
				NULL);

	/* Old Outlook versions speak only TLS 1.0 with SHA-1 signatures,
	 * which OpenSSL 3 refuses at its default security level. */
	if (!SSL_CTX_set_min_proto_version(ctx, legacy ? TLS1_VERSION :
					   TLS1_2_VERSION))
		return tls_fail(ctx, errbuf, errlen, "tls.profile", NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
			    SSL_OP_NO_RENEGOTIATION |
			    SSL_OP_CIPHER_SERVER_PREFERENCE);

	snprintf(cipher_list, sizeof(cipher_list), "%s%s",
		 tls->ciphers != NULL ? tls->ciphers : "DEFAULT",
		 legacy ? ":@SECLEVEL=0" : "");
	if ((tls->ciphers != NULL || legacy) &&
	    !SSL_CTX_set_cipher_list(ctx, cipher_list))
		return tls_fail(ctx, errbuf, errlen, "tls.ciphers", NULL);
	if (tls->ciphersuites != NULL &&
	    !SSL_CTX_set_ciphersuites(ctx, tls->ciphersuites))
		return tls_fail(ctx, errbuf, errlen, "tls.ciphersuites", NULL);

	if (SSL_CTX_use_certificate_chain_file(ctx, tls->certificate) != 1)
		return tls_fail(ctx, errbuf, errlen, "tls.certificate",
				tls->certificate);
	if (SSL_CTX_use_PrivateKey_file(ctx, tls->key, SSL_FILETYPE_PEM) != 1)
		return tls_fail(ctx, errbuf, errlen, "tls.key", tls->key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tls_fail(ctx, errbuf, errlen,
				"tls.key does not match tls.certificate",
				NULL);
	return ctx;
}

void tls_server_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}
