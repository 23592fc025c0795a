/*
 * test_conn.c - client connections (conn.c) and the server TLS context
 * (tls.c), over socketpairs; the TLS peer runs in a forked process.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conn.h"
#include "monotime.h"
#include "tls_cert.h"
#include "tls.h"

static void make_pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
}

static void test_read_data_and_eof(void **state)
{
	char buf[16];
	struct conn *c;
	size_t len;
	int fds[2];

	(void)state;
	make_pair(fds);
	c = conn_new(fds[0]);
	assert_non_null(c);
	assert_int_equal(write(fds[1], "USER a\r\n", 8), 8);
	assert_int_equal(conn_read(c, buf, sizeof(buf), 1000, &len), CONN_DATA);
	assert_int_equal(len, 8);
	assert_memory_equal(buf, "USER a\r\n", 8);
	assert_int_equal(conn_bytes_in(c), 8);
	close(fds[1]);
	assert_int_equal(conn_read(c, buf, sizeof(buf), 1000, &len), CONN_EOF);
	assert_false(conn_is_tls(c));
	conn_free(c);
}

static void test_read_timeout(void **state)
{
	char buf[16];
	struct conn *c;
	uint64_t start;
	size_t len;
	int fds[2];

	(void)state;
	make_pair(fds);
	c = conn_new(fds[0]);
	start = monotime_ms();
	assert_int_equal(conn_read(c, buf, sizeof(buf), 100, &len),
			 CONN_TIMEOUT);
	assert_true(monotime_ms() - start >= 100);
	assert_true(monotime_ms() - start < 2000);
	conn_free(c);
	close(fds[1]);
}

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

/* A signal blocked outside waits still interrupts a read wait. */
static void test_read_interrupted_by_wait_mask(void **state)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t blocked, orig, wait_mask;
	char buf[16];
	struct conn *c;
	size_t len;
	int fds[2];

	(void)state;
	make_pair(fds);
	c = conn_new(fds[0]);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR1);
	sigprocmask(SIG_BLOCK, &blocked, &orig);
	wait_mask = orig;
	sigdelset(&wait_mask, SIGUSR1);
	conn_set_wait_sigmask(c, &wait_mask);

	/* Pending before the wait: delivered as soon as the wait starts. */
	raise(SIGUSR1);
	assert_int_equal(got_usr1, 0);
	assert_int_equal(conn_read(c, buf, sizeof(buf), 5000, &len),
			 CONN_INTERRUPTED);
	assert_int_equal(got_usr1, 1);

	sigprocmask(SIG_SETMASK, &orig, NULL);
	signal(SIGUSR1, SIG_DFL);
	conn_free(c);
	close(fds[1]);
}

static void test_write_all_and_send_timeout(void **state)
{
	static char chunk[65536];
	struct conn *c;
	char buf[8];
	int fds[2], ret = 0;
	size_t len;

	(void)state;
	make_pair(fds);
	c = conn_new(fds[0]);
	assert_int_equal(conn_write_all(c, "+OK\r\n", 5, 1000), 0);
	assert_int_equal(read(fds[1], buf, sizeof(buf)), 5);
	assert_int_equal(conn_bytes_out(c), 5);

	/* A peer that never reads: the buffers fill and the deadline hits. */
	for (int i = 0; i < 1000 && ret == 0; i++)
		ret = conn_write_all(c, chunk, sizeof(chunk), 100);
	assert_int_equal(ret, -1);
	close(fds[1]);
	assert_int_equal(conn_write_all(c, "x", 1, 100), -1);
	assert_int_not_equal(conn_read(c, buf, sizeof(buf), 100, &len),
			     CONN_DATA);
	conn_free(c);
}

static const char *temp_dir(void)
{
	const char *dir = getenv("TMPDIR");

	return dir != NULL && dir[0] != '\0' ? dir : P_tmpdir;
}

struct tls_files {
	char cert[512];
	char key[512];
	char other_key[512];
};

static void write_key(EVP_PKEY *pkey, char *path, size_t size)
{
	int fd;
	FILE *fp;

	snprintf(path, size, "%s/popgate-test-key-XXXXXX", temp_dir());
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL,
					      NULL), 1);
	fclose(fp);
}

/* A throw-away self-signed certificate, written to temporary files. */
static int tls_setup(void **state)
{
	struct tls_files *t = calloc(1, sizeof(*t));
	EVP_PKEY *pkey, *other = EVP_EC_gen("P-256");
	X509 *x509;
	FILE *fp;
	int fd;

	if (t == NULL || other == NULL || tls_cert_new(&pkey, &x509) < 0)
		return -1;

	snprintf(t->cert, sizeof(t->cert), "%s/popgate-test-cert-XXXXXX",
		 temp_dir());
	fd = mkstemp(t->cert);
	if (fd < 0 || (fp = fdopen(fd, "w")) == NULL)
		return -1;
	PEM_write_X509(fp, x509);
	fclose(fp);
	write_key(pkey, t->key, sizeof(t->key));
	write_key(other, t->other_key, sizeof(t->other_key));
	X509_free(x509);
	EVP_PKEY_free(pkey);
	EVP_PKEY_free(other);
	*state = t;
	return 0;
}

