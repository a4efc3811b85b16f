/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * log-writes:LOG:INNER, a test protocol driver (the idea of Linux's
 * dm-log-writes and QEMU's blklogwrites) that passes requests on to the
 * protocol node INNER and appends every completed write, discard,
 * write-zeroes, flush and truncate to the file LOG (created or truncated at
 * open; its name has no ':'). A crash replayer rebuilds the image as it was
 * at any point of the log (tests/unit/reliability/crash-replay.c).
 *
 * The log, all integers little-endian:
 *
 *   header, 32 bytes:  "VSLOGWR1" | u32 version (1) | u32 header size (32)
 *                      | u64 flags | u64 reserved (0)
 *     flags bit 0: flushes were volatile (cache=unsafe: nothing below
 *     sees them, so no point of the log is durable)
 *   records, each:     u32 type | u32 flags | u64 seq | u64 offset | u64 len
 *                      [len bytes of data, WRITE only]
 *     type  1 WRITE, 2 DISCARD, 3 WRITE_ZEROES, 4 FLUSH,
 *           5 MARK (offset = a value the test chose, len = 0),
 *           6 TRUNCATE (offset = new size, len = 0)
 *     flags bit 0: FUA, bit 1: MAY_UNMAP
 *     seq   0, 1, 2, ... in the order the requests completed
 *
 * A request is recorded when it completed successfully, before the
 * completion is returned to the layer above; failed requests are not
 * recorded. Discard is recorded as done (INNER reads zeroes after it for
 * the file and memory drivers).
 */
#include "bytes.h"
#include "driver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LW_MAGIC "VSLOGWR1"
#define LW_VERSION 1
#define LW_HDR_SIZE 32
#define LW_REC_SIZE 32
#define LW_FLAG_VOLATILE_FLUSH 0x1

enum {
	LW_WRITE = 1,
	LW_DISCARD = 2,
	LW_WRITE_ZEROES = 3,
	LW_FLUSH = 4,
	LW_MARK = 5,
	LW_TRUNCATE = 6,
};

struct log_writes_state {
	int fd;
	uint64_t seq;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Blocking appends: a test driver, simplicity over speed. */
static int lw_append(struct log_writes_state *s, uint32_t type, uint32_t flags, uint64_t offset,
		     uint64_t len, const struct iovec *iov, int niov)
{
	uint8_t rec[LW_REC_SIZE];
	int ret;

	vs_put_le32(rec, type);
	vs_put_le32(rec + 4, flags);
	vs_put_le64(rec + 8, s->seq++);
	vs_put_le64(rec + 16, offset);
	vs_put_le64(rec + 24, len);
	ret = write_all(s->fd, rec, sizeof(rec));
	for (int i = 0; ret == 0 && type == LW_WRITE && i < niov && len; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : (size_t)len;

		ret = write_all(s->fd, iov[i].iov_base, n);
		len -= n;
	}
	return ret;
}

static int lw_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct log_writes_state *s = node->opaque;
	const char *spec = opts->filename + strlen("log-writes:");
	const char *colon = strchr(spec, ':');
	uint8_t hdr[LW_HDR_SIZE] = { 0 };
	char *path;
	int ret;

	s->fd = -1;
	if (strncmp(opts->filename, "log-writes:", 11) || !colon || colon == spec)
		return vs_error_set(err, -EINVAL,
				    "Invalid log-writes URI '%s' (log-writes:LOG:INNER)",
				    opts->filename);
	path = strndup(spec, (size_t)(colon - spec));
	if (!path)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (!opts->read_only) {
		s->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
		if (s->fd < 0) {
			ret = vs_error_setf_errno(err, -errno, "Could not create log '%s'", path);
			free(path);
			return ret;
		}
	}
	free(path);
	ret = vs_filter_open_inner(node, colon + 1, opts, err);
	if (ret == 0 && s->fd >= 0) {
		memcpy(hdr, LW_MAGIC, 8);
		vs_put_le32(hdr + 8, LW_VERSION);
		vs_put_le32(hdr + 12, LW_HDR_SIZE);
		vs_put_le64(hdr + 16, node->knobs.flush_to_disk ? 0 : LW_FLAG_VOLATILE_FLUSH);
		ret = write_all(s->fd, hdr, sizeof(hdr));
		if (ret < 0) {
			vs_error_setf_errno(err, ret, "Could not write the log");
			vs_node_close(node->file);
			node->file = NULL;
		}
	}
	if (ret < 0 && s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	return ret;
}

static void lw_close(struct vs_node *node)
{
	struct log_writes_state *s = node->opaque;

	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static int lw_submit(struct vs_node *node, struct vs_req *req)
{
	struct log_writes_state *s = node->opaque;
	uint32_t flags = 0;
	int ret = vs_filter_submit(node, req);

	if (ret < 0 || s->fd < 0)
		return ret;
	if (req->flags & VS_REQ_FUA)
		flags |= 1;
	if (req->flags & VS_REQ_MAY_UNMAP)
		flags |= 2;
	switch (req->op) {
	case VS_OP_WRITE:
		return lw_append(s, LW_WRITE, flags, req->offset, req->len, req->iov, req->niov);
	case VS_OP_DISCARD:
		return lw_append(s, LW_DISCARD, 0, req->offset, req->len, NULL, 0);
	case VS_OP_WRITE_ZEROES:
		return lw_append(s, LW_WRITE_ZEROES, flags, req->offset, req->len, NULL, 0);
	case VS_OP_FLUSH:
		return lw_append(s, LW_FLUSH, 0, 0, 0, NULL, 0);
	default:
		return ret;
	}
}

static int lw_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
		       struct vs_error *err)
{
	struct log_writes_state *s = node->opaque;
	int ret = vs_filter_truncate(node, size, prealloc, exact, err);

	if (ret == 0 && s->fd >= 0) {
		ret = lw_append(s, LW_TRUNCATE, 0, node->size, 0, NULL, 0);
		if (ret < 0)
			vs_error_setf_errno(err, ret, "Could not write the log");
	}
	return ret;
}

int vs_log_writes_mark(struct vs_node *node, uint64_t value)
{
	struct log_writes_state *s;

	if (!node || node->drv != &vs_driver_log_writes)
		return -EINVAL;
	s = node->opaque;
	if (s->fd < 0)
		return -EBADF;
	return lw_append(s, LW_MARK, 0, value, 0, NULL, 0);
}

const struct vs_driver vs_driver_log_writes = {
	.name = "log-writes",
	.prefixes = (const char *const[]){ "log-writes:", NULL },
	.state_size = sizeof(struct log_writes_state),
	.open = lw_open,
	.close = lw_close,
	.submit = lw_submit,
	.truncate = lw_truncate,
	.allocated_size = vs_filter_allocated_size,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_log_writes)
