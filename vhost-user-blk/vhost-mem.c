/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The memory table of the vhost-user back end: the guest memory regions of a
 * SET_MEM_TABLE message, checked against their files and mapped.
 */
#include "vhost-user-int.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

void vu_mem_unmap(struct vq_mem *m)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->r[i].map)
			munmap(m->r[i].map, m->r[i].map_len);
	m->n = 0;
}

/*
 * Map the regions of a SET_MEM_TABLE payload (@p, @size bytes) with their
 * @fds into @m. The fds stay the caller's.
 */
int vu_mem_map(struct vs_vhost_blk *b, struct vq_mem *m, const uint8_t *p, uint32_t size,
	       const int *fds, unsigned nfds)
{
	uint32_t n;

	if (size < 8)
		return -EINVAL;
	n = get32(p);
	if (n == 0 || n > VQ_MAX_REGIONS || size != 8 + 32 * n || nfds != n) {
		vu_log(b, "SET_MEM_TABLE: %u regions, %u bytes, %u fds", n, size, nfds);
		return -EINVAL;
	}
	m->n = 0;
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *e = p + 8 + 32 * i;
		uint64_t gpa = get64(e), len = get64(e + 8), uva = get64(e + 16);
		uint64_t off = get64(e + 24);
		struct stat st;
		void *map;

		if (!len || gpa + len < gpa || uva + len < uva || off + len < off ||
		    off + len > (uint64_t)SIZE_MAX) {
			vu_log(b, "SET_MEM_TABLE: region %u has a bad range", i);
			goto fail;
		}
		/* Mapping past the end of the file would fault on access. */
		if (fstat(fds[i], &st) < 0 ||
		    (S_ISREG(st.st_mode) && (uint64_t)st.st_size < off + len)) {
			vu_log(b, "SET_MEM_TABLE: region %u is larger than its file", i);
			goto fail;
		}
		map = mmap(NULL, (size_t)(off + len), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_NORESERVE, fds[i], 0);
		if (map == MAP_FAILED) {
			vu_log(b, "SET_MEM_TABLE: cannot map region %u: %s", i, strerror(errno));
			goto fail;
		}
		m->r[i] = (struct vq_region){ .gpa = gpa,
					      .size = len,
					      .uva = uva,
					      .host = (uint8_t *)map + off,
					      .map = map,
					      .map_len = (size_t)(off + len) };
		m->n = i + 1;
	}
	return 0;

fail:
	vu_mem_unmap(m);
	return -EINVAL;
}
