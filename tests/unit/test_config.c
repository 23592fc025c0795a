/*
 * test_config.c - popgate.conf loading and every validation rule.
 *
 * Each test writes a configuration into a temporary file and loads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"

#define MINIMAL \
	"listen = ( { address = \"127.0.0.1\"; port = 1110; } );\n" \
	"upstream = { host = \"127.0.0.1\"; tls = \"none\"; };\n"

static const char *temp_dir(void)
{
	const char *dir = getenv("TMPDIR");

	return dir != NULL && dir[0] != '\0' ? dir : P_tmpdir;
}

struct fixture {
	char path[512];
	char certpath[512];
	char err[1200];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	if (f == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/popgate-test-XXXXXX",
		 temp_dir());
	fd = mkstemp(f->path);
	if (fd < 0)
		return -1;
	close(fd);
	snprintf(f->certpath, sizeof(f->certpath),
		 "%s/popgate-test-cert-XXXXXX", temp_dir());
	fd = mkstemp(f->certpath);
	if (fd < 0)
		return -1;
	close(fd);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	unlink(f->path);
	unlink(f->certpath);
	free(f);
	return 0;
}

/*
 * Load TEXT as a configuration file.  A text that does not mention the
 * store gets `store = { path = ""; }` appended (after every line, so that
 * expected line numbers hold): the default store directory need not exist
 * on a test machine.
 */
static struct pg_config *load_text(struct fixture *f, const char *text)
{
	FILE *fp = fopen(f->path, "w");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	if (strstr(text, "store") == NULL)
		assert_int_equal(fputs("store = { path = \"\"; };\n", fp) >= 0,
				 1);
	assert_int_equal(fclose(fp), 0);
	f->err[0] = '\0';
	return config_load(f->path, f->err, sizeof(f->err));
}

/* The load fails with "FILE:LINE: ..." containing NEEDLE. */
static void assert_fails_at(struct fixture *f, const char *text,
			    unsigned line, const char *needle)
{
	struct pg_config *cfg = load_text(f, text);
	char prefix[640];

	if (cfg != NULL) {
		config_free(cfg);
		fail_msg("config accepted, expected error \"%s\"", needle);
	}
	snprintf(prefix, sizeof(prefix), "%s:%u: ", f->path, line);
	if (strncmp(f->err, prefix, strlen(prefix)) != 0 ||
	    strstr(f->err, needle) == NULL)
		fail_msg("error \"%s\", expected \"%s...%s\"", f->err, prefix,
			 needle);
}

static void test_minimal_and_defaults(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg = load_text(f, MINIMAL);

	assert_non_null(cfg);
	assert_string_equal(cfg->path, f->path);
	assert_null(cfg->user);
	assert_int_equal(cfg->max_connections, 1000);
	assert_int_equal(cfg->drain_time_ms, 30000);
	assert_int_equal(cfg->sessions_per_process, 1);
	assert_int_equal(cfg->log_level, PG_LOG_INFO);
	assert_int_equal(cfg->n_listeners, 1);
	assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
	assert_int_equal(cfg->listeners[0].port, 1110);
	assert_false(cfg->listeners[0].tls);
	assert_null(cfg->tls.certificate);
	assert_string_equal(cfg->upstream.host, "127.0.0.1");
	assert_int_equal(cfg->upstream.port, 143);
	assert_int_equal(cfg->upstream.tls, UPSTREAM_TLS_NONE);
	assert_true(cfg->upstream.verify);
	assert_null(cfg->upstream.ca_file);
	assert_null(cfg->upstream.server_name);
	assert_string_equal(cfg->upstream.folder, "INBOX");
	assert_int_equal(cfg->upstream.connect_timeout_ms, 10000);
	assert_int_equal(cfg->upstream.command_timeout_ms, 60000);
	assert_false(cfg->upstream.forward_client_ip);
	assert_true(cfg->upstream.reconnect);
	assert_int_equal(cfg->upstream_keepalive_ms, 300000);
	assert_int_equal(cfg->pop3.login_type, POP3_LOGIN_SECURE);
	assert_int_equal(cfg->pop3.max_command_size, 512);
	assert_int_equal(cfg->pop3.max_sasl_size, 16384);
	assert_int_equal(cfg->pop3.max_bad_commands, 10);
	assert_int_equal(cfg->pop3.max_failed_logins, 3);
	assert_int_equal(cfg->pop3.failed_login_delay_ms, 1000);
	assert_int_equal(cfg->pop3.timeout_unauthenticated_ms, 60000);
	assert_int_equal(cfg->pop3.timeout_authenticated_ms, 1800000);
	assert_int_equal(cfg->pop3.timeout_send_ms, 60000);
	assert_true(cfg->pop3.mark_read_on_retr);
	assert_false(cfg->pop3.stls_available);
	assert_null(cfg->upstream.uid_store);
	assert_int_equal(cfg->upstream.size_mode, UIDMAP_SIZE_UPSTREAM);
	assert_int_equal(cfg->upstream.exact_budget_ms, 10000);
	config_free(cfg);
}

