/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* I/O buffers and vectors: allocation, and copying between the two. */
#include "driver.h"
#include "iov.h"

#include <stdlib.h>
#include <string.h>

void vs_iov_to_buf(void *dst, const struct iovec *iov, int niov, uint64_t skip, uint64_t len)
{
	uint8_t *d = dst;

	for (int i = 0; i < niov && len; i++) {
		size_t n;

		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - skip < len ? iov[i].iov_len - (size_t)skip : (size_t)len;
		memcpy(d, (const uint8_t *)iov[i].iov_base + skip, n);
		d += n;
		len -= n;
		skip = 0;
	}
}

void vs_iov_from_buf(const struct iovec *iov, int niov, uint64_t skip, const void *src,
		     uint64_t len)
{
	const uint8_t *s = src;

	for (int i = 0; i < niov && len; i++) {
		size_t n;

		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - skip < len ? iov[i].iov_len - (size_t)skip : (size_t)len;
		memcpy((uint8_t *)iov[i].iov_base + skip, s, n);
		s += n;
		len -= n;
		skip = 0;
	}
}

void *vs_buf_alloc(size_t len)
{
	void *p;

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
