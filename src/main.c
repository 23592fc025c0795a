/*
 * main.c - command line: check a configuration, or run the daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "config.h"
#include "daemon.h"
#include "imap_transport.h"
#include "log.h"
#include "tls.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: popgate [-t] [-c FILE] [-V] [-h]\n"
		"  -c FILE  configuration file (default %s)\n"
		"  -t       check the configuration and exit 0 (ok) or 1\n"
		"  -V       print the version and exit\n"
		"  -h       print this help and exit\n",
		SYSCONFDIR "/popgate.conf");
}

/*
 * What nginx -t does too: build the TLS contexts the daemon builds, so a
 * bad certificate, key or CA file fails the check, not the start.
 */
static int check_tls_files(const struct pg_config *cfg)
{
	struct transport_error te = { 0 };
	char err[512];
	SSL_CTX *ctx;

	if (cfg->tls.certificate != NULL) {
		ctx = tls_server_ctx_new(&cfg->tls, err, sizeof(err));
		if (ctx == NULL) {
			fprintf(stderr, "popgate: %s: %s\n", cfg->path, err);
			return -1;
		}
		tls_server_ctx_free(ctx);
	}
	if (cfg->upstream.tls != UPSTREAM_TLS_NONE) {
		ctx = imap_transport_ctx_new(cfg->upstream.ca_file,
					     cfg->upstream.verify, &te);
		if (ctx == NULL) {
			fprintf(stderr, "popgate: %s: upstream TLS: %s\n",
				cfg->path, te.text);
			return -1;
		}
		imap_transport_ctx_free(ctx);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = SYSCONFDIR "/popgate.conf";
	struct pg_config *cfg;
	bool check_only = false;
	char err[1024];
	int opt, ret;

	while ((opt = getopt(argc, argv, "tc:Vh")) != -1) {
		switch (opt) {
		case 't':
			check_only = true;
			break;
		case 'c':
			path = optarg;
			break;
		case 'V':
			printf("popgate %s\n", PACKAGE_VERSION);
			return POPGATE_EXIT_OK;
		case 'h':
			usage(stdout);
			return POPGATE_EXIT_OK;
		default:
			usage(stderr);
			return POPGATE_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return POPGATE_EXIT_USAGE;
	}

	cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "popgate: %s\n", err);
		if (check_only)
			fprintf(stderr, "popgate: configuration %s test "
				"failed\n", path);
		return POPGATE_EXIT_CONFIG;
	}
	if (check_only) {
		ret = check_tls_files(cfg) < 0 ? POPGATE_EXIT_CONFIG :
			POPGATE_EXIT_OK;
		if (ret == POPGATE_EXIT_OK)
			fprintf(stderr, "popgate: configuration %s is ok\n",
				path);
		else
			fprintf(stderr, "popgate: configuration %s test "
				"failed\n", path);
		config_free(cfg);
		return ret;
	}

	log_set_level(cfg->log_level);
	ret = daemon_run(cfg);
	config_free(cfg);
	return ret;
}
