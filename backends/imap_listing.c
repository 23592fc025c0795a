/*
 * imap_listing.c - the snapshot: SELECT pipelined with the UID and size
 * listing, read by popgate's own parser for that one response, libetpan's
 * SELECT and FETCH for folder names only its encoder can send, and the
 * unique-id store's mapping when one is configured; and the SELECT again
 * after a lost connection, which must find the snapshot's folder.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_internal.h"
#include "imap_reader.h"
#include "imap_uid_fetch.h"
#include "imap_uidmap.h"
#include "log.h"
#include "uidstore_sqlite.h"

struct snapshot_ctx {
	struct mail_entry *msgs;
	size_t count, alloc;
	bool oom;
	/* The unique-id store, opened while the upstream lists (NULL: not
	 * yet, or store_error says why not). */
	struct uidstore *store;
	const char *store_error;
};

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
	mailimap_set_progress_callback(ib->imap, NULL, imap_ignore_progress,
				       NULL);
	mailimap_set_msg_att_handler(ib->imap, snapshot_att, sc);
	r = imap_uid_fetch(ib->imap, set, ft, &result);
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

/*
 * The login's SELECT and size listing, pipelined and parsed here.
 *
 * libetpan's generic parser tries every extension's grammar on every
 * response; for the 10,000 FETCH lines of a big maildrop that was most of
 * the login's time.  The listing's grammar is tiny, so these two commands
 * go out in one write (one round trip instead of two) and their responses
 * are read line by line by imap_reader, in large pieces.  Anything
 * this parser does not understand is a parse error that drops the
 * session, as libetpan's would.
 */

#define LIST_TAG_SELECT "pgsel"
#define LIST_TAG_FETCH "pglst"

struct listing {
	struct snapshot_ctx *sc;
	uint32_t uidvalidity, uidnext, exists;
	int select_state;   /* MAILIMAP_RESP_COND_STATE_*, -1 while pending */
	int fetch_state;
	char text[256];     /* the first failed command's response text */
	struct imap_reader rd;
};

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
		size_t name_len = imap_item_name(p, end);

		p += name_len;
		if (p >= end || *p++ != ' ')
			return MAILIMAP_ERROR_PARSE;
		if (imap_item_is(name, name_len, "UID")) {
			if (!imap_eat_number(&p, end, &uid))
				return MAILIMAP_ERROR_PARSE;
			have_uid = true;
		} else if (imap_item_is(name, name_len, "RFC822.SIZE")) {
			if (!imap_eat_number(&p, end, &size))
				return MAILIMAP_ERROR_PARSE;
			have_size = true;
		} else if (!imap_skip_value(&p, end)) {
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

	/* Nearly every line is "* n FETCH": numbered responses first. */
	if (imap_eat_number(&p, end, &n)) {
		if (imap_eat_word(&p, end, " FETCH "))
			return listing_fetch(ls, p, end);
		if (imap_eat_word(&p, end, " EXISTS") && ls->select_state < 0)
			ls->exists = n;
		return MAILIMAP_NO_ERROR; /* RECENT, EXPUNGE */
	}
	if (imap_eat_word(&p, end, "OK [UIDVALIDITY ")) {
		if (imap_eat_number(&p, end, &n))
			ls->uidvalidity = n;
		return MAILIMAP_NO_ERROR;
	}
	if (imap_eat_word(&p, end, "OK [UIDNEXT ")) {
		if (imap_eat_number(&p, end, &n))
			ls->uidnext = n;
		return MAILIMAP_NO_ERROR;
	}
	if (imap_eat_word(&p, end, "BYE"))
		return MAILIMAP_ERROR_FATAL;
	return MAILIMAP_NO_ERROR; /* FLAGS, OK [...], CAPABILITY ... */
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
	if (imap_eat_word(&p, end, "OK") && (p == end || *p == ' ')) {
		*state = MAILIMAP_RESP_COND_STATE_OK;
		return MAILIMAP_NO_ERROR;
	}
	if (imap_eat_word(&p, end, "NO") && (p == end || *p == ' '))
		*state = MAILIMAP_RESP_COND_STATE_NO;
	else if (imap_eat_word(&p, end, "BAD") && (p == end || *p == ' '))
		*state = MAILIMAP_RESP_COND_STATE_BAD;
	else
		return MAILIMAP_ERROR_PARSE;
	listing_remember_text(ls, p, end);
	return MAILIMAP_NO_ERROR;
}

