/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The nfs protocol driver: files on an NFSv3 export through libnfs's async
 * API, with no kernel mount. URI: nfs://HOST/EXPORT/FILE[?nfsport=N
 * &mountport=N&uid=N&gid=N&autoreconnect=N], as libnfs and QEMU take it
 * (the export is everything before the last '/').
 *
 * libnfs never owns the event loop: it exposes a socket, the events it
 * wants and a service call. A pump coroutine per session polls that socket
 * through the reactor's ring and services it; requests queue their RPC,
 * push it out at once when the connection is up (a non-blocking send), and
 * park until their callback runs in the pump. Callbacks only record the
 * result and wake the request, so nothing re-enters libnfs.
 */
#include "driver.h"
#include "nfs.h"

#include <errno.h>
#include <fcntl.h>
#include <nfsc/libnfs-raw-nfs.h>
#include <nfsc/libnfs.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reconnect attempts after the connection drops before requests fail. */
#define NFS_RECONNECTS 5

/* ---- sessions ---- */

struct nfs_call;

struct vs_nfs {
	struct nfs_context *nfs;
	struct vs_co *pump;
	bool pump_running;
	bool polling; /* the pump is parked in vs_aio_poll(poll_fd, poll_ev) */
	int poll_fd;
	unsigned poll_ev;
	bool stopping;
	bool dead;
	struct vs_co_queue pump_exit;
	struct nfs_call *calls; /* in flight, for failing them when the session dies */
	uint64_t max_read, max_write;
};

/*
 * One RPC in flight. Heap-allocated: when the session dies its waiter
 * returns, and a late callback from libnfs must find the call still there
 * (then it frees it).
 */
struct nfs_call {
	struct vs_nfs *s;
	struct vs_co *co;
	struct nfs_call *prev, *next;
	bool done;
	bool abandoned;
	int status;
	char msg[160];
	/* results */
	struct iovec *iov; /* read: copy the data here */
	int niov;
	uint64_t len;
	void *ptr; /* open: nfsfh; opendir: nfsdir */
	struct nfs_stat_64 st;
	struct nfs_statvfs_64 vfs;
};

static struct nfs_call *call_new(struct vs_nfs *s)
{
	struct nfs_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->s = s;
	c->co = vs_co_self();
	c->next = s->calls;
	if (s->calls)
		s->calls->prev = c;
	s->calls = c;
	return c;
}

static void call_unlink(struct nfs_call *c)
{
	if (!c->s)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->s->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->s = NULL;
}

/* The waiter is done with @c: free it, or leave it to a callback still due. */
static void call_release(struct nfs_call *c)
{
	call_unlink(c);
	if (c->done)
		free(c);
	else
		c->abandoned = true;
}

/* Common part of every callback. Returns false when the waiter has gone. */
static bool call_finish(struct nfs_call *c, int status, void *data)
{
	if (c->abandoned) {
		free(c);
		return false;
	}
	/* libnfs reports a failed RPC (connection lost for good) as -EFAULT. */
	c->status = status == -EFAULT ? -EIO : status;
	if (status < 0 && data)
		snprintf(c->msg, sizeof(c->msg), "%s", (const char *)data);
	c->done = true;
	call_unlink(c);
	/* libnfs calls some callbacks (NFSv3 close) before the call returns. */
	if (c->co != vs_co_self())
		vs_co_wake(c->co);
	return true;
}

static void cb_plain(int status, struct nfs_context *nfs, void *data, void *priv)
{
	(void)nfs;
	call_finish(priv, status < 0 ? status : 0, data);
}

static void cb_ptr(int status, struct nfs_context *nfs, void *data, void *priv)
{
	struct nfs_call *c = priv;

	(void)nfs;
	if (status >= 0 && !c->abandoned)
		c->ptr = data;
	call_finish(c, status < 0 ? status : 0, data);
}

static void cb_stat(int status, struct nfs_context *nfs, void *data, void *priv)
{
	struct nfs_call *c = priv;

	(void)nfs;
	if (status >= 0 && !c->abandoned && data)
		c->st = *(struct nfs_stat_64 *)data;
	call_finish(c, status < 0 ? status : 0, data);
}

