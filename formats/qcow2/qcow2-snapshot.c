/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 snapshot table: parsing, validation and encoding.
 *
 * Entry layout (all big-endian), each entry starting 8-byte aligned:
 *   0 l1_table_offset u64   8 l1_size u32   12 id_str_size u16
 *  14 name_size u16        16 date_sec u32  20 date_nsec u32
 *  24 vm_clock_nsec u64    32 vm_state_size u32  36 extra_data_size u32
 *  40 extra data, then the id string, then the name (neither terminated).
 */
#include "qcow2-snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Reads go through a window so a table of many small entries costs few I/Os. */
#define SN_WINDOW (64 * 1024)

struct sn_reader {
	struct vs_node *file;
	uint64_t file_size;
	bool past_eof_zero;
	uint8_t *buf;
	uint64_t buf_off;
	size_t buf_len; /* valid bytes in buf (zero-padded past EOF) */
};

static int sn_reader_fill(struct sn_reader *r, uint64_t off)
{
	uint64_t start = off & ~(uint64_t)(SN_WINDOW - 1);
	size_t n = 0;
	int ret;

	if (start < r->file_size)
		n = r->file_size - start < SN_WINDOW ? (size_t)(r->file_size - start) : SN_WINDOW;
	if (n) {
		ret = vs_node_pread(r->file, start, r->buf, n);
		if (ret < 0)
			return ret;
	}
	memset(r->buf + n, 0, SN_WINDOW - n);
	r->buf_off = start;
	r->buf_len = SN_WINDOW;
	return 0;
}

