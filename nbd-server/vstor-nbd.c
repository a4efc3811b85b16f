/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-nbd: serve images over NBD, with the options of qemu-nbd.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nbd-server.h"
#include "daemon.h"
#include "nbd-tls.h"
#include "pool.h"
#include "secret.h"
#include "vstor/parse.h"
#include "vstor/reactor.h"

#define MAX_EXPORTS 64
#define MAX_LISTENERS 16
#define MAX_OBJECTS 8

struct export_spec {
	char *name;
	char *file;
	char *format;
	char *description;
	char *key_secret; /* id of a --object secret: the passphrase of an encrypted image */
	bool read_only;
	const char **bitmaps; /* -B: served as qemu:dirty-bitmap:NAME */
	unsigned nb_bitmaps;
	struct vs_node *node;
	char *overlay;	/* -s: temporary overlay file, unlinked once open */
	bool from_pool; /* --pool: a volume that cannot be opened is left out */
	bool reported;	/* --pool: that it cannot be opened was said once */
};

/* --pool: what tells that the pool's volumes may have changed. */
struct pool_watch {
	struct vs_co_mutex lock; /* one rescan at a time */
	int inotify_fd;		 /* a dir pool's target directory; -1: none */
	bool dirty;		 /* rescan at the next negotiation */
	uint64_t last_ns;	 /* when the last scan ended (CLOCK_MONOTONIC) */
};

/* A qemu-style --object tls-creds-x509/tls-creds-psk, for --tls-creds=ID. */
struct tls_object {
	char *id;
	char *dir;
	bool psk;
	bool verify_peer;
	char *psk_file; /* DIR/keys.psk */
};

struct config {
	struct vs_co *sigco; /* signal_watch, while it runs */
	struct vs_co_queue sig_exit;
	bool sig_woken; /* its signalfd read has returned */
	struct export_spec exports[MAX_EXPORTS];
	unsigned nexports;
	const char *socket_path;
	const char *bind_addr;
	const char *port;
	bool tcp_asked; /* -p or -b given: listen on TCP too when -k is used */
	unsigned shared;
	unsigned max_connections; /* --max-connections; 0 = the server's default */
	unsigned handshake_limit; /* --handshake-limit */
	unsigned request_timeout; /* --request-timeout */
	uint64_t max_buffered;	  /* --max-buffered */
	bool persistent;
	bool snapshot;
	const char *load_snapshot; /* -l: export this internal snapshot, read-only */
	bool fork;
	const char *pid_file;
	struct vs_daemon_export_opts eo; /* --cache, --aio, --discard, --detect-zeroes */
	int listen_fds[MAX_LISTENERS];
	unsigned nlisten;
	int sigfd;
	int exit_code;
	enum vs_nbd_tls_mode tls_mode;
	bool tls_mode_set;
	struct vs_nbd_tls_opts tls_opts;
	struct vs_nbd_tls *tls;
	struct tls_object objects[MAX_OBJECTS];
	unsigned nobjects;
	const char *tls_creds; /* --tls-creds=ID */
	const char *pool;      /* --pool: export every volume of this pool */
	const char *state_dir; /* --state-dir */
	bool read_only;	       /* -r, for the pool's exports */
	struct pool_watch pw;
};

static const char *prog = "vstor-nbd";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTIONS] [FILE]\n"
		"Serve FILE (a raw or qcow2 image) over the NBD protocol.\n\n"
		"  -p, --port=PORT          TCP port to listen on (default 10809)\n"
		"  -b, --bind=IFACE         interface to bind to (default 0.0.0.0)\n"
		"  -k, --socket=PATH        listen on a unix socket instead of TCP\n"
		"  -e, --shared=NUM         serve up to NUM clients at once, more wait (default 1;\n"
		"                           0 = up to --max-connections)\n"
		"      --max-connections=NUM  hold at most NUM connections; more are closed at once\n"
		"                           (default 100; 0 = no limit)\n"
		"      --handshake-limit=SECONDS  drop a client that has not chosen an export in\n"
		"                           SECONDS (default 10; 0 = no limit)\n"
		"      --request-timeout=SECONDS  drop a client whose started request (header or\n"
		"                           write payload) stops arriving for SECONDS (default 30;\n"
		"                           0 = no limit)\n"
		"      --max-buffered=SIZE  server-wide bound on request and reply buffers\n"
		"                           (default 256M; at least 64M)\n"
		"  -t, --persistent         keep serving after the last client disconnects\n"
		"  -x, --export-name=NAME   export name (default \"\")\n"
		"  -D, --description=TEXT   export description\n"
		"  -r, --read-only          export read-only\n"
		"  -f, --format=FORMAT      image format (raw, qcow2); probed when omitted\n"
		"  -s, --snapshot           send writes to a temporary overlay, keep FILE intact\n"
		"  -l, --load-snapshot=NAME export the internal snapshot NAME (or ID) read-only\n"
		"  -A, --allocation-depth   accepted for qemu-nbd compatibility (always exported)\n"
		"  -B, --bitmap=NAME        also export the dirty bitmap NAME of FILE as the\n"
		"                           qemu:dirty-bitmap:NAME meta context (repeatable)\n"
		"      --export name=N,file=PATH[,format=F][,readonly=on][,description=D]\n"
		"                           add an export (repeatable)\n"
		"      --pool=NAME          export every volume of pool NAME, named after it\n"
		"      --state-dir=DIR      the pools' state directory (see vstor(1))\n"
		"      --cache=MODE         writeback (default), none, writethrough, directsync, "
		"unsafe\n"
		"      --aio=MODE           accepted for compatibility (vstor always uses io_uring)\n"
		"      --discard=MODE       ignore (default) or unmap\n"
		"      --detect-zeroes=MODE off (default), on or unmap\n"
		"      --tls=off|on|require TLS for clients (default off; require if credentials\n"
		"                           are given)\n"
		"      --tls-certificates=DIR  x509: DIR/ca-cert.pem, server-cert.pem, server-key.pem\n"
		"      --tls-psk=FILE       PSK: a psktool key file (username:hexkey lines)\n"
		"      --tls-verify-peer    x509: require a client certificate signed by the CA\n"
		"      --object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]\n"
		"      --object tls-creds-psk,id=ID,dir=DIR,endpoint=server\n"
		"                           define TLS credentials as qemu-nbd does (verify-peer\n"
		"                           defaults to on, as in QEMU; DIR/keys.psk for PSK)\n"
		"      --tls-creds=ID       serve with the credentials of object ID (TLS required)\n"
		"      --object secret,id=ID,data=STRING|file=PATH[,format=raw|base64]\n"
		"                           a secret: the passphrase of an encrypted image\n"
		"      --image-opts         FILE is driver=FMT,file.filename=PATH[,encrypt.key-secret=ID]\n"
		"      --fork               fork off the server once it is ready\n"
		"      --pid-file=PATH      write the server's pid to PATH\n"
		"  -h, --help               show this help\n"
		"  -V, --version            show the version\n\n"
		"Socket activation (LISTEN_FDS/LISTEN_PID) is used when present.\n",
		prog);
}

