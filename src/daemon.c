/*
 * daemon.c - the master process: listeners, privileges, one child per
 * session, and an orderly stop.
 *
 * Signals reach the master's poll() loop through a self-pipe, so the loop
 * never misses one and no real work happens in a handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "child_table.h"
#include "client.h"
#include "daemon.h"
#include "imap_transport.h"
#include "log.h"
#include "monotime.h"
#include "store_holder.h"
#include "tls.h"
#include "uidstore_sqlite.h"

#define LISTEN_BACKLOG 1024
#define ACCEPTS_PER_WAKEUP 64
/* After drain_time, sessions get this much more to finish an UPDATE they
 * are in before they are killed. */
#define STOP_GRACE_EXTRA_MS 5000
/* Above every buffer a session allocates again and again; a free heap top
 * larger than the trim threshold still goes back to the kernel. */
#define SESSION_MMAP_THRESHOLD (1024 * 1024)
#define SESSION_TRIM_THRESHOLD (4 * 1024 * 1024)
/* With sessions_per_process > 1, a process left without a client this
 * long exits, so the processes of a burst do not linger. */
#define REUSE_IDLE_MS 10000
/* The store holder closes the store (a checkpoint) within this. */
#define STORE_HOLDER_STOP_MS 10000

struct listen_socket {
	int fd;
	const struct listener_config *config;
	size_t n_idle;  /* session processes waiting for a client here */
};

struct daemon {
	const struct pg_config *cfg;
	SSL_CTX *tls_ctx;
	SSL_CTX *upstream_tls_ctx;  /* NULL: the upstream has no TLS */
	struct listen_socket *sockets;
	size_t n_sockets;
	struct child_table children;
	/*
	 * With sessions_per_process > 1 only.  The master holds the write end
	 * of accepting_pipe until it stops accepting; a session process
	 * waiting for its next client holds the read end and sees it close.
	 * Such a process reports on idle_pipe when it starts and stops
	 * waiting, and while any does, the master leaves the listeners to
	 * them: it would otherwise fork, or refuse a client at
	 * max_connections, while a process sat idle.
	 */
	int accepting_pipe[2];
	int idle_pipe[2];
	pid_t store_holder;  /* store_holder.h; -1: none running */
	bool killing;  /* the stop has sent SIGKILL: such a death is no crash */
};

/* What a session process writes on idle_pipe: one write, so atomic. */
struct idle_note {
	pid_t pid;
	int idle;
};

static int signal_pipe[2] = { -1, -1 };
static volatile sig_atomic_t stop_signal;
/* SIGTERM and SIGINT received, at most 3: each one after the first moves
 * the stop on to its next step (see stop()). */
static volatile sig_atomic_t stop_signals;
static volatile sig_atomic_t child_stop_requested;
static volatile sig_atomic_t reload_requested;  /* SIGHUP */

static void master_signal_handler(int sig)
{
	int saved_errno = errno;
	char byte = (char)sig;

	if (sig == SIGTERM || sig == SIGINT) {
		stop_signal = sig;
		if (stop_signals < 3)
			stop_signals++;
	}
	if (sig == SIGHUP)
		reload_requested = 1;
	/* A full pipe already guarantees a wake-up. */
	(void)!write(signal_pipe[1], &byte, 1);
	errno = saved_errno;
}

static void child_signal_handler(int sig)
{
	(void)sig;
	child_stop_requested = 1;
}

static void set_handler(int sig, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a signal must interrupt poll(). */
	sigaction(sig, &sa, NULL);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("event=rlimit_failed error=\"%s\"",
				 strerror(errno));
	}
}

static int add_socket(struct daemon *d, int fd,
		      const struct listener_config *l)
{
	struct listen_socket *grown;

	grown = realloc(d->sockets, (d->n_sockets + 1) * sizeof(*grown));
	if (grown == NULL)
		return -1;
	d->sockets = grown;
	d->sockets[d->n_sockets++] = (struct listen_socket) {
		.fd = fd, .config = l,
	};
	return 0;
}

