/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The conformance suite: the same I/O checks over every driver stack, as
 * SPDK's bdev conformance program does. A driver stack that passes these
 * behaves the way the generic layer promises (node.h): ranges checked,
 * unaligned requests bounced, write-zeroes and FUA emulated where the driver
 * lacks them, block status consistent with what reads return.
 *
 * The checks run inside one coroutine each (open, check, close); cmocka's
 * assertions longjmp, so they are only used outside the coroutine, on the
 * failure message the check left behind.
 *
 * VSTOR_CONFORMANCE_REACTORS=N (N > 1): the checks' reads and writes go,
 * in turn, through an export's ports on N - 1 reactor threads (one disk
 * on N reactors: mapped bytes straight to the file from there, the rest
 * at home; libstore/export-port.c), and must behave the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vstor/export.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#include "../port-request.h"

#define MAX_PORTS 3

#define IMG_SIZE (16ull << 20)
#define BUF_SIZE (9ull << 20)

enum stack_kind {
	STACK_RAW_FILE,
	STACK_QCOW2_FILE,
	STACK_RAW_MEMORY,
	STACK_NULL,
	STACK_RAW_LVMAP,   /* lvmap: three segments of a "PV" file, out of order */
	STACK_QCOW2_LVMAP, /* qcow2 on that */
	STACK_LUKS_FILE,   /* luks (aes-256-xts) on a file, its payload zeroed first */
};

struct stack {
	const char *name;
	enum stack_kind kind;
	enum vs_cache_mode cache;
	const struct vs_kv *create_opts; /* qcow2 -o list */
	size_t ncreate_opts;
	bool discards_writes; /* null: reads return zeroes whatever was written */
};

struct conf_test;
typedef int check_fn(struct conf_test *t);

struct conf_test {
	const struct stack *stack;
	check_fn *check;
	char dir[256];
	char path[300];
	char uri[1400];
	struct vs_node *node;
	unsigned char *buf;  /* BUF_SIZE, 4 KiB aligned */
	unsigned char *buf2; /* BUF_SIZE, 4 KiB aligned */
	bool failed;
	char msg[512];
	/* VSTOR_CONFORMANCE_REACTORS: the export and its ports the data goes through. */
	struct vs_export *exp;
	struct vs_reactor_thread *threads[MAX_PORTS];
	struct vs_export_port *ports[MAX_PORTS];
	unsigned nports, next_port;
};

static unsigned nreactors = 1;
static uint64_t port_direct, port_home; /* over the whole run */

/*
 * A read or write of the check, through the next port when there are
 * ports; 1 when it was not (the export cannot take it: past its size, or
 * flags it has no word for), for the node path.
 */
static int via_port(struct conf_test *t, enum vs_export_op op, uint64_t off, void *buf, size_t len,
		    unsigned flags, int *ret)
{
	struct iovec iov = { buf, len };
	unsigned k;

	if (!t->nports || (flags & ~(unsigned)VS_REQ_FUA) || off > vs_export_size(t->exp) ||
	    len > vs_export_size(t->exp) - off)
		return 1;
	k = t->next_port++ % t->nports;
	*ret = test_port_request(vs_reactor_thread_reactor(t->threads[k]), t->ports[k], op, off,
				 len, &iov, 1, (flags & VS_REQ_FUA) ? VS_EXPORT_FUA : 0);
	return 0;
}

static int ports_open(struct conf_test *t)
{
	if (nreactors < 2)
		return 0;
	if (vs_export_new(&t->exp, &(struct vs_export_opts){ .name = "c", .node = t->node }) < 0)
		return -1;
	for (unsigned i = 0; i < nreactors - 1 && i < MAX_PORTS; i++) {
		if (vs_reactor_thread_start(&t->threads[i], "conf-port") < 0)
			return -1;
		t->nports = i + 1;
		if (vs_export_port_new(t->exp, vs_reactor_thread_reactor(t->threads[i]),
				       &t->ports[i]) < 0)
			return -1;
	}
	return 0;
}

