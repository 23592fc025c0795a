/*
 * config.c - popgate.conf, read with libconfig and checked against a table.
 *
 * The schema table below is the only list of keys: the loader walks every
 * setting found in the file and looks it up there, so an unknown key can
 * never be silently ignored.  Defaults are set before the walk; checks that
 * span several keys run after it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>

#include "config.h"
#include "imap_mailbox.h"
#include "units.h"

enum value_kind {
	VAL_STRING,       /* char *, owned */
	VAL_CSTRING,      /* const char *, owned (upstream_settings) */
	VAL_BOOL,         /* bool */
	VAL_UINT,         /* unsigned, integer in [min, max] */
	VAL_SIZE,         /* size_t, units_parse_size in [min, max] */
	VAL_SIZE_U64,     /* uint64_t, units_parse_size */
	VAL_DURATION,     /* uint64_t milliseconds, units_parse_duration */
	VAL_ENUM,         /* enum (int-sized), one of names[] */
};

/* Where a key is stored: in struct pg_config, or in one listener. */
enum key_section {
	SEC_DAEMON,
	SEC_TLS,
	SEC_UPSTREAM,
	SEC_POP3,
	SEC_STORE,
	SEC_LISTEN,
};

struct config_key {
	enum key_section section;
	const char *name;
	enum value_kind kind;
	size_t offset;          /* in pg_config, or listener_config */
	uint64_t min, max;      /* VAL_UINT, VAL_SIZE*, VAL_DURATION (ms) */
	const char *const *names; /* VAL_ENUM, NULL-terminated */
	bool empty_is_unset;    /* VAL_*STRING: "" means "use the default" */
};

static const char *const section_names[] = {
	[SEC_DAEMON] = "daemon",
	[SEC_TLS] = "tls",
	[SEC_UPSTREAM] = "upstream",
	[SEC_POP3] = "pop3",
	[SEC_STORE] = "store",
	[SEC_LISTEN] = "listen",
};

/* Index = enum value. */
static const char *const log_level_names[] = {
	"error", "warn", "info", "debug", NULL
};
static const char *const tls_profile_names[] = { "modern", "legacy", NULL };
static const char *const upstream_tls_names[] = {
	"none", "starttls", "tls", NULL
};
static const char *const login_type_names[] = {
	"secure", "plaintext", NULL
};
static const char *const size_mode_names[] = {
	[UIDMAP_SIZE_UPSTREAM] = "upstream",
	[UIDMAP_SIZE_EXACT] = "exact",
	NULL
};

#define SEC  1000ULL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
#define CFG(field) offsetof(struct pg_config, field)
#define LST(field) offsetof(struct listener_config, field)

