/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The file protocol driver: regular files and block devices on io_uring.
 * Reads and writes are readv/writev SQEs (RWF_DSYNC for FUA), flush is
 * fdatasync, discard and write-zeroes are fallocate, block status is
 * SEEK_DATA/SEEK_HOLE. O_DIRECT when the cache mode asks for it.
 */
#include "driver.h"
#include "lock.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

struct file_state {
	int fd;
	bool is_block;
	bool no_punch;
	bool no_zero_range;
};

/* The request alignment O_DIRECT needs on this file: 512 if a 512-byte read works. */
static uint32_t file_probe_dio_align(int fd, bool is_block)
{
	void *buf;
	uint32_t align = 4096;
	int ssz;

	if (is_block && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
		return (uint32_t)ssz;
	if (posix_memalign(&buf, 4096, 4096))
		return align;
	if (pread(fd, buf, 512, 0) >= 0)
		align = 512;
	free(buf);
	return align;
}

static int file_get_size(int fd, bool is_block, uint64_t *size)
{
	struct stat st;

	if (is_block) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0)
			return -errno;
		return 0;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int file_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct file_state *s = node->opaque;
	int flags = O_CLOEXEC | (opts->read_only ? O_RDONLY : O_RDWR);
	unsigned perm, shared;
	struct stat st;
	int ret;

	if (opts->force_share && !opts->read_only)
		return vs_error_set(err, -EINVAL,
				    "force-share (-U) is only allowed for read-only access: '%s'",
				    opts->filename);
	if (node->knobs.direct)
		flags |= O_DIRECT;
	s->fd = open(opts->filename, flags);
	if (s->fd < 0)
		return vs_error_setf_errno(err, -errno, "Could not open '%s'", opts->filename);
	if (fstat(s->fd, &st) < 0) {
		ret = vs_error_setf_errno(err, -errno, "Could not stat '%s'", opts->filename);
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = vs_error_set(err, -EISDIR, "'%s' is a directory", opts->filename);
		goto fail;
	}
	s->is_block = S_ISBLK(st.st_mode);

	perm = VS_PERM_CONSISTENT_READ;
	if (!opts->read_only)
		perm |= VS_PERM_WRITE | VS_PERM_RESIZE;
	shared = opts->force_share ? VS_PERM_ALL :
				     VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED;
	if (opts->exclusive && !opts->force_share)
		shared = 0;
	ret = vs_lock_acquire(s->fd, perm, shared, opts->filename, err);
	if (ret < 0)
		goto fail;

	ret = file_get_size(s->fd, s->is_block, &node->size);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not get the size of '%s'", opts->filename);
		goto fail;
	}
	if (node->size > VS_NODE_MAX_SIZE) {
		ret = vs_error_setf_errno(err, -EFBIG, "'%s' is %" PRIu64 " bytes, beyond %" PRIu64,
					  opts->filename, node->size, VS_NODE_MAX_SIZE);
		goto fail;
	}
	node->limits.request_align = 1;
	node->limits.mem_align = 1;
	if (node->knobs.direct) {
		node->limits.request_align = file_probe_dio_align(s->fd, s->is_block);
		node->limits.mem_align = 4096;
	}
	node->limits.max_transfer = 16u << 20;
	node->caps = VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS | VS_CAP_FLUSH;
	if (!s->is_block)
		node->caps |= VS_CAP_GROWABLE;
	return 0;

fail:
	close(s->fd);
	s->fd = -1;
	return ret;
}

static void file_close(struct vs_node *node)
{
	struct file_state *s = node->opaque;

	if (s->fd >= 0) {
		/*
		 * close() drops the OFD locks only with the last reference to
		 * the open file description, and an io_uring request the kernel
		 * has not yet put may still hold one: release them first, so
		 * that an open right after the close never meets them.
		 */
		vs_lock_release(s->fd);
		close(s->fd);
	}
	s->fd = -1;
}

