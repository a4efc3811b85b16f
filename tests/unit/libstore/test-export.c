/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the export layer (export.c): range and read-only checks,
 * writethrough, discard and detect-zeroes policies, statistics and hooks.
 * The node is memory:1M, through log-writes when a test needs to see what
 * reached the node (the operation and its FUA / MAY_UNMAP flags).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "co-test.h"
#include "vstor/export.h"
#include "vstor/node.h"
#include "vstor/reactor.h"
#include "vstor/throttle.h"

#define MiB (1u << 20)

/* Log record types and flags of log-writes (see driver-log-writes.c). */
#define LW_WRITE 1
#define LW_DISCARD 2
#define LW_WRITE_ZEROES 3
#define LW_FLUSH 4
#define LW_FUA 1
#define LW_MAY_UNMAP 2

static char tmpdir[] = "/tmp/test-export-XXXXXX";
static char logpath[300];

struct lw_rec {
	uint32_t type, flags;
	uint64_t offset, len;
};

/* The records of the log so far, the last one in *@last; returns their count. */
static unsigned log_records(struct lw_rec *last)
{
	FILE *f = fopen(logpath, "rb");
	uint8_t r[32];
	unsigned n = 0;

	assert_non_null(f);
	assert_int_equal(fread(r, 1, 32, f), 32); /* the header */
	memset(last, 0, sizeof(*last));
	while (fread(r, 1, 32, f) == 32) {
		memcpy(&last->type, r, 4);
		memcpy(&last->flags, r + 4, 4);
		memcpy(&last->offset, r + 16, 8);
		memcpy(&last->len, r + 24, 8);
		if (last->type == LW_WRITE)
			assert_int_equal(fseek(f, (long)last->len, SEEK_CUR), 0);
		n++;
	}
	fclose(f);
	return n;
}

/* memory:1M as a raw image; with @logged, through log-writes:LOG. */
static struct vs_node *open_node(bool logged)
{
	char uri[400];
	struct vs_open_opts o = { .filename = uri, .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *n = NULL;

	if (logged)
		snprintf(uri, sizeof(uri), "log-writes:%s:memory:1M", logpath);
	else
		snprintf(uri, sizeof(uri), "memory:1M");
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	return n;
}

static struct vs_export *new_export(struct vs_node *n, const struct vs_export_opts *base)
{
	struct vs_export_opts o = base ? *base : (struct vs_export_opts){ 0 };
	struct vs_export *e = NULL;

	o.node = n;
	assert_int_equal(vs_export_new(&e, &o), 0);
	return e;
}

static int req(struct vs_export *e, enum vs_export_op op, uint64_t off, void *buf, uint64_t len,
	       unsigned flags)
{
	struct iovec iov = { buf, (size_t)len };

	return vs_export_request(e, op, off, len, &iov, 1, flags);
}

CO_TEST(test_export_range_checks)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e = new_export(n, NULL);
	static uint8_t b[4096];

	(void)arg;
	assert_int_equal(vs_export_size(e), MiB);
	assert_string_equal(vs_export_name(e), "");
	assert_int_equal(req(e, VS_EXPORT_OP_READ, MiB - 4096, b, 4096, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_READ, MiB - 8, b, 16, 0), -EINVAL);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 1, 0), -EINVAL);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, UINT64_MAX - 4, b, 16, 0), -EINVAL);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, MiB - 1, NULL, 2, 0), -EINVAL);
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, MiB + 1, NULL, 0, 0), -EINVAL);
	/* The end itself with no length is inside; flush has no range. */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 0, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_FLUSH, 0, NULL, 0, 0), 0);
	assert_int_equal(vs_export_check(e, VS_EXPORT_OP_READ, MiB, 1), -EINVAL);
	assert_int_equal(vs_export_check(e, VS_EXPORT_OP_COUNT, 0, 1), -EINVAL);
	vs_export_free(e);

	/* A protocol addressing sectors sees whole ones. */
	e = new_export(n, &(struct vs_export_opts){ .block_size = 4096 * 3 });
	assert_int_equal(vs_export_size(e), MiB - MiB % (4096 * 3));
	assert_int_equal(req(e, VS_EXPORT_OP_READ, vs_export_size(e), b, 1, 0), -EINVAL);
	vs_export_free(e);
	vs_node_close(n);
}

