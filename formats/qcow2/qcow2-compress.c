/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Compressed clusters: zlib raw deflate (compression_type 0, window 2^12
 * as QEMU writes it) and zstd (compression_type 1).
 *
 * The stored size of a compressed cluster is rounded up to whole sectors,
 * so the input may carry trailing bytes that belong to the next cluster:
 * decompression stops once a full cluster has been produced.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

static int inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	z_stream z;
	int ret;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -12) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)src;
	z.avail_in = (uInt)src_len;
	z.next_out = dst;
	z.avail_out = (uInt)dst_len;
	ret = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	/* Z_BUF_ERROR with a full output: the stream went on, but we have our cluster. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0)
		return 0;
	return -EIO;
}

static int zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ZSTD_inBuffer in = { src, src_len, 0 };
	ZSTD_outBuffer out = { dst, dst_len, 0 };
	int ret = -EIO;

	if (!dctx)
		return -ENOMEM;
	/* One frame per cluster; trailing input after it is padding. */
	while (out.pos < out.size) {
		size_t r = ZSTD_decompressStream(dctx, &out, &in);

		if (ZSTD_isError(r))
			goto out;
		if (r == 0 || in.pos == in.size)
			break;
	}
	if (out.pos == out.size)
		ret = 0;
out:
	ZSTD_freeDCtx(dctx);
	return ret;
}

int qcow2_decompress(uint8_t type, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	switch (type) {
	case QCOW2_COMPRESSION_ZLIB:
		return inflate_raw(src, src_len, dst, dst_len);
	case QCOW2_COMPRESSION_ZSTD:
		return zstd_decompress(src, src_len, dst, dst_len);
	default:
		return -ENOTSUP;
	}
}

ssize_t qcow2_compress(uint8_t type, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	if (type == QCOW2_COMPRESSION_ZLIB) {
		z_stream z;
		int ret;

		memset(&z, 0, sizeof(z));
		if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)src_len;
		z.next_out = dst;
		z.avail_out = (uInt)dst_len;
		ret = deflate(&z, Z_FINISH);
		deflateEnd(&z);
		if (ret != Z_STREAM_END)
			return -ENOSPC; /* does not fit: store uncompressed */
		return (ssize_t)(dst_len - z.avail_out);
	}
	if (type == QCOW2_COMPRESSION_ZSTD) {
		size_t r = ZSTD_compress(dst, dst_len, src, src_len, ZSTD_CLEVEL_DEFAULT);

		if (ZSTD_isError(r))
			return -ENOSPC;
		return (ssize_t)r;
	}
	return -ENOTSUP;
}