static void test_every_key(void **state)
{
	struct fixture *f = *state;
	char text[4096];
	struct pg_config *cfg;

	snprintf(text, sizeof(text),
		 "daemon = { user = \"nobody\"; max_connections = 20;\n"
		 "  drain_time = \"5s\"; log_level = \"debug\";\n"
		 "  sessions_per_process = 50; };\n"
		 "listen = ( { address = \"::1\"; port = 1995; tls = true;\n"
		 "  proxy_protocol = true; },\n"
		 "  { address = \"127.0.0.1\"; } );\n"
		 "tls = { certificate = \"%s\"; profile = \"legacy\";\n"
		 "  ciphers = \"HIGH\"; ciphersuites = \"\"; };\n"
		 "upstream = { host = \"imap.example.com\"; tls = \"tls\";\n"
		 "  ca_file = \"%s\"; verify = false; server_name = \"mx\";\n"
		 "  folder = \"Archive\"; connect_timeout = \"500ms\";\n"
		 "  command_timeout = 90; keepalive = \"2m\";\n"
		 "  forward_client_ip = true; reconnect = false; };\n"
		 "pop3 = { login_type = \"plaintext\"; max_command_size = 1024;\n"
		 "  max_sasl_size = \"64K\"; max_bad_commands = 5;\n"
		 "  max_failed_logins = 1; failed_login_delay = 0;\n"
		 "  timeout_unauthenticated = \"1m\";\n"
		 "  timeout_authenticated = \"1h\"; timeout_send = \"10s\";\n"
		 "  mark_read_on_retr = false; };\n",
		 f->certpath, f->certpath);
	cfg = load_text(f, text);
	assert_non_null(cfg);
	assert_string_equal(cfg->user, "nobody");
	assert_int_equal(cfg->max_connections, 20);
	assert_int_equal(cfg->drain_time_ms, 5000);
	assert_int_equal(cfg->sessions_per_process, 50);
	assert_int_equal(cfg->log_level, PG_LOG_DEBUG);
	assert_int_equal(cfg->n_listeners, 2);
	assert_string_equal(cfg->listeners[0].address, "::1");
	assert_int_equal(cfg->listeners[0].port, 1995);
	assert_true(cfg->listeners[0].tls);
	assert_true(cfg->listeners[0].proxy_protocol);
	assert_int_equal(cfg->listeners[1].port, 110);
	assert_false(cfg->listeners[1].proxy_protocol);
	assert_string_equal(cfg->tls.certificate, f->certpath);
	/* The key defaults to the certificate file (one PEM with both). */
	assert_string_equal(cfg->tls.key, f->certpath);
	assert_int_equal(cfg->tls.profile, TLS_PROFILE_LEGACY);
	assert_string_equal(cfg->tls.ciphers, "HIGH");
	assert_null(cfg->tls.ciphersuites);
	assert_int_equal(cfg->upstream.port, 993);
	assert_int_equal(cfg->upstream.tls, UPSTREAM_TLS_IMPLICIT);
	assert_false(cfg->upstream.verify);
	assert_string_equal(cfg->upstream.server_name, "mx");
	assert_string_equal(cfg->upstream.folder, "Archive");
	assert_int_equal(cfg->upstream.connect_timeout_ms, 500);
	assert_int_equal(cfg->upstream.command_timeout_ms, 90000);
	assert_int_equal(cfg->upstream_keepalive_ms, 120000);
	assert_true(cfg->upstream.forward_client_ip);
	assert_false(cfg->upstream.reconnect);
	assert_int_equal(cfg->pop3.login_type, POP3_LOGIN_PLAINTEXT);
	assert_int_equal(cfg->pop3.max_command_size, 1024);
	assert_int_equal(cfg->pop3.max_sasl_size, 65536);
	assert_int_equal(cfg->pop3.max_bad_commands, 5);
	assert_int_equal(cfg->pop3.max_failed_logins, 1);
	assert_int_equal(cfg->pop3.failed_login_delay_ms, 0);
	assert_int_equal(cfg->pop3.timeout_unauthenticated_ms, 60000);
	assert_int_equal(cfg->pop3.timeout_authenticated_ms, 3600000);
	assert_int_equal(cfg->pop3.timeout_send_ms, 10000);
	assert_false(cfg->pop3.mark_read_on_retr);
	config_free(cfg);
}