CO_TEST(test_export_read_only)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e = new_export(n, &(struct vs_export_opts){ .read_only = true });
	static uint8_t b[4096];

	(void)arg;
	assert_true(vs_export_is_read_only(e));
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, b, 4096, 0), -EPERM);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 0, NULL, 4096, 0), -EPERM);
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 0, NULL, 4096, 0), -EPERM);
	/* Read-only wins over the range: the same answer as NBD gave. */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 2 * MiB, b, 1, 0), -EPERM);
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, 4096, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_FLUSH, 0, NULL, 0, 0), 0);
	vs_export_free(e);
	vs_node_close(n);
}

CO_TEST(test_export_writethrough_makes_writes_fua)
{
	struct vs_node *n = open_node(true);
	struct vs_export *e = new_export(n, NULL);
	static uint8_t b[4096];
	struct lw_rec r;

	(void)arg;
	memset(b, 0xab, sizeof(b));
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, b, 4096, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE);
	assert_int_equal(r.flags, 0);
	/* The client's FUA passes. */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, b, 4096, VS_EXPORT_FUA), 0);
	log_records(&r);
	assert_int_equal(r.flags, LW_FUA);
	/* The write cache off (a guest's CONFIG_WCE): every write is FUA. */
	vs_export_set_writethrough(e, true);
	assert_true(vs_export_writethrough(e));
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 4096, b, 4096, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE);
	assert_int_equal(r.offset, 4096);
	assert_int_equal(r.flags, LW_FUA);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 8192, NULL, 4096, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE_ZEROES);
	assert_int_equal(r.flags, LW_FUA);
	vs_export_free(e);
	vs_node_close(n);
}

CO_TEST(test_export_discard_ignore_and_unmap)
{
	struct vs_node *n = open_node(true);
	struct vs_export *e = new_export(n, NULL);
	struct lw_rec r;
	unsigned before;

	(void)arg;
	assert_int_equal(vs_export_discard_mode(e), VS_EXPORT_DISCARD_IGNORE);
	before = log_records(&r);
	/* ignore: succeeds, nothing reaches the node (FUA still flushes) */
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 0, NULL, 65536, 0), 0);
	assert_int_equal(log_records(&r), before);
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 0, NULL, 65536, VS_EXPORT_FUA), 0);
	assert_int_equal(log_records(&r), before + 1);
	assert_int_equal(r.type, LW_FLUSH);
	/* ... and write-zeroes may not deallocate */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 0, NULL, 4096, VS_EXPORT_MAY_UNMAP), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE_ZEROES);
	assert_int_equal(r.flags, 0);
	vs_export_free(e);

	e = new_export(n, &(struct vs_export_opts){ .discard = VS_EXPORT_DISCARD_UNMAP });
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 65536, NULL, 65536, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_DISCARD);
	assert_int_equal(r.offset, 65536);
	assert_int_equal(r.len, 65536);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 0, NULL, 4096, VS_EXPORT_MAY_UNMAP), 0);
	log_records(&r);
	assert_int_equal(r.flags, LW_MAY_UNMAP);
	/* NBD's NO_HOLE: no MAY_UNMAP asked, none given */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 0, NULL, 4096, 0), 0);
	log_records(&r);
	assert_int_equal(r.flags, 0);
	vs_export_free(e);
	vs_node_close(n);
}

