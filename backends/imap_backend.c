/*
 * imap_backend.c - backend_ops over an upstream IMAP server: the ops table,
 * new and free, keepalive, and the mapping of libetpan and transport
 * failures to backend statuses that every part of the backend uses.
 *
 * libetpan formats commands and parses responses; bytes travel through
 * imap_transport.c.  Any stream-level failure (timeout, closed connection,
 * parse error, BYE) drops the IMAP session: libetpan cannot resynchronise
 * after one, and a later login() reconnects.
 *
 * The jobs live in their own files, sharing imap_internal.h: imap_login.c,
 * imap_listing.c, imap_fetch.c and imap_update.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "imap_internal.h"
#include "log.h"

const char *folder_name(const struct imap_backend *ib)
{
	return ib->set->folder != NULL ? ib->set->folder : "INBOX";
}

const char *folder_imap_name(const struct imap_backend *ib)
{
	return ib->set->folder_mutf7 != NULL ? ib->set->folder_mutf7 :
		folder_name(ib);
}

/* Close without LOGOUT: used when the session cannot be trusted any more. */
void drop_connection(struct imap_backend *ib)
{
	if (ib->imap == NULL)
		return;
	if (ib->imap->imap_stream != NULL) {
		mailstream_close(ib->imap->imap_stream);
		ib->imap->imap_stream = NULL;
	}
	mailimap_free(ib->imap);
	ib->imap = NULL;
	ib->tr = NULL;
	ib->authenticated = false;
	ib->id_tag[0] = '\0';
}

bool imap_quote(const char *s, char *buf, size_t size)
{
	size_t o = 0;

	if (size < 3)
		return false;
	buf[o++] = '"';
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		bool escape = c == '"' || c == '\\';

		/* Room for it, the closing quote and the NUL. */
		if (c < 0x20 || c > 0x7e || o + escape + 3 > size)
			return false;
		if (escape)
			buf[o++] = '\\';
		buf[o++] = (char)c;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return true;
}

/* libetpan codes after which the session is unusable. */
bool is_session_error(int r)
{
	switch (r) {
	case MAILIMAP_ERROR_BAD_STATE:
	case MAILIMAP_ERROR_STREAM:
	case MAILIMAP_ERROR_PARSE:
	case MAILIMAP_ERROR_MEMORY:
	case MAILIMAP_ERROR_FATAL:
	case MAILIMAP_ERROR_PROTOCOL:
	case MAILIMAP_ERROR_NEEDS_MORE_DATA:
		return true;
	default:
		return false;
	}
}

/* A short reason safe for a client line; the log gets the full story. */
static const char *session_error_reason(const struct imap_backend *ib, int r)
{
	const struct transport_error *te =
		ib->tr != NULL ? imap_transport_last_error(ib->tr) : NULL;

	if (te != NULL && te->kind == TRANSPORT_ERR_TIMEOUT)
		return "timeout";
	if (te != NULL && te->kind != TRANSPORT_ERR_NONE)
		return "connection lost";
	switch (r) {
	case MAILIMAP_ERROR_FATAL:
		return "server closed the session";
	case MAILIMAP_ERROR_PROTOCOL:
		return "command rejected (BAD) or out of sequence";
	case MAILIMAP_ERROR_MEMORY:
		return "out of memory";
	default:
		return "protocol error";
	}
}

void log_upstream_error(const struct imap_backend *ib, const char *op,
			const char *error)
{
	char hbuf[128], obuf[64], ebuf[256];

	log_warn("event=upstream_error host=%s op=%s error=%s",
		 log_value(hbuf, sizeof(hbuf), ib->set->host),
		 log_value(obuf, sizeof(obuf), op),
		 log_value(ebuf, sizeof(ebuf), error));
}

/* The server's text of the last tagged response, for logs only. */
const char *server_text(const struct imap_backend *ib)
{
	if (ib->imap == NULL || ib->imap->imap_response == NULL)
		return "";
	return ib->imap->imap_response;
}

const char *server_code(const struct imap_backend *ib)
{
	const struct mailimap_response_info *info;

	if (ib->imap == NULL || ib->imap->imap_response_info == NULL)
		return "";
	info = ib->imap->imap_response_info;
	return info->rsp_atom != NULL ? info->rsp_atom : "";
}

/*
 * Log, drop the session and fail with STATUS after libetpan code R broke
 * operation OP.
 */
int session_failed(struct imap_backend *ib, const char *op, int r,
		   enum backend_status status, struct backend_error *err)
{
	const struct transport_error *te =
		ib->tr != NULL ? imap_transport_last_error(ib->tr) : NULL;
	const char *reason = session_error_reason(ib, r);
	char detail[300];

	if (te != NULL && te->kind != TRANSPORT_ERR_NONE)
		snprintf(detail, sizeof(detail), "%s", te->text);
	else
		snprintf(detail, sizeof(detail), "libetpan error %d: %s", r,
			 reason);
	log_upstream_error(ib, op, detail);
	drop_connection(ib);
	return backend_fail(err, status, "upstream %s failed: %s", op, reason);
}

/* --- keepalive and free -------------------------------------------------- */

static int imap_keepalive(struct backend *be, struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;

	/* A lost connection is made again now, while the client has
	 * nothing waiting on it. */
	if (ib->imap != NULL) {
		int r = mailimap_noop(ib->imap);

		if (r == MAILIMAP_NO_ERROR)
			return 0;
		session_failed(ib, "NOOP", r, BACKEND_TEMP, err);
		if (!imap_resumable(ib))
			return -1;
	}
	return imap_resume(ib, err);
}

static void imap_free(struct backend *be)
{
	struct imap_backend *ib = (struct imap_backend *)be;

	if (ib->imap != NULL && ib->imap->imap_stream != NULL) {
		/* Bounded by the I/O deadline; closes the stream either way. */
		mailimap_logout(ib->imap);
	}
	drop_connection(ib);
	prefetch_cache_free(ib->cache);
	if (ib->pass != NULL)
		OPENSSL_clear_free(ib->pass, strlen(ib->pass));
	free(ib->user);
	free(ib);
}

static const struct backend_ops imap_backend_ops = {
	.login = imap_login,
	.snapshot = imap_snapshot,
	.fetch = imap_fetch,
	.update = imap_update,
	.keepalive = imap_keepalive,
	.free = imap_free,
};

struct backend *imap_backend_new(const struct upstream_settings *set,
				 const struct client_origin *origin)
{
	struct imap_backend *ib = calloc(1, sizeof(*ib));

	if (ib == NULL)
		return NULL;
	ib->be.ops = &imap_backend_ops;
	ib->set = set;
	ib->origin = origin;
	return &ib->be;
}