static void cb_statvfs(int status, struct nfs_context *nfs, void *data, void *priv)
{
	struct nfs_call *c = priv;

	(void)nfs;
	if (status >= 0 && !c->abandoned && data)
		c->vfs = *(struct nfs_statvfs_64 *)data;
	call_finish(c, status < 0 ? status : 0, data);
}

static void cb_read(int status, struct nfs_context *nfs, void *data, void *priv)
{
	struct nfs_call *c = priv;

	(void)nfs;
	if (status > 0 && !c->abandoned) {
		const char *p = data;
		uint64_t left = (uint64_t)status < c->len ? (uint64_t)status : c->len;

		for (int i = 0; i < c->niov && left; i++) {
			size_t n = c->iov[i].iov_len < left ? c->iov[i].iov_len : (size_t)left;

			memcpy(c->iov[i].iov_base, p, n);
			p += n;
			left -= n;
		}
	}
	call_finish(c, status, data);
}

static void session_fail_all(struct vs_nfs *s, int err)
{
	while (s->calls) {
		struct nfs_call *c = s->calls;

		c->status = err;
		snprintf(c->msg, sizeof(c->msg), "NFS connection lost: %s",
			 nfs_get_error(s->nfs) ? nfs_get_error(s->nfs) : "?");
		call_unlink(c);
		/* Not done: libnfs may still call back, and then frees it. */
		c->abandoned = true;
		vs_co_wake(c->co);
	}
}

static void pump_main(void *opaque)
{
	struct vs_nfs *s = opaque;

	s->pump = vs_co_self();
	while (!s->stopping && !s->dead) {
		int fd = nfs_get_fd(s->nfs), rev;

		if (fd < 0) {
			s->dead = true;
			break;
		}
		s->poll_fd = fd;
		s->poll_ev = (unsigned)nfs_which_events(s->nfs);
		s->polling = true;
		rev = vs_aio_poll(fd, s->poll_ev);
		s->polling = false;
		if (s->stopping)
			break;
		if (rev == -ECANCELED || rev == -EINTR || rev == 0)
			continue; /* re-armed with the events wanted now */
		if (rev < 0 || nfs_service(s->nfs, rev) < 0)
			s->dead = true;
		else if ((rev & (POLLERR | POLLHUP)) && nfs_get_fd(s->nfs) == fd)
			vs_co_sleep_ns(100000000); /* a dead socket kept for a reconnect: no spin */
	}
	if (s->dead)
		session_fail_all(s, -EIO);
	s->pump = NULL;
	s->pump_running = false;
	vs_co_queue_wake_all(&s->pump_exit);
}

/*
 * After queueing an RPC: send it now if the connection is up, and make the
 * pump poll for what libnfs wants next (a connect in progress, or a send
 * that did not fit in the socket buffer).
 */
static void session_kick(struct vs_nfs *s)
{
	unsigned ev = (unsigned)nfs_which_events(s->nfs);

	if ((ev & POLLIN) && (ev & POLLOUT)) {
		/* Connected with queued PDUs: write them without blocking. */
		if (nfs_service(s->nfs, POLLOUT) < 0) {
			s->dead = true;
			session_fail_all(s, -EIO);
		}
		ev = (unsigned)nfs_which_events(s->nfs);
	}
	if (s->polling && s->pump &&
	    ((ev & ~s->poll_ev) || nfs_get_fd(s->nfs) != s->poll_fd || s->dead))
		(void)vs_aio_cancel(s->pump);
}

/* Wait for @c (queued: @queued is what the libnfs call returned). */
static int call_wait(struct vs_nfs *s, struct nfs_call *c, int queued)
{
	int ret;

	if (queued < 0) {
		/* Not queued: no callback will come. The caller releases @c. */
		snprintf(c->msg, sizeof(c->msg), "%s",
			 nfs_get_error(s->nfs) ? nfs_get_error(s->nfs) : "request failed");
		call_unlink(c);
		c->done = true;
		c->status = queued < -1 ? queued : -EIO;
		return c->status;
	}
	session_kick(s);
	while (!c->done && !c->abandoned)
		vs_co_yield();
	ret = c->status;
	return ret;
}

/* Run one request: @start queues it with cb and c. */
#define NFS_CALL(s, c, start)                              \
	({                                                 \
		int q_;                                    \
		(c) = (s)->dead ? NULL : call_new(s);      \
		if (!(c)) {                                \
			q_ = (s)->dead ? -EIO : -ENOMEM;   \
		} else {                                   \
			q_ = call_wait((s), (c), (start)); \
		}                                          \
		q_;                                        \
	})