CO_TEST(test_export_detect_zeroes)
{
	struct vs_node *n = open_node(true);
	static uint8_t zero[8192], data[8192];
	struct vs_export *e;
	struct lw_rec r;

	(void)arg;
	data[8191] = 1;
	/* off: a zero write is a write */
	e = new_export(n, NULL);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, zero, 8192, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE);
	vs_export_free(e);
	/* on: write-zeroes, never deallocating; FUA is kept */
	e = new_export(n, &(struct vs_export_opts){ .detect_zeroes = VS_EXPORT_DETECT_ZEROES_ON,
						    .discard = VS_EXPORT_DISCARD_UNMAP });
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, zero, 8192, VS_EXPORT_FUA), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE_ZEROES);
	assert_int_equal(r.flags, LW_FUA);
	assert_int_equal(r.len, 8192);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, data, 8192, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE);
	vs_export_free(e);
	/* unmap with discard=unmap: may deallocate */
	e = new_export(n, &(struct vs_export_opts){ .detect_zeroes = VS_EXPORT_DETECT_ZEROES_UNMAP,
						    .discard = VS_EXPORT_DISCARD_UNMAP });
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, zero, 8192, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE_ZEROES);
	assert_int_equal(r.flags, LW_MAY_UNMAP);
	vs_export_free(e);
	/* unmap with discard=ignore: zeroes, not holes (qemu-nbd's semantics) */
	e = new_export(n,
		       &(struct vs_export_opts){ .detect_zeroes = VS_EXPORT_DETECT_ZEROES_UNMAP });
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, zero, 8192, 0), 0);
	log_records(&r);
	assert_int_equal(r.type, LW_WRITE_ZEROES);
	assert_int_equal(r.flags, 0);
	vs_export_free(e);
	vs_node_close(n);
}

static uint64_t bucket_sum(const struct vs_export_op_stats *s)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < VS_EXPORT_LATENCY_BUCKETS; i++)
		t += s->latency_us[i];
	return t;
}

CO_TEST(test_export_stats_count_ops_bytes_errors)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e = new_export(n, &(struct vs_export_opts){ .name = "disk0" });
	static uint8_t b[4096];
	struct vs_export_stats st;

	(void)arg;
	assert_string_equal(vs_export_name(e), "disk0");
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, b, 4096, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 4096, b, 512, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 512, 0), -EINVAL);
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, 4096, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_FLUSH, 0, NULL, 0, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 0, NULL, 8192, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 0, NULL, 1024, 0), 0);
	vs_export_get_stats(e, &st);
	assert_int_equal(st.op[VS_EXPORT_OP_WRITE].ops, 3);
	assert_int_equal(st.op[VS_EXPORT_OP_WRITE].bytes, 4096 + 512);
	assert_int_equal(st.op[VS_EXPORT_OP_WRITE].errors, 1);
	assert_int_equal(bucket_sum(&st.op[VS_EXPORT_OP_WRITE]), 3);
	assert_int_equal(st.op[VS_EXPORT_OP_READ].ops, 1);
	assert_int_equal(st.op[VS_EXPORT_OP_READ].bytes, 4096);
	assert_int_equal(st.op[VS_EXPORT_OP_READ].errors, 0);
	assert_int_equal(st.op[VS_EXPORT_OP_FLUSH].ops, 1);
	assert_int_equal(st.op[VS_EXPORT_OP_DISCARD].ops, 1);
	assert_int_equal(st.op[VS_EXPORT_OP_DISCARD].bytes, 8192);
	assert_int_equal(st.op[VS_EXPORT_OP_WRITE_ZEROES].bytes, 1024);
	assert_int_equal(bucket_sum(&st.op[VS_EXPORT_OP_WRITE_ZEROES]), 1);
	assert_string_equal(vs_export_op_name(VS_EXPORT_OP_WRITE_ZEROES), "write-zeroes");
	assert_null(vs_export_op_name(VS_EXPORT_OP_COUNT));
	vs_export_free(e);
	vs_node_close(n);
}