static void ports_close(struct conf_test *t)
{
	for (unsigned i = 0; i < t->nports; i++) {
		struct vs_export_port_stats st;

		vs_export_port_get_stats(t->ports[i], &st);
		port_direct += st.direct;
		port_home += st.home;
		vs_export_port_free(t->ports[i]);
	}
	vs_export_free(t->exp);
	t->exp = NULL;
	for (unsigned i = 0; i < t->nports; i++)
		vs_reactor_thread_stop(t->threads[i]);
	t->nports = t->next_port = 0;
	memset(t->ports, 0, sizeof(t->ports));
	memset(t->threads, 0, sizeof(t->threads));
}

static void fail_at(struct conf_test *t, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail_at(struct conf_test *t, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	t->failed = true;
	n = snprintf(t->msg, sizeof(t->msg), "[%s] line %d: ", t->stack->name, line);
	va_start(ap, fmt);
	vsnprintf(t->msg + n, sizeof(t->msg) - (size_t)n, fmt, ap);
	va_end(ap);
}

#define CHECK(t, cond, ...)                                  \
	do {                                                 \
		if (!(cond)) {                               \
			fail_at((t), __LINE__, __VA_ARGS__); \
			return -1;                           \
		}                                            \
	} while (0)

#define CHECK_RET(t, expr, want)                                                                \
	do {                                                                                    \
		int ret_ = (expr);                                                              \
		if (ret_ != (want)) {                                                           \
			fail_at((t), __LINE__, "%s returned %d (%s), expected %d", #expr, ret_, \
				strerror(ret_ < 0 ? -ret_ : 0), (want));                        \
			return -1;                                                              \
		}                                                                               \
	} while (0)

static unsigned char pat(uint64_t off, unsigned seed)
{
	return (unsigned char)((seed + 7 * ((off >> 9) % 251) + (off & 511)) & 0xff);
}

static void fill(unsigned char *p, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(off + i, seed);
}

/* Expected content of a range that was written with @seed. */
static void expect(struct conf_test *t, unsigned char *p, uint64_t off, size_t len, unsigned seed)
{
	if (t->stack->discards_writes)
		memset(p, 0, len);
	else
		fill(p, off, len, seed);
}

/* First differing offset of two buffers, or -1. */
static long long first_diff(const unsigned char *a, const unsigned char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (a[i] != b[i])
			return (long long)i;
	return -1;
}

static int read_expect(struct conf_test *t, int line, uint64_t off, size_t len, unsigned seed,
		       bool zero)
{
	long long d;
	int ret;

	memset(t->buf, 0xa5, len);
	if (via_port(t, VS_EXPORT_OP_READ, off, t->buf, len, 0, &ret))
		ret = vs_node_pread(t->node, off, t->buf, len);
	if (ret < 0) {
		fail_at(t, line, "read %" PRIu64 "+%zu: %s", off, len, strerror(-ret));
		return -1;
	}
	if (zero)
		memset(t->buf2, 0, len);
	else
		expect(t, t->buf2, off, len, seed);
	d = first_diff(t->buf, t->buf2, len);
	if (d >= 0) {
		fail_at(t, line, "content at %" PRIu64 " is 0x%02x, expected 0x%02x (%s)",
			off + (uint64_t)d, t->buf[d], t->buf2[d], zero ? "zero" : "data");
		return -1;
	}
	return 0;
}

#define READ_DATA(t, off, len, seed)                                         \
	do {                                                                 \
		if (read_expect((t), __LINE__, (off), (len), (seed), false)) \
			return -1;                                           \
	} while (0)
#define READ_ZERO(t, off, len)                                         \
	do {                                                           \
		if (read_expect((t), __LINE__, (off), (len), 0, true)) \
			return -1;                                     \
	} while (0)

static int write_pat(struct conf_test *t, uint64_t off, size_t len, unsigned seed, unsigned flags)
{
	int ret;

	fill(t->buf, off, len, seed);
	if (via_port(t, VS_EXPORT_OP_WRITE, off, t->buf, len, flags, &ret))
		ret = vs_node_pwrite(t->node, off, t->buf, len, flags);
	return ret;
}

/* --- the checks ------------------------------------------------------------------------- */

static int check_size(struct conf_test *t)
{
	CHECK(t, vs_node_size(t->node) == IMG_SIZE, "size %" PRIu64 ", expected %llu",
	      vs_node_size(t->node), IMG_SIZE);
	READ_ZERO(t, 0, 65536);
	READ_ZERO(t, IMG_SIZE - 4096, 4096);
	return 0;
}

static int check_rw_aligned(struct conf_test *t)
{
	CHECK_RET(t, write_pat(t, 1 << 20, 65536, 1, 0), 0);
	READ_DATA(t, 1 << 20, 65536, 1);
	READ_ZERO(t, (1 << 20) - 4096, 4096);
	READ_ZERO(t, (1 << 20) + 65536, 4096);
	/* Overwrite the middle. */
	CHECK_RET(t, write_pat(t, (1 << 20) + 4096, 4096, 2, 0), 0);
	READ_DATA(t, 1 << 20, 4096, 1);
	READ_DATA(t, (1 << 20) + 4096, 4096, 2);
	READ_DATA(t, (1 << 20) + 8192, 65536 - 8192, 1);
	/* The last sector. */
	CHECK_RET(t, write_pat(t, IMG_SIZE - 512, 512, 3, 0), 0);
	READ_DATA(t, IMG_SIZE - 512, 512, 3);
	return 0;
}

static int check_rw_unaligned(struct conf_test *t)
{
	static const struct {
		uint64_t off;
		size_t len;
	} cases[] = {
		{ 12345, 3000 }, { 511, 2 }, { 4095, 4098 }, { 65535, 131073 }, { 3, 1 },
	};
	unsigned char *odd = NULL;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t off = cases[i].off + (2 << 20) * i;
		size_t len = cases[i].len;
		long long d;
		int ret;

		/* A buffer at an odd address too. */
		odd = t->buf2 + 1;
		fill(odd, off, len, 10 + (unsigned)i);
		ret = vs_node_pwrite(t->node, off, odd, len, 0);
		CHECK(t, ret == 0, "write %" PRIu64 "+%zu: %s", off, len, strerror(-ret));
		READ_ZERO(t, off - 1, 1);
		READ_DATA(t, off, len, 10 + (unsigned)i);
		READ_ZERO(t, off + len, 1);
		/* Read into an odd buffer as well. */
		ret = vs_node_pread(t->node, off, t->buf + 3, len);
		CHECK(t, ret == 0, "read %" PRIu64 "+%zu: %s", off, len, strerror(-ret));
		expect(t, t->buf2, off, len, 10 + (unsigned)i);
		d = first_diff(t->buf + 3, t->buf2, len);
		CHECK(t, d < 0, "odd-buffer read differs at %" PRIu64, off + (uint64_t)d);
	}
	return 0;
}

