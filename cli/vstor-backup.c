/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor backup / vstor restore: the reference pull-backup client of a
 * running vstord (docs/backup.md). A backup takes a checkpoint over QMP
 * (vstord/checkpoint.c), reads the checkpoint's frozen view over NBD with
 * libnbd -- all of it (full) or only the extents qemu:dirty-bitmap:PREV
 * marks (incremental), skipping what base:allocation says reads as zeroes
 * -- and writes one qcow2 file per backup into the backup directory, whose
 * backing file is the previous backup (a relative name), so the chain
 * opens in any qcow2 tool. The directory's manifest (vstor-backup.json)
 * names the chain and the checkpoint each file ends at; it is replaced
 * atomically, and only once the new file is complete and synced.
 *
 * Nothing is half-made: the new file is written as ".NAME.qcow2.part" and
 * renamed at the end; any failure removes it, removes the checkpoint and
 * folds the new bitmap back into the previous one, so the next incremental
 * backup still covers every write.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "vstor-qmp.h"
#include "vstor.h"

#define MANIFEST "vstor-backup.json"
/* Bytes asked per NBD read, and per block-status request. */
#define READ_CHUNK (4u << 20)
#define STATUS_WINDOW (1ull << 30)
#define NBD_STATE_HOLE 0x1
#define NBD_STATE_ZERO 0x2
#define NBD_STATE_DIRTY 0x1

/* SIGINT/SIGTERM/SIGHUP: stop at the next step and clean up as after an error. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: waits end */

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* ---- Manifest ------------------------------------------------------------ */

/* DIR's manifest, or a new empty one (*@out; NULL after an error, printed). */
static int manifest_load(struct vstor_ctx *c, const char *dir, json_object **out)
{
	char path[PATH_MAX];
	json_object *m, *chain;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/%s", dir, MANIFEST);
	if (access(path, F_OK) != 0) {
		m = json_object_new_object();
		json_object_object_add(m, "vstor-backup", json_object_new_int(1));
		json_object_object_add(m, "chain", json_object_new_array());
		*out = m;
		return 0;
	}
	m = json_object_from_file(path);
	if (!m || !json_object_object_get_ex(m, "chain", &chain) ||
	    !json_object_is_type(chain, json_type_array)) {
		json_object_put(m);
		return vstor_error(c, -EINVAL, "%s: not a vstor backup manifest", path);
	}
	*out = m;
	return 0;
}

static json_object *manifest_chain(json_object *m)
{
	json_object *chain = NULL;

	json_object_object_get_ex(m, "chain", &chain);
	return chain;
}

/* Write @m as DIR's manifest: a new file, synced, renamed over the old one. */
static int manifest_save(const char *dir, json_object *m)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	const char *s = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PRETTY);
	size_t len = strlen(s);
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, MANIFEST);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, MANIFEST);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, s, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0)
		ret = -EIO;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* ---- Backup ------------------------------------------------------------- */

struct backup {
	struct vstor_ctx *c;
	struct vstor_qmp *q;
	struct vstor_qmp_error qerr;
	struct nbd_handle *nbd;
	struct vs_node *dst;
	const char *dir, *prev, *prev_file;
	char name[32], node[128], part[PATH_MAX], file[PATH_MAX], ctx_bitmap[64];
	bool incremental, verbose, checkpoint_added;
	uint64_t size, bandwidth;
	/* Summary. */
	uint64_t bytes_read, bytes_written, bytes_zero, extents;
	struct timespec start;
};

/* One block-status window: the extents of both contexts from @off. */
struct extents {
	uint64_t off;
	uint64_t (*alloc)[2], (*dirty)[2]; /* {length, flags} */
	size_t nalloc, ndirty, calloc_, cdirty;
	const char *ctx_bitmap;
};

static int extents_add(uint64_t (**arr)[2], size_t *n, size_t *cap, uint64_t len, uint64_t flags)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		uint64_t(*na)[2] = realloc(*arr, nc * sizeof(**arr));

		if (!na)
			return -1;
		*arr = na;
		*cap = nc;
	}
	(*arr)[*n][0] = len;
	(*arr)[*n][1] = flags;
	(*n)++;
	return 0;
}

