/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rbd protocol driver: a Ceph RBD image through librbd's asynchronous
 * API, on the reactor (see driver-rbd.h for the names it takes).
 *
 * librbd runs its own threads and ends each rbd_aio_* request by calling a
 * completion callback on one of them. That callback only records the result,
 * queues the request on the node's done list and bumps an eventfd; a pump
 * coroutine polls the eventfd through the ring and wakes the coroutines of
 * the requests that ended. No thread is spent per request, and nothing but
 * the done list is shared with librbd's threads.
 *
 * librados's blocking calls (connect, open, stat, resize, the lock, diff
 * iteration) run on the worker pool while the calling coroutine yields.
 *
 * Cache modes map to librbd's cache: none and directsync turn rbd_cache off,
 * the others leave it on (writethrough makes every write a write and a
 * flush; unsafe drops flushes). Writers exclude each other through the
 * image's exclusive-lock feature: a read-write open takes the lock and keeps
 * it (another client's request for it is refused) until the node closes.
 */
#include "driver.h"
#include "driver-rbd.h"
#include "rbd-lib.h"
#include "secret.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define RBD_MAX_TRANSFER (32u << 20)
/* Seconds librados waits for the monitors before a connect fails. */
#define RBD_CONNECT_TIMEOUT "30"
/* Returned by the diff callback to end the iteration early. */
#define RBD_DIFF_STOP (-9999)

/* ---- names ---- */

/* Copy @s up to an unescaped character of @stops into a new string; advance @s. */
static char *take_part(const char **s, const char *stops)
{
	const char *p = *s;
	char *out = malloc(strlen(p) + 1), *o = out;

	if (!out)
		return NULL;
	while (*p && !strchr(stops, *p)) {
		if (*p == '\\' && p[1])
			p++;
		*o++ = *p++;
	}
	*o = '\0';
	*s = p;
	return out;
}

void vs_rbd_spec_free(struct vs_rbd_spec *spec)
{
	free(spec->pool);
	free(spec->ns);
	free(spec->image);
	free(spec->snap);
	for (size_t i = 0; i < spec->nopts; i++) {
		free(spec->opts[i].key);
		if (spec->opts[i].value) {
			gnutls_memset(spec->opts[i].value, 0, strlen(spec->opts[i].value));
			free(spec->opts[i].value);
		}
	}
	memset(spec, 0, sizeof(*spec));
}

int vs_rbd_spec_parse(const char *name, struct vs_rbd_spec *spec, struct vs_error *err)
{
	const char *p = name;
	char *a = NULL, *b = NULL, *c = NULL;

	memset(spec, 0, sizeof(*spec));
	if (strncmp(p, "rbd:", 4))
		return vs_error_set(err, -EINVAL, "Not an rbd: name");
	p += 4;
	a = take_part(&p, "/@:");
	if (!a)
		goto nomem;
	if (*p != '/' || !a[0]) {
		free(a);
		return vs_error_set(
			err, -EINVAL,
			"Invalid rbd name (use rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:OPTS])");
	}
	p++;
	b = take_part(&p, "/@:");
	if (!b)
		goto nomem;
	if (*p == '/') {
		p++;
		c = take_part(&p, "/@:");
		if (!c)
			goto nomem;
		spec->pool = a;
		spec->ns = b;
		spec->image = c;
	} else {
		spec->pool = a;
		spec->image = b;
	}
	a = b = c = NULL;
	if (!spec->image[0] || *p == '/')
		goto bad;
	if (*p == '@') {
		p++;
		spec->snap = take_part(&p, ":");
		if (!spec->snap)
			goto nomem;
		if (!spec->snap[0])
			goto bad;
	}
	while (*p == ':') {
		char *kv, *eq;

		p++;
		if (spec->nopts == sizeof(spec->opts) / sizeof(spec->opts[0])) {
			vs_rbd_spec_free(spec);
			return vs_error_set(err, -EINVAL, "Too many rbd options");
		}
		kv = take_part(&p, ":");
		if (!kv)
			goto nomem;
		eq = strchr(kv, '=');
		if (!eq || eq == kv) {
			vs_error_set(err, -EINVAL, "Invalid rbd option '%s' (use KEY=VALUE)", kv);
			free(kv);
			vs_rbd_spec_free(spec);
			return -EINVAL;
		}
		*eq = '\0';
		spec->opts[spec->nopts].key = kv;
		spec->opts[spec->nopts].value = strdup(eq + 1);
		if (!spec->opts[spec->nopts].value)
			goto nomem;
		spec->nopts++;
	}
	if (*p)
		goto bad;
	return 0;
bad:
	vs_rbd_spec_free(spec);
	return vs_error_set(err, -EINVAL,
			    "Invalid rbd name (use rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:OPTS])");
nomem:
	free(a);
	free(b);
	free(c);
	vs_rbd_spec_free(spec);
	return vs_error_set(err, -ENOMEM, "Out of memory");
}

/* ---- the connection ---- */

struct rbd_conn {
	rados_t cluster;
	rados_ioctx_t io;
	bool have_cluster;
	bool have_io;
};

struct conn_job {
	struct rbd_conn *c;
	const struct vs_rbd_spec *spec;
	enum vs_cache_mode cache;
	char *key; /* base64 key from key-secret, or NULL */
	int ret;
	char what[256]; /* what failed */
};

static int conf_set(struct conn_job *j, const char *key, const char *value)
{
	int r = vs_rbd.rados_conf_set(j->c->cluster, key, value);

	if (r < 0)
		snprintf(j->what, sizeof(j->what), "Invalid rbd option '%s'", key);
	return r;
}

/* Worker: create the cluster handle, configure it and connect. */
static void conn_job_run(void *arg)
{
	struct conn_job *j = arg;
	const struct vs_rbd_spec *s = j->spec;
	const char *id = NULL, *conf = NULL;
	struct vs_error lerr = { 0 };
	int r;

	/*
	 * Loading runs Ceph's static constructors, which want far more stack
	 * than a coroutine has: so here, on a worker thread.
	 */
	r = vs_rbd_lib_load(&lerr);
	if (r < 0) {
		snprintf(j->what, sizeof(j->what), "%.*s", (int)sizeof(j->what) - 1, lerr.msg);
		goto out;
	}
	for (size_t i = 0; i < s->nopts; i++) {
		if (!strcmp(s->opts[i].key, "id") || !strcmp(s->opts[i].key, "user"))
			id = s->opts[i].value;
		else if (!strcmp(s->opts[i].key, "conf"))
			conf = s->opts[i].value;
	}
	r = vs_rbd.rados_create(&j->c->cluster, id);
	if (r < 0) {
		snprintf(j->what, sizeof(j->what), "Could not create a Ceph cluster handle");
		goto out;
	}
	j->c->have_cluster = true;
	if (conf) {
		r = vs_rbd.rados_conf_read_file(j->c->cluster, conf);
		if (r < 0) {
			snprintf(j->what, sizeof(j->what),
				 "Could not read the Ceph configuration '%s'", conf);
			goto out;
		}
	} else {
		(void)vs_rbd.rados_conf_read_file(j->c->cluster, NULL); /* none is fine */
	}
	(void)vs_rbd.rados_conf_parse_env(j->c->cluster, NULL);
	r = conf_set(j, "client_mount_timeout", RBD_CONNECT_TIMEOUT);
	if (r == 0)
		r = conf_set(j, "rbd_cache",
			     j->cache == VS_CACHE_NONE || j->cache == VS_CACHE_DIRECTSYNC ?
				     "false" :
				     "true");
	if (r == 0 && j->key)
		r = conf_set(j, "key", j->key);
	for (size_t i = 0; i < s->nopts && r == 0; i++) {
		const char *k = s->opts[i].key;

		if (!strcmp(k, "id") || !strcmp(k, "user") || !strcmp(k, "conf") ||
		    !strcmp(k, "key-secret"))
			continue;
		r = conf_set(j, k, s->opts[i].value);
	}
	if (r < 0)
		goto out;
	r = vs_rbd.rados_connect(j->c->cluster);
	if (r < 0) {
		snprintf(j->what, sizeof(j->what), "Could not connect to the Ceph cluster");
		goto out;
	}
	r = vs_rbd.rados_ioctx_create(j->c->cluster, s->pool, &j->c->io);
	if (r < 0) {
		snprintf(j->what, sizeof(j->what), "Could not open Ceph pool '%s'", s->pool);
		goto out;
	}
	j->c->have_io = true;
	vs_rbd.rados_ioctx_set_namespace(j->c->io, s->ns ? s->ns : "");
out:
	j->ret = r;
}

static void conn_close_run(void *arg)
{
	struct rbd_conn *c = arg;

	if (c->have_io)
		vs_rbd.rados_ioctx_destroy(c->io);
	if (c->have_cluster)
		vs_rbd.rados_shutdown(c->cluster);
	c->have_io = c->have_cluster = false;
}

static void conn_close(struct rbd_conn *c)
{
	if (c->have_cluster || c->have_io)
		(void)vs_co_run_in_worker(conn_close_run, c);
}

/* The base64 form of secret @id (ceph's "key"), or NULL with @err filled. */
static char *secret_key(const char *id, struct vs_error *err)
{
	uint8_t *data = NULL;
	size_t len = 0;
	gnutls_datum_t in, out = { 0 };
	char *key;

	if (vs_secret_get(id, &data, &len) < 0) {
		vs_error_set(err, -ENOENT, "No secret with id '%s'", id);
		return NULL;
	}
	in.data = data;
	in.size = (unsigned)len;
	if (gnutls_base64_encode2(&in, &out) < 0) {
		gnutls_memset(data, 0, len);
		free(data);
		vs_error_set(err, -ENOMEM, "Out of memory");
		return NULL;
	}
	gnutls_memset(data, 0, len);
	free(data);
	key = strndup((const char *)out.data, out.size);
	gnutls_memset(out.data, 0, out.size);
	gnutls_free(out.data);
	if (!key)
		vs_error_set(err, -ENOMEM, "Out of memory");
	return key;
}

static int conn_open(struct rbd_conn *c, const struct vs_rbd_spec *spec, enum vs_cache_mode cache,
		     struct vs_error *err)
{
	struct conn_job j = { .c = c, .spec = spec, .cache = cache };
	int ret;

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < spec->nopts; i++) {
		if (!strcmp(spec->opts[i].key, "key-secret")) {
			j.key = secret_key(spec->opts[i].value, err);
			if (!j.key)
				return -ENOENT;
		}
	}
	ret = vs_co_run_in_worker(conn_job_run, &j);
	if (ret == 0)
		ret = j.ret;
	if (j.key) {
		gnutls_memset(j.key, 0, strlen(j.key));
		free(j.key);
	}
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "%s", j.what[0] ? j.what : "Ceph connection failed");
		conn_close(c);
		return ret;
	}
	return 0;
}