static const struct config_key schema[] = {
	{ SEC_DAEMON, "user", VAL_STRING, CFG(user), 0, 0, NULL, true },
	{ SEC_DAEMON, "max_connections", VAL_UINT, CFG(max_connections),
	  1, 100000, NULL, false },
	{ SEC_DAEMON, "drain_time", VAL_DURATION, CFG(drain_time_ms),
	  0, DAY, NULL, false },
	{ SEC_DAEMON, "sessions_per_process", VAL_UINT,
	  CFG(sessions_per_process), 1, 100000, NULL, false },
	{ SEC_DAEMON, "log_level", VAL_ENUM, CFG(log_level), 0, 0,
	  log_level_names, false },

	{ SEC_LISTEN, "address", VAL_STRING, LST(address), 0, 0, NULL, false },
	{ SEC_LISTEN, "port", VAL_UINT, LST(port), 1, 65535, NULL, false },
	{ SEC_LISTEN, "tls", VAL_BOOL, LST(tls), 0, 0, NULL, false },
	{ SEC_LISTEN, "proxy_protocol", VAL_BOOL, LST(proxy_protocol), 0, 0,
	  NULL, false },

	{ SEC_TLS, "certificate", VAL_STRING, CFG(tls.certificate), 0, 0,
	  NULL, true },
	{ SEC_TLS, "key", VAL_STRING, CFG(tls.key), 0, 0, NULL, true },
	{ SEC_TLS, "profile", VAL_ENUM, CFG(tls.profile), 0, 0,
	  tls_profile_names, false },
	{ SEC_TLS, "ciphers", VAL_STRING, CFG(tls.ciphers), 0, 0, NULL, true },
	{ SEC_TLS, "ciphersuites", VAL_STRING, CFG(tls.ciphersuites), 0, 0,
	  NULL, true },

	{ SEC_UPSTREAM, "host", VAL_CSTRING, CFG(upstream.host), 0, 0, NULL,
	  true },
	{ SEC_UPSTREAM, "port", VAL_UINT, CFG(upstream.port), 1, 65535, NULL,
	  false },
	{ SEC_UPSTREAM, "tls", VAL_ENUM, CFG(upstream.tls), 0, 0,
	  upstream_tls_names, false },
	{ SEC_UPSTREAM, "ca_file", VAL_CSTRING, CFG(upstream.ca_file), 0, 0,
	  NULL, true },
	{ SEC_UPSTREAM, "verify", VAL_BOOL, CFG(upstream.verify), 0, 0, NULL,
	  false },
	{ SEC_UPSTREAM, "server_name", VAL_CSTRING, CFG(upstream.server_name),
	  0, 0, NULL, true },
	{ SEC_UPSTREAM, "folder", VAL_CSTRING, CFG(upstream.folder), 0, 0,
	  NULL, false },
	{ SEC_UPSTREAM, "connect_timeout", VAL_DURATION,
	  CFG(upstream.connect_timeout_ms), 100, HOUR, NULL, false },
	{ SEC_UPSTREAM, "command_timeout", VAL_DURATION,
	  CFG(upstream.command_timeout_ms), SEC, HOUR, NULL, false },
	{ SEC_UPSTREAM, "keepalive", VAL_DURATION, CFG(upstream_keepalive_ms),
	  SEC, DAY, NULL, false },
	{ SEC_UPSTREAM, "forward_client_ip", VAL_BOOL,
	  CFG(upstream.forward_client_ip), 0, 0, NULL, false },
	{ SEC_UPSTREAM, "reconnect", VAL_BOOL, CFG(upstream.reconnect), 0, 0,
	  NULL, false },

	{ SEC_POP3, "login_type", VAL_ENUM, CFG(pop3.login_type), 0, 0,
	  login_type_names, false },
	{ SEC_POP3, "max_command_size", VAL_SIZE, CFG(pop3.max_command_size),
	  40, 1024, NULL, false },
	{ SEC_POP3, "max_sasl_size", VAL_SIZE, CFG(pop3.max_sasl_size),
	  1024, 1024 * 1024, NULL, false },
	{ SEC_POP3, "max_bad_commands", VAL_UINT, CFG(pop3.max_bad_commands),
	  1, 1000, NULL, false },
	{ SEC_POP3, "max_failed_logins", VAL_UINT,
	  CFG(pop3.max_failed_logins), 1, 100, NULL, false },
	{ SEC_POP3, "failed_login_delay", VAL_DURATION,
	  CFG(pop3.failed_login_delay_ms), 0, MIN, NULL, false },
	{ SEC_POP3, "timeout_unauthenticated", VAL_DURATION,
	  CFG(pop3.timeout_unauthenticated_ms), SEC, DAY, NULL, false },
	{ SEC_POP3, "timeout_authenticated", VAL_DURATION,
	  CFG(pop3.timeout_authenticated_ms), SEC, DAY, NULL, false },
	{ SEC_POP3, "timeout_send", VAL_DURATION, CFG(pop3.timeout_send_ms),
	  SEC, DAY, NULL, false },
	{ SEC_POP3, "mark_read_on_retr", VAL_BOOL,
	  CFG(pop3.mark_read_on_retr), 0, 0, NULL, false },

	/* The unique-id store lives in upstream_settings because the backend
	 * is what uses it; in the file it is a group of its own. */
	{ SEC_STORE, "path", VAL_CSTRING, CFG(upstream.uid_store), 0, 0, NULL,
	  true },
	{ SEC_STORE, "size_mode", VAL_ENUM, CFG(upstream.size_mode), 0, 0,
	  size_mode_names, false },
	{ SEC_STORE, "exact_budget", VAL_DURATION,
	  CFG(upstream.exact_budget_ms), 0, HOUR, NULL, false },
};

#define N_SCHEMA (sizeof(schema) / sizeof(schema[0]))

struct load_ctx {
	const char *path;
	char *errbuf;
	size_t errlen;
};