static void session_stop(struct vs_nfs *s)
{
	s->stopping = true;
	if (s->pump_running && s->pump)
		(void)vs_aio_cancel(s->pump);
	while (s->pump_running)
		vs_co_queue_wait(&s->pump_exit);
}

bool vs_nfs_is_uri(const char *filename)
{
	return !strncmp(filename, "nfs://", 6);
}

/* Refuse what this driver does not do: NFSv4 (libnfs 4.0 fails larger writes). */
static int check_url(const char *url, struct vs_error *err)
{
	if (strstr(url, "version=4"))
		return vs_error_set(err, -ENOTSUP,
				    "'%s': NFSv4 is not supported (libnfs fails writes larger "
				    "than 4 KiB over NFSv4); use NFSv3",
				    url);
	return 0;
}

/* Mount @server:@export on a new session. */
static int session_mount(struct vs_nfs *s, const char *server, const char *export_path,
			 const char *url, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret;

	s->pump_running = true;
	if (!vs_co_spawn(vs_reactor_current(), pump_main, s)) {
		s->pump_running = false;
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = NFS_CALL(s, c, nfs_mount_async(s->nfs, server, export_path, cb_plain, c));
	if (ret < 0) {
		vs_error_set(err, ret, "Could not mount '%s:%s' for '%s': %s", server, export_path,
			     url, c && c->msg[0] ? c->msg : strerror(-ret));
		if (c)
			call_release(c);
		return ret;
	}
	call_release(c);
	s->max_read = nfs_get_readmax(s->nfs);
	s->max_write = nfs_get_writemax(s->nfs);
	return 0;
}

/*
 * libnfs and libiscsi write to their sockets with plain send(): a server
 * that goes away would kill the process with SIGPIPE instead of failing
 * the request with EPIPE. Ignore SIGPIPE unless the program handles it.
 */
static void ignore_sigpipe(void)
{
	struct sigaction sa;

	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
	    !(sa.sa_flags & SA_SIGINFO))
		signal(SIGPIPE, SIG_IGN);
}

static struct vs_nfs *session_new(struct vs_error *err)
{
	struct vs_nfs *s = calloc(1, sizeof(*s));

	if (!s) {
		vs_error_set(err, -ENOMEM, "Out of memory");
		return NULL;
	}
	s->nfs = nfs_init_context();
	if (!s->nfs) {
		free(s);
		vs_error_set(err, -ENOMEM, "Could not create an NFS context");
		return NULL;
	}
	nfs_set_version(s->nfs, NFS_V3);
	/* A server that stays away fails the requests (URL: autoreconnect=-1 waits). */
	nfs_set_autoreconnect(s->nfs, NFS_RECONNECTS);
	ignore_sigpipe();
	return s;
}

static void session_free(struct vs_nfs *s)
{
	if (!s)
		return;
	session_stop(s);
	/* Frees the in-flight PDUs; abandoned calls may be freed by their callbacks. */
	nfs_destroy_context(s->nfs);
	while (s->calls) {
		struct nfs_call *c = s->calls;

		call_unlink(c);
		c->abandoned = true;
	}
	free(s);
}

int vs_nfs_mount(struct vs_nfs **out, const char *url, struct vs_error *err)
{
	struct vs_nfs *s;
	struct nfs_url *u;
	int ret;

	if (!vs_nfs_is_uri(url))
		return vs_error_set(err, -EINVAL, "'%s' is not an nfs:// URL", url);
	ret = check_url(url, err);
	if (ret < 0)
		return ret;
	s = session_new(err);
	if (!s)
		return err ? err->code : -ENOMEM;
	u = nfs_parse_url_dir(s->nfs, url);
	if (!u || !u->server || !u->path) {
		ret = vs_error_set(err, -EINVAL, "Invalid NFS URL '%s': %s", url,
				   nfs_get_error(s->nfs));
		goto fail;
	}
	ret = session_mount(s, u->server, u->path, url, err);
	if (ret < 0)
		goto fail;
	nfs_destroy_url(u);
	*out = s;
	return 0;
fail:
	if (u)
		nfs_destroy_url(u);
	session_free(s);
	return ret;
}