/* Bind every address L resolves to. */
static int bind_listener(struct daemon *d, const struct listener_config *l)
{
	struct addrinfo hints, *res, *ai;
	char port[16];
	int gai;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", l->port);
	gai = getaddrinfo(l->address, port, &hints, &res);
	if (gai != 0) {
		log_error("event=bind_failed address=%s port=%u error=\"%s\"",
			  l->address, l->port, gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		char host[NI_MAXHOST] = "?";
		int one = 1, fd;

		(void)getnameinfo(ai->ai_addr, ai->ai_addrlen, host,
				  sizeof(host), NULL, 0, NI_NUMERICHOST);
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
			    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			goto fail;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
				 sizeof(one));
		/* So that "::" and "0.0.0.0" can both be listed. */
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
					 sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, LISTEN_BACKLOG) < 0 ||
		    add_socket(d, fd, l) < 0) {
			close(fd);
			goto fail;
		}
		log_info("event=listening address=%s port=%u tls=%s", host,
			 l->port, l->tls ? "yes" : "no");
		continue;
fail:
		log_error("event=bind_failed address=%s port=%u error=\"%s\"",
			  host, l->port, strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return 0;
}

static int drop_privileges(const char *user)
{
	struct passwd *pw;

	if (user == NULL) {
		if (getuid() == 0 || geteuid() == 0) {
			log_error("event=startup_failed error=\"refusing to "
				  "run as root: set daemon.user\"");
			return -1;
		}
		return 0;
	}
	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		log_error("event=startup_failed error=\"unknown user %s\"",
			  user);
		return -1;
	}
	if (geteuid() != 0) {
		if (pw->pw_uid == geteuid())
			return 0;
		log_error("event=startup_failed error=\"cannot switch to "
			  "user %s without root\"", user);
		return -1;
	}
	if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		log_error("event=startup_failed error=\"switching to user %s: "
			  "%s\"", user, strerror(errno));
		return -1;
	}
	/* If root can be regained, the drop did not happen. */
	if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
		log_error("event=startup_failed error=\"privileges of root "
			  "could be regained\"");
		return -1;
	}
	log_info("event=privileges_dropped user=%s uid=%ld", user,
		 (long)pw->pw_uid);
	return 0;
}