static void test_unknown_key_names_line(void **state)
{
	struct fixture *f = *state;

	assert_fails_at(f, MINIMAL "pop3 = {\n  max_commands = 5;\n};\n", 4,
			"unknown key pop3.max_commands");
	assert_fails_at(f, MINIMAL "\nlisten_port = 110;\n", 4,
			"unknown key listen_port");
	assert_fails_at(f, "listen = ( { address = \"::\"; tls = false;\n"
			"  backlog = 5; } );\n"
			"upstream = { host = \"h\"; };\n", 2,
			"unknown key listen.backlog");
}

static void test_wrapped_integers_rejected(void **state)
{
	struct fixture *f = *state;

	assert_fails_at(f, MINIMAL "daemon = { max_connections = 9999999999; };\n",
			3, "does not fit");
	/* Wraps to 100, which would otherwise be in range. */
	assert_fails_at(f, MINIMAL "daemon = { max_connections = 4294967396; };\n",
			3, "does not fit");
	assert_fails_at(f, MINIMAL "pop3 = { max_sasl_size = 4294968320; };\n",
			3, "does not fit");
	assert_fails_at(f, MINIMAL "daemon = { max_connections = 9999999999L; };\n",
			3, "out of range");
}

static void test_wrong_types(void **state)
{
	struct fixture *f = *state;

	assert_fails_at(f, MINIMAL "daemon = { max_connections = \"10\"; };\n",
			3, "expected an integer");
	assert_fails_at(f, MINIMAL "upstream2 = 1;\n", 3, "unknown key");
	assert_fails_at(f, MINIMAL "pop3 = { mark_read_on_retr = 1; };\n",
			3, "expected true or false");
	assert_fails_at(f, MINIMAL "daemon = { user = 5; };\n", 3,
			"expected a string");
	assert_fails_at(f, MINIMAL "daemon = { log_level = \"loud\"; };\n",
			3, "unknown value");
	assert_fails_at(f, MINIMAL "pop3 = 5;\n", 3, "expected a group");
	assert_fails_at(f, MINIMAL "daemon = { drain_time = 1.5; };\n", 3,
			"duration");
	assert_fails_at(f, MINIMAL "daemon = { drain_time = \"30M\"; };\n", 3,
			"invalid duration");
	assert_fails_at(f, MINIMAL "pop3 = { max_sasl_size = \"16k\"; };\n", 3,
			"invalid size");
	assert_fails_at(f, MINIMAL "daemon = { drain_time = -1; };\n", 3,
			"negative");
}

static void test_ranges(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;

	assert_fails_at(f, MINIMAL "pop3 = { max_command_size = 39; };\n", 3,
			"out of range");
	assert_fails_at(f, MINIMAL "pop3 = { max_command_size = 1025; };\n", 3,
			"out of range");
	assert_fails_at(f, "listen = ( { port = 0; } );\n"
			"upstream = { host = \"h\"; };\n", 1, "out of range");
	assert_fails_at(f, "listen = ( { port = 65536; } );\n"
			"upstream = { host = \"h\"; };\n", 1, "out of range");
	assert_fails_at(f, "listen = ( { port = 1110; } );\n"
			"upstream = { host = \"h\"; port = 70000; };\n", 2,
			"out of range");
	assert_fails_at(f, MINIMAL "upstream = { folder = \"x\"; };\n", 3,
			"duplicate");
	assert_fails_at(f, MINIMAL "daemon = { max_connections = 0; };\n", 3,
			"out of range");
	assert_fails_at(f, MINIMAL "pop3 = { max_failed_logins = 101; };\n",
			3, "out of range");

	/* Under 255 is allowed, with a warning. */
	cfg = load_text(f, MINIMAL "pop3 = { max_command_size = 40; };\n");
	assert_non_null(cfg);
	assert_int_equal(cfg->pop3.max_command_size, 40);
	config_free(cfg);
}