/*
 * The folder as IMAP sends it: an atom when it is one (as libetpan does),
 * else a quoted string.  False when it can be neither (8-bit, controls):
 * then libetpan's encoder has to do it.
 */
static bool encode_folder(const char *folder, char *buf, size_t size)
{
	size_t len = strlen(folder);
	bool atom = len > 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)folder[i];

		if (c < 0x20 || c > 0x7e || strchr("(){ %*\"\\]", c) != NULL)
			atom = false;
	}
	if (atom && len < size) {
		memcpy(buf, folder, len + 1);
		return true;
	}
	return imap_quote(folder, buf, size);
}

/* The server answered SELECT with NO or BAD, saying TEXT: fail with
 * STATUS.  The client's -ERR names the folder as IMAP does (POP3 responses
 * are ASCII), and says AGAIN when it was opened at login. */
static int select_refused(struct imap_backend *ib, const char *text,
			  enum backend_status status, bool again,
			  struct backend_error *err)
{
	char hbuf[128], fbuf[128], sbuf[256];

	log_warn("event=upstream_error host=%s op=SELECT folder=%s "
		 "response=%s",
		 log_value(hbuf, sizeof(hbuf), ib->set->host),
		 log_value(fbuf, sizeof(fbuf), folder_name(ib)),
		 log_value(sbuf, sizeof(sbuf), text));
	return backend_fail(err, status, "upstream folder %s cannot be opened%s",
			    folder_imap_name(ib), again ? " again" : "");
}

/*
 * Open the unique-id store if there is one and it is not open yet.  The
 * listing calls this once its commands are out, so the open costs the
 * login nothing while the upstream works; a failure waits for
 * map_unique_ids() to report it.
 */
