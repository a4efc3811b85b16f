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
#include <libdeflate.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

/*
 * Contexts are costly to set up (zlib's deflate state is ~270 KiB, zstd's
 * about as much) next to the work on one 64 KiB cluster, so each thread
 * keeps its own and resets it per cluster. They go with the thread.
 */
struct codec_ctx {
	z_stream def, inf;
	bool def_ok, inf_ok;
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	struct libdeflate_decompressor *ld;
	uint8_t pairs[65536 / 8]; /* byte pairs seen (looks_incompressible) */
};

static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_free(void *p)
{
	struct codec_ctx *c = p;

	if (c->def_ok)
		deflateEnd(&c->def);
	if (c->inf_ok)
		inflateEnd(&c->inf);
	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	if (c->ld)
		libdeflate_free_decompressor(c->ld);
	free(c);
}

static void codec_key_init(void)
{
	(void)pthread_key_create(&codec_key, codec_free);
}

static struct codec_ctx *codec_get(void)
{
	struct codec_ctx *c;

	pthread_once(&codec_once, codec_key_init);
	c = pthread_getspecific(codec_key);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (c && pthread_setspecific(codec_key, c)) {
			free(c);
			c = NULL;
		}
	}
	return c;
}

static int inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	struct codec_ctx *c = codec_get();
	size_t in_used;
	z_stream *z;
	int ret;

	if (!c)
		return -ENOMEM;
	/*
	 * libdeflate first: it reads the same raw deflate about three times as
	 * fast. It wants the output to end with the stream, so a stream that
	 * goes on past the cluster (or anything it rejects) is left to zlib,
	 * which decides as before.
	 */
	if (!c->ld)
		c->ld = libdeflate_alloc_decompressor();
	if (c->ld && libdeflate_deflate_decompress_ex(c->ld, src, src_len, dst, dst_len, &in_used,
						      NULL) == LIBDEFLATE_SUCCESS)
		return 0;
	z = &c->inf;
	if (!c->inf_ok) {
		memset(z, 0, sizeof(*z));
		if (inflateInit2(z, -12) != Z_OK)
			return -ENOMEM;
		c->inf_ok = true;
	} else if (inflateReset(z) != Z_OK) {
		return -EIO;
	}
	z->next_in = (Bytef *)src;
	z->avail_in = (uInt)src_len;
	z->next_out = dst;
	z->avail_out = (uInt)dst_len;
	ret = inflate(z, Z_FINISH);
	/* Z_BUF_ERROR with a full output: the stream went on, but we have our cluster. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z->avail_out == 0)
		return 0;
	return -EIO;
}

static int zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	struct codec_ctx *c = codec_get();
	ZSTD_DCtx *dctx;
	ZSTD_inBuffer in = { src, src_len, 0 };
	ZSTD_outBuffer out = { dst, dst_len, 0 };

	if (!c)
		return -ENOMEM;
	if (!c->zd)
		c->zd = ZSTD_createDCtx();
	dctx = c->zd;
	if (!dctx)
		return -ENOMEM;
	/* A frame left half-read by corrupt input must not leak into the next cluster. */
	ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
	/* One frame per cluster; trailing input after it is padding. */
	while (out.pos < out.size) {
		size_t r = ZSTD_decompressStream(dctx, &out, &in);

		if (ZSTD_isError(r))
			return -EIO;
		if (r == 0 || in.pos == in.size)
			break;
	}
	return out.pos == out.size ? 0 : -EIO;
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

/* Shannon entropy, in bits per byte, of the byte histogram @h of @n bytes. */
static double entropy(const uint32_t *h, size_t n)
{
	double e = 0;

	for (int i = 0; i < 256; i++)
		if (h[i]) {
			double q = (double)h[i] / (double)n;

			e -= q * log2(q);
		}
	return e;
}

/*
 * Whether deflate cannot shrink @n bytes (at least 64 KiB of it): their bytes
 * are near uniform (no Huffman gain) and as many distinct byte pairs occur
 * as in random data (no repeated strings for matches). Random data has
 * 41,150-41,700 distinct pairs per 64 KiB, and a repeated string of L bytes
 * takes about L away; 41,000 lets through what could gain more than about
 * 0.5%. zlib spends as long on a random cluster as on text, for nothing:
 * on data that does not compress (compressed files, encrypted data) this
 * check costs ~5% of a deflate and saves the rest. Data like a counter
 * (uniform bytes, few pairs) fails the pair test and is compressed.
 */
static bool looks_incompressible(struct codec_ctx *c, const uint8_t *p, size_t n)
{
	uint32_t h[256] = { 0 };
	size_t sample = n < 16384 ? n : 16384;

	if (n < 65536)
		return false;
	/* A cheap look at the start first: text, zeroes, code leave here. */
	for (size_t i = 0; i < sample; i++)
		h[p[i]]++;
	if (entropy(h, sample) < 7.9)
		return false;
	for (size_t off = 0; off + 65536 <= n; off += 65536) {
		const uint8_t *b = p + off;
		unsigned distinct = 0;

		memset(h, 0, sizeof(h));
		memset(c->pairs, 0, sizeof(c->pairs));
		h[b[0]]++;
		for (size_t i = 1; i < 65536; i++) {
			unsigned k = (unsigned)b[i - 1] << 8 | b[i];

			h[b[i]]++;
			if (!(c->pairs[k >> 3] & (1u << (k & 7)))) {
				c->pairs[k >> 3] |= (uint8_t)(1u << (k & 7));
				distinct++;
			}
		}
		if (distinct < 41000 || entropy(h, 65536) < 7.99)
			return false;
	}
	return true;
}

ssize_t qcow2_compress(uint8_t type, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	struct codec_ctx *c = codec_get();

	if (!c)
		return -ENOMEM;
	if (type == QCOW2_COMPRESSION_ZLIB) {
		z_stream *z = &c->def;
		int ret;

		/* zstd gives up on such data by itself, quickly; zlib does not. */
		if (looks_incompressible(c, src, src_len))
			return -ENOSPC; /* store uncompressed */

		if (!c->def_ok) {
			memset(z, 0, sizeof(*z));
			if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
					 Z_DEFAULT_STRATEGY) != Z_OK)
				return -ENOMEM;
			c->def_ok = true;
		} else if (deflateReset(z) != Z_OK) {
			return -EIO;
		}
		z->next_in = (Bytef *)src;
		z->avail_in = (uInt)src_len;
		z->next_out = dst;
		z->avail_out = (uInt)dst_len;
		ret = deflate(z, Z_FINISH);
		if (ret != Z_STREAM_END)
			return -ENOSPC; /* does not fit: store uncompressed */
		return (ssize_t)(dst_len - z->avail_out);
	}
	if (type == QCOW2_COMPRESSION_ZSTD) {
		size_t r;

		if (!c->zc)
			c->zc = ZSTD_createCCtx();
		if (!c->zc)
			return -ENOMEM;
		r = ZSTD_compressCCtx(c->zc, dst, dst_len, src, src_len, ZSTD_CLEVEL_DEFAULT);

		if (ZSTD_isError(r))
			return -ENOSPC;
		return (ssize_t)r;
	}
	return -ENOTSUP;
}