static int fail_at(struct load_ctx *ctx, const config_setting_t *where,
		   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "FILE:LINE: message" (just "FILE: message" when no setting applies). */
static int fail_at(struct load_ctx *ctx, const config_setting_t *where,
		   const char *fmt, ...)
{
	char msg[512];
	const char *file = ctx->path;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (where != NULL && config_setting_source_file(where) != NULL)
		file = config_setting_source_file(where);
	if (where != NULL && config_setting_source_line(where) > 0)
		snprintf(ctx->errbuf, ctx->errlen, "%s:%u: %s", file,
			 config_setting_source_line(where), msg);
	else
		snprintf(ctx->errbuf, ctx->errlen, "%s: %s", file, msg);
	return -1;
}

static const struct config_key *schema_find(enum key_section section,
					    const char *name)
{
	for (size_t i = 0; i < N_SCHEMA; i++) {
		if (schema[i].section == section &&
		    strcmp(schema[i].name, name) == 0)
			return &schema[i];
	}
	return NULL;
}

/* Read line LINENO of FILE into BUF; 0, or -1 if there is no such line. */
static int read_source_line(const char *file, unsigned lineno, char *buf,
			    size_t size)
{
	FILE *fp = fopen(file, "r");
	unsigned n = 0;
	int ret = -1;

	if (fp == NULL)
		return -1;
	while (fgets(buf, (int)size, fp) != NULL) {
		size_t len = strlen(buf);

		/* Only whole lines count; a longer one is a line of its own. */
		if (len > 0 && buf[len - 1] != '\n' && !feof(fp)) {
			int c;

			while ((c = fgetc(fp)) != EOF && c != '\n')
				;
		}
		if (++n == lineno) {
			ret = 0;
			break;
		}
	}
	fclose(fp);
	return ret;
}

static bool is_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '*';
}

/*
 * libconfig 1.5 silently wraps integers that do not fit 32 bits (without an
 * L suffix): 4294967396 reads as 100.  Find "NAME = literal" on the setting's
 * source line and check the literal really is the value libconfig gave us.
 * Returns false only when the line shows this key with a different value.
 */
static bool integer_matches_source(const config_setting_t *setting,
				   long long value)
{
	const char *file = config_setting_source_file(setting);
	const char *name = config_setting_name(setting);
	unsigned lineno = config_setting_source_line(setting);
	char line[1024];
	bool seen_literal = false;
	size_t name_len;

	if (file == NULL || name == NULL || lineno == 0 ||
	    read_source_line(file, lineno, line, sizeof(line)) < 0)
		return true;
	name_len = strlen(name);
	for (const char *p = strstr(line, name); p != NULL;
	     p = strstr(p + 1, name)) {
		const char *q = p + name_len;
		unsigned long long magnitude;
		bool negative = false;
		char *end;

		if ((p > line && is_name_char(p[-1])) || is_name_char(*q))
			continue;
		while (*q == ' ' || *q == '\t')
			q++;
		if (*q != '=' && *q != ':')
			continue;
		q++;
		while (*q == ' ' || *q == '\t')
			q++;
		if (*q == '-' || *q == '+') {
			negative = (*q == '-');
			q++;
		}
		if (!isdigit((unsigned char)*q))
			continue;
		seen_literal = true;
		errno = 0;
		magnitude = strtoull(q, &end, 0);
		if (errno == ERANGE)
			continue;
		if (negative ? (magnitude <= (unsigned long long)LLONG_MAX + 1 &&
				(long long)(0 - magnitude) == value)
			     : (magnitude <= LLONG_MAX &&
				(long long)magnitude == value))
			return true;
	}
	return !seen_literal;
}

/* An integer setting, checked for wrap-around and sign. */
static int get_integer(struct load_ctx *ctx, const config_setting_t *s,
		       const char *what, uint64_t *value_r)
{
	long long value = config_setting_get_int64(s);

	if (!integer_matches_source(s, value))
		return fail_at(ctx, s, "%s: value does not fit 32 bits "
			       "(write it as a string, or with an L suffix)",
			       what);
	if (value < 0)
		return fail_at(ctx, s, "%s: must not be negative", what);
	*value_r = (uint64_t)value;
	return 0;
}

