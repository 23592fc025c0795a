/*
 * popbench - load generator for POP3 endpoints, with a raw IMAP reference
 * mode.  Runs bounded (max sessions, max seconds) and prints one JSON line.
 *
 * Load run:  N threads each run whole sessions back to back until the
 * session budget is spent or the duration is over; sessions in flight at
 * the end may finish within one I/O timeout, after that they are counted
 * as aborted.  Idle mode (--idle N): open N authenticated sessions, print
 * one JSON line when they are up, hold them until SIGTERM, SIGINT or
 * SIGUSR1 (or --hold seconds), then close them.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_session.h"
#include "bench_stats.h"

struct options {
	const struct bench_protocol *proto;
	struct bench_target target;
	const char *user_pattern;	/* may hold one "%d" */
	unsigned long users;
	unsigned int concurrency;
	unsigned long max_sessions;	/* 0 = as many as time allows */
	double duration_s;
	unsigned long idle;
	double hold_s;
	const char *label;
};

struct run {
	const struct options *opt;
	double soft_deadline_ms;	/* no new session after this */
	atomic_ulong next_session;
	struct bnet **idle_conns;	/* idle mode: one slot per session */
};

struct worker {
	pthread_t thread;
	struct run *run;
	struct bench_stats stats;
	bool oom;
};

static const char *workload_names[] = {
	[WORKLOAD_SYNC] = "sync",
	[WORKLOAD_UIDL_ONLY] = "uidl-only",
	[WORKLOAD_LOGIN_ONLY] = "login-only",
	[WORKLOAD_TOP0] = "top0",
};

/* USER_PATTERN with its "%d" replaced by a user number from 1 to USERS. */
static void user_name(const struct options *opt, unsigned long session,
		      char *buf, size_t size)
{
	const char *mark = strstr(opt->user_pattern, "%d");

	if (mark == NULL || opt->users == 0) {
		snprintf(buf, size, "%s", opt->user_pattern);
		return;
	}
	snprintf(buf, size, "%.*s%lu%s", (int)(mark - opt->user_pattern),
		 opt->user_pattern, session % opt->users + 1, mark + 2);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *run = w->run;
	const struct options *opt = run->opt;
	unsigned long limit = opt->idle ? opt->idle : opt->max_sessions;

	for (;;) {
		struct session_result res = { .login_ms = -1, .ready_ms = -1 };
		unsigned long n;
		char user[256];

		if (bench_now_ms() >= run->soft_deadline_ms)
			break;
		n = atomic_fetch_add(&run->next_session, 1);
		if (limit != 0 && n >= limit)
			break;
		user_name(opt, n, user, sizeof(user));
		if (opt->idle)
			run->idle_conns[n] = opt->proto->open_idle(
				&opt->target, user, &res);
		else
			opt->proto->run_session(&opt->target, user, &res);
		if (bench_stats_add(&w->stats, &res) < 0) {
			w->oom = true;
			break;
		}
	}
	return NULL;
}

static void print_latency(const char *name, struct latency_list *list)
{
	double p50 = latency_percentile(list, 50);
	double p90 = latency_percentile(list, 90);
	double p99 = latency_percentile(list, 99);
	double max = latency_percentile(list, 100);

	printf(",\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}",
	       name, p50, p90, p99, max);
}

static double cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void print_result(const struct options *opt, struct bench_stats *s,
			 double seconds)
{
	double secs = seconds > 0 ? seconds : 1e-9;

	printf("{\"protocol\":\"%s\",\"workload\":\"%s\",\"label\":",
	       opt->proto->name, workload_names[opt->target.workload]);
	json_string(stdout, opt->label);
	printf(",\"host\":");
	json_string(stdout, opt->target.host);
	printf(",\"port\":");
	json_string(stdout, opt->target.port);
	printf(",\"concurrency\":%u", opt->concurrency);
	if (opt->idle)
		printf(",\"idle\":%lu", opt->idle);
	printf(",\"seconds\":%.3f,\"sessions\":%lu,\"errors\":%lu,"
	       "\"aborted\":%lu,\"mismatches\":%lu,\"messages\":%lu,"
	       "\"bytes\":%llu,\"sessions_per_s\":%.3f,\"mb_per_s\":%.3f",
	       seconds, s->sessions, s->errors, s->aborted, s->mismatches,
	       s->messages, (unsigned long long)s->bytes,
	       (double)s->sessions / secs, (double)s->bytes / 1e6 / secs);
	print_latency("latency_ms", &s->session_ms);
	print_latency("login_ms", &s->login_ms);
	print_latency("ready_ms", &s->ready_ms);
	printf(",\"client_cpu_s\":%.3f,\"first_error\":", cpu_seconds());
	if (s->first_error != NULL) {
		char text[256];

		snprintf(text, sizeof(text), "%s%s%s", s->first_error,
			 s->first_detail[0] ? ": " : "", s->first_detail);
		json_string(stdout, text);
	} else {
		printf("null");
	}
	printf("}\n");
	fflush(stdout);
}