static int check_rw_vectored(struct conf_test *t)
{
	const uint64_t off = (3 << 20) + 7;
	const size_t lens[3] = { 1000, 3096, 517 };
	struct iovec iov[3];
	size_t total = 0, pos = 0;
	int ret;

	for (int i = 0; i < 3; i++)
		total += lens[i];
	fill(t->buf, off, total, 20);
	/* Scatter the source over non-contiguous pieces of buf2. */
	for (int i = 0; i < 3; i++) {
		iov[i].iov_base = t->buf2 + i * 8192 + 1;
		iov[i].iov_len = lens[i];
		memcpy(iov[i].iov_base, t->buf + pos, lens[i]);
		pos += lens[i];
	}
	ret = vs_node_pwritev(t->node, off, total, iov, 3, 0);
	CHECK(t, ret == 0, "pwritev: %s", strerror(-ret));
	READ_DATA(t, off, total, 20);

	for (int i = 0; i < 3; i++)
		memset(iov[i].iov_base, 0xee, lens[i]);
	ret = vs_node_preadv(t->node, off, total, iov, 3, 0);
	CHECK(t, ret == 0, "preadv: %s", strerror(-ret));
	expect(t, t->buf, off, total, 20);
	pos = 0;
	for (int i = 0; i < 3; i++) {
		CHECK(t, !memcmp(iov[i].iov_base, t->buf + pos, lens[i]), "preadv iov %d differs",
		      i);
		pos += lens[i];
	}
	return 0;
}