static int extents_cb(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
		      size_t nr_entries, int *error)
{
	struct extents *e = user_data;
	bool alloc = !strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION);

	(void)error;
	if (offset != e->off)
		return 0;
	if (!alloc && (!e->ctx_bitmap || strcmp(metacontext, e->ctx_bitmap)))
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		if (alloc ? extents_add(&e->alloc, &e->nalloc, &e->calloc_, entries[i],
					entries[i + 1]) :
			    extents_add(&e->dirty, &e->ndirty, &e->cdirty, entries[i],
					entries[i + 1]))
			return -1;
	}
	return 0;
}

static double elapsed(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Hold the reading rate at --bandwidth (bytes/s) by sleeping. */
static void throttle(struct backup *b)
{
	double want, have;

	if (!b->bandwidth)
		return;
	want = (double)b->bytes_read / (double)b->bandwidth;
	have = elapsed(&b->start);
	if (want > have) {
		double d = want - have;
		struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };

		nanosleep(&ts, NULL);
	}
}

static void progress(struct backup *b, uint64_t done)
{
	if (!b->verbose || b->c->json || b->c->quiet)
		return;
	printf("\rBackup: [%3u %%]", b->size ? (unsigned)(done * 100 / b->size) : 100);
	fflush(stdout);
}

/* Copy [@off, @off + @len) of the view into the new file. */
static int copy_range(struct backup *b, uint64_t off, uint64_t len, bool zero, void *buf)
{
	int ret;

	b->extents++;
	if (zero) {
		/* Only an increment must say so: the backing file may hold data there. */
		b->bytes_zero += len;
		if (!b->incremental)
			return 0;
		ret = vs_node_write_zeroes(b->dst, off, len, 0);
		if (ret < 0)
			return vstor_error(b->c, ret, "cannot write '%s': %s", b->part,
					   strerror(-ret));
		return 0;
	}
	while (len) {
		if (interrupted)
			return vstor_error(b->c, -EINTR, "backup interrupted");
		/* Under --bandwidth, steps of a tenth of a second's worth. */
		uint64_t step = b->bandwidth && b->bandwidth / 10 < READ_CHUNK ?
					(b->bandwidth / 10 ? b->bandwidth / 10 : 1) :
					READ_CHUNK;
		uint32_t n = len < step ? (uint32_t)len : (uint32_t)step;

		if (nbd_pread(b->nbd, buf, n, off, 0) < 0)
			return vstor_error(b->c, -EIO, "NBD read at %llu failed: %s",
					   (unsigned long long)off, nbd_get_error());
		b->bytes_read += n;
		ret = vs_node_pwrite(b->dst, off, buf, n, 0);
		if (ret < 0)
			return vstor_error(b->c, ret, "cannot write '%s': %s", b->part,
					   strerror(-ret));
		b->bytes_written += n;
		off += n;
		len -= n;
		progress(b, off);
		throttle(b);
	}
	return 0;
}

/*
 * Walk the view window by window: for a full backup every extent
 * base:allocation does not report as zero; for an incremental one the
 * extents the bitmap marks dirty, zero ones as zeroes.
 */
static int copy_view(struct backup *b)
{
	struct extents e = { .ctx_bitmap = b->incremental ? b->ctx_bitmap : NULL };
	void *buf = vs_buf_alloc(READ_CHUNK);
	int ret = 0;

	if (!buf)
		return vstor_error(b->c, -ENOMEM, "out of memory");
	for (uint64_t off = 0; off < b->size && ret == 0;) {
		if (interrupted) {
			ret = vstor_error(b->c, -EINTR, "backup interrupted");
			break;
		}
		uint64_t win = b->size - off < STATUS_WINDOW ? b->size - off : STATUS_WINDOW;
		uint64_t end_a = off, end_d = off, end, pos;
		size_t ia = 0, id = 0;

		e.off = off;
		e.nalloc = e.ndirty = 0;
		if (nbd_block_status(b->nbd, win, off,
				     (nbd_extent_callback){ .callback = extents_cb,
							    .user_data = &e },
				     0) < 0) {
			ret = vstor_error(b->c, -EIO, "NBD block status at %llu failed: %s",
					  (unsigned long long)off, nbd_get_error());
			break;
		}
		for (size_t i = 0; i < e.nalloc; i++)
			end_a += e.alloc[i][0];
		for (size_t i = 0; i < e.ndirty; i++)
			end_d += e.dirty[i][0];
		end = b->incremental && end_d < end_a ? end_d : end_a;
		if (end > off + win)
			end = off + win;
		if (end == off) {
			ret = vstor_error(b->c, -EIO, "the NBD server reported no extents at %llu",
					  (unsigned long long)off);
			break;
		}
		/* Merge the two lists: cut at every boundary of either. */
		uint64_t a_end = off + (e.nalloc ? e.alloc[0][0] : 0);
		uint64_t d_end = off + (e.ndirty ? e.dirty[0][0] : 0);

		for (pos = off; pos < end;) {
			uint64_t seg_end = end, aflags = e.nalloc ? e.alloc[ia][1] : 0;
			bool dirty = !b->incremental ||
				     (e.ndirty && (e.dirty[id][1] & NBD_STATE_DIRTY));

			if (a_end < seg_end)
				seg_end = a_end;
			if (b->incremental && d_end < seg_end)
				seg_end = d_end;
			if (dirty)
				ret = copy_range(b, pos, seg_end - pos, aflags & NBD_STATE_ZERO,
						 buf);
			if (ret)
				break;
			pos = seg_end;
			if (pos == a_end && ia + 1 < e.nalloc)
				a_end += e.alloc[++ia][0];
			if (b->incremental && pos == d_end && id + 1 < e.ndirty)
				d_end += e.dirty[++id][0];
		}
		off = end;
		progress(b, off);
	}
	free(e.alloc);
	free(e.dirty);
	free(buf);
	return ret;
}