/* ---- the node ---- */

struct rbd_call;

struct rbd_node {
	struct rbd_conn conn;
	rbd_image_t image;
	bool have_image;
	char shown[256]; /* rbd:POOL/IMAGE, for messages (no options: they may hold keys) */
	uint64_t features;
	uint64_t obj_size;
	bool locked;
	struct vs_co_mutex grow_lock;
	/* Completions: librbd's threads queue ended calls here and bump efd. */
	int efd;
	pthread_mutex_t lock;
	bool lock_init;
	struct rbd_call *done;
	struct vs_co *pump;
	bool pump_running;
	bool stopping;
	struct vs_co_queue exit;
};

struct rbd_call {
	struct rbd_node *n;
	struct vs_co *co;
	ssize_t ret;
	bool done; /* set by the pump, on the reactor */
	struct rbd_call *next;
};

/* librbd's thread: record, queue, notify. */
static void rbd_cb(rbd_completion_t comp, void *arg)
{
	struct rbd_call *c = arg;
	struct rbd_node *n = c->n;
	uint64_t one = 1;

	c->ret = vs_rbd.rbd_aio_get_return_value(comp);
	vs_rbd.rbd_aio_release(comp);
	pthread_mutex_lock(&n->lock);
	c->next = n->done;
	n->done = c;
	/* Under the lock: close() takes it before it closes efd. */
	if (write(n->efd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow at one per request. */
	}
	pthread_mutex_unlock(&n->lock);
}

static void pump_main(void *opaque)
{
	struct rbd_node *n = opaque;

	n->pump = vs_co_self();
	while (!n->stopping) {
		struct rbd_call *list;
		uint64_t v;
		int r = vs_aio_poll(n->efd, POLLIN);

		if (r < 0 && r != -EINTR && r != -ECANCELED)
			break;
		if (read(n->efd, &v, sizeof(v)) < 0) {
			/* EAGAIN: nothing yet */
		}
		pthread_mutex_lock(&n->lock);
		list = n->done;
		n->done = NULL;
		pthread_mutex_unlock(&n->lock);
		while (list) {
			struct rbd_call *c = list;

			list = c->next;
			c->done = true;
			vs_co_wake(c->co);
		}
	}
	n->pump = NULL;
	n->pump_running = false;
	vs_co_queue_wake_all(&n->exit);
}

/* Queue a request with @start (an rbd_aio_* call taking the completion). */
#define RBD_AIO(n, start_expr)                                                 \
	({                                                                     \
		struct rbd_call c_ = { .n = (n), .co = vs_co_self() };         \
		rbd_completion_t comp;                                         \
		int q_ = vs_rbd.rbd_aio_create_completion(&c_, rbd_cb, &comp); \
		if (q_ == 0) {                                                 \
			q_ = (start_expr);                                     \
			if (q_ < 0) {                                          \
				vs_rbd.rbd_aio_release(comp);                  \
			} else {                                               \
				while (!c_.done)                               \
					vs_co_yield();                         \
				q_ = c_.ret < 0 ? (int)c_.ret : 0;             \
			}                                                      \
		}                                                              \
		q_;                                                            \
	})

/* The blocking image calls, on the worker pool. */
struct img_job {
	struct rbd_node *n;
	const struct vs_rbd_spec *spec;
	bool read_only;
	uint64_t arg;
	int ret;
	rbd_image_info_t info;
	uint64_t flags;
	/* diff iteration */
	uint64_t off, len;
	uint64_t ext_off, ext_len;
	int ext_exists;
	bool found;
	uint64_t total;
};

static void open_run(void *arg)
{
	struct img_job *j = arg;
	struct rbd_node *n = j->n;

	if (j->read_only)
		j->ret = vs_rbd.rbd_open_read_only(n->conn.io, j->spec->image, &n->image,
						   j->spec->snap);
	else
		j->ret = vs_rbd.rbd_open(n->conn.io, j->spec->image, &n->image, j->spec->snap);
	if (j->ret < 0)
		return;
	n->have_image = true;
	j->ret = vs_rbd.rbd_stat(n->image, &j->info, sizeof(j->info));
	if (j->ret == 0)
		j->ret = vs_rbd.rbd_get_features(n->image, &n->features);
}

static void lock_run(void *arg)
{
	struct img_job *j = arg;

	j->ret = vs_rbd.rbd_lock_acquire(j->n->image, RBD_LOCK_MODE_EXCLUSIVE);
}

static void close_run(void *arg)
{
	struct img_job *j = arg;
	struct rbd_node *n = j->n;

	if (n->locked)
		(void)vs_rbd.rbd_lock_release(n->image);
	n->locked = false;
	(void)vs_rbd.rbd_close(n->image);
	n->have_image = false;
}

static void resize_run(void *arg)
{
	struct img_job *j = arg;

	j->ret = vs_rbd.rbd_resize(j->n->image, j->arg);
}

static void stat_run(void *arg)
{
	struct img_job *j = arg;

	j->ret = vs_rbd.rbd_get_size(j->n->image, &j->arg);
	if (j->ret == 0)
		j->ret = vs_rbd.rbd_get_flags(j->n->image, &j->flags);
}

static int diff_first_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct img_job *j = arg;

	if (!exists)
		return 0;
	j->found = true;
	j->ext_off = off;
	j->ext_len = len;
	return RBD_DIFF_STOP;
}