/* name=N,file=PATH,format=F,readonly=on,description=D */
static void parse_export(struct config *cfg, const char *arg)
{
	struct export_spec *e;
	char *dup = strdup(arg), *p = dup, *key, *val;

	if (!dup)
		vs_die("Out of memory");
	if (cfg->nexports == MAX_EXPORTS)
		vs_die("Too many exports (at most %d)", MAX_EXPORTS);
	e = &cfg->exports[cfg->nexports++];
	memset(e, 0, sizeof(*e));
	while (vs_daemon_next_kv(&p, &key, &val, "--export")) {
		if (!strcmp(key, "name"))
			e->name = strdup(val);
		else if (!strcmp(key, "file"))
			e->file = strdup(val);
		else if (!strcmp(key, "format"))
			e->format = strdup(val);
		else if (!strcmp(key, "description"))
			e->description = strdup(val);
		else if (!strcmp(key, "readonly"))
			e->read_only = vs_daemon_parse_bool(val, "readonly");
		else if (!strcmp(key, "key-secret") || !strcmp(key, "encrypt.key-secret"))
			e->key_secret = strdup(val);
		else
			vs_die("Unknown --export key '%s'", key);
	}
	if (!e->file)
		vs_die("--export needs file=PATH");
	if (!e->name)
		e->name = strdup("");
	free(dup);
}