static int file_block_status(struct vs_node *node, struct vs_req *req)
{
	struct file_state *s = node->opaque;
	off_t off = (off_t)req->offset, data, hole;

	req->bs_map = req->offset;
	req->bs_file = node;
	req->bs_pnum = req->len;
	req->bs_status = VS_BS_DATA | VS_BS_OFFSET_VALID | VS_BS_ALLOCATED;
	if (s->is_block)
		return 0;
	data = lseek(s->fd, off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) {
			/* Past the last data: a hole to the end. */
			req->bs_status = VS_BS_ZERO | VS_BS_OFFSET_VALID | VS_BS_ALLOCATED;
		}
		return 0; /* other errors: report data, which is always safe */
	}
	if (data > off) {
		req->bs_status = VS_BS_ZERO | VS_BS_OFFSET_VALID | VS_BS_ALLOCATED;
		if ((uint64_t)(data - off) < req->len)
			req->bs_pnum = (uint64_t)(data - off);
		return 0;
	}
	hole = lseek(s->fd, off, SEEK_HOLE);
	if (hole > off && (uint64_t)(hole - off) < req->len)
		req->bs_pnum = (uint64_t)(hole - off);
	return 0;
}

static int file_zero(struct vs_node *node, struct vs_req *req)
{
	struct file_state *s = node->opaque;
	int ret;

	if (s->is_block)
		return -ENOTSUP;
	if ((req->flags & VS_REQ_MAY_UNMAP) && !s->no_punch) {
		ret = vs_aio_fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       req->offset, req->len);
		if (ret == 0 || (ret != -EOPNOTSUPP && ret != -ENOTSUP && ret != -EINVAL))
			return ret;
		s->no_punch = true;
	}
	if (s->no_zero_range)
		return -ENOTSUP;
	ret = vs_aio_fallocate(s->fd, FALLOC_FL_ZERO_RANGE, req->offset, req->len);
	if (ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -EINVAL) {
		s->no_zero_range = true;
		return -ENOTSUP;
	}
	return ret;
}

/*
 * A large buffered request that hits the page cache is a memory copy, and
 * io_uring does it inline in io_uring_enter on the reactor's core (even
 * IOSQE_ASYNC gave no parallelism here: measured on kernel 6.18). Copies of
 * 256 KiB and more go to the worker pool instead, so several run at once on
 * other cores, as qemu-img's thread pool does. O_DIRECT and small requests
 * stay on the ring.
 */
#define FILE_WORKER_MIN (256u << 10)

struct file_job {
	bool write;
	int fd;
	const struct iovec *iov;
	int niov;
	uint64_t offset;
	uint64_t len;
	int rw_flags;
	int ret;
};