static void diff_first_run(void *arg)
{
	struct img_job *j = arg;

	j->ret =
		vs_rbd.rbd_diff_iterate2(j->n->image, NULL, j->off, j->len, 1, 1, diff_first_cb, j);
	if (j->ret == RBD_DIFF_STOP)
		j->ret = 0;
}

static int diff_sum_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct img_job *j = arg;

	(void)off;
	if (exists)
		j->total += len;
	return 0;
}

static void diff_sum_run(void *arg)
{
	struct img_job *j = arg;

	j->ret = vs_rbd.rbd_diff_iterate2(j->n->image, NULL, 0, j->len, 1, 1, diff_sum_cb, j);
}

static int run_job(void (*fn)(void *), struct img_job *j)
{
	int ret = vs_co_run_in_worker(fn, j);

	return ret < 0 ? ret : j->ret;
}

static void node_teardown(struct rbd_node *n)
{
	if (n->have_image) {
		struct img_job j = { .n = n };

		(void)vs_co_run_in_worker(close_run, &j);
	}
	if (n->pump_running) {
		uint64_t one = 1;

		n->stopping = true;
		if (write(n->efd, &one, sizeof(one)) < 0) {
			/* the poll ends anyway on cancel */
		}
		while (n->pump_running)
			vs_co_queue_wait(&n->exit);
	}
	conn_close(&n->conn);
	if (n->lock_init) {
		/* A callback still inside write() holds the lock. */
		pthread_mutex_lock(&n->lock);
		pthread_mutex_unlock(&n->lock);
		pthread_mutex_destroy(&n->lock);
		n->lock_init = false;
	}
	if (n->efd >= 0)
		close(n->efd);
	n->efd = -1;
}