static void open_store(struct imap_backend *ib, struct snapshot_ctx *sc)
{
	if (ib->set->uid_store != NULL && sc->store == NULL &&
	    sc->store_error == NULL)
		sc->store = uidstore_sqlite_open(ib->set->uid_store,
						 &sc->store_error);
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
	open_store(ib, ls->sc);
	/* SELECT closes any mailbox selected before, even when it fails. */
	imap->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	while (ls->fetch_state < 0) {
		const char *line, *p, *end;
		size_t line_len;

		r = imap_reader_line(&ls->rd, &line, &line_len);
		if (r != MAILIMAP_NO_ERROR)
			return r;
		p = line;
		end = line + line_len;
		if (imap_eat_word(&p, end, "* "))
			r = listing_untagged(ls, p, end);
		else if (ls->select_state < 0 &&
			 imap_eat_word(&p, end, LIST_TAG_SELECT " "))
			r = listing_tagged(ls, &ls->select_state, p, end);
		else if (ls->select_state >= 0 &&
			 imap_eat_word(&p, end, LIST_TAG_FETCH " "))
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
	char quoted[1024];
	int r;

	if (!encode_folder(folder_imap_name(ib), quoted, sizeof(quoted)))
		return 1;
	if (imap_reader_init(&ls.rd, ib->imap->imap_stream,
			     IMAP_READER_SMALL_SIZE) !=
	    MAILIMAP_NO_ERROR) {
		imap_reader_free(&ls.rd);
		return backend_fail(err, BACKEND_TEMP,
				    "out of memory listing messages");
	}
	r = listing_run(ib, &ls, quoted);
	if (r == MAILIMAP_NO_ERROR)
		r = imap_reader_give_back(&ls.rd);
	imap_reader_free(&ls.rd);
	if (r != MAILIMAP_NO_ERROR) {
		if (r == MAILIMAP_ERROR_MEMORY)
			return backend_fail(err, BACKEND_TEMP,
					    "out of memory listing messages");
		return session_failed(ib, ls.select_state < 0 ? "SELECT" :
				      "UID FETCH", r, BACKEND_TEMP, err);
	}
	if (ls.select_state != MAILIMAP_RESP_COND_STATE_OK)
		return select_refused(ib, ls.text, BACKEND_PERM, false, err);
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
static int map_unique_ids(struct imap_backend *ib, struct snapshot_ctx *sc,
			  uint32_t uidvalidity, struct backend_error *err)
{
	struct uidstore_key key = { NULL, ib->user, folder_name(ib) };
	const char *error = NULL;
	size_t len = strlen(ib->set->host) + sizeof(":4294967295");
	char *upstream;
	int imap_error, r;

	open_store(ib, sc);
	if (sc->store == NULL) {
		log_upstream_error(ib, "unique-id store", sc->store_error);
		return backend_fail(err, BACKEND_TEMP,
				    "unique-id store unavailable");
	}
	/* Allocated like the user: a truncated key would share a mapping. */
	upstream = malloc(len);
	if (upstream == NULL)
		return backend_fail(err, BACKEND_TEMP, "out of memory");
	snprintf(upstream, len, "%s:%u", ib->set->host, ib->set->port);
	key.upstream = upstream;
	r = imap_uidmap_snapshot(ib->imap, sc->store, &key, uidvalidity,
				 sc->msgs, sc->count, ib->set->size_mode,
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
	int r;

	r = mailimap_select(ib->imap, folder_imap_name(ib));
	if (r != MAILIMAP_NO_ERROR) {
		if (is_session_error(r))
			return session_failed(ib, "SELECT", r, BACKEND_TEMP, err);
		return select_refused(ib, server_text(ib), BACKEND_PERM, false,
				      err);
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

/* SC's entries in UID order, each once, with their unique-ids when there
 * is a store: 0, or -1 with ERR set. */
static int map_snapshot(struct imap_backend *ib, struct snapshot_ctx *sc,
			uint32_t uidvalidity, struct backend_error *err)
{
	size_t out = 0;

	/* Servers answer 1:* in UID order: sort only when one did not.
	 * (qsort(NULL, 0, ...) is undefined, hence count > 1.) */
	if (sc->count > 1 && !entries_sorted(sc->msgs, sc->count))
		qsort(sc->msgs, sc->count, sizeof(*sc->msgs), cmp_entry_uid);
	/* A server may repeat a message in one response: keep it once. */
	for (size_t i = 0; i < sc->count; i++) {
		if (out > 0 &&
		    sc->msgs[out - 1].imap_uid == sc->msgs[i].imap_uid)
			continue;
		sc->msgs[out++] = sc->msgs[i];
	}
	sc->count = out;
	if (ib->set->uid_store == NULL)
		return 0;
	return map_unique_ids(ib, sc, uidvalidity, err);
}

int imap_snapshot(struct backend *be, struct mail_snapshot *snap,
		  struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	struct snapshot_ctx sc = { 0 };
	int r;

	if (ib->imap == NULL || !ib->authenticated)
		return backend_fail(err, BACKEND_TEMP,
				    "upstream session is not logged in");
	r = select_and_list(ib, &sc, &snap->uidvalidity, err);
	if (r == 0 || (r > 0 && select_and_list_slowly(ib, &sc,
							&snap->uidvalidity,
							err) == 0))
		r = map_snapshot(ib, &sc, snap->uidvalidity, err);
	else
		r = -1;
	/* The mapping is done: an idle session keeps no store open. */
	uidstore_close(sc.store);
	if (r < 0) {
		free(sc.msgs);
		return -1;
	}
	snap->count = sc.count;
	snap->msgs = sc.msgs;
	ib->snap_msgs = sc.msgs;
	ib->snap_count = sc.count;
	ib->uidvalidity = snap->uidvalidity;
	ib->have_snapshot = true;
	return 0;
}

int imap_reselect(struct imap_backend *ib, struct backend_error *err)
{
	char fbuf[128];
	uint32_t now;
	int r;

	r = mailimap_select(ib->imap, folder_imap_name(ib));
	if (r != MAILIMAP_NO_ERROR) {
		if (is_session_error(r))
			return session_failed(ib, "SELECT", r, BACKEND_TEMP,
					      err);
		select_refused(ib, server_text(ib), BACKEND_TEMP, true, err);
		drop_connection(ib);
		return -1;
	}
	now = ib->imap->imap_selection_info->sel_uidvalidity;
	if (now == ib->uidvalidity)
		return 0;
	log_warn("event=upstream_resume_refused folder=%s uidvalidity=%u "
		 "was=%u", log_value(fbuf, sizeof(fbuf), folder_name(ib)),
		 now, ib->uidvalidity);
	ib->folder_reset = true;
	drop_connection(ib);
	return backend_fail(err, BACKEND_TEMP,
			    "upstream folder was reset during the session");
}
