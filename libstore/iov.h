/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copying between flat buffers and I/O vectors: the one place for walking
 * an iovec byte-wise (drivers that need bytes, not the vector).
 */
#ifndef VSTOR_IOV_H
#define VSTOR_IOV_H

#include <stdint.h>
#include <sys/uio.h>

/* Copy @len bytes of @iov, starting @skip bytes in, to @dst. */
void vs_iov_to_buf(void *dst, const struct iovec *iov, int niov, uint64_t skip, uint64_t len);

/* Copy @len bytes of @src into @iov, starting @skip bytes in. */
void vs_iov_from_buf(const struct iovec *iov, int niov, uint64_t skip, const void *src,
		     uint64_t len);

#endif
