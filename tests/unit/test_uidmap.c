/*
 * test_uidmap.c - the unique-id rules (SPEC.md "Unique-ids": X-C0007,
 * X-C0008/C0009, O-C0039/C0040, the uid store mission) over the RAM store,
 * and the fingerprint they rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fingerprint.h"
#include "uidmap.h"
#include "uidstore_ram.h"

/* An upstream folder as the callback sees it: UID -> content. */
struct fake_msg {
	uint32_t imap_uid;
	const char *content;   /* stands for the whole message */
	uint64_t size;
	bool no_final_crlf;
	uint64_t exact_size;   /* what "exact" measures; 0: size */
};

struct fake_folder {
	struct fake_msg msgs[64];
	size_t n;
	size_t asked_fp, asked_size, calls;
	bool exact_budget_spent;  /* answer "size unknown" */
	bool exact;               /* answer exact_size where there is one */
	bool fail;
};

static const struct uidstore_key key = { "imap.example:993", "alice", "INBOX" };

static void folder_add(struct fake_folder *f, uint32_t uid, const char *content)
{
	struct fake_msg *m = &f->msgs[f->n++];

	m->imap_uid = uid;
	m->content = content;
	m->size = 100 + strlen(content);
	m->no_final_crlf = false;
	m->exact_size = 0;
}

static int fake_need(void *ctx, struct uidmap_need *items, size_t n,
		     const char **error_r)
{
	struct fake_folder *f = ctx;

	f->calls++;
	if (f->fail) {
		*error_r = "upstream gone";
		return -1;
	}
	assert_true(n > 0 && n <= UIDMAP_NEED_BATCH);
	for (size_t i = 0; i < n; i++) {
		const struct fake_msg *m = NULL;

		for (size_t k = 0; k < f->n; k++) {
			if (f->msgs[k].imap_uid == items[i].imap_uid)
				m = &f->msgs[k];
		}
		assert_non_null(m);
		assert_int_equal(items[i].upstream_size, m->size);
		if (items[i].want_fingerprint) {
			char hdr[200];
			const char *err;

			f->asked_fp++;
			snprintf(hdr, sizeof(hdr), "Message-ID: <%s@example>\r\n"
				 "Subject: %s\r\n\r\n", m->content, m->content);
			assert_int_equal(fingerprint_compute(hdr, strlen(hdr),
				m->size, m->content, strlen(m->content),
				items[i].fingerprint, &err), 0);
		}
		if (items[i].want_size) {
			f->asked_size++;
			items[i].size_known = !f->exact_budget_spent;
			items[i].size = f->exact && m->exact_size != 0 ?
				m->exact_size :
				m->size + (m->no_final_crlf ? 2 : 0);
		}
	}
	return 0;
}

/* Take a snapshot of F and map it; returns uidmap_assign's result. */
static int login(struct uidstore *st, uint32_t uidvalidity,
		 struct fake_folder *f, struct mail_entry *out)
{
	const char *err = NULL;
	int r;

	for (size_t i = 0; i < f->n; i++) {
		out[i].imap_uid = f->msgs[i].imap_uid;
		out[i].size = f->msgs[i].size;
		out[i].uid = 0;
	}
	r = uidmap_assign(st, &key, uidvalidity, out, f->n, fake_need, f, &err);
	if (r < 0)
		assert_non_null(err);
	return r;
}

/* Every rule that holds for any single snapshot. */
static void check_snapshot(const struct mail_entry *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		assert_true(m[i].uid >= 1 && m[i].uid <= UIDSTORE_ID_MAX);
		if (i > 0)
			assert_true(m[i].uid > m[i - 1].uid);
	}
}

static uint64_t id_of(const struct mail_entry *m, size_t n, uint32_t imap_uid)
{
	for (size_t i = 0; i < n; i++) {
		if (m[i].imap_uid == imap_uid)
			return m[i].uid;
	}
	fail_msg("UID %u not in the snapshot", imap_uid);
	return 0;
}

static size_t write_tx(struct uidstore *st)
{
	return uidstore_ram_stats(st).write_transactions;
}