static int qmp_run(struct backup *b, const char *cmd, json_object *args, json_object **ret)
{
	if (vstor_qmp_execute(b->q, cmd, args, ret, &b->qerr) != 0)
		return vstor_error(b->c, b->qerr.code ? b->qerr.code : -EIO, "%s: %s", cmd,
				   b->qerr.desc);
	return 0;
}

/* Run a cleanup command; a failure is only noted (the main error was printed). */
static void qmp_quiet(struct backup *b, const char *cmd, json_object *args)
{
	if (vstor_qmp_execute(b->q, cmd, args, NULL, &b->qerr) != 0 && !b->c->json)
		fprintf(stderr, "warning: %s: %s\n", cmd, b->qerr.desc);
}

static json_object *bitmap_args(const char *node, const char *name)
{
	json_object *a = json_object_new_object();

	json_object_object_add(a, "node", json_object_new_string(node));
	json_object_object_add(a, "name", json_object_new_string(name));
	return a;
}

static void checkpoint_remove(struct backup *b)
{
	json_object *a = json_object_new_object();

	json_object_object_add(a, "name", json_object_new_string(b->name));
	qmp_quiet(b, "checkpoint-remove", a);
	b->checkpoint_added = false;
}

/*
 * Undo a checkpoint whose backup failed: the new bitmap's writes go back
 * into the previous bitmap (enabled again), so the next incremental backup
 * from the same point still covers them; a full backup's bitmap goes.
 */
static void backup_undo(struct backup *b)
{
	if (!b->q || !b->checkpoint_added)
		return;
	checkpoint_remove(b);
	if (b->prev) {
		json_object *a = json_object_new_object(), *l = json_object_new_array();

		json_object_object_add(a, "node", json_object_new_string(b->node));
		json_object_object_add(a, "target", json_object_new_string(b->prev));
		json_object_array_add(l, json_object_new_string(b->name));
		json_object_object_add(a, "bitmaps", l);
		qmp_quiet(b, "block-dirty-bitmap-merge", a);
		qmp_quiet(b, "block-dirty-bitmap-enable", bitmap_args(b->node, b->prev));
	}
	qmp_quiet(b, "block-dirty-bitmap-remove", bitmap_args(b->node, b->name));
}