static void test_tls_listener_needs_certificate(void **state)
{
	struct fixture *f = *state;

	assert_fails_at(f, "upstream = { host = \"h\"; };\n"
			"listen = ( { port = 1110; },\n"
			"  { port = 1995; tls = true; } );\n", 3,
			"needs tls.certificate");
}

static void test_certificate_must_be_readable(void **state)
{
	struct fixture *f = *state;

	assert_fails_at(f, MINIMAL "tls = {\n certificate = "
			"\"/nonexistent/cert.pem\"; };\n", 4, "cannot read");
	assert_fails_at(f, MINIMAL "tls = { key = \"/x.pem\"; };\n", 3,
			"tls.certificate is not");
}

static void test_required_settings(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;

	assert_fails_at(f, "listen = ( { port = 1110; } );\n"
			"upstream = {\n  port = 143; };\n", 2,
			"upstream.host is required");
	assert_fails_at(f, "listen = ();\nupstream = { host = \"h\"; };\n",
			1, "at least one listener");
	cfg = load_text(f, "upstream = { host = \"h\"; };\n");
	assert_null(cfg);
	assert_non_null(strstr(f->err, "at least one listener"));
	cfg = load_text(f, "listen = ( { port = 1110; } );\n");
	assert_null(cfg);
	assert_non_null(strstr(f->err, "upstream.host is required"));
}

static void test_folder_in_utf8(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;

	/* Kept as written for logs and the store; named in modified UTF-7
	 * upstream. */
	cfg = load_text(f, "listen = ( { port = 1110; } );\n"
			"upstream = { host = \"h\"; "
			"folder = \"Entw\xc3\xbcrfe & Co\"; };\n");
	assert_non_null(cfg);
	assert_string_equal(cfg->upstream.folder, "Entw\xc3\xbcrfe & Co");
	assert_string_equal(cfg->upstream.folder_mutf7, "Entw&APw-rfe &- Co");
	config_free(cfg);
	cfg = load_text(f, MINIMAL);
	assert_non_null(cfg);
	assert_string_equal(cfg->upstream.folder_mutf7, "INBOX");
	config_free(cfg);
	/* Latin-1, not UTF-8. */
	assert_fails_at(f, "listen = ( { port = 1110; } );\n"
			"upstream = { host = \"h\";\n"
			"  folder = \"Entw\xfcrfe\"; };\n", 3,
			"upstream.folder: not UTF-8");
}

static void test_upstream_port_default_by_tls(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;

	cfg = load_text(f, "listen = ( { port = 1110; } );\n"
			"upstream = { host = \"h\"; tls = \"starttls\"; };\n");
	assert_non_null(cfg);
	assert_int_equal(cfg->upstream.port, 143);
	config_free(cfg);
	cfg = load_text(f, "listen = ( { port = 1110; } );\n"
			"upstream = { host = \"h\"; };\n");
	assert_non_null(cfg);
	assert_int_equal(cfg->upstream.tls, UPSTREAM_TLS_IMPLICIT);
	assert_int_equal(cfg->upstream.port, 993);
	config_free(cfg);
}

