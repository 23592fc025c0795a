/*
 * config.h - popgate.conf, read with libconfig and checked against a table.
 *
 * Every key the file may contain is listed in one schema table in config.c
 * with its type and range; an unknown key, a wrong type or an out-of-range
 * value is an error naming the file and line.  Sizes and durations are
 * strings (units.h) so that libconfig's 32-bit integer wrap-around never
 * applies.  See popgate.conf(5) and etc/popgate.conf.example.
 */
#ifndef POPGATE_CONFIG_H
#define POPGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_backend.h"
#include "log.h"
#include "pop3_session.h"

struct listener_config {
	char *address;   /* numeric IPv4/IPv6 address or host name */
	unsigned port;
	bool tls;        /* implicit TLS (port 995); else plain with STLS */
	/* Every connection starts with a PROXY protocol header from a load
	 * balancer, which names the client. */
	bool proxy_protocol;
};

enum tls_profile {
	TLS_PROFILE_MODERN,  /* TLS 1.2 minimum */
	TLS_PROFILE_LEGACY,  /* TLS 1.0 minimum, @SECLEVEL=0: old Outlook */
};

struct tls_config {
	char *certificate;   /* PEM chain; NULL when no TLS is configured */
	char *key;
	enum tls_profile profile;
	char *ciphers;       /* TLS <= 1.2 cipher list; NULL: OpenSSL default */
	char *ciphersuites;  /* TLS 1.3 suites; NULL: OpenSSL default */
};

/* store.path when the file does not set it. */
#define CONFIG_DEFAULT_STORE LOCALSTATEDIR "/lib/popgate/uids.db"

struct pg_config {
	char *path;

	/* daemon */
	char *user;                 /* drop privileges to this user; NULL: stay */
	unsigned max_connections;   /* default 1000 */
	uint64_t drain_time_ms;     /* default 30 s */
	/* Sessions one process serves one after another; default 1. */
	unsigned sessions_per_process;
	enum log_level log_level;

	struct listener_config *listeners;
	size_t n_listeners;

	struct tls_config tls;

	struct upstream_settings upstream;  /* strings owned by the config */
	uint64_t upstream_keepalive_ms;     /* default 5 min */

	struct pop3_settings pop3;
};

/*
 * Read and check PATH.  Returns the configuration (free with config_free),
 * or NULL with a message "FILE:LINE: what is wrong" in ERRBUF.  Warnings
 * (e.g. max_command_size under 255) are logged with log_warn.
 */
struct pg_config *config_load(const char *path, char *errbuf, size_t errlen);

void config_free(struct pg_config *cfg);

#endif