static void test_first_epoch_serves_uids(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];

	(void)state;
	folder_add(&f, 3, "a");
	folder_add(&f, 7, "b");
	folder_add(&f, 8, "c");
	assert_int_equal(login(st, 1000, &f, m), 0);
	check_snapshot(m, 3);
	assert_int_equal(m[0].uid, 3);
	assert_int_equal(m[1].uid, 7);
	assert_int_equal(m[2].uid, 8);
	assert_int_equal(m[1].size, f.msgs[1].size);
	/* Recorded once each: fingerprint and size in one pass. */
	assert_int_equal(f.asked_fp, 3);
	assert_int_equal(f.asked_size, 3);
	uidstore_close(st);
}

/* O-C0040: the same ids next time, from the mailbox row alone. */
static void test_second_login_same_ids_no_write(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	size_t writes, calls;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	assert_int_equal(login(st, 5, &f, m), 0);
	writes = write_tx(st);
	calls = f.calls;
	assert_int_equal(login(st, 5, &f, m), 0);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[1].uid, 2);
	assert_int_equal(write_tx(st), writes);
	assert_int_equal(f.calls, calls);
	assert_int_equal(uidstore_ram_stats(st).record_reads, 0);
	uidstore_close(st);
}

static void test_new_message_above_all(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	assert_int_equal(login(st, 5, &f, m), 0);
	/* DELE 2 + QUIT, then a delivery. */
	f.n = 1;
	folder_add(&f, 3, "c");
	f.asked_fp = 0;
	assert_int_equal(login(st, 5, &f, m), 0);
	check_snapshot(m, 2);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[1].uid, 3);
	assert_int_equal(f.asked_fp, 1); /* only the new one */
	uidstore_close(st);
}

/* The mission: a rebuilt folder keeps its ids, in id order. */
static void test_uidvalidity_change_preserves_ids(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 }, g = { .n = 0 };
	struct mail_entry m[64];
	uint64_t max_before;

	(void)state;
	folder_add(&f, 10, "a");
	folder_add(&f, 11, "b");
	folder_add(&f, 12, "c");
	folder_add(&f, 13, "d");
	assert_int_equal(login(st, 500, &f, m), 0);
	max_before = m[3].uid;
	/* Rebuilt with a lower UIDVALIDITY, another UID order, one message
	 * gone and one new. */
	folder_add(&g, 1, "c");
	folder_add(&g, 2, "a");
	folder_add(&g, 3, "new");
	folder_add(&g, 4, "d");
	assert_int_equal(login(st, 7, &g, m), 0);
	check_snapshot(m, 4);
	assert_int_equal(id_of(m, 4, 2), 10); /* a */
	assert_int_equal(id_of(m, 4, 1), 12); /* c */
	assert_int_equal(id_of(m, 4, 4), 13); /* d */
	assert_true(id_of(m, 4, 3) > max_before);
	/* Ordered by id: a c d new. */
	assert_int_equal(m[0].imap_uid, 2);
	assert_int_equal(m[1].imap_uid, 1);
	assert_int_equal(m[2].imap_uid, 4);
	assert_int_equal(m[3].imap_uid, 3);

	/* Stable afterwards, without writes. */
	{
		size_t writes = write_tx(st);
		struct mail_entry again[64];

		assert_int_equal(login(st, 7, &g, again), 0);
		for (size_t i = 0; i < 4; i++) {
			assert_int_equal(again[i].uid, m[i].uid);
			assert_int_equal(again[i].imap_uid, m[i].imap_uid);
		}
		assert_int_equal(write_tx(st), writes);
	}
	uidstore_close(st);
}

static void test_new_message_after_epoch_change(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 }, g = { .n = 0 };
	struct mail_entry m[64];
	uint64_t max_id = 0;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 900, "b");
	assert_int_equal(login(st, 1, &f, m), 0);
	folder_add(&g, 1, "b");
	folder_add(&g, 2, "x");
	assert_int_equal(login(st, 2, &g, m), 0);
	check_snapshot(m, 2);
	assert_int_equal(id_of(m, 2, 1), 900);
	max_id = m[1].uid;
	assert_true(max_id > 900);
	folder_add(&g, 3, "y");
	assert_int_equal(login(st, 2, &g, m), 0);
	check_snapshot(m, 3);
	assert_true(id_of(m, 3, 3) > max_id);
	uidstore_close(st);
}

