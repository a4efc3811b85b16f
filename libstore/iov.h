/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * I/O vectors: the one place for walking an iovec (sizes, slices, copies to
 * and from flat buffers, fills). Offsets are bytes from the vector's start.
 */
#ifndef VSTOR_IOV_H
#define VSTOR_IOV_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>

/* Total bytes of @iov. */
uint64_t vs_iov_size(const struct iovec *iov, int niov);

/* Whether every base and length of @iov is a multiple of @align (a power of 2). */
bool vs_iov_aligned(const struct iovec *iov, int niov, uint32_t align);

/*
 * Fill @dst (room for @max elements) with the elements of @src covering
 * [@skip, @skip + @len). Returns their count, -E2BIG when @max is too small,
 * or -EINVAL when @src is shorter than @skip + @len.
 */
int vs_iov_slice(struct iovec *dst, int max, const struct iovec *src, int niov, uint64_t skip,
		 uint64_t len);

/* Copy @len bytes of @iov, starting @skip bytes in, to @dst. */
void vs_iov_to_buf(void *dst, const struct iovec *iov, int niov, uint64_t skip, uint64_t len);

/* Copy @len bytes of @src into @iov, starting @skip bytes in. */
void vs_iov_from_buf(const struct iovec *iov, int niov, uint64_t skip, const void *src,
		     uint64_t len);

/* Set @len bytes of @iov, starting @skip bytes in, to @c. */
void vs_iov_memset(const struct iovec *iov, int niov, uint64_t skip, int c, uint64_t len);

/* Whether @len bytes at @buf are all zero (true for 0 bytes). */
bool vs_buf_is_zero(const void *buf, size_t len);

/* Whether every byte of @iov is zero (detect-zeroes). */
bool vs_iov_is_zero(const struct iovec *iov, int niov);

/*
 * Room for a slice or copy of an @niov-entry vector: @stack (@nstack
 * entries) when it fits, else malloc'd (NULL: out of memory). *@cap is the
 * room's entries. Free it with vs_iov_room_free().
 */
static inline struct iovec *vs_iov_room(struct iovec *stack, int nstack, int niov, int *cap)
{
	*cap = niov > nstack ? niov : nstack;
	return niov > nstack ? malloc(sizeof(*stack) * (size_t)niov) : stack;
}

static inline void vs_iov_room_free(struct iovec *room, const struct iovec *stack)
{
	if (room != stack)
		free(room);
}

#endif