/* What the hooks saw. */
struct hook_log {
	unsigned before, writes, resizes;
	enum vs_export_op last_op;
	uint64_t last_off, last_len, size;
	int refuse;	   /* -errno for before_request to return */
	uint64_t delay_ns; /* before_request sleeps this long */
};

static int hook_before(void *opaque, enum vs_export_op op, uint64_t offset, uint64_t len)
{
	struct hook_log *h = opaque;

	(void)op;
	(void)offset;
	(void)len;
	h->before++;
	if (h->delay_ns)
		vs_co_sleep_ns(h->delay_ns); /* a throttle */
	return h->refuse;
}

static void hook_after_write(void *opaque, enum vs_export_op op, uint64_t offset, uint64_t len)
{
	struct hook_log *h = opaque;

	h->writes++;
	h->last_op = op;
	h->last_off = offset;
	h->last_len = len;
}

static void hook_resized(void *opaque, uint64_t size)
{
	struct hook_log *h = opaque;

	h->resizes++;
	h->size = size;
}

CO_TEST(test_export_hooks)
{
	struct vs_node *n = open_node(false);
	struct hook_log h = { 0 };
	struct vs_export_hooks hooks = { .before_request = hook_before,
					 .after_write = hook_after_write,
					 .resized = hook_resized,
					 .opaque = &h };
	struct vs_export *e = new_export(
		n, &(struct vs_export_opts){ .discard = VS_EXPORT_DISCARD_UNMAP, .hooks = &hooks });
	static uint8_t b[4096];
	struct vs_export_stats st;
	struct vs_error err = { 0 };

	(void)arg;
	/* after_write sees what may have changed; reads do not call it */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 12288, b, 4096, 0), 0);
	assert_int_equal(h.before, 1);
	assert_int_equal(h.writes, 1);
	assert_int_equal(h.last_op, VS_EXPORT_OP_WRITE);
	assert_int_equal(h.last_off, 12288);
	assert_int_equal(h.last_len, 4096);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE_ZEROES, 65536, NULL, 1000, 0), 0);
	assert_int_equal(h.last_op, VS_EXPORT_OP_WRITE_ZEROES);
	assert_int_equal(h.last_off, 65536);
	assert_int_equal(h.last_len, 1000);
	assert_int_equal(req(e, VS_EXPORT_OP_DISCARD, 0, NULL, 8192, 0), 0);
	assert_int_equal(h.last_op, VS_EXPORT_OP_DISCARD);
	assert_int_equal(h.writes, 3);
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, 4096, 0), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_FLUSH, 0, NULL, 0, 0), 0);
	assert_int_equal(h.writes, 3);
	assert_int_equal(h.before, 5);
	/* A request the checks refuse never reaches the hooks. */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 1, 0), -EINVAL);
	assert_int_equal(h.before, 5);

	/* The throttle refuses: the node is not reached, the error is counted. */
	h.refuse = -EAGAIN;
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 0, b, 4096, 0), -EAGAIN);
	assert_int_equal(h.writes, 3);
	vs_export_get_stats(e, &st);
	assert_int_equal(st.op[VS_EXPORT_OP_WRITE].errors, 2);
	/* The throttle delays: the request waits in the hook, its latency shows it. */
	h.refuse = 0;
	h.delay_ns = 3000000; /* 3 ms: bucket 11 ([2048, 4096) µs) or later */
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, 4096, 0), 0);
	vs_export_get_stats(e, &st);
	{
		uint64_t slow = 0;

		for (unsigned i = 11; i < VS_EXPORT_LATENCY_BUCKETS; i++)
			slow += st.op[VS_EXPORT_OP_READ].latency_us[i];
		assert_int_equal(slow, 1);
	}
	h.delay_ns = 0;

	/* Resize: the hook is told, range checks follow. */
	assert_int_equal(vs_node_truncate(n, 2 * MiB, VS_PREALLOC_OFF, false, &err), 0);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 4096, 0), -EINVAL);
	vs_export_resize(e, vs_node_size(n));
	assert_int_equal(h.resizes, 1);
	assert_int_equal(h.size, 2 * MiB);
	assert_int_equal(vs_export_size(e), 2 * MiB);
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, MiB, b, 4096, 0), 0);
	assert_int_equal(h.last_off, MiB);
	vs_export_free(e);
	vs_node_close(n);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void test_throttle_config_check(void **state)
{
	struct vs_throttle_config c;
	struct vs_error err = { 0 };

	(void)state;
	vs_throttle_config_init(&c);
	assert_false(vs_throttle_config_enabled(&c));
	assert_int_equal(vs_throttle_config_check(&c, &err), 0);
	c.limit[VS_THROTTLE_IOPS_TOTAL].avg = 10;
	c.limit[VS_THROTTLE_IOPS_READ].avg = 5;
	assert_int_equal(vs_throttle_config_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "bps/iops/max total values and read/write values cannot be "
				     "used at the same time");
	c.limit[VS_THROTTLE_IOPS_READ].avg = 0;
	c.limit[VS_THROTTLE_IOPS_TOTAL].max = 5;
	vs_error_clear(&err);
	assert_int_equal(vs_throttle_config_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "bps_max/iops_max cannot be lower than bps/iops");
	c.limit[VS_THROTTLE_IOPS_TOTAL].max = 0;
	c.limit[VS_THROTTLE_IOPS_TOTAL].burst_length = 3;
	vs_error_clear(&err);
	assert_int_equal(vs_throttle_config_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "burst length set without burst rate");
	c.limit[VS_THROTTLE_IOPS_TOTAL].burst_length = 0;
	vs_error_clear(&err);
	assert_int_equal(vs_throttle_config_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "the burst length cannot be 0");
	c.limit[VS_THROTTLE_IOPS_TOTAL].burst_length = 1;
	c.limit[VS_THROTTLE_BPS_WRITE].avg = VS_THROTTLE_VALUE_MAX + 1;
	vs_error_clear(&err);
	assert_int_equal(vs_throttle_config_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "bps/iops/max values must be within [0, 1000000000000000]");
	c.limit[VS_THROTTLE_BPS_WRITE].avg = 0;
	assert_int_equal(vs_throttle_config_check(&c, NULL), 0);
	assert_true(vs_throttle_config_enabled(&c));
	assert_string_equal(vs_throttle_bucket_name(VS_THROTTLE_IOPS_WRITE), "iops-write");
}