/* X-C0009: two copies, two ids, also after a rebuild. */
static void test_identical_messages_distinct_ids(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 }, g = { .n = 0 };
	struct mail_entry m[64];

	(void)state;
	folder_add(&f, 1, "same");
	folder_add(&f, 2, "same");
	folder_add(&f, 3, "other");
	assert_int_equal(login(st, 1, &f, m), 0);
	check_snapshot(m, 3);
	folder_add(&g, 1, "same");
	folder_add(&g, 2, "other");
	folder_add(&g, 3, "same");
	assert_int_equal(login(st, 2, &g, m), 0);
	check_snapshot(m, 3);
	/* Ambiguous: no copy may take an old id (it could be the other). */
	assert_true(id_of(m, 3, 1) > 3);
	assert_true(id_of(m, 3, 3) > 3);
	assert_int_equal(id_of(m, 3, 2), 3);
	uidstore_close(st);
}

/* X-C0008 after forget: the high-water mark survives. */
static void test_forget_keeps_high_water(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	const char *err;
	size_t count = 0;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 50, "b");
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(uidmap_forget(st, "alice", NULL, NULL, &count, &err), 0);
	assert_int_equal(count, 1);
	assert_int_equal(uidmap_forget(st, "bob", NULL, NULL, &count, &err), 0);
	assert_int_equal(count, 0);
	assert_int_equal(login(st, 1, &f, m), 0);
	check_snapshot(m, 2);
	assert_true(m[0].uid > 50);
	assert_int_equal(m[1].uid - m[0].uid, 49);
	uidstore_close(st);
}

/* uidmap_measure_again() for USER (NULL: all) marks EXPECTED messages. */
static void assert_marked(struct uidstore *st, const char *user,
			  size_t expected)
{
	const char *err;
	size_t count = 99;

	assert_int_equal(uidmap_measure_again(st, user, NULL, NULL, &count,
					      &err), 0);
	assert_int_equal(count, expected);
}

/*
 * A switch to "exact" after the store learned sizes the upstream way:
 * measure_again marks the messages served with the upstream's size (not
 * the corrected one), the next logins measure them within their budget,
 * and no id moves, not even the ones kept across a UIDVALIDITY change.
 */
static void test_measure_again_after_mode_switch(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 }, g = { .n = 0 };
	struct mail_entry m[64];
	uint64_t ids[3];

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	folder_add(&f, 3, "c");
	assert_int_equal(login(st, 1, &f, m), 0);
	/* The folder rebuilt: same messages, new UIDs, ids kept. */
	folder_add(&g, 11, "a");
	folder_add(&g, 12, "b");
	folder_add(&g, 13, "c");
	g.msgs[1].no_final_crlf = true;
	g.msgs[0].exact_size = g.msgs[0].size + 50;
	g.msgs[2].exact_size = g.msgs[2].size + 70;
	assert_int_equal(login(st, 2, &g, m), 0);
	for (size_t i = 0; i < 3; i++)
		ids[i] = m[i].uid;
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[2], 3);
	assert_int_equal(m[1].size, g.msgs[1].size + 2);

	/* The switch alone changes nothing for known messages. */
	g.exact = true;
	g.asked_size = 0;
	assert_int_equal(login(st, 2, &g, m), 0);
	assert_int_equal(g.asked_size, 0);
	assert_int_equal(m[0].size, g.msgs[0].size);

	assert_marked(st, "bob", 0);
	assert_marked(st, NULL, 2); /* "b" has its corrected size already */

	/* Out of budget: asked, and served as before meanwhile. */
	g.exact_budget_spent = true;
	assert_int_equal(login(st, 2, &g, m), 0);
	assert_int_equal(g.asked_size, 2);
	assert_int_equal(m[0].size, g.msgs[0].size);
	g.exact_budget_spent = false;
	g.asked_size = 0;
	assert_int_equal(login(st, 2, &g, m), 0);
	assert_int_equal(g.asked_size, 2);
	assert_int_equal(m[0].size, g.msgs[0].exact_size);
	assert_int_equal(m[1].size, g.msgs[1].size + 2);
	assert_int_equal(m[2].size, g.msgs[2].exact_size);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(m[i].uid, ids[i]);

	/* Measured once: cached, and nothing left to mark. */
	g.asked_size = 0;
	assert_int_equal(login(st, 2, &g, m), 0);
	assert_int_equal(g.asked_size, 0);
	assert_int_equal(m[2].size, g.msgs[2].exact_size);
	assert_marked(st, "alice", 0);
	uidstore_close(st);
}