void vs_nfs_unmount(struct vs_nfs *s)
{
	session_free(s);
}

static void stat_from(struct vs_nfs_stat *st, const struct nfs_stat_64 *n)
{
	st->size = n->nfs_size;
	st->used = n->nfs_used;
	st->mode = (uint32_t)n->nfs_mode;
	st->is_dir = S_ISDIR(n->nfs_mode);
	st->is_reg = S_ISREG(n->nfs_mode);
}

/* Fill @err for a failed call on @path and release @c. */
static int call_error(struct nfs_call *c, int ret, struct vs_error *err, const char *what,
		      const char *path)
{
	if (c && c->msg[0])
		vs_error_set(err, ret, "%s '%s': %s", what, path, c->msg);
	else
		vs_error_setf_errno(err, ret, "%s '%s'", what, path);
	if (c)
		call_release(c);
	return ret;
}

int vs_nfs_stat(struct vs_nfs *s, const char *path, struct vs_nfs_stat *st, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_stat64_async(s->nfs, path, cb_stat, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not stat", path);
	stat_from(st, &c->st);
	call_release(c);
	return 0;
}

int vs_nfs_statvfs(struct vs_nfs *s, uint64_t *capacity, uint64_t *available, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_statvfs64_async(s->nfs, "/", cb_statvfs, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not statvfs", "/");
	*capacity = c->vfs.f_blocks * c->vfs.f_frsize;
	*available = c->vfs.f_bavail * c->vfs.f_frsize;
	call_release(c);
	return 0;
}

/* Close a file handle (no RPC for NFSv3, but through the API). */
static void fh_close(struct vs_nfs *s, struct nfsfh *fh)
{
	struct nfs_call *c = NULL;

	(void)NFS_CALL(s, c, nfs_close_async(s->nfs, fh, cb_plain, c));
	if (c)
		call_release(c);
}

static int fh_open(struct vs_nfs *s, const char *path, int flags, struct nfsfh **fh,
		   struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_open2_async(s->nfs, path, flags, 0644, cb_ptr, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not open", path);
	*fh = c->ptr;
	call_release(c);
	return 0;
}

int vs_nfs_create(struct vs_nfs *s, const char *path, bool excl, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	struct nfsfh *fh;
	int ret =
		NFS_CALL(s, c, nfs_create_async(s->nfs, path, excl ? O_EXCL : 0, 0644, cb_ptr, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not create", path);
	fh = c->ptr;
	call_release(c);
	fh_close(s, fh);
	return 0;
}

int vs_nfs_unlink(struct vs_nfs *s, const char *path, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_unlink_async(s->nfs, path, cb_plain, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not delete", path);
	call_release(c);
	return 0;
}

int vs_nfs_truncate(struct vs_nfs *s, const char *path, uint64_t size, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_truncate_async(s->nfs, path, size, cb_plain, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not resize", path);
	call_release(c);
	return 0;
}

int vs_nfs_rename(struct vs_nfs *s, const char *from, const char *to, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_rename_async(s->nfs, from, to, cb_plain, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not rename", from);
	call_release(c);
	return 0;
}

int vs_nfs_mkdir(struct vs_nfs *s, const char *path, struct vs_error *err)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(s, c, nfs_mkdir2_async(s->nfs, path, 0755, cb_plain, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not create directory", path);
	call_release(c);
	return 0;
}

int vs_nfs_list(struct vs_nfs *s, const char *path, vs_nfs_dir_fn *fn, void *opaque,
		struct vs_error *err)
{
	struct nfs_call *c = NULL;
	struct nfsdir *dir;
	struct nfsdirent *e;
	int ret = NFS_CALL(s, c, nfs_opendir_async(s->nfs, path, cb_ptr, c));

	if (ret < 0)
		return call_error(c, ret, err, "Could not list", path);
	dir = c->ptr;
	call_release(c);
	/* READDIRPLUS brought the attributes: nothing below blocks. */
	while ((e = nfs_readdir(s->nfs, dir))) {
		struct vs_nfs_stat st = { .size = e->size,
					  .used = e->used,
					  .mode = e->mode,
					  .is_dir = e->type == NF3DIR,
					  .is_reg = e->type == NF3REG };

		if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
			continue;
		ret = fn(e->name, &st, opaque);
		if (ret)
			break;
	}
	nfs_closedir(s->nfs, dir);
	return ret;
}

/* ---- the protocol driver ---- */

struct nfs_node {
	struct vs_nfs *s;
	struct nfsfh *fh;
	char *path; /* inside the export */
};

/* Split @url into a session mounted on its directory and the file's path. */
static int nfs_node_connect(struct nfs_node *n, const char *url, struct vs_error *err)
{
	struct nfs_url *u;
	int ret;

	if (!vs_nfs_is_uri(url))
		return vs_error_set(err, -EINVAL, "'%s' is not an nfs:// URL", url);
	ret = check_url(url, err);
	if (ret < 0)
		return ret;
	n->s = session_new(err);
	if (!n->s)
		return err ? err->code : -ENOMEM;
	u = nfs_parse_url_full(n->s->nfs, url);
	if (!u || !u->server || !u->path || !u->file) {
		ret = vs_error_set(err, -EINVAL,
				   "Invalid NFS URL '%s' (use nfs://HOST/EXPORT/FILE): %s", url,
				   nfs_get_error(n->s->nfs));
		goto fail;
	}
	n->path = strdup(u->file);
	if (!n->path) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	ret = session_mount(n->s, u->server, u->path, url, err);
	if (ret < 0)
		goto fail;
	nfs_destroy_url(u);
	return 0;
fail:
	if (u)
		nfs_destroy_url(u);
	free(n->path);
	n->path = NULL;
	session_free(n->s);
	n->s = NULL;
	return ret;
}

static void nfs_node_disconnect(struct nfs_node *n)
{
	if (n->fh)
		fh_close(n->s, n->fh);
	n->fh = NULL;
	session_free(n->s);
	n->s = NULL;
	free(n->path);
	n->path = NULL;
}

static int node_fstat(struct nfs_node *n, struct nfs_stat_64 *st)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(n->s, c, nfs_fstat64_async(n->s->nfs, n->fh, cb_stat, c));

	if (ret == 0)
		*st = c->st;
	if (c)
		call_release(c);
	return ret;
}

static int nfs_open_node(struct vs_node *node, const struct vs_open_opts *opts,
			 struct vs_error *err)
{
	struct nfs_node *n = node->opaque;
	struct nfs_stat_64 st;
	uint64_t max;
	int ret;

	ret = nfs_node_connect(n, opts->filename, err);
	if (ret < 0)
		return ret;
	ret = fh_open(n->s, n->path, opts->read_only ? O_RDONLY : O_RDWR, &n->fh, err);
	if (ret < 0)
		goto fail;
	ret = node_fstat(n, &st);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not stat '%s'", opts->filename);
		goto fail;
	}
	if (S_ISDIR(st.nfs_mode)) {
		ret = vs_error_set(err, -EISDIR, "'%s' is a directory", opts->filename);
		goto fail;
	}
	node->size = st.nfs_size;
	max = n->s->max_read < n->s->max_write ? n->s->max_read : n->s->max_write;
	if (max == 0 || max > (1u << 20))
		max = 1u << 20;
	node->limits.max_transfer = max & ~511ull ? max & ~511ull : max;
	node->limits.request_align = 1;
	node->limits.mem_align = 1;
	node->caps = VS_CAP_FLUSH | VS_CAP_GROWABLE;
	return 0;
fail:
	nfs_node_disconnect(n);
	return ret;
}

static void nfs_close_node(struct vs_node *node)
{
	struct nfs_node *n = node->opaque;

	if (n->s)
		nfs_node_disconnect(n);
}

static int node_read(struct nfs_node *n, struct vs_req *req)
{
	struct nfs_call *c = n->s->dead ? NULL : call_new(n->s);
	int ret;

	if (!c)
		return n->s->dead ? -EIO : -ENOMEM;
	c->iov = req->iov;
	c->niov = req->niov;
	c->len = req->len;
	ret = call_wait(n->s, c,
			nfs_pread_async(n->s->nfs, n->fh, req->offset, req->len, cb_read, c));
	call_release(c);
	/*
	 * NFSv3 may answer a READ short without being at the end of the file:
	 * ask again for the rest until the server returns nothing (EOF).
	 */
	for (uint64_t got = ret > 0 ? (uint64_t)ret : 0; ret > 0 && got < req->len;) {
		uint64_t rest = req->len - got;
		void *tmp = malloc(rest);
		struct iovec tv = { tmp, rest };

		c = tmp && !n->s->dead ? call_new(n->s) : NULL;
		if (!c) {
			free(tmp);
			return n->s->dead ? -EIO : -ENOMEM;
		}
		c->iov = &tv;
		c->niov = 1;
		c->len = rest;
		ret = call_wait(n->s, c,
				nfs_pread_async(n->s->nfs, n->fh, req->offset + got, rest, cb_read,
						c));
		call_release(c); /* an abandoned call no longer copies into tmp */
		if (ret > 0) {
			uint64_t k = (uint64_t)ret < rest ? (uint64_t)ret : rest, skip = got;
			const char *p = tmp;

			for (int i = 0; i < req->niov && k; i++) {
				size_t l = req->iov[i].iov_len, m;

				if (skip >= l) {
					skip -= l;
					continue;
				}
				m = l - skip < k ? l - skip : (size_t)k;
				memcpy((char *)req->iov[i].iov_base + skip, p, m);
				p += m;
				k -= m;
				skip = 0;
			}
			got += (uint64_t)ret;
		}
		free(tmp);
		if (ret < 0)
			break;
		if (ret == 0) {
			ret = (int)got; /* the end of the file */
			break;
		}
		ret = (int)(got < req->len ? got : req->len);
	}
	if (ret >= 0 && (uint64_t)ret < req->len) {
		/* Past the end of the file: zeroes. */
		uint64_t skip = (uint64_t)ret;

		for (int i = 0; i < req->niov; i++) {
			size_t l = req->iov[i].iov_len;

			if (skip >= l) {
				skip -= l;
				continue;
			}
			memset((char *)req->iov[i].iov_base + skip, 0, l - skip);
			skip = 0;
		}
	}
	return ret < 0 ? ret : 0;
}

static int nfs_commit(struct nfs_node *n)
{
	struct nfs_call *c = NULL;
	int ret = NFS_CALL(n->s, c, nfs_fsync_async(n->s->nfs, n->fh, cb_plain, c));

	if (c)
		call_release(c);
	return ret;
}

static int node_write(struct vs_node *node, struct nfs_node *n, struct vs_req *req)
{
	struct nfs_call *c;
	void *bounce = NULL;
	const void *buf;
	int ret;

	if (req->niov == 1) {
		buf = req->iov[0].iov_base;
	} else {
		char *p = bounce = malloc(req->len ? req->len : 1);

		if (!bounce)
			return -ENOMEM;
		for (int i = 0; i < req->niov; i++) {
			memcpy(p, req->iov[i].iov_base, req->iov[i].iov_len);
			p += req->iov[i].iov_len;
		}
		buf = bounce;
	}
	c = n->s->dead ? NULL : call_new(n->s);
	if (!c) {
		free(bounce);
		return n->s->dead ? -EIO : -ENOMEM;
	}
	ret = call_wait(n->s, c,
			nfs_pwrite_async(n->s->nfs, n->fh, req->offset, req->len, buf, cb_plain,
					 c));
	call_release(c);
	/*
	 * libnfs copied the data into its PDU when it queued it; a callback due
	 * after an abandoned wait does not touch the buffer either.
	 */
	free(bounce);
	if (ret < 0)
		return ret;
	if (req->offset + req->len > node->size)
		node->size = req->offset + req->len;
	if (req->flags & VS_REQ_FUA)
		return nfs_commit(n);
	return 0;
}

static int nfs_submit(struct vs_node *node, struct vs_req *req)
{
	struct nfs_node *n = node->opaque;

	switch (req->op) {
	case VS_OP_READ:
		return node_read(n, req);
	case VS_OP_WRITE:
		return node_write(node, n, req);
	case VS_OP_FLUSH:
		if (!node->knobs.flush_to_disk)
			return 0;
		return nfs_commit(n);
	case VS_OP_BLOCK_STATUS:
		/* NFSv3 has no SEEK_DATA: everything is data. */
		req->bs_pnum = req->len;
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
		req->bs_map = req->offset;
		req->bs_file = node;
		return 0;
	case VS_OP_DISCARD:
	case VS_OP_WRITE_ZEROES:
		return -ENOTSUP;
	}
	return -EINVAL;
}

/* Write zeroes into [from, to) (preallocation=full). */
static int nfs_fill_zeroes(struct vs_node *node, uint64_t from, uint64_t to)
{
	size_t chunk = node->limits.max_transfer ? (size_t)node->limits.max_transfer : 65536;
	void *buf = calloc(1, chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (from < to && ret == 0) {
		size_t l = to - from < chunk ? (size_t)(to - from) : chunk;
		struct iovec iov = { buf, l };
		struct vs_req req = {
			.op = VS_OP_WRITE, .offset = from, .len = l, .iov = &iov, .niov = 1
		};

		ret = node_write(node, node->opaque, &req);
		from += l;
	}
	free(buf);
	return ret;
}

static int nfs_resize(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
		      struct vs_error *err)
{
	struct nfs_node *n = node->opaque;
	struct nfs_call *c = NULL;
	uint64_t old = node->size;
	int ret;

	if (prealloc == VS_PREALLOC_METADATA || prealloc == VS_PREALLOC_FALLOC)
		return vs_error_set(err, -ENOTSUP,
				    "preallocation mode '%s' is not supported on NFS (use off or "
				    "full)",
				    vs_prealloc_name(prealloc));
	ret = NFS_CALL(n->s, c, nfs_ftruncate_async(n->s->nfs, n->fh, size, cb_plain, c));
	if (ret < 0)
		return call_error(c, ret, err, "Could not resize", node->filename);
	call_release(c);
	node->size = size;
	if (prealloc == VS_PREALLOC_FULL && size > old) {
		ret = nfs_fill_zeroes(node, old, size);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Could not preallocate '%s'",
						   node->filename);
	}
	return 0;
}

static int nfs_truncate_node(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			     bool exact, struct vs_error *err)
{
	(void)exact;
	return nfs_resize(node, size, prealloc, err);
}

static int nfs_create_file(const char *filename, uint64_t size, const struct vs_kv *opts,
			   size_t nopts, struct vs_error *err)
{
	enum vs_prealloc prealloc = VS_PREALLOC_OFF;
	struct vs_open_opts o = { .filename = filename, .format = "file" };
	struct nfs_node *n;
	struct vs_node *node = NULL;
	int ret;

	for (size_t i = 0; i < nopts; i++) {
		if (!strcmp(opts[i].key, "preallocation")) {
			if (vs_prealloc_parse(opts[i].value, &prealloc) < 0 ||
			    prealloc == VS_PREALLOC_METADATA || prealloc == VS_PREALLOC_FALLOC)
				return vs_error_set(err, -EINVAL,
						    "Invalid preallocation mode on NFS: '%s' (use "
						    "off or full)",
						    opts[i].value);
		} else if (strcmp(opts[i].key, "size")) {
			return vs_error_set(err, -EINVAL,
					    "Invalid parameter '%s' for the raw format",
					    opts[i].key);
		}
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = nfs_node_connect(n, filename, err);
	if (ret < 0) {
		free(n);
		return ret;
	}
	ret = vs_nfs_create(n->s, n->path, false, err);
	nfs_node_disconnect(n);
	free(n);
	if (ret < 0)
		return ret;
	/* Then size it through a node, as file_create does: to 0, then to @size. */
	ret = vs_protocol_open(&node, filename, &o, err);
	if (ret < 0)
		return ret;
	ret = nfs_resize(node, 0, VS_PREALLOC_OFF, err);
	if (ret == 0)
		ret = nfs_resize(node, size, prealloc, err);
	vs_node_close(node);
	return ret;
}

static int64_t nfs_allocated_size(struct vs_node *node)
{
	struct nfs_node *n = node->opaque;
	struct nfs_stat_64 st;
	int ret = node_fstat(n, &st);

	if (ret < 0)
		return ret;
	return (int64_t)st.nfs_used;
}

static const struct vs_create_opt_desc nfs_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "preallocation", "string", "Preallocation mode (allowed values: off, full)" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_nfs = {
	.name = "nfs",
	.state_size = sizeof(struct nfs_node),
	.open = nfs_open_node,
	.close = nfs_close_node,
	.submit = nfs_submit,
	.truncate = nfs_truncate_node,
	.create = nfs_create_file,
	.create_opts = nfs_create_opts,
	.allocated_size = nfs_allocated_size,
	.supported_write_flags = VS_REQ_FUA,
};