static int set_value(struct load_ctx *ctx, const struct config_key *key,
		     const config_setting_t *s, void *base, const char *what)
{
	void *field = (char *)base + key->offset;
	int type = config_setting_type(s);
	uint64_t number = 0;
	const char *text;

	switch (key->kind) {
	case VAL_STRING:
	case VAL_CSTRING: {
		char *copy = NULL;

		if (type != CONFIG_TYPE_STRING)
			return fail_at(ctx, s, "%s: expected a string", what);
		text = config_setting_get_string(s);
		if (text[0] == '\0' && !key->empty_is_unset)
			return fail_at(ctx, s, "%s: must not be empty", what);
		if (text[0] != '\0' && (copy = strdup(text)) == NULL)
			return fail_at(ctx, s, "out of memory");
		if (key->kind == VAL_STRING) {
			free(*(char **)field);
			*(char **)field = copy;
		} else {
			free((char *)*(const char **)field);
			*(const char **)field = copy;
		}
		return 0;
	}
	case VAL_BOOL:
		if (type != CONFIG_TYPE_BOOL)
			return fail_at(ctx, s, "%s: expected true or false",
				       what);
		*(bool *)field = config_setting_get_bool(s) != 0;
		return 0;
	case VAL_ENUM:
		if (type != CONFIG_TYPE_STRING)
			return fail_at(ctx, s, "%s: expected a string", what);
		text = config_setting_get_string(s);
		for (int i = 0; key->names[i] != NULL; i++) {
			if (strcmp(text, key->names[i]) == 0) {
				*(int *)field = i;
				return 0;
			}
		}
		return fail_at(ctx, s, "%s: unknown value \"%s\"", what, text);
	case VAL_UINT:
		if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
			return fail_at(ctx, s, "%s: expected an integer",
				       what);
		if (get_integer(ctx, s, what, &number) < 0)
			return -1;
		break;
	case VAL_SIZE:
	case VAL_SIZE_U64:
	case VAL_DURATION:
		if (type == CONFIG_TYPE_STRING) {
			text = config_setting_get_string(s);
			if (key->kind == VAL_DURATION ?
			    units_parse_duration(text, &number) < 0 :
			    units_parse_size(text, &number) < 0)
				return fail_at(ctx, s, key->kind == VAL_DURATION ?
					       "%s: invalid duration \"%s\" "
					       "(e.g. \"500ms\", \"30s\", \"5m\")" :
					       "%s: invalid size \"%s\" "
					       "(e.g. \"512\", \"16K\", \"50M\")",
					       what, text);
		} else if (type == CONFIG_TYPE_INT ||
			   type == CONFIG_TYPE_INT64) {
			if (get_integer(ctx, s, what, &number) < 0)
				return -1;
			if (key->kind == VAL_DURATION) {
				if (number > UINT64_MAX / 1000)
					return fail_at(ctx, s,
						       "%s: out of range", what);
				number *= 1000;
			}
		} else {
			return fail_at(ctx, s, "%s: expected a %s string",
				       what, key->kind == VAL_DURATION ?
				       "duration" : "size");
		}
		break;
	}

	if (number < key->min || number > key->max) {
		if (key->kind == VAL_DURATION)
			return fail_at(ctx, s, "%s: out of range "
				       "(%" PRIu64 "ms..%" PRIu64 "ms)", what,
				       key->min, key->max);
		return fail_at(ctx, s, "%s: out of range (%" PRIu64 "..%"
			       PRIu64 ")", what, key->min, key->max);
	}
	switch (key->kind) {
	case VAL_UINT:
		*(unsigned *)field = (unsigned)number;
		break;
	case VAL_SIZE:
		*(size_t *)field = (size_t)number;
		break;
	default:
		*(uint64_t *)field = number;
		break;
	}
	return 0;
}

/* Every member of GROUP must be a key of SECTION. */
static int load_group(struct load_ctx *ctx, const config_setting_t *group,
		      enum key_section section, void *base)
{
	int n = config_setting_length(group);

	if (!config_setting_is_group(group))
		return fail_at(ctx, group, "%s: expected a group { ... }",
			       section_names[section]);
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(group, i);
		const char *name = config_setting_name(s);
		const struct config_key *key = schema_find(section, name);
		char what[128];

		snprintf(what, sizeof(what), "%s.%s", section_names[section],
			 name);
		if (key == NULL)
			return fail_at(ctx, s, "unknown key %s", what);
		if (set_value(ctx, key, s, base, what) < 0)
			return -1;
	}
	return 0;
}

