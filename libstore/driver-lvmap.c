/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The lvmap protocol driver: an LVM logical volume read and written in user
 * space through its physical volumes, for hosts without device-mapper.
 *
 *   lvmap:LOCKFILE|OFFSET+LENGTH@PV|OFFSET+LENGTH@PV...
 *
 * Each OFFSET+LENGTH@PV is one linear segment, in LV order: LENGTH bytes of
 * the LV at byte OFFSET of physical volume PV (the logical backend computes
 * them from lvs/pvs reports: pe_start + first PE x extent size). LOCKFILE is
 * LVM's VG lock file (LOCKING_DIR/V_VGNAME): the node holds it shared with
 * flock, as LVM's own readers do, for as long as it is open, so no lvresize,
 * lvremove or pvmove (which take it exclusive) moves the extents under it.
 * An empty LOCKFILE takes no lock.
 */
#include "driver.h"
#include "iov.h"
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LVMAP_MAX_SEGS 256
#define LVMAP_MAX_IOV 64
#define LVMAP_LOCK_WAIT_NS (10ull * 1000000000ull)

struct lvmap_seg {
	uint64_t lv_off; /* start in the LV */
	uint64_t pv_off;
	uint64_t len;
	int fd; /* borrowed from the PV table */
};

struct lvmap_pv {
	char *path;
	int fd;
};

struct lvmap_state {
	int lock_fd;
	int lv_lock_fd; /* the writer lock of this LV (QEMU's byte layout) */
	struct lvmap_seg segs[LVMAP_MAX_SEGS];
	unsigned nsegs;
	struct lvmap_pv pvs[LVMAP_MAX_SEGS];
	unsigned npvs;
};

static bool lvmap_is_uri(const char *filename)
{
	return !strncmp(filename, "lvmap:", 6);
}

/*
 * Take LVM's VG lock shared, as lvm's own flock code does: open (creating)
 * the file, flock it, and check the path still names the locked inode (LVM
 * unlinks lock files it releases while nobody holds them).
 */
static int lvmap_lock(const char *path, int *out, struct vs_error *err)
{
	uint64_t waited = 0;

	for (;;) {
		struct stat a, b;
		int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (fd < 0)
			return vs_error_setf_errno(err, -errno, "Could not open the LVM lock '%s'",
						   path);
		if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
			if (stat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_ino == b.st_ino &&
			    a.st_dev == b.st_dev) {
				*out = fd;
				return 0;
			}
			close(fd); /* unlinked meanwhile: take the new file */
			continue;
		}
		close(fd);
		if (errno != EWOULDBLOCK)
			return vs_error_setf_errno(err, -errno, "Could not lock '%s'", path);
		if (waited >= LVMAP_LOCK_WAIT_NS)
			return vs_error_set(err, -EBUSY,
					    "The volume group is locked by an LVM command ('%s'); "
					    "try again",
					    path);
		vs_co_sleep_ns(20000000);
		waited += 20000000;
	}
}

static int lvmap_pv_fd(struct lvmap_state *s, const char *path, size_t len, int flags,
		       struct vs_error *err)
{
	for (unsigned i = 0; i < s->npvs; i++)
		if (strlen(s->pvs[i].path) == len && !strncmp(s->pvs[i].path, path, len))
			return s->pvs[i].fd;
	if (s->npvs == LVMAP_MAX_SEGS)
		return vs_error_set(err, -E2BIG, "Too many physical volumes");
	struct lvmap_pv *pv = &s->pvs[s->npvs];

	pv->path = strndup(path, len);
	if (!pv->path)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	pv->fd = open(pv->path, flags | O_CLOEXEC);
	if (pv->fd < 0) {
		int e = -errno;

		vs_error_setf_errno(err, e, "Could not open physical volume '%s'", pv->path);
		free(pv->path);
		return e;
	}
	s->npvs++;
	return pv->fd;
}

