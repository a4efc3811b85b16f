/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the generic request layer (node.c): range and permission
 * checks, splitting, bouncing of unaligned requests, FUA and write-zeroes
 * emulation, block status through a chain; and of the file driver: O_DIRECT,
 * SEEK_HOLE block status, OFD locks, create with preallocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "co-test.h"
#include "driver.h"

/* A driver that records what reaches it, over a memory buffer. */
struct rec_state {
	uint8_t data[1 << 20];
	int ops[VS_OP_BLOCK_STATUS + 1];
	uint64_t max_len;
	unsigned flags_seen;
	bool zero_unsupported;
};

static int rec_open(struct vs_node *n, const struct vs_open_opts *o, struct vs_error *e)
{
	(void)o;
	(void)e;
	n->size = 1 << 20;
	n->caps = VS_CAP_WRITE_ZEROES | VS_CAP_DISCARD;
	return 0;
}

static void rec_close(struct vs_node *n)
{
	(void)n;
}

static int rec_submit(struct vs_node *n, struct vs_req *req)
{
	struct rec_state *s = n->opaque;
	uint64_t off = req->offset;

	s->ops[req->op]++;
	s->flags_seen |= req->flags;
	if (req->len > s->max_len)
		s->max_len = req->len;
	/* The contract the generic layer promises. */
	assert_true(req->op == VS_OP_FLUSH || req->offset + req->len <= n->size);
	assert_true(req->op == VS_OP_FLUSH || (req->offset % n->limits.request_align == 0 &&
					       req->len % n->limits.request_align == 0));
	assert_true(!n->limits.max_transfer || req->op > VS_OP_WRITE ||
		    req->len <= n->limits.max_transfer);
	switch (req->op) {
	case VS_OP_READ:
	case VS_OP_WRITE:
		for (int i = 0; i < req->niov; i++) {
			if (req->op == VS_OP_READ)
				memcpy(req->iov[i].iov_base, s->data + off, req->iov[i].iov_len);
			else
				memcpy(s->data + off, req->iov[i].iov_base, req->iov[i].iov_len);
			off += req->iov[i].iov_len;
		}
		return 0;
	case VS_OP_WRITE_ZEROES:
		if (s->zero_unsupported)
			return -ENOTSUP;
		memset(s->data + off, 0, req->len);
		return 0;
	case VS_OP_DISCARD:
	case VS_OP_FLUSH:
		return 0;
	default:
		return -EINVAL;
	}
}

static const struct vs_driver rec_driver = {
	.name = "rec",
	.state_size = sizeof(struct rec_state),
	.open = rec_open,
	.close = rec_close,
	.submit = rec_submit,
};

static struct vs_node *rec_node(uint32_t align, uint64_t max_transfer)
{
	struct vs_node *n = calloc(1, sizeof(*n));

	n->drv = &rec_driver;
	n->opaque = calloc(1, sizeof(struct rec_state));
	n->filename = strdup("rec");
	n->knobs = vs_cache_mode_knobs(VS_CACHE_WRITEBACK);
	n->limits.request_align = align;
	n->limits.mem_align = 1;
	n->limits.max_transfer = max_transfer;
	rec_open(n, NULL, NULL);
	return n;
}

static void rec_free(struct vs_node *n)
{
	free(n->opaque);
	free(n->filename);
	free(n);
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 31 + seed);
}

CO_TEST(test_node_unaligned_rmw)
{
	struct vs_node *n = rec_node(512, 0);
	struct rec_state *s = n->opaque;
	uint8_t buf[1000], back[1000];

	(void)arg;
	fill(s->data, sizeof(s->data), 1);
	fill(buf, sizeof(buf), 9);
	assert_int_equal(vs_node_pwrite(n, 700, buf, sizeof(buf), 0), 0);
	/* Bytes around the write are untouched, the write landed. */
	assert_int_equal(memcmp(s->data + 700, buf, sizeof(buf)), 0);
	assert_int_equal(s->data[699], (uint8_t)(699 * 31 + 1));
	assert_int_equal(s->data[1700], (uint8_t)(1700 * 31 + 1));
	assert_int_equal(vs_node_pread(n, 700, back, sizeof(back)), 0);
	assert_memory_equal(back, buf, sizeof(buf));
	rec_free(n);
}