static int load_listeners(struct load_ctx *ctx, struct pg_config *cfg,
			  const config_setting_t *list)
{
	int n = config_setting_length(list);

	if (!config_setting_is_list(list))
		return fail_at(ctx, list, "listen: expected a list ( {...}, "
			       "... ) of listeners");
	if (n == 0)
		return fail_at(ctx, list, "listen: at least one listener is "
			       "required");
	cfg->listeners = calloc((size_t)n, sizeof(*cfg->listeners));
	if (cfg->listeners == NULL)
		return fail_at(ctx, list, "out of memory");
	for (int i = 0; i < n; i++) {
		const config_setting_t *elem = config_setting_get_elem(list, i);
		struct listener_config *l = &cfg->listeners[i];

		cfg->n_listeners++;
		if (load_group(ctx, elem, SEC_LISTEN, l) < 0)
			return -1;
		if (l->address == NULL && (l->address = strdup("0.0.0.0")) == NULL)
			return fail_at(ctx, elem, "out of memory");
		if (l->port == 0)
			l->port = l->tls ? 995 : 110;
		if (l->tls && cfg->tls.certificate == NULL)
			return fail_at(ctx, elem, "listen: a TLS listener "
				       "needs tls.certificate");
	}
	return 0;
}

static int check_readable(struct load_ctx *ctx, config_t *cf,
			  const char *key, const char *file)
{
	if (file == NULL || access(file, R_OK) == 0)
		return 0;
	return fail_at(ctx, config_lookup(cf, key), "%s: cannot read %s: %s",
		       key, file, strerror(errno));
}

/*
 * SQLite creates the store file and its -wal and -shm companions next to
 * it, so the directory must exist; whether the daemon user may write there
 * is only known after the privilege drop, when the first login opens it.
 */
static int check_store_directory(struct load_ctx *ctx, config_t *cf,
				 const char *path)
{
	const config_setting_t *where = config_lookup(cf, "store.path");
	const char *slash;
	struct stat st;
	char *dir;
	int ret = 0;

	if (path == NULL)
		return 0;
	if (path[0] != '/')
		return fail_at(ctx, where, "store.path: must be an absolute "
			       "path (the daemon does not keep its working "
			       "directory)");
	slash = strrchr(path, '/');
	if (slash[1] == '\0')
		return fail_at(ctx, where, "store.path: names a directory, "
			       "not a file");
	dir = slash == path ? strdup("/") :
		strndup(path, (size_t)(slash - path));
	if (dir == NULL)
		return fail_at(ctx, where, "out of memory");
	if (stat(dir, &st) < 0)
		ret = fail_at(ctx, where, "store.path: directory %s: %s%s", dir,
			      strerror(errno), where != NULL ? "" :
			      " (the default; create it, or set store.path, "
			      "or path = \"\" to run without a store)");
	else if (!S_ISDIR(st.st_mode))
		ret = fail_at(ctx, where, "store.path: %s is not a directory",
			      dir);
	free(dir);
	return ret;
}

/* The folder is written in UTF-8; IMAP commands name it in modified
 * UTF-7, converted once here, where a bad name can say its line. */
static int load_folder(struct load_ctx *ctx, struct pg_config *cfg,
		       config_t *cf)
{
	const char *error;
	char *mutf7 = imap_mailbox_encode(cfg->upstream.folder, &error);

	if (mutf7 == NULL)
		return fail_at(ctx, config_lookup(cf, "upstream.folder"),
			       "upstream.folder: %s", error);
	cfg->upstream.folder_mutf7 = mutf7;
	return 0;
}

static int load_root(struct load_ctx *ctx, struct pg_config *cfg,
		     config_t *cf)
{
	const config_setting_t *root = config_root_setting(cf);
	const config_setting_t *listen = NULL, *upstream = NULL;
	int n = config_setting_length(root);

	/* Groups first, so that listeners can see the TLS settings. */
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(root, i);
		const char *name = config_setting_name(s);
		enum key_section section;

		if (strcmp(name, "listen") == 0) {
			listen = s;
			continue;
		}
		for (section = SEC_DAEMON; section < SEC_LISTEN; section++) {
			if (strcmp(name, section_names[section]) == 0)
				break;
		}
		if (section == SEC_LISTEN)
			return fail_at(ctx, s, "unknown key %s", name);
		if (section == SEC_UPSTREAM)
			upstream = s;
		if (load_group(ctx, s, section, cfg) < 0)
			return -1;
	}

	if (cfg->tls.certificate != NULL && cfg->tls.key == NULL &&
	    (cfg->tls.key = strdup(cfg->tls.certificate)) == NULL)
		return fail_at(ctx, NULL, "out of memory");
	if (cfg->tls.key != NULL && cfg->tls.certificate == NULL)
		return fail_at(ctx, config_lookup(cf, "tls.key"),
			       "tls.key is set but tls.certificate is not");
	if (check_readable(ctx, cf, "tls.certificate",
			   cfg->tls.certificate) < 0 ||
	    check_readable(ctx, cf, "tls.key", cfg->tls.key) < 0 ||
	    check_readable(ctx, cf, "upstream.ca_file",
			   cfg->upstream.ca_file) < 0 ||
	    check_store_directory(ctx, cf, cfg->upstream.uid_store) < 0)
		return -1;

	if (listen == NULL)
		return fail_at(ctx, NULL, "listen: at least one listener is "
			       "required");
	if (load_listeners(ctx, cfg, listen) < 0)
		return -1;

	if (cfg->upstream.host == NULL)
		return fail_at(ctx, upstream, "upstream.host is required");
	if (cfg->upstream.port == 0)
		cfg->upstream.port =
			cfg->upstream.tls == UPSTREAM_TLS_IMPLICIT ? 993 : 143;
	if (load_folder(ctx, cfg, cf) < 0)
		return -1;
	if (cfg->pop3.max_sasl_size < cfg->pop3.max_command_size)
		return fail_at(ctx, config_lookup(cf, "pop3.max_sasl_size"),
			       "pop3.max_sasl_size must be at least "
			       "pop3.max_command_size");
	if (cfg->pop3.max_command_size < 255)
		log_warn("event=config_warning file=%s line=%u "
			 "msg=\"pop3.max_command_size under 255 breaks "
			 "RFC 2449 clients\"", ctx->path,
			 config_setting_source_line(
				 config_lookup(cf, "pop3.max_command_size")));
	return 0;
}