static int check_rw_large(struct conf_test *t)
{
	/* Larger than any sane max transfer: the generic layer splits it. */
	const uint64_t off = (4 << 20) + 512;
	const size_t len = 9 << 20;

	CHECK_RET(t, write_pat(t, off, len, 30, 0), 0);
	READ_DATA(t, off, len, 30);
	READ_ZERO(t, off - 512, 512);
	return 0;
}

static int check_write_fua(struct conf_test *t)
{
	CHECK_RET(t, write_pat(t, 8192, 8192, 40, VS_REQ_FUA), 0);
	CHECK_RET(t, write_pat(t, 100001, 777, 41, VS_REQ_FUA), 0);
	READ_DATA(t, 8192, 8192, 40);
	READ_DATA(t, 100001, 777, 41);
	return 0;
}

static int check_write_zeroes(struct conf_test *t)
{
	const uint64_t base = 5 << 20;
	const size_t len = 1 << 20;

	CHECK_RET(t, write_pat(t, base, len, 50, 0), 0);
	/* Aligned, no unmap. */
	CHECK_RET(t, vs_node_write_zeroes(t->node, base + 65536, 65536, 0), 0);
	/* Unaligned at both ends, may unmap. */
	CHECK_RET(t, vs_node_write_zeroes(t->node, base + 200000, 300001, VS_REQ_MAY_UNMAP), 0);
	/* A small unaligned one inside a cluster. */
	CHECK_RET(t, vs_node_write_zeroes(t->node, base + 600001, 17, 0), 0);
	/* With FUA. */
	CHECK_RET(t, vs_node_write_zeroes(t->node, base + 700000, 4096, VS_REQ_FUA), 0);

	READ_DATA(t, base, 65536, 50);
	READ_ZERO(t, base + 65536, 65536);
	READ_DATA(t, base + 131072, 200000 - 131072, 50);
	READ_ZERO(t, base + 200000, 300001);
	READ_DATA(t, base + 500001, 100000, 50);
	READ_ZERO(t, base + 600001, 17);
	READ_DATA(t, base + 600018, 700000 - 600018, 50);
	READ_ZERO(t, base + 700000, 4096);
	READ_DATA(t, base + 704096, len - 704096, 50);

	/* Zeroes over never-written space stay zero. */
	CHECK_RET(t, vs_node_write_zeroes(t->node, IMG_SIZE - 65536, 65536, VS_REQ_MAY_UNMAP), 0);
	READ_ZERO(t, IMG_SIZE - 65536, 65536);
	return 0;
}

static int check_discard(struct conf_test *t)
{
	const uint64_t base = 7 << 20;

	CHECK_RET(t, write_pat(t, base, 1 << 20, 60, 0), 0);
	/* Discard is advisory: content of the range is unspecified, the rest is kept. */
	CHECK_RET(t, vs_node_discard(t->node, base + 65536, 131072), 0);
	CHECK_RET(t, vs_node_discard(t->node, base + 300001, 4097), 0);
	READ_DATA(t, base, 65536, 60);
	READ_DATA(t, base + 196608, 300001 - 196608, 60);
	READ_DATA(t, base + 304098, (1 << 20) - 304098, 60);
	/* Discarding what was never written is fine too. */
	CHECK_RET(t, vs_node_discard(t->node, IMG_SIZE - (1 << 20), 1 << 20), 0);
	return 0;
}

static int check_flush(struct conf_test *t)
{
	CHECK_RET(t, vs_node_flush(t->node), 0);
	CHECK_RET(t, write_pat(t, 0, 4096, 70, 0), 0);
	CHECK_RET(t, vs_node_flush(t->node), 0);
	CHECK_RET(t, vs_node_flush(t->node), 0);
	READ_DATA(t, 0, 4096, 70);
	return 0;
}

