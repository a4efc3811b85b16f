/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Crash consistency of qcow2 with the log-writes driver (docs/reliability.md).
 *
 * 1. Run a seeded random workload (allocating writes, overwrites, FUA
 *    writes, discards, write-zeroes, compressed clusters, flushes, growing
 *    the image and with it the L1 table, snapshot create and delete) on a
 *    qcow2 image opened through log-writes:LOG:FILE, marking in the log
 *    where every request begins and ends.
 * 2. Replay the log: rebuild the image file as a power failure could have
 *    left it at every flush, and at random points between flushes with a
 *    random subset of the writes since the last flush (FUA writes always
 *    kept). At every such crash point:
 *     - the image opens read-write (which repairs a lazy_refcounts image);
 *     - vstor's check finds no corruption (leaks are allowed);
 *     - qemu-img check finds no corruption (on every flush point and every
 *       Nth other point: exec'ing it thousands of times is slow);
 *     - every sector holds a value it may hold: what the last durable
 *       request wrote (acknowledged before a flush that completed, or FUA,
 *       or any write in writethrough mode), or what a later request that
 *       had begun wrote.
 *
 *   crash-replay [-s SEED] [-n OPS] [-p POINTS] [-q N] [-t CACHE] [-o OPTS] [-r N] [-k]
 *     -s SEED    workload seed (default 1)
 *     -n OPS     requests in the workload (default 300)
 *     -p POINTS  random crash points per flush interval (default 4)
 *     -q N       qemu-img check every Nth random point (default 10; 0 = never)
 *     -t CACHE   writeback (default), writethrough, none, directsync
 *     -o OPTS    qcow2 create options (default cluster_size=4096)
 *     -r N       N reactors: the workload's writes, write-zeroes, discards and
 *                flushes go in turn through an export's ports on N - 1
 *                reactor threads (one disk on several reactors). log-writes
 *                has no map, so they all run at home by a call: what is
 *                checked is that the way there keeps every crash point
 *                consistent; direct I/O itself, which bypasses the drivers,
 *                cannot be recorded by log-writes (docs/reliability.md)
 *     -k         keep the temp dir
 *
 * Prints "crash points checked: N ..." and exits 0, or 1 at the first
 * violation with the crash point and the sector; 77 when qemu-img is
 * missing (1 under CI=true).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver.h"
#include "qcow2-check.h"
#include "vstor/cache.h"
#include "vstor/export.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#include "../port-request.h"

#define SECTOR 512u
#define INITIAL_SIZE (2u << 20)
#define MAX_SIZE (8u << 20)
#define MAX_ALLOWED 6

enum op_kind {
	OP_WRITE,
	OP_ZERO,
	OP_DISCARD,
	OP_COMPRESSED,
	OP_FLUSH,
	OP_RESIZE,
	OP_SNAP_CREATE,
	OP_SNAP_DELETE,
};

static const char *const kind_names[] = { "write", "zero",   "discard",		"compressed",
					  "flush", "resize", "snapshot-create", "snapshot-delete" };

struct op {
	enum op_kind kind;
	uint64_t off, len; /* bytes; for OP_RESIZE, off = the new size */
	uint64_t id;	   /* content id of a write (its index + 1); 0 = zeroes */
	bool fua;
	bool ok;
	size_t begin, end; /* log entry index of the begin and end marks */
};

struct log_entry {
	uint32_t type, flags;
	uint64_t offset, len;
	const uint8_t *data;
};

struct cfg {
	uint64_t seed;
	unsigned nops;
	unsigned points;
	unsigned qemu_every;
	enum vs_cache_mode cache;
	const char *cache_name;
	const char *opts;
	bool keep;
	char dir[64];
	bool have_qemu;
	unsigned reactors;
};

static struct cfg cfg = { .seed = 1,
			  .nops = 300,
			  .points = 4,
			  .qemu_every = 10,
			  .cache = VS_CACHE_WRITEBACK,
			  .cache_name = "writeback",
			  .opts = "cluster_size=4096",
			  .reactors = 1 };

static struct op *ops;
static struct log_entry *entries;
static size_t nentries;
static uint8_t *logbuf;
static bool writethrough;

struct image {
	uint8_t *data;
	uint64_t size, cap;
};
static const struct image *cur_image; /* the crash point being checked */
static void image_save(const struct image *im, const char *name);

/* Statistics. */
static unsigned long points_flush, points_random, points_qemu, points_final, points_window;
static unsigned long opens_repaired;

/* Count the repairs that opening a crashed lazy_refcounts image does; print the rest. */
static void on_warning(const char *msg, void *opaque)
{
	(void)opaque;
	if (strstr(msg, "was not closed cleanly"))
		opens_repaired++;
	else
		fprintf(stderr, "vstor: warning: %s\n", msg);
}

static __attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...)
{
	va_list ap;

	if (cur_image) {
		const struct image *im = cur_image;

		cur_image = NULL;
		image_save(im, "point-crashed.qcow2"); /* as the crash left it */
	}
	fprintf(stderr, "crash-replay: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (seed %" PRIu64 ", cache %s, -o %s; temp dir %s kept)\n", cfg.seed,
		cfg.cache_name, cfg.opts, cfg.dir);
	exit(1);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* Sector @s of the content with id @id: a header naming both, then a fill derived from them. */
static void fill_sector(uint8_t *p, uint64_t id, uint64_t s)
{
	memcpy(p, &id, 8);
	memcpy(p + 8, &s, 8);
	memset(p + 16, (int)((id * 131 + s * 7) & 0xff), SECTOR - 16);
}

/* The content id a sector holds: 0 for zeroes, UINT64_MAX if it is no known content. */
static uint64_t decode_sector(const uint8_t *p, uint64_t s)
{
	static const uint8_t zero[SECTOR];
	uint8_t want[SECTOR];
	uint64_t id;

	if (!memcmp(p, zero, SECTOR))
		return 0;
	memcpy(&id, p, 8);
	if (!id || id > cfg.nops)
		return UINT64_MAX;
	fill_sector(want, id, s);
	return memcmp(want, p, SECTOR) ? UINT64_MAX : id;
}

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int n, st;

	n = snprintf(cmd, sizeof(cmd), "cd %s && (", cfg.dir);
	va_start(ap, fmt);
	n += vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
	va_end(ap);
	snprintf(cmd + n, sizeof(cmd) - (size_t)n, ") >qemu.out 2>&1");
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the workload ---- */

static struct vs_node *top, *lw;

/* -r N: the export, its ports and their reactor threads. */
#define MAX_PORTS 3
static struct vs_export *exp_;
static struct vs_reactor_thread *port_threads[MAX_PORTS];
static struct vs_export_port *ports[MAX_PORTS];
static unsigned nports, next_port;

/* An export request through the next port (-r), or -ENOENT without ports. */
static int via_port(enum vs_export_op op, uint64_t off, uint64_t len, struct iovec *iov,
		    unsigned flags)
{
	unsigned k;

	if (!nports)
		return -ENOENT;
	k = next_port++ % nports;
	return test_port_request(vs_reactor_thread_reactor(port_threads[k]), ports[k], op, off, len,
				 iov, iov ? 1 : 0, flags);
}

static void ports_open(void)
{
	if (cfg.reactors < 2)
		return;
	if (vs_export_new(&exp_, &(struct vs_export_opts){ .name = "crash",
							   .node = top,
							   .discard = VS_EXPORT_DISCARD_UNMAP }) <
	    0)
		die("export: out of memory");
	for (unsigned i = 0; i < cfg.reactors - 1 && i < MAX_PORTS; i++) {
		if (vs_reactor_thread_start(&port_threads[i], "crash-port") < 0 ||
		    vs_export_port_new(exp_, vs_reactor_thread_reactor(port_threads[i]),
				       &ports[i]) < 0)
			die("could not start reactor %u", i + 1);
		nports = i + 1;
	}
}

static void ports_close(void)
{
	for (unsigned i = 0; i < nports; i++)
		vs_export_port_free(ports[i]);
	vs_export_free(exp_);
	exp_ = NULL;
	for (unsigned i = 0; i < nports; i++)
		vs_reactor_thread_stop(port_threads[i]);
	nports = 0;
}

static void mark(uint64_t value)
{
	if (vs_log_writes_mark(lw, value) < 0)
		die("could not write a mark");
}

static void do_op(struct op *o, uint8_t *buf)
{
	struct vs_error err = { 0 };
	struct iovec iov;
	char name[32];
	int ret = 0;

	switch (o->kind) {
	case OP_WRITE:
	case OP_COMPRESSED:
		for (uint64_t s = 0; s < o->len / SECTOR; s++)
			fill_sector(buf + s * SECTOR, o->id, o->off / SECTOR + s);
		iov.iov_base = buf;
		iov.iov_len = o->len;
		if (o->kind == OP_COMPRESSED)
			ret = vs_node_pwritev_compressed(top, o->off, o->len, &iov, 1);
		else if (nports)
			ret = via_port(VS_EXPORT_OP_WRITE, o->off, o->len, &iov,
				       o->fua ? VS_EXPORT_FUA : 0);
		else
			ret = vs_node_pwritev(top, o->off, o->len, &iov, 1,
					      o->fua ? VS_REQ_FUA : 0);
		break;
	case OP_ZERO:
		if (nports)
			ret = via_port(VS_EXPORT_OP_WRITE_ZEROES, o->off, o->len, NULL,
				       (o->fua ? VS_EXPORT_FUA : 0) |
					       (o->id & 1 ? VS_EXPORT_MAY_UNMAP : 0));
		else
			ret = vs_node_write_zeroes(top, o->off, o->len,
						   (o->fua ? VS_REQ_FUA : 0) |
							   (o->id & 1 ? VS_REQ_MAY_UNMAP : 0));
		o->id = 0;
		break;
	case OP_DISCARD:
		if (nports)
			ret = via_port(VS_EXPORT_OP_DISCARD, o->off, o->len, NULL, 0);
		else
			ret = vs_node_discard(top, o->off, o->len);
		o->id = 0;
		break;
	case OP_FLUSH:
		ret = nports ? via_port(VS_EXPORT_OP_FLUSH, 0, 0, NULL, 0) : vs_node_flush(top);
		break;
	case OP_RESIZE:
		ret = vs_node_truncate(top, o->off, VS_PREALLOC_OFF, true, &err);
		if (ret == 0 && exp_)
			vs_export_resize(exp_, vs_node_size(top));
		break;
	case OP_SNAP_CREATE:
		snprintf(name, sizeof(name), "s%" PRIu64, o->id);
		ret = vs_node_snapshot_create(top, name, NULL, &err);
		break;
	case OP_SNAP_DELETE:
		snprintf(name, sizeof(name), "s%" PRIu64, o->id);
		ret = vs_node_snapshot_delete(top, name, &err);
		break;
	}
	/* refcount_bits=1 leaves no room for a snapshot: the request changes nothing. */
	if (ret == -ERANGE && o->kind == OP_SNAP_CREATE)
		return;
	if (ret < 0)
		die("op %u (%s off=%" PRIu64 " len=%" PRIu64 ") failed: %s %s", (unsigned)(o - ops),
		    kind_names[o->kind], o->off, o->len, strerror(-ret), err.msg);
	o->ok = true;
}

/* Generate and run the workload. */
static void workload(void *arg)
{
	char fname[256], logname[128], uri[512];
	struct vs_open_opts oo = { 0 };
	struct vs_error err = { 0 };
	uint64_t size = INITIAL_SIZE, cluster;
	uint64_t snaps[8], nsnaps = 0, next_snap = 1;
	uint8_t *buf;

	(void)arg;
	snprintf(fname, sizeof(fname), "%s/work.qcow2", cfg.dir);
	snprintf(logname, sizeof(logname), "%s/log", cfg.dir);
	snprintf(uri, sizeof(uri), "log-writes:%s:%s", logname, fname);
	oo.filename = uri;
	oo.format = "qcow2";
	oo.cache = cfg.cache;
	if (vs_image_open(&top, &oo, &err) < 0)
		die("open %s: %s", uri, err.msg);
	lw = vs_node_file(top);
	writethrough = top->writethrough;
	ports_open();
	cluster = vs_node_cluster_size(top);
	buf = vs_buf_alloc(256 * 1024);
	if (!buf)
		die("out of memory");
	for (unsigned i = 0; i < cfg.nops; i++) {
		struct op *o = &ops[i];
		uint64_t r = rnd_below(100);

		o->id = i + 1;
		/* Requests land in a few hot spots, so they overlap and overwrite. */
		if (r < 40) {
			o->kind = OP_WRITE;
			o->fua = rnd_below(8) == 0;
		} else if (r < 48) {
			o->kind = OP_ZERO;
			o->fua = rnd_below(8) == 0;
		} else if (r < 56) {
			o->kind = OP_DISCARD;
		} else if (r < 66) {
			o->kind = OP_COMPRESSED;
		} else if (r < 84) {
			o->kind = OP_FLUSH;
		} else if (r < 87 && size + (2u << 20) <= MAX_SIZE) {
			o->kind = OP_RESIZE;
			size += 2u << 20;
			o->off = size;
		} else if (r < 92 && nsnaps < 8) {
			o->kind = OP_SNAP_CREATE;
			o->id = next_snap++;
			snaps[nsnaps++] = o->id;
		} else if (r < 95 && nsnaps) {
			o->kind = OP_SNAP_DELETE;
			o->id = snaps[0];
			memmove(snaps, snaps + 1, (size_t)(--nsnaps) * sizeof(snaps[0]));
		} else {
			o->kind = OP_WRITE;
		}
		if (o->kind == OP_WRITE || o->kind == OP_ZERO || o->kind == OP_DISCARD) {
			uint64_t maxs = o->kind == OP_WRITE ? 128 : 256;
			uint64_t nsec = 1 + rnd_below(maxs);
			uint64_t spot = rnd_below(4) == 0 ? rnd_below(size / SECTOR) :
							    rnd_below(8) * (size / SECTOR / 8);

			if (spot + nsec > size / SECTOR)
				spot = size / SECTOR - nsec;
			o->off = spot * SECTOR;
			o->len = nsec * SECTOR;
		} else if (o->kind == OP_COMPRESSED) {
			o->off = rnd_below(size / cluster) * cluster;
			o->len = cluster;
		}
		mark(2 * (uint64_t)i);
		do_op(o, buf);
		mark(2 * (uint64_t)i + 1);
		if (o->kind == OP_SNAP_CREATE && !o->ok)
			nsnaps--;
	}
	free(buf);
	ports_close();
	vs_node_close(top);
	top = NULL;
}

/* ---- the log ---- */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint8_t *read_file(const char *name, size_t *len)
{
	char p[256];
	struct stat st;
	uint8_t *buf;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", cfg.dir, name);
	fd = open(p, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		die("open %s: %s", p, strerror(errno));
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size)
		die("read %s", p);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void parse_log(void)
{
	size_t len, pos = 32, cap = 1024;

	logbuf = read_file("log", &len);
	if (len < 32 || memcmp(logbuf, "VSLOGWR1", 8) || le32(logbuf + 8) != 1)
		die("bad log header");
	if (le64(logbuf + 16) & 1)
		die("the log has volatile flushes (cache=unsafe): no point of it is durable");
	entries = malloc(cap * sizeof(*entries));
	while (pos < len) {
		struct log_entry *e;

		if (len - pos < 32)
			die("truncated log record at %zu", pos);
		if (nentries == cap) {
			cap *= 2;
			entries = realloc(entries, cap * sizeof(*entries));
		}
		if (!entries)
			die("out of memory");
		e = &entries[nentries];
		e->type = le32(logbuf + pos);
		e->flags = le32(logbuf + pos + 4);
		if (le64(logbuf + pos + 8) != nentries)
			die("log record %zu has sequence %" PRIu64, nentries,
			    le64(logbuf + pos + 8));
		e->offset = le64(logbuf + pos + 16);
		e->len = le64(logbuf + pos + 24);
		pos += 32;
		e->data = NULL;
		if (e->type == 1) {
			if (len - pos < e->len)
				die("truncated write record");
			e->data = logbuf + pos;
			pos += e->len;
		}
		if (e->type == 5) {
			uint64_t v = e->offset;

			if (v / 2 >= cfg.nops)
				die("bad mark %" PRIu64, v);
			if (v & 1)
				ops[v / 2].end = nentries;
			else
				ops[v / 2].begin = nentries;
		}
		nentries++;
	}
}

/* ---- images ---- */

static void image_reserve(struct image *im, uint64_t end)
{
	uint64_t cap = im->cap ? im->cap : (1u << 20);

	if (end <= im->cap)
		return;
	while (cap < end)
		cap *= 2;
	im->data = realloc(im->data, cap);
	if (!im->data)
		die("out of memory");
	memset(im->data + im->cap, 0, cap - im->cap);
	im->cap = cap;
}

static void image_apply(struct image *im, const struct log_entry *e)
{
	switch (e->type) {
	case 1:
	case 2:
	case 3:
		image_reserve(im, e->offset + e->len);
		if (e->type == 1)
			memcpy(im->data + e->offset, e->data, e->len);
		else
			memset(im->data + e->offset, 0, e->len);
		if (e->offset + e->len > im->size)
			im->size = e->offset + e->len;
		break;
	case 6:
		image_reserve(im, e->offset);
		if (e->offset < im->size)
			memset(im->data + e->offset, 0, im->size - e->offset);
		im->size = e->offset;
		break;
	default:
		break;
	}
}

static void image_copy(struct image *dst, const struct image *src)
{
	image_reserve(dst, src->cap);
	memcpy(dst->data, src->data, src->cap);
	if (dst->cap > src->cap)
		memset(dst->data + src->cap, 0, dst->cap - src->cap);
	dst->size = src->size;
}

static void image_save(const struct image *im, const char *name)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", cfg.dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, im->data, im->size) != (ssize_t)im->size)
		die("write %s: %s", p, strerror(errno));
	close(fd);
}

/* ---- checking one crash point ---- */

struct point {
	size_t last; /* entries up to here were issued */
	const char *what;
	unsigned long n;
};

static bool op_durable(unsigned k, size_t last, const unsigned *flush_done)
{
	const struct op *o = &ops[k];

	if (o->end > last)
		return false;
	if (o->fua || writethrough)
		return true;
	/* A flush that began after the op ended and completed by @last. */
	return flush_done[k] <= last;
}

struct allowed {
	uint8_t n;
	bool any;
	uint32_t v[MAX_ALLOWED]; /* content ids (request index + 1), 0 = zeroes */
};

static void allowed_add(struct allowed *a, uint32_t v)
{
	for (unsigned i = 0; i < a->n; i++)
		if (a->v[i] == v)
			return;
	if (a->n == MAX_ALLOWED) {
		a->any = true;
		return;
	}
	a->v[a->n++] = v;
}

static unsigned *flush_done; /* for op k: end entry of the first flush that began after k ended */
static struct allowed *allowed;
static uint8_t *readbuf;

/*
 * Inside a snapshot create or delete, refcounts change before the COPIED
 * flags of the L2 entries that follow them (they live in other clusters),
 * so a crash there can leave "OFLAG_COPIED" mismatches that both checks
 * count as corruptions, though only leaked references are involved (a
 * snapshot is named in the table only after both are on disk). QEMU has the
 * same window. They are allowed there, and nowhere else.
 */
static bool cur_window; /* this point needed the snapshot-window allowance */

static bool in_snapshot_window(size_t last)
{
	for (unsigned k = 0; k < cfg.nops; k++) {
		const struct op *o = &ops[k];

		if (o->begin > last)
			break;
		if ((o->kind == OP_SNAP_CREATE || o->kind == OP_SNAP_DELETE) && o->end > last)
			return true;
	}
	return false;
}

static void count_copied(const char *msg, void *opaque)
{
	if (!strncmp(msg, "ERROR OFLAG_COPIED", 18))
		(*(int64_t *)opaque)++;
}

/* For a failure's diagnosis: every request that touched sector @s. */
static void sector_history(uint64_t s, size_t last)
{
	for (unsigned k = 0; k < cfg.nops; k++) {
		const struct op *o = &ops[k];

		if (o->kind == OP_FLUSH || o->kind == OP_RESIZE || o->kind == OP_SNAP_CREATE ||
		    o->kind == OP_SNAP_DELETE) {
			if (o->kind != OP_FLUSH ||
			    (o->begin + 200 >= last && o->begin <= last + 20))
				fprintf(stderr, "  op %u %s log [%zu, %zu]\n", k,
					kind_names[o->kind], o->begin, o->end);
			continue;
		}
		if (s < o->off / SECTOR || s >= (o->off + o->len) / SECTOR)
			continue;
		fprintf(stderr,
			"  op %u %s off=%" PRIu64 " len=%" PRIu64 " id=%" PRIu64
			"%s log [%zu, %zu]%s\n",
			k, kind_names[o->kind], o->off, o->len, o->id, o->fua ? " fua" : "",
			o->begin, o->end, op_durable(k, last, flush_done) ? " durable" : "");
	}
}

static void check_point_co(void *arg)
{
	const struct point *pt = arg;
	char fname[256];
	struct vs_open_opts oo = { 0 };
	struct vs_error err = { 0 };
	struct vs_check_result res = { 0 };
	struct vs_node *n = NULL;
	uint64_t vsize, nsec, min_size = INITIAL_SIZE;
	int ret;

	snprintf(fname, sizeof(fname), "%s/point.qcow2", cfg.dir);
	oo.filename = fname;
	oo.format = "qcow2";
	oo.cache = VS_CACHE_UNSAFE; /* what opening writes is checked, not made durable */
	/*
	 * The previous point's image was closed a moment ago: an io_uring
	 * request of it may still hold a reference to its file, and with it
	 * the OFD lock, for a moment after its completion. Retry a lock
	 * conflict for up to a second; anything else is a failure.
	 */
	for (int tries = 0;; tries++) {
		ret = vs_image_open(&n, &oo, &err);
		if (ret != -EAGAIN || tries >= 100)
			break;
		vs_co_sleep_ns(10000000);
		memset(&err, 0, sizeof(err));
	}
	if (ret < 0)
		die("%s point %lu (log entry %zu): the image does not open: %s", pt->what, pt->n,
		    pt->last, err.msg);
	{
		int64_t copied = 0;

		ret = qcow2_check_image_report(vs_node_file(n), &res, 0, count_copied, &copied,
					       &err);
		if (ret == 0 && res.corruptions && res.corruptions == copied &&
		    in_snapshot_window(pt->last)) {
			res.corruptions = 0;
			cur_window = true;
		}
	}
	if (ret < 0 || res.corruptions || res.check_errors)
		die("%s point %lu (log entry %zu): check: ret %d, %" PRId64 " corruptions, %" PRId64
		    " check errors",
		    pt->what, pt->n, pt->last, ret, res.corruptions, res.check_errors);

	/* The sizes the image may have: a resize is durable once it returned. */
	vsize = vs_node_size(n);
	if (vsize > MAX_SIZE)
		die("%s point %lu: virtual size %" PRIu64 " was never set", pt->what, pt->n, vsize);
	for (unsigned k = 0; k < cfg.nops; k++)
		if (ops[k].kind == OP_RESIZE && ops[k].end <= pt->last)
			min_size = ops[k].off;
	if (vsize < min_size)
		die("%s point %lu: virtual size %" PRIu64 " < %" PRIu64 " of a completed resize",
		    pt->what, pt->n, vsize, min_size);

	/* What each sector may hold. */
	nsec = vsize / SECTOR;
	memset(allowed, 0, nsec * sizeof(*allowed));
	for (uint64_t s = 0; s < nsec; s++)
		allowed[s].n = 1; /* v[0] = 0: zeroes */
	for (unsigned k = 0; k < cfg.nops; k++) {
		const struct op *o = &ops[k];
		bool durable;

		if (o->begin > pt->last)
			break;
		if (o->kind != OP_WRITE && o->kind != OP_ZERO && o->kind != OP_DISCARD &&
		    o->kind != OP_COMPRESSED)
			continue;
		durable = op_durable(k, pt->last, flush_done);
		for (uint64_t s = o->off / SECTOR; s < (o->off + o->len) / SECTOR && s < nsec;
		     s++) {
			struct allowed *a = &allowed[s];

			if (durable && o->kind != OP_DISCARD) {
				a->n = 1;
				a->any = false;
				a->v[0] = (uint32_t)o->id;
			} else {
				allowed_add(a, (uint32_t)o->id);
			}
		}
	}
	for (uint64_t off = 0; off < vsize; off += 1u << 20) {
		uint64_t len = vsize - off < (1u << 20) ? vsize - off : (1u << 20);

		ret = vs_node_pread(n, off, readbuf, len);
		if (ret < 0)
			die("%s point %lu: read at %" PRIu64 ": %s", pt->what, pt->n, off,
			    strerror(-ret));
		for (uint64_t i = 0; i < len / SECTOR; i++) {
			uint64_t s = off / SECTOR + i;
			uint64_t v = decode_sector(readbuf + i * SECTOR, s);
			const struct allowed *a = &allowed[s];
			bool ok = a->any;

			for (unsigned j = 0; j < a->n && !ok; j++)
				ok = a->v[j] == v;
			if (!ok) {
				sector_history(s, pt->last);
				die("%s point %lu (log entry %zu): sector %" PRIu64
				    " holds content %" PRId64 " (-1: garbage), expected %" PRIu32
				    "%s",
				    pt->what, pt->n, pt->last, s, (int64_t)v, a->v[0],
				    a->n > 1 ? " or a later write" : "");
			}
		}
	}
	vs_node_close(n);
}

/* qemu-img check exit 2 with only OFLAG_COPIED errors, inside a snapshot operation. */
static bool qemu_window_only(const struct point *pt)
{
	char p[256], line[512];
	bool ok = in_snapshot_window(pt->last);
	FILE *f;

	snprintf(p, sizeof(p), "%s/qemu.out", cfg.dir);
	f = fopen(p, "r");
	if (!f)
		return false;
	while (ok && fgets(line, sizeof(line), f))
		if (!strncmp(line, "ERROR", 5) && strncmp(line, "ERROR OFLAG_COPIED", 18))
			ok = false;
	fclose(f);
	if (ok)
		cur_window = true;
	return ok;
}

static void check_point(const struct image *im, const struct point *pt, bool qemu)
{
	bool lazy = strstr(cfg.opts, "lazy_refcounts=on") != NULL;
	int rc;

	cur_window = false;
	image_save(im, "point.qcow2");
	cur_image = im;
	/* qemu-img check sees the crashed image as it is, except that a lazy_refcounts
	 * image is checked after opening repaired it. */
	if (qemu && cfg.have_qemu && !lazy) {
		rc = run_cmd("qemu-img check -f qcow2 point.qcow2");
		if (rc != 0 && rc != 3 && !(rc == 2 && qemu_window_only(pt)))
			die("%s point %lu (log entry %zu): qemu-img check exit %d (see %s/qemu.out)",
			    pt->what, pt->n, pt->last, rc, cfg.dir);
	}
	check_point_co((void *)pt);
	if (qemu && cfg.have_qemu && lazy) {
		rc = run_cmd("qemu-img check -f qcow2 point.qcow2");
		if (rc != 0 && rc != 3 && !(rc == 2 && qemu_window_only(pt)))
			die("%s point %lu (log entry %zu): qemu-img check after repair exit %d",
			    pt->what, pt->n, pt->last, rc);
	}
	if (qemu && cfg.have_qemu)
		points_qemu++;
	if (cur_window)
		points_window++;
}

static void replay(void)
{
	struct image durable = { 0 }, scratch = { 0 };
	size_t base_len, prev_flush = 0;
	uint8_t *base = read_file("base.qcow2", &base_len);
	unsigned long nrandom = 0;
	size_t *pending = malloc(nentries * sizeof(size_t));
	size_t npending = 0;

	if (!pending)
		die("out of memory");
	image_reserve(&durable, base_len);
	memcpy(durable.data, base, base_len);
	durable.size = base_len;
	free(base);

	/* flush_done[k]: the end of the first flush op that began after op k ended. */
	flush_done = malloc(cfg.nops * sizeof(*flush_done));
	{
		unsigned next = (unsigned)-1;

		for (unsigned k = cfg.nops; k-- > 0;) {
			flush_done[k] = next;
			if (ops[k].kind == OP_FLUSH)
				next = (unsigned)ops[k].end;
		}
	}

	for (size_t i = 0; i < nentries; i++) {
		const struct log_entry *e = &entries[i];

		if (e->type == 4) {
			/* Random points between the last flush and this one. */
			for (unsigned p = 0; p < cfg.points && npending; p++) {
				size_t upto = 1 + rnd_below(npending); /* pending[0..upto) issued */
				struct point pt = { .last = pending[upto - 1],
						    .what = "random",
						    .n = ++nrandom };

				image_copy(&scratch, &durable);
				for (size_t j = 0; j < upto; j++) {
					const struct log_entry *u = &entries[pending[j]];

					if ((u->flags & 1) || rnd_below(2))
						image_apply(&scratch, u);
				}
				check_point(&scratch, &pt,
					    cfg.qemu_every && nrandom % cfg.qemu_every == 0);
				points_random++;
			}
			for (size_t j = 0; j < npending; j++)
				image_apply(&durable, &entries[pending[j]]);
			npending = 0;
			prev_flush = i;
			{
				struct point pt = { .last = i,
						    .what = "flush",
						    .n = points_flush + 1 };

				check_point(&durable, &pt, true);
				points_flush++;
			}
		} else if (e->type != 5) {
			pending[npending++] = i;
		}
	}
	/* The end: everything written, as the clean close left it. */
	for (size_t j = 0; j < npending; j++)
		image_apply(&durable, &entries[pending[j]]);
	{
		struct point pt = { .last = nentries, .what = "final", .n = 1 };

		check_point(&durable, &pt, true);
		points_final++;
	}
	(void)prev_flush;
	free(pending);
	free(durable.data);
	free(scratch.data);
}

static void create_base(void *arg)
{
	char fname[256], buf[512];
	struct vs_kv kv[8];
	struct vs_error err = { 0 };
	size_t n = 0;
	char *save = NULL;

	(void)arg;
	snprintf(fname, sizeof(fname), "%s/base.qcow2", cfg.dir);
	snprintf(buf, sizeof(buf), "%s", cfg.opts);
	for (char *t = strtok_r(buf, ",", &save); t && n < 8; t = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(t, '=');

		if (!eq)
			die("bad -o option '%s'", t);
		*eq = '\0';
		kv[n].key = t;
		kv[n++].value = eq + 1;
	}
	if (vs_image_create(fname, "qcow2", INITIAL_SIZE, kv, n, &err) < 0)
		die("create: %s", err.msg);
}

/* Everything on one reactor: a reactor per crash point costs more than the point. */
static void run_all(void *arg)
{
	create_base(arg);
	if (run_cmd("cp base.qcow2 work.qcow2") != 0)
		die("cp");
	workload(arg);
	parse_log();
	replay();
}

int main(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "s:n:p:q:t:o:r:k")) != -1) {
		switch (c) {
		case 's':
			cfg.seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			cfg.nops = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'p':
			cfg.points = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'q':
			cfg.qemu_every = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 't':
			if (vs_cache_mode_parse(optarg, &cfg.cache) < 0 ||
			    cfg.cache == VS_CACHE_UNSAFE) {
				fprintf(stderr, "crash-replay: cache mode '%s' not replayable\n",
					optarg);
				return 2;
			}
			cfg.cache_name = optarg;
			break;
		case 'o':
			cfg.opts = optarg;
			break;
		case 'r':
			cfg.reactors = (unsigned)strtoul(optarg, NULL, 0);
			if (cfg.reactors < 1 || cfg.reactors > MAX_PORTS + 1)
				die("-r: 1 to %d reactors", MAX_PORTS + 1);
			break;
		case 'k':
			cfg.keep = true;
			break;
		default:
			fprintf(stderr, "usage: crash-replay [-s SEED] [-n OPS] [-p POINTS] [-q N] "
					"[-t CACHE] [-o OPTS] [-r N] [-k]\n");
			return 2;
		}
	}
	/*
	 * CI runs a sample of the long tier (VSTOR_COMBOS_SAMPLE set, see
	 * scripts/run-tests.sh): there a long run is cut to an eighth (at least
	 * 120 requests), so the sampled tier stays within CI's time.
	 */
	if (getenv("VSTOR_COMBOS_SAMPLE") && *getenv("VSTOR_COMBOS_SAMPLE") && cfg.nops > 120) {
		cfg.nops = cfg.nops / 8 > 120 ? cfg.nops / 8 : 120;
		printf("long-tier sample (VSTOR_COMBOS_SAMPLE): %u requests\n", cfg.nops);
	}
	if (!cfg.nops) {
		fprintf(stderr, "crash-replay: -n must be > 0\n");
		return 2;
	}
	cfg.have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;
	if (!cfg.have_qemu && cfg.qemu_every) {
		const char *ci = getenv("CI");

		fprintf(stderr, "crash-replay: qemu-img not found\n");
		return ci && !strcmp(ci, "true") ? 1 : 77;
	}
	rng_state = cfg.seed * 0x9e3779b97f4a7c15ull + 1;
	vs_set_warn_handler(on_warning, NULL);
	/* tmpfs when there is one: the workload's and the checks' flushes cost no fsync there. */
	snprintf(cfg.dir, sizeof(cfg.dir), "%s/vstor-crash-XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(cfg.dir)) {
		perror("mkdtemp");
		return 1;
	}
	ops = calloc(cfg.nops, sizeof(*ops));
	for (unsigned k = 0; ops && k < cfg.nops; k++)
		ops[k].begin = ops[k].end = SIZE_MAX;
	allowed = malloc((MAX_SIZE / SECTOR) * sizeof(*allowed));
	readbuf = vs_buf_alloc(1u << 20);
	if (!ops || !allowed || !readbuf)
		die("out of memory");
	if (vs_run_in_coroutine(run_all, NULL) < 0)
		die("no reactor");
	printf("crash points checked: %lu (%lu at flushes, %lu between flushes with a random "
	       "subset of unflushed writes, %lu final), qemu-img check on %lu of them, "
	       "%lu inside a snapshot operation with only OFLAG_COPIED mismatches, "
	       "%lu repaired on open (lazy_refcounts); "
	       "%zu log records, %u requests; seed %" PRIu64 ", cache %s, -o %s\n",
	       points_flush + points_random + points_final, points_flush, points_random,
	       points_final, points_qemu, points_window, opens_repaired, nentries, cfg.nops,
	       cfg.seed, cfg.cache_name, cfg.opts);
	if (!cfg.keep) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", cfg.dir);
		if (system(cmd) != 0)
			return 1;
	}
	free(ops);
	free(allowed);
	free(readbuf);
	free(entries);
	free(logbuf);
	free(flush_done);
	return 0;
}