/* --object secret,id=ID,data=STRING|file=PATH[,format=raw|base64], as qemu-nbd's. */
static void parse_secret(char *p)
{
	const char *id = NULL, *data = NULL, *file = NULL, *format = NULL;
	struct vs_error err = { 0 };
	char *key, *val;

	while (vs_daemon_next_kv(&p, &key, &val, "--export")) {
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
}

/*
 * --image-opts: FILE is "driver=FMT,file.filename=PATH[,encrypt.key-secret=ID]"
 * (key-secret=ID for the luks format; file.driver=file).
 */
static void parse_image_opts(struct export_spec *e, const char *arg)
{
	char *p = strdup(arg), *key, *val;

	if (!p)
		vs_die("Out of memory");
	e->file = NULL;
	while (vs_daemon_next_kv(&p, &key, &val, "--export")) {
		if (!strcmp(key, "driver"))
			e->format = val;
		else if (!strcmp(key, "file.filename") || !strcmp(key, "filename"))
			e->file = val;
		else if (!strcmp(key, "encrypt.key-secret") || !strcmp(key, "key-secret"))
			e->key_secret = val;
		else if (!strcmp(key, "file.driver") && !strcmp(val, "file"))
			;
		else
			vs_die("Invalid --image-opts parameter '%s'", key);
	}
	if (!e->file)
		vs_die("--image-opts: parameter 'file.filename' is missing");
}

/* qemu-nbd's --object, for secrets and the TLS credential types. */
static void parse_object(struct config *cfg, const char *arg)
{
	char *dup = strdup(arg), *p, *type, *key, *val, *psk = NULL;
	struct tls_object *o;
	bool verify = true, endpoint_server = true;

	if (!dup)
		vs_die("Out of memory");
	type = dup;
	p = strchr(dup, ',');
	if (p)
		*p++ = '\0';
	else
		p = dup + strlen(dup);
	if (!strncmp(type, "qom-type=", 9))
		type += 9;
	if (!strcmp(type, "secret")) {
		parse_secret(p);
		gnutls_memset(dup, 0, strlen(arg));
		free(dup);
		return;
	}
	if (strcmp(type, "tls-creds-x509") && strcmp(type, "tls-creds-psk"))
		vs_die("Unsupported --object type '%s' (secret, tls-creds-x509 or tls-creds-psk)",
		       type);
	if (cfg->nobjects == MAX_OBJECTS)
		vs_die("Too many --object options (at most %d)", MAX_OBJECTS);
	o = &cfg->objects[cfg->nobjects++];
	memset(o, 0, sizeof(*o));
	o->psk = !strcmp(type, "tls-creds-psk");
	while (vs_daemon_next_kv(&p, &key, &val, "--export")) {
		if (!strcmp(key, "id"))
			o->id = strdup(val);
		else if (!strcmp(key, "dir"))
			o->dir = strdup(val);
		else if (!strcmp(key, "endpoint"))
			endpoint_server = !strcmp(val, "server");
		else if (!strcmp(key, "verify-peer") && !o->psk)
			verify = vs_daemon_parse_bool(val, "verify-peer");
		else if (!strcmp(key, "username") && o->psk)
			; /* the client's name; a server takes every user of keys.psk */
		else
			vs_die("Unsupported --object %s property '%s'", type, key);
	}
	if (!o->id || !o->dir)
		vs_die("--object %s needs id=ID and dir=DIR", type);
	if (!endpoint_server)
		vs_die("--object %s,id=%s: vstor-nbd needs endpoint=server", type, o->id);
	o->verify_peer = verify && !o->psk;
	if (o->psk && asprintf(&psk, "%s/keys.psk", o->dir) < 0)
		vs_die("Out of memory");
	o->psk_file = psk;
	free(dup);
}

static struct vs_nbd_server *the_server;

static int open_export(struct config *cfg, struct export_spec *e, struct vs_error *err)
{
	struct vs_open_opts o = {
		.filename = e->file,
		.format = e->format,
		.read_only = (e->read_only || cfg->load_snapshot) && !cfg->snapshot,
		.cache = cfg->eo.cache,
		.snapshot = cfg->load_snapshot,
	};
	uint8_t *pass = NULL;
	size_t passlen = 0;
	int r;

	if (cfg->snapshot) {
		/* -s: a temporary qcow2 overlay takes the writes; FILE stays intact. */
		char tmpl[] = "/var/tmp/vstor-nbd-snapshot-XXXXXX";
		char abs[PATH_MAX];
		struct vs_kv kv[2];
		const char *fmt;
		struct vs_node *probe;
		struct vs_open_opts po = { .filename = e->file,
					   .format = e->format,
					   .read_only = true,
					   .cache = cfg->eo.cache };
		int fd, ret;

		if (!realpath(e->file, abs))
			return vs_error_setf_errno(err, -errno, "Could not open '%s'", e->file);
		ret = vs_image_open(&probe, &po, err);
		if (ret < 0)
			return ret;
		fmt = vs_node_format(probe);
		kv[0] = (struct vs_kv){ "backing_file", abs };
		kv[1] = (struct vs_kv){ "backing_fmt", fmt };
		fd = mkstemp(tmpl);
		if (fd < 0) {
			vs_node_close(probe);
			return vs_error_setf_errno(err, -errno,
						   "Could not create a temporary overlay");
		}
		close(fd);
		ret = vs_image_create(tmpl, "qcow2", vs_node_size(probe), kv, 2, err);
		vs_node_close(probe);
		if (ret < 0) {
			unlink(tmpl);
			return ret;
		}
		o.filename = tmpl;
		o.format = "qcow2";
		o.read_only = e->read_only;
		ret = vs_image_open(&e->node, &o, err);
		unlink(tmpl); /* gone from the directory, alive while open */
		return ret;
	}
	if (e->key_secret) {
		if (vs_secret_get(e->key_secret, &pass, &passlen) < 0)
			return vs_error_set(err, -ENOENT, "No secret with id '%s' found",
					    e->key_secret);
		o.key_secret_data = pass;
		o.key_secret_len = passlen;
	}
	r = vs_image_open(&e->node, &o, err);
	if (pass) {
		gnutls_memset(pass, 0, passlen);
		free(pass);
	}
	return r;
}

static void signal_watch(void *opaque)
{
	struct config *cfg = opaque;
	int sig = vs_daemon_wait_signal(cfg->sigfd);

	cfg->sig_woken = true; /* no longer waiting on the signalfd */
	if (sig > 0 && the_server && !vs_nbd_server_is_shutting_down(the_server)) {
		int ret;

		vs_daemon_notify_stopping();
		ret = vs_nbd_server_shutdown(the_server);

		if (ret < 0) {
			fprintf(stderr, "%s: flush on shutdown failed: %s\n", prog, strerror(-ret));
			cfg->exit_code = EXIT_FAILURE;
		}
	}
	/* The coroutine is gone after this: server_main must not cancel it. */
	cfg->sigco = NULL;
	vs_co_queue_wake_all(&cfg->sig_exit);
}

/* ---- --pool: the pool's volumes as exports, kept in step with the pool ---- */

/* Without inotify (pools other than dir), a rescan at most this often. */
#define POOL_RESCAN_INTERVAL_NS 1000000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct state_open {
	const char *dir;
	struct vs_pool_state *st;
	struct vs_error *err;
	int ret;
};