static void lvmap_close(struct vs_node *node)
{
	struct lvmap_state *s = node->opaque;

	for (unsigned i = 0; i < s->npvs; i++) {
		close(s->pvs[i].fd);
		free(s->pvs[i].path);
	}
	s->npvs = 0;
	s->nsegs = 0;
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* drops the flock */
	s->lock_fd = -1;
	if (s->lv_lock_fd >= 0)
		close(s->lv_lock_fd); /* drops the OFD locks */
	s->lv_lock_fd = -1;
}

/*
 * Writers of one LV exclude each other like writers of one image file: OFD
 * locks in QEMU's byte layout on a lock file beside LVM's VG lock, named by
 * the LV's first extent on its PV (no two LVs share an extent).
 */
static int lvmap_lv_lock(struct lvmap_state *s, const char *vglock, const struct vs_open_opts *opts,
			 struct vs_error *err)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a of the first PV's path */
	unsigned perm = VS_PERM_CONSISTENT_READ, shared;
	char path[4200];

	for (const char *c = s->pvs[0].path; *c; c++)
		h = (h ^ (uint8_t)*c) * 1099511628211ull;
	snprintf(path, sizeof(path), "%s.vstor-%016" PRIx64 "-%" PRIu64, vglock, h,
		 s->segs[0].pv_off);
	s->lv_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lv_lock_fd < 0)
		return vs_error_setf_errno(err, -errno, "Could not open the volume lock '%s'",
					   path);
	if (!opts->read_only)
		perm |= VS_PERM_WRITE | VS_PERM_RESIZE;
	shared = opts->force_share ? VS_PERM_ALL :
				     VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED;
	if (opts->exclusive && !opts->force_share)
		shared = 0;
	return vs_lock_acquire(s->lv_lock_fd, perm, shared, opts->filename, err);
}

static int lvmap_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct lvmap_state *s = node->opaque;
	const char *p = opts->filename + 6, *bar = strchr(p, '|');
	int flags = opts->read_only ? O_RDONLY : O_RDWR;
	uint64_t lv_off = 0;
	char lock[4096];
	int ret;

	s->lock_fd = -1;
	s->lv_lock_fd = -1;
	if (!lvmap_is_uri(opts->filename) || !bar || (size_t)(bar - p) >= sizeof(lock))
		return vs_error_set(err, -EINVAL,
				    "Invalid lvmap URI '%s' (lvmap:LOCK|OFF+LEN@PV|...)",
				    opts->filename);
	if (node->knobs.direct)
		flags |= O_DIRECT;
	memcpy(lock, p, (size_t)(bar - p));
	lock[bar - p] = '\0';
	if (lock[0]) {
		ret = lvmap_lock(lock, &s->lock_fd, err);
		if (ret < 0)
			return ret;
	}
	for (p = bar + 1; *p;) {
		const char *end = strchr(p, '|'), *at;
		char *q;
		struct lvmap_seg *seg;
		int fd;

		if (!end)
			end = p + strlen(p);
		at = memchr(p, '@', (size_t)(end - p));
		if (s->nsegs == LVMAP_MAX_SEGS) {
			ret = vs_error_set(err, -E2BIG, "Too many segments in '%s'",
					   opts->filename);
			goto fail;
		}
		seg = &s->segs[s->nsegs];
		errno = 0;
		seg->pv_off = strtoull(p, &q, 10);
		if (!at || *q != '+' || errno)
			goto bad;
		seg->len = strtoull(q + 1, &q, 10);
		if (q != at || errno || seg->len == 0 || at + 1 == end)
			goto bad;
		fd = lvmap_pv_fd(s, at + 1, (size_t)(end - at - 1), flags, err);
		if (fd < 0) {
			ret = fd;
			goto fail;
		}
		seg->fd = fd;
		seg->lv_off = lv_off;
		lv_off += seg->len;
		s->nsegs++;
		p = *end ? end + 1 : end;
	}
	if (!s->nsegs)
		goto bad;
	if (lock[0]) {
		ret = lvmap_lv_lock(s, lock, opts, err);
		if (ret < 0)
			goto fail;
	}
	node->size = lv_off;
	node->limits.request_align = node->knobs.direct ? 512 : 1;
	node->limits.mem_align = node->knobs.direct ? 4096 : 1;
	node->limits.max_transfer = 16u << 20;
	node->caps = VS_CAP_FLUSH;
	return 0;
