/*
 * imap_login.c - connecting and logging in: the greeting, STARTTLS,
 * CAPABILITY, AUTHENTICATE PLAIN (or LOGIN) and the RFC 2971 ID that
 * forwards the client's address; and doing it again when the connection
 * is lost in the middle of a session.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "imap_internal.h"
#include "imap_reader.h"
#include "log.h"

#define STREAM_BUFFER_SIZE 8192

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

int imap_learn_capabilities(struct imap_backend *ib)
{
	struct mailimap_capability_data *caps = NULL;
	int r;

	if (have_capabilities(ib))
		return MAILIMAP_NO_ERROR;
	r = mailimap_capability(ib->imap, &caps);
	if (r == MAILIMAP_NO_ERROR)
		mailimap_capability_data_free(caps);
	return r;
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

static bool write_text(mailstream *stream, const char *s)
{
	return mailstream_write(stream, s, strlen(s)) >= 0;
}

/*
 * RFC 2971 ID so the upstream applies per-IP policy to the real client.
 * It is only written here, not sent: it goes out in one write with the
 * login that follows, and client_id_answer() reads its answer first, so
 * forwarding the address costs no round trip.  RFC 3501 lets a client
 * send commands without waiting, and ID's answer changes nothing the
 * login depends on.
 */
static int queue_client_id(struct imap_backend *ib, struct backend_error *err)
{
	mailstream *stream = ib->imap->imap_stream;
	char ip[NI_MAXHOST + 8], port[16];

	if (!ib->set->forward_client_ip || ib->origin == NULL ||
	    ib->origin->ip == NULL)
		return 0;
	/* A numeric host always quotes. */
	if (!mailimap_has_id(ib->imap) ||
	    !imap_quote(ib->origin->ip, ip, sizeof(ip)))
		return 0;
	snprintf(port, sizeof(port), "\"%u\"", ib->origin->port);
	if (mailimap_send_current_tag(ib->imap) != MAILIMAP_NO_ERROR ||
	    !write_text(stream, "ID (\"x-originating-ip\" ") ||
	    !write_text(stream, ip) ||
	    !write_text(stream, " \"x-originating-port\" ") ||
	    !write_text(stream, port) || !write_text(stream, ")\r\n"))
		return session_failed(ib, "ID", MAILIMAP_ERROR_STREAM,
				      BACKEND_TEMP, err);
	snprintf(ib->id_tag, sizeof(ib->id_tag), "%d", ib->imap->imap_tag);
	return 0;
}

/*
 * The answer to the ID queue_client_id() wrote, read once the login's
 * command has gone out with it; a libetpan code.  A refused ID costs only
 * the per-IP accounting, so NO and BAD are logged and the login goes on.
 */