CO_TEST(test_node_split_to_max_transfer)
{
	struct vs_node *n = rec_node(1, 4096);
	struct rec_state *s = n->opaque;
	uint8_t *buf = malloc(100000), *back = malloc(100000);
	struct iovec iov[3] = { { buf, 10000 }, { buf + 10000, 3 }, { buf + 10003, 89997 } };

	(void)arg;
	fill(buf, 100000, 3);
	assert_int_equal(vs_node_pwritev(n, 5, 100000, iov, 3, 0), 0);
	assert_true(s->max_len <= 4096);
	assert_int_equal(s->ops[VS_OP_WRITE], (100000 + 4095) / 4096);
	assert_int_equal(vs_node_pread(n, 5, back, 100000), 0);
	assert_memory_equal(back, buf, 100000);
	free(buf);
	free(back);
	rec_free(n);
}

CO_TEST(test_node_range_and_permissions)
{
	struct vs_node *n = rec_node(1, 0);
	uint8_t b[16] = { 0 };

	(void)arg;
	assert_int_equal(vs_node_pread(n, (1 << 20) - 8, b, 16), -EINVAL);
	assert_int_equal(vs_node_pwrite(n, (1 << 20), b, 1, 0), -EINVAL);
	assert_int_equal(vs_node_pwrite(n, UINT64_MAX - 4, b, 16, 0), -EINVAL);
	assert_int_equal(vs_node_write_zeroes(n, (1 << 20) - 1, 2, 0), -EINVAL);
	n->read_only = true;
	assert_int_equal(vs_node_pwrite(n, 0, b, 16, 0), -EPERM);
	assert_int_equal(vs_node_discard(n, 0, 16), -EPERM);
	assert_int_equal(vs_node_write_zeroes(n, 0, 16, 0), -EPERM);
	assert_int_equal(vs_node_pread(n, 0, b, 16), 0);
	rec_free(n);
}

CO_TEST(test_node_fua_emulated_as_flush)
{
	struct vs_node *n = rec_node(1, 0);
	struct rec_state *s = n->opaque;
	uint8_t b[16] = { 0 };

	(void)arg;
	assert_int_equal(vs_node_pwrite(n, 0, b, 16, VS_REQ_FUA), 0);
	assert_int_equal(s->ops[VS_OP_FLUSH], 1);
	assert_false(s->flags_seen & VS_REQ_FUA);
	/* writethrough on the top node makes every write durable */
	n->writethrough = true;
	assert_int_equal(vs_node_pwrite(n, 0, b, 16, 0), 0);
	assert_int_equal(s->ops[VS_OP_FLUSH], 2);
	rec_free(n);
}

CO_TEST(test_node_write_zeroes_fallback)
{
	struct vs_node *n = rec_node(512, 0);
	struct rec_state *s = n->opaque;

	(void)arg;
	memset(s->data, 0xaa, sizeof(s->data));
	s->zero_unsupported = true;
	assert_int_equal(vs_node_write_zeroes(n, 100, 5000, VS_REQ_NO_FALLBACK), -ENOTSUP);
	assert_int_equal(s->data[100], 0xaa);
	assert_int_equal(vs_node_write_zeroes(n, 100, 5000, 0), 0);
	for (int i = 100; i < 5100; i++)
		assert_int_equal(s->data[i], 0);
	assert_int_equal(s->data[99], 0xaa);
	assert_int_equal(s->data[5100], 0xaa);
	rec_free(n);
}

static char tmpdir[] = "/tmp/vstor-test-node-XXXXXX";

static void path_in_tmp(char *out, size_t sz, const char *name)
{
	snprintf(out, sz, "%s/%s", tmpdir, name);
}

CO_TEST(test_file_direct_unaligned_roundtrip)
{
	char path[256];
	struct vs_open_opts o = { .format = "raw", .cache = VS_CACHE_NONE };
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint8_t buf[3000], back[3000];

	(void)arg;
	path_in_tmp(path, sizeof(path), "direct.raw");
	assert_int_equal(vs_image_create(path, "raw", 1 << 20, NULL, 0, &err), 0);
	o.filename = path;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_true(n->file->limits.request_align >= 512);
	fill(buf, sizeof(buf), 5);
	assert_int_equal(vs_node_pwrite(n, 1234, buf, sizeof(buf), 0), 0);
	assert_int_equal(vs_node_flush(n), 0);
	assert_int_equal(vs_node_pread(n, 1234, back, sizeof(back)), 0);
	assert_memory_equal(back, buf, sizeof(buf));
	vs_node_close(n);
}