/* Whether block status through diff iteration is cheap: fast-diff, valid. */
static bool node_fast_diff(struct rbd_node *n, uint64_t *size)
{
	struct img_job j = { .n = n };

	if (!(n->features & RBD_FEATURE_FAST_DIFF))
		return false;
	if (run_job(stat_run, &j) < 0 || (j.flags & RBD_FLAG_FAST_DIFF_INVALID))
		return false;
	if (size)
		*size = j.arg;
	return true;
}

static int rbd_drv_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct rbd_node *n = node->opaque;
	struct vs_rbd_spec spec;
	struct img_job j = { .n = n };
	int ret;

	n->efd = -1;
	ret = vs_rbd_spec_parse(opts->filename, &spec, err);
	if (ret < 0)
		return ret;
	snprintf(n->shown, sizeof(n->shown), "rbd:%s/%s%s%s%s%s", spec.pool, spec.ns ? spec.ns : "",
		 spec.ns ? "/" : "", spec.image, spec.snap ? "@" : "", spec.snap ? spec.snap : "");
	if (spec.snap && !node->read_only) {
		ret = vs_error_set(err, -EROFS, "The snapshot of '%s' can only be opened read-only",
				   n->shown);
		goto out;
	}
	n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->efd < 0) {
		ret = vs_error_setf_errno(err, -errno, "eventfd");
		goto out;
	}
	if (pthread_mutex_init(&n->lock, NULL)) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	n->lock_init = true;
	ret = conn_open(&n->conn, &spec, opts->cache, err);
	if (ret < 0)
		goto out;
	j.spec = &spec;
	j.read_only = node->read_only;
	ret = run_job(open_run, &j);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not open '%s'", n->shown);
		goto out;
	}
	n->obj_size = j.info.obj_size;
	node->size = j.info.size;
	if (!node->read_only && !node->force_share && (n->features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
		ret = run_job(lock_run, &j);
		if (ret < 0) {
			vs_error_setf_errno(err, -EBUSY,
					    "Failed to get the exclusive lock of '%s': is another "
					    "client writing to it? (%s)",
					    n->shown, strerror(-ret));
			ret = -EBUSY;
			goto out;
		}
		n->locked = true;
	}
	n->pump_running = true;
	if (!vs_co_spawn(vs_reactor_current(), pump_main, n)) {
		n->pump_running = false;
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	node->limits.request_align = 1;
	node->limits.mem_align = 1;
	node->limits.max_transfer = RBD_MAX_TRANSFER;
	node->limits.max_discard = 0;
	node->caps = VS_CAP_FLUSH | VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS;
	if (!spec.snap)
		node->caps |= VS_CAP_GROWABLE;
	vs_rbd_spec_free(&spec);
	return 0;
out:
	vs_rbd_spec_free(&spec);
	node_teardown(n);
	return ret;
}

static void rbd_drv_close(struct vs_node *node)
{
	node_teardown(node->opaque);
}

static int node_flush(struct rbd_node *n)
{
	return RBD_AIO(n, vs_rbd.rbd_aio_flush(n->image, comp));
}

static int node_block_status(struct vs_node *node, struct rbd_node *n, struct vs_req *req)
{
	struct img_job j = { .n = n };
	uint64_t size = 0, end;
	int ret;

	if (!node_fast_diff(n, &size) || req->offset >= size) {
		vs_req_bs_whole(req, node, VS_BS_DATA | VS_BS_ALLOCATED);
		return 0;
	}
	end = req->offset + req->len < size ? req->offset + req->len : size;
	j.off = req->offset;
	j.len = end - req->offset;
	ret = run_job(diff_first_run, &j);
	if (ret < 0) {
		vs_req_bs_whole(req, node, VS_BS_DATA | VS_BS_ALLOCATED);
		return 0;
	}
	req->bs_map = req->offset;
	req->bs_file = node;
	if (!j.found || j.ext_off >= end) {
		req->bs_pnum = end - req->offset;
		req->bs_status = VS_BS_ZERO | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
	} else if (j.ext_off > req->offset) {
		req->bs_pnum = j.ext_off - req->offset;
		req->bs_status = VS_BS_ZERO | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
	} else {
		uint64_t e = j.ext_off + j.ext_len < end ? j.ext_off + j.ext_len : end;

		req->bs_pnum = e > req->offset ? e - req->offset : end - req->offset;
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
	}
	return 0;
}

/*
 * A write past the end grows the image first, as a file would grow (formats
 * create their image empty and write their metadata after it).
 */
static int grow_for(struct vs_node *node, struct rbd_node *n, uint64_t end)
{
	struct img_job j = { .n = n, .arg = end };
	int ret;

	if (end <= node->size)
		return 0;
	vs_co_mutex_lock(&n->grow_lock); /* never let a smaller grow land last */
	ret = 0;
	if (end > node->size) {
		ret = run_job(resize_run, &j);
		if (ret == 0)
			node->size = end;
	}
	vs_co_mutex_unlock(&n->grow_lock);
	return ret;
}

static int rbd_drv_submit(struct vs_node *node, struct vs_req *req)
{
	struct rbd_node *n = node->opaque;
	int ret;

	if (req->op == VS_OP_WRITE || req->op == VS_OP_WRITE_ZEROES) {
		ret = grow_for(node, n, req->offset + req->len);
		if (ret < 0)
			return ret;
	}
	switch (req->op) {
	case VS_OP_READ:
		return RBD_AIO(n, vs_rbd.rbd_aio_readv(n->image, req->iov, req->niov, req->offset,
						       comp));
	case VS_OP_WRITE:
		ret = RBD_AIO(n, vs_rbd.rbd_aio_writev(n->image, req->iov, req->niov, req->offset,
						       comp));
		if (ret == 0 && (req->flags & VS_REQ_FUA))
			ret = node_flush(n);
		return ret;
	case VS_OP_FLUSH:
		if (!node->knobs.flush_to_disk)
			return 0;
		return node_flush(n);
	case VS_OP_DISCARD:
		return RBD_AIO(n, vs_rbd.rbd_aio_discard(n->image, req->offset, req->len, comp));
	case VS_OP_WRITE_ZEROES:
		ret = RBD_AIO(n, vs_rbd.rbd_aio_write_zeroes(n->image, req->offset, req->len, comp,
							     0, 0));
		if (ret == 0 && (req->flags & VS_REQ_FUA))
			ret = node_flush(n);
		return ret;
	case VS_OP_BLOCK_STATUS:
		return node_block_status(node, n, req);
	}
	return -EINVAL;
}

static int rbd_drv_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			    bool exact, struct vs_error *err)
{
	struct rbd_node *n = node->opaque;
	struct img_job j = { .n = n, .arg = size };
	int ret;

	(void)exact;
	if (prealloc != VS_PREALLOC_OFF)
		return vs_error_set(err, -ENOTSUP, "Preallocation is not supported on '%s'",
				    n->shown);
	ret = run_job(resize_run, &j);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not resize '%s'", n->shown);
	node->size = size;
	return 0;
}