/* Hold the idle sessions until a signal or the hold time; the signals
 * are blocked in every thread, so sigtimedwait() sees them. */
static void hold_idle(const struct options *opt, const sigset_t *sigs)
{
	struct timespec ts = {
		.tv_sec = (time_t)opt->hold_s,
		.tv_nsec = (long)((opt->hold_s - (double)(time_t)opt->hold_s) *
				  1e9),
	};

	(void)sigtimedwait(sigs, NULL, &ts);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void usage(FILE *out)
{
	fprintf(out,
"usage: popbench --port PORT [options]\n"
"  --host HOST           server (default 127.0.0.1)\n"
"  --port PORT           server port (required)\n"
"  --imap                reference mode: the same work directly over IMAP\n"
"  --folder NAME         IMAP mailbox to SELECT (default INBOX)\n"
"  --user NAME           user; a %%d in it becomes 1..--users (default test)\n"
"  --users N             number of users for %%d (default 1)\n"
"  --password PASS       password for every user (default test)\n"
"  --workload W          sync | uidl-only | login-only | top0 (default sync)\n"
"  --max-messages M      fetch only the first M messages (default all)\n"
"  --concurrency C       parallel sessions (default 1)\n"
"  --sessions N          stop after N sessions (default: none)\n"
"  --duration S          start no session after S seconds (default 10)\n"
"  --timeout S           per read/write timeout (default 30)\n"
"  --tls | --starttls    implicit TLS, or STLS/STARTTLS (peer not verified)\n"
"  --idle N              open N authenticated sessions and hold them\n"
"  --hold S              idle mode: hold at most S seconds (default 600)\n"
"  --label TEXT          copied into the JSON result\n"
"Prints one JSON line; exits 0 when there were no errors nor mismatches.\n");
}

static int parse_workload(const char *name, enum bench_workload *w)
{
	size_t i;

	for (i = 0; i < sizeof(workload_names) / sizeof(*workload_names); i++) {
		if (strcmp(name, workload_names[i]) == 0) {
			*w = (enum bench_workload)i;
			return 0;
		}
	}
	return -1;
}

static int parse_number(const char *text, double min, double max,
			double *value_r)
{
	char *end;
	double v = strtod(text, &end);

	if (end == text || *end != '\0' || v < min || v > max)
		return -1;
	*value_r = v;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "imap", no_argument, NULL, 'I' },
		{ "folder", required_argument, NULL, 'f' },
		{ "user", required_argument, NULL, 'u' },
		{ "users", required_argument, NULL, 'U' },
		{ "password", required_argument, NULL, 'P' },
		{ "workload", required_argument, NULL, 'w' },
		{ "max-messages", required_argument, NULL, 'm' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "sessions", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "tls", no_argument, NULL, 'T' },
		{ "starttls", no_argument, NULL, 'S' },
		{ "idle", required_argument, NULL, 'i' },
		{ "hold", required_argument, NULL, 'h' },
		{ "label", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, '?' },
		{ NULL, 0, NULL, 0 },
	};
	double v;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'H': opt->target.host = optarg; break;
		case 'p': opt->target.port = optarg; break;
		case 'I': opt->proto = &bench_imap; break;
		case 'f': opt->target.folder = optarg; break;
		case 'u': opt->user_pattern = optarg; break;
		case 'P': opt->target.password = optarg; break;
		case 'T': opt->target.tls = BENCH_TLS_IMPLICIT; break;
		case 'S': opt->target.tls = BENCH_TLS_STARTTLS; break;
		case 'l': opt->label = optarg; break;
		case 'w':
			if (parse_workload(optarg, &opt->target.workload) < 0)
				return -1;
			break;
		case 'U':
			if (parse_number(optarg, 1, 1e6, &v) < 0)
				return -1;
			opt->users = (unsigned long)v;
			break;
		case 'm':
			if (parse_number(optarg, 0, 1e9, &v) < 0)
				return -1;
			opt->target.max_messages = (unsigned long)v;
			break;
		case 'c':
			if (parse_number(optarg, 1, 10000, &v) < 0)
				return -1;
			opt->concurrency = (unsigned int)v;
			break;
		case 'n':
			if (parse_number(optarg, 0, 1e12, &v) < 0)
				return -1;
			opt->max_sessions = (unsigned long)v;
			break;
		case 'd':
			if (parse_number(optarg, 0.001, 86400, &opt->duration_s) < 0)
				return -1;
			break;
		case 't':
			if (parse_number(optarg, 0.001, 3600, &v) < 0)
				return -1;
			opt->target.timeout_ms = (int)(v * 1000);
			break;
		case 'i':
			if (parse_number(optarg, 1, 1e6, &v) < 0)
				return -1;
			opt->idle = (unsigned long)v;
			break;
		case 'h':
			if (parse_number(optarg, 0, 86400, &opt->hold_s) < 0)
				return -1;
			break;
		default:
			return -1;
		}
	}
	if (optind != argc || opt->target.port == NULL)
		return -1;
	return 0;
}

