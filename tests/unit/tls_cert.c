/*
 * tls_cert.c - a throw-away self-signed certificate, made in memory.
 */
#include <stddef.h>

#include "tls_cert.h"

int tls_cert_new(EVP_PKEY **pkey_r, X509 **x509_r)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x509 = X509_new();
	X509_NAME *name;

	if (pkey == NULL || x509 == NULL)
		goto fail;
	ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
	X509_gmtime_adj(X509_getm_notBefore(x509), -60);
	X509_gmtime_adj(X509_getm_notAfter(x509), 3600);
	X509_set_pubkey(x509, pkey);
	name = X509_get_subject_name(x509);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1,
				   0);
	X509_set_issuer_name(x509, name);
	if (X509_sign(x509, pkey, EVP_sha256()) == 0)
		goto fail;
	*pkey_r = pkey;
	*x509_r = x509;
	return 0;
fail:
	EVP_PKEY_free(pkey);
	X509_free(x509);
	*pkey_r = NULL;
	*x509_r = NULL;
	return -1;
}