static int check_block_status(struct conf_test *t)
{
	const uint64_t woff = 6 << 20, wlen = 256 << 10;
	uint64_t off = 0, data_in_written = 0;
	unsigned runs = 0;

	CHECK_RET(t, write_pat(t, woff, wlen, 80, 0), 0);
	while (off < IMG_SIZE) {
		uint64_t pnum = 0, map = 0, left = IMG_SIZE - off;
		unsigned st = 0;
		int ret;

		ret = vs_node_block_status(t->node, off, left, &pnum, &st, &map, NULL);
		CHECK(t, ret == 0, "block status at %" PRIu64 ": %s", off, strerror(-ret));
		CHECK(t, pnum > 0 && pnum <= left, "block status at %" PRIu64 ": pnum %" PRIu64,
		      off, pnum);
		CHECK(t, ++runs < 100000, "too many runs");
		if (st & VS_BS_ZERO) {
			/* What block status calls zero must read as zero. */
			uint64_t pos = off;

			while (pos < off + pnum) {
				size_t n = (size_t)(off + pnum - pos < BUF_SIZE ? off + pnum - pos :
										  BUF_SIZE);
				READ_ZERO(t, pos, n);
				pos += n;
			}
		}
		if (off < woff + wlen && off + pnum > woff && (st & VS_BS_DATA)) {
			uint64_t s = off > woff ? off : woff;
			uint64_t e = off + pnum < woff + wlen ? off + pnum : woff + wlen;

			data_in_written += e - s;
		}
		off += pnum;
	}
	CHECK(t, off == IMG_SIZE, "runs cover %" PRIu64 " bytes, not %llu", off, IMG_SIZE);
	if (!t->stack->discards_writes)
		CHECK(t, data_in_written == wlen,
		      "written range reports data for %" PRIu64 " of %" PRIu64 " bytes",
		      data_in_written, wlen);

	/* A query inside a run stops at len. */
	{
		uint64_t pnum = 0;
		unsigned st = 0;

		CHECK_RET(t,
			  vs_node_block_status(t->node, woff + 512, 4096, &pnum, &st, NULL, NULL),
			  0);
		CHECK(t, pnum > 0 && pnum <= 4096, "pnum %" PRIu64 " for a 4096-byte query", pnum);
	}
	return 0;
}

static int check_out_of_range(struct conf_test *t)
{
	unsigned char *b = t->buf;

	CHECK_RET(t, vs_node_pread(t->node, IMG_SIZE, b, 512), -EINVAL);
	CHECK_RET(t, vs_node_pread(t->node, IMG_SIZE - 512, b, 1024), -EINVAL);
	CHECK_RET(t, vs_node_pread(t->node, UINT64_MAX - 511, b, 1024), -EINVAL);
	CHECK_RET(t, vs_node_pwrite(t->node, IMG_SIZE, b, 512, 0), -EINVAL);
	CHECK_RET(t, vs_node_pwrite(t->node, IMG_SIZE - 1, b, 2, 0), -EINVAL);
	CHECK_RET(t, vs_node_pwrite(t->node, UINT64_MAX - 511, b, 1024, 0), -EINVAL);
	CHECK_RET(t, vs_node_write_zeroes(t->node, IMG_SIZE - 4096, 8192, 0), -EINVAL);
	CHECK_RET(t, vs_node_discard(t->node, IMG_SIZE, 4096), -EINVAL);
	CHECK_RET(t, vs_node_discard(t->node, UINT64_MAX - 4095, 8192), -EINVAL);
	/* Nothing was written by the refused requests. */
	READ_ZERO(t, IMG_SIZE - 4096, 4096);
	return 0;
}

static int check_unknown_flags(struct conf_test *t)
{
	/* Flags that make no sense for an operation are refused, not ignored. */
	CHECK_RET(t, vs_node_pwrite(t->node, 0, t->buf, 512, 0x80000000u), -EINVAL);
	return 0;
}