/* Connect libnbd to export @name at @addr: a unix socket path, HOST:PORT or nbd[+unix]:// URI. */
static int nbd_open(struct backup *b, const char *addr)
{
	char host[256];
	const char *colon;
	int r;

	b->nbd = nbd_create();
	if (!b->nbd)
		return vstor_error(b->c, -ENOMEM, "libnbd: %s", nbd_get_error());
	if (nbd_add_meta_context(b->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    (b->incremental && nbd_add_meta_context(b->nbd, b->ctx_bitmap) < 0) ||
	    nbd_set_export_name(b->nbd, b->name) < 0)
		return vstor_error(b->c, -EIO, "libnbd: %s", nbd_get_error());
	if (addr[0] == '/') {
		r = nbd_connect_unix(b->nbd, addr);
	} else if (!strncmp(addr, "nbd", 3) && strstr(addr, "://")) {
		/* A URI names the server; the export is the checkpoint's. */
		char uri[PATH_MAX + 300];
		const char *rest = strstr(addr, "://") + 3, *q = strchr(rest, '?');
		size_t hl = strcspn(rest, "/?");

		snprintf(uri, sizeof(uri), "%.*s%.*s/%s%s", (int)(rest - addr), addr, (int)hl, rest,
			 b->name, q ? q : "");
		r = nbd_connect_uri(b->nbd, uri);
	} else if ((colon = strrchr(addr, ':')) && (size_t)(colon - addr) < sizeof(host)) {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
		r = nbd_connect_tcp(b->nbd, host, colon + 1);
	} else {
		return vstor_error(b->c, -EINVAL,
				   "--nbd '%s': give a unix socket path, HOST:PORT or an NBD URI",
				   addr);
	}
	if (r < 0)
		return vstor_error(b->c, -EIO, "cannot connect to the checkpoint's export: %s",
				   nbd_get_error());
	if (nbd_can_meta_context(b->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
		return vstor_error(b->c, -ENOTSUP, "the NBD server does not offer %s",
				   LIBNBD_CONTEXT_BASE_ALLOCATION);
	if (b->incremental && nbd_can_meta_context(b->nbd, b->ctx_bitmap) != 1)
		return vstor_error(b->c, -ENOTSUP, "the NBD server does not offer %s",
				   b->ctx_bitmap);
	int64_t size = nbd_get_size(b->nbd);

	if (size < 0)
		return vstor_error(b->c, -EIO, "libnbd: %s", nbd_get_error());
	b->size = (uint64_t)size;
	return 0;
}

/* The new file, over the previous backup (by its name in the same directory). */
static int part_open(struct backup *b)
{
	struct vs_kv kv[2] = { { "backing_file", b->prev_file }, { "backing_fmt", "qcow2" } };
	struct vs_open_opts oo = { .filename = b->part, .format = "qcow2" };
	struct vs_error err = { 0 };
	int ret;

	ret = vs_image_create(b->part, "qcow2", b->size, kv, b->prev_file ? 2 : 0, &err);
	if (ret == 0)
		ret = vs_image_open(&b->dst, &oo, &err);
	if (ret < 0)
		return vstor_error(b->c, ret, "%s", err.msg[0] ? err.msg : strerror(-ret));
	return 0;
}

/* Close the new file, sync it and give it its name. */
static int part_finish(struct backup *b)
{
	int ret = vs_node_flush(b->dst), fd;

	vs_node_close(b->dst);
	b->dst = NULL;
	if (ret < 0)
		return vstor_error(b->c, ret, "cannot flush '%s': %s", b->part, strerror(-ret));
	fd = open(b->part, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		return vstor_error(b->c, ret, "cannot sync '%s': %s", b->part, strerror(-ret));
	}
	close(fd);
	if (rename(b->part, b->file) < 0) {
		ret = -errno;
		return vstor_error(b->c, ret, "cannot rename '%s': %s", b->part, strerror(-ret));
	}
	fsync_dir(b->dir);
	return 0;
}

/* Remove what an interrupted run left: ".*.qcow2.part" files. */
static void remove_stale_parts(const char *dir)
{
	DIR *d = opendir(dir);

	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d));) {
		size_t l = strlen(de->d_name);

		if (de->d_name[0] == '.' && l > 11 && !strcmp(de->d_name + l - 11, ".qcow2.part")) {
			char p[PATH_MAX];

			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p);
		}
	}
	closedir(d);
}

static void summary(struct backup *b, const char *type)
{
	double secs = elapsed(&b->start);

	if (b->verbose && !b->c->json && !b->c->quiet)
		printf("\n");
	if (b->c->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string(type));
		json_object_object_add(o, "checkpoint", json_object_new_string(b->name));
		json_object_object_add(o, "file", json_object_new_string(b->file));
		if (b->prev)
			json_object_object_add(o, "bitmap", json_object_new_string(b->prev));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)b->size));
		json_object_object_add(o, "extents", json_object_new_int64((int64_t)b->extents));
		json_object_object_add(o, "bytes-read",
				       json_object_new_int64((int64_t)b->bytes_read));
		json_object_object_add(o, "bytes-written",
				       json_object_new_int64((int64_t)b->bytes_written));
		json_object_object_add(o, "bytes-zero",
				       json_object_new_int64((int64_t)b->bytes_zero));
		json_object_object_add(o, "seconds", json_object_new_double(secs));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		return;
	}
	vstor_msg(b->c, "%s backup %s of %s done: %llu bytes read, %llu extents, %.2f s\n", type,
		  b->name, opt_get(b->c, "disk") ? opt_get(b->c, "disk") : opt_get(b->c, "export"),
		  (unsigned long long)b->bytes_read, (unsigned long long)b->extents, secs);
}

