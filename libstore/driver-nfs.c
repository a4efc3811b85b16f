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
 * result and wake the request, so nothing re-enters libnfs (the call
 * bookkeeping and the pump are async-call.h's, shared with driver-iscsi.c).
 *
 * Data goes through libnfs's raw NFSv3 calls (READ, WRITE, COMMIT), not its
 * file API, because a safe client needs what the replies carry: the count
 * (short reads and writes continue), the stability the server gave a write
 * and its write verifier, and NFS3ERR_JUKEBOX (try again later). Writes are
 * UNSTABLE and kept (a copy, nfs-wlist.h) until a COMMIT returns the
 * verifier they were written under; a different verifier means the server
 * restarted and may have lost them, so they are written again before the
 * flush succeeds. Cache modes without a volatile cache write FILE_SYNC, and
 * unsafe neither commits nor keeps copies (docs/pool-backends.md).
 */
#include "driver.h"
#include "driver-nfs.h"

#include "async-call.h"
#include "iov.h"
#include "nfs-wlist.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
/* libnfs.h first: the raw headers need its definitions. */
#include <nfsc/libnfs.h>

#include <nfsc/libnfs-raw-mount.h>
#include <nfsc/libnfs-raw-nfs.h>
#include <nfsc/libnfs-raw.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reconnect attempts after the connection drops before requests fail. */
#define NFS_RECONNECTS 5
/* NFS3ERR_JUKEBOX: tries of one request, with waits from 100 ms doubling up to 2 s (~13 s). */
#define NFS_JUKEBOX_TRIES 10
/* Rounds of "write everything again, COMMIT" after verifier changes before failing. */
#define NFS_RESEND_ROUNDS 5
/* Uncommitted data kept per image (VSTOR_NFS_UNSTABLE_MAX overrides): then COMMIT first. */
#define NFS_UNSTABLE_MAX (32ull << 20)
#define NFS_UNSTABLE_MAX_WRITES 4096u

/* ---- sessions ---- */

struct nfs_call;

struct vs_nfs {
	struct nfs_context *nfs;
	struct vs_async_pump pump;
	struct vs_async_call *calls; /* in flight, for failing them when the session dies */
	uint64_t max_read, max_write;
};

/*
 * One RPC in flight. Heap-allocated: when the session dies its waiter
 * returns, and a late callback from libnfs must find the call still there
 * (then it frees it).
 */
struct nfs_call {
	struct vs_async_call base; /* first: the calls list holds these */
	char msg[160];
	/* results */
	struct iovec *iov; /* read: copy the data here */
	int niov;
	uint64_t skip; /* raw read: from this byte of iov on */
	uint64_t len;
	uint32_t count;			/* raw read and write: bytes done */
	bool eof;			/* raw read */
	bool stable;			/* raw write: committed as FILE_SYNC or DATA_SYNC */
	uint8_t verf[VS_NFS_VERF_SIZE]; /* raw write and commit */
	void *ptr;			/* open: nfsfh; opendir: nfsdir */
	struct nfs_stat_64 st;
	struct nfs_statvfs_64 vfs;
};

static struct nfs_call *call_new(struct vs_nfs *s)
{
	struct nfs_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	vs_async_call_start(&c->base, &s->calls);
	return c;
}

/* The waiter is done with @c: free it, or leave it to a callback still due. */
static void call_release(struct nfs_call *c)
{
	if (vs_async_call_release(&c->base))
		free(c);
}

/* Common part of every callback. Returns false when the waiter has gone. */
static bool call_finish(struct nfs_call *c, int status, void *data)
{
	if (c->base.abandoned) {
		free(c);
		return false;
	}
	if (status < 0 && data)
		snprintf(c->msg, sizeof(c->msg), "%s", (const char *)data);
	/* libnfs reports a failed RPC (connection lost for good) as -EFAULT. */
	vs_async_call_complete(&c->base, status == -EFAULT ? -EIO : status);
	return true;
}

static void cb_plain(int status, struct nfs_context *nfs, void *data, void *priv)
{
	(void)nfs;
	call_finish(priv, status < 0 ? status : 0, data);
}

/* Common part of the callbacks with a result: copy @len bytes of @src into @c at @off. */
static void call_finish_copy(struct nfs_call *c, int status, void *data, const void *src,
			     size_t off, size_t len)
{
	if (status >= 0 && !c->base.abandoned && src)
		memcpy((char *)c + off, src, len);
	call_finish(c, status < 0 ? status : 0, data);
}

static void cb_ptr(int status, struct nfs_context *nfs, void *data, void *priv)
{
	(void)nfs;
	call_finish_copy(priv, status, data, &data, offsetof(struct nfs_call, ptr), sizeof(data));
}

static void cb_stat(int status, struct nfs_context *nfs, void *data, void *priv)
{
	(void)nfs;
	call_finish_copy(priv, status, data, data, offsetof(struct nfs_call, st),
			 sizeof(struct nfs_stat_64));
}

static void cb_statvfs(int status, struct nfs_context *nfs, void *data, void *priv)
{
	(void)nfs;
	call_finish_copy(priv, status, data, data, offsetof(struct nfs_call, vfs),
			 sizeof(struct nfs_statvfs_64));
}

/*
 * The outcome of a raw NFSv3 call as -errno: -EAGAIN for NFS3ERR_JUKEBOX
 * (the caller waits and tries again), -EIO when the RPC itself failed.
 * @data is the call's XXX3res, all of which start with their nfsstat3.
 */
static int rpc_result(int status, void *data, const char **msg)
{
	if (status == RPC_STATUS_SUCCESS) {
		int nfsstat = (int)*(const nfsstat3 *)data;

		if (nfsstat == NFS3_OK)
			return 0;
		if (nfsstat == NFS3ERR_JUKEBOX)
			return -EAGAIN;
		*msg = nfsstat3_to_str(nfsstat);
		return nfsstat3_to_errno(nfsstat);
	}
	if (status == RPC_STATUS_ERROR && data)
		*msg = data;
	else
		*msg = status == RPC_STATUS_CANCEL ? "request cancelled" : "request timed out";
	return -EIO;
}

/*
 * Common part of the raw callbacks: @take copies the result of a successful
 * call into @c while its waiter is still there.
 */
static inline void raw_finish(struct nfs_call *c, int status, void *data,
			      void (*take)(struct nfs_call *c, const void *res))
{
	const char *msg = NULL;
	int ret = rpc_result(status, data, &msg);

	if (ret == 0 && !c->base.abandoned)
		take(c, data);
	call_finish(c, ret, (void *)msg);
}

static void take_read3(struct nfs_call *c, const void *res)
{
	const READ3resok *ok = &((const READ3res *)res)->READ3res_u.resok;
	uint64_t n = ok->data.data_len < ok->count ? ok->data.data_len : ok->count;

	if (n > c->len)
		n = c->len;
	c->count = (uint32_t)n;
	c->eof = ok->eof;
	vs_iov_from_buf(c->iov, c->niov, c->skip, ok->data.data_val, n);
}

static void take_write3(struct nfs_call *c, const void *res)
{
	const WRITE3resok *ok = &((const WRITE3res *)res)->WRITE3res_u.resok;

	c->count = ok->count;
	c->stable = ok->committed != UNSTABLE;
	memcpy(c->verf, ok->verf, VS_NFS_VERF_SIZE);
}

static void take_commit3(struct nfs_call *c, const void *res)
{
	memcpy(c->verf, ((const COMMIT3res *)res)->COMMIT3res_u.resok.verf, VS_NFS_VERF_SIZE);
}

static void cb_read3(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	raw_finish(priv, status, data, take_read3);
}

static void cb_write3(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	raw_finish(priv, status, data, take_write3);
}

static void cb_commit3(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	raw_finish(priv, status, data, take_commit3);
}

/* NFS3ERR_JUKEBOX: the server needs time (e.g. a file coming back from tape). */
static void jukebox_wait(unsigned attempt)
{
	uint64_t ms = attempt < 5 ? 100ull << attempt : 2000;

	vs_co_sleep_ns(ms * 1000000);
}

static void session_fail_all(struct vs_nfs *s, int err)
{
	while (s->calls) {
		struct nfs_call *c = (struct nfs_call *)s->calls;

		snprintf(c->msg, sizeof(c->msg), "NFS connection lost: %s",
			 nfs_get_error(s->nfs) ? nfs_get_error(s->nfs) : "?");
		/* Not done: libnfs may still call back, and then frees it. */
		vs_async_call_abandon(&c->base, err);
	}
}

/* ---- the pump's calls into libnfs ---- */

static int pump_get_fd(void *lib)
{
	return nfs_get_fd(lib);
}

static int pump_which_events(void *lib)
{
	return nfs_which_events(lib);
}

static int pump_service(void *lib, int revents)
{
	return nfs_service(lib, revents);
}

/* Connected with queued PDUs: write them without blocking. */
static bool pump_can_send(void *lib, unsigned events)
{
	(void)lib;
	return (events & POLLIN) && (events & POLLOUT);
}

static void pump_fail_all(void *owner)
{
	session_fail_all(owner, -EIO);
}

static const struct vs_async_pump_ops nfs_pump_ops = {
	.get_fd = pump_get_fd,
	.which_events = pump_which_events,
	.service = pump_service,
	.can_send = pump_can_send,
	.fail_all = pump_fail_all,
};

/* Wait for @c (queued: @queued is what the libnfs call returned). */
static int call_wait(struct vs_nfs *s, struct nfs_call *c, int queued)
{
	if (queued < 0) {
		/* Not queued: no callback will come. The caller releases @c. */
		snprintf(c->msg, sizeof(c->msg), "%s",
			 nfs_get_error(s->nfs) ? nfs_get_error(s->nfs) : "request failed");
		vs_async_call_not_queued(&c->base, queued < -1 ? queued : -EIO);
		return c->base.status;
	}
	/* Send it now if the connection is up; re-arm the pump for what libnfs wants next. */
	vs_async_pump_kick(&s->pump);
	vs_async_call_wait(&c->base);
	return c->base.status;
}

/* Run one request: @start queues it with cb and c. NFS3ERR_JUKEBOX: wait, try again. */
#define NFS_CALL(s, c, start)                                             \
	({                                                                \
		int q_;                                                   \
		for (unsigned t_ = 0;; t_++) {                            \
			(c) = (s)->pump.dead ? NULL : call_new(s);        \
			if (!(c)) {                                       \
				q_ = (s)->pump.dead ? -EIO : -ENOMEM;     \
				break;                                    \
			}                                                 \
			q_ = call_wait((s), (c), (start));                \
			if (q_ != -EAGAIN || t_ + 1 >= NFS_JUKEBOX_TRIES) \
				break;                                    \
			call_release(c);                                  \
			(c) = NULL;                                       \
			jukebox_wait(t_);                                 \
		}                                                         \
		q_;                                                       \
	})

static bool nfs_is_uri(const char *filename)
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

	if (vs_async_pump_start(&s->pump) < 0)
		return vs_error_set(err, -ENOMEM, "Out of memory");
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

/* A session (not mounted yet) for @url, an nfs:// URL this driver takes. */
static int session_new(struct vs_nfs **out, const char *url, struct vs_error *err)
{
	struct vs_nfs *s;
	int ret;

	if (!nfs_is_uri(url))
		return vs_error_set(err, -EINVAL, "'%s' is not an nfs:// URL", url);
	ret = check_url(url, err);
	if (ret < 0)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	s->nfs = nfs_init_context();
	if (!s->nfs) {
		free(s);
		return vs_error_set(err, -ENOMEM, "Could not create an NFS context");
	}
	vs_async_pump_init(&s->pump, &nfs_pump_ops, s->nfs, s);
	nfs_set_version(s->nfs, NFS_V3);
	/* A server that stays away fails the requests (URL: autoreconnect=-1 waits). */
	nfs_set_autoreconnect(s->nfs, NFS_RECONNECTS);
	vs_async_ignore_sigpipe();
	*out = s;
	return 0;
}

static void session_free(struct vs_nfs *s)
{
	if (!s)
		return;
	vs_async_pump_stop(&s->pump);
	/* Frees the in-flight PDUs; abandoned calls may be freed by their callbacks. */
	nfs_destroy_context(s->nfs);
	while (s->calls)
		(void)vs_async_call_release(s->calls);
	free(s);
}

/*
 * Mount on @s the export @url names: its whole path, or with @file all but
 * the last component, which is then *@file (malloc'd).
 */
static int session_mount_url(struct vs_nfs *s, const char *url, char **file, struct vs_error *err)
{
	struct nfs_url *u = file ? nfs_parse_url_full(s->nfs, url) : nfs_parse_url_dir(s->nfs, url);
	int ret;

	if (!u || !u->server || !u->path || (file && !u->file)) {
		ret = vs_error_set(err, -EINVAL, "Invalid NFS URL '%s'%s: %s", url,
				   file ? " (use nfs://HOST/EXPORT/FILE)" : "",
				   nfs_get_error(s->nfs));
		goto out;
	}
	if (file) {
		*file = strdup(u->file);
		if (!*file) {
			ret = vs_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
	}
	ret = session_mount(s, u->server, u->path, url, err);
	if (ret < 0 && file) {
		free(*file);
		*file = NULL;
	}
out:
	if (u)
		nfs_destroy_url(u);
	return ret;
}

int vs_nfs_mount(struct vs_nfs **out, const char *url, struct vs_error *err)
{
	struct vs_nfs *s;
	int ret = session_new(&s, url, err);

	if (ret < 0)
		return ret;
	ret = session_mount_url(s, url, NULL, err);
	if (ret < 0) {
		session_free(s);
		return ret;
	}
	*out = s;
	return 0;
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
	st->uid = (uint32_t)n->nfs_uid;
	st->gid = (uint32_t)n->nfs_gid;
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

/*
 * Run a call with no result (@start queues it with cb_plain and the call c,
 * as for NFS_CALL), filling @err with "@what '@path'" when it fails.
 */
#define NFS_CALL_PLAIN(s, start, err, what, path)                \
	({                                                       \
		struct nfs_call *c = NULL;                       \
		int r_ = NFS_CALL(s, c, start);                  \
		if (r_ < 0)                                      \
			r_ = call_error(c, r_, err, what, path); \
		else                                             \
			call_release(c);                         \
		r_;                                              \
	})

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
	return NFS_CALL_PLAIN(s, nfs_unlink_async(s->nfs, path, cb_plain, c), err,
			      "Could not delete", path);
}

int vs_nfs_truncate(struct vs_nfs *s, const char *path, uint64_t size, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_truncate_async(s->nfs, path, size, cb_plain, c), err,
			      "Could not resize", path);
}

int vs_nfs_rename(struct vs_nfs *s, const char *from, const char *to, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_rename_async(s->nfs, from, to, cb_plain, c), err,
			      "Could not rename", from);
}