static SSL_CTX *client_tls_context(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx != NULL)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

static void close_idle_sessions(const struct options *opt, struct run *run)
{
	unsigned long i;

	for (i = 0; i < opt->idle; i++) {
		if (run->idle_conns[i] != NULL)
			opt->proto->close_idle(run->idle_conns[i]);
	}
	free(run->idle_conns);
}

int main(int argc, char **argv)
{
	struct options opt = {
		.proto = &bench_pop3,
		.target = {
			.host = "127.0.0.1",
			.password = "test",
			.folder = "INBOX",
			.workload = WORKLOAD_SYNC,
			.timeout_ms = 30000,
		},
		.user_pattern = "test",
		.users = 1,
		.concurrency = 1,
		.duration_s = 10,
		.hold_s = 600,
		.label = "",
	};
	struct run run = { .opt = &opt };
	struct worker *workers;
	struct bench_stats total;
	sigset_t sigs;
	double start, seconds;
	bool failed = false;
	unsigned int i;

	if (parse_options(argc, argv, &opt) < 0) {
		usage(stderr);
		return 2;
	}
	raise_fd_limit();
	/* A server closing on us must be an error value, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	if (opt.idle)
		pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (opt.target.tls != BENCH_TLS_NONE) {
		opt.target.tls_ctx = client_tls_context();
		if (opt.target.tls_ctx == NULL) {
			fprintf(stderr, "popbench: cannot create TLS context\n");
			return 1;
		}
	}
	if (opt.idle) {
		run.idle_conns = calloc(opt.idle, sizeof(*run.idle_conns));
		if (run.idle_conns == NULL) {
			fprintf(stderr, "popbench: out of memory\n");
			return 1;
		}
	}
	workers = calloc(opt.concurrency, sizeof(*workers));
	if (workers == NULL) {
		fprintf(stderr, "popbench: out of memory\n");
		return 1;
	}
	start = bench_now_ms();
	run.soft_deadline_ms = start + opt.duration_s * 1000;
	opt.target.hard_deadline_ms = run.soft_deadline_ms +
		opt.target.timeout_ms;
	atomic_init(&run.next_session, 0);
	for (i = 0; i < opt.concurrency; i++) {
		workers[i].run = &run;
		bench_stats_init(&workers[i].stats);
		if (pthread_create(&workers[i].thread, NULL, worker_main,
				   &workers[i]) != 0) {
			fprintf(stderr, "popbench: cannot start thread %u\n", i);
			opt.concurrency = i;
			failed = true;
			break;
		}
	}
	bench_stats_init(&total);
	for (i = 0; i < opt.concurrency; i++) {
		pthread_join(workers[i].thread, NULL);
		failed |= workers[i].oom;
		if (bench_stats_merge(&total, &workers[i].stats) < 0)
			failed = true;
	}
	seconds = (bench_now_ms() - start) / 1000.0;
	free(workers);
	if (failed)
		fprintf(stderr, "popbench: out of memory or threads; "
			"the result is incomplete\n");
	print_result(&opt, &total, seconds);
	if (opt.idle) {
		hold_idle(&opt, &sigs);
		close_idle_sessions(&opt, &run);
	}
	failed |= total.errors > 0 || total.mismatches > 0 ||
		total.sessions == 0;
	bench_stats_free(&total);
	if (opt.target.tls_ctx != NULL)
		SSL_CTX_free(opt.target.tls_ctx);
	return failed ? 1 : 0;
}