static void set_defaults(struct pg_config *cfg)
{
	cfg->max_connections = 1000;
	cfg->drain_time_ms = 30 * SEC;
	cfg->sessions_per_process = 1;
	cfg->log_level = PG_LOG_INFO;
	cfg->tls.profile = TLS_PROFILE_MODERN;
	cfg->upstream.tls = UPSTREAM_TLS_IMPLICIT;
	cfg->upstream.verify = true;
	cfg->upstream.connect_timeout_ms = 10 * SEC;
	cfg->upstream.command_timeout_ms = 60 * SEC;
	cfg->upstream_keepalive_ms = 5 * MIN;
	cfg->upstream.forward_client_ip = false;
	cfg->upstream.reconnect = true;
	cfg->upstream.size_mode = UIDMAP_SIZE_UPSTREAM;
	cfg->upstream.exact_budget_ms = 10 * SEC;
	pop3_settings_init(&cfg->pop3);
	cfg->pop3.stls_available = false;
}

struct pg_config *config_load(const char *path, char *errbuf, size_t errlen)
{
	struct load_ctx ctx = { path, errbuf, errlen };
	struct pg_config *cfg;
	config_t cf;
	int ret;

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
		free(cfg);
		snprintf(errbuf, errlen, "%s: out of memory", path);
		return NULL;
	}
	set_defaults(cfg);
	cfg->upstream.folder = strdup("INBOX");
	/* The store is on unless the file says path = "": without it ids
	 * are bare IMAP UIDs, which a UIDVALIDITY change would reissue. */
	cfg->upstream.uid_store = strdup(CONFIG_DEFAULT_STORE);
	if (cfg->upstream.folder == NULL || cfg->upstream.uid_store == NULL) {
		config_free(cfg);
		snprintf(errbuf, errlen, "%s: out of memory", path);
		return NULL;
	}

	config_init(&cf);
	if (!config_read_file(&cf, path)) {
		if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
			snprintf(errbuf, errlen, "%s: cannot read: %s", path,
				 strerror(errno));
		else
			snprintf(errbuf, errlen, "%s:%d: %s",
				 config_error_file(&cf) != NULL ?
				 config_error_file(&cf) : path,
				 config_error_line(&cf), config_error_text(&cf));
		ret = -1;
	} else {
		ret = load_root(&ctx, cfg, &cf);
	}
	config_destroy(&cf);
	if (ret < 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct pg_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->n_listeners; i++)
		free(cfg->listeners[i].address);
	free(cfg->listeners);
	free(cfg->path);
	free(cfg->user);
	free(cfg->tls.certificate);
	free(cfg->tls.key);
	free(cfg->tls.ciphers);
	free(cfg->tls.ciphersuites);
	free((char *)cfg->upstream.host);
	free((char *)cfg->upstream.ca_file);
	free((char *)cfg->upstream.server_name);
	free((char *)cfg->upstream.folder);
	free((char *)cfg->upstream.folder_mutf7);
	free((char *)cfg->upstream.uid_store);
	free(cfg);
}