int vs_nfs_link(struct vs_nfs *s, const char *from, const char *to, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_link_async(s->nfs, from, to, cb_plain, c), err,
			      "Could not link", to);
}

int vs_nfs_chmod(struct vs_nfs *s, const char *path, uint32_t mode, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_chmod_async(s->nfs, path, (int)(mode & 07777), cb_plain, c),
			      err, "Could not set the mode of", path);
}

int vs_nfs_chown(struct vs_nfs *s, const char *path, int uid, int gid, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_chown_async(s->nfs, path, uid, gid, cb_plain, c), err,
			      "Could not set the owner of", path);
}

int vs_nfs_mkdir(struct vs_nfs *s, const char *path, struct vs_error *err)
{
	return NFS_CALL_PLAIN(s, nfs_mkdir2_async(s->nfs, path, 0755, cb_plain, c), err,
			      "Could not create directory", path);
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
					  .uid = e->uid,
					  .gid = e->gid,
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

/*
 * libnfs's public headers leave struct nfs_fh (what nfs_get_fh() returns)
 * opaque; its layout has been { int len; char *val; } since libnfs 1.x.
 * The raw READ/WRITE/COMMIT calls need the handle's bytes: read them
 * through this mirror, checked for sanity at open (RFC 1813: at most 64).
 */
struct nfs_fh_view {
	int len;
	char *val;
};

static struct nfs_fh3 node_fh3(struct nfsfh *fh)
{
	const struct nfs_fh_view *v = (const struct nfs_fh_view *)nfs_get_fh(fh);
	struct nfs_fh3 f;

	f.data.data_len = (u_int)v->len;
	f.data.data_val = v->val;
	return f;
}

struct nfs_node {
	struct vs_nfs *s;
	struct nfsfh *fh;
	char *path;	    /* inside the export */
	const char *name;   /* the node's URL, for messages */
	uint64_t max_write; /* bytes per WRITE */
	uint64_t max_read;  /* bytes per READ */
	/* Write stability (see the top of the file and docs/pool-backends.md). */
	bool retain;	    /* keep unstable writes until COMMIT (flush reaches the disk) */
	bool stable_writes; /* no volatile cache: every write FILE_SYNC */
	struct vs_nfs_wlist wl;
	uint64_t retain_max;	   /* bytes kept before a write COMMITs first */
	unsigned writes_in_flight; /* WRITEs of requests (not of a resend) */
	bool barrier;		   /* writing the list again: new writes wait */
	struct vs_co_queue barrier_q;
	struct vs_co_queue drain_q; /* the resend waits for writes_in_flight == 0 */
	struct vs_co_mutex commit_lock;
	uint64_t resent_writes, resent_bytes; /* totals, for messages */
};

/* Split @url into a session mounted on its directory and the file's path. */
static int nfs_node_connect(struct nfs_node *n, const char *url, struct vs_error *err)
{
	int ret = session_new(&n->s, url, err);

	if (ret < 0)
		return ret;
	ret = session_mount_url(n->s, url, &n->path, err);
	if (ret < 0) {
		session_free(n->s);
		n->s = NULL;
	}
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
	{
		const struct nfs_fh_view *v = (const struct nfs_fh_view *)nfs_get_fh(n->fh);

		if (!v || v->len <= 0 || v->len > 64 || !v->val) {
			ret = vs_error_set(err, -ENOTSUP,
					   "'%s': unexpected file handle layout in this libnfs",
					   opts->filename);
			goto fail;
		}
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
	n->max_read = n->s->max_read ? n->s->max_read : max;
	n->max_write = n->s->max_write ? n->s->max_write : max;
	n->name = node->filename;
	n->retain = !opts->read_only && node->knobs.flush_to_disk;
	n->stable_writes = !node->knobs.wce;
	n->retain_max = NFS_UNSTABLE_MAX;
	if (getenv("VSTOR_NFS_UNSTABLE_MAX")) {
		char *end;
		unsigned long long v = strtoull(getenv("VSTOR_NFS_UNSTABLE_MAX"), &end, 0);

		if (end != getenv("VSTOR_NFS_UNSTABLE_MAX") && !*end)
			n->retain_max = v;
	}
	vs_nfs_wlist_init(&n->wl);
	n->wl.spare_max = n->retain_max;
	node->limits.request_align = 1;
	node->limits.mem_align = 1;
	node->caps = VS_CAP_FLUSH | VS_CAP_GROWABLE;
	return 0;
fail:
	nfs_node_disconnect(n);
	return ret;
}

static int commit_all(struct nfs_node *n);

static void nfs_close_node(struct vs_node *node)
{
	struct nfs_node *n = node->opaque;

	if (!n->s)
		return;
	/*
	 * Once closed, nothing could write the kept data again if the server
	 * lost it: COMMIT it now, as NFS clients do on close.
	 */
	if (n->retain && n->wl.unstable) {
		int ret = commit_all(n);

		if (ret < 0)
			vs_warn("nfs: '%s': COMMIT at close failed (%s): what was written since "
				"the last flush is lost if the server restarted",
				n->name, strerror(-ret));
	}
	vs_nfs_wlist_clear(&n->wl);
	nfs_node_disconnect(n);
}

static int node_read(struct nfs_node *n, struct vs_req *req)
{
	uint64_t got = 0;
	unsigned tries = 0;

	while (got < req->len) {
		uint64_t chunk = req->len - got < n->max_read ? req->len - got : n->max_read;
		struct nfs_call *c = n->s->pump.dead ? NULL : call_new(n->s);
		struct READ3args a = { 0 };
		uint32_t count = 0;
		bool eof = false;
		int ret;

		if (!c)
			return n->s->pump.dead ? -EIO : -ENOMEM;
		c->iov = req->iov;
		c->niov = req->niov;
		c->skip = got;
		c->len = chunk;
		a.file = node_fh3(n->fh);
		a.offset = req->offset + got;
		a.count = (count3)chunk;
		ret = call_wait(n->s, c,
				rpc_nfs3_read_async(nfs_get_rpc_context(n->s->nfs), cb_read3, &a,
						    c));
		if (ret == 0) {
			count = c->count;
			eof = c->eof;
		}
		call_release(c); /* an abandoned call no longer copies into iov */
		if (ret == -EAGAIN && ++tries < NFS_JUKEBOX_TRIES) {
			jukebox_wait(tries - 1);
			continue;
		}
		if (ret < 0)
			return ret == -EAGAIN ? -EIO : ret;
		got += count;
		if (eof)
			break; /* the rest is past the end of the file: zeroes */
		/* Short but not at the end of the file: ask for the rest. */
		if (count == 0)
			return -EIO; /* no progress and no EOF: a broken server */
	}
	if (got < req->len)
		vs_iov_memset(req->iov, req->niov, got, 0, req->len - got);
	/* What this client wrote and has not seen committed wins over the server's copy. */
	if (n->retain)
		vs_nfs_wlist_overlay(&n->wl, req->offset, req->len, req->iov, req->niov);
	return 0;
}

/* One WRITE: the bytes it wrote, whether it is stable, and its verifier. */
static int rpc_write(struct nfs_node *n, uint64_t off, const uint8_t *buf, uint64_t len,
		     bool stable, uint32_t *count, bool *was_stable, uint8_t *verf)
{
	struct WRITE3args a = { 0 };
	struct nfs_call *c = NULL;
	int ret;

	a.file = node_fh3(n->fh);
	a.offset = off;
	a.count = (count3)len;
	a.stable = stable ? FILE_SYNC : UNSTABLE;
	a.data.data_len = (u_int)len;
	a.data.data_val = (char *)buf;
	ret = NFS_CALL(n->s, c,
		       rpc_nfs3_write_async(nfs_get_rpc_context(n->s->nfs), cb_write3, &a, c));
	if (ret == 0) {
		*count = c->count;
		*was_stable = c->stable;
		memcpy(verf, c->verf, VS_NFS_VERF_SIZE);
	}
	if (c)
		call_release(c);
	return ret == -EAGAIN ? -EIO : ret; /* NFS3ERR_JUKEBOX to the last try */
}

/* One COMMIT of the whole file: the verifier it returned. */
static int rpc_commit(struct nfs_node *n, uint8_t *verf)
{
	struct COMMIT3args a = { 0 };
	struct nfs_call *c = NULL;
	int ret;

	a.file = node_fh3(n->fh);
	ret = NFS_CALL(n->s, c,
		       rpc_nfs3_commit_async(nfs_get_rpc_context(n->s->nfs), cb_commit3, &a, c));
	if (ret == 0)
		memcpy(verf, c->verf, VS_NFS_VERF_SIZE);
	if (c)
		call_release(c);
	return ret == -EAGAIN ? -EIO : ret; /* NFS3ERR_JUKEBOX to the last try */
}

/*
 * Write @len bytes of @buf at @off: a WRITE per max_write bytes, and after a
 * short WRITE the rest. *all_stable: the server made every piece stable;
 * else @verf is the verifier of the unstable pieces. If it changes from one
 * piece to the next, the server restarted and may have lost the earlier
 * ones: start again from the beginning.
 */
static int write_range(struct nfs_node *n, uint64_t off, const uint8_t *buf, uint64_t len,
		       bool stable, bool *all_stable, uint8_t *verf)
{
	for (unsigned round = 0;; round++) {
		bool have_verf = false, restart = false;
		uint64_t done = 0;

		*all_stable = true;
		while (done < len) {
			uint64_t chunk = len - done < n->max_write ? len - done : n->max_write;
			uint8_t v[VS_NFS_VERF_SIZE];
			uint32_t count = 0;
			bool st = false;
			int ret =
				rpc_write(n, off + done, buf + done, chunk, stable, &count, &st, v);

			if (ret < 0)
				return ret;
			if (count == 0 || count > chunk)
				return -EIO; /* no progress, or more than asked: a broken server */
			if (!st) {
				if (have_verf && memcmp(v, verf, VS_NFS_VERF_SIZE)) {
					restart = true;
					break;
				}
				memcpy(verf, v, VS_NFS_VERF_SIZE);
				have_verf = true;
				*all_stable = false;
			}
			done += count;
		}
		if (!restart)
			return 0;
		if (round + 1 >= NFS_RESEND_ROUNDS)
			return -EIO;
	}
}

/* Write @buf and make it stable before returning (FUA, no volatile cache). */
static int write_stable(struct nfs_node *n, uint64_t off, const uint8_t *buf, uint64_t len)
{
	for (unsigned round = 0; round < NFS_RESEND_ROUNDS; round++) {
		uint8_t verf[VS_NFS_VERF_SIZE], cverf[VS_NFS_VERF_SIZE];
		bool st;
		int ret = write_range(n, off, buf, len, true, &st, verf);

		if (ret < 0 || st)
			return ret;
		/* The server kept it UNSTABLE after all: COMMIT, and again if it restarted. */
		ret = rpc_commit(n, cverf);
		if (ret < 0)
			return ret;
		if (!memcmp(cverf, verf, VS_NFS_VERF_SIZE))
			return 0;
	}
	return -EIO;
}

/*
 * Write every kept entry again, in order, after a COMMIT whose verifier
 * did not match. New writes wait (n->barrier) until the COMMIT that
 * follows succeeds, and writes already sent finish first: nothing newer
 * is on the wire while older data is written again.
 */
static int resend_all(struct nfs_node *n, unsigned lost, const uint8_t *verf)
{
	uint64_t bytes = 0;
	unsigned count = 0;
	char hex[2 * VS_NFS_VERF_SIZE + 1];

	for (int i = 0; i < VS_NFS_VERF_SIZE; i++)
		snprintf(hex + 2 * i, 3, "%02x", verf[i]);

	n->barrier = true;
	while (n->writes_in_flight)
		vs_co_queue_wait(&n->drain_q);
	for (struct vs_nfs_wb *wb = n->wl.head; wb; wb = wb->next) {
		count++;
		bytes += wb->len;
	}
	vs_warn("nfs: '%s': the server's write verifier changed to %s (it restarted?): %u "
		"uncommitted writes may be lost; writing %u writes (%" PRIu64 " bytes) again",
		n->name, hex, lost, count, bytes);
	for (struct vs_nfs_wb *wb = n->wl.head; wb; wb = wb->next) {
		uint8_t v[VS_NFS_VERF_SIZE];
		bool st;
		int ret = write_range(n, wb->offset, wb->data, wb->len, false, &st, v);

		if (ret < 0)
			return ret;
		vs_nfs_wlist_rewritten(&n->wl, wb, st, v);
	}
	n->resent_writes += count;
	n->resent_bytes += bytes;
	return 0;
}

/*
 * Make every write that has completed stable: COMMIT, and if the verifier
 * shows the server restarted since some of them, write them all again and
 * COMMIT again (bounded). Nothing to COMMIT when every kept write is stable.
 */
static int commit_all(struct nfs_node *n)
{
	int ret = 0;

	vs_co_mutex_lock(&n->commit_lock);
	for (unsigned round = 0;; round++) {
		uint8_t verf[VS_NFS_VERF_SIZE];
		unsigned lost;

		if (!vs_nfs_wlist_commit_begin(&n->wl))
			break;
		ret = rpc_commit(n, verf);
		lost = vs_nfs_wlist_commit_end(&n->wl, ret < 0 ? NULL : verf);
		if (ret < 0 || !lost)
			break;
		if (round + 1 >= NFS_RESEND_ROUNDS) {
			vs_warn("nfs: '%s': the write verifier still changes after %u rewrites: "
				"giving up",
				n->name, round);
			ret = -EIO;
			break;
		}
		ret = resend_all(n, lost, verf);
		if (ret < 0)
			break;
	}
	if (n->barrier) {
		n->barrier = false;
		vs_co_queue_wake_all(&n->barrier_q);
	}
	vs_co_mutex_unlock(&n->commit_lock);
	return ret;
}

static int node_write(struct vs_node *node, struct nfs_node *n, struct vs_req *req)
{
	bool stable = n->stable_writes || (req->flags & VS_REQ_FUA), st = false;
	uint8_t verf[VS_NFS_VERF_SIZE];
	struct vs_nfs_wb *wb = NULL;
	void *bounce = NULL;
	const uint8_t *buf;
	int ret;

	if (n->retain) {
		while (n->barrier)
			vs_co_queue_wait(&n->barrier_q);
		/* Enough kept: COMMIT (and maybe write it all again) first. */
		if (n->wl.completed && (n->wl.bytes + req->len > n->retain_max ||
					n->wl.count >= NFS_UNSTABLE_MAX_WRITES)) {
			ret = commit_all(n);
			if (ret < 0)
				return ret;
		}
		while (n->barrier)
			vs_co_queue_wait(&n->barrier_q);
	}
	/*
	 * An unstable write is kept until committed. So is a stable one while
	 * older kept writes are there: written again, they must not land over
	 * it (nfs-wlist.h).
	 */
	if (n->retain && (!stable || n->wl.completed)) {
		wb = vs_nfs_wlist_add(&n->wl, req->offset, req->iov, req->niov, req->len);
		if (!wb)
			return -ENOMEM;
		buf = wb->data;
	} else if (req->niov == 1) {
		buf = req->iov[0].iov_base;
	} else {
		uint8_t *p = bounce = malloc(req->len ? req->len : 1);

		if (!bounce)
			return -ENOMEM;
		for (int i = 0; i < req->niov; i++) {
			memcpy(p, req->iov[i].iov_base, req->iov[i].iov_len);
			p += req->iov[i].iov_len;
		}
		buf = bounce;
	}
	n->writes_in_flight++;
	if (wb) {
		ret = write_range(n, req->offset, buf, req->len, stable, &st, verf);
		if (ret < 0)
			vs_nfs_wlist_remove(&n->wl, wb);
		else
			vs_nfs_wlist_complete(&n->wl, wb, st, verf);
	} else if (stable) {
		ret = write_stable(n, req->offset, buf, req->len);
	} else {
		/* cache=unsafe: no COMMIT will come, nothing to keep. */
		ret = write_range(n, req->offset, buf, req->len, false, &st, verf);
	}
	free(bounce);
	if (--n->writes_in_flight == 0)
		vs_co_queue_wake_all(&n->drain_q);
	if (ret < 0)
		return ret;
	if (req->offset + req->len > node->size)
		node->size = req->offset + req->len;
	/* Stable asked, kept UNSTABLE by the server: COMMIT before completing. */
	if (wb && stable && !st)
		return commit_all(n);
	return 0;
}

static int nfs_submit(struct vs_node *node, struct vs_req *req)
{
	struct nfs_node *n = node->opaque;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		return node_read(n, req);
	case VS_OP_WRITE:
		return node_write(node, n, req);
	case VS_OP_FLUSH:
		/* cache=unsafe and read-only nodes: nothing to commit. */
		if (!n->retain)
			return 0;
		ret = commit_all(n);
		/* Buffers kept for the next writes: the writer may now stay idle. */
		vs_nfs_wlist_drop_spares(&n->wl);
		return ret;
	case VS_OP_BLOCK_STATUS:
		/* NFSv3 has no SEEK_DATA: everything is data. */
		vs_req_bs_whole(req, node, VS_BS_DATA | VS_BS_ALLOCATED);
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
	/* A kept write past a new end must never be written again: commit first. */
	if (n->retain && n->wl.completed) {
		ret = commit_all(n);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Could not commit '%s'",
						   node->filename);
	}
	ret = NFS_CALL(n->s, c, nfs_ftruncate_async(n->s->nfs, n->fh, size, cb_plain, c));
	if (ret < 0)
		return call_error(c, ret, err, "Could not resize", node->filename);
	call_release(c);
	node->size = size;
	if (prealloc == VS_PREALLOC_FULL && size > old) {
		ret = nfs_fill_zeroes(node, old, size);
		if (ret < 0) {
			int r;

			/* A failed growth does not keep the new capacity (best effort). */
			r = NFS_CALL(n->s, c,
				     nfs_ftruncate_async(n->s->nfs, n->fh, old, cb_plain, c));
			if (r == 0)
				node->size = old;
			if (c)
				call_release(c);
			return vs_error_setf_errno(err, ret, "Could not preallocate '%s'",
						   node->filename);
		}
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
			   size_t nopts, unsigned flags, struct vs_error *err)
{
	(void)flags;
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
	.prefixes = (const char *const[]){ "nfs://", NULL },
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

VS_DRIVER_REGISTER(vs_driver_nfs)

int vs_nfs_exports(const char *host, char ***dirs, size_t *n, struct vs_error *err)
{
	struct exportnode *list = mount_getexports(host), *e;
	size_t count = 0, i = 0;

	*dirs = NULL;
	*n = 0;
	if (!list)
		return vs_error_set(err, -EHOSTUNREACH,
				    "cannot list the NFS exports of '%s' (no MOUNT service, or "
				    "no export)",
				    host);
	for (e = list; e; e = e->ex_next)
		count++;
	*dirs = calloc(count, sizeof(**dirs));
	if (!*dirs) {
		mount_free_export_list(list);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	for (e = list; e; e = e->ex_next) {
		(*dirs)[i] = strdup(e->ex_dir);
		if (!(*dirs)[i])
			break;
		i++;
	}
	mount_free_export_list(list);
	*n = i;
	return i == count ? 0 : vs_error_set(err, -ENOMEM, "Out of memory");
}