bad:
	ret = vs_error_set(err, -EINVAL, "Invalid lvmap segment list in '%s'", opts->filename);
fail:
	lvmap_close(node);
	return ret;
}

/* The segment holding LV byte @off. */
static const struct lvmap_seg *lvmap_find(const struct lvmap_state *s, uint64_t off)
{
	unsigned lo = 0, hi = s->nsegs;

	while (lo + 1 < hi) {
		unsigned mid = (lo + hi) / 2;

		if (s->segs[mid].lv_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &s->segs[lo];
}

static int lvmap_rw(struct lvmap_state *s, struct vs_req *req, bool write)
{
	uint64_t done = 0;

	while (done < req->len) {
		uint64_t off = req->offset + done;
		const struct lvmap_seg *seg = lvmap_find(s, off);
		uint64_t in = off - seg->lv_off;
		uint64_t n = seg->len - in < req->len - done ? seg->len - in : req->len - done;
		struct iovec part[LVMAP_MAX_IOV];
		int np = vs_iov_slice(part, LVMAP_MAX_IOV, req->iov, req->niov, done, n), ret;

		if (np < 0)
			return np;
		if (write)
			ret = vs_aio_pwritev_full(seg->fd, part, np, seg->pv_off + in, n,
						  (req->flags & VS_REQ_FUA) ? RWF_DSYNC : 0);
		else
			ret = vs_aio_preadv_full(seg->fd, part, np, seg->pv_off + in, n);
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

static int lvmap_submit(struct vs_node *node, struct vs_req *req)
{
	struct lvmap_state *s = node->opaque;

	switch (req->op) {
	case VS_OP_READ:
		return lvmap_rw(s, req, false);
	case VS_OP_WRITE:
		return lvmap_rw(s, req, true);
	case VS_OP_FLUSH:
		if (!node->knobs.flush_to_disk)
			return 0;
		for (unsigned i = 0; i < s->npvs; i++) {
			int ret = vs_aio_fsync(s->pvs[i].fd, true);

			if (ret < 0)
				return ret;
		}
		return 0;
	case VS_OP_BLOCK_STATUS:
		req->bs_pnum = req->len;
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED;
		return 0;
	case VS_OP_DISCARD:
	case VS_OP_WRITE_ZEROES:
		return -ENOTSUP;
	}
	return -EINVAL;
}

static int lvmap_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			  bool exact, struct vs_error *err)
{
	(void)prealloc;
	if (size > node->size || (exact && size != node->size))
		return vs_error_set(
			err, -ENOTSUP,
			"Cannot resize a mapped logical volume: resize the LV with LVM");
	return 0;
}

/* The LV exists: "create" (what formats do first) checks it is large enough. */
static int lvmap_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
			unsigned flags, struct vs_error *err)
{
	uint64_t have = 0;
	int ret = vs_protocol_create_existing(filename, size, opts, nopts, "on a mapped LV", &have,
					      err);

	(void)flags;
	if (ret == -ENOSPC)
		ret = vs_error_set(err, -ENOSPC, "The logical volume is smaller than %llu bytes",
				   (unsigned long long)size);
	return ret;
}

const struct vs_driver vs_driver_lvmap = {
	.name = "lvmap",
	.prefixes = (const char *const[]){ "lvmap:", NULL },
	.state_size = sizeof(struct lvmap_state),
	.open = lvmap_open,
	.close = lvmap_close,
	.submit = lvmap_submit,
	.truncate = lvmap_truncate,
	.create = lvmap_create,
	.supported_write_flags = VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_lvmap)