/* Runs on a read-only node (see run_check()). */
static int check_read_only(struct conf_test *t)
{
	int ret;

	CHECK(t, vs_node_is_read_only(t->node), "node is not read-only");
	READ_ZERO(t, 0, 65536);
	fill(t->buf, 0, 4096, 90);
	ret = vs_node_pwrite(t->node, 0, t->buf, 4096, 0);
	CHECK(t, ret == -EPERM || ret == -EROFS, "write returned %d (%s)", ret, strerror(-ret));
	ret = vs_node_write_zeroes(t->node, 0, 4096, 0);
	CHECK(t, ret == -EPERM || ret == -EROFS, "write-zeroes returned %d", ret);
	ret = vs_node_discard(t->node, 0, 4096);
	CHECK(t, ret == -EPERM || ret == -EROFS, "discard returned %d", ret);
	CHECK_RET(t, vs_node_flush(t->node), 0);
	READ_ZERO(t, 0, 4096);
	return 0;
}

/* --- stacks and the runner ------------------------------------------------------------- */

static const struct vs_kv qcow2_ext_l2[] = {
	{ "cluster_size", "65536" },
	{ "extended_l2", "on" },
};
static const struct vs_kv qcow2_v2[] = {
	{ "compat", "0.10" },
};
static const struct vs_kv qcow2_small[] = {
	{ "cluster_size", "512" },
	{ "refcount_bits", "1" },
};

/* The passphrase is the secret "conf" (registered in main); a short PBKDF2. */
static const char luks_pass[] = "conformance";
static const struct vs_kv luks_opts[] = {
	{ "key-secret", "conf" },
	{ "iter-time", "1" },
};

static const struct stack stacks[] = {
	{ "raw/file", STACK_RAW_FILE, VS_CACHE_WRITEBACK, NULL, 0, false },
	{ "raw/file,cache=none", STACK_RAW_FILE, VS_CACHE_NONE, NULL, 0, false },
	{ "qcow2/file", STACK_QCOW2_FILE, VS_CACHE_WRITEBACK, NULL, 0, false },
	{ "qcow2/file,cache=none", STACK_QCOW2_FILE, VS_CACHE_NONE, NULL, 0, false },
	{ "qcow2(extended_l2)/file", STACK_QCOW2_FILE, VS_CACHE_WRITEBACK, qcow2_ext_l2, 2, false },
	{ "qcow2(compat=0.10)/file", STACK_QCOW2_FILE, VS_CACHE_WRITEBACK, qcow2_v2, 1, false },
	{ "qcow2(cluster_size=512)/file", STACK_QCOW2_FILE, VS_CACHE_WRITEBACK, qcow2_small, 2,
	  false },
	{ "raw/memory", STACK_RAW_MEMORY, VS_CACHE_WRITEBACK, NULL, 0, false },
	{ "null", STACK_NULL, VS_CACHE_WRITEBACK, NULL, 0, true },
	{ "raw/lvmap", STACK_RAW_LVMAP, VS_CACHE_WRITEBACK, NULL, 0, false },
	{ "raw/lvmap,cache=none", STACK_RAW_LVMAP, VS_CACHE_NONE, NULL, 0, false },
	{ "qcow2/lvmap", STACK_QCOW2_LVMAP, VS_CACHE_WRITEBACK, NULL, 0, false },
	{ "luks/file", STACK_LUKS_FILE, VS_CACHE_WRITEBACK, luks_opts, 2, false },
	{ "luks/file,cache=none", STACK_LUKS_FILE, VS_CACHE_NONE, luks_opts, 2, false },
};

static const struct {
	const char *name;
	check_fn *fn;
} checks[] = {
	{ "size", check_size },
	{ "rw_aligned", check_rw_aligned },
	{ "rw_unaligned", check_rw_unaligned },
	{ "rw_vectored", check_rw_vectored },
	{ "rw_large", check_rw_large },
	{ "write_fua", check_write_fua },
	{ "write_zeroes", check_write_zeroes },
	{ "discard", check_discard },
	{ "flush", check_flush },
	{ "block_status", check_block_status },
	{ "out_of_range", check_out_of_range },
	{ "unknown_flags", check_unknown_flags },
	{ "read_only", check_read_only },
};

/*
 * A new luks image reads as the decryption of whatever its file holds, not
 * zeroes: the checks expect a fresh image to read zeroes, so write them.
 */
