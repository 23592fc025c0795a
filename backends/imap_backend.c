/*
 * imap_backend.c - backend_ops over an upstream IMAP server.
 *
 * libetpan formats commands and parses responses; bytes travel through
 * imap_transport.c.  Any stream-level failure (timeout, closed connection,
 * parse error, BYE) drops the IMAP session: libetpan cannot resynchronise
 * after one, and a later login() reconnects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "imap_backend.h"
#include "imap_transport.h"
#include "imap_uidmap.h"
#include "log.h"

#define STREAM_BUFFER_SIZE 8192
#define FETCH_FIRST_MIN (4 * 1024)
#define FETCH_NEXT_MIN (64 * 1024)
#define FETCH_CHUNK_MAX (4 * 1024 * 1024)

struct imap_backend {
	struct backend be; /* first: backend_* casts back to us */
	const struct upstream_settings *set;
	const struct client_origin *origin;
	mailimap *imap;            /* NULL while disconnected */
	struct imap_transport *tr; /* owned by imap's stream */
	bool authenticated;
	bool warned_no_verify;
	/* The logged-in user, for log lines and the unique-id store's key:
	 * user names have no length limit (X 2.1.2), so it is allocated. */
	char *user;
	/* The snapshot handed out (owned by the engine, which keeps it for
	 * the session): where the messages after a RETR are found. */
	const struct mail_entry *snap_msgs;
	size_t snap_count;
	struct prefetch_cache *cache; /* small bodies already read; or NULL */
};

static const char *folder_name(const struct imap_backend *ib)
{
	return ib->set->folder != NULL ? ib->set->folder : "INBOX";
}

/* Close without LOGOUT: used when the session cannot be trusted any more. */
static void drop_connection(struct imap_backend *ib)
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
}

/* libetpan codes after which the session is unusable. */
static bool is_session_error(int r)
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

static void log_upstream_error(const struct imap_backend *ib, const char *op,
			       const char *error)
{
	char hbuf[128], obuf[64], ebuf[256];

	log_warn("event=upstream_error host=%s op=%s error=%s",
		 log_value(hbuf, sizeof(hbuf), ib->set->host),
		 log_value(obuf, sizeof(obuf), op),
		 log_value(ebuf, sizeof(ebuf), error));
}

/* The server's text of the last tagged response, for logs only. */
static const char *server_text(const struct imap_backend *ib)
{
	if (ib->imap == NULL || ib->imap->imap_response == NULL)
		return "";
	return ib->imap->imap_response;
}

/*
 * Log, drop the session and fail with STATUS after libetpan code R broke
 * operation OP.
 */
