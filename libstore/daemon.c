/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Daemon plumbing shared by the server programs; see daemon.h. */
#include "daemon.h"
#include "vstor/node.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "vstor/parse.h"
#include "vstor/reactor.h"

int vs_daemon_listen_unix(const char *path, struct vs_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, probe, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return vs_error_set(err, -ENAMETOOLONG, "Socket path too long: '%s'", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "socket");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		goto bound;
	ret = -errno;
	if (ret == -EADDRINUSE) {
		/* A stale socket of a dead server may be replaced; a live one not. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
		    errno == ECONNREFUSED) {
			unlink(path);
			ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
		}
		if (probe >= 0)
			close(probe);
		if (ret == 0)
			goto bound;
	}
	close(fd);
	return vs_error_setf_errno(err, ret, "Failed to bind socket to %s", path);
bound:
	if (listen(fd, VS_DAEMON_BACKLOG) < 0) {
		ret = -errno;
		close(fd);
		return vs_error_setf_errno(err, ret, "listen on %s", path);
	}
	return fd;
}

int vs_daemon_listen_tcp(const char *host, const char *port, int *fds, unsigned max,
			 struct vs_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *res, *ai;
	unsigned n = 0;
	int ret, one = 1;

	ret = getaddrinfo(host, port, &hints, &res);
	if (ret)
		return vs_error_set(err, -EINVAL, "Cannot resolve %s:%s: %s", host ? host : "*",
				    port, gai_strerror(ret));
	for (ai = res; ai && n < max; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, VS_DAEMON_BACKLOG) < 0) {
			ret = -errno;
			close(fd);
			while (n)
				close(fds[--n]);
			freeaddrinfo(res);
			return vs_error_setf_errno(err, ret, "Failed to listen on %s:%s",
						   host ? host : "*", port);
		}
		fds[n++] = fd;
	}
	freeaddrinfo(res);
	if (!n)
		return vs_error_set(err, -EADDRNOTAVAIL, "No address to listen on for %s:%s",
				    host ? host : "*", port);
	return (int)n;
}

int vs_daemon_listen_fds(int *fds, unsigned max, struct vs_error *err)
{
	int n = sd_listen_fds(1);

	if (n < 0)
		return vs_error_setf_errno(err, n, "Socket activation (LISTEN_FDS)");
	if ((unsigned)n > max) {
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
		return vs_error_set(err, -EINVAL,
				    "Socket activation passed %d sockets (at most %u)", n, max);
	}
	for (int i = 0; i < n; i++) {
		fds[i] = SD_LISTEN_FDS_START + i;
		fcntl(fds[i], F_SETFD, FD_CLOEXEC);
	}
	return n;
}

int vs_daemon_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
				struct vs_error *err)
{
	char tmp[4096], dir[4096];
	const char *slash;
	int fd, ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return vs_error_set(err, -ENAMETOOLONG, "File name too long: '%s'", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot write '%s'", tmp);
	if (fchmod(fd, mode) < 0) /* an old PATH.tmp kept its mode */
		ret = -errno;
	for (size_t done = 0; ret == 0 && done < len;) {
		ssize_t n = write(fd, (const char *)data + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ret = n < 0 ? -errno : -EIO;
		else
			done += (size_t)n;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(tmp);
		return vs_error_setf_errno(err, ret, "Cannot write '%s'", path);
	}
	/* The rename itself reaches the disk with the directory. */
	slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot open directory '%s'", dir);
	ret = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot sync directory '%s'", dir);
	return 0;
}

int vs_daemon_write_pid(const char *path, struct vs_error *err)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

	return vs_daemon_write_file_atomic(path, buf, (size_t)n, 0644, err);
}

/* The write end of the pipe the parent of vs_daemon_fork() waits on, or -1. */
static int fork_ready_fd = -1;

int vs_daemon_fork(bool new_session, struct vs_error *err)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return vs_error_setf_errno(err, -errno, "pipe");
	pid = fork();
	if (pid < 0) {
		int ret = -errno;

		close(p[0]);
		close(p[1]);
		return vs_error_setf_errno(err, ret, "fork");
	}
	if (pid > 0) {
		/* Success only once the child serves; its stderr says why not. */
		close(p[1]);
		_exit(read(p[0], &c, 1) == 1 ? EXIT_SUCCESS : EXIT_FAILURE);
	}
	close(p[0]);
	if (new_session) {
		if (setsid() < 0)
			return vs_error_setf_errno(err, -errno, "setsid");
		pid = fork();
		if (pid < 0)
			return vs_error_setf_errno(err, -errno, "fork");
		if (pid > 0)
			_exit(EXIT_SUCCESS);
		if (chdir("/") < 0)
			return vs_error_setf_errno(err, -errno, "chdir /");
	}
	fork_ready_fd = p[1];
	return 0;
}