static void file_job_run(void *opaque)
{
	struct file_job *j = opaque;
	uint64_t done = 0;
	struct iovec local[64];
	int first = 0, n = j->niov < 64 ? j->niov : 64;

	memcpy(local, j->iov, sizeof(*local) * (size_t)n);
	j->ret = 0;
	while (done < j->len && first < n) {
		ssize_t r = j->write ? pwritev2(j->fd, local + first, n - first,
						(off_t)(j->offset + done), j->rw_flags) :
				       preadv(j->fd, local + first, n - first,
					      (off_t)(j->offset + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			j->ret = -errno;
			return;
		}
		if (r == 0) {
			if (j->write) {
				j->ret = -EIO;
				return;
			}
			/* End of file: the rest reads as zeroes. */
			for (int i = first; i < n; i++)
				memset(local[i].iov_base, 0, local[i].iov_len);
			return;
		}
		done += (uint64_t)r;
		while (first < n && (size_t)r >= local[first].iov_len) {
			r -= (ssize_t)local[first].iov_len;
			first++;
		}
		if (first < n) {
			local[first].iov_base = (char *)local[first].iov_base + r;
			local[first].iov_len -= (size_t)r;
		}
	}
}

/* Whether the request is copied on the worker pool. */
static bool file_use_worker(const struct vs_node *node, const struct vs_req *req)
{
	return !node->knobs.direct && req->len >= FILE_WORKER_MIN && req->niov <= 64;
}

static int file_rw_worker(struct file_state *s, struct vs_req *req, bool write, int rw_flags)
{
	struct file_job j = { .write = write,
			      .fd = s->fd,
			      .iov = req->iov,
			      .niov = req->niov,
			      .offset = req->offset,
			      .len = req->len,
			      .rw_flags = rw_flags };

	/* Without worker threads the job runs here, synchronously: j.ret is set either way. */
	(void)vs_co_run_in_worker(file_job_run, &j);
	return j.ret;
}

/* The direct data path: bytes of the file are where they are. */
static int file_map(struct vs_node *node, uint64_t offset, uint64_t len, bool write,
		    struct vs_map *m)
{
	struct file_state *s = node->opaque;

	(void)write;
	if (offset >= node->size) {
		m->len = len;
		return 0;
	}
	m->fd = s->fd;
	m->offset = offset;
	m->len = len < node->size - offset ? len : node->size - offset;
	return 1;
}

static int file_submit(struct vs_node *node, struct vs_req *req)
{
	struct file_state *s = node->opaque;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		if (file_use_worker(node, req))
			return file_rw_worker(s, req, false, 0);
		return vs_aio_preadv_full(s->fd, req->iov, req->niov, req->offset, req->len);
	case VS_OP_WRITE:
		if (file_use_worker(node, req))
			ret = file_rw_worker(s, req, true,
					     (req->flags & VS_REQ_FUA) ? RWF_DSYNC : 0);
		else
			ret = vs_aio_pwritev_full(s->fd, req->iov, req->niov, req->offset, req->len,
						  (req->flags & VS_REQ_FUA) ? RWF_DSYNC : 0);
		if (ret == 0 && req->offset + req->len > node->size)
			node->size = req->offset + req->len;
		return ret;
	case VS_OP_FLUSH:
		if (!node->knobs.flush_to_disk)
			return 0;
		return vs_aio_fsync(s->fd, true);
	case VS_OP_DISCARD:
		if (s->is_block || s->no_punch)
			return 0;
		ret = vs_aio_fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       req->offset, req->len);
		if (ret == -EOPNOTSUPP || ret == -ENOTSUP) {
			s->no_punch = true;
			return 0;
		}
		return ret;
	case VS_OP_WRITE_ZEROES:
		ret = file_zero(node, req);
		if (ret == 0 && req->offset + req->len > node->size)
			node->size = req->offset + req->len;
		return ret;
	case VS_OP_BLOCK_STATUS:
		return file_block_status(node, req);
	}
	return -EINVAL;
}

/* Write zeroes into [from, to) with plain writes (preallocation=full). */
static int file_fill_zeroes(int fd, uint64_t from, uint64_t to)
{
	size_t chunk = 1u << 20;
	void *buf = vs_buf_zalloc(chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (from < to) {
		size_t n = to - from < chunk ? (size_t)(to - from) : chunk;
		struct iovec iov = { buf, n };

		ret = vs_aio_pwritev_full(fd, &iov, 1, from, n, 0);
		if (ret < 0)
			break;
		from += n;
	}
	free(buf);
	return ret;
}

/*
 * Resize the file behind @fd from @old to @size bytes. Growing with
 * preallocation allocates the new part; where the filesystem has no
 * fallocate (EOPNOTSUPP: ext2/3 files, some network filesystems) 'falloc'
 * writes zeroes instead, as posix_fallocate() does for qemu-img. A growth
 * that fails (ENOSPC half way) leaves the file at its old length, so a
 * failed resize does not keep the new capacity.
 */
static int file_resize_fd(int fd, const char *name, uint64_t old, uint64_t size,
			  enum vs_prealloc prealloc, struct vs_error *err)
{
	const char *mode = vs_prealloc_name(prealloc);
	int ret = 0;

	if (prealloc == VS_PREALLOC_METADATA)
		return vs_error_set(err, -ENOTSUP,
				    "preallocation mode 'metadata' is not supported for raw files");
	if (size <= old || prealloc == VS_PREALLOC_OFF) {
		if (ftruncate(fd, (off_t)size) < 0)
			return vs_error_setf_errno(err, -errno, "Could not resize '%s'", name);
		return 0;
	}
	if (prealloc == VS_PREALLOC_FALLOC) {
		if (fallocate(fd, 0, (off_t)old, (off_t)(size - old)) < 0)
			ret = -errno;
		if (ret != -EOPNOTSUPP && ret != -ENOTSUP)
			goto out;
		ret = 0; /* no fallocate here: allocate by writing zeroes */
	}
	if (ftruncate(fd, (off_t)size) < 0)
		ret = -errno;
	else
		ret = file_fill_zeroes(fd, old, size);
out:
	if (ret < 0) {
		/* Best effort: the error reported is the allocation's, not this one's. */
		if (ftruncate(fd, (off_t)old) < 0) {
			/* the file keeps the length it reached */
		}
		return vs_error_setf_errno(err, ret, "Could not preallocate '%s' (%s)", name, mode);
	}
	return 0;
}

static int file_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
			 struct vs_error *err)
{
	struct file_state *s = node->opaque;
	int ret;

