/*
 * imap_transport.h - popgate's own byte transport under libetpan.
 *
 * One TCP connection, optionally TLS (OpenSSL 3), driven with poll() so any
 * descriptor number works.  Every call blocks, bounded by a deadline: the
 * connect timeout for connecting and TLS handshakes, the I/O timeout for each
 * read or write.  End of stream is an error, never a zero-length read, so
 * libetpan cannot spin on a closed connection.  Certificate chain and host
 * name are verified unless the caller explicitly turns verification off.
 *
 * The TLS context (trust anchors, protocol floor) may be built once with
 * imap_transport_ctx_new() and shared by every connection, also across
 * fork(); host name, SNI and the verification mode are set per connection
 * from the transport_settings all the same.
 *
 * Nothing is printed here: errors are values (struct transport_error), and
 * errors inside libetpan's read/write callbacks are kept in the transport for
 * imap_transport_last_error().  The process must ignore SIGPIPE (OpenSSL
 * writes to the socket with write()).
 */
#ifndef POPGATE_IMAP_TRANSPORT_H
#define POPGATE_IMAP_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include <libetpan/libetpan.h>
#include <openssl/ssl.h>

enum transport_error_kind {
	TRANSPORT_ERR_NONE = 0,
	TRANSPORT_ERR_RESOLVE,  /* host name does not resolve */
	TRANSPORT_ERR_CONNECT,  /* every address refused or unreachable */
	TRANSPORT_ERR_TIMEOUT,  /* a deadline passed */
	TRANSPORT_ERR_CLOSED,   /* the peer closed the connection */
	TRANSPORT_ERR_IO,       /* socket or TLS failure while connected */
	TRANSPORT_ERR_TLS,      /* TLS handshake failed (not verification) */
	TRANSPORT_ERR_VERIFY,   /* certificate chain or host name rejected:
				   an administrator must act */
	TRANSPORT_ERR_NOMEM,
};

struct transport_error {
	enum transport_error_kind kind;
	char text[200]; /* one line, no secrets; names host and cause */
};

struct transport_settings {
	const char *host;         /* name or numeric address to connect to */
	unsigned port;
	const char *server_name;  /* SNI and verified name; NULL: host */
	const char *ca_file;      /* NULL: the system's default trust store */
	bool verify;              /* chain + host name; false only on request */
	uint64_t connect_timeout_ms; /* whole connect, and each TLS handshake */
	uint64_t io_timeout_ms;   /* each read or write */
	/* Built by imap_transport_ctx_new() with the same ca_file and
	 * verify, borrowed; NULL: build one for this connection. */
	SSL_CTX *tls_ctx;
};

/*
 * Build the client TLS context for upstream connections: TLS 1.2 minimum
 * and, when VERIFY, the trust anchors of CA_FILE (NULL: the system's
 * default store), read now.  Blocks only on reading those files.  Returns
 * a context owned by the caller (imap_transport_ctx_free), or NULL with
 * *err (kind TRANSPORT_ERR_TLS, naming the file and OpenSSL's reason).
 */
SSL_CTX *imap_transport_ctx_new(const char *ca_file, bool verify,
				struct transport_error *err);

void imap_transport_ctx_free(SSL_CTX *ctx);

struct imap_transport;

/*
 * Connect to SET->host:port, trying each resolved address in turn within one
 * connect deadline.  SET is copied.  Returns the transport (free it with
 * imap_transport_free(), or hand it to imap_transport_low_new()), or NULL
 * with *err filled in.
 */
struct imap_transport *imap_transport_connect(
	const struct transport_settings *set, struct transport_error *err);

/*
 * Start TLS on the connection (implicit TLS right after connect, or after
 * the server accepted STARTTLS).  Blocks up to the connect timeout.  Returns
 * 0, or -1 with *err; kind TRANSPORT_ERR_VERIFY carries OpenSSL's
 * verification error string.  After a failure the transport is unusable.
 */
int imap_transport_start_tls(struct imap_transport *tr,
			     struct transport_error *err);

bool imap_transport_is_tls(const struct imap_transport *tr);

/*
 * Wrap TR in a libetpan mailstream_low.  Ownership of TR passes to the
 * returned object: mailstream_close()/mailstream_low_free() close and free
 * both.  TR stays usable (start_tls, last_error) while the stream lives.
 * Returns NULL on allocation failure, in which case TR is still the
 * caller's.
 */
mailstream_low *imap_transport_low_new(struct imap_transport *tr);

/* The error that made the last read or write fail (kind NONE if none). */
const struct transport_error *
imap_transport_last_error(const struct imap_transport *tr);

/*
 * The next N octets read from LOW are certain to come (part of a literal
 * the server announced, at most what the caller's next read takes): reads
 * then wait until all N are there instead of waking for every segment, so
 * a long message is taken in a few large reads (over TLS, all but what
 * OpenSSL may already hold).  Below a few tens of kilobytes, and with
 * N = 0, reads wake on any octet, as a response line needs.  A no-op for
 * streams that are not this transport's.
 */
void imap_transport_expect(mailstream_low *low, size_t n);

/* Close and free a transport not handed to imap_transport_low_new(). */
void imap_transport_free(struct imap_transport *tr);

#endif