void vs_daemon_notify_ready(void)
{
	sd_notify(0, "READY=1");
	if (fork_ready_fd >= 0) {
		char ok = 0;

		if (write(fork_ready_fd, &ok, 1) != 1)
			fprintf(stderr, "%s: cannot release the parent: %s\n",
				program_invocation_short_name, strerror(errno));
		close(fork_ready_fd);
		fork_ready_fd = -1;
	}
}

int vs_daemon_signalfd(struct vs_error *err)
{
	sigset_t mask;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "signalfd");
	return fd;
}

int vs_daemon_wait_signal(int sigfd)
{
	for (;;) {
		struct signalfd_siginfo si;
		struct iovec iov = { &si, sizeof(si) };
		ssize_t n = vs_aio_preadv(sigfd, &iov, 1, 0);

		if (n == (ssize_t)sizeof(si))
			return (int)si.ssi_signo;
		if (n < 0 && n != -EINTR && n != -EAGAIN)
			return (int)n;
	}
}

unsigned vs_daemon_parse_limit(const char *v, const char *what, unsigned unlimited)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < 0 || n > 1000000)
		vs_die("Invalid %s '%s'", what, v);
	return n ? (unsigned)n : unlimited;
}

bool vs_daemon_parse_bool(const char *v, const char *what)
{
	bool b;

	if (vs_parse_bool(v, &b) < 0)
		vs_die("Invalid value '%s' for %s (use on or off)", v, what);
	return b;
}

bool vs_daemon_export_option(int opt, const char *arg, struct vs_daemon_export_opts *o)
{
	switch (opt) {
	case VS_DAEMON_OPT_CACHE:
		if (vs_cache_mode_parse(arg, &o->cache) < 0)
			vs_die("Invalid cache mode '%s'", arg);
		return true;
	case VS_DAEMON_OPT_AIO:
		if (strcmp(arg, "threads") && strcmp(arg, "native") && strcmp(arg, "io_uring"))
			vs_die("Invalid aio mode '%s'", arg);
		return true;
	case VS_DAEMON_OPT_DISCARD:
		if (vs_export_discard_parse(arg, &o->discard) < 0)
			vs_die("Invalid discard mode '%s'", arg);
		return true;
	case VS_DAEMON_OPT_DETECT_ZEROES:
		if (vs_export_detect_zeroes_parse(arg, &o->detect_zeroes) < 0)
			vs_die("Invalid detect-zeroes mode '%s'", arg);
		return true;
	default:
		return false;
	}
}

void vs_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_invocation_short_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_FAILURE);
}

void vs_daemon_notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

bool vs_daemon_next_kv(char **p, char **key, char **val, const char *what)
{
	char *r = *p, *w;

	if (!*r)
		return false;
	*key = r;
	while (*r && *r != '=' && *r != ',')
		r++;
	if (*r != '=')
		vs_die("Invalid %s item '%s' (expected key=value)", what, *key);
	*r++ = '\0';
	*val = w = r;
	while (*r) {
		if (*r == ',' && r[1] == ',') {
			*w++ = ',';
			r += 2;
		} else if (*r == ',') {
			r++;
			break;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	*p = r;
	return true;
}

void vs_daemon_object_secret(const char *arg)
{
	char *dup = strdup(arg), *p, *key, *val;
	const char *id = NULL, *data = NULL, *file = NULL, *format = NULL;
	struct vs_error err = { 0 };

	if (!dup)
		vs_die("Out of memory");
	p = strchr(dup, ',');
	if (p)
		*p++ = '\0';
	else
		p = dup + strlen(dup);
	if (strcmp(dup, "secret") && strcmp(dup, "qom-type=secret"))
		vs_die("Unsupported --object type '%s' (secret)", dup);
	while (vs_daemon_next_kv(&p, &key, &val, "option")) {
		if (!strcmp(key, "id"))
			id = val;
		else if (!strcmp(key, "data"))
			data = val;
		else if (!strcmp(key, "file"))
			file = val;
		else if (!strcmp(key, "format"))
			format = val;
		else
			vs_die("Property 'secret.%s' not found", key);
	}
	if (vs_secret_define(id, data, file, format, &err) < 0)
		vs_die("%s", err.msg);
	memset(dup, 0, strlen(arg));
	free(dup);
}

void vs_daemon_image_opts(const char *arg, const char **file, const char **fmt,
			  const char **key_secret)
{
	char *p = strdup(arg), *key, *val;

	if (!p)
		vs_die("Out of memory");
	*file = NULL;
	while (vs_daemon_next_kv(&p, &key, &val, "option")) {
		if (!strcmp(key, "driver"))
			*fmt = val;
		else if (!strcmp(key, "file.filename") || !strcmp(key, "filename"))
			*file = val;
		else if (!strcmp(key, "encrypt.key-secret") || !strcmp(key, "key-secret"))
			*key_secret = val;
		else if (!strcmp(key, "file.driver") && !strcmp(val, "file"))
			;
		else
			vs_die("Invalid --image-opts parameter '%s'", key);
	}
	if (!*file)
		vs_die("--image-opts: parameter 'file.filename' is missing");
}