static void test_store(void **state)
{
	struct fixture *f = *state;
	char text[2048], store[600];
	struct pg_config *cfg;

	snprintf(store, sizeof(store), "%s/uids.db", temp_dir());
	snprintf(text, sizeof(text), MINIMAL
		 "store = { path = \"%s\"; size_mode = \"exact\";\n"
		 "  exact_budget = \"30s\"; };\n", store);
	cfg = load_text(f, text);
	assert_non_null(cfg);
	assert_string_equal(cfg->upstream.uid_store, store);
	assert_int_equal(cfg->upstream.size_mode, UIDMAP_SIZE_EXACT);
	assert_int_equal(cfg->upstream.exact_budget_ms, 30000);
	config_free(cfg);

	/* The file need not exist yet; "0" means no budget. */
	snprintf(text, sizeof(text), MINIMAL
		 "store = { path = \"%s\"; size_mode = \"upstream\";\n"
		 "  exact_budget = 0; };\n", store);
	cfg = load_text(f, text);
	assert_non_null(cfg);
	assert_int_equal(cfg->upstream.size_mode, UIDMAP_SIZE_UPSTREAM);
	assert_int_equal(cfg->upstream.exact_budget_ms, 0);
	config_free(cfg);

	/* An empty path leaves the store off. */
	cfg = load_text(f, MINIMAL "store = { path = \"\"; };\n");
	assert_non_null(cfg);
	assert_null(cfg->upstream.uid_store);
	config_free(cfg);
}

/* Without a store group the store is on, at the compiled-in path; where
 * its directory does not exist, that is an error naming store.path. */
static void test_store_on_by_default(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;
	struct stat st;

	cfg = load_text(f, MINIMAL "# no store group: the default applies\n");
	if (stat(LOCALSTATEDIR "/lib/popgate", &st) == 0) {
		assert_non_null(cfg);
		assert_string_equal(cfg->upstream.uid_store,
				    CONFIG_DEFAULT_STORE);
		config_free(cfg);
	} else {
		assert_null(cfg);
		assert_non_null(strstr(f->err, "store.path"));
		assert_non_null(strstr(f->err, LOCALSTATEDIR "/lib/popgate"));
	}
}

static void test_store_rejected(void **state)
{
	struct fixture *f = *state;
	char text[2048];

	assert_fails_at(f, MINIMAL "store = {\n  size_mode = \"estimate\"; };\n",
			4, "store.size_mode: unknown value \"estimate\"");
	assert_fails_at(f, MINIMAL "store = {\n  exact_budget = \"soon\"; };\n",
			4, "store.exact_budget: invalid duration");
	assert_fails_at(f, MINIMAL "store = { exact_budget = \"2h\"; };\n",
			3, "store.exact_budget: out of range");
	assert_fails_at(f, MINIMAL "store = { cache = 5; };\n", 3,
			"unknown key store.cache");
	assert_fails_at(f, MINIMAL "store = { path = \"uids.db\"; };\n", 3,
			"store.path: must be an absolute path");
	assert_fails_at(f, MINIMAL
			"store = { path = \"/nonexistent-popgate/uids.db\"; };\n",
			3, "store.path: directory /nonexistent-popgate: ");
	snprintf(text, sizeof(text), MINIMAL "store = { path = \"%s/\"; };\n",
		 temp_dir());
	assert_fails_at(f, text, 3, "store.path: names a directory");
	/* The directory part is a regular file. */
	snprintf(text, sizeof(text), MINIMAL "store = { path = \"%s/x.db\"; };\n",
		 f->certpath);
	assert_fails_at(f, text, 3, "is not a directory");
}

static void test_syntax_error_and_missing_file(void **state)
{
	struct fixture *f = *state;
	struct pg_config *cfg;

	assert_fails_at(f, MINIMAL "\npop3 = { max_command_size = ; };\n", 4,
			"");
	cfg = config_load("/nonexistent/popgate.conf", f->err,
			  sizeof(f->err));
	assert_null(cfg);
	assert_non_null(strstr(f->err, "/nonexistent/popgate.conf: "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_and_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_unknown_key_names_line),
		cmocka_unit_test(test_wrapped_integers_rejected),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_tls_listener_needs_certificate),
		cmocka_unit_test(test_certificate_must_be_readable),
		cmocka_unit_test(test_required_settings),
		cmocka_unit_test(test_folder_in_utf8),
		cmocka_unit_test(test_upstream_port_default_by_tls),
		cmocka_unit_test(test_store),
		cmocka_unit_test(test_store_on_by_default),
		cmocka_unit_test(test_store_rejected),
		cmocka_unit_test(test_syntax_error_and_missing_file),
	};

	return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