/*
 * 100 iops: a tenth of a second's worth passes at once, the rest at the
 * rate; reads and writes share the total; flush is not throttled; taking
 * the group off the export lets requests straight through.
 */
CO_TEST(test_export_throttle_paces_requests)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e = new_export(n, NULL);
	struct vs_throttle_group *g;
	struct vs_throttle_config c;
	static uint8_t b[4096];
	uint64_t t0, ms;

	(void)arg;
	assert_int_equal(vs_throttle_group_new(&g), 0);
	vs_throttle_config_init(&c);
	c.limit[VS_THROTTLE_IOPS_TOTAL].avg = 100;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	vs_export_set_throttle(e, g);
	assert_ptr_equal(vs_export_throttle(e), g);
	t0 = mono_ns();
	for (int i = 0; i < 30; i++)
		assert_int_equal(req(e, i % 2 ? VS_EXPORT_OP_WRITE : VS_EXPORT_OP_READ, 0, b,
				     sizeof(b), 0),
				 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(req(e, VS_EXPORT_OP_FLUSH, 0, NULL, 0, 0), 0);
	ms = (mono_ns() - t0) / 1000000;
	/* 10 at once, then 20 at 10 ms each. */
	assert_true(ms >= 180 && ms < 400);
	vs_export_set_throttle(e, NULL);
	t0 = mono_ns();
	for (int i = 0; i < 100; i++)
		assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, sizeof(b), 0), 0);
	assert_true((mono_ns() - t0) / 1000000 < 100);
	vs_throttle_group_unref(g); /* the export held none any more: freed */
	vs_export_free(e);
	vs_node_close(n);
}

