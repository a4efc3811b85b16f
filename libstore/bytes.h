/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Byte order: loads and stores of big- and little-endian integers at any
 * address (on-disk formats and wire protocols: qcow2 and NBD are big-endian,
 * virtio and vhost-user little-endian). The one place for them.
 */
#ifndef VSTOR_BYTES_H
#define VSTOR_BYTES_H

#include <stdint.h>

static inline uint16_t vs_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t vs_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t vs_be64(const uint8_t *p)
{
	return ((uint64_t)vs_be32(p) << 32) | vs_be32(p + 4);
}

static inline void vs_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void vs_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void vs_put_be64(uint8_t *p, uint64_t v)
{
	vs_put_be32(p, (uint32_t)(v >> 32));
	vs_put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t vs_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t vs_le32(const uint8_t *p)
{
	return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t vs_le64(const uint8_t *p)
{
	return vs_le32(p) | ((uint64_t)vs_le32(p + 4) << 32);
}

static inline void vs_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void vs_put_le32(uint8_t *p, uint32_t v)
{
	vs_put_le16(p, (uint16_t)v);
	vs_put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void vs_put_le64(uint8_t *p, uint64_t v)
{
	vs_put_le32(p, (uint32_t)v);
	vs_put_le32(p + 4, (uint32_t)(v >> 32));
}

#endif