static int tls_teardown(void **state)
{
	struct tls_files *t = *state;

	unlink(t->cert);
	unlink(t->key);
	unlink(t->other_key);
	free(t);
	return 0;
}

static void test_tls_ctx_errors(void **state)
{
	struct tls_files *t = *state;
	struct tls_config cfg = { .certificate = t->cert, .key = t->other_key };
	char err[512];
	SSL_CTX *ctx;

	ctx = tls_server_ctx_new(&cfg, err, sizeof(err));
	assert_null(ctx);
	/* OpenSSL notices the mismatch while loading the key. */
	assert_non_null(strstr(err, "tls.key"));
	assert_non_null(strstr(err, "mismatch"));

	cfg.key = t->key;
	cfg.ciphers = "NO-SUCH-CIPHER";
	ctx = tls_server_ctx_new(&cfg, err, sizeof(err));
	assert_null(ctx);
	assert_non_null(strstr(err, "tls.ciphers"));

	cfg.ciphers = NULL;
	cfg.certificate = "/nonexistent.pem";
	ctx = tls_server_ctx_new(&cfg, err, sizeof(err));
	assert_null(ctx);
	assert_non_null(strstr(err, "/nonexistent.pem"));
}

/* The client side, in a child: handshake, send a line, expect an echo. */
static void run_tls_client(int fd, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char buf[16];
	SSL *ssl;
	int n;

	SSL_CTX_set_max_proto_version(ctx, max_version);
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		_exit(2);
	if (SSL_write(ssl, "CAPA\r\n", 6) != 6)
		_exit(3);
	n = SSL_read(ssl, buf, sizeof(buf));
	if (n != 5 || memcmp(buf, "+OK\r\n", 5) != 0)
		_exit(4);
	_exit(0);
}

static void handshake_with(struct tls_files *t, enum tls_profile profile,
			   int client_max, bool expect_ok)
{
	struct tls_config cfg = {
		.certificate = t->cert, .key = t->key, .profile = profile,
	};
	const char *error = NULL;
	char err[512], buf[16];
	struct conn *c;
	SSL_CTX *ctx;
	int fds[2], status;
	size_t len;
	pid_t pid;

	ctx = tls_server_ctx_new(&cfg, err, sizeof(err));
	if (ctx == NULL)
		fail_msg("tls_server_ctx_new: %s", err);
	make_pair(fds);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		run_tls_client(fds[1], client_max);
	}
	close(fds[1]);
	c = conn_new(fds[0]);
	if (!expect_ok) {
		assert_int_equal(conn_start_tls(c, ctx, 5000, &error), -1);
		assert_non_null(error);
	} else {
		assert_int_equal(conn_start_tls(c, ctx, 5000, &error), 0);
		assert_true(conn_is_tls(c));
		assert_int_equal(conn_read(c, buf, sizeof(buf), 5000, &len),
				 CONN_DATA);
		assert_int_equal(len, 6);
		assert_int_equal(conn_write_all(c, "+OK\r\n", 5, 5000), 0);
	}
	conn_free(c);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (expect_ok)
		assert_int_equal(WEXITSTATUS(status), 0);
	tls_server_ctx_free(ctx);
}

static void test_tls_modern_handshake(void **state)
{
	handshake_with(*state, TLS_PROFILE_MODERN, TLS1_3_VERSION, true);
}

static void test_tls_modern_refuses_tls10(void **state)
{
	handshake_with(*state, TLS_PROFILE_MODERN, TLS1_VERSION, false);
}

static void test_tls_legacy_accepts_tls10(void **state)
{
	handshake_with(*state, TLS_PROFILE_LEGACY, TLS1_VERSION, true);
}

static void test_tls_handshake_timeout(void **state)
{
	struct tls_files *t = *state;
	struct tls_config cfg = { .certificate = t->cert, .key = t->key };
	const char *error = NULL;
	char err[512];
	struct conn *c;
	SSL_CTX *ctx;
	uint64_t start;
	int fds[2];

	ctx = tls_server_ctx_new(&cfg, err, sizeof(err));
	assert_non_null(ctx);
	make_pair(fds);
	c = conn_new(fds[0]);
	start = monotime_ms();
	assert_int_equal(conn_start_tls(c, ctx, 100, &error), -1);
	assert_string_equal(error, "TLS handshake timed out");
	assert_true(monotime_ms() - start < 2000);
	conn_free(c);
	close(fds[1]);
	tls_server_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_data_and_eof),
		cmocka_unit_test(test_read_timeout),
		cmocka_unit_test(test_read_interrupted_by_wait_mask),
		cmocka_unit_test(test_write_all_and_send_timeout),
		cmocka_unit_test(test_tls_ctx_errors),
		cmocka_unit_test(test_tls_modern_handshake),
		cmocka_unit_test(test_tls_modern_refuses_tls10),
		cmocka_unit_test(test_tls_legacy_accepts_tls10),
		cmocka_unit_test(test_tls_handshake_timeout),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("conn", tests, tls_setup,
					   tls_teardown);
}