struct held_write {
	struct vs_export *e;
	uint64_t off;
	uint8_t buf[4096];
	bool done;
	int ret;
};

static void held_write_co(void *arg)
{
	struct held_write *w = arg;

	w->ret = req(w->e, VS_EXPORT_OP_WRITE, w->off, w->buf, sizeof(w->buf), 0);
	w->done = true;
}

struct held_read {
	struct vs_export *e;
	bool done;
	int ret;
};

static void held_read_co(void *arg)
{
	struct held_read *r = arg;
	static uint8_t b[512];

	r->ret = req(r->e, VS_EXPORT_OP_READ, 0, b, sizeof(b), 0);
	r->done = true;
}

struct seen_error {
	unsigned calls;
	enum vs_export_op op;
	int err;
	enum vs_export_error_action action;
};

static void record_error(void *opaque, enum vs_export_op op, int err,
			 enum vs_export_error_action action)
{
	struct seen_error *s = opaque;

	s->calls++;
	s->op = op;
	s->err = err;
	s->action = action;
}

/* Let the other coroutines run until @cond holds (bounded). */
#define RUN_UNTIL(cond)                                       \
	do {                                                  \
		for (int i_ = 0; i_ < 10000 && !(cond); i_++) \
			vs_co_yield_now();                    \
		assert_true(cond);                            \
	} while (0)

/*
 * werror=enospc: a write failing with ENOSPC stops the export and is held,
 * a later write is held at the entry; resume retries the first and lets the
 * second in, and both land. EIO under the same policy is reported.
 */
CO_TEST(test_export_error_policy_stop_and_resume)
{
	char flag[300], uri[700];
	struct vs_open_opts o = { .filename = uri, .format = "raw" };
	struct vs_error err = { 0 };
	struct vs_node *n = NULL;
	struct vs_export *e;
	struct seen_error seen = { 0 };
	static struct held_write w1, w2;
	static uint8_t b[4096];
	FILE *f;

	(void)arg;
	snprintf(flag, sizeof(flag), "%s/full", tmpdir);
	snprintf(uri, sizeof(uri), "fault:write,err=ENOSPC,if=%s+write,off=512K,err=EIO:memory:1M",
		 flag);
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	e = new_export(n, NULL);
	vs_export_set_error_policy(e, &(struct vs_export_error_policy){
					      .write = VS_EXPORT_ERROR_ENOSPC,
					      .on_error = record_error,
					      .opaque = &seen,
				      });
	f = fopen(flag, "w");
	assert_non_null(f);
	fclose(f);
	w1 = (struct held_write){ .e = e, .off = 0 };
	w2 = (struct held_write){ .e = e, .off = 4096 };
	memset(w1.buf, 0xa1, sizeof(w1.buf));
	memset(w2.buf, 0xb2, sizeof(w2.buf));
	assert_non_null(vs_co_spawn(vs_reactor_current(), held_write_co, &w1));
	RUN_UNTIL(vs_export_is_stopped(e));
	assert_int_equal(seen.calls, 1);
	assert_int_equal(seen.op, VS_EXPORT_OP_WRITE);
	assert_int_equal(seen.err, -ENOSPC);
	assert_int_equal(seen.action, VS_EXPORT_ERROR_STOP);
	assert_non_null(vs_co_spawn(vs_reactor_current(), held_write_co, &w2));
	for (int i = 0; i < 100; i++)
		vs_co_yield_now();
	assert_false(w1.done);
	assert_false(w2.done);
	/* A drain does not wait for held requests. */
	vs_export_drain_begin(e);
	vs_export_drain_end(e);
	assert_int_equal(unlink(flag), 0); /* space freed */
	vs_export_resume(e);
	RUN_UNTIL(w1.done && w2.done);
	assert_int_equal(w1.ret, 0);
	assert_int_equal(w2.ret, 0);
	assert_false(vs_export_is_stopped(e));
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 0, b, sizeof(b), 0), 0);
	assert_memory_equal(b, w1.buf, sizeof(b));
	assert_int_equal(req(e, VS_EXPORT_OP_READ, 4096, b, sizeof(b), 0), 0);
	assert_memory_equal(b, w2.buf, sizeof(b));
	/* Not ENOSPC: reported. */
	assert_int_equal(req(e, VS_EXPORT_OP_WRITE, 512 * 1024, b, sizeof(b), 0), -EIO);
	assert_int_equal(seen.calls, 2);
	assert_int_equal(seen.action, VS_EXPORT_ERROR_REPORT);
	assert_false(vs_export_is_stopped(e));
	vs_export_free(e);
	vs_node_close(n);
}