static void state_open_worker(void *arg)
{
	struct state_open *so = arg;

	so->ret = vs_pool_state_open(&so->st, so->dir, false, so->err);
}

/* Coroutine context: the volumes of --pool now, and its definition (@def may be NULL). */
static int pool_scan(struct config *cfg, struct vs_vol_list *vols, struct vs_pool_def *def,
		     struct vs_error *err)
{
	struct state_open so = { .err = err };
	struct vs_pool_info info;
	struct vs_pool *p = NULL;
	char dir[PATH_MAX];
	int ret;

	ret = vs_pool_state_dir(dir, sizeof(dir), cfg->state_dir);
	if (ret < 0)
		return vs_error_set(err, ret, "No state directory for pools");
	so.dir = dir;
	/* The state lock waits while a vol-create runs: off the reactor. */
	(void)vs_co_run_in_worker(state_open_worker, &so);
	ret = so.ret;
	if (ret == 0)
		ret = vs_pool_load(so.st, cfg->pool, &p, err);
	if (ret == 0)
		ret = vs_pool_refresh(p, &info, vols, err);
	if (ret == 0 && def)
		*def = p->def;
	vs_pool_free(p);
	/* Exports hold their volumes through image locks and leases, not this lock. */
	vs_pool_state_close(so.st);
	return ret;
}