/* --bandwidth: MiB/s as a plain number (as blockcopy), or a scaled integer in bytes/s. */
static int parse_bandwidth(struct vstor_ctx *c, uint64_t *out)
{
	const char *s = opt_get(c, "bandwidth");
	uint64_t v;

	*out = 0;
	if (!s)
		return 0;
	if (vstor_parse_size(s, &v) < 0)
		return vstor_error(c, -EINVAL, "invalid --bandwidth '%s'", s);
	*out = strspn(s, "0123456789") == strlen(s) ? v << 20 : v;
	return 0;
}

/* DIR exists (made when missing) and is a writable directory. */
static int backup_dir(struct vstor_ctx *c, const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0 && (errno != ENOENT || mkdir(dir, 0755) < 0 || stat(dir, &st) < 0))
		return vstor_error(c, -errno, "backup directory '%s': %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return vstor_error(c, -ENOTDIR, "backup directory '%s': %s", dir,
				   strerror(ENOTDIR));
	if (access(dir, W_OK | X_OK) < 0)
		return vstor_error(c, -errno, "backup directory '%s': %s", dir, strerror(errno));
	return 0;
}

/*
 * A checkpoint that a killed run of the same backup left (named
 * "vstor.N." for this place in the chain, on the same previous bitmap) is
 * undone as a failed one would have been, so that this run can take its own.
 */
static void undo_stale(struct backup *b, size_t n)
{
	json_object *list = NULL;
	char prefix[32];

	snprintf(prefix, sizeof(prefix), "vstor.%zu.", n);
	if (vstor_qmp_execute(b->q, "query-checkpoints", NULL, &list, &b->qerr) != 0)
		return;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *o = json_object_array_get_idx(list, i);
		const char *name = vstor_json_str(o, "name"), *node = vstor_json_str(o, "node");
		const char *bm = vstor_json_str(o, "bitmap");
		struct backup stale = { .c = b->c, .q = b->q, .prev = b->prev };

		if (!name || !node || strncmp(name, prefix, strlen(prefix)) || !bm != !b->prev ||
		    (bm && strcmp(bm, b->prev)) || strlen(name) >= sizeof(stale.name))
			continue;
		if (!b->c->json)
			fprintf(stderr,
				"warning: undoing checkpoint '%s' of an interrupted backup\n",
				name);
		snprintf(stale.name, sizeof(stale.name), "%s", name);
		snprintf(stale.node, sizeof(stale.node), "%s", node);
		stale.checkpoint_added = true;
		backup_undo(&stale);
	}
	json_object_put(list);
}

static int backup_checkpoint(struct backup *b, const char *scratch_dir)
{
	struct vstor_ctx *c = b->c;
	json_object *a = json_object_new_object(), *list = NULL;
	char scratch[PATH_MAX];

	snprintf(scratch, sizeof(scratch), "%s/vstor-backup-%s.scratch", scratch_dir, b->name);
	json_object_object_add(a, "name", json_object_new_string(b->name));
	if (opt_get(c, "disk"))
		json_object_object_add(a, "node", json_object_new_string(opt_get(c, "disk")));
	else
		json_object_object_add(a, "export", json_object_new_string(opt_get(c, "export")));
	json_object_object_add(a, "scratch", json_object_new_string(scratch));
	if (b->prev)
		json_object_object_add(a, "bitmap", json_object_new_string(b->prev));
	if (qmp_run(b, "checkpoint-add", a, NULL)) {
		if (b->prev &&
		    (strstr(b->qerr.desc, "not found") || strstr(b->qerr.desc, "inconsistent")))
			vstor_error(c, -EINVAL,
				    "the bitmap of the previous backup is gone or was not saved "
				    "(vstord crashed, or the disk keeps no persistent bitmaps): "
				    "start a new chain with a full backup into another directory");
		return 1;
	}
	b->checkpoint_added = true;
	if (qmp_run(b, "query-checkpoints", NULL, &list))
		return 1;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *o = json_object_array_get_idx(list, i);
		const char *n = vstor_json_str(o, "name"), *node = vstor_json_str(o, "node");

		if (n && node && !strcmp(n, b->name))
			snprintf(b->node, sizeof(b->node), "%s", node);
	}
	json_object_put(list);
	if (!b->node[0])
		return vstor_error(c, -EIO, "checkpoint '%s' is not listed by query-checkpoints",
				   b->name);
	return 0;
}