/* Copy [off, off+len) of the file into @dst. */
static int sn_read(struct sn_reader *r, uint64_t off, void *dst, size_t len)
{
	uint8_t *d = dst;
	int ret;

	if (off > UINT64_MAX - len)
		return -EINVAL;
	if (!r->past_eof_zero && off + len > r->file_size)
		return -ENODATA; /* reported as "past the end of the file" */
	while (len) {
		size_t in, chunk;

		if (!r->buf_len || off < r->buf_off || off >= r->buf_off + r->buf_len) {
			ret = sn_reader_fill(r, off);
			if (ret < 0)
				return ret;
		}
		in = (size_t)(off - r->buf_off);
		chunk = r->buf_len - in < len ? r->buf_len - in : len;
		memcpy(d, r->buf + in, chunk);
		d += chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

static void snapshot_clear(struct qcow2_snapshot *sn)
{
	free(sn->id);
	free(sn->name);
	free(sn->extra);
	memset(sn, 0, sizeof(*sn));
}

void qcow2_snapshots_free(struct qcow2_snapshot *sn, unsigned n)
{
	if (!sn)
		return;
	for (unsigned i = 0; i < n; i++)
		snapshot_clear(&sn[i]);
	free(sn);
}

void qcow2_snapshot_table_free(struct qcow2_snapshot_table *t)
{
	if (!t)
		return;
	qcow2_snapshots_free(t->sn, t->nb);
	memset(t, 0, sizeof(*t));
}

static char *sn_read_string(struct sn_reader *r, uint64_t off, uint16_t len, int *ret)
{
	char *s = malloc((size_t)len + 1);

	if (!s) {
		*ret = -ENOMEM;
		return NULL;
	}
	*ret = sn_read(r, off, s, len);
	if (*ret < 0) {
		free(s);
		return NULL;
	}
	s[len] = '\0';
	return s;
}

static uint64_t align8(uint64_t v)
{
	return (v + 7) & ~(uint64_t)7;
}

int qcow2_snapshot_table_read(struct vs_node *file, const struct qcow2_header *h, unsigned flags,
			      struct qcow2_snapshot_table *t, struct vs_error *err)
{
	bool repair = flags & QCOW2_SN_READ_REPAIR;
	uint64_t cluster_size = 1ull << h->cluster_bits;
	uint64_t off = h->snapshots_offset, table_len = 0;
	struct sn_reader r = {
		.file = file,
		.file_size = vs_node_size(file),
		.past_eof_zero = flags & QCOW2_SN_READ_PAST_EOF,
	};
	unsigned nb = h->nb_snapshots;
	int ret;

	memset(t, 0, sizeof(*t));
	if (!nb)
		return 0;
	if (nb > QCOW2_MAX_SNAPSHOTS)
		return vs_error_set(err, -EFBIG, "qcow2: snapshot table too large (%u entries)",
				    nb);
	if (off & (cluster_size - 1) || off > INT64_MAX - (uint64_t)nb * QCOW2_SNAPSHOT_FIXED_SIZE)
		return vs_error_set(err, -EINVAL, "qcow2: snapshot table offset invalid");
	if (!r.past_eof_zero && off + (uint64_t)nb * QCOW2_SNAPSHOT_FIXED_SIZE > r.file_size)
		return vs_error_set(err, -EINVAL,
				    "qcow2: snapshot table lies past the end of the file");

	r.buf = malloc(SN_WINDOW);
	t->sn = calloc(nb, sizeof(*t->sn));
	if (!r.buf || !t->sn) {
		ret = vs_error_set(err, -ENOMEM, "qcow2: out of memory reading the snapshot table");
		goto fail;
	}

	for (unsigned i = 0; i < nb; i++) {
		struct qcow2_snapshot *sn = &t->sn[i];
		uint8_t e[QCOW2_SNAPSHOT_FIXED_SIZE];
		uint64_t entry_off = off;
		uint32_t extra_size, keep_extra;

		off = align8(off);
		table_len = align8(table_len);
		ret = sn_read(&r, off, e, sizeof(e));
		if (ret < 0)
			goto io_fail;
		off += sizeof(e);
		t->nb = i + 1; /* so a failure frees what this entry holds */

		sn->l1_table_offset = vs_be64(e + 0);
		sn->l1_size = vs_be32(e + 8);
		sn->id_len = vs_be16(e + 12);
		sn->name_len = vs_be16(e + 14);
		sn->date_sec = vs_be32(e + 16);
		sn->date_nsec = vs_be32(e + 20);
		sn->vm_clock_nsec = vs_be64(e + 24);
		sn->vm_state_size32 = vs_be32(e + 32);
		extra_size = vs_be32(e + 36);

		keep_extra = extra_size;
		if (extra_size > QCOW2_MAX_SNAPSHOT_EXTRA_DATA) {
			if (!repair) {
				ret = vs_error_set(
					err, -EFBIG,
					"qcow2: too much extra metadata in snapshot table "
					"entry %u (%u bytes)",
					i, extra_size);
				goto fail;
			}
			/* Keep what fits; the caller rewrites the table. */
			keep_extra = QCOW2_MAX_SNAPSHOT_EXTRA_DATA;
			t->extra_truncated++;
		}
		if (keep_extra) {
			sn->extra = malloc(keep_extra);
			if (!sn->extra) {
				ret = vs_error_set(err, -ENOMEM, "qcow2: out of memory");
				goto fail;
			}
			ret = sn_read(&r, off, sn->extra, keep_extra);
			if (ret < 0)
				goto io_fail;
		}
		sn->extra_size = keep_extra;
		off += extra_size;

		sn->vm_state_size = sn->vm_state_size32;
		if (keep_extra >= QCOW2_SN_EXTRA_VM_STATE_SIZE + 8)
			sn->vm_state_size = vs_be64(sn->extra + QCOW2_SN_EXTRA_VM_STATE_SIZE);
		sn->disk_size = h->size & ~(uint64_t)511;
		if (keep_extra >= QCOW2_SN_EXTRA_DISK_SIZE + 8)
			sn->disk_size = vs_be64(sn->extra + QCOW2_SN_EXTRA_DISK_SIZE);
		sn->icount = UINT64_MAX;
		if (keep_extra >= QCOW2_SN_EXTRA_ICOUNT + 8)
			sn->icount = vs_be64(sn->extra + QCOW2_SN_EXTRA_ICOUNT);

		sn->id = sn_read_string(&r, off, sn->id_len, &ret);
		if (!sn->id)
			goto io_fail;
		off += sn->id_len;
		sn->name = sn_read_string(&r, off, sn->name_len, &ret);
		if (!sn->name)
			goto io_fail;
		off += sn->name_len;

		table_len += QCOW2_SNAPSHOT_FIXED_SIZE + (uint64_t)keep_extra + sn->id_len +
			     sn->name_len;
		if (table_len > QCOW2_MAX_SNAPSHOTS_SIZE) {
			if (!repair) {
				ret = vs_error_set(err, -EFBIG,
						   "qcow2: snapshot table is too big (%u entries "
						   "overhang)",
						   nb - i);
				goto fail;
			}
			/*
			 * Drop this entry and the rest: that leaks their
			 * clusters, which the refcount repair then frees.
			 */
			t->nb_dropped = nb - i;
			snapshot_clear(sn);
			t->nb = i;
			off = entry_off;
			break;
		}
	}
	t->size = off - h->snapshots_offset;
	free(r.buf);
	return 0;

io_fail:
	if (ret == -ENODATA) {
		ret = vs_error_set(err, -EINVAL,
				   "qcow2: snapshot table lies past the end of the file");
	} else {
		vs_error_setf_errno(err, ret, "qcow2: failed to read the snapshot table");
	}
fail:
	free(r.buf);
	qcow2_snapshot_table_free(t);
	return ret;
}

int qcow2_snapshots_read(struct vs_node *file, const struct qcow2_header *h,
			 struct qcow2_snapshot **out, unsigned *n, struct vs_error *err)
{
	struct qcow2_snapshot_table t;
	int ret;

	*out = NULL;
	*n = 0;
	ret = qcow2_snapshot_table_read(file, h, 0, &t, err);
	if (ret < 0)
		return ret;
	*out = t.sn;
	*n = t.nb;
	return 0;
}

int qcow2_snapshot_check_l1(const struct qcow2_header *h, const struct qcow2_snapshot *sn,
			    uint64_t file_size, struct vs_error *err)
{
	uint64_t cluster_size = 1ull << h->cluster_bits;
	uint64_t bytes = (uint64_t)sn->l1_size * 8;

	if (sn->l1_size > QCOW2_MAX_L1_SIZE / 8)
		return vs_error_set(err, -EFBIG, "qcow2: snapshot '%s': L1 table too large (%u)",
				    sn->name, sn->l1_size);
	if (sn->l1_table_offset & (cluster_size - 1))
		return vs_error_set(err, -EINVAL,
				    "qcow2: snapshot '%s': L1 table offset %#llx unaligned",
				    sn->name, (unsigned long long)sn->l1_table_offset);
	if (bytes && (sn->l1_table_offset > file_size || bytes > file_size - sn->l1_table_offset))
		return vs_error_set(err, -EINVAL,
				    "qcow2: snapshot '%s': L1 table lies past the end of the file",
				    sn->name);
	return 0;
}

static uint64_t entry_extra_size(const struct qcow2_snapshot *sn)
{
	return sn->extra_size > QCOW2_SN_EXTRA_KNOWN ? sn->extra_size : QCOW2_SN_EXTRA_KNOWN;
}

uint64_t qcow2_snapshots_encoded_size(const struct qcow2_snapshot *sn, unsigned n)
{
	uint64_t size = 0;

	for (unsigned i = 0; i < n; i++) {
		size = align8(size);
		size += QCOW2_SNAPSHOT_FIXED_SIZE + entry_extra_size(&sn[i]) + sn[i].id_len +
			sn[i].name_len;
	}
	return size;
}

void qcow2_snapshots_encode(const struct qcow2_snapshot *sn, unsigned n, uint8_t *buf)
{
	uint64_t off = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = &sn[i];
		uint32_t extra = (uint32_t)entry_extra_size(s);
		uint8_t *e;

		off = align8(off);
		e = buf + off;
		vs_put_be64(e + 0, s->l1_table_offset);
		vs_put_be32(e + 8, s->l1_size);
		vs_put_be16(e + 12, s->id_len);
		vs_put_be16(e + 14, s->name_len);
		vs_put_be32(e + 16, s->date_sec);
		vs_put_be32(e + 20, s->date_nsec);
		vs_put_be64(e + 24, s->vm_clock_nsec);
		/*
		 * A VM state too big for 32 bits is written as 0 there, so an
		 * old reader sees a disk-only snapshot instead of a cut one.
		 */
		vs_put_be32(e + 32,
			    s->vm_state_size <= UINT32_MAX ? (uint32_t)s->vm_state_size : 0);
		vs_put_be32(e + 36, extra);
		e += QCOW2_SNAPSHOT_FIXED_SIZE;
		if (s->extra_size)
			memcpy(e, s->extra, s->extra_size);
		vs_put_be64(e + QCOW2_SN_EXTRA_VM_STATE_SIZE, s->vm_state_size);
		vs_put_be64(e + QCOW2_SN_EXTRA_DISK_SIZE, s->disk_size);
		vs_put_be64(e + QCOW2_SN_EXTRA_ICOUNT, s->icount);
		e += extra;
		memcpy(e, s->id, s->id_len);
		e += s->id_len;
		memcpy(e, s->name, s->name_len);
		off += QCOW2_SNAPSHOT_FIXED_SIZE + extra + s->id_len + s->name_len;
	}
}

static void copy_cut(char *dst, size_t dstsz, const char *src)
{
	size_t n = strlen(src);

	if (n >= dstsz)
		n = dstsz - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void qcow2_snapshot_to_info(const struct qcow2_snapshot *sn, struct vs_snapshot_info *info)
{
	memset(info, 0, sizeof(*info));
	copy_cut(info->id, sizeof(info->id), sn->id ? sn->id : "");
	copy_cut(info->name, sizeof(info->name), sn->name ? sn->name : "");
	info->vm_state_size = sn->vm_state_size;
	info->date_sec = sn->date_sec;
	info->date_nsec = sn->date_nsec;
	info->vm_clock_nsec = sn->vm_clock_nsec;
	info->icount = sn->icount;
}