/* The export of volume @i of @vols in @e (zeroed), named after it. */
static int pool_spec(struct config *cfg, struct export_spec *e, const struct vs_vol_list *vols,
		     size_t i, struct vs_error *err)
{
	memset(e, 0, sizeof(*e));
	if (asprintf(&e->file, "vol:%s/%s", cfg->pool, vols->v[i].name) < 0) {
		e->file = NULL;
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	e->name = strdup(vols->v[i].name);
	if (!e->name) {
		free(e->file);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	/*
	 * The format the refresh saw was probed: let the engine probe it
	 * again, so that a probed raw volume keeps the protection of its
	 * first sector (a client cannot turn it into a qcow2).
	 */
	e->format = NULL;
	e->from_pool = true;
	e->read_only = cfg->read_only;
	/* A backing volume of another volume must not change under it: read-only. */
	for (size_t j = 0; j < vols->n && !e->read_only; j++) {
		const char *b = vols->v[j].backing, *slash = strrchr(vols->v[i].path, '/');

		if (j != i && b[0] &&
		    (!strcmp(b, vols->v[i].path) || (slash && !strcmp(b, slash + 1))))
			e->read_only = true;
	}
	return 0;
}

/* Coroutine context: one export per volume of --pool, named after the volume. */
static int add_pool_exports(struct config *cfg, struct vs_error *err)
{
	struct vs_vol_list vols = { 0 };
	struct vs_pool_def def;
	int ret;

	ret = pool_scan(cfg, &vols, &def, err);
	for (size_t i = 0; ret == 0 && i < vols.n; i++) {
		if (cfg->nexports == MAX_EXPORTS) {
			ret = vs_error_set(err, -E2BIG, "Too many exports (at most %d)",
					   MAX_EXPORTS);
			break;
		}
		ret = pool_spec(cfg, &cfg->exports[cfg->nexports], &vols, i, err);
		if (ret == 0)
			cfg->nexports++;
	}
	vs_vol_list_free(&vols);
	if (ret < 0)
		return ret;
	/*
	 * A dir pool's directory tells when a volume comes or goes; the first
	 * negotiation rescans, for what changed before the watch was set.
	 */
	cfg->pw.dirty = true;
	cfg->pw.last_ns = now_ns();
	if (!strcmp(def.type, "dir")) {
		cfg->pw.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (cfg->pw.inotify_fd >= 0 &&
		    inotify_add_watch(cfg->pw.inotify_fd, def.target,
				      IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
					      IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
			close(cfg->pw.inotify_fd);
			cfg->pw.inotify_fd = -1;
		}
	}
	return 0;
}

/* -B: every bitmap must be in the image and usable, as qemu-nbd checks. */
static int check_bitmaps(const struct export_spec *e, struct vs_error *err)
{
	struct vs_dirty_bitmap_info *list = NULL;
	unsigned nb = 0;
	int ret = 0;

	if (!e->nb_bitmaps)
		return 0;
	if (vs_node_dirty_bitmaps(e->node, &list, &nb) == -ENOMEM)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	for (unsigned i = 0; i < e->nb_bitmaps && ret == 0; i++) {
		const struct vs_dirty_bitmap_info *bi = NULL;

		for (unsigned j = 0; j < nb && !bi; j++)
			if (!strcmp(list[j].name, e->bitmaps[i]))
				bi = &list[j];
		if (!bi)
			ret = vs_error_set(err, -ENOENT, "Bitmap '%s' is not found", e->bitmaps[i]);
		else if (bi->inconsistent)
			ret = vs_error_set(err, -EINVAL,
					   "Bitmap '%s' is inconsistent and cannot be used",
					   e->bitmaps[i]);
	}
	free(list);
	return ret;
}

static int add_to_server(struct config *cfg, struct export_spec *e, struct vs_error *err)
{
	int ret = check_bitmaps(e, err);
	struct vs_nbd_export_opts eo = {
		.name = e->name,
		.description = e->description,
		.node = e->node,
		.read_only = e->read_only,
		.wce = vs_cache_mode_knobs(cfg->eo.cache).wce,
		.discard = cfg->eo.discard,
		.detect_zeroes = cfg->eo.detect_zeroes,
		.bitmaps = e->bitmaps,
		.nb_bitmaps = e->nb_bitmaps,
	};

	if (ret < 0)
		return ret;
	return vs_nbd_server_add_export(the_server, &eo, err);
}

/* Whether the pool may have changed since the last scan (drains the watch). */
static bool pool_changed(struct config *cfg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool changed = cfg->pw.dirty;

	if (cfg->pw.inotify_fd < 0)
		return changed || now_ns() - cfg->pw.last_ns >= POOL_RESCAN_INTERVAL_NS;
	while (read(cfg->pw.inotify_fd, buf, sizeof(buf)) > 0)
		changed = true;
	return changed;
}

static void spec_free(struct export_spec *e)
{
	free(e->name);
	free(e->file);
	free(e->format);
	free(e->description);
	free(e->overlay);
}

/*
 * Coroutine context: bring the exports in step with the pool's volumes. A
 * volume gone is removed (new clients no longer see it; connected ones are
 * disconnected once their requests in flight are answered); a new volume,
 * or one that could not be opened before, is opened and added.
 */
static void pool_rescan(struct config *cfg)
{
	struct vs_vol_list vols = { 0 };
	struct vs_error err = { 0 };
	unsigned i;

	if (pool_scan(cfg, &vols, NULL, &err) < 0) {
		fprintf(stderr, "%s: pool '%s' not rescanned: %s\n", prog, cfg->pool, err.msg);
		cfg->pw.dirty = true; /* again at the next negotiation */
		cfg->pw.last_ns = now_ns();
		return;
	}
	cfg->pw.dirty = false;
	for (i = 0; i < cfg->nexports;) {
		struct export_spec *e = &cfg->exports[i];
		bool listed = !e->from_pool;

		for (size_t j = 0; j < vols.n && !listed; j++)
			listed = !strcmp(vols.v[j].name, e->name);
		if (listed) {
			i++;
			continue;
		}
		if (e->node) {
			vs_nbd_server_remove_export(the_server, e->name, NULL);
			vs_node_close(e->node);
		}
		spec_free(e);
		memmove(e, e + 1, (cfg->nexports - i - 1) * sizeof(*e));
		cfg->nexports--;
	}
	for (size_t j = 0; j < vols.n; j++) {
		struct export_spec *e = NULL;

		for (i = 0; i < cfg->nexports && !e; i++)
			if (cfg->exports[i].from_pool &&
			    !strcmp(cfg->exports[i].name, vols.v[j].name))
				e = &cfg->exports[i];
		if (e && e->node)
			continue;
		if (!e) {
			if (cfg->nexports == MAX_EXPORTS) {
				fprintf(stderr, "%s: volume '%s' is not exported: at most %d\n",
					prog, vols.v[j].name, MAX_EXPORTS);
				continue;
			}
			e = &cfg->exports[cfg->nexports];
			if (pool_spec(cfg, e, &vols, j, &err) < 0)
				break;
			cfg->nexports++;
		}
		vs_error_clear(&err);
		if (open_export(cfg, e, &err) == 0 && add_to_server(cfg, e, &err) == 0)
			continue;
		/* Being created, perhaps: tried again at the next rescan. */
		if (!e->reported)
			fprintf(stderr, "%s: volume '%s' of pool '%s' is not exported: %s\n", prog,
				e->name, cfg->pool, err.msg);
		e->reported = true;
		vs_node_close(e->node);
		e->node = NULL;
	}
	vs_vol_list_free(&vols);
	cfg->pw.last_ns = now_ns();
}

/* The server's hook before the handshake lists or looks up exports. */
static void pool_refresh_exports(void *opaque)
{
	struct config *cfg = opaque;

	vs_co_mutex_lock(&cfg->pw.lock);
	if (the_server && !vs_nbd_server_is_shutting_down(the_server) && pool_changed(cfg))
		pool_rescan(cfg);
	vs_co_mutex_unlock(&cfg->pw.lock);
}

static void server_main(void *opaque)
{
	struct config *cfg = opaque;
	struct vs_nbd_server_opts so = { .max_connections = cfg->shared,
					 .connection_limit = cfg->max_connections,
					 .handshake_limit = cfg->handshake_limit,
					 .request_timeout = cfg->request_timeout,
					 .max_buffered = cfg->max_buffered,
					 .persistent = cfg->persistent,
					 .tls = cfg->tls,
					 .tls_mode = cfg->tls_mode,
					 .refresh_exports = cfg->pool ? pool_refresh_exports : NULL,
					 .refresh_opaque = cfg };
	struct vs_error err = { 0 };
	unsigned i, nskipped = 0;
	int ret;

	if (cfg->pool) {
		ret = add_pool_exports(cfg, &err);
		if (ret < 0) {
			fprintf(stderr, "%s: %s\n", prog, err.msg);
			goto fail;
		}
	}
	for (i = 0; i < cfg->nexports; i++) {
		struct export_spec *e = &cfg->exports[i];

		ret = open_export(cfg, e, &err);
		if (ret < 0 && e->from_pool) {
			/* One bad volume does not take the pool's other volumes down. */
			fprintf(stderr, "%s: volume '%s' of pool '%s' is not exported: %s\n", prog,
				e->name, cfg->pool, err.msg);
			vs_error_clear(&err);
			e->reported = true; /* tried again at rescans */
			nskipped++;
			continue;
		}
		if (ret < 0) {
			fprintf(stderr, "%s: %s\n", prog, err.msg);
			goto fail;
		}
	}
	if (cfg->pool && nskipped == cfg->nexports)
		fprintf(stderr, "%s: no volume of pool '%s' is exported yet\n", prog, cfg->pool);
	ret = vs_nbd_server_new(&the_server, &so);
	if (ret < 0) {
		fprintf(stderr, "%s: cannot create the server: %s\n", prog, strerror(-ret));
		goto fail;
	}
	for (i = 0; i < cfg->nexports; i++) {
		struct export_spec *e = &cfg->exports[i];

		if (!e->node)
			continue; /* a pool volume left out above */
		ret = add_to_server(cfg, e, &err);
		if (ret < 0) {
			fprintf(stderr, "%s: %s\n", prog, err.msg);
			goto fail;
		}
	}
	for (i = 0; i < cfg->nlisten; i++) {
		ret = vs_nbd_server_add_listener(the_server, cfg->listen_fds[i]);
		if (ret < 0) {
			fprintf(stderr, "%s: %s\n", prog, strerror(-ret));
			goto fail;
		}
		cfg->listen_fds[i] = -1; /* the server owns it now */
	}
	if (cfg->pid_file && vs_daemon_write_pid(cfg->pid_file, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		goto fail;
	}
	vs_daemon_notify_ready(); /* also releases the parent of --fork */
	cfg->sigco = vs_co_spawn(vs_reactor_current(), signal_watch, cfg);
	vs_nbd_server_wait(the_server);
	if (!vs_nbd_server_is_shutting_down(the_server)) {
		/* The last client left a non-persistent server: stop the rest. */
		ret = vs_nbd_server_shutdown(the_server);
		if (ret < 0) {
			fprintf(stderr, "%s: flush failed: %s\n", prog, strerror(-ret));
			cfg->exit_code = EXIT_FAILURE;
		}
	}
	/*
	 * Stop the signal watcher if it still waits on the signalfd (after a
	 * signal it may still be finishing the shutdown it started: that is
	 * not cancelled), and wait for it to end.
	 */
	if (cfg->sigco && !cfg->sig_woken)
		vs_aio_cancel(cfg->sigco);
	while (cfg->sigco)
		vs_co_queue_wait(&cfg->sig_exit);
	for (i = 0; i < cfg->nexports; i++)
		vs_node_close(cfg->exports[i].node);
	vs_nbd_server_free(the_server);
	the_server = NULL;
	if (cfg->pid_file)
		unlink(cfg->pid_file);
	return;

fail:
	cfg->exit_code = EXIT_FAILURE;
	if (the_server)
		vs_nbd_server_free(the_server);
	the_server = NULL;
	for (i = 0; i < cfg->nexports; i++)
		vs_node_close(cfg->exports[i].node);
}

enum {
	OPT_FIRST = 256,
	OPT_FORK,
	OPT_PID_FILE,
	OPT_EXPORT,
	OPT_TLS,
	OPT_TLS_CERTIFICATES,
	OPT_TLS_PSK,
	OPT_TLS_VERIFY_PEER,
	OPT_POOL,
	OPT_STATE_DIR,
	OPT_MAX_CONNECTIONS,
	OPT_HANDSHAKE_LIMIT,
	OPT_REQUEST_TIMEOUT,
	OPT_MAX_BUFFERED,
	OPT_OBJECT,
	OPT_TLS_CREDS,
	OPT_IMAGE_OPTS,
};

/* BYTES, or a number with a K, M, G or T suffix (powers of 1024). */
static uint64_t parse_size(const char *v, const char *what)
{
	unsigned long long n;
	unsigned shift = 0;
	char *end;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *v == '-')
		vs_die("Invalid %s '%s'", what, v);
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case '\0':
		break;
	default:
		vs_die("Invalid %s '%s'", what, v);
	}
	if (shift && (end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B")))
		vs_die("Invalid %s '%s'", what, v);
	if (n > (UINT64_MAX >> shift))
		vs_die("Invalid %s '%s'", what, v);
	return (uint64_t)n << shift;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "socket", required_argument, NULL, 'k' },
		{ "shared", required_argument, NULL, 'e' },
		{ "persistent", no_argument, NULL, 't' },
		{ "export-name", required_argument, NULL, 'x' },
		{ "description", required_argument, NULL, 'D' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "format", required_argument, NULL, 'f' },
		{ "snapshot", no_argument, NULL, 's' },
		{ "load-snapshot", required_argument, NULL, 'l' },
		{ "allocation-depth", no_argument, NULL, 'A' },
		{ "bitmap", required_argument, NULL, 'B' },
		VS_DAEMON_EXPORT_LONGOPTS,
		{ "fork", no_argument, NULL, OPT_FORK },
		{ "pid-file", required_argument, NULL, OPT_PID_FILE },
		{ "export", required_argument, NULL, OPT_EXPORT },
		{ "tls", required_argument, NULL, OPT_TLS },
		{ "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
		{ "tls-psk", required_argument, NULL, OPT_TLS_PSK },
		{ "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
		{ "pool", required_argument, NULL, OPT_POOL },
		{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
		{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
		{ "handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT },
		{ "request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT },
		{ "max-buffered", required_argument, NULL, OPT_MAX_BUFFERED },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
		{ "tls-creds", required_argument, NULL, OPT_TLS_CREDS },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct config cfg = { .port = "10809", .shared = 1, .sigfd = -1, .pw.inotify_fd = -1 };
	struct vs_error lerr = { 0 };
	const char *name = "", *desc = NULL, *format = NULL;
	bool image_opts = false;
	const char *bitmaps[VS_NBD_MAX_BITMAPS];
	unsigned nb_bitmaps = 0;
	bool read_only = false;
	int c, ret;
	char *end;

	while ((c = getopt_long(argc, argv, "p:b:k:e:tx:D:rf:sl:AB:hV", longopts, NULL)) != -1) {
		if (vs_daemon_export_option(c, optarg, &cfg.eo))
			continue;
		switch (c) {
		case 'p': {
			long v = strtol(optarg, &end, 10);

			if (*end || v < 0 || v > 65535)
				vs_die("Invalid port '%s'", optarg);
			cfg.port = optarg;
			cfg.tcp_asked = true;
			break;
		}
		case 'b':
			cfg.bind_addr = optarg;
			cfg.tcp_asked = true;
			break;
		case 'k':
			cfg.socket_path = optarg;
			break;
		case 'e': {
			long v = strtol(optarg, &end, 10);

			if (*end || v < 0 || v > 65535)
				vs_die("Invalid shared device number '%s'", optarg);
			cfg.shared = (unsigned)v;
			break;
		}
		case 't':
			cfg.persistent = true;
			break;
		case 'x':
			name = optarg;
			break;
		case 'D':
			desc = optarg;
			break;
		case 'r':
			read_only = true;
			break;
		case 'f':
			format = optarg;
			break;
		case 's':
			cfg.snapshot = true;
			break;
		case 'l':
			/* qemu-nbd also takes snapshot.name=N / snapshot.id=N */
			if (!strncmp(optarg, "snapshot.name=", 14))
				cfg.load_snapshot = optarg + 14;
			else if (!strncmp(optarg, "snapshot.id=", 12))
				cfg.load_snapshot = optarg + 12;
			else
				cfg.load_snapshot = optarg;
			break;
		case 'A':
			break;
		case 'B':
			if (nb_bitmaps == VS_NBD_MAX_BITMAPS)
				vs_die("Too many bitmaps (at most %d)", VS_NBD_MAX_BITMAPS);
			/* qemu-nbd lists the last -B first: so do we. */
			memmove(bitmaps + 1, bitmaps, nb_bitmaps++ * sizeof(*bitmaps));
			bitmaps[0] = optarg;
			break;
		case OPT_FORK:
			cfg.fork = true;
			break;
		case OPT_PID_FILE:
			cfg.pid_file = optarg;
			break;
		case OPT_EXPORT:
			parse_export(&cfg, optarg);
			break;
		case OPT_POOL:
			cfg.pool = optarg;
			break;
		case OPT_STATE_DIR:
			cfg.state_dir = optarg;
			break;
		case OPT_MAX_CONNECTIONS:
			cfg.max_connections =
				vs_daemon_parse_limit(optarg, "connection limit", VS_NBD_UNLIMITED);
			break;
		case OPT_HANDSHAKE_LIMIT:
			cfg.handshake_limit =
				vs_daemon_parse_limit(optarg, "handshake limit", VS_NBD_UNLIMITED);
			break;
		case OPT_REQUEST_TIMEOUT:
			cfg.request_timeout =
				vs_daemon_parse_limit(optarg, "request timeout", VS_NBD_UNLIMITED);
			break;
		case OPT_MAX_BUFFERED:
			cfg.max_buffered = parse_size(optarg, "buffer bound");
			if (cfg.max_buffered < VS_NBD_MIN_MAX_BUFFERED)
				vs_die("--max-buffered must be at least 64M (two requests of 32 MiB)");
			break;
		case OPT_TLS:
			if (!strcmp(optarg, "off") || !strcmp(optarg, "false"))
				cfg.tls_mode = VS_NBD_TLS_OFF;
			else if (!strcmp(optarg, "on") || !strcmp(optarg, "true"))
				cfg.tls_mode = VS_NBD_TLS_ON;
			else if (!strcmp(optarg, "require"))
				cfg.tls_mode = VS_NBD_TLS_REQUIRE;
			else
				vs_die("Invalid --tls mode '%s' (off, on or require)", optarg);
			cfg.tls_mode_set = true;
			break;
		case OPT_TLS_CERTIFICATES:
			cfg.tls_opts.certificates_dir = optarg;
			break;
		case OPT_TLS_PSK:
			cfg.tls_opts.psk_file = optarg;
			break;
		case OPT_TLS_VERIFY_PEER:
			cfg.tls_opts.verify_peer = true;
			break;
		case OPT_OBJECT:
			parse_object(&cfg, optarg);
			break;
		case OPT_IMAGE_OPTS:
			image_opts = true;
			break;
		case OPT_TLS_CREDS:
			cfg.tls_creds = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("vstor-nbd %s\n", VSTOR_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try '%s --help' for more information.\n", prog);
			return EXIT_FAILURE;
		}
	}
	cfg.read_only = read_only;
	/* vol:POOL/VOLUME names a pool volume wherever a file name is accepted. */
	(void)vs_pool_register_resolver(cfg.state_dir);
	if (cfg.load_snapshot && cfg.snapshot)
		vs_die("-l and -s cannot be used together");
	if (optind < argc - 1)
		vs_die("Too many arguments (one FILE at most; use --export for more)");
	if (optind == argc - 1) {
		struct export_spec *e;

		if (cfg.nexports == MAX_EXPORTS)
			vs_die("Too many exports");
		e = &cfg.exports[cfg.nexports++];
		memset(e, 0, sizeof(*e));
		e->file = argv[optind];
		e->name = (char *)name;
		e->format = (char *)format;
		e->description = (char *)desc;
		e->read_only = read_only;
		e->bitmaps = bitmaps;
		e->nb_bitmaps = nb_bitmaps;
		if (image_opts)
			parse_image_opts(e, argv[optind]);
	} else if (!cfg.nexports && !cfg.pool) {
		vs_die("Expected a FILE to export (or --export). Try '%s --help'.", prog);
	} else if (nb_bitmaps) {
		vs_die("-B applies to FILE: it cannot be used with --export or --pool alone");
	}

	if (cfg.tls_creds) {
		const struct tls_object *o = NULL;

		for (unsigned i = 0; i < cfg.nobjects; i++)
			if (!strcmp(cfg.objects[i].id, cfg.tls_creds))
				o = &cfg.objects[i];
		if (!o)
			vs_die("No TLS credentials object with id '%s' (define it with --object)",
			       cfg.tls_creds);
		if (cfg.tls_opts.certificates_dir || cfg.tls_opts.psk_file)
			vs_die("--tls-creds cannot be combined with --tls-certificates or --tls-psk");
		if (o->psk) {
			cfg.tls_opts.psk_file = o->psk_file;
		} else {
			cfg.tls_opts.certificates_dir = o->dir;
			cfg.tls_opts.verify_peer |= o->verify_peer;
		}
	}
	if (cfg.tls_opts.certificates_dir || cfg.tls_opts.psk_file) {
		struct vs_error terr = { 0 };

		/* Credentials mean TLS, as with qemu-nbd: plaintext only when asked (--tls=on). */
		if (!cfg.tls_mode_set)
			cfg.tls_mode = VS_NBD_TLS_REQUIRE;
		if (cfg.tls_mode != VS_NBD_TLS_OFF &&
		    vs_nbd_tls_new(&cfg.tls, &cfg.tls_opts, &terr) < 0)
			vs_die("%s", terr.msg);
	} else if (cfg.tls_mode != VS_NBD_TLS_OFF) {
		vs_die("--tls=%s needs --tls-certificates=DIR or --tls-psk=FILE",
		       cfg.tls_mode == VS_NBD_TLS_ON ? "on" : "require");
	}

	ret = vs_daemon_listen_fds(cfg.listen_fds, MAX_LISTENERS, &lerr);
	if (ret < 0)
		vs_die("%s", lerr.msg);
	if (ret > 0) {
		cfg.nlisten = (unsigned)ret;
		if (cfg.socket_path || cfg.bind_addr)
			vs_die("-k and -b cannot be used with socket activation");
	} else {
		/* -k alone: the unix socket; -p/-b alone or nothing: TCP; -k with -p/-b: both. */
		if (cfg.socket_path) {
			ret = vs_daemon_listen_unix(cfg.socket_path, &lerr);
			if (ret < 0)
				vs_die("%s", lerr.msg);
			cfg.listen_fds[cfg.nlisten++] = ret;
		}
		if (!cfg.socket_path || cfg.tcp_asked) {
			ret = vs_daemon_listen_tcp(cfg.bind_addr, cfg.port,
						   cfg.listen_fds + cfg.nlisten,
						   MAX_LISTENERS - cfg.nlisten, &lerr);
			if (ret < 0)
				vs_die("%s", lerr.msg);
			cfg.nlisten += (unsigned)ret;
		}
	}

	if (cfg.fork) {
		struct vs_error ferr = { 0 };

		/* The parent exits with success only once the child serves. */
		if (vs_daemon_fork(false, &ferr) < 0)
			vs_die("%s", ferr.msg);
		setsid();
	}
	{
		struct vs_error serr = { 0 };

		cfg.sigfd = vs_daemon_signalfd(&serr);
		if (cfg.sigfd < 0)
			vs_die("%s", serr.msg);
	}

	ret = vs_run_in_coroutine(server_main, &cfg);
	if (ret < 0) {
		fprintf(stderr, "%s: engine error: %s\n", prog, strerror(-ret));
		cfg.exit_code = EXIT_FAILURE;
	}
	if (cfg.socket_path)
		unlink(cfg.socket_path);
	for (unsigned i = 0; i < cfg.nlisten; i++)
		if (cfg.listen_fds[i] >= 0)
			close(cfg.listen_fds[i]);
	close(cfg.sigfd);
	vs_nbd_tls_free(cfg.tls);
	return cfg.exit_code;
}