static int64_t rbd_drv_allocated_size(struct vs_node *node)
{
	struct rbd_node *n = node->opaque;
	struct img_job j = { .n = n };
	uint64_t size;
	int ret;

	if (!node_fast_diff(n, &size))
		return -ENOTSUP;
	j.len = size;
	ret = run_job(diff_sum_run, &j);
	return ret < 0 ? ret : (int64_t)j.total;
}

/* ---- create ---- */

struct create_job {
	struct rbd_conn *c;
	const char *image;
	uint64_t size;
	int ret;
};

static void create_run(void *arg)
{
	struct create_job *j = arg;
	rbd_image_options_t o;

	vs_rbd.rbd_image_options_create(&o);
	j->ret = vs_rbd.rbd_create4(j->c->io, j->image, j->size, o);
	vs_rbd.rbd_image_options_destroy(o);
}

static int rbd_drv_create(const char *filename, uint64_t size, const struct vs_kv *opts,
			  size_t nopts, unsigned flags, struct vs_error *err)
{
	struct vs_rbd_spec spec;
	struct rbd_conn c;
	struct create_job j = { .c = &c, .size = size };
	int ret;

	(void)flags;
	for (size_t i = 0; i < nopts; i++) {
		if (!strcmp(opts[i].key, "size") ||
		    (!strcmp(opts[i].key, "preallocation") && !strcmp(opts[i].value, "off")))
			continue;
		return vs_error_set(err, -EINVAL, "Option '%s' is not supported on rbd",
				    opts[i].key);
	}
	ret = vs_rbd_spec_parse(filename, &spec, err);
	if (ret < 0)
		return ret;
	if (spec.snap) {
		vs_rbd_spec_free(&spec);
		return vs_error_set(err, -EINVAL, "Cannot create an rbd snapshot as an image");
	}
	ret = conn_open(&c, &spec, VS_CACHE_WRITEBACK, err);
	if (ret == 0) {
		j.image = spec.image;
		ret = vs_co_run_in_worker(create_run, &j);
		if (ret == 0)
			ret = j.ret;
		if (ret < 0)
			vs_error_setf_errno(err, ret, "Could not create rbd image '%s/%s'",
					    spec.pool, spec.image);
		conn_close(&c);
	}
	vs_rbd_spec_free(&spec);
	return ret;
}

