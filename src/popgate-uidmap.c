/*
 * popgate-uidmap - look at and manage the unique-id store (issue 5).
 *
 *   popgate-uidmap [-s STORE] show USER
 *   popgate-uidmap [-s STORE] export [USER]
 *   popgate-uidmap [-s STORE] forget [-u UPSTREAM] [-f FOLDER] USER
 *   popgate-uidmap [-s STORE] measure [-u UPSTREAM] [-f FOLDER] [USER]
 *
 * Everything goes through uidstore.h/uidmap.h, so the tool sees exactly
 * what the daemon sees and forget keeps the high-water mark.  See
 * popgate-uidmap(8).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uidmap.h"
#include "uidstore.h"
#include "uidstore_sqlite.h"

#define DEFAULT_STORE "/var/lib/popgate/uids.db"

enum { EXIT_USAGE = 2 };

static void usage(FILE *out)
{
	fprintf(out,
		"usage: popgate-uidmap [-s STORE] show USER\n"
		"       popgate-uidmap [-s STORE] export [USER]\n"
		"       popgate-uidmap [-s STORE] forget [-u UPSTREAM] [-f FOLDER] USER\n"
		"       popgate-uidmap [-s STORE] measure [-u UPSTREAM] [-f FOLDER] [USER]\n"
		"STORE defaults to %s\n", DEFAULT_STORE);
}

/* Text fields for a tab-separated line: escape what would break it. */
static void put_field(FILE *out, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\\')
			fputs("\\\\", out);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			fputc(c, out);
	}
}

struct listing {
	struct uidstore *st;
	bool export;
	size_t mailboxes;
	const char *error;
};

static int show_mailbox(struct listing *l, const struct uidstore_key *key,
			const struct uidstore_mailbox *mb)
{
	struct uidstore_exception *exc = NULL;
	size_t n_exc = 0, explicit_ids = 0, sizes = 0, pending = 0;

	if (l->st->ops->exceptions_get(l->st, mb->mailbox_id, &exc, &n_exc,
				       &l->error) < 0)
		return -1;
	for (size_t i = 0; i < n_exc; i++) {
		explicit_ids += exc[i].id != 0;
		sizes += exc[i].has_size;
		pending += exc[i].size_pending;
	}
	free(exc);
	fputs("upstream=", stdout);
	put_field(stdout, key->upstream);
	fputs(" folder=", stdout);
	put_field(stdout, key->folder);
	if (mb->uidvalidity == 0)
		fputs(" uidvalidity=none", stdout);
	else
		printf(" uidvalidity=%u", mb->uidvalidity);
	printf(" offset=%llu last_uid=%u messages=%llu high_water=%llu"
	       " kept_ids=%zu size_corrections=%zu sizes_pending=%zu\n",
	       (unsigned long long)mb->offset, mb->last_uid,
	       (unsigned long long)mb->known,
	       (unsigned long long)mb->high_water, explicit_ids, sizes,
	       pending);
	return 0;
}

/* One line per known message: user upstream folder uidvalidity uid id size
 * ("-" when the upstream size is served). */
static int export_mailbox(struct listing *l, const struct uidstore_key *key,
			  const struct uidstore_mailbox *mb)
{
	struct uidstore_record *rec = NULL;
	struct uidstore_exception *exc = NULL;
	size_t n_rec = 0, n_exc = 0, j = 0;

	if (l->st->ops->records_get(l->st, mb->mailbox_id, &rec, &n_rec,
				    &l->error) < 0)
		return -1;
	if (l->st->ops->exceptions_get(l->st, mb->mailbox_id, &exc, &n_exc,
				       &l->error) < 0) {
		free(rec);
		return -1;
	}
	for (size_t i = 0; i < n_rec; i++) {
		while (j < n_exc && exc[j].imap_uid < rec[i].imap_uid)
			j++;
		put_field(stdout, key->user);
		putchar('\t');
		put_field(stdout, key->upstream);
		putchar('\t');
		put_field(stdout, key->folder);
		printf("\t%u\t%u\t%llu\t", mb->uidvalidity, rec[i].imap_uid,
		       (unsigned long long)rec[i].id);
		if (j < n_exc && exc[j].imap_uid == rec[i].imap_uid &&
		    exc[j].has_size)
			printf("%llu\n", (unsigned long long)exc[j].size);
		else
			puts("-");
	}
	free(rec);
	free(exc);
	return 0;
}