static int session_failed(struct imap_backend *ib, const char *op, int r,
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

/* --- connecting --------------------------------------------------------- */

static int transport_failed(struct imap_backend *ib, const char *op,
			    const struct transport_error *te,
			    struct backend_error *err)
{
	log_upstream_error(ib, op, te->text);
	if (te->kind == TRANSPORT_ERR_VERIFY)
		return backend_fail(err, BACKEND_PERM, "upstream TLS %s",
				    te->text);
	if (te->kind == TRANSPORT_ERR_TIMEOUT)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream %s failed: timeout", op);
	return backend_fail(err, BACKEND_TEMP, "upstream %s failed: %s", op,
			    te->kind == TRANSPORT_ERR_TLS ? "TLS error" :
			    "server unreachable");
}

/* Drop what the server said before logging in: the OK of a login usually
 * carries the post-login list (UIDPLUS may appear only then). */
static void forget_capabilities(struct imap_backend *ib)
{
	struct mailimap_connection_info *info = ib->imap->imap_connection_info;

	if (info != NULL && info->imap_capability != NULL) {
		mailimap_capability_data_free(info->imap_capability);
		info->imap_capability = NULL;
	}
}

/* Forget what the server said before, then ask again. */
static int refresh_capabilities(struct imap_backend *ib,
				struct backend_error *err)
{
	struct mailimap_capability_data *caps = NULL;
	int r;

	forget_capabilities(ib);
	r = mailimap_capability(ib->imap, &caps);
	if (r != MAILIMAP_NO_ERROR)
		return session_failed(ib, "CAPABILITY", r, BACKEND_TEMP, err);
	mailimap_capability_data_free(caps);
	return 0;
}

static bool have_capabilities(const struct imap_backend *ib)
{
	const struct mailimap_connection_info *info =
		ib->imap->imap_connection_info;

	return info != NULL && info->imap_capability != NULL;
}

static int start_tls(struct imap_backend *ib, struct backend_error *err)
{
	struct transport_error te = { 0 };
	int r;

	if (!have_capabilities(ib) && refresh_capabilities(ib, err) < 0)
		return -1;
	if (!mailimap_has_extension(ib->imap, "STARTTLS")) {
		log_upstream_error(ib, "STARTTLS", "not offered by the server");
		drop_connection(ib);
		return backend_fail(err, BACKEND_PERM,
				    "upstream does not offer STARTTLS");
	}
	r = mailimap_starttls(ib->imap);
	/*
	 * Anything already buffered arrived in plaintext before the handshake
	 * and could be injected responses (CVE-2020-15953): refuse it,
	 * whatever this libetpan version checks itself.
	 */
	if (ib->imap->imap_stream != NULL &&
	    ib->imap->imap_stream->read_buffer_len != 0) {
		log_upstream_error(ib, "STARTTLS",
				   "data received before the TLS handshake");
		drop_connection(ib);
		return backend_fail(err, BACKEND_PERM,
				    "upstream sent data before the TLS handshake");
	}
	if (r != MAILIMAP_NO_ERROR) {
		if (is_session_error(r))
			return session_failed(ib, "STARTTLS", r, BACKEND_TEMP,
					      err);
		log_upstream_error(ib, "STARTTLS", server_text(ib));
		drop_connection(ib);
		return backend_fail(err, BACKEND_PERM,
				    "upstream refused STARTTLS");
	}
	if (imap_transport_start_tls(ib->tr, &te) < 0) {
		transport_failed(ib, "TLS handshake", &te, err);
		drop_connection(ib);
		return -1;
	}
	/* Capabilities seen in plaintext may have been forged. */
	return refresh_capabilities(ib, err);
}

/*
 * Free a parameter list we built with strdup(): libetpan's
 * mailimap_id_params_list_free() releases strings through its MMAPString
 * registry, which does not know them, and would leak them.
 */
static void client_id_free(struct mailimap_id_params_list *params)
{
	for (clistiter *it = clist_begin(params->idpa_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_id_param *param = clist_content(it);

		free(param->idpa_name);
		free(param->idpa_value);
		free(param);
	}
	clist_free(params->idpa_list);
	free(params);
}

static int add_id_param(struct mailimap_id_params_list *params,
			const char *name, const char *value)
{
	char *n = strdup(name), *v = strdup(value);

	if (n == NULL || v == NULL ||
	    mailimap_id_params_list_add_name_value(params, n, v) != 0) {
		/* libetpan cannot free plain strings: still ours. */
		free(n);
		free(v);
		return -1;
	}
	return 0;
}

/* RFC 2971 ID so the upstream applies per-IP policy to the real client. */
static int send_client_id(struct imap_backend *ib, struct backend_error *err)
{
	struct mailimap_id_params_list *params, *server_params = NULL;
	char port[16];
	int r;

	if (!ib->set->forward_client_ip || ib->origin == NULL ||
	    ib->origin->ip == NULL)
		return 0;
	if (!mailimap_has_id(ib->imap))
		return 0;
	snprintf(port, sizeof(port), "%u", ib->origin->port);
	params = mailimap_id_params_list_new_empty();
	if (params == NULL)
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	if (add_id_param(params, "x-originating-ip", ib->origin->ip) < 0 ||
	    add_id_param(params, "x-originating-port", port) < 0) {
		client_id_free(params);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	r = mailimap_id(ib->imap, params, &server_params);
	client_id_free(params);
	if (server_params != NULL)
		mailimap_id_params_list_free(server_params);
	if (r == MAILIMAP_NO_ERROR)
		return 0;
	if (is_session_error(r))
		return session_failed(ib, "ID", r, BACKEND_TEMP, err);
	/* A refused ID costs only the per-IP accounting: carry on. */
	log_upstream_error(ib, "ID", server_text(ib));
	return 0;
}

static int connect_upstream(struct imap_backend *ib, struct backend_error *err)
{
	const struct upstream_settings *set = ib->set;
	struct transport_settings ts = {
		.host = set->host,
		.port = set->port,
		.server_name = set->server_name,
		.ca_file = set->ca_file,
		.verify = set->verify,
		.connect_timeout_ms = set->connect_timeout_ms,
		.io_timeout_ms = set->command_timeout_ms,
		.tls_ctx = set->tls_ctx,
	};
	struct transport_error te = { 0 };
	struct imap_transport *tr;
	mailstream_low *low;
	mailstream *stream;
	char hbuf[128];
	int r;

	if (set->tls != UPSTREAM_TLS_NONE && !set->verify &&
	    !ib->warned_no_verify) {
		log_warn("event=upstream_tls_unverified host=%s "
			 "reason=\"verify is off in the configuration\"",
			 log_value(hbuf, sizeof(hbuf), set->host));
		ib->warned_no_verify = true;
	}
	tr = imap_transport_connect(&ts, &te);
	if (tr == NULL)
		return transport_failed(ib, "connect", &te, err);
	if (set->tls == UPSTREAM_TLS_IMPLICIT &&
	    imap_transport_start_tls(tr, &te) < 0) {
		imap_transport_free(tr);
		return transport_failed(ib, "TLS handshake", &te, err);
	}
	low = imap_transport_low_new(tr);
	if (low == NULL) {
		imap_transport_free(tr);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	stream = mailstream_new(low, STREAM_BUFFER_SIZE);
	if (stream == NULL) {
		mailstream_low_free(low);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	ib->imap = mailimap_new(0, NULL);
	if (ib->imap == NULL) {
		mailstream_close(stream);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	ib->tr = tr;

	r = mailimap_connect(ib->imap, stream);
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED) {
		/* PREAUTH would serve whoever the server chose, not this user. */
		log_upstream_error(ib, "greeting", "unexpected PREAUTH");
		drop_connection(ib);
		return backend_fail(err, BACKEND_PERM,
				    "upstream greeted with PREAUTH");
	}
	if (r == MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION) {
		log_upstream_error(ib, "greeting", server_text(ib));
		drop_connection(ib);
		return backend_fail(err, BACKEND_TEMP,
				    "upstream refused the connection (BYE)");
	}
	if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED) {
		if (ib->imap->imap_stream == NULL)
			ib->imap->imap_stream = stream;
		return session_failed(ib, "greeting", r, BACKEND_TEMP, err);
	}

	if (set->tls == UPSTREAM_TLS_STARTTLS && start_tls(ib, err) < 0)
		return -1;
	if (!have_capabilities(ib) && refresh_capabilities(ib, err) < 0)
		return -1;
	return send_client_id(ib, err);
}

/* --- login -------------------------------------------------------------- */

/*
 * The RFC 4616 PLAIN response (empty authzid, authcid, password) in
 * base64 followed by CRLF, in a new buffer of *LEN_R octets that the caller
 * must cleanse and free.  NULL when out of memory.
 */
static char *plain_response_new(const char *user, const char *pass,
				size_t *len_r)
{
	size_t ulen = strlen(user), plen = strlen(pass);
	size_t rawlen = ulen + plen + 2;
	unsigned char *raw = malloc(rawlen);
	char *b64 = malloc(4 * ((rawlen + 2) / 3) + 3);
	int n;

	if (raw == NULL || b64 == NULL) {
		free(raw);
		free(b64);
		return NULL;
	}
	raw[0] = '\0';
	memcpy(raw + 1, user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, pass, plen);
	n = EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
	memcpy(b64 + n, "\r\n", 2);
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	*len_r = (size_t)n + 2;
	return b64;
}

/*
 * AUTHENTICATE PLAIN by hand: libetpan's mailimap_authenticate() needs
 * Cyrus SASL and its plugin packages at run time for a mechanism that is
 * one base64 line.  With SASL-IR (RFC 4959) the credentials travel with the
 * command, which saves the continuation's round trip on every login.
 * Returns a libetpan code: NO_ERROR, ERROR_LOGIN (refused) or a session
 * error.
 */
static int authenticate_plain(struct imap_backend *ib, const char *user,
			      const char *pass, bool initial_response)
{
	static const char command[] = "AUTHENTICATE PLAIN";
	mailimap *imap = ib->imap;
	struct mailimap_response *response = NULL;
	size_t b64len = 0;
	char *line, *b64;
	int r, state;

	b64 = plain_response_new(user, pass, &b64len);
	if (b64 == NULL)
		return MAILIMAP_ERROR_MEMORY;
	r = mailimap_send_current_tag(imap);
	if (r != MAILIMAP_NO_ERROR)
		goto out;
	r = MAILIMAP_ERROR_STREAM;
	if (mailstream_write(imap->imap_stream, command, sizeof(command) - 1) < 0)
		goto out;
	if (initial_response) {
		if (mailstream_write(imap->imap_stream, " ", 1) < 0 ||
		    mailstream_write(imap->imap_stream, b64, b64len) < 0)
			goto out;
	} else if (mailstream_write(imap->imap_stream, "\r\n", 2) < 0) {
		goto out;
	}
	if (mailstream_flush(imap->imap_stream) < 0)
		goto out;
	line = mailimap_read_line(imap);
	if (line == NULL)
		goto out;
	if (line[0] == '+') {
		/* After an initial response a challenge makes no sense. */
		r = MAILIMAP_ERROR_PROTOCOL;
		if (initial_response)
			goto out;
		r = MAILIMAP_ERROR_STREAM;
		if (mailstream_write(imap->imap_stream, b64, b64len) < 0 ||
		    mailstream_flush(imap->imap_stream) < 0 ||
		    mailimap_read_line(imap) == NULL)
			goto out;
	}
	/* Either the reply to our credentials or an early tagged NO/BAD. */
	r = mailimap_parse_response(imap, &response);
	if (r != MAILIMAP_NO_ERROR)
		goto out;
	state = response->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state->rsp_type;
	mailimap_response_free(response);
	if (state != MAILIMAP_RESP_COND_STATE_OK) {
		r = MAILIMAP_ERROR_LOGIN;
		goto out;
	}
	imap->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	r = MAILIMAP_NO_ERROR;
out:
	OPENSSL_cleanse(b64, b64len);
	free(b64);
	return r;
}

/* One authentication on the current connection; a libetpan code. */
static int try_login(struct imap_backend *ib, const char *user,
		     const char *pass)
{
	if (mailimap_has_authentication(ib->imap, "PLAIN")) {
		bool sasl_ir = mailimap_has_extension(ib->imap, "SASL-IR");

		forget_capabilities(ib);
		return authenticate_plain(ib, user, pass, sasl_ir);
	}
	forget_capabilities(ib);
	return mailimap_login(ib->imap, user, pass);
}

static int imap_login(struct backend *be, const char *user, const char *pass,
		      struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct backend_error ignored;
	char ubuf[128], sbuf[256];
	bool reused;
	int r;

	/* Defence in depth: mailimap_login() would send these raw. */
	if (strpbrk(user, "\r\n") != NULL || strpbrk(pass, "\r\n") != NULL)
		return backend_fail(err, BACKEND_AUTH,
				    "invalid characters in credentials");
	if (ib->authenticated)
		return 0;
	reused = ib->imap != NULL;
	for (;;) {
		if (ib->imap == NULL && connect_upstream(ib, err) < 0)
			return -1;
		if (mailimap_has_extension(ib->imap, "LOGINDISABLED") &&
		    !mailimap_has_authentication(ib->imap, "PLAIN")) {
			log_upstream_error(ib, "login", "LOGINDISABLED");
			drop_connection(ib);
			return backend_fail(err, BACKEND_PERM,
				"upstream refuses plaintext login (LOGINDISABLED)");
		}
		r = try_login(ib, user, pass);
		/* The server may have closed an idle or failed connection
		 * since the last attempt: reconnect once. */
		if (reused && is_session_error(r)) {
			log_upstream_error(ib, "login", "connection lost since "
					   "the last attempt, reconnecting");
			drop_connection(ib);
			reused = false;
			continue;
		}
		break;
	}

	if (r == MAILIMAP_ERROR_LOGIN) {
		log_info("event=upstream_login_failed user=%s response=%s",
			 log_value(ubuf, sizeof(ubuf), user),
			 log_value(sbuf, sizeof(sbuf), server_text(ib)));
		/* A retry needs the pre-login capabilities again; if that
		 * fails the session is dropped and the retry reconnects. */
		refresh_capabilities(ib, &ignored);
		return backend_fail(err, BACKEND_AUTH, "authentication failed");
	}
	if (r != MAILIMAP_NO_ERROR)
		return session_failed(ib, "login", r, BACKEND_TEMP, err);
	free(ib->user);
	if ((ib->user = strdup(user)) == NULL) {
		drop_connection(ib);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	ib->authenticated = true;
	if (!have_capabilities(ib) && refresh_capabilities(ib, err) < 0)
		return -1;
	return 0;
}

/* --- snapshot ----------------------------------------------------------- */

struct snapshot_ctx {
	struct mail_entry *msgs;
	size_t count, alloc;
	bool oom;
};

static void ignore_progress(size_t current, size_t maximum, void *context)
{
	(void)current;
	(void)maximum;
	(void)context;
}

static void snapshot_add(struct snapshot_ctx *sc, uint32_t uid,
			 uint32_t size);

/* Called per FETCH response so 100,000 messages never form one big list. */
static void snapshot_att(struct mailimap_msg_att *att, void *context)
{
	struct snapshot_ctx *sc = context;
	bool have_uid = false, have_size = false;
	uint32_t uid = 0, size = 0;

	for (clistiter *it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
			continue;
		if (item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID) {
			uid = item->att_data.att_static->att_data.att_uid;
			have_uid = true;
		} else if (item->att_data.att_static->att_type ==
			   MAILIMAP_MSG_ATT_RFC822_SIZE) {
			size = item->att_data.att_static->att_data.att_rfc822_size;
			have_size = true;
		}
	}
	/* Unsolicited FETCH (flag changes) carry no size: not ours. */
	if (have_uid && have_size)
		snapshot_add(sc, uid, size);
}

static void snapshot_add(struct snapshot_ctx *sc, uint32_t uid, uint32_t size)
{
	if (sc->oom)
		return;
	if (sc->count == sc->alloc) {
		size_t alloc = sc->alloc ? sc->alloc * 2 : 256;
		struct mail_entry *msgs = reallocarray(sc->msgs, alloc,
						       sizeof(*msgs));
		if (msgs == NULL) {
			sc->oom = true;
			return;
		}
		sc->msgs = msgs;
		sc->alloc = alloc;
	}
	sc->msgs[sc->count++] = (struct mail_entry) {
		.uid = uid, .imap_uid = uid, .size = size,
	};
}

static int cmp_entry_uid(const void *a, const void *b)
{
	const struct mail_entry *x = a, *y = b;

	return x->imap_uid < y->imap_uid ? -1 : x->imap_uid > y->imap_uid;
}

static bool entries_sorted(const struct mail_entry *msgs, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		if (msgs[i - 1].imap_uid > msgs[i].imap_uid)
			return false;
	}
	return true;
}

static int fetch_sizes(struct imap_backend *ib, struct snapshot_ctx *sc)
{
	struct mailimap_fetch_type *ft;
	struct mailimap_set *set;
	clist *result = NULL;
	int r;

	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	set = mailimap_set_new_interval(1, 0); /* 1:* */
	if (ft == NULL || set == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft,
			mailimap_fetch_att_new_uid()) != 0 ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft,
			mailimap_fetch_att_new_rfc822_size()) != 0) {
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		if (set != NULL)
			mailimap_set_free(set);
		return MAILIMAP_ERROR_MEMORY;
	}
	/* libetpan calls the handler only while a progress callback is set. */
	mailimap_set_progress_callback(ib->imap, NULL, ignore_progress, NULL);
	mailimap_set_msg_att_handler(ib->imap, snapshot_att, sc);
	r = mailimap_uid_fetch(ib->imap, set, ft, &result);
	if (ib->imap != NULL) {
		mailimap_set_msg_att_handler(ib->imap, NULL, NULL);
		mailimap_set_progress_callback(ib->imap, NULL, NULL, NULL);
	}
	/* After a tagged NO libetpan has freed the list it handed out. */
	if (r == MAILIMAP_NO_ERROR && result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (r == MAILIMAP_NO_ERROR && sc->oom)
		return MAILIMAP_ERROR_MEMORY;
	return r;
}

/*
 * The login's SELECT and size listing, pipelined and parsed here.
 *
 * libetpan's generic parser tries every extension's grammar on every
 * response; for the 10,000 FETCH lines of a big maildrop that was most of
 * the login's time.  The listing's grammar is tiny, so these two commands
 * go out in one write (one round trip instead of two) and their responses
 * are read line by line straight from libetpan's stream buffer.  Anything
 * this parser does not understand is a parse error that drops the
 * session, as libetpan's would.
 */

#define LIST_TAG_SELECT "pgsel"
#define LIST_TAG_FETCH "pglst"
#define LIST_LINE_MAX (64 * 1024)
#define LIST_BUFFER_SIZE (64 * 1024)

struct listing {
	struct snapshot_ctx *sc;
	uint32_t uidvalidity, uidnext, exists;
	int select_state;   /* MAILIMAP_RESP_COND_STATE_*, -1 while pending */
	int fetch_state;
	char text[256];     /* the first failed command's response text */
	char *buf;          /* LIST_BUFFER_SIZE octets read from the stream */
	size_t start, end;  /* the part of buf not parsed yet */
	char *line;         /* a line with literals, rebuilt; else NULL */
	size_t line_len, line_cap;
};

static bool eat_word(const char **p, const char *end, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(end - *p) < n || strncasecmp(*p, word, n) != 0)
		return false;
	*p += n;
	return true;
}

static bool eat_number(const char **p, const char *end, uint32_t *value)
{
	const char *start = *p;
	uint64_t n = 0;

	while (*p < end && **p >= '0' && **p <= '9') {
		n = n * 10 + (uint64_t)(**p - '0');
		if (n > UINT32_MAX)
			return false;
		(*p)++;
	}
	*value = (uint32_t)n;
	return *p > start;
}

/* Skip one value: atom, number, NIL, quoted string or parenthesised list. */
static bool skip_value(const char **p, const char *end)
{
	int depth = 0;

	do {
		if (*p >= end)
			return false;
		if (**p == '"') {
			for ((*p)++; *p < end && **p != '"'; (*p)++) {
				if (**p == '\\' && ++(*p) >= end)
					return false;
			}
			if (*p >= end)
				return false;
			(*p)++;
		} else if (**p == '(') {
			depth++;
			(*p)++;
		} else if (**p == ')') {
			if (depth == 0)
				return false;
			depth--;
			(*p)++;
		} else if (**p == ' ') {
			if (depth == 0)
				return false;
			(*p)++;
		} else {
			while (*p < end && **p != ' ' && **p != '(' &&
			       **p != ')' && **p != '"')
				(*p)++;
		}
	} while (depth > 0);
	return true;
}

/* "(UID 7 RFC822.SIZE 1234 FLAGS (\Seen))": add the entry if both are
 * there; other items (unsolicited FLAGS) are skipped. */
static int listing_fetch(struct listing *ls, const char *p, const char *end)
{
	uint32_t uid = 0, size = 0;
	bool have_uid = false, have_size = false;

	if (p >= end || *p++ != '(')
		return MAILIMAP_ERROR_PARSE;
	while (p < end && *p != ')') {
		const char *name = p;
		size_t name_len;
		int brackets = 0;

		while (p < end && (brackets > 0 || (*p != ' ' && *p != ')'))) {
			if (*p == '[')
				brackets++;
			else if (*p == ']' && brackets > 0)
				brackets--;
			p++;
		}
		name_len = (size_t)(p - name);
		if (p >= end || *p++ != ' ')
			return MAILIMAP_ERROR_PARSE;
		if (name_len == 3 && strncasecmp(name, "UID", 3) == 0) {
			if (!eat_number(&p, end, &uid))
				return MAILIMAP_ERROR_PARSE;
			have_uid = true;
		} else if (name_len == 11 &&
			   strncasecmp(name, "RFC822.SIZE", 11) == 0) {
			if (!eat_number(&p, end, &size))
				return MAILIMAP_ERROR_PARSE;
			have_size = true;
		} else if (!skip_value(&p, end)) {
			return MAILIMAP_ERROR_PARSE;
		}
		if (p < end && *p == ' ')
			p++;
	}
	if (p >= end)
		return MAILIMAP_ERROR_PARSE;
	if (have_uid && have_size &&
	    ls->select_state == MAILIMAP_RESP_COND_STATE_OK)
		snapshot_add(ls->sc, uid, size);
	return MAILIMAP_NO_ERROR;
}

/* One untagged response ("* " already eaten). */
static int listing_untagged(struct listing *ls, const char *p,
			    const char *end)
{
	uint32_t n;

	if (eat_word(&p, end, "OK [UIDVALIDITY ")) {
		if (eat_number(&p, end, &n))
			ls->uidvalidity = n;
		return MAILIMAP_NO_ERROR;
	}
	if (eat_word(&p, end, "OK [UIDNEXT ")) {
		if (eat_number(&p, end, &n))
			ls->uidnext = n;
		return MAILIMAP_NO_ERROR;
	}
	if (eat_word(&p, end, "BYE"))
		return MAILIMAP_ERROR_FATAL;
	if (!eat_number(&p, end, &n))
		return MAILIMAP_NO_ERROR; /* FLAGS, OK [...], CAPABILITY ... */
	if (eat_word(&p, end, " EXISTS")) {
		if (ls->select_state < 0)
			ls->exists = n;
		return MAILIMAP_NO_ERROR;
	}
	if (eat_word(&p, end, " FETCH "))
		return listing_fetch(ls, p, end);
	return MAILIMAP_NO_ERROR; /* RECENT, EXPUNGE */
}

static void listing_remember_text(struct listing *ls, const char *p,
				  const char *end)
{
	if (ls->text[0] == '\0')
		snprintf(ls->text, sizeof(ls->text), "%.*s",
			 (int)(end - p), p);
}

static int listing_tagged(struct listing *ls, int *state, const char *p,
			  const char *end)
{
	if (eat_word(&p, end, "OK") && (p == end || *p == ' ')) {
		*state = MAILIMAP_RESP_COND_STATE_OK;
		return MAILIMAP_NO_ERROR;
	}
	if (eat_word(&p, end, "NO") && (p == end || *p == ' '))
		*state = MAILIMAP_RESP_COND_STATE_NO;
	else if (eat_word(&p, end, "BAD") && (p == end || *p == ' '))
		*state = MAILIMAP_RESP_COND_STATE_BAD;
	else
		return MAILIMAP_ERROR_PARSE;
	listing_remember_text(ls, p, end);
	return MAILIMAP_NO_ERROR;
}

/* Append LEN octets to the rebuilt line; false past LIST_LINE_MAX. */
static bool listing_line_append(struct listing *ls, const char *data,
				size_t len)
{
	if (ls->line_len + len > LIST_LINE_MAX)
		return false;
	if (ls->line_len + len > ls->line_cap) {
		char *p = realloc(ls->line, LIST_LINE_MAX);

		if (p == NULL)
			return false;
		ls->line = p;
		ls->line_cap = LIST_LINE_MAX;
	}
	memcpy(ls->line + ls->line_len, data, len);
	ls->line_len += len;
	return true;
}

/* Where a "{N}" or "{N+}" announcement ends LINE, or -1 without one. */
static int64_t trailing_literal(const char *line, size_t len, size_t *at_r)
{
	size_t i, digits_end;
	uint64_t n = 0;

	if (len < 3 || line[len - 1] != '}')
		return -1;
	i = len - 1;
	if (line[i - 1] == '+')
		i--;
	digits_end = i;
	while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
		i--;
	if (i == digits_end || i == 0 || line[i - 1] != '{' ||
	    digits_end - i > 10)
		return -1;
	for (size_t k = i; k < digits_end; k++)
		n = n * 10 + (uint64_t)(line[k] - '0');
	*at_r = i - 1;
	return (int64_t)n;
}

/*
 * Make more octets available after ls->end.  libetpan's own line reader
 * shifts its whole buffer down after every line it takes; this one moves
 * the unparsed tail once per read.  Octets are taken from libetpan's buffer
 * only, so anything left over can be given back (listing_give_back()).
 */
static int listing_fill(mailstream *stream, struct listing *ls)
{
	size_t space;
	ssize_t n;

	if (ls->start > 0) {
		memmove(ls->buf, ls->buf + ls->start, ls->end - ls->start);
		ls->end -= ls->start;
		ls->start = 0;
	}
	space = LIST_BUFFER_SIZE - ls->end;
	if (space == 0)
		return MAILIMAP_ERROR_PARSE; /* a line longer than we accept */
	if (stream->read_buffer_len == 0 &&
	    mailstream_feed_read_buffer(stream) <= 0)
		return MAILIMAP_ERROR_STREAM;
	if (space > stream->read_buffer_len)
		space = stream->read_buffer_len;
	n = mailstream_read(stream, ls->buf + ls->end, space);
	if (n <= 0)
		return MAILIMAP_ERROR_STREAM;
	ls->end += (size_t)n;
	return MAILIMAP_NO_ERROR;
}

/* Put what was read past the last response back in front of libetpan's
 * buffer, for the next command's parser. */
static int listing_give_back(mailstream *stream, struct listing *ls)
{
	size_t left = ls->end - ls->start;

	if (left == 0)
		return MAILIMAP_NO_ERROR;
	if (left + stream->read_buffer_len > stream->buffer_max_size)
		return MAILIMAP_ERROR_PROTOCOL;
	memmove(stream->read_buffer + left, stream->read_buffer,
		stream->read_buffer_len);
	memcpy(stream->read_buffer, ls->buf + ls->start, left);
	stream->read_buffer_len += left;
	ls->start = ls->end;
	return MAILIMAP_NO_ERROR;
}

/* Skip LEN literal octets, from our buffer first. */
static int listing_skip(mailstream *stream, struct listing *ls, uint64_t len)
{
	while (len > 0) {
		size_t have = ls->end - ls->start;
		int r;

		if (have == 0) {
			r = listing_fill(stream, ls);
			if (r != MAILIMAP_NO_ERROR)
				return r;
			continue;
		}
		if (have > len)
			have = (size_t)len;
		ls->start += have;
		len -= have;
	}
	return MAILIMAP_NO_ERROR;
}

/*
 * Read one response line without its line ending.  A literal inside it is
 * skipped and replaced by "" (none of what the listing needs comes as
 * one).  The line stays valid until the next call.
 */
static int listing_read_line(struct imap_backend *ib, struct listing *ls,
			     const char **line_r, size_t *len_r)
{
	mailstream *stream = ib->imap->imap_stream;
	bool rebuilt = false;
	size_t scanned = 0;

	ls->line_len = 0;
	for (;;) {
		char *line = ls->buf + ls->start, *nl;
		size_t len, at = 0;
		int64_t literal;
		int r;

		nl = memchr(line + scanned, '\n', ls->end - ls->start - scanned);
		if (nl == NULL) {
			scanned = ls->end - ls->start;
			r = listing_fill(stream, ls);
			if (r != MAILIMAP_NO_ERROR)
				return r;
			continue;
		}
		scanned = 0;
		len = (size_t)(nl - line);
		ls->start += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		literal = trailing_literal(line, len, &at);
		if (literal < 0 && !rebuilt) {
			*line_r = line;
			*len_r = len;
			return MAILIMAP_NO_ERROR;
		}
		if (!listing_line_append(ls, line, literal < 0 ? len : at))
			return MAILIMAP_ERROR_PARSE;
		if (literal < 0) {
			*line_r = ls->line;
			*len_r = ls->line_len;
			return MAILIMAP_NO_ERROR;
		}
		if (!listing_line_append(ls, "\"\"", 2))
			return MAILIMAP_ERROR_PARSE;
		rebuilt = true;
		r = listing_skip(stream, ls, (uint64_t)literal);
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
}

/*
 * The folder as IMAP sends it: an atom when it is one (as libetpan does),
 * else a quoted string.  False when it can be neither (8-bit, controls):
 * then libetpan's encoder has to do it.
 */
static bool encode_folder(const char *folder, char *buf, size_t size)
{
	size_t len = strlen(folder), o = 0;
	bool atom = len > 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)folder[i];

		if (c < 0x20 || c > 0x7e)
			return false;
		if (strchr("(){ %*\"\\]", c) != NULL)
			atom = false;
	}
	if (atom && len < size) {
		memcpy(buf, folder, len + 1);
		return true;
	}
	buf[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		if (o + 4 > size)
			return false;
		if (folder[i] == '"' || folder[i] == '\\')
			buf[o++] = '\\';
		buf[o++] = folder[i];
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return true;
}

/*
 * SELECT and UID FETCH 1:* (UID RFC822.SIZE) in one write, both responses
 * read to their tagged end.  Returns a libetpan code for the stream
 * (session errors) and leaves the commands' outcomes in LS; on success the
 * libetpan session is in the selected state, as after mailimap_select().
 */
static int listing_run(struct imap_backend *ib, struct listing *ls,
		       const char *encoded_folder)
{
	mailimap *imap = ib->imap;
	struct mailimap_selection_info *sel;
	char command[1200];
	int len, r;

	len = snprintf(command, sizeof(command),
		       LIST_TAG_SELECT " SELECT %s\r\n"
		       LIST_TAG_FETCH " UID FETCH 1:* (UID RFC822.SIZE)\r\n",
		       encoded_folder);
	if (len < 0 || (size_t)len >= sizeof(command))
		return MAILIMAP_ERROR_MEMORY;
	if (mailstream_write(imap->imap_stream, command, (size_t)len) < 0 ||
	    mailstream_flush(imap->imap_stream) < 0)
		return MAILIMAP_ERROR_STREAM;
	/* SELECT closes any mailbox selected before, even when it fails. */
	imap->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	while (ls->fetch_state < 0) {
		const char *line, *p, *end;
		size_t line_len;

		r = listing_read_line(ib, ls, &line, &line_len);
		if (r != MAILIMAP_NO_ERROR)
			return r;
		p = line;
		end = line + line_len;
		if (eat_word(&p, end, "* "))
			r = listing_untagged(ls, p, end);
		else if (ls->select_state < 0 &&
			 eat_word(&p, end, LIST_TAG_SELECT " "))
			r = listing_tagged(ls, &ls->select_state, p, end);
		else if (ls->select_state >= 0 &&
			 eat_word(&p, end, LIST_TAG_FETCH " "))
			r = listing_tagged(ls, &ls->fetch_state, p, end);
		else
			r = MAILIMAP_ERROR_PROTOCOL;
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
	if (ls->select_state != MAILIMAP_RESP_COND_STATE_OK)
		return MAILIMAP_NO_ERROR;
	sel = mailimap_selection_info_new();
	if (sel == NULL)
		return MAILIMAP_ERROR_MEMORY;
	sel->sel_uidvalidity = ls->uidvalidity;
	sel->sel_uidnext = ls->uidnext;
	sel->sel_exists = ls->exists;
	sel->sel_has_exists = 1;
	if (imap->imap_selection_info != NULL)
		mailimap_selection_info_free(imap->imap_selection_info);
	imap->imap_selection_info = sel;
	imap->imap_state = MAILIMAP_STATE_SELECTED;
	return MAILIMAP_NO_ERROR;
}

/*
 * The fast path of imap_snapshot(): 0 with SC filled and *UIDVALIDITY_R
 * set, 1 when the folder name needs libetpan's encoder (the caller takes
 * the slow path), -1 with ERR set.
 */
static int select_and_list(struct imap_backend *ib, struct snapshot_ctx *sc,
			   uint32_t *uidvalidity_r, struct backend_error *err)
{
	struct listing ls = { .sc = sc, .select_state = -1,
			      .fetch_state = -1 };
	char quoted[1024], hbuf[128], fbuf[128], sbuf[256];
	int r;

	if (!encode_folder(folder_name(ib), quoted, sizeof(quoted)))
		return 1;
	ls.buf = malloc(LIST_BUFFER_SIZE);
	if (ls.buf == NULL)
		return backend_fail(err, BACKEND_TEMP,
				    "out of memory listing messages");
	r = listing_run(ib, &ls, quoted);
	if (r == MAILIMAP_NO_ERROR)
		r = listing_give_back(ib->imap->imap_stream, &ls);
	free(ls.buf);
	free(ls.line);
	if (r != MAILIMAP_NO_ERROR) {
		if (r == MAILIMAP_ERROR_MEMORY)
			return backend_fail(err, BACKEND_TEMP,
					    "out of memory listing messages");
		return session_failed(ib, ls.select_state < 0 ? "SELECT" :
				      "UID FETCH", r, BACKEND_TEMP, err);
	}
	if (ls.select_state != MAILIMAP_RESP_COND_STATE_OK) {
		log_warn("event=upstream_error host=%s op=SELECT folder=%s "
			 "response=%s",
			 log_value(hbuf, sizeof(hbuf), ib->set->host),
			 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
			 log_value(sbuf, sizeof(sbuf), ls.text));
		return backend_fail(err, BACKEND_PERM,
				    "upstream folder %s cannot be opened",
				    folder_name(ib));
	}
	if (sc->oom)
		return backend_fail(err, BACKEND_TEMP,
				    "out of memory listing messages");
	/* Some servers refuse "1:*" in an empty folder: nothing to list. */
	if (ls.fetch_state != MAILIMAP_RESP_COND_STATE_OK && ls.exists > 0) {
		log_upstream_error(ib, "UID FETCH", ls.text);
		return backend_fail(err, BACKEND_TEMP,
				    "upstream refused to list messages");
	}
	*uidvalidity_r = ls.uidvalidity;
	return 0;
}

/* Durable unique-ids instead of bare UIDs; without them, no snapshot: an
 * invented id could make a client delete or skip the wrong message. */
static int map_unique_ids(struct imap_backend *ib, struct mail_entry *msgs,
			  size_t n, uint32_t uidvalidity,
			  struct backend_error *err)
{
	struct uidstore_key key = { NULL, ib->user, folder_name(ib) };
	const char *error = NULL;
	size_t len = strlen(ib->set->host) + sizeof(":4294967295");
	char *upstream = malloc(len);
	int imap_error, r;

	/* Allocated like the user: a truncated key would share a mapping. */
	if (upstream == NULL)
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	snprintf(upstream, len, "%s:%u", ib->set->host, ib->set->port);
	key.upstream = upstream;
	r = imap_uidmap_snapshot(ib->imap, ib->set->uid_store, &key,
				 uidvalidity, msgs, n, ib->set->size_mode,
				 ib->set->exact_budget_ms, &imap_error, &error);
	free(upstream);
	if (r == 0)
		return 0;
	if (imap_error != MAILIMAP_NO_ERROR && is_session_error(imap_error))
		return session_failed(ib, "UID FETCH", imap_error,
				      BACKEND_TEMP, err);
	log_upstream_error(ib, "unique-id store", error);
	return backend_fail(err, BACKEND_TEMP, "unique-id store unavailable");
}

/* SELECT and the listing through libetpan, for folder names that need
 * its encoder.  0, or -1 with ERR set and SC's entries freed. */
static int select_and_list_slowly(struct imap_backend *ib,
				  struct snapshot_ctx *sc,
				  uint32_t *uidvalidity_r,
				  struct backend_error *err)
{
	char hbuf[128], fbuf[128], sbuf[256];
	int r;

	r = mailimap_select(ib->imap, folder_name(ib));
	if (r != MAILIMAP_NO_ERROR) {
		if (is_session_error(r))
			return session_failed(ib, "SELECT", r, BACKEND_TEMP, err);
		log_warn("event=upstream_error host=%s op=SELECT folder=%s "
			 "response=%s",
			 log_value(hbuf, sizeof(hbuf), ib->set->host),
			 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
			 log_value(sbuf, sizeof(sbuf), server_text(ib)));
		return backend_fail(err, BACKEND_PERM,
				    "upstream folder %s cannot be opened",
				    folder_name(ib));
	}
	*uidvalidity_r = ib->imap->imap_selection_info->sel_uidvalidity;
	if (ib->imap->imap_selection_info->sel_exists > 0) {
		r = fetch_sizes(ib, sc);
		if (r != MAILIMAP_NO_ERROR) {
			free(sc->msgs);
			sc->msgs = NULL;
			if (r == MAILIMAP_ERROR_MEMORY)
				return backend_fail(err, BACKEND_TEMP,
						    "out of memory listing messages");
			if (is_session_error(r))
				return session_failed(ib, "UID FETCH", r,
						      BACKEND_TEMP, err);
			log_upstream_error(ib, "UID FETCH", server_text(ib));
			return backend_fail(err, BACKEND_TEMP,
					    "upstream refused to list messages");
		}
	}
	return 0;
}

static int imap_snapshot(struct backend *be, struct mail_snapshot *snap,
			 struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct snapshot_ctx sc = { 0 };
	size_t out = 0;
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not logged in");
	r = select_and_list(ib, &sc, &snap->uidvalidity, err);
	if (r < 0) {
		free(sc.msgs);
		return -1;
	}
	if (r > 0 && select_and_list_slowly(ib, &sc, &snap->uidvalidity,
					    err) < 0)
		return -1;
	/* Servers answer 1:* in UID order: sort only when one did not.
	 * (qsort(NULL, 0, ...) is undefined, hence count > 1.) */
	if (sc.count > 1 && !entries_sorted(sc.msgs, sc.count))
		qsort(sc.msgs, sc.count, sizeof(*sc.msgs), cmp_entry_uid);
	/* A server may repeat a message in one response: keep it once. */
	for (size_t i = 0; i < sc.count; i++) {
		if (out > 0 && sc.msgs[out - 1].imap_uid == sc.msgs[i].imap_uid)
			continue;
		sc.msgs[out++] = sc.msgs[i];
	}
	if (ib->set->uid_store != NULL &&
	    map_unique_ids(ib, sc.msgs, out, snap->uidvalidity, err) < 0) {
		free(sc.msgs);
		return -1;
	}
	snap->count = out;
	snap->msgs = sc.msgs;
	ib->snap_msgs = sc.msgs;
	ib->snap_count = out;
	return 0;
}

/* --- fetch -------------------------------------------------------------- */

struct fetch_ctx {
	backend_sink_fn *sink;
	void *sink_ctx;
	uint64_t chunk_octets;  /* received in the current range */
	bool stopped;           /* sink has all it wants: discard the rest */
	bool sink_failed;
};

/*
 * Never returns false: that makes libetpan abort the parse and leaves the
 * session unusable.  After the sink stops, the rest of the current range
 * (at most FETCH_CHUNK_MAX) is read and discarded to keep the session.
 */
static bool fetch_body(int att_type, struct mailimap_msg_att_body_section *sec,
		       const char *bytes, size_t len, void *context)
{
	struct fetch_ctx *fc = context;
	int r;

	(void)att_type;
	(void)sec;
	fc->chunk_octets += len;
	if (fc->stopped || len == 0)
		return true;
	r = fc->sink(fc->sink_ctx, bytes, len);
	if (r != 0) {
		fc->stopped = true;
		fc->sink_failed = r < 0;
	}
	return true;
}

enum body_presence {
	BODY_ABSENT, /* no FETCH response with a body for the UID */
	BODY_NIL,    /* BODY[]<o> NIL: past the end, or expunged (offset 0) */
	BODY_STRING, /* a literal or quoted string, possibly empty */
};

static enum body_presence body_for(clist *result, uint32_t uid)
{
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
		const struct mailimap_msg_att_body_section *body = NULL;
		bool uid_match = false, seen_body = false;

		for (clistiter *i2 = clist_begin(att->att_list); i2 != NULL;
		     i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			struct mailimap_msg_att_static *st;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			st = item->att_data.att_static;
			if (st->att_type == MAILIMAP_MSG_ATT_BODY_SECTION) {
				body = st->att_data.att_body_section;
				seen_body = true;
			} else if (st->att_type == MAILIMAP_MSG_ATT_UID &&
				   st->att_data.att_uid == uid) {
				uid_match = true;
			}
		}
		if (seen_body && uid_match)
			return body != NULL && body->sec_body_part != NULL ?
				BODY_STRING : BODY_NIL;
	}
	return BODY_ABSENT;
}

static int fetch_range(struct imap_backend *ib, uint32_t uid, uint32_t offset,
		       uint32_t len, enum body_presence *body_r)
{
	struct mailimap_fetch_type *ft;
	struct mailimap_fetch_att *fa;
	struct mailimap_section *section;
	struct mailimap_set *set;
	clist *result = NULL;
	int r;

	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	set = mailimap_set_new_single(uid);
	section = mailimap_section_new(NULL);
	fa = section != NULL ?
		mailimap_fetch_att_new_body_peek_section_partial(section,
								 offset, len) :
		NULL;
	if (fa == NULL && section != NULL)
		mailimap_section_free(section);
	if (ft == NULL || set == NULL || fa == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft, fa) != 0) {
		if (fa != NULL)
			mailimap_fetch_att_free(fa);
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		if (set != NULL)
			mailimap_set_free(set);
		return MAILIMAP_ERROR_MEMORY;
	}
	r = mailimap_uid_fetch(ib->imap, set, ft, &result);
	*body_r = r == MAILIMAP_NO_ERROR ? body_for(result, uid) : BODY_ABSENT;
	/*
	 * libetpan 1.9 frees the list itself when the FETCH ends in a tagged
	 * NO but leaves *result pointing at it: freeing it again here crashed
	 * the session.
	 */
	if (r == MAILIMAP_NO_ERROR && result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return r;
}

/* Some servers estimate RFC822.SIZE; LIST then advertised a wrong size. */
static void log_size_mismatch(const struct imap_backend *ib,
			      const struct mail_entry *entry, uint64_t actual)
{
	char ubuf[128], fbuf[128];

	log_warn("event=size_mismatch user=%s folder=%s uid=%u "
		 "advertised=%llu delivered=%llu",
		 log_value(ubuf, sizeof(ubuf), ib->user),
		 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
		 entry->imap_uid, (unsigned long long)entry->size,
		 (unsigned long long)actual);
}

/*
 * Small messages read ahead.
 *
 * An Outlook-like client RETRs every message in order, one command at a
 * time; for small messages the upstream round trip and its per-command
 * cost dominate.  A RETR of a small message therefore asks for it and for
 * the small messages that follow it in the snapshot in one UID FETCH, and
 * keeps the others here until they are asked for.  Memory stays bounded:
 * at most PREFETCH_MESSAGES bodies whose advertised sizes add up to at
 * most PREFETCH_BUDGET.  Each is read as BODY.PEEK[]<0.PREFETCH_BODY_MAX>;
 * one that fills that range (a server that under-announced RFC822.SIZE)
 * is not kept, nor is anything past PREFETCH_HELD_MAX octets in all.  A
 * message still reaches the client only whole, terminator after it.
 */
#define PREFETCH_SMALL (64 * 1024)        /* advertised size to qualify */
#define PREFETCH_BODY_MAX (2 * PREFETCH_SMALL)
#define PREFETCH_BUDGET (256 * 1024)     /* advertised octets per read */
#define PREFETCH_HELD_MAX (2 * PREFETCH_BUDGET) /* octets actually held */
#define PREFETCH_MESSAGES 32

struct prefetch_body {
	uint32_t uid;
	size_t len;
	char *data;
};

struct prefetch_cache {
	struct prefetch_body bodies[PREFETCH_MESSAGES];
	size_t count;
	size_t held;            /* octets in bodies[] */
	/* UIDs the last read asked for: one it did not bring (a NO, an
	 * empty or missing body) is read alone, not in another batch. */
	uint32_t asked_first, asked_last;
	/* The body being received (libetpan hands it over in chunks before
	 * the FETCH response's UID is known). */
	char *cur;
	size_t cur_len;
	bool cur_overflow;
};

static void prefetch_cache_clear(struct prefetch_cache *pc)
{
	for (size_t i = 0; i < pc->count; i++)
		free(pc->bodies[i].data);
	pc->count = 0;
	pc->held = 0;
	free(pc->cur);
	pc->cur = NULL;
	pc->cur_len = 0;
	pc->cur_overflow = false;
}

static void prefetch_cache_free(struct prefetch_cache *pc)
{
	if (pc == NULL)
		return;
	prefetch_cache_clear(pc);
	free(pc);
}

/* Whether the last read ahead asked for UID. */
static bool prefetch_asked(const struct prefetch_cache *pc, uint32_t uid)
{
	return pc != NULL && pc->asked_last != 0 &&
	       uid >= pc->asked_first && uid <= pc->asked_last;
}

/* The cached body of UID, or NULL. */
static struct prefetch_body *prefetch_find(struct prefetch_cache *pc,
					   uint32_t uid)
{
	if (pc == NULL)
		return NULL;
	for (size_t i = 0; i < pc->count; i++) {
		if (pc->bodies[i].uid == uid)
			return &pc->bodies[i];
	}
	return NULL;
}

static void prefetch_forget(struct prefetch_cache *pc, struct prefetch_body *b)
{
	pc->held -= b->len;
	free(b->data);
	*b = pc->bodies[--pc->count];
}

static bool prefetch_body_chunk(int att_type,
				struct mailimap_msg_att_body_section *sec,
				const char *bytes, size_t len, void *context)
{
	struct prefetch_cache *pc = context;
	char *grown;

	(void)att_type;
	(void)sec;
	if (len == 0 || pc->cur_overflow)
		return true;
	/* A body that fills the whole range may have been cut short. */
	if (pc->cur_len + len >= PREFETCH_BODY_MAX ||
	    pc->held + pc->cur_len + len > PREFETCH_HELD_MAX) {
		pc->cur_overflow = true;
		return true; /* never false: that would break the session */
	}
	grown = realloc(pc->cur, pc->cur_len + len);
	if (grown == NULL) {
		pc->cur_overflow = true;
		return true;
	}
	memcpy(grown + pc->cur_len, bytes, len);
	pc->cur = grown;
	pc->cur_len += len;
	return true;
}

/* A whole FETCH response: file the body received with it under its UID. */
static void prefetch_att(struct mailimap_msg_att *att, void *context)
{
	struct prefetch_cache *pc = context;
	bool have_uid = false;
	uint32_t uid = 0;

	for (clistiter *it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
		    item->att_data.att_static->att_type ==
		    MAILIMAP_MSG_ATT_UID) {
			uid = item->att_data.att_static->att_data.att_uid;
			have_uid = true;
		}
	}
	/* Empty or NIL bodies are left to the ordinary path, which knows
	 * how to report them. */
	if (have_uid && pc->cur_len > 0 && !pc->cur_overflow &&
	    pc->count < PREFETCH_MESSAGES && prefetch_find(pc, uid) == NULL) {
		pc->bodies[pc->count++] = (struct prefetch_body) {
			.uid = uid, .len = pc->cur_len, .data = pc->cur,
		};
		pc->held += pc->cur_len;
		pc->cur = NULL;
	}
	free(pc->cur);
	pc->cur = NULL;
	pc->cur_len = 0;
	pc->cur_overflow = false;
}

/*
 * The set to read ahead with ENTRY, or NULL when read-ahead does not pay
 * (not a small message, or no small message after it).
 */
static struct mailimap_set *prefetch_set_new(const struct imap_backend *ib,
					     const struct mail_entry *entry,
					     uint32_t *last_uid_r)
{
	struct mailimap_set *set;
	uint64_t budget = entry->size;
	size_t i, n = 1;

	if (entry->size > PREFETCH_SMALL || ib->snap_msgs == NULL ||
	    entry < ib->snap_msgs || entry >= ib->snap_msgs + ib->snap_count)
		return NULL;
	i = (size_t)(entry - ib->snap_msgs) + 1;
	if (i >= ib->snap_count || ib->snap_msgs[i].size > PREFETCH_SMALL)
		return NULL;
	set = mailimap_set_new_single(entry->imap_uid);
	if (set == NULL)
		return NULL;
	for (; i < ib->snap_count && n < PREFETCH_MESSAGES; i++, n++) {
		const struct mail_entry *next = &ib->snap_msgs[i];

		if (next->size > PREFETCH_SMALL ||
		    budget + next->size > PREFETCH_BUDGET)
			break;
		if (mailimap_set_add_single(set, next->imap_uid) != 0) {
			mailimap_set_free(set);
			return NULL;
		}
		budget += next->size;
		*last_uid_r = next->imap_uid;
	}
	return set;
}

/*
 * Read ENTRY and the small messages after it into the cache.  Returns a
 * libetpan code; only session errors matter to the caller, which falls
 * back to the ordinary path whenever ENTRY is not in the cache afterwards.
 */
static int prefetch(struct imap_backend *ib, const struct mail_entry *entry)
{
	struct mailimap_fetch_type *ft = NULL;
	struct mailimap_fetch_att *fa = NULL;
	struct mailimap_section *section;
	struct mailimap_set *set;
	clist *result = NULL;
	uint32_t last_uid = entry->imap_uid;
	int r;

	set = prefetch_set_new(ib, entry, &last_uid);
	if (set == NULL)
		return MAILIMAP_NO_ERROR;
	if (ib->cache == NULL)
		ib->cache = calloc(1, sizeof(*ib->cache));
	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	section = mailimap_section_new(NULL);
	if (section != NULL) {
		/* Bounded by the request, whatever RFC822.SIZE said. */
		fa = mailimap_fetch_att_new_body_peek_section_partial(section,
				0, PREFETCH_BODY_MAX);
		if (fa == NULL)
			mailimap_section_free(section);
	}
	if (ib->cache == NULL || ft == NULL || fa == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft, fa) != 0) {
		if (fa != NULL)
			mailimap_fetch_att_free(fa);
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		mailimap_set_free(set);
		return MAILIMAP_NO_ERROR; /* the ordinary path will do */
	}
	/* What was read ahead before and not asked for is dropped. */
	prefetch_cache_clear(ib->cache);
	/* The snapshot is in UID order and the set a run of it. */
	ib->cache->asked_first = entry->imap_uid;
	ib->cache->asked_last = last_uid;
	mailimap_set_progress_callback(ib->imap, NULL, ignore_progress, NULL);
	mailimap_set_msg_att_handler(ib->imap, prefetch_att, ib->cache);
	mailimap_set_msg_body_handler(ib->imap, prefetch_body_chunk, ib->cache);
	r = mailimap_uid_fetch(ib->imap, set, ft, &result);
	if (ib->imap != NULL) {
		mailimap_set_msg_body_handler(ib->imap, NULL, NULL);
		mailimap_set_msg_att_handler(ib->imap, NULL, NULL);
		mailimap_set_progress_callback(ib->imap, NULL, NULL, NULL);
	}
	if (r == MAILIMAP_NO_ERROR && result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	free(ib->cache->cur);
	ib->cache->cur = NULL;
	ib->cache->cur_len = 0;
	/* A NO (some message expunged meanwhile): trust nothing from it. */
	if (r != MAILIMAP_NO_ERROR)
		prefetch_cache_clear(ib->cache);
	return r;
}

/* Serve ENTRY from the cache entry B, which is then dropped. */
static int send_prefetched(struct imap_backend *ib,
			   const struct mail_entry *entry,
			   struct prefetch_body *b, backend_sink_fn *sink,
			   void *ctx, struct backend_error *err)
{
	int r = sink(ctx, b->data, b->len);

	if (r == 0 && b->len != entry->size)
		log_size_mismatch(ib, entry, b->len);
	prefetch_forget(ib->cache, b);
	if (r < 0)
		return backend_fail(err, BACKEND_SINK, "client write failed");
	return 0;
}

static int imap_fetch(struct backend *be, const struct mail_entry *entry,
		      uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
		      struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct fetch_ctx fc = { .sink = sink, .sink_ctx = ctx };
	struct prefetch_body *b;
	uint64_t delivered = 0, len;
	enum body_presence body;
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not available");
	b = prefetch_find(ib->cache, entry->imap_uid);
	if (b == NULL && first_chunk >= entry->size &&
	    !prefetch_asked(ib->cache, entry->imap_uid)) {
		/* Only a RETR reads ahead; TOP wants a part of one. */
		r = prefetch(ib, entry);
		if (r != MAILIMAP_NO_ERROR && is_session_error(r))
			return session_failed(ib, "UID FETCH", r, BACKEND_TEMP,
					      err);
		b = prefetch_find(ib->cache, entry->imap_uid);
	}
	if (b != NULL)
		return send_prefetched(ib, entry, b, sink, ctx, err);
	len = first_chunk < FETCH_FIRST_MIN ? FETCH_FIRST_MIN : first_chunk;
	for (;;) {
		if (len > FETCH_CHUNK_MAX)
			len = FETCH_CHUNK_MAX;
		if (delivered + len > UINT32_MAX) {
			log_upstream_error(ib, "UID FETCH",
					   "message larger than 4 GiB");
			return backend_fail(err, delivered ? BACKEND_BROKEN :
					    BACKEND_PERM, "message too large");
		}
		fc.chunk_octets = 0;
		mailimap_set_msg_body_handler(ib->imap, fetch_body, &fc);
		r = fetch_range(ib, entry->imap_uid, (uint32_t)delivered,
				(uint32_t)len, &body);
		if (ib->imap != NULL)
			mailimap_set_msg_body_handler(ib->imap, NULL, NULL);

		if (r != MAILIMAP_NO_ERROR) {
			bool started = delivered + fc.chunk_octets > 0;

			if (is_session_error(r))
				return session_failed(ib, "UID FETCH", r,
					started ? BACKEND_BROKEN : BACKEND_TEMP,
					err);
			log_upstream_error(ib, "UID FETCH", server_text(ib));
			if (started)
				return backend_fail(err, BACKEND_BROKEN,
					"upstream failed during the message");
			/* Dovecot answers NO for a message expunged elsewhere. */
			return backend_fail(err, BACKEND_NO_MESSAGE,
				"message no longer exists upstream");
		}
		if (fc.sink_failed)
			return backend_fail(err, BACKEND_SINK,
					    "client write failed");
		if (fc.stopped)
			return 0;
		/*
		 * Dovecot answers "BODY[]<0> NIL" for a message another
		 * client expunged, and nothing at all elsewhere.
		 */
		if (fc.chunk_octets == 0 && delivered == 0 && body != BODY_STRING)
			return backend_fail(err, BACKEND_NO_MESSAGE,
					    "message no longer exists upstream");
		if (body == BODY_ABSENT && fc.chunk_octets == 0) {
			if (delivered == 0)
				return backend_fail(err, BACKEND_NO_MESSAGE,
					"message no longer exists upstream");
			log_upstream_error(ib, "UID FETCH",
					   "message vanished while being read");
			return backend_fail(err, BACKEND_BROKEN,
					    "message vanished upstream");
		}
		delivered += fc.chunk_octets;
		/* A short range is the end; NIL or "" past the end too. */
		if (fc.chunk_octets < len) {
			if (delivered != entry->size)
				log_size_mismatch(ib, entry, delivered);
			return 0;
		}
		/*
		 * Ask for one octet more than the advertised rest so that a
		 * correct RFC822.SIZE ends without an extra empty round trip.
		 */
		len = entry->size >= delivered ? entry->size - delivered + 1 : 0;
		if (len < FETCH_NEXT_MIN)
			len = FETCH_NEXT_MIN;
	}
}

/* --- update ------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Build a compact UID set (ranges) from ENTRIES and, for the audit log, its
 * text ("1:3,7"), truncated with "..." to fit TEXT.  NULL on OOM.
 */
static struct mailimap_set *uid_set_new(const struct mail_entry *const *entries,
					size_t n, char *text, size_t text_size)
{
	struct mailimap_set *set;
	uint32_t *uids;
	size_t used = 0, i = 0;

	text[0] = '\0';
	uids = malloc((n ? n : 1) * sizeof(*uids));
	set = mailimap_set_new_empty();
	if (uids == NULL || set == NULL)
		goto fail;
	for (size_t k = 0; k < n; k++)
		uids[k] = entries[k]->imap_uid;
	qsort(uids, n, sizeof(*uids), cmp_u32);
	while (i < n) {
		size_t j = i;
		int w;

		while (j + 1 < n && (uids[j + 1] == uids[j] ||
				     uids[j + 1] == uids[j] + 1))
			j++;
		if (mailimap_set_add_interval(set, uids[i], uids[j]) != 0)
			goto fail;
		if (used < text_size) {
			w = uids[i] == uids[j] ?
				snprintf(text + used, text_size - used, "%s%u",
					 used ? "," : "", uids[i]) :
				snprintf(text + used, text_size - used, "%s%u:%u",
					 used ? "," : "", uids[i], uids[j]);
			used += (size_t)w;
			if (used >= text_size && text_size > 4)
				memcpy(text + text_size - 4, "...", 4);
		}
		i = j + 1;
	}
	free(uids);
	return set;
fail:
	free(uids);
	if (set != NULL)
		mailimap_set_free(set);
	return NULL;
}

static int store_flag(struct imap_backend *ib, struct mailimap_set *set,
		      struct mailimap_flag *flag)
{
	struct mailimap_flag_list *flags = mailimap_flag_list_new_empty();
	struct mailimap_store_att_flags *store;
	int r;

	if (flags == NULL || flag == NULL ||
	    mailimap_flag_list_add(flags, flag) != 0) {
		if (flag != NULL)
			mailimap_flag_free(flag);
		if (flags != NULL)
			mailimap_flag_list_free(flags);
		return MAILIMAP_ERROR_MEMORY;
	}
	store = mailimap_store_att_flags_new_add_flags_silent(flags);
	if (store == NULL) {
		mailimap_flag_list_free(flags);
		return MAILIMAP_ERROR_MEMORY;
	}
	r = mailimap_uid_store(ib->imap, set, store);
	mailimap_store_att_flags_free(store);
	return r;
}

/* Fail the UPDATE naming what was done before step OP failed with R. */
static int update_failed(struct imap_backend *ib, const char *op, int r,
			 const char *done, struct backend_error *err)
{
	char reason[sizeof(err->text)];

	if (is_session_error(r)) {
		session_failed(ib, op, r, BACKEND_TEMP, err);
	} else {
		log_upstream_error(ib, op, server_text(ib));
		backend_fail(err, BACKEND_TEMP, "upstream %s refused", op);
	}
	snprintf(reason, sizeof(reason), "%s", err->text);
	return backend_fail(err, err->status, "%s; %s", reason, done);
}

static int imap_update(struct backend *be,
		       const struct mail_entry *const *expunge, size_t n_expunge,
		       const struct mail_entry *const *seen, size_t n_seen,
		       struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	char seen_text[512], del_text[512], fbuf[128];
	struct mailimap_set *set;
	int r;

	if (n_seen == 0 && n_expunge == 0)
		return 0;
	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session lost: nothing was changed");
	seen_text[0] = del_text[0] = '\0';

	if (n_seen > 0) {
		set = uid_set_new(seen, n_seen, seen_text, sizeof(seen_text));
		if (set == NULL)
			return backend_fail(err, BACKEND_TEMP,
					    "out of memory: nothing was changed");
		r = store_flag(ib, set, mailimap_flag_new_seen());
		mailimap_set_free(set);
		if (r != MAILIMAP_NO_ERROR)
			return update_failed(ib, "UID STORE \\Seen", r,
					     "nothing was changed", err);
	}
	if (n_expunge == 0)
		goto done;

	set = uid_set_new(expunge, n_expunge, del_text, sizeof(del_text));
	if (set == NULL)
		return backend_fail(err, BACKEND_TEMP,
				    "out of memory: messages marked read, none deleted");
	r = store_flag(ib, set, mailimap_flag_new_deleted());
	if (r != MAILIMAP_NO_ERROR) {
		mailimap_set_free(set);
		return update_failed(ib, "UID STORE \\Deleted", r,
				     "messages marked read, none deleted", err);
	}
	/*
	 * A bare EXPUNGE would also remove messages another client flagged
	 * \Deleted: without UIDPLUS leave ours flagged and say so.
	 */
	if (!mailimap_has_uidplus(ib->imap)) {
		mailimap_set_free(set);
		log_warn("event=upstream_update folder=%s seen=%s flagged_deleted=%s "
			 "expunged=none reason=no_uidplus",
			 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
			 seen_text, del_text);
		return backend_fail(err, BACKEND_PERM,
				    "server lacks UIDPLUS: %zu messages flagged "
				    "\\Deleted but not removed", n_expunge);
	}
	r = mailimap_uid_expunge(ib->imap, set);
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR)
		return update_failed(ib, "UID EXPUNGE", r,
				     "messages flagged \\Deleted but maybe not removed",
				     err);
done:
	log_info("event=upstream_update folder=%s seen=%s expunged=%s",
		 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
		 seen_text[0] ? seen_text : "none",
		 del_text[0] ? del_text : "none");
	return 0;
}

/* --- keepalive and free -------------------------------------------------- */

static int imap_keepalive(struct backend *be, struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	int r;

	if (ib->imap == NULL)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not available");
	r = mailimap_noop(ib->imap);
	if (r == MAILIMAP_NO_ERROR)
		return 0;
	return session_failed(ib, "NOOP", r, BACKEND_TEMP, err);
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