/*
 * At 1 iops, requests queue for seconds; a drain (a graph change) and
 * leaving the group let them through at once, and a live change of the
 * limits applies to the queued ones.
 */
CO_TEST(test_export_throttle_released_by_drain)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e = new_export(n, NULL), *other = new_export(n, NULL);
	struct vs_throttle_group *g;
	struct vs_throttle_config c;
	static struct held_read r[8];
	uint64_t t0;

	(void)arg;
	assert_int_equal(vs_throttle_group_new(&g), 0);
	vs_throttle_config_init(&c);
	c.limit[VS_THROTTLE_IOPS_READ].avg = 1;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	vs_export_set_throttle(e, g);
	vs_export_set_throttle(other, g);
	t0 = mono_ns();
	for (int i = 0; i < 8; i++) {
		r[i] = (struct held_read){ .e = i < 6 ? e : other };
		assert_non_null(vs_co_spawn(vs_reactor_current(), held_read_co, &r[i]));
	}
	RUN_UNTIL(r[0].done);
	for (int i = 0; i < 50; i++)
		vs_co_yield_now();
	assert_false(r[1].done);
	/* e's requests leave the queue; other's stay behind in the group. */
	vs_export_drain_begin(e);
	vs_export_drain_end(e);
	RUN_UNTIL(r[1].done && r[2].done && r[3].done && r[4].done && r[5].done);
	assert_false(r[6].done);
	/* A faster limit applies to the queued ones at once. */
	c.limit[VS_THROTTLE_IOPS_READ].avg = 1000;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	RUN_UNTIL(r[6].done && r[7].done);
	assert_true((mono_ns() - t0) / 1000000 < 500);
	for (int i = 0; i < 8; i++)
		assert_int_equal(r[i].ret, 0);
	/* Leaving the group releases what waits there. */
	c.limit[VS_THROTTLE_IOPS_READ].avg = 1;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	for (int i = 0; i < 4; i++) {
		r[i] = (struct held_read){ .e = e };
		assert_non_null(vs_co_spawn(vs_reactor_current(), held_read_co, &r[i]));
	}
	RUN_UNTIL(r[0].done);
	assert_false(r[3].done);
	vs_export_set_throttle(e, NULL);
	RUN_UNTIL(r[1].done && r[2].done && r[3].done);
	assert_true((mono_ns() - t0) / 1000000 < 900);
	vs_export_free(other); /* drops its reference */
	vs_throttle_group_unref(g);
	vs_export_free(e);
	vs_node_close(n);
}

/*
 * A request woken as the head of its queue and released before it runs
 * still hands the queue on: the requests behind it are not stranded.
 */