/* X 2.1.4: size corrections are learned once and cached. */
static void test_size_corrections_cached(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	f.msgs[1].no_final_crlf = true;
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[0].size, f.msgs[0].size);
	assert_int_equal(m[1].size, f.msgs[1].size + 2);
	f.asked_size = 0;
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[1].size, f.msgs[1].size + 2);
	assert_int_equal(f.asked_size, 0);
	uidstore_close(st);
}

/* "exact" mode out of budget: upstream size now, computed next time. */
static void test_pending_exact_size_asked_again(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	size_t writes;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	f.msgs[0].no_final_crlf = true;
	f.exact_budget_spent = true;
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[0].size, f.msgs[0].size);
	f.asked_size = 0;
	f.asked_fp = 0;
	f.exact_budget_spent = false;
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(f.asked_size, 2);
	assert_int_equal(f.asked_fp, 0);
	assert_int_equal(m[0].size, f.msgs[0].size + 2);
	f.asked_size = 0;
	writes = write_tx(st);
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(f.asked_size, 0);
	assert_int_equal(write_tx(st), writes);
	assert_int_equal(m[0].size, f.msgs[0].size + 2);
	uidstore_close(st);
}

/* A vanished message's record goes, so a later copy cannot take its id. */
static void test_vanished_messages_pruned(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 }, g = { .n = 0 };
	struct mail_entry m[64];
	size_t writes;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	folder_add(&f, 3, "c");
	assert_int_equal(login(st, 1, &f, m), 0);
	f.msgs[1] = f.msgs[2];
	f.n = 2;
	writes = write_tx(st);
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(write_tx(st), writes + 1);
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(write_tx(st), writes + 1);
	/* "b" comes back after a rebuild: not the deleted message's id. */
	folder_add(&g, 1, "a");
	folder_add(&g, 2, "b");
	folder_add(&g, 3, "c");
	assert_int_equal(login(st, 2, &g, m), 0);
	assert_int_equal(id_of(m, 3, 1), 1);
	assert_int_equal(id_of(m, 3, 3), 3);
	assert_true(id_of(m, 3, 2) > 3);
	uidstore_close(st);
}

/* A snapshot older than the store's knowledge does not prune. */
static void test_older_snapshot_does_not_prune(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	size_t writes;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	assert_int_equal(login(st, 1, &f, m), 0);
	writes = write_tx(st);
	f.n = 1;
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(write_tx(st), writes);
	uidstore_close(st);
}

static void test_id_space_exhausted_fails_cleanly(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	struct uidstore_mailbox mb = { 0 };
	const char *err;

	(void)state;
	mb.uidvalidity = 0;
	mb.high_water = UIDSTORE_ID_MAX - 5;
	assert_int_equal(st->ops->begin(st, true, &err), 0);
	assert_int_equal(st->ops->mailbox_put(st, &key, &mb, &err), 0);
	assert_int_equal(st->ops->commit(st, &err), 0);
	folder_add(&f, 5, "a");
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[0].uid, UIDSTORE_ID_MAX);
	folder_add(&f, 6, "b");
	assert_int_equal(login(st, 1, &f, m), -1);
	uidstore_close(st);
}

static void test_errors_are_values(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];
	const char *err = NULL;

	(void)state;
	folder_add(&f, 1, "a");
	folder_add(&f, 2, "b");
	f.fail = true;
	assert_int_equal(login(st, 1, &f, m), -1);
	f.fail = false;
	uidstore_ram_fail_write(st, 3);
	assert_int_equal(login(st, 1, &f, m), -1);
	assert_int_equal(login(st, 1, &f, m), 0);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[1].uid, 2);
	/* Not ascending: refused. */
	m[0].imap_uid = 2;
	m[1].imap_uid = 1;
	assert_int_equal(uidmap_assign(st, &key, 1, m, 2, fake_need, &f, &err),
			 -1);
	assert_int_equal(uidmap_assign(st, &key, 0, m, 0, fake_need, &f, &err),
			 -1);
	uidstore_close(st);
}