static void reject_busy(int fd)
{
	static const char msg[] =
		"-ERR [SYS/TEMP] Too many connections, try again later\r\n";

	/* Best effort on a fresh socket whose send buffer is empty. */
	(void)!send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void close_listeners(struct daemon *d)
{
	for (size_t i = 0; i < d->n_sockets; i++)
		close(d->sockets[i].fd);
	d->n_sockets = 0;
}

/* Tell the master whether this process waits for a client.  The write
 * never blocks; the master reads at once, and the pipe holds thousands
 * of notes. */
static void note_idle(int idle_fd, bool idle)
{
	struct idle_note note = { getpid(), idle };

	(void)!write(idle_fd, &note, sizeof(note));
}

/*
 * The next client for a session process that may serve more than one:
 * a descriptor accepted from LISTEN_FD, or -1 when the process should
 * exit instead (asked to stop, the master stopped accepting, or no client
 * came for REUSE_IDLE_MS).  Other processes wait on the same socket; one
 * that loses the race for a connection simply waits again.
 */
static int wait_client(int listen_fd, int accepting_fd,
		       const sigset_t *wait_mask,
		       struct sockaddr_storage *peer, socklen_t *peer_len)
{
	uint64_t deadline = monotime_ms() + REUSE_IDLE_MS;

	while (!child_stop_requested) {
		struct pollfd pfds[2] = {
			{ .fd = listen_fd, .events = POLLIN },
			{ .fd = accepting_fd, .events = POLLIN },
		};
		uint64_t left = monotime_left_ms(deadline);
		struct timespec ts = monotime_timespec(left);
		int n, fd;

		if (left == 0)
			return -1;
		/* SIGTERM is let through only while waiting here. */
		n = ppoll(pfds, 2, &ts, wait_mask);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n <= 0)
			continue;
		if (pfds[1].revents != 0)
			return -1;
		*peer_len = sizeof(*peer);
		fd = accept4(listen_fd, (struct sockaddr *)peer, peer_len,
			     SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

static int next_client(const struct daemon *d, int listen_fd,
		       const sigset_t *wait_mask,
		       struct sockaddr_storage *peer, socklen_t *peer_len)
{
	int fd;

	note_idle(d->idle_pipe[1], true);
	fd = wait_client(listen_fd, d->accepting_pipe[0], wait_mask, peer,
			 peer_len);
	note_idle(d->idle_pipe[1], false);
	return fd;
}

/*
 * In the new session process: never returns.  It serves FD, then, when
 * sessions_per_process allows more, the clients it accepts itself from
 * the same listener, one after another.  Each session frees everything
 * it allocated and wipes the secrets it held, but whatever else a
 * session left in freed memory is in the process the next user's session
 * runs in: the reason the default is one session per process.
 */
static void run_child(struct daemon *d, const struct listen_socket *ls,
		      int fd, const struct sockaddr_storage *peer,
		      socklen_t peer_len, const sigset_t *orig_mask)
{
	struct client_params params = {
		.cfg = d->cfg,
		.listener = ls->config,
		.tls_ctx = d->tls_ctx,
		.upstream_tls_ctx = d->upstream_tls_ctx,
		.stop_requested = &child_stop_requested,
	};
	unsigned more = d->cfg->sessions_per_process - 1;
	int listen_fd = -1;
	sigset_t blocked;

	/* A session's buffers (a quarter-megabyte body reader per RETR,
	 * the output buffer) are freed and allocated again command after
	 * command.  By default glibc gives such memory back to the kernel
	 * when it is freed, and the next RETR faults its pages in again,
	 * zeroed.  A session process is short and its exit returns
	 * everything, so it keeps what it freed. */
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
	mallopt(M_MMAP_THRESHOLD, SESSION_MMAP_THRESHOLD);
	mallopt(M_TRIM_THRESHOLD, SESSION_TRIM_THRESHOLD);
#endif
	if (more > 0 && d->accepting_pipe[0] >= 0) {
		listen_fd = fcntl(ls->fd, F_DUPFD_CLOEXEC, 0);
		close(d->accepting_pipe[1]);
		close(d->idle_pipe[0]);
	}
	close_listeners(d);
	close(signal_pipe[0]);
	close(signal_pipe[1]);
	/* A terminal's ^C goes to the master, which stops sessions in
	 * order; SIGTERM asks this session to close between commands.
	 * SIGHUP is the master's (reload). */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	set_handler(SIGTERM, child_signal_handler);

	params.wait_sigmask = *orig_mask;
	sigdelset(&params.wait_sigmask, SIGTERM);
	blocked = *orig_mask;
	sigaddset(&blocked, SIGTERM);
	sigprocmask(SIG_SETMASK, &blocked, NULL);

	client_run(&params, fd, (const struct sockaddr *)peer, peer_len);
	for (; more > 0 && listen_fd >= 0; more--) {
		struct sockaddr_storage next_peer;
		socklen_t next_len;

		fd = next_client(d, listen_fd, &params.wait_sigmask,
				 &next_peer, &next_len);
		if (fd < 0)
			break;
		client_run(&params, fd, (const struct sockaddr *)&next_peer,
			   next_len);
	}
	_exit(0);
}

static void accept_clients(struct daemon *d, const struct listen_socket *ls)
{
	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof(peer);
		sigset_t all, orig;
		pid_t pid;
		int fd;

		fd = accept4(ls->fd, (struct sockaddr *)&peer, &peer_len,
			     SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_warn("event=accept_failed error=\"%s\"",
					 strerror(errno));
			return;
		}
		if (d->children.count >= d->cfg->max_connections) {
			char ip[NI_MAXHOST] = "?";

			(void)getnameinfo((struct sockaddr *)&peer, peer_len,
					  ip, sizeof(ip), NULL, 0,
					  NI_NUMERICHOST);
			log_warn("event=rejected reason=max_connections ip=%s "
				 "sessions=%zu", ip, d->children.count);
			reject_busy(fd);
			continue;
		}
		if (child_table_reserve(&d->children) < 0) {
			reject_busy(fd);
			continue;
		}

		/* No handler may run in the child before it installs its
		 * own. */
		sigfillset(&all);
		sigprocmask(SIG_BLOCK, &all, &orig);
		pid = fork();
		if (pid == 0)
			run_child(d, ls, fd, &peer, peer_len, &orig);
		sigprocmask(SIG_SETMASK, &orig, NULL);
		close(fd);
		if (pid < 0) {
			log_error("event=fork_failed error=\"%s\"",
				  strerror(errno));
			continue;
		}
		child_table_add(&d->children, pid,
				(size_t)(ls - d->sockets));
	}
}

static void close_pipe(int fds[2])
{
	for (int i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

/* Mark C waiting for a client on its listener, or not. */
static void set_idle(struct daemon *d, struct child *c, bool idle)
{
	if (c->idle == idle)
		return;
	c->idle = idle;
	if (idle)
		d->sockets[c->listener].n_idle++;
	else
		d->sockets[c->listener].n_idle--;
}

/* Take the idle notes the session processes wrote. */
static void read_idle_notes(struct daemon *d)
{
	struct idle_note notes[64];
	ssize_t n;

	while ((n = read(d->idle_pipe[0], notes, sizeof(notes))) > 0) {
		for (size_t k = 0; k < (size_t)n / sizeof(notes[0]); k++) {
			struct child *c = child_table_find(&d->children,
							   notes[k].pid);

			if (c != NULL)
				set_idle(d, c, notes[k].idle != 0);
		}
	}
}

/*
 * Fork the process that holds the store open (store_holder.h).  Without
 * it sessions still work, so a failure is only logged.
 */
static void start_store_holder(struct daemon *d)
{
	pid_t master = getpid(), pid;
	sigset_t all, orig;

	if (d->cfg->upstream.uid_store == NULL)
		return;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &orig);
	pid = fork();
	if (pid == 0) {
		close_listeners(d);
		close_pipe(d->accepting_pipe);
		close_pipe(d->idle_pipe);
		close(signal_pipe[0]);
		close(signal_pipe[1]);
		store_holder_run(d->cfg->upstream.uid_store, master);
	}
	sigprocmask(SIG_SETMASK, &orig, NULL);
	if (pid < 0) {
		log_warn("event=store_holder_failed error=\"%s\"",
			 strerror(errno));
		return;
	}
	d->store_holder = pid;
}

/* The holder has exited: note it, and why if it was not asked to. */
static void store_holder_exited(struct daemon *d, int status, bool asked)
{
	d->store_holder = -1;
	if (asked && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	if (WIFSIGNALED(status))
		log_warn("event=store_holder_exited signal=%d msg=\"logins "
			 "open the store alone until a reload\"",
			 WTERMSIG(status));
	else
		log_warn("event=store_holder_exited status=%d msg=\"logins "
			 "open the store alone until a reload\"",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void forget_child(struct daemon *d, pid_t pid)
{
	struct child *c = child_table_find(&d->children, pid);

	if (c == NULL)
		return;
	set_idle(d, c, false);
	child_table_remove(&d->children, c);
}

static void reap_children(struct daemon *d)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == d->store_holder) {
			store_holder_exited(d, status, false);
			continue;
		}
		forget_child(d, pid);
		if (WIFSIGNALED(status) && d->killing &&
		    WTERMSIG(status) == SIGKILL)
			log_warn("event=session_killed pid=%ld", (long)pid);
		else if (WIFSIGNALED(status))
			log_error("event=session_crashed pid=%ld signal=%d",
				  (long)pid, WTERMSIG(status));
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			log_warn("event=session_failed pid=%ld status=%d",
				 (long)pid, WEXITSTATUS(status));
	}
}

static void drain_signal_pipe(void)
{
	char buf[64];

	while (read(signal_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * Sleep until a signal comes through the self-pipe (SIGCHLD, mostly),
 * SLICE_MS pass or DEADLINE does: waking after a slice means a lost
 * SIGCHLD cannot stall a stop.  False once DEADLINE has passed.
 */
static bool wait_signal(uint64_t deadline, int slice_ms)
{
	struct pollfd pfd = { .fd = signal_pipe[0], .events = POLLIN };
	uint64_t left = monotime_left_ms(deadline);

	if (left == 0)
		return false;
	if (poll(&pfd, 1, left > (uint64_t)slice_ms ? slice_ms : (int)left) > 0)
		drain_signal_pipe();
	return true;
}

/* Wait, reaping, until no child is left, the deadline passes or the
 * operator has sent more than SIGNALS stop signals. */
static void wait_children(struct daemon *d, uint64_t deadline,
			  sig_atomic_t signals)
{
	reap_children(d);
	while (d->children.count > 0 && stop_signals <= signals &&
	       wait_signal(deadline, 1000))
		reap_children(d);
}

/* After the last session: the holder closes the store and exits. */
static void stop_store_holder(struct daemon *d)
{
	uint64_t deadline = monotime_ms() + STORE_HOLDER_STOP_MS;
	pid_t pid = d->store_holder;
	int status = 0;

	if (pid < 0)
		return;
	kill(pid, SIGTERM);
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (!wait_signal(deadline, 100)) {
			kill(pid, SIGKILL);
			(void)waitpid(pid, &status, 0);
			break;
		}
	}
	store_holder_exited(d, status, true);
}

static void signal_children(struct daemon *d, int sig)
{
	for (size_t i = 0; i < d->children.count; i++)
		kill(d->children.children[i].pid, sig);
}

/*
 * The stop has three steps: sessions run on for drain_time, then are asked
 * to close between commands (never inside UPDATE) and get the command
 * timeout and a little more, then are killed.  A further SIGTERM or SIGINT
 * ends the step under way, for an operator who cannot wait.
 */
static void stop(struct daemon *d)
{
	uint64_t grace = d->cfg->upstream.command_timeout_ms +
		STOP_GRACE_EXTRA_MS;

	log_info("event=stopping signal=%d sessions=%zu drain_ms=%llu",
		 (int)stop_signal, d->children.count,
		 (unsigned long long)d->cfg->drain_time_ms);
	/* Processes waiting for another client exit now. */
	close_pipe(d->accepting_pipe);
	/* A session process that may serve more than one session holds the
	 * listening sockets too: shut them down rather than only close our
	 * descriptors, so new clients are refused now, not left queued until
	 * the last such process is gone. */
	for (size_t i = 0; i < d->n_sockets; i++)
		(void)shutdown(d->sockets[i].fd, SHUT_RD);
	close_listeners(d);
	wait_children(d, monotime_ms() + d->cfg->drain_time_ms, 1);
	if (d->children.count == 0)
		return;
	log_info("event=stopping_sessions sessions=%zu reason=%s",
		 d->children.count, stop_signals > 1 ? "signal" : "drain_time");
	signal_children(d, SIGTERM);
	wait_children(d, monotime_ms() + grace, 2);
	if (d->children.count == 0)
		return;
	log_warn("event=killing_sessions sessions=%zu reason=%s",
		 d->children.count, stop_signals > 2 ? "signal" : "timeout");
	d->killing = true;
	signal_children(d, SIGKILL);
	wait_children(d, monotime_ms() + 5000, 3);
}

/*
 * SIGHUP: read the certificate and key files again, for a renewed
 * certificate.  The master runs as daemon.user by now, so they must be
 * readable by it; if anything is wrong the old context stays.  Session
 * processes keep the context they were forked with.
 */
static void reload_tls(struct daemon *d)
{
	const struct tls_config *tls = &d->cfg->tls;
	char err[512], cbuf[256];
	SSL_CTX *ctx;

	if (tls->certificate == NULL) {
		log_info("event=reload tls=none");
		return;
	}
	ctx = tls_server_ctx_new(tls, err, sizeof(err));
	if (ctx == NULL) {
		log_error("event=tls_reload_failed error=\"%s\" "
			  "msg=\"the certificate loaded before stays\"", err);
		return;
	}
	tls_server_ctx_free(d->tls_ctx);
	d->tls_ctx = ctx;
	log_info("event=tls_reloaded certificate=%s",
		 log_value(cbuf, sizeof(cbuf), tls->certificate));
}

static int serve(struct daemon *d)
{
	size_t n_fds = d->n_sockets + 2;
	struct pollfd *pfds = calloc(n_fds, sizeof(*pfds));

	if (pfds == NULL)
		return -1;
	pfds[0].fd = signal_pipe[0];
	pfds[0].events = POLLIN;
	pfds[n_fds - 1].fd = d->idle_pipe[0];  /* -1 (ignored) when unused */
	pfds[n_fds - 1].events = POLLIN;
	while (!stop_signal) {
		int n;

		/* A listener with a process waiting on it is left to that. */
		for (size_t i = 0; i < d->n_sockets; i++) {
			pfds[i + 1].fd = d->sockets[i].n_idle > 0 ? -1 :
				d->sockets[i].fd;
			pfds[i + 1].events = POLLIN;
			pfds[i + 1].revents = 0;
		}
		n = poll(pfds, n_fds, -1);

		if (n < 0 && errno != EINTR) {
			log_error("event=poll_failed error=\"%s\"",
				  strerror(errno));
			free(pfds);
			return -1;
		}
		if (n <= 0)
			continue;
		if (pfds[0].revents != 0)
			drain_signal_pipe();
		reap_children(d);
		if (reload_requested) {
			reload_requested = 0;
			reload_tls(d);
			if (d->store_holder < 0)
				start_store_holder(d);
		}
		if (pfds[n_fds - 1].revents != 0)
			read_idle_notes(d);
		/* A note read just now may have left a listener to a
		 * waiting process since poll() looked at it. */
		for (size_t i = 0; i < d->n_sockets && !stop_signal; i++) {
			if (pfds[i + 1].revents != 0 &&
			    d->sockets[i].n_idle == 0)
				accept_clients(d, &d->sockets[i]);
		}
	}
	free(pfds);
	return 0;
}

static int setup_signals(void)
{
	if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	set_handler(SIGTERM, master_signal_handler);
	set_handler(SIGINT, master_signal_handler);
	set_handler(SIGCHLD, master_signal_handler);
	set_handler(SIGHUP, master_signal_handler);
	return 0;
}

int daemon_run(const struct pg_config *cfg)
{
	struct daemon d = {
		.cfg = cfg, .accepting_pipe = { -1, -1 }, .idle_pipe = { -1, -1 },
		.store_holder = -1,
	};
	int ret = POPGATE_EXIT_STARTUP;
	char err[512];

	raise_fd_limit();
	/*
	 * Load OpenSSL's configuration and tables once, here: otherwise every
	 * session process parses openssl.cnf and builds them again after
	 * fork (about a tenth of a plain login's CPU time).
	 */
	if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1) {
		log_error("event=startup_failed error=\"OpenSSL initialisation "
			  "failed\"");
		return POPGATE_EXIT_STARTUP;
	}
	/* The same for SQLite, which every login with a store opens. */
	if (cfg->upstream.uid_store != NULL && uidstore_sqlite_init() < 0) {
		log_error("event=startup_failed error=\"SQLite initialisation "
			  "failed\"");
		return POPGATE_EXIT_STARTUP;
	}
	if (setup_signals() < 0) {
		log_error("event=startup_failed error=\"%s\"", strerror(errno));
		return POPGATE_EXIT_STARTUP;
	}
	if (cfg->tls.certificate != NULL) {
		d.tls_ctx = tls_server_ctx_new(&cfg->tls, err, sizeof(err));
		if (d.tls_ctx == NULL) {
			log_error("event=startup_failed error=\"%s\"", err);
			goto out;
		}
	}
	/*
	 * Once, here: a session would otherwise build it and read the trust
	 * store for every login, and a CA file may be readable by root only.
	 */
	if (cfg->upstream.tls != UPSTREAM_TLS_NONE) {
		struct transport_error te = { 0 };

		d.upstream_tls_ctx = imap_transport_ctx_new(
			cfg->upstream.ca_file, cfg->upstream.verify, &te);
		if (d.upstream_tls_ctx == NULL) {
			log_error("event=startup_failed error=\"upstream TLS: "
				  "%s\"", te.text);
			goto out;
		}
	}
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		if (bind_listener(&d, &cfg->listeners[i]) < 0)
			goto out;
	}
	if (drop_privileges(cfg->user) < 0)
		goto out;
	if (cfg->sessions_per_process > 1 &&
	    (pipe2(d.accepting_pipe, O_CLOEXEC) < 0 ||
	     pipe2(d.idle_pipe, O_CLOEXEC | O_NONBLOCK) < 0)) {
		log_error("event=startup_failed error=\"%s\"", strerror(errno));
		goto out;
	}
	log_info("event=started pid=%ld max_connections=%u "
		 "sessions_per_process=%u", (long)getpid(),
		 cfg->max_connections, cfg->sessions_per_process);
	if (cfg->upstream.tls != UPSTREAM_TLS_NONE && !cfg->upstream.verify)
		log_warn("event=upstream_verify_disabled host=%s "
			 "msg=\"the upstream certificate is not verified\"",
			 cfg->upstream.host);
	else if (cfg->upstream.tls == UPSTREAM_TLS_NONE)
		log_warn("event=upstream_plaintext host=%s "
			 "msg=\"passwords go to the upstream unencrypted\"",
			 cfg->upstream.host);
	if (cfg->upstream.uid_store == NULL)
		log_warn("event=no_uid_store msg=\"unique-ids are bare IMAP "
			 "UIDs: a UIDVALIDITY change will make clients fetch "
			 "everything again\"");

	start_store_holder(&d);
	if (serve(&d) == 0)
		ret = POPGATE_EXIT_OK;
	stop(&d);
	stop_store_holder(&d);
	log_info("event=stopped");
out:
	close_listeners(&d);
	close_pipe(d.accepting_pipe);
	close_pipe(d.idle_pipe);
	free(d.sockets);
	child_table_free(&d.children);
	tls_server_ctx_free(d.tls_ctx);
	imap_transport_ctx_free(d.upstream_tls_ctx);
	close(signal_pipe[0]);
	close(signal_pipe[1]);
	return ret;
}