CO_TEST(test_file_large_buffered_io_on_workers)
{
	char path[256];
	struct vs_open_opts o = { .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *n;
	size_t len = 3 << 20;
	uint8_t *buf = malloc(len), *back = malloc(len);
	struct iovec iov[3] = { { buf, 1000 },
				{ buf + 1000, (1 << 20) - 1000 },
				{ buf + (1 << 20), 2 << 20 } };

	(void)arg;
	path_in_tmp(path, sizeof(path), "large.raw");
	assert_int_equal(vs_image_create(path, "raw", 8 << 20, NULL, 0, &err), 0);
	o.filename = path;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	fill(buf, len, 11);
	/* 3 MiB buffered: copied by the worker pool, in a scattered iovec. */
	assert_int_equal(vs_node_pwritev(n, 12345, len, iov, 3, VS_REQ_FUA), 0);
	assert_int_equal(vs_node_pread(n, 12345, back, len), 0);
	assert_memory_equal(back, buf, len);
	/* Reading past the end of the written part returns the file's zeroes. */
	assert_int_equal(vs_node_pread(n, 4 << 20, back, 1 << 20), 0);
	for (size_t i = 0; i < (1 << 20); i++)
		assert_int_equal(back[i], 0);
	vs_node_close(n);
	free(buf);
	free(back);
}

CO_TEST(test_file_block_status_holes)
{
	char path[256];
	struct vs_open_opts o = { .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint8_t buf[65536];
	uint64_t pnum;
	unsigned st, depth;

	(void)arg;
	path_in_tmp(path, sizeof(path), "holes.raw");
	assert_int_equal(vs_image_create(path, "raw", 4 << 20, NULL, 0, &err), 0);
	o.filename = path;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	memset(buf, 1, sizeof(buf));
	assert_int_equal(vs_node_pwrite(n, 1 << 20, buf, sizeof(buf), 0), 0);
	assert_int_equal(vs_node_block_status_above(n, 0, 4 << 20, &pnum, &st, NULL, NULL, &depth),
			 0);
	assert_true(st & VS_BS_ZERO);
	assert_int_equal(pnum, 1 << 20);
	assert_int_equal(vs_node_block_status(n, 1 << 20, 3 << 20, &pnum, &st, NULL, NULL), 0);
	assert_true(st & VS_BS_DATA);
	assert_true(pnum >= 65536);
	/* write-zeroes with unmap punches the data out again */
	assert_int_equal(vs_node_write_zeroes(n, 1 << 20, 65536, VS_REQ_MAY_UNMAP), 0);
	assert_int_equal(vs_node_block_status(n, 0, 4 << 20, &pnum, &st, NULL, NULL), 0);
	assert_true(st & VS_BS_ZERO);
	assert_int_equal(pnum, 4 << 20);
	vs_node_close(n);
}

CO_TEST(test_file_locks_exclude_writers)
{
	char path[256];
	struct vs_open_opts o = { .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *a, *b;

	(void)arg;
	path_in_tmp(path, sizeof(path), "lock.raw");
	assert_int_equal(vs_image_create(path, "raw", 1 << 20, NULL, 0, &err), 0);
	o.filename = path;
	assert_int_equal(vs_image_open(&a, &o, &err), 0);
	/* A second writer and a plain reader are refused. */
	assert_int_equal(vs_image_open(&b, &o, &err), -EAGAIN);
	assert_non_null(strstr(err.msg, "lock"));
	vs_error_clear(&err);
	o.read_only = true;
	assert_int_equal(vs_image_open(&b, &o, &err), -EAGAIN);
	vs_error_clear(&err);
	/* -U reads anyway. */
	o.force_share = true;
	assert_int_equal(vs_image_open(&b, &o, &err), 0);
	vs_node_close(b);
	vs_node_close(a);
	/* Once the writer is gone, a writer may open again. */
	o.read_only = false;
	o.force_share = false;
	assert_int_equal(vs_image_open(&a, &o, &err), 0);
	vs_node_close(a);
}

/* An fd of this process open on @path (-1 if none), found through /proc/self/fd. */
static int fd_open_on(const char *path)
{
	char real[PATH_MAX], link[64], target[PATH_MAX];

	assert_non_null(realpath(path, real));
	for (int fd = 0; fd < 1024; fd++) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		if (!strcmp(target, real))
			return fd;
	}
	return -1;
}

/*
 * A close followed at once by an open of the same image never meets the
 * image's own lock (issue 15). An io_uring request still in flight, or one
 * whose completion the kernel has not yet put, holds the open file
 * description, and with it the OFD lock bytes, after close(): a dup of the
 * fd stands in for it here. The close must release the locks itself.
 */
CO_TEST(test_file_close_releases_locks_at_once)
{
	static const char *const fmts[] = { "raw", "qcow2" };

	(void)arg;
	for (unsigned f = 0; f < 2; f++) {
		char path[256];
		struct vs_open_opts o = { .format = fmts[f] };
		struct vs_error err = { 0 };
		struct vs_node *n;
		int fd, held;

		path_in_tmp(path, sizeof(path), "reopen.img");
		unlink(path);
		assert_int_equal(vs_image_create(path, fmts[f], 1 << 20, NULL, 0, &err), 0);
		o.filename = path;
		assert_int_equal(vs_image_open(&n, &o, &err), 0);
		fd = fd_open_on(path);
		assert_true(fd >= 0);
		held = dup(fd);
		assert_true(held >= 0);
		vs_node_close(n);
		if (vs_image_open(&n, &o, &err) < 0)
			fail_msg("%s: reopen after close: %s", fmts[f], err.msg);
		vs_node_close(n);
		close(held);
	}
}

CO_TEST(test_file_create_preallocation)
{
	char path[256];
	struct vs_kv kv = { "preallocation", "full" };
	struct vs_kv bad = { "preallocation", "metadata" };
	struct vs_error err = { 0 };
	struct stat st;

	(void)arg;
	path_in_tmp(path, sizeof(path), "full.raw");
	assert_int_equal(vs_image_create(path, "raw", 1 << 20, &kv, 1, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_true(st.st_blocks * 512 >= (1 << 20));
	assert_int_equal(vs_image_create(path, "raw", 1 << 20, &bad, 1, &err), -EINVAL);
}

struct drain_writer {
	struct vs_node *n;
	uint64_t offset;
	bool done;
	int ret;
};

static void drain_writer_run(void *arg)
{
	struct drain_writer *w = arg;
	uint8_t b[4096];

	fill(b, sizeof(b), (unsigned)w->offset);
	w->ret = vs_node_pwrite(w->n, w->offset, b, sizeof(b), VS_REQ_FUA);
	w->done = true;
}

/*
 * vs_node_drain_begin() returns only once the requests in the node have
 * finished; requests that come during the drain wait for its end, except the
 * drainer's own.
 */
CO_TEST(test_node_drain)
{
	char path[256];
	struct vs_open_opts o = { .format = "raw", .cache = VS_CACHE_NONE };
	struct vs_error err = { 0 };
	struct drain_writer w[8], late;
	struct vs_node *n;
	uint8_t b[4096];

	(void)arg;
	path_in_tmp(path, sizeof(path), "drain.raw");
	assert_int_equal(vs_image_create(path, "raw", 1 << 20, NULL, 0, &err), 0);
	o.filename = path;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	for (unsigned i = 0; i < 8; i++) {
		w[i] = (struct drain_writer){ .n = n, .offset = i * 4096ull };
		assert_non_null(vs_co_spawn(vs_reactor_current(), drain_writer_run, &w[i]));
	}
	vs_co_yield_now(); /* the writers start and wait for the disk */
	assert_true(n->in_flight > 0);
	vs_node_drain_begin(n);
	for (unsigned i = 0; i < 8; i++) {
		assert_true(w[i].done);
		assert_int_equal(w[i].ret, 0);
	}
	late = (struct drain_writer){ .n = n, .offset = 65536 };
	assert_non_null(vs_co_spawn(vs_reactor_current(), drain_writer_run, &late));
	fill(b, sizeof(b), 9);
	/* The drainer's own requests pass, however long the others wait. */
	for (unsigned i = 0; i < 16; i++) {
		assert_int_equal(vs_node_pwrite(n, 131072, b, sizeof(b), VS_REQ_FUA), 0);
		assert_false(late.done);
	}
	vs_node_drain_end(n);
	while (!late.done)
		vs_co_yield_now();
	assert_int_equal(late.ret, 0);
	vs_node_close(n);
}

CO_TEST(test_memory_and_null)
{
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint8_t b[100], back[100];

	(void)arg;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_int_equal(vs_node_size(n), 1 << 20);
	fill(b, sizeof(b), 7);
	assert_int_equal(vs_node_pwrite(n, 77, b, sizeof(b), 0), 0);
	assert_int_equal(vs_node_pread(n, 77, back, sizeof(back)), 0);
	assert_memory_equal(b, back, sizeof(b));
	vs_node_close(n);
	o.filename = "null:64k";
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_int_equal(vs_node_pwrite(n, 0, b, sizeof(b), 0), 0);
	assert_int_equal(vs_node_pread(n, 0, back, sizeof(back)), 0);
	for (size_t i = 0; i < sizeof(back); i++)
		assert_int_equal(back[i], 0);
	vs_node_close(n);
	o.filename = "memory:garbage";
	assert_int_equal(vs_image_open(&n, &o, &err), -EINVAL);
}

/* A probed raw image cannot be turned into another format through sector 0. */
CO_TEST(test_raw_probed_sector0_stays_raw)
{
	struct vs_open_opts o = { .filename = "memory:1M" };
	static const uint8_t qcow2_magic[8] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint8_t b[16], back[16], *sector = calloc(1, 4096);

	(void)arg;
	assert_non_null(sector);
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_string_equal(vs_node_format(n), "raw");
	/* A whole-sector write and an unaligned one: both refused, nothing written. */
	memcpy(sector, qcow2_magic, sizeof(qcow2_magic));
	assert_int_equal(vs_node_pwrite(n, 0, sector, 4096, 0), -EPERM);
	assert_int_equal(vs_node_pwrite(n, 0, qcow2_magic, sizeof(qcow2_magic), 0), -EPERM);
	assert_int_equal(vs_node_pread(n, 0, back, sizeof(back)), 0);
	for (size_t i = 0; i < sizeof(back); i++)
		assert_int_equal(back[i], 0);
	/* Other data in sector 0 and the magic elsewhere are fine. */
	fill(b, sizeof(b), 3);
	assert_int_equal(vs_node_pwrite(n, 5, b, sizeof(b), 0), 0);
	assert_int_equal(vs_node_pwrite(n, 512, qcow2_magic, sizeof(qcow2_magic), 0), 0);
	vs_node_close(n);
	/* -f raw: the user said what it is, and may write anything. */
	o.format = "raw";
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_int_equal(vs_node_pwrite(n, 0, sector, 4096, 0), 0);
	vs_node_close(n);
	free(sector);
}

static void test_cache_mode_table(void **state)
{
	enum vs_cache_mode m;
	struct vs_cache_knobs k;

	(void)state;
	assert_int_equal(vs_cache_mode_parse("none", &m), 0);
	k = vs_cache_mode_knobs(m);
	assert_true(k.direct && k.wce && k.flush_to_disk);
	assert_int_equal(vs_cache_mode_parse("directsync", &m), 0);
	k = vs_cache_mode_knobs(m);
	assert_true(k.direct && !k.wce && k.flush_to_disk);
	assert_int_equal(vs_cache_mode_parse("unsafe", &m), 0);
	k = vs_cache_mode_knobs(m);
	assert_true(!k.direct && k.wce && !k.flush_to_disk);
	assert_int_equal(vs_cache_mode_parse("writethrough", &m), 0);
	assert_false(vs_cache_mode_knobs(m).wce);
	assert_int_equal(vs_cache_mode_parse("bogus", &m), -EINVAL);
	assert_string_equal(vs_cache_mode_name(VS_CACHE_WRITEBACK), "writeback");
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_unaligned_rmw),
		cmocka_unit_test(test_node_split_to_max_transfer),
		cmocka_unit_test(test_node_range_and_permissions),
		cmocka_unit_test(test_node_fua_emulated_as_flush),
		cmocka_unit_test(test_node_write_zeroes_fallback),
		cmocka_unit_test(test_file_direct_unaligned_roundtrip),
		cmocka_unit_test(test_file_large_buffered_io_on_workers),
		cmocka_unit_test(test_file_block_status_holes),
		cmocka_unit_test(test_file_locks_exclude_writers),
		cmocka_unit_test(test_file_close_releases_locks_at_once),
		cmocka_unit_test(test_file_create_preallocation),
		cmocka_unit_test(test_node_drain),
		cmocka_unit_test(test_memory_and_null),
		cmocka_unit_test(test_raw_probed_sector0_stays_raw),
		cmocka_unit_test(test_cache_mode_table),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
