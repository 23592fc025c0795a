/*
 * tls_cert.h - a throw-away self-signed certificate for the unit tests'
 * TLS peers: CN=localhost, valid for an hour, P-256 key.
 */
#ifndef POPGATE_TLS_CERT_H
#define POPGATE_TLS_CERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Make a key and a certificate for it.  0, or -1 (both NULL then); the
 * caller frees them with EVP_PKEY_free() and X509_free(). */
int tls_cert_new(EVP_PKEY **pkey_r, X509 **x509_r);

#endif