/* ---- the pool backend's calls ---- */

struct vs_rbd_pool {
	struct rbd_conn conn;
	char pool[256];
};

int vs_rbd_pool_open(struct vs_rbd_pool **out, const char *name, struct vs_error *err)
{
	struct vs_rbd_spec spec;
	struct vs_rbd_pool *p;
	int ret = vs_rbd_spec_parse(name, &spec, err);

	*out = NULL;
	if (ret < 0)
		return ret;
	p = calloc(1, sizeof(*p));
	if (!p) {
		vs_rbd_spec_free(&spec);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	snprintf(p->pool, sizeof(p->pool), "%s", spec.pool);
	ret = conn_open(&p->conn, &spec, VS_CACHE_WRITEBACK, err);
	vs_rbd_spec_free(&spec);
	if (ret < 0) {
		free(p);
		return ret;
	}
	*out = p;
	return 0;
}

void vs_rbd_pool_close(struct vs_rbd_pool *p)
{
	if (!p)
		return;
	conn_close(&p->conn);
	free(p);
}

enum pool_op { PO_STAT, PO_LIST, PO_IMAGE, PO_CREATE, PO_REMOVE, PO_RESIZE, PO_RENAME, PO_CLONE };

struct pool_job {
	struct vs_rbd_pool *p;
	enum pool_op op;
	const char *a, *b, *snap;
	uint64_t size, size2, size3;
	char *names;
	size_t names_len;
	char *parent;
	size_t parentsz;
	int ret;
	char what[160];
};

static int image_du_cb(uint64_t off, size_t len, int exists, void *arg)
{
	(void)off;
	if (exists)
		*(uint64_t *)arg += len;
	return 0;
}

static void image_stat_run(struct pool_job *j)
{
	rbd_image_t img;
	uint64_t features = 0, flags = 0;
	rbd_linked_image_spec_t ps;
	rbd_snap_spec_t ss;
	int r = vs_rbd.rbd_open_read_only(j->p->conn.io, j->a, &img, NULL);

	if (r < 0) {
		j->ret = r;
		return;
	}
	r = vs_rbd.rbd_get_size(img, &j->size);
	if (r == 0)
		r = vs_rbd.rbd_get_features(img, &features);
	if (r == 0)
		r = vs_rbd.rbd_get_flags(img, &flags);
	j->size2 = j->size;
	if (r == 0 && (features & RBD_FEATURE_FAST_DIFF) && !(flags & RBD_FLAG_FAST_DIFF_INVALID)) {
		uint64_t used = 0;

		if (vs_rbd.rbd_diff_iterate2(img, NULL, 0, j->size, 0, 1, image_du_cb, &used) == 0)
			j->size2 = used;
	}
	if (r == 0 && j->parent && vs_rbd.rbd_get_parent(img, &ps, &ss) == 0) {
		snprintf(j->parent, j->parentsz, "%s/%s@%s", ps.pool_name, ps.image_name, ss.name);
		vs_rbd.rbd_linked_image_spec_cleanup(&ps);
		vs_rbd.rbd_snap_spec_cleanup(&ss);
	}
	vs_rbd.rbd_close(img);
	j->ret = r;
}

/* Remove @name's snapshots (unprotecting them), then the image. */
static int remove_image(struct pool_job *j)
{
	rbd_image_t img;
	rbd_snap_info_t snaps[64];
	int max = 64, n, r;

	r = vs_rbd.rbd_remove(j->p->conn.io, j->a);
	if (r != -ENOTEMPTY)
		return r;
	r = vs_rbd.rbd_open(j->p->conn.io, j->a, &img, NULL);
	if (r < 0)
		return r;
	n = vs_rbd.rbd_snap_list(img, snaps, &max);
	for (int i = 0; i < n && r == 0; i++) {
		int prot = 0;

		if (vs_rbd.rbd_snap_is_protected(img, snaps[i].name, &prot) == 0 && prot) {
			r = vs_rbd.rbd_snap_unprotect(img, snaps[i].name);
			if (r == -EBUSY)
				snprintf(j->what, sizeof(j->what),
					 "Image '%s' has clones (of snapshot '%s')", j->a,
					 snaps[i].name);
		}
		if (r == 0)
			r = vs_rbd.rbd_snap_remove(img, snaps[i].name);
	}
	if (n > 0)
		vs_rbd.rbd_snap_list_end(snaps);
	vs_rbd.rbd_close(img);
	if (n < 0)
		return n;
	return r < 0 ? r : vs_rbd.rbd_remove(j->p->conn.io, j->a);
}

static void clone_run(struct pool_job *j)
{
	rbd_image_t img;
	uint64_t features = 0;
	int order = 0, r = vs_rbd.rbd_open(j->p->conn.io, j->a, &img, NULL);

	if (r < 0) {
		j->ret = r;
		return;
	}
	r = vs_rbd.rbd_get_features(img, &features);
	if (r == 0)
		r = vs_rbd.rbd_snap_create(img, j->snap);
	if (r == 0)
		r = vs_rbd.rbd_snap_protect(img, j->snap);
	vs_rbd.rbd_close(img);
	if (r == 0)
		r = vs_rbd.rbd_clone(j->p->conn.io, j->a, j->snap, j->p->conn.io, j->b,
				     features | RBD_FEATURE_LAYERING, &order);
	j->ret = r;
}

static void pool_job_run(void *arg)
{
	struct pool_job *j = arg;
	rados_ioctx_t io = j->p->conn.io;

	switch (j->op) {
	case PO_STAT: {
		struct rados_cluster_stat_t cs;
		struct rados_pool_stat_t ps;

		j->ret = vs_rbd.rados_cluster_stat(j->p->conn.cluster, &cs);
		if (j->ret == 0)
			j->ret = vs_rbd.rados_ioctx_pool_stat(io, &ps);
		if (j->ret == 0) {
			j->size = cs.kb << 10;
			j->size2 = cs.kb_avail << 10;
			j->size3 = ps.num_bytes;
		}
		break;
	}
	case PO_LIST: {
		size_t max = 64;
		rbd_image_spec_t *specs = NULL;

		for (;;) {
			free(specs);
			specs = calloc(max, sizeof(*specs));
			if (!specs) {
				j->ret = -ENOMEM;
				break;
			}
			j->ret = vs_rbd.rbd_list2(io, specs, &max);
			if (j->ret != -ERANGE)
				break;
		}
		if (j->ret >= 0) {
			size_t len = 1;

			for (size_t i = 0; i < max; i++)
				len += strlen(specs[i].name) + 1;
			j->names = calloc(1, len);
			j->names_len = len;
			if (!j->names)
				j->ret = -ENOMEM;
			for (size_t i = 0, off = 0; j->names && i < max; i++) {
				strcpy(j->names + off, specs[i].name);
				off += strlen(specs[i].name) + 1;
			}
			vs_rbd.rbd_image_spec_list_cleanup(specs, max);
			j->ret = j->ret < 0 ? j->ret : 0;
		}
		free(specs);
		break;
	}
	case PO_IMAGE:
		image_stat_run(j);
		break;
	case PO_CREATE: {
		rbd_image_options_t o;

		vs_rbd.rbd_image_options_create(&o);
		j->ret = vs_rbd.rbd_create4(io, j->a, j->size, o);
		vs_rbd.rbd_image_options_destroy(o);
		break;
	}
	case PO_REMOVE:
		j->ret = remove_image(j);
		break;
	case PO_RESIZE: {
		rbd_image_t img;

		j->ret = vs_rbd.rbd_open(io, j->a, &img, NULL);
		if (j->ret == 0) {
			j->ret = vs_rbd.rbd_resize(img, j->size);
			vs_rbd.rbd_close(img);
		}
		break;
	}
	case PO_RENAME:
		j->ret = vs_rbd.rbd_rename(io, j->a, j->b);
		break;
	case PO_CLONE:
		clone_run(j);
		break;
	}
}

/* Run @j on the worker pool; failures say "Could not @verb [RBD image '@image' of] pool ..." */
static int pool_run(struct pool_job *j, struct vs_error *err, const char *verb, const char *image)
{
	int ret = vs_co_run_in_worker(pool_job_run, j);

	if (ret == 0)
		ret = j->ret;
	if (ret < 0) {
		if (j->what[0])
			vs_error_setf_errno(err, ret, "%s", j->what);
		else if (image)
			vs_error_setf_errno(err, ret,
					    "Could not %s RBD image '%s' of Ceph pool '%s'", verb,
					    image, j->p->pool);
		else
			vs_error_setf_errno(err, ret, "Could not %s Ceph pool '%s'", verb,
					    j->p->pool);
	}
	return ret;
}

int vs_rbd_pool_stat(struct vs_rbd_pool *p, uint64_t *capacity, uint64_t *available, uint64_t *used,
		     struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_STAT };
	int ret = pool_run(&j, err, "read the space of", NULL);

	if (ret == 0) {
		*capacity = j.size;
		*available = j.size2;
		*used = j.size3;
	}
	return ret;
}