static void test_empty_folder(void **state)
{
	struct uidstore *st = uidstore_ram_new();
	struct fake_folder f = { .n = 0 };
	struct mail_entry m[64];

	(void)state;
	assert_int_equal(login(st, 9, &f, m), 0);
	assert_int_equal(login(st, 9, &f, m), 0);
	folder_add(&f, 4, "a");
	assert_int_equal(login(st, 9, &f, m), 0);
	assert_int_equal(m[0].uid, 4);
	uidstore_close(st);
}

static void fp(const char *hdr, uint64_t size, const char *body,
	       unsigned char out[FINGERPRINT_LEN])
{
	const char *err;

	assert_int_equal(fingerprint_compute(hdr, strlen(hdr), size, body,
					     strlen(body), out, &err), 0);
}

static void test_fingerprint_normalisation(void **state)
{
	unsigned char a[FINGERPRINT_LEN], b[FINGERPRINT_LEN];

	(void)state;
	fp("Message-ID: <1@x>\r\nSubject: hello  world\r\nFrom: A <a@x>\r\n"
	   "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n", 10, "body\r\n", a);
	/* Other order, folding, case of names, LF only, extra fields. */
	fp("date: Mon, 1 Jan 2024\n 00:00:00 +0000\nX-Other: 1\n"
	   "FROM:   A <a@x>\nsubject: hello\n\tworld\nMESSAGE-ID:<1@x>\n",
	   10, "body\n", b);
	assert_memory_equal(a, b, FINGERPRINT_LEN);
	/* Each part matters. */
	fp("Message-ID: <1@x>\r\nSubject: hello world\r\nFrom: A <a@x>\r\n"
	   "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", 11, "body\r\n", b);
	assert_memory_not_equal(a, b, FINGERPRINT_LEN);
	fp("Message-ID: <1@x>\r\nSubject: hello world\r\nFrom: A <a@x>\r\n"
	   "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", 10, "Body\r\n", b);
	assert_memory_not_equal(a, b, FINGERPRINT_LEN);
	fp("Message-ID: <2@x>\r\nSubject: hello world\r\nFrom: A <a@x>\r\n"
	   "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", 10, "body\r\n", b);
	assert_memory_not_equal(a, b, FINGERPRINT_LEN);
	/* A value cannot leak into the next field. */
	fp("Subject: ab\r\nFrom: c\r\n", 1, "", a);
	fp("Subject: a\r\nFrom: bc\r\n", 1, "", b);
	assert_memory_not_equal(a, b, FINGERPRINT_LEN);
	/* Only the first occurrence and the first KiB count. */
	fp("Subject: s\r\n", 1, "", a);
	fp("Subject: s\r\nSubject: t\r\n", 1, "", b);
	assert_memory_equal(a, b, FINGERPRINT_LEN);
	{
		char big1[3000], big2[3000];

		memset(big1, 'x', sizeof(big1) - 1);
		big1[sizeof(big1) - 1] = '\0';
		memcpy(big2, big1, sizeof(big2));
		big2[2000] = 'y';
		fp("", 1, big1, a);
		fp("", 1, big2, b);
		assert_memory_equal(a, b, FINGERPRINT_LEN);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_epoch_serves_uids),
		cmocka_unit_test(test_second_login_same_ids_no_write),
		cmocka_unit_test(test_new_message_above_all),
		cmocka_unit_test(test_uidvalidity_change_preserves_ids),
		cmocka_unit_test(test_new_message_after_epoch_change),
		cmocka_unit_test(test_identical_messages_distinct_ids),
		cmocka_unit_test(test_forget_keeps_high_water),
		cmocka_unit_test(test_measure_again_after_mode_switch),
		cmocka_unit_test(test_size_corrections_cached),
		cmocka_unit_test(test_pending_exact_size_asked_again),
		cmocka_unit_test(test_vanished_messages_pruned),
		cmocka_unit_test(test_older_snapshot_does_not_prune),
		cmocka_unit_test(test_id_space_exhausted_fails_cleanly),
		cmocka_unit_test(test_errors_are_values),
		cmocka_unit_test(test_empty_folder),
		cmocka_unit_test(test_fingerprint_normalisation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
