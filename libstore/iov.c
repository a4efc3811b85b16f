/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* I/O buffers and vectors: allocation, and walking vectors (see iov.h). */
#include "driver.h"
#include "iov.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

uint64_t vs_iov_size(const struct iovec *iov, int niov)
{
	uint64_t s = 0;

	for (int i = 0; i < niov; i++)
		s += iov[i].iov_len;
	return s;
}

bool vs_iov_aligned(const struct iovec *iov, int niov, uint32_t align)
{
	if (align <= 1)
		return true;
	for (int i = 0; i < niov; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1))
			return false;
	return true;
}

int vs_iov_slice(struct iovec *dst, int max, const struct iovec *src, int niov, uint64_t skip,
		 uint64_t len)
{
	int n = 0;

	for (int i = 0; i < niov && len; i++) {
		size_t l = src[i].iov_len, c;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		if (n == max)
			return -E2BIG;
		c = l - skip < len ? l - (size_t)skip : (size_t)len;
		dst[n].iov_base = (uint8_t *)src[i].iov_base + skip;
		dst[n].iov_len = c;
		n++;
		len -= c;
		skip = 0;
	}
	return len ? -EINVAL : n;
}

enum iov_op { IOV_TO_BUF, IOV_FROM_BUF, IOV_FILL };

/* The walk every copy and fill shares: [@skip, @skip + @len) of @iov, piece by piece. */
static void iov_walk(const struct iovec *iov, int niov, uint64_t skip, uint64_t len, enum iov_op op,
		     uint8_t *buf, int c)
{
	for (int i = 0; i < niov && len; i++) {
		size_t l = iov[i].iov_len, n;
		uint8_t *p;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		n = l - skip < len ? l - (size_t)skip : (size_t)len;
		p = (uint8_t *)iov[i].iov_base + skip;
		if (op == IOV_TO_BUF)
			memcpy(buf, p, n);
		else if (op == IOV_FROM_BUF)
			memcpy(p, buf, n);
		else
			memset(p, c, n);
		if (buf)
			buf += n;
		len -= n;
		skip = 0;
	}
}

void vs_iov_to_buf(void *dst, const struct iovec *iov, int niov, uint64_t skip, uint64_t len)
{
	iov_walk(iov, niov, skip, len, IOV_TO_BUF, dst, 0);
}

void vs_iov_from_buf(const struct iovec *iov, int niov, uint64_t skip, const void *src,
		     uint64_t len)
{
	iov_walk(iov, niov, skip, len, IOV_FROM_BUF, (uint8_t *)src, 0);
}

void vs_iov_memset(const struct iovec *iov, int niov, uint64_t skip, int c, uint64_t len)
{
	iov_walk(iov, niov, skip, len, IOV_FILL, NULL, c);
}

bool vs_buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Compare the buffer with itself shifted by one: zero iff first byte and all equal. */
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

bool vs_iov_is_zero(const struct iovec *iov, int niov)
{
	for (int i = 0; i < niov; i++)
		if (!vs_buf_is_zero(iov[i].iov_base, iov[i].iov_len))
			return false;
	return true;
}

void *vs_buf_alloc(size_t len)
{
	void *p;

	if (len >= VS_BUF_HUGE) {
		/*
		 * Large I/O buffers in transparent huge pages: a request then
		 * spans a few physically contiguous segments instead of one per
		 * 4 KiB page, and a 1 MiB direct request is not split for the
		 * device's segment limit (254 on virtio-blk).
		 */
		if (posix_memalign(&p, VS_BUF_HUGE, len))
			return NULL;
		(void)madvise(p, len, MADV_HUGEPAGE);
		return p;
	}
	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	return p;
}

void *vs_buf_zalloc(size_t len)
{
	void *p = vs_buf_alloc(len);

	if (p)
		memset(p, 0, len);
	return p;
}