void vs_rbd_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int vs_rbd_list(struct vs_rbd_pool *p, char ***names, size_t *n, struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_LIST };
	char **out = NULL;
	size_t count = 0;
	int ret = pool_run(&j, err, "list the images of", NULL);

	*names = NULL;
	*n = 0;
	if (ret < 0) {
		free(j.names);
		return ret;
	}
	for (size_t off = 0; off < j.names_len && j.names[off]; off += strlen(j.names + off) + 1) {
		char **grown = realloc(out, (count + 1) * sizeof(*out));

		if (!grown || !(grown[count] = strdup(j.names + off))) {
			out = grown ? grown : out;
			vs_rbd_names_free(out, count);
			free(j.names);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		out = grown;
		count++;
	}
	free(j.names);
	*names = out;
	*n = count;
	return 0;
}

int vs_rbd_image_stat(struct vs_rbd_pool *p, const char *image, uint64_t *size,
		      uint64_t *allocation, char *parent, size_t parentsz, struct vs_error *err)
{
	struct pool_job j = {
		.p = p, .op = PO_IMAGE, .a = image, .parent = parent, .parentsz = parentsz
	};
	int ret;

	if (parent && parentsz)
		parent[0] = '\0';
	ret = pool_run(&j, err, "open", image);
	if (ret == 0) {
		*size = j.size;
		*allocation = j.size2;
	}
	return ret;
}