static int luks_zero_payload(struct conf_test *t)
{
	struct vs_open_opts o = {
		.filename = t->path,
		.format = "luks",
		.key_secret_data = luks_pass,
		.key_secret_len = sizeof(luks_pass) - 1,
	};
	struct vs_error err = { 0 };
	struct vs_node *n;
	int ret = vs_image_open(&n, &o, &err);

	if (ret < 0) {
		fail_at(t, __LINE__, "open: %s", err.msg[0] ? err.msg : strerror(-ret));
		return -1;
	}
	ret = vs_node_write_zeroes(n, 0, IMG_SIZE, 0);
	vs_node_close(n);
	if (ret < 0) {
		fail_at(t, __LINE__, "zero the payload: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

static int prepare(struct conf_test *t)
{
	struct vs_error err = { 0 };
	const char *tmp = getenv("TMPDIR");
	int ret, fd;

	switch (t->stack->kind) {
	case STACK_RAW_MEMORY:
		snprintf(t->uri, sizeof(t->uri), "memory:%llu", IMG_SIZE);
		return 0;
	case STACK_NULL:
		snprintf(t->uri, sizeof(t->uri), "null:%llu", IMG_SIZE);
		return 0;
	case STACK_RAW_FILE:
	case STACK_QCOW2_FILE:
	case STACK_LUKS_FILE:
	case STACK_RAW_LVMAP:
	case STACK_QCOW2_LVMAP:
		break;
	}
	snprintf(t->dir, sizeof(t->dir), "%s/vstor-conformance.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(t->dir)) {
		t->dir[0] = '\0';
		fail_at(t, __LINE__, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(t->path, sizeof(t->path), "%s/img", t->dir);
	if (t->stack->kind == STACK_RAW_LVMAP || t->stack->kind == STACK_QCOW2_LVMAP) {
		/* LV [0,4M) at PV 12M, [4M,12M) at PV 1M, [12M,16M) at PV 16M; a lock file. */
		snprintf(t->path, sizeof(t->path), "%s/pv", t->dir);
		fd = open(t->path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)(IMG_SIZE + (4 << 20))) < 0) {
			fail_at(t, __LINE__, "create %s: %s", t->path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		snprintf(t->uri, sizeof(t->uri), "lvmap:%s/lock|%u+%u@%s|%u+%u@%s|%u+%u@%s", t->dir,
			 12u << 20, 4u << 20, t->path, 1u << 20, 8u << 20, t->path, 16u << 20,
			 4u << 20, t->path);
		t->path[0] = '\0';
		if (t->stack->kind == STACK_RAW_LVMAP)
			return 0;
		ret = vs_image_create(t->uri, "qcow2", IMG_SIZE, NULL, 0, &err);
		if (ret < 0) {
			fail_at(t, __LINE__, "create: %s", err.msg[0] ? err.msg : strerror(-ret));
			return -1;
		}
		return 0;
	}
	if (t->stack->kind == STACK_RAW_FILE) {
		fd = open(t->path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)IMG_SIZE) < 0) {
			fail_at(t, __LINE__, "create %s: %s", t->path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	ret = vs_image_create(t->path, t->stack->kind == STACK_LUKS_FILE ? "luks" : "qcow2",
			      IMG_SIZE, t->stack->create_opts, t->stack->ncreate_opts, &err);
	if (ret < 0) {
		fail_at(t, __LINE__, "create: %s", err.msg[0] ? err.msg : strerror(-ret));
		return -1;
	}
	if (t->stack->kind == STACK_LUKS_FILE)
		return luks_zero_payload(t);
	return 0;
}

static void run_check(void *arg)
{
	struct conf_test *t = arg;
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	int ret;

	if (prepare(t))
		return;
	o.filename = t->path[0] ? t->path : t->uri;
	o.format = t->stack->kind == STACK_QCOW2_FILE || t->stack->kind == STACK_QCOW2_LVMAP ?
			   "qcow2" :
			   "raw";
	if (t->stack->kind == STACK_LUKS_FILE) {
		o.format = "luks";
		o.key_secret_data = luks_pass;
		o.key_secret_len = sizeof(luks_pass) - 1;
	}
	o.cache = t->stack->cache;
	o.read_only = t->check == check_read_only;
	ret = vs_image_open(&t->node, &o, &err);
	if (ret < 0) {
		fail_at(t, __LINE__, "open %s: %s", o.filename,
			err.msg[0] ? err.msg : strerror(-ret));
		return;
	}
	if (ports_open(t) < 0)
		fail_at(t, __LINE__, "could not start the reactors and ports");
	else
		t->check(t);
	ports_close(t);
	vs_node_close(t->node);
	t->node = NULL;
	/* The image must still be consistent after every check. */
	if (!t->failed && !strcmp(o.format, "qcow2") && !o.read_only) {
		struct vs_check_result res = { 0 };

		o.read_only = true;
		err.code = 0;
		err.msg[0] = '\0';
		ret = vs_image_open(&t->node, &o, &err);
		if (ret < 0) {
			fail_at(t, __LINE__, "reopen: %s", err.msg[0] ? err.msg : strerror(-ret));
			return;
		}
		ret = vs_node_check(t->node, &res, 0);
		if (ret < 0 || res.corruptions || res.leaks || res.check_errors)
			fail_at(t, __LINE__,
				"check after the test: ret %d, %" PRId64 " corruptions, %" PRId64
				" leaks, %" PRId64 " errors",
				ret, res.corruptions, res.leaks, res.check_errors);
		vs_node_close(t->node);
		t->node = NULL;
	}
}

static void test_conformance(void **state)
{
	struct conf_test *t = *state;
	int ret;

	t->failed = false;
	t->msg[0] = '\0';
	t->dir[0] = t->path[0] = t->uri[0] = '\0';
	ret = vs_run_in_coroutine(run_check, t);
	if (t->path[0])
		unlink(t->path);
	if (t->dir[0]) {
		char extra[300];

		/* lvmap stacks: the PV file and the lock file. */
		snprintf(extra, sizeof(extra), "%s/pv", t->dir);
		unlink(extra);
		snprintf(extra, sizeof(extra), "%s/lock", t->dir);
		unlink(extra);
		rmdir(t->dir);
	}
	if (ret < 0)
		fail_msg("engine: %s", strerror(-ret));
	if (t->failed)
		fail_msg("%s", t->msg);
}

int main(void)
{
	const size_t nstacks = sizeof(stacks) / sizeof(stacks[0]);
	const size_t nchecks = sizeof(checks) / sizeof(checks[0]);
	size_t n = nstacks * nchecks, i = 0;
	struct CMUnitTest *tests = calloc(n, sizeof(*tests));
	struct conf_test *ctx = calloc(n, sizeof(*ctx));
	char **names = calloc(n, sizeof(*names));
	unsigned char *buf = NULL, *buf2 = NULL;
	int failed;

	if (!tests || !ctx || !names || posix_memalign((void **)&buf, 4096, BUF_SIZE + 4096) ||
	    posix_memalign((void **)&buf2, 4096, BUF_SIZE + 4096)) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	if (getenv("VSTOR_CONFORMANCE_REACTORS"))
		nreactors = (unsigned)atoi(getenv("VSTOR_CONFORMANCE_REACTORS"));
	if (vs_secret_add("conf", luks_pass, sizeof(luks_pass) - 1) < 0) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (size_t s = 0; s < nstacks; s++) {
		for (size_t c = 0; c < nchecks; c++, i++) {
			if (asprintf(&names[i], "test_conformance_%s[%s]", checks[c].name,
				     stacks[s].name) < 0)
				return 1;
			ctx[i].stack = &stacks[s];
			ctx[i].check = checks[c].fn;
			ctx[i].buf = buf;
			ctx[i].buf2 = buf2;
			tests[i].name = names[i];
			tests[i].test_func = test_conformance;
			tests[i].initial_state = &ctx[i];
		}
	}
	failed = _cmocka_run_group_tests("conformance", tests, n, NULL, NULL);
	if (nreactors > 1) {
		/* The ports must have served some straight from the file. */
		printf("%u reactors: port requests %" PRIu64 " direct, %" PRIu64 " at home\n",
		       nreactors, port_direct, port_home);
		if (!port_direct)
			failed = 1;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(tests);
	free(ctx);
	free(buf);
	free(buf2);
	return failed ? 1 : 0;
}