	if (s->is_block) {
		if (size > node->size || (exact && size != node->size))
			return vs_error_set(err, -ENOTSUP, "Cannot resize block device '%s'",
					    node->filename);
		return 0;
	}
	ret = file_resize_fd(s->fd, node->filename, node->size, size, prealloc, err);
	if (ret == 0)
		node->size = size;
	return ret;
}

static int file_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		       unsigned flags, struct vs_error *err)
{
	enum vs_prealloc prealloc = VS_PREALLOC_OFF;
	const struct vs_driver *proto = vs_protocol_driver_for(filename);
	struct stat st;
	int fd, ret;

	/* Formats create their file through here: a URI goes to its protocol. */
	if (proto != &vs_driver_file && proto->create)
		return proto->create(filename, size, opts, nopts, flags, err);
	for (size_t i = 0; i < nopts; i++) {
		if (!strcmp(opts[i].key, "preallocation")) {
			if (vs_prealloc_parse(opts[i].value, &prealloc) < 0 ||
			    prealloc == VS_PREALLOC_METADATA)
				return vs_error_set(err, -EINVAL,
						    "Invalid preallocation mode: '%s' (use off, "
						    "falloc or full)",
						    opts[i].value);
		} else if (strcmp(opts[i].key, "size")) {
			return vs_error_set(err, -EINVAL,
					    "Invalid parameter '%s' for the raw format",
					    opts[i].key);
		}
	}
	fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Could not create '%s'", filename);
	ret = vs_lock_acquire(fd, VS_PERM_CONSISTENT_READ | VS_PERM_WRITE | VS_PERM_RESIZE,
			      VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED, filename, err);
	if (ret < 0)
		goto out;
	if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
		ret = 0; /* a block device keeps its size; formats write over it */
		goto out;
	}
	/* Truncate only once we hold the lock, so a running VM's image is never wiped. */
	ret = file_resize_fd(fd, filename, 0, 0, VS_PREALLOC_OFF, err);
	if (ret == 0)
		ret = file_resize_fd(fd, filename, 0, size, prealloc, err);
out:
	close(fd);
	return ret;
}

static int64_t file_allocated_size(struct vs_node *node)
{
	struct file_state *s = node->opaque;
	struct stat st;

	if (fstat(s->fd, &st) < 0)
		return -errno;
	if (s->is_block)
		return (int64_t)node->size;
	return (int64_t)st.st_blocks * 512;
}

static const struct vs_create_opt_desc file_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "preallocation", "string", "Preallocation mode (allowed values: off, falloc, full)" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_file = {
	.name = "file",
	.state_size = sizeof(struct file_state),
	.open = file_open,
	.close = file_close,
	.submit = file_submit,
	.truncate = file_truncate,
	.create = file_create,
	.create_opts = file_create_opts,
	.allocated_size = file_allocated_size,
	.map = file_map,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP,
};

VS_DRIVER_REGISTER(vs_driver_file)