static int client_id_answer(struct imap_backend *ib)
{
	struct imap_reader rd;
	const char *line, *p, *end;
	char text[256];
	size_t len;
	int r;

	if (ib->id_tag[0] == '\0')
		return MAILIMAP_NO_ERROR;
	r = imap_reader_init(&rd, ib->imap->imap_stream,
			     IMAP_READER_SMALL_SIZE);
	while (r == MAILIMAP_NO_ERROR) {
		r = imap_reader_line(&rd, &line, &len);
		if (r != MAILIMAP_NO_ERROR)
			break;
		p = line;
		end = line + len;
		if (imap_eat_word(&p, end, "* BYE")) {
			r = MAILIMAP_ERROR_FATAL;
		} else if (imap_eat_word(&p, end, "* ")) {
			continue; /* the server's own ID, or anything untagged */
		} else if (!imap_eat_word(&p, end, ib->id_tag) ||
			   !imap_eat_word(&p, end, " ")) {
			r = MAILIMAP_ERROR_PROTOCOL;
		} else {
			if (!imap_eat_word(&p, end, "OK")) {
				snprintf(text, sizeof(text), "%.*s",
					 (int)(end - p), p);
				log_upstream_error(ib, "ID", text);
			}
			r = imap_reader_give_back(&rd);
			break;
		}
	}
	imap_reader_free(&rd);
	ib->id_tag[0] = '\0';
	return r;
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
	return queue_client_id(ib, err);
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
	r = client_id_answer(ib);
	if (r != MAILIMAP_NO_ERROR)
		goto out;
	r = MAILIMAP_ERROR_STREAM;
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

/*
 * A login the server refused, by its RFC 5530 code: a wrong password (no
 * code, AUTHENTICATIONFAILED...) is [AUTH], which makes a client such as
 * Outlook ask its user for the password again and counts towards the
 * failed-login limits; a server that cannot log anybody in just now must
 * not be taken for one.  Always -1, with ERR set.
 */
static int login_refused(struct imap_backend *ib, struct backend_error *err)
{
	static const struct {
		const char *code;
		enum backend_status status;
		const char *text;
	} refusals[] = {
		{ "UNAVAILABLE", BACKEND_TEMP, "upstream cannot log in now" },
		{ "SERVERBUG", BACKEND_TEMP, "upstream cannot log in now" },
		{ "LIMIT", BACKEND_TEMP, "upstream connection limit reached" },
		{ "INUSE", BACKEND_IN_USE, "mailbox in use upstream" },
		{ "CONTACTADMIN", BACKEND_PERM,
		  "upstream refuses this account, contact the administrator" },
		{ "PRIVACYREQUIRED", BACKEND_PERM,
		  "upstream requires an encrypted connection" },
	};
	const char *code = server_code(ib);

	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		if (strcasecmp(code, refusals[i].code) == 0)
			return backend_fail(err, refusals[i].status, "%s",
					    refusals[i].text);
	}
	return backend_fail(err, BACKEND_AUTH, "authentication failed");
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
	/* libetpan's LOGIN reads its answer itself: ID's must go first. */
	if (ib->id_tag[0] != '\0') {
		int r = mailstream_flush(ib->imap->imap_stream) < 0 ?
			MAILIMAP_ERROR_STREAM : client_id_answer(ib);

		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
	return mailimap_login(ib->imap, user, pass);
}

int imap_login(struct backend *be, const char *user, const char *pass,
	       struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct backend_error ignored;
	char ubuf[128], cbuf[64], sbuf[256];
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
		log_info("event=upstream_login_failed user=%s code=%s "
			 "response=%s", log_value(ubuf, sizeof(ubuf), user),
			 log_value(cbuf, sizeof(cbuf), server_code(ib)),
			 log_value(sbuf, sizeof(sbuf), server_text(ib)));
		login_refused(ib, err);
		/* A retry needs the pre-login capabilities again; if that
		 * fails the session is dropped and the retry reconnects. */
		refresh_capabilities(ib, &ignored);
		return -1;
	}
	if (r != MAILIMAP_NO_ERROR)
		return session_failed(ib, "login", r, BACKEND_TEMP, err);
	free(ib->user);
	if ((ib->user = strdup(user)) == NULL) {
		drop_connection(ib);
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	}
	/* Without a copy (no memory) a lost connection is not resumed. */
	if (ib->set->reconnect && ib->pass == NULL)
		ib->pass = strdup(pass);
	/* A login OK without the server's new capabilities (Exchange's)
	 * leaves them unknown until UPDATE needs UIDPLUS: most sessions
	 * delete nothing, and asking now would cost each a round trip. */
	ib->authenticated = true;
	return 0;
}

/* --- resuming a session ------------------------------------------------- */

bool imap_resumable(const struct imap_backend *ib)
{
	return ib->pass != NULL && ib->have_snapshot && !ib->folder_reset &&
		ib->resumes < IMAP_RESUME_MAX;
}

bool imap_retry_possible(const struct imap_backend *ib,
			 const struct backend_error *err)
{
	return ib->imap == NULL && err->status == BACKEND_TEMP &&
		imap_resumable(ib);
}

int imap_resume(struct imap_backend *ib, struct backend_error *err)
{
	char fbuf[128];
	int r;

	if (ib->imap != NULL && ib->authenticated)
		return 0;
	if (!imap_resumable(ib))
		return backend_fail(err, BACKEND_TEMP, ib->folder_reset ?
				    "upstream folder was reset during the session" :
				    "upstream session is not available");
	ib->resumes++;
	drop_connection(ib);
	if (connect_upstream(ib, err) < 0)
		return -1;
	r = try_login(ib, ib->user, ib->pass);
	if (r == MAILIMAP_ERROR_LOGIN) {
		log_upstream_error(ib, "login", server_text(ib));
		drop_connection(ib);
		return backend_fail(err, BACKEND_TEMP,
				    "upstream refused the login again");
	}
	if (r != MAILIMAP_NO_ERROR)
		return session_failed(ib, "login", r, BACKEND_TEMP, err);
	ib->authenticated = true;
	if (imap_reselect(ib, err) < 0)
		return -1;
	log_info("event=upstream_reconnected folder=%s attempt=%u",
		 log_value(fbuf, sizeof(fbuf), folder_name(ib)), ib->resumes);
	return 0;
}
