/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 header changes of an existing image: the backing file name and
 * format (rebase, set_backing).
 *
 * The header cluster is rebuilt from the fixed header as it is in memory,
 * a backing format extension when there is one, every other extension of
 * the file kept byte for byte in its order, the end marker and the backing
 * file name, and written in one request followed by a flush.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Lock held. Rewrite the header cluster with backing name @bname and
 * format @bfmt (NULL or "" for none). On success s->backing_file and
 * s->backing_fmt follow.
 */
static int rewrite_header_cluster(struct vs_node *node, const char *bname, const char *bfmt,
				  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t fsize = vs_node_size(node->file);
	size_t blen = bname ? strlen(bname) : 0, flen = bfmt ? strlen(bfmt) : 0;
	uint64_t old_end, in, out;
	uint8_t *old = NULL, *buf = NULL;
	struct qcow2_header h = s->hdr;
	int ret;

	if (blen > QCOW2_MAX_BACKING_NAME)
		return vs_error_set(err, -EINVAL, "Backing file name too long");
	if (flen >= sizeof(s->backing_fmt))
		return vs_error_set(err, -EINVAL, "Backing format name too long");
	old = vs_buf_zalloc(cs);
	buf = vs_buf_zalloc(cs);
	if (!old || !buf) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = vs_node_pread(node->file, 0, old, fsize < cs ? (size_t)fsize : (size_t)cs);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not read the header of '%s'", node->filename);
		goto out;
	}
	memcpy(buf, s->hdr_raw, h.header_length);
	out = h.header_length;
	if (flen) {
		qcow2_put_be32(buf + out, QCOW2_EXT_BACKING_FORMAT);
		qcow2_put_be32(buf + out + 4, (uint32_t)flen);
		memcpy(buf + out + 8, bfmt, flen);
		out += 8 + ((flen + 7) & ~(size_t)7);
	}
	/* Copy the other extensions as they are. */
	old_end = s->hdr.backing_file_offset ? s->hdr.backing_file_offset : cs;
	if (old_end > cs)
		old_end = cs;
	in = h.header_length;
	while (in + 8 <= old_end) {
		uint32_t type = qcow2_be32(old + in);
		uint64_t elen = qcow2_be32(old + in + 4);
		uint64_t step = 8 + ((elen + 7) & ~7ull);

		if (type == QCOW2_EXT_END || step > old_end - in)
			break;
		if (type != QCOW2_EXT_BACKING_FORMAT) {
			if (out + step + 8 + blen > cs) {
				ret = vs_error_set(err, -ENOSPC,
						   "The header extensions and the backing file "
						   "name do not fit in the header cluster");
				goto out;
			}
			memcpy(buf + out, old + in, step);
			out += step;
		}
		in += step;
	}
	out += 8; /* end marker: zeroes */
	if (out + blen > cs) {
		ret = vs_error_set(err, -ENOSPC,
				   "The backing file name does not fit in the header cluster");
		goto out;
	}
	if (blen) {
		memcpy(buf + out, bname, blen);
		h.backing_file_offset = out;
		h.backing_file_size = (uint32_t)blen;
	} else {
		h.backing_file_offset = 0;
		h.backing_file_size = 0;
	}
	qcow2_header_encode(&h, buf);
	ret = vs_node_pwrite(node->file, 0, buf, (size_t)cs, 0);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not write the header of '%s'", node->filename);
		goto out;
	}
	s->hdr = h;
	memcpy(s->hdr_raw, buf, h.header_length);
	memcpy(s->backing_file, bname ? bname : "", blen + 1);
	memcpy(s->backing_fmt, bfmt ? bfmt : "", flen + 1);
out:
	free(old);
	free(buf);
	return ret;
}

int qcow2_set_backing(struct vs_node *node, const char *backing, const char *fmt,
		      struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	if (backing && !backing[0])
		backing = NULL;
	if (!backing && fmt && fmt[0])
		return vs_error_set(err, -EINVAL,
				    "Backing format cannot be used without backing file");
	vs_co_mutex_lock(&s->lock);
	if (s->corrupt) {
		ret = vs_error_set(err, -EIO, "'%s' is marked corrupt", node->filename);
	} else {
		ret = qcow2_flush_metadata(node);
		if (ret < 0)
			vs_error_setf_errno(err, ret, "Could not write back the metadata of '%s'",
					    node->filename);
		else
			ret = rewrite_header_cluster(node, backing, fmt, err);
	}
	vs_co_mutex_unlock(&s->lock);
	return ret;
}