static int list_one(void *ctx, const struct uidstore_key *key,
		    const struct uidstore_mailbox *mb)
{
	struct listing *l = ctx;

	l->mailboxes++;
	return l->export ? export_mailbox(l, key, mb) :
			   show_mailbox(l, key, mb);
}

static int cmd_list(struct uidstore *st, const char *user, bool export)
{
	struct listing l = { .st = st, .export = export };
	const char *error = NULL;
	int r;

	if (st->ops->begin(st, false, &error) < 0) {
		fprintf(stderr, "popgate-uidmap: %s\n", error);
		return EXIT_FAILURE;
	}
	r = st->ops->mailbox_list(st, user, list_one, &l, &error);
	st->ops->rollback(st);
	if (r < 0 || l.error != NULL) {
		fprintf(stderr, "popgate-uidmap: %s\n",
			l.error != NULL ? l.error : error);
		return EXIT_FAILURE;
	}
	if (fflush(stdout) != 0) {
		perror("popgate-uidmap: stdout");
		return EXIT_FAILURE;
	}
	if (!export && l.mailboxes == 0) {
		fprintf(stderr, "popgate-uidmap: no mapping for this user\n");
		return EXIT_FAILURE;
	}
	return EXIT_SUCCESS;
}

/* forget and measure: [-u UPSTREAM] [-f FOLDER] USER, where measure may
 * leave USER out (every user). */
static int cmd_change(struct uidstore *st, bool forget, int argc, char **argv)
{
	const char *upstream = NULL, *folder = NULL, *user, *error = NULL;
	size_t count = 0;
	int c, r;

	optind = 1;
	while ((c = getopt(argc, argv, "u:f:")) != -1) {
		switch (c) {
		case 'u':
			upstream = optarg;
			break;
		case 'f':
			folder = optarg;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1 || (forget && argc - optind != 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	user = optind < argc ? argv[optind] : NULL;
	r = forget ? uidmap_forget(st, user, upstream, folder, &count, &error) :
		uidmap_measure_again(st, user, upstream, folder, &count,
				     &error);
	if (r < 0) {
		fprintf(stderr, "popgate-uidmap: %s\n", error);
		return EXIT_FAILURE;
	}
	if (forget)
		printf("forgot %zu mailbox%s (high-water marks kept)\n", count,
		       count == 1 ? "" : "es");
	else
		printf("%zu message%s to be measured at the next logins\n",
		       count, count == 1 ? "" : "s");
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_STORE, *error = NULL, *cmd;
	struct uidstore *st;
	int c, ret;

	while ((c = getopt(argc, argv, "+s:h")) != -1) {
		switch (c) {
		case 's':
			path = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if ((strcmp(cmd, "show") == 0 && argc != 2) ||
	    (strcmp(cmd, "export") == 0 && argc > 2) ||
	    (strcmp(cmd, "show") != 0 && strcmp(cmd, "export") != 0 &&
	     strcmp(cmd, "forget") != 0 && strcmp(cmd, "measure") != 0)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* Opening creates a store; a typo in -s must not. */
	if (access(path, F_OK) != 0) {
		fprintf(stderr, "popgate-uidmap: no store at %s\n", path);
		return EXIT_FAILURE;
	}
	st = uidstore_sqlite_open(path, &error);
	if (st == NULL) {
		fprintf(stderr, "popgate-uidmap: %s\n", error);
		return EXIT_FAILURE;
	}
	if (strcmp(cmd, "forget") == 0 || strcmp(cmd, "measure") == 0)
		ret = cmd_change(st, strcmp(cmd, "forget") == 0, argc, argv);
	else
		ret = cmd_list(st, argc == 2 ? argv[1] : NULL,
			       strcmp(cmd, "export") == 0);
	uidstore_close(st);
	return ret;
}