static int cmd_backup(struct vstor_ctx *c)
{
	struct backup b = { .c = c, .dir = opt_get(c, "to") };
	const char *src = opt_get(c, "export") ? opt_get(c, "export") : opt_get(c, "disk");
	const char *scratch_dir = opt_get(c, "scratch-dir"), *nbd_addr = opt_get(c, "nbd");
	json_object *m = NULL, *chain, *last = NULL, *ent;
	const char *msrc = NULL;
	char sockbuf[sizeof(c->state_dir) + 16];
	bool saved = false;
	size_t n;
	int ret = 1;

	b.incremental = opt_bool(c, "incremental");
	b.verbose = opt_bool(c, "verbose");
	clock_gettime(CLOCK_MONOTONIC, &b.start);
	if (!opt_get(c, "export") == !opt_get(c, "disk"))
		return vstor_error(c, -EINVAL, "give exactly one of EXPORT and --disk NODE");
	if (!nbd_addr)
		return vstor_error(c, -EINVAL,
				   "--nbd is needed: the socket (or HOST:PORT) of the daemon's "
				   "NBD server");
	if (parse_bandwidth(c, &b.bandwidth) || backup_dir(c, b.dir) || manifest_load(c, b.dir, &m))
		return 1;
	if (!scratch_dir)
		scratch_dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	chain = manifest_chain(m);
	n = json_object_array_length(chain);
	json_object_object_get_ex(m, "source", &ent);
	msrc = n ? json_object_get_string(ent) : NULL;
	if (b.incremental && !n) {
		vstor_error(c, -ENOENT,
			    "'%s' holds no full backup to build on: run a full one first", b.dir);
		goto out;
	}
	if (!b.incremental && n) {
		vstor_error(c, -EEXIST,
			    "'%s' holds a backup chain already: use --incremental, or another "
			    "directory",
			    b.dir);
		goto out;
	}
	if (msrc && strcmp(msrc, src)) {
		vstor_error(c, -EINVAL, "'%s' holds backups of '%s', not of '%s'", b.dir, msrc,
			    src);
		goto out;
	}
	if (n) {
		last = json_object_array_get_idx(chain, n - 1);
		b.prev = vstor_json_str(last, "checkpoint");
		b.prev_file = vstor_json_str(last, "file");
		if (!b.prev || !b.prev_file) {
			vstor_error(c, -EINVAL, "%s/%s: malformed chain entry", b.dir, MANIFEST);
			goto out;
		}
		snprintf(b.ctx_bitmap, sizeof(b.ctx_bitmap), "qemu:dirty-bitmap:%s", b.prev);
	}
	snprintf(b.name, sizeof(b.name), "vstor.%zu.%lld", n, (long long)time(NULL));
	snprintf(b.file, sizeof(b.file), "%s/%s.qcow2", b.dir, b.name);
	snprintf(b.part, sizeof(b.part), "%s/.%s.qcow2.part", b.dir, b.name);
	remove_stale_parts(b.dir);
	if (vstor_qmp_connect(vstor_daemon_socket(c, "vstord", sockbuf, sizeof(sockbuf)), &b.q,
			      &b.qerr) < 0) {
		vstor_error(c, b.qerr.code, "%s", b.qerr.desc);
		goto out;
	}
	catch_signals();
	undo_stale(&b, n);
	if (backup_checkpoint(&b, scratch_dir) || nbd_open(&b, nbd_addr) || part_open(&b) ||
	    copy_view(&b) || part_finish(&b))
		goto out;
	/* The file is whole and synced: it joins the chain. */
	ent = json_object_new_object();
	json_object_object_add(ent, "checkpoint", json_object_new_string(b.name));
	json_object_object_add(ent, "file", json_object_new_string(strrchr(b.file, '/') + 1));
	json_object_object_add(ent, "type",
			       json_object_new_string(b.incremental ? "incremental" : "full"));
	json_object_object_add(ent, "time", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(ent, "size", json_object_new_int64((int64_t)b.size));
	json_object_array_add(chain, ent);
	json_object_object_add(m, "source", json_object_new_string(src));
	ret = manifest_save(b.dir, m);
	if (ret < 0) {
		vstor_error(c, ret, "%s/%s: %s", b.dir, MANIFEST, strerror(-ret));
		ret = 1;
		unlink(b.file);
		goto out;
	}
	fsync_dir(b.dir);
	saved = true;
	nbd_shutdown(b.nbd, 0);
	nbd_close(b.nbd);
	b.nbd = NULL;
	checkpoint_remove(&b);
	/* The previous bitmap has served: the new one counts from this backup. */
	if (b.prev)
		qmp_quiet(&b, "block-dirty-bitmap-remove", bitmap_args(b.node, b.prev));
	summary(&b, b.incremental ? "incremental" : "full");
	ret = 0;
out:
	if (b.nbd)
		nbd_close(b.nbd);
	if (!saved) {
		if (b.verbose && !c->json)
			printf("\n");
		vs_node_close(b.dst);
		unlink(b.part);
		backup_undo(&b);
	}
	vstor_qmp_close(b.q);
	json_object_put(m);
	return ret;
}

/* ---- Restore ------------------------------------------------------------ */

static int restore_copy(struct vstor_ctx *c, struct vs_node *src, struct vs_node *dst, bool fresh)
{
	uint64_t size = vs_node_size(src);
	uint8_t *buf = vs_buf_alloc(READ_CHUNK);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < size && ret == 0;) {
		uint64_t pnum = 0, len = size - off < READ_CHUNK ? size - off : READ_CHUNK;
		unsigned status = 0, depth = 0;

		ret = vs_node_block_status_above(src, off, len, &pnum, &status, NULL, NULL, &depth);
		if (ret < 0)
			break;
		if (pnum == 0 || pnum > len)
			pnum = len;
		if (status & VS_BS_ZERO) {
			if (!fresh)
				ret = vs_node_write_zeroes(dst, off, pnum, VS_REQ_MAY_UNMAP);
		} else {
			ret = vs_node_pread(src, off, buf, (size_t)pnum);
			if (ret == 0)
				ret = vs_node_pwrite(dst, off, buf, (size_t)pnum, 0);
		}
		off += pnum;
	}
	if (ret == 0)
		ret = vs_node_flush(dst);
	free(buf);
	(void)c;
	return ret;
}