CO_TEST(test_export_throttle_head_released_before_it_runs)
{
	struct vs_node *n = open_node(false);
	struct vs_export *e1 = new_export(n, NULL), *e2 = new_export(n, NULL);
	struct vs_throttle_group *g;
	struct vs_throttle_config c;
	static struct held_read r[4];

	(void)arg;
	assert_int_equal(vs_throttle_group_new(&g), 0);
	vs_throttle_config_init(&c);
	c.limit[VS_THROTTLE_IOPS_TOTAL].avg = 1;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	vs_export_set_throttle(e1, g);
	vs_export_set_throttle(e2, g);
	r[0] = (struct held_read){ .e = e1 }; /* passes */
	r[1] = (struct held_read){ .e = e2 }; /* the head, on its timer */
	r[2] = (struct held_read){ .e = e1 }; /* parked */
	r[3] = (struct held_read){ .e = e2 }; /* parked behind it */
	for (int i = 0; i < 4; i++)
		assert_non_null(vs_co_spawn(vs_reactor_current(), held_read_co, &r[i]));
	RUN_UNTIL(r[0].done);
	/* r[1] goes at once and wakes r[2] as the head; release r[2] before it runs. */
	c.limit[VS_THROTTLE_IOPS_TOTAL].avg = 2;
	assert_int_equal(vs_throttle_group_set_config(g, &c, NULL), 0);
	RUN_UNTIL(r[1].done);
	vs_export_set_throttle(e1, NULL);
	/* r[3] still gets its turn (at 2 iops, within a second). */
	RUN_UNTIL(r[2].done);
	for (int i = 0; i < 300 && !r[3].done; i++)
		vs_co_sleep_ns(10 * 1000 * 1000);
	assert_true(r[3].done);
	vs_export_free(e1);
	vs_export_free(e2);
	vs_throttle_group_unref(g);
	vs_node_close(n);
}

static void test_export_error_action_names(void **state)
{
	enum vs_export_error_action a;

	(void)state;
	assert_int_equal(vs_export_error_action_parse("enospc", &a), 0);
	assert_int_equal(a, VS_EXPORT_ERROR_ENOSPC);
	assert_string_equal(vs_export_error_action_name(VS_EXPORT_ERROR_STOP), "stop");
	assert_int_equal(vs_export_error_action_parse("ignore", &a), -EINVAL);
	assert_null(vs_export_error_action_name((enum vs_export_error_action)7));
}

static void test_export_mode_names(void **state)
{
	enum vs_export_discard d;
	enum vs_export_detect_zeroes z;

	(void)state;
	assert_int_equal(vs_export_discard_parse("unmap", &d), 0);
	assert_int_equal(d, VS_EXPORT_DISCARD_UNMAP);
	assert_int_equal(vs_export_discard_parse("off", &d), 0);
	assert_int_equal(d, VS_EXPORT_DISCARD_IGNORE);
	assert_int_equal(vs_export_discard_parse("trim", &d), -EINVAL);
	assert_int_equal(vs_export_detect_zeroes_parse("unmap", &z), 0);
	assert_int_equal(z, VS_EXPORT_DETECT_ZEROES_UNMAP);
	assert_int_equal(vs_export_detect_zeroes_parse("on", &z), 0);
	assert_int_equal(z, VS_EXPORT_DETECT_ZEROES_ON);
	assert_int_equal(vs_export_detect_zeroes_parse("yes", &z), -EINVAL);
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(logpath);
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_export_range_checks),
		cmocka_unit_test(test_export_read_only),
		cmocka_unit_test(test_export_writethrough_makes_writes_fua),
		cmocka_unit_test(test_export_discard_ignore_and_unmap),
		cmocka_unit_test(test_export_detect_zeroes),
		cmocka_unit_test(test_export_stats_count_ops_bytes_errors),
		cmocka_unit_test(test_export_hooks),
		cmocka_unit_test(test_export_mode_names),
		cmocka_unit_test(test_throttle_config_check),
		cmocka_unit_test(test_export_throttle_paces_requests),
		cmocka_unit_test(test_export_throttle_released_by_drain),
		cmocka_unit_test(test_export_throttle_head_released_before_it_runs),
		cmocka_unit_test(test_export_error_policy_stop_and_resume),
		cmocka_unit_test(test_export_error_action_names),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