int vs_rbd_create(struct vs_rbd_pool *p, const char *image, uint64_t size, struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_CREATE, .a = image, .size = size };

	return pool_run(&j, err, "create", image);
}

int vs_rbd_remove(struct vs_rbd_pool *p, const char *image, struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_REMOVE, .a = image };

	return pool_run(&j, err, "remove", image);
}

int vs_rbd_resize(struct vs_rbd_pool *p, const char *image, uint64_t size, struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_RESIZE, .a = image, .size = size };

	return pool_run(&j, err, "resize", image);
}

int vs_rbd_rename(struct vs_rbd_pool *p, const char *from, const char *to, struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_RENAME, .a = from, .b = to };

	return pool_run(&j, err, "rename", from);
}

int vs_rbd_clone(struct vs_rbd_pool *p, const char *from, const char *snap, const char *to,
		 struct vs_error *err)
{
	struct pool_job j = { .p = p, .op = PO_CLONE, .a = from, .b = to, .snap = snap };

	return pool_run(&j, err, "clone", from);
}

const struct vs_driver vs_driver_rbd = {
	.name = "rbd",
	.prefixes = (const char *const[]){ "rbd:", NULL },
	.state_size = sizeof(struct rbd_node),
	.open = rbd_drv_open,
	.close = rbd_drv_close,
	.submit = rbd_drv_submit,
	.truncate = rbd_drv_truncate,
	.create = rbd_drv_create,
	.allocated_size = rbd_drv_allocated_size,
	/* FUA: the write, then a flush of librbd's cache. */
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_rbd)