static int cmd_restore(struct vstor_ctx *c)
{
	const char *dir = opt_get(c, "dir"), *to = opt_get(c, "to");
	const char *want = opt_get(c, "checkpoint"), *fmt = opt_get(c, "format");
	struct vs_open_opts so = { .read_only = true, .format = "qcow2" };
	struct vs_open_opts dopts = { .filename = to };
	struct vs_node *src = NULL, *dst = NULL;
	json_object *m = NULL, *chain, *ent = NULL;
	char path[PATH_MAX], vol_format[16];
	bool fresh = strncmp(to, "vol:", 4) != 0;
	const char *ck = NULL;
	size_t n;
	int ret;

	if (manifest_load(c, dir, &m))
		return 1;
	chain = manifest_chain(m);
	n = json_object_array_length(chain);
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(chain, i);

		ck = vstor_json_str(e, "checkpoint");
		if (!want || (ck && !strcmp(ck, want)))
			ent = e;
		if (want && ent)
			break;
	}
	if (!ent) {
		json_object_put(m);
		if (want)
			return vstor_error(c, -ENOENT, "'%s' has no backup at checkpoint '%s'", dir,
					   want);
		return vstor_error(c, -ENOENT, "'%s' holds no backup", dir);
	}
	ck = vstor_json_str(ent, "checkpoint");
	snprintf(path, sizeof(path), "%s/%s", dir, vstor_json_str(ent, "file"));
	so.filename = path;
	vs_error_clear(&c->err);
	if (vs_image_open(&src, &so, &c->err) < 0) {
		json_object_put(m);
		return vstor_error_err(c, "cannot open backup '%s'", path);
	}
	if (fresh) {
		if (access(to, F_OK) == 0) {
			ret = vstor_error(c, -EEXIST, "'%s' exists already", to);
			goto out;
		}
		dopts.format = fmt ? fmt : "raw";
		if (vs_image_create(to, dopts.format, vs_node_size(src), NULL, 0, &c->err) < 0) {
			ret = vstor_error_err(c, "cannot create '%s'", to);
			goto out;
		}
	} else if (!fmt) {
		/* The volume's own format (what the pool knows), not a probe. */
		const char *slash = strchr(to + 4, '/');
		struct vs_vol_info vi = { 0 };
		char pool[256];
		struct vs_pool *p;

		if (!slash || (size_t)(slash - to - 4) >= sizeof(pool)) {
			ret = vstor_error(c, -EINVAL, "'%s': expected vol:POOL/VOLUME", to);
			goto out;
		}
		snprintf(pool, sizeof(pool), "%.*s", (int)(slash - to - 4), to + 4);
		p = vstor_pool_get(c, pool);
		if (!p) {
			ret = 1;
			goto out;
		}
		ret = vs_pool_vol_info(p, slash + 1, &vi, &c->err);
		vs_pool_free(p);
		if (ret < 0) {
			ret = vstor_error_err(c, "failed to get vol '%s'", slash + 1);
			goto out;
		}
		snprintf(vol_format, sizeof(vol_format), "%s", vi.format);
		dopts.format = vol_format[0] ? vol_format : NULL;
	} else {
		dopts.format = fmt;
	}
	if (vs_image_open(&dst, &dopts, &c->err) < 0) {
		ret = vstor_error_err(c, "cannot open '%s'", to);
		goto out_created;
	}
	if (vs_node_size(dst) < vs_node_size(src)) {
		ret = vstor_error(c, -ENOSPC, "'%s' is smaller than the backup (%llu bytes)", to,
				  (unsigned long long)vs_node_size(src));
		goto out_created;
	}
	ret = restore_copy(c, src, dst, fresh);
	if (ret < 0) {
		ret = vstor_error(c, ret, "restore into '%s' failed: %s", to, strerror(-ret));
		goto out_created;
	}
	if (c->json)
		printf("{\"checkpoint\": \"%s\", \"to\": \"%s\", \"size\": %llu}\n", ck, to,
		       (unsigned long long)vs_node_size(src));
	else
		vstor_msg(c, "Restored %s at checkpoint %s into %s\n", dir, ck, to);
	ret = 0;
