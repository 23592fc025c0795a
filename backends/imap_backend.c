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
 * AUTHENTICATE PLAIN by hand, with a continuation rather than SASL-IR:
 * libetpan's mailimap_authenticate() needs Cyrus SASL and its plugin
 * packages at run time for a mechanism that is one base64 line.
 * Returns a libetpan code: NO_ERROR, ERROR_LOGIN (refused) or a session
 * error.
 */
static int authenticate_plain(struct imap_backend *ib, const char *user,
			      const char *pass)
{
	static const char command[] = "AUTHENTICATE PLAIN\r\n";
	mailimap *imap = ib->imap;
	struct mailimap_response *response = NULL;
	size_t ulen = strlen(user), plen = strlen(pass);
	size_t rawlen = ulen + plen + 2;
	unsigned char *raw;
	char *line, *b64;
	int r, state;

	r = mailimap_send_current_tag(imap);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	if (mailstream_write(imap->imap_stream, command, sizeof(command) - 1) < 0 ||
	    mailstream_flush(imap->imap_stream) < 0)
		return MAILIMAP_ERROR_STREAM;
	line = mailimap_read_line(imap);
	if (line == NULL)
		return MAILIMAP_ERROR_STREAM;

	if (line[0] == '+') {
		raw = malloc(rawlen);
		b64 = malloc(4 * ((rawlen + 2) / 3) + 3);
		if (raw == NULL || b64 == NULL) {
			free(raw);
			free(b64);
			return MAILIMAP_ERROR_MEMORY;
		}
		/* authzid empty, authcid, password (RFC 4616). */
		raw[0] = '\0';
		memcpy(raw + 1, user, ulen);
		raw[1 + ulen] = '\0';
		memcpy(raw + 2 + ulen, pass, plen);
		int n = EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
		memcpy(b64 + n, "\r\n", 2);
		r = mailstream_write(imap->imap_stream, b64, (size_t)n + 2) < 0 ||
		    mailstream_flush(imap->imap_stream) < 0;
		OPENSSL_cleanse(raw, rawlen);
		OPENSSL_cleanse(b64, (size_t)n + 2);
		free(raw);
		free(b64);
		if (r != 0)
			return MAILIMAP_ERROR_STREAM;
		if (mailimap_read_line(imap) == NULL)
			return MAILIMAP_ERROR_STREAM;
	}
	/* Either the reply to our credentials or an early tagged NO/BAD. */
	r = mailimap_parse_response(imap, &response);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	state = response->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state->rsp_type;
	mailimap_response_free(response);
	if (state != MAILIMAP_RESP_COND_STATE_OK)
		return MAILIMAP_ERROR_LOGIN;
	imap->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	return MAILIMAP_NO_ERROR;
}

/* One authentication on the current connection; a libetpan code. */
static int try_login(struct imap_backend *ib, const char *user,
		     const char *pass)
{
	if (mailimap_has_authentication(ib->imap, "PLAIN")) {
		forget_capabilities(ib);
		return authenticate_plain(ib, user, pass);
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
	if (!have_uid || !have_size || sc->oom)
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
	if (result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (r == MAILIMAP_NO_ERROR && sc->oom)
		return MAILIMAP_ERROR_MEMORY;
	return r;
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

static int imap_snapshot(struct backend *be, struct mail_snapshot *snap,
			 struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct snapshot_ctx sc = { 0 };
	char hbuf[128], fbuf[128], sbuf[256];
	size_t out = 0;
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not logged in");
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
	snap->uidvalidity = ib->imap->imap_selection_info->sel_uidvalidity;
	if (ib->imap->imap_selection_info->sel_exists > 0) {
		r = fetch_sizes(ib, &sc);
		if (r != MAILIMAP_NO_ERROR) {
			free(sc.msgs);
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
	if (sc.count > 1) /* qsort(NULL, 0, ...) is undefined */
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
	if (result != NULL)
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

static int imap_fetch(struct backend *be, const struct mail_entry *entry,
		      uint64_t first_chunk, backend_sink_fn *sink, void *ctx,
		      struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct fetch_ctx fc = { .sink = sink, .sink_ctx = ctx };
	uint64_t delivered = 0, len;
	enum body_presence body;
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not available");
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
