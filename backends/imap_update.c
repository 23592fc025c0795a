/*
 * imap_update.c - the POP3 UPDATE state upstream: UID STORE \Seen and
 * \Deleted over compact UID sets, then UID EXPUNGE (UIDPLUS only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_internal.h"
#include "log.h"

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

/* One attempt at imap_update() on the current connection. */
static int update_once(struct imap_backend *ib,
		       const struct mail_entry *const *expunge,
		       size_t n_expunge,
		       const struct mail_entry *const *seen, size_t n_seen,
		       struct backend_error *err)
{
	char seen_text[512], del_text[512], fbuf[128];
	const char *none_deleted;
	struct mailimap_set *set;
	int r;

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
	none_deleted = n_seen > 0 ? "messages marked read, none deleted" :
		"nothing was changed";
	/* UIDPLUS decides below; a login OK may not have said. */
	r = imap_learn_capabilities(ib);
	if (r != MAILIMAP_NO_ERROR)
		return update_failed(ib, "CAPABILITY", r, none_deleted, err);

	set = uid_set_new(expunge, n_expunge, del_text, sizeof(del_text));
	if (set == NULL)
		return backend_fail(err, BACKEND_TEMP, "out of memory: %s",
				    none_deleted);
	r = store_flag(ib, set, mailimap_flag_new_deleted());
	if (r != MAILIMAP_NO_ERROR) {
		mailimap_set_free(set);
		return update_failed(ib, "UID STORE \\Deleted", r,
				     none_deleted, err);
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

int imap_update(struct backend *be,
		const struct mail_entry *const *expunge, size_t n_expunge,
		const struct mail_entry *const *seen, size_t n_seen,
		struct backend_error *err)
{
	struct imap_backend *ib = (struct imap_backend *)be;
	char reason[sizeof(err->text)];
	int r;

	if (n_seen == 0 && n_expunge == 0)
		return 0;
	if (imap_resume(ib, err) < 0) {
		snprintf(reason, sizeof(reason), "%s", err->text);
		return backend_fail(err, err->status,
				    "%s: nothing was changed", reason);
	}
	r = update_once(ib, expunge, n_expunge, seen, n_seen, err);
	/*
	 * Every step is by UID and may be repeated (flags already set stay
	 * set, UIDs already expunged are skipped), so a connection lost part
	 * way through is resumed and the whole update done again.
	 */
	if (r < 0 && imap_retry_possible(ib, err)) {
		snprintf(reason, sizeof(reason), "%s", err->text);
		if (imap_resume(ib, err) < 0)
			return backend_fail(err, err->status, "%s", reason);
		r = update_once(ib, expunge, n_expunge, seen, n_seen, err);
	}
	return r;
}