out_created:
	vs_node_close(dst);
	if (ret && fresh)
		unlink(to);
out:
	vs_node_close(src);
	json_object_put(m);
	return ret;
}

static const struct opt_spec backup_opts[] = {
	{ "export", OT_DATA, false, "the export id of the disk (or --disk NODE)" },
	{ "disk", OT_STR, false, "the node name of the disk" },
	{ "to", OT_STR, true, "the backup directory (made when missing)" },
	{ "incremental", OT_BOOL, false, "back up what changed since the directory's last backup" },
	{ "nbd", OT_STR, true, "the daemon's NBD server: unix socket path, HOST:PORT or NBD URI" },
	{ "vstord", OT_STR, false,
	  "the daemon's QMP socket (else -c PATH, VSTORD_SOCKET, STATE_DIR/vstord.sock)" },
	{ "scratch-dir", OT_STR, false,
	  "where the daemon keeps the checkpoint's scratch (default $TMPDIR or /var/tmp)" },
	{ "bandwidth", OT_STR, false, "read at most MiB/s, or a scaled integer in bytes/s" },
	{ "verbose", OT_BOOL, false, "show progress (also -p)" },
	{ 0 },
};

static const struct opt_spec restore_opts[] = {
	{ "dir", OT_DATA, true, "the backup directory" },
	{ "to", OT_STR, true, "the new image FILE, or an existing volume vol:POOL/VOL" },
	{ "checkpoint", OT_STR, false, "restore the disk as at this checkpoint (default: last)" },
	{ "format", OT_STR, false, "format of a new FILE (default raw)" },
	{ 0 },
};

const struct vstor_cmd vstor_backup_cmds[] = {
	{ "backup", cmd_backup, backup_opts,
	  "full or incremental backup of a running daemon's disk into a qcow2 chain", false },
	{ "restore", cmd_restore, restore_opts, "restore a disk from a backup chain", false },
	{ 0 },
};
