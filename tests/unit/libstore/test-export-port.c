/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Export ports: one disk served from several reactors (libstore/direct.h,
 * export-port.c). The node lives on the test's main reactor (home); ports
 * run on reactor threads. Checks that mapped reads and writes go straight
 * to the file, and that everything that moves a mapped byte (a discard, a
 * snapshot, a bitmap, a drain) sends them home first:
 *  - raw and qcow2 requests through ports read back what was written;
 *  - a discard at home zeroes what a port reads next (no stale mapping);
 *  - after an internal snapshot a port's write does not reach the shared
 *    cluster (the snapshot still reads the old data);
 *  - a dirty bitmap attached at home is marked by the ports' writes;
 *  - the stress: workers on 2 and 4 reactors (home included) write, read
 *    back, discard and zero their own regions while the home drains,
 *    takes and deletes snapshots and attaches bitmaps; a snapshot taken
 *    between two phases must read as the first phase left the disk; at the
 *    end the image reads as the workers wrote it and qemu-img check is clean.
 *
 * VSTOR_STRESS_LONG=1 runs many more requests. qemu-img is needed for the
 * check (skipped without it, unless CI is set).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vstor/dirty-bitmap.h"
#include "vstor/error.h"
#include "vstor/export.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#include "../port-request.h"

#define MIB (1024u * 1024u)
#define MAX_THREADS 3

static char tmpdir[64];

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

/* ---- the setup: an image at home, ports on reactor threads ---- */

struct env {
	const char *format;
	const char *create_opts; /* qemu-img -o, or NULL */
	uint64_t size;
	unsigned nthreads;
	char path[128];
	struct vs_reactor_thread *t[MAX_THREADS];
	struct vs_node *n;
	struct vs_export *e;
	struct vs_export_port *p[MAX_THREADS];
};

static void env_open(struct env *v)
{
	struct vs_error err = { 0 };
	char cmd[512];

	snprintf(v->path, sizeof(v->path), "%s/disk.%s", tmpdir, v->format);
	unlink(v->path);
	if (v->create_opts) {
		snprintf(cmd, sizeof(cmd), "qemu-img create -q -f %s -o %s %s %llu", v->format,
			 v->create_opts, v->path, (unsigned long long)v->size);
		assert_int_equal(system(cmd), 0);
	} else {
		assert_int_equal(vs_image_create(v->path, v->format, v->size, NULL, 0, &err), 0);
	}
	assert_int_equal(
		vs_image_open(&v->n,
			      &(struct vs_open_opts){ .filename = v->path, .format = v->format },
			      &err),
		0);
	assert_int_equal(vs_export_new(&v->e,
				       &(struct vs_export_opts){
					       .name = "t",
					       .node = v->n,
					       .discard = VS_EXPORT_DISCARD_UNMAP,
				       }),
			 0);
	for (unsigned i = 0; i < v->nthreads; i++) {
		assert_int_equal(vs_reactor_thread_start(&v->t[i], "test-port"), 0);
		assert_int_equal(
			vs_export_port_new(v->e, vs_reactor_thread_reactor(v->t[i]), &v->p[i]), 0);
	}
}

static void env_close(struct env *v)
{
	for (unsigned i = 0; i < v->nthreads; i++)
		vs_export_port_free(v->p[i]);
	vs_export_free(v->e);
	vs_node_close(v->n);
	for (unsigned i = 0; i < v->nthreads; i++)
		assert_int_equal(vs_reactor_thread_stop(v->t[i]), 0);
}

/* One request through port @k, on its reactor (from a coroutine at home). */
static int via_port(struct env *v, unsigned k, enum vs_export_op op, uint64_t off, uint64_t len,
		    void *buf, unsigned flags)
{
	struct iovec iov = { buf, len };

	return test_port_request(vs_reactor_thread_reactor(v->t[k]), v->p[k], op, off, len, &iov, 1,
				 flags);
}

static int at_home(struct env *v, enum vs_export_op op, uint64_t off, uint64_t len, void *buf)
{
	struct iovec iov = { buf, len };

	return vs_export_request(v->e, op, off, len, &iov, 1, 0);
}

static struct vs_export_port_stats port_stats(struct env *v, unsigned k)
{
	struct vs_export_port_stats st;

	vs_export_port_get_stats(v->p[k], &st);
	return st;
}

static void *aligned(size_t len, int fill)
{
	void *b = NULL;

	assert_int_equal(posix_memalign(&b, 4096, len), 0);
	memset(b, fill, len);
	return b;
}

/* ---- focused cases ---- */

struct co_case {
	void (*fn)(struct env *v);
	struct env *v;
};

static void co_case_run(void *opaque)
{
	struct co_case *c = opaque;

	env_open(c->v);
	c->fn(c->v);
	env_close(c->v);
}

static void run_case(struct env *v, void (*fn)(struct env *v))
{
	struct co_case c = { fn, v };

	assert_int_equal(vs_run_in_coroutine(co_case_run, &c), 0);
}

/* Raw: after the first request maps the window, reads and writes go straight to the file. */
static void raw_direct_body(struct env *v)
{
	uint8_t *w = aligned(64 * 1024, 0), *r = aligned(64 * 1024, 0);
	struct vs_export_port_stats st;

	for (unsigned i = 0; i < 64; i++) {
		memset(w, 'a' + (int)(i % 26), 64 * 1024);
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, i * 65536ull, 65536, w, 0), 0);
	}
	/* FUA reaches a raw file as RWF_DSYNC: straight too. */
	memset(w, 'Z', 4096);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 8192, 4096, w, VS_EXPORT_FUA), 0);
	st = port_stats(v, 0);
	assert_int_equal(st.home, 1); /* the first, which brought the window */
	assert_int_equal(st.windows, 1);
	assert_int_equal(st.direct, 64);
	for (unsigned i = 0; i < 64; i++) {
		assert_int_equal(at_home(v, VS_EXPORT_OP_READ, i * 65536ull, 65536, r), 0);
		for (unsigned b = 0; b < 65536; b++)
			if (!(i == 0 && b >= 8192 && b < 12288) && r[b] != 'a' + (int)(i % 26))
				fail_msg("byte %u of block %u: %#x", b, i, r[b]);
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, i * 65536ull, 65536, w, 0), 0);
		assert_memory_equal(r, w, 65536);
	}
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 8192, 4096, r, 0), 0);
	assert_int_equal(r[0], 'Z');
	assert_int_equal(r[4095], 'Z');
	free(w);
	free(r);
}

static void test_raw_direct(void **state)
{
	struct env v = { .format = "raw", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, raw_direct_body);
}

/* qcow2: a discard at home revokes the port's window before the cluster is freed. */
static void qcow2_discard_body(struct env *v)
{
	uint8_t *w = aligned(65536, 'x'), *r = aligned(65536, 0);
	struct vs_export_port_stats a, b;

	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(at_home(v, VS_EXPORT_OP_WRITE, i * 65536ull, 65536, w), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 0, 65536, r, 0), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 3 * 65536, 65536, r, 0), 0);
	a = port_stats(v, 0);
	assert_int_equal(a.direct, 1);
	assert_memory_equal(r, w, 65536);
	/* Free cluster 3 and reuse it for new data at another offset. */
	assert_int_equal(at_home(v, VS_EXPORT_OP_DISCARD, 3 * 65536, 65536, NULL), 0);
	memset(w, 'n', 65536);
	assert_int_equal(at_home(v, VS_EXPORT_OP_WRITE, 100 * 65536ull, 65536, w), 0);
	/* The port must not read the freed cluster, nor write into its new owner. */
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 3 * 65536, 65536, r, 0), 0);
	for (unsigned i = 0; i < 65536; i++)
		if (r[i])
			fail_msg("discarded byte %u reads %#x", i, r[i]);
	memset(w, 'p', 65536);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 3 * 65536, 65536, w, 0), 0);
	assert_int_equal(at_home(v, VS_EXPORT_OP_READ, 100 * 65536ull, 65536, r), 0);
	assert_int_equal(r[0], 'n');
	assert_int_equal(r[65535], 'n');
	assert_int_equal(at_home(v, VS_EXPORT_OP_READ, 3 * 65536, 65536, r), 0);
	assert_memory_equal(r, w, 65536);
	b = port_stats(v, 0);
	assert_true(b.windows >= 2); /* the discard made the first one stale */
	free(w);
	free(r);
}

static void test_qcow2_discard(void **state)
{
	struct env v = { .format = "qcow2", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, qcow2_discard_body);
}

/* qcow2: a cluster a port's write allocated at home is mapped for the next requests. */
static void qcow2_allocate_body(struct env *v)
{
	uint8_t *w = aligned(65536, 'a'), *r = aligned(65536, 0);
	struct vs_export_port_stats a, b;

	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 0, 65536, w, 0), 0); /* the window */
	a = port_stats(v, 0);
	for (unsigned i = 1; i < 16; i++) {
		memset(w, 'a' + (int)i, 65536);
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, i * 65536ull, 4096, w, 0), 0);
		assert_int_equal(
			via_port(v, 0, VS_EXPORT_OP_WRITE, i * 65536ull + 4096, 4096, w, 0), 0);
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, i * 65536ull, 8192, r, 0), 0);
		assert_memory_equal(r, w, 8192);
	}
	b = port_stats(v, 0);
	/* Each cluster's first write allocates at home; the rest go straight. */
	assert_int_equal(b.home - a.home, 15);
	assert_int_equal(b.direct - a.direct, 30);
	free(w);
	free(r);
}

static void test_qcow2_allocate(void **state)
{
	struct env v = { .format = "qcow2", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, qcow2_allocate_body);
}

/* qcow2: a port's write after an internal snapshot leaves the snapshot's cluster alone. */
static void qcow2_snapshot_body(struct env *v)
{
	uint8_t *w = aligned(65536, 'o'), *r = aligned(65536, 0);
	struct vs_error err = { 0 };
	struct vs_node *snap;
	struct vs_export_port_stats a, b;

	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(at_home(v, VS_EXPORT_OP_WRITE, i * 65536ull, 65536, w), 0);
	/* Map the window and write straight once. */
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 0, 4096, r, 0), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 0, 4096, w, 0), 0);
	a = port_stats(v, 0);
	assert_int_equal(a.direct, 1);
	assert_int_equal(vs_node_snapshot_create(v->n, "s1", &(struct vs_snapshot_opts){ 0 }, &err),
			 0);
	memset(w, 'N', 65536);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, i * 65536ull, 65536, w, 0), 0);
	b = port_stats(v, 0);
	assert_true(b.home >= a.home + 1); /* shared clusters are copied at home */
	assert_int_equal(vs_node_flush(v->n), 0);
	assert_int_equal(vs_image_open(&snap,
				       &(struct vs_open_opts){ .filename = v->path,
							       .format = "qcow2",
							       .read_only = true,
							       .force_share = true,
							       .snapshot = "s1" },
				       &err),
			 0);
	for (unsigned i = 0; i < 8; i++) {
		assert_int_equal(vs_node_pread(snap, i * 65536ull, r, 65536), 0);
		for (unsigned k = 0; k < 65536; k++)
			if (r[k] != 'o')
				fail_msg("snapshot byte %u of cluster %u: %#x", k, i, r[k]);
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, i * 65536ull, 65536, r, 0), 0);
		assert_memory_equal(r, w, 65536);
	}
	vs_node_close(snap);
	free(w);
	free(r);
}

static void test_qcow2_snapshot(void **state)
{
	struct env v = { .format = "qcow2", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, qcow2_snapshot_body);
}

/* The qcow2 driver's (formats/qcow2): what it does on finding corrupt metadata. */
int qcow2_mark_corrupt(struct vs_node *node, const char *why, uint64_t offset);

/* Once the image is marked corrupt, a port's writes fail as they do at home. */
static void qcow2_corrupt_body(struct env *v)
{
	uint8_t *w = aligned(65536, 'c'), *r = aligned(65536, 0);

	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 0, 65536, w, 0), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 0, 65536, w, 0), 0);
	assert_int_equal(port_stats(v, 0).direct, 1);
	assert_int_equal(qcow2_mark_corrupt(v->n, "test", 0), -EIO);
	memset(w, 'X', 65536);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 0, 65536, w, 0), -EIO);
	assert_int_equal(port_stats(v, 0).direct, 1);
	assert_int_equal(at_home(v, VS_EXPORT_OP_READ, 0, 65536, r), 0);
	assert_int_equal(r[0], 'c');
	assert_int_equal(r[65535], 'c');
	free(w);
	free(r);
}

static void test_qcow2_corrupt(void **state)
{
	struct env v = { .format = "qcow2", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, qcow2_corrupt_body);
}

/* A dirty bitmap attached at home sees the ports' writes. */
static void bitmap_body(struct env *v)
{
	uint8_t *w = aligned(65536, 'b');
	struct vs_dirty_bitmap *bm;

	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, i * 65536ull, 65536, w, 0), 0);
	assert_int_equal(vs_dirty_bitmap_new(v->size, 65536, &bm), 0);
	assert_int_equal(vs_node_dirty_bitmap_attach(v->n, bm), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_WRITE, 2 * 65536, 4096, w, 0), 0);
	assert_true(vs_dirty_bitmap_get(bm, 2 * 65536));
	assert_false(vs_dirty_bitmap_get(bm, 65536));
	vs_node_dirty_bitmap_detach(bm);
	vs_dirty_bitmap_free(bm);
	free(w);
}

static void test_bitmap_raw(void **state)
{
	struct env v = { .format = "raw", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, bitmap_body);
}

static void test_bitmap_qcow2(void **state)
{
	struct env v = { .format = "qcow2", .size = 16 * MIB, .nthreads = 1 };

	(void)state;
	run_case(&v, bitmap_body);
}

/*
 * A revoke waits for the direct I/O in flight: a port's read into memory
 * whose page faults a userfaultfd holds stays in flight until the test
 * lets it go; a discard at home of the same bytes must end after it. The
 * holder lets the read go once the discard ended, or after 300 ms: a
 * discard that did not wait ends first.
 */
struct held_read {
	int uffd, efd;
	void *mem;
	size_t len;
	bool discard_done; /* atomic */
	char order[4];	   /* atomic appends: 'R' read done, 'D' discard done */
	unsigned norder;
	struct env *v;
	int ret;
};

static void order_add(struct held_read *h, char c)
{
	unsigned i = __atomic_fetch_add(&h->norder, 1, __ATOMIC_ACQ_REL);

	if (i < sizeof(h->order) - 1)
		__atomic_store_n(&h->order[i], c, __ATOMIC_RELEASE);
}

static void *holder_thread(void *opaque)
{
	struct held_read *h = opaque;
	struct pollfd pfd = { h->uffd, POLLIN, 0 };
	struct uffd_msg msg;
	struct timespec t0, t;
	uint64_t one = 1;

	if (poll(&pfd, 1, 10000) != 1 || read(h->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
	    msg.event != UFFD_EVENT_PAGEFAULT)
		abort();
	/* The read is in flight and held: the discard may start. */
	if (write(h->efd, &one, sizeof(one)) != sizeof(one))
		abort();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		struct timespec ms = { 0, 1000000 };

		nanosleep(&ms, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (!__atomic_load_n(&h->discard_done, __ATOMIC_ACQUIRE) &&
		 (t.tv_sec - t0.tv_sec) * 1000000000l + (t.tv_nsec - t0.tv_nsec) < 300000000l);
	struct uffdio_zeropage z = { .range = { (uintptr_t)h->mem, h->len } };

	if (ioctl(h->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno != EEXIST)
		abort();
	return NULL;
}

static void held_read_run(void *opaque)
{
	struct held_read *h = opaque;

	h->ret = via_port(h->v, 0, VS_EXPORT_OP_READ, MIB, h->len, h->mem, 0);
	order_add(h, 'R');
}

static void revoke_waits_body(struct env *v)
{
	struct held_read h = { .v = v, .len = 65536 };
	uint8_t *w = aligned(65536, 'q');
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg;
	pthread_t th;
	uint64_t cnt;
	struct iovec iov = { &cnt, sizeof(cnt) };

	assert_int_equal(at_home(v, VS_EXPORT_OP_WRITE, MIB, 65536, w), 0);
	assert_int_equal(via_port(v, 0, VS_EXPORT_OP_READ, 0, 4096, w, 0), 0); /* the window */
	h.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	assert_true(h.uffd >= 0);
	assert_int_equal(ioctl(h.uffd, UFFDIO_API, &api), 0);
	h.mem = mmap(NULL, h.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(h.mem != MAP_FAILED);
	reg = (struct uffdio_register){ .range = { (uintptr_t)h.mem, h.len },
					.mode = UFFDIO_REGISTER_MODE_MISSING };
	assert_int_equal(ioctl(h.uffd, UFFDIO_REGISTER, &reg), 0);
	h.efd = eventfd(0, EFD_CLOEXEC);
	assert_true(h.efd >= 0);
	assert_int_equal(pthread_create(&th, NULL, holder_thread, &h), 0);
	assert_non_null(vs_co_spawn(vs_reactor_current(), held_read_run, &h));
	/* Until the read faults on the held memory. */
	assert_int_equal(vs_aio_preadv_full(h.efd, &iov, 1, 0, sizeof(cnt)), 0);
	assert_int_equal(at_home(v, VS_EXPORT_OP_DISCARD, MIB, 65536, NULL), 0);
	order_add(&h, 'D');
	__atomic_store_n(&h.discard_done, true, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(th, NULL), 0);
	while (__atomic_load_n(&h.norder, __ATOMIC_ACQUIRE) < 2)
		vs_co_yield();
	assert_int_equal(h.ret, 0);
	assert_int_equal(port_stats(v, 0).direct,
			 1); /* the held read (the first brought the window) */
	assert_string_equal(h.order, "RD");
	munmap(h.mem, h.len);
	close(h.uffd);
	close(h.efd);
	free(w);
}

static void test_revoke_waits_for_inflight(void **state)
{
	struct env v = { .format = "raw", .size = 16 * MIB, .nthreads = 1 };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);

	(void)state;
	if (fd < 0) {
		if (getenv("CI"))
			fail_msg("userfaultfd: %s", strerror(errno));
		skip();
	}
	close(fd);
	run_case(&v, revoke_waits_body);
}

/* ---- the stress ---- */

#define WORKERS_PER_REACTOR 3
#define REGION (2 * MIB)
#define MAX_WORKERS ((MAX_THREADS + 1) * WORKERS_PER_REACTOR)

struct stress;

struct worker {
	struct stress *st;
	int port;	 /* -1: at home */
	unsigned *alive; /* its group's workers still running, on the group's reactor */
	struct vs_co_queue *gone;
	uint64_t base;
	uint8_t *ref;		   /* what the region must read */
	bool known[REGION / 4096]; /* false after a discard (its blocks may read anything) */
	uint64_t rng;
	unsigned ops;
	int failed; /* 0, or the line of the first mismatch */
	char why[160];
};

struct stress {
	struct env *v;
	unsigned nworkers;
	struct worker w[MAX_WORKERS];
	unsigned running; /* home: port groups still running */
	bool done;	  /* home */
	struct vs_co_queue finished;
	unsigned chaos_ops;
};

static int worker_req(struct worker *w, enum vs_export_op op, uint64_t off, uint64_t len, void *buf,
		      unsigned flags)
{
	struct iovec iov = { buf, len };

	if (w->port < 0)
		return vs_export_request(w->st->v->e, op, w->base + off, len, &iov, 1, flags);
	return vs_export_port_request(w->st->v->p[w->port], op, w->base + off, len, &iov, 1, flags);
}

static void mark(struct worker *w, uint64_t off, uint64_t len, bool known)
{
	for (uint64_t b = off / 4096; b < (off + len) / 4096; b++)
		w->known[b] = known;
}

/* Whether @buf (@len bytes read at @off of the region) holds what it must. */
static bool same(const struct worker *w, const uint8_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t k = 0; k < len; k += 4096)
		if (w->known[(off + k) / 4096] && memcmp(buf + k, w->ref + off + k, 4096))
			return false;
	return true;
}

static void worker_run(void *opaque)
{
	struct worker *w = opaque;
	uint8_t *buf;

	/* On a reactor thread: no cmocka assertion here (it would jump across threads). */
	if (posix_memalign((void **)&buf, 4096, 256 * 1024))
		abort();

	for (unsigned i = 0; i < w->ops && !w->failed; i++) {
		uint64_t r = rng_next(&w->rng);
		uint64_t len = ((r >> 8) % 32 + 1) * 4096;
		uint64_t off = ((r >> 20) % (REGION / 4096)) * 4096;
		unsigned kind = (unsigned)(r % 16);
		int ret;

		if (off + len > REGION)
			len = REGION - off;
		if (kind < 7) { /* write */
			unsigned flags = kind == 6 ? VS_EXPORT_FUA : 0;

			for (uint64_t k = 0; k < len; k += 512)
				memset(buf + k, (int)((r >> 32) + k / 512) & 0xff, 512);
			ret = worker_req(w, VS_EXPORT_OP_WRITE, off, len, buf, flags);
			if (ret == 0)
				memcpy(w->ref + off, buf, len), mark(w, off, len, true);
		} else if (kind < 13) { /* read and check */
			ret = worker_req(w, VS_EXPORT_OP_READ, off, len, buf, 0);
			if (ret == 0 && !same(w, buf, off, len)) {
				uint64_t k = 0;

				while (!w->known[(off + k) / 4096] || buf[k] == w->ref[off + k])
					k++;
				snprintf(w->why, sizeof(w->why),
					 "worker at %llu: byte %llu reads %#x, wrote %#x",
					 (unsigned long long)w->base, (unsigned long long)(off + k),
					 buf[k], w->ref[off + k]);
				w->failed = __LINE__;
			}
		} else if (kind == 13) {
			/* A discard may leave the data (a partial qcow2 cluster does). */
			ret = worker_req(w, VS_EXPORT_OP_DISCARD, off, len, NULL, 0);
			mark(w, off, len, false);
		} else if (kind == 14) {
			ret = worker_req(w, VS_EXPORT_OP_WRITE_ZEROES, off, len, NULL,
					 (r & 0x100) ? VS_EXPORT_MAY_UNMAP : 0);
			if (ret == 0)
				memset(w->ref + off, 0, len), mark(w, off, len, true);
		} else {
			ret = worker_req(w, VS_EXPORT_OP_FLUSH, 0, 0, NULL, 0);
		}
		if (ret < 0 && !w->failed) {
			snprintf(w->why, sizeof(w->why), "request kind %u failed: %s", kind,
				 strerror(-ret));
			w->failed = __LINE__;
		}
	}
	free(buf);
	if (--*w->alive == 0)
		vs_co_queue_wake_all(w->gone);
}

/* On a port's reactor (or home): its workers, until they are all done. */
struct group {
	struct stress *st;
	int port;
};

static void group_run(void *opaque)
{
	struct group *g = opaque;
	struct vs_co_queue gone = { 0 };
	unsigned alive = 0;

	for (unsigned i = 0; i < g->st->nworkers; i++) {
		struct worker *w = &g->st->w[i];

		if (w->port != g->port)
			continue;
		w->alive = &alive;
		w->gone = &gone;
		if (!vs_co_spawn(vs_reactor_current(), worker_run, w))
			abort();
		alive++;
	}
	while (alive)
		vs_co_queue_wait(&gone);
}

/* The group's call from home; the last one ends the phase. */
static void group_call(void *opaque)
{
	struct group *g = opaque;
	struct stress *st = g->st;

	if (g->port < 0)
		group_run(g);
	else
		assert_int_equal(vs_reactor_call(vs_reactor_thread_reactor(st->v->t[g->port]),
						 group_run, g),
				 0);
	if (--st->running == 0) {
		st->done = true;
		vs_co_queue_wake_all(&st->finished);
	}
}

/* At home while the workers run: everything that must revoke their windows. */
static void chaos(struct stress *st, uint64_t *rng)
{
	struct env *v = st->v;
	struct vs_error err = { 0 };
	bool qcow2 = !strcmp(v->format, "qcow2");

	while (!st->done) {
		unsigned k = (unsigned)(rng_next(rng) % 5);

		if (k == 0) {
			vs_export_drain_begin(v->e);
			vs_co_sleep_ns(300000);
			vs_export_drain_end(v->e);
		} else if (k == 1 && qcow2) {
			if (vs_node_snapshot_create(v->n, "chaos", &(struct vs_snapshot_opts){ 0 },
						    &err) == 0)
				assert_int_equal(vs_node_snapshot_delete(v->n, "chaos", &err), 0);
		} else if (k == 2) {
			struct vs_dirty_bitmap *bm;

			assert_int_equal(vs_dirty_bitmap_new(v->size, 65536, &bm), 0);
			assert_int_equal(vs_node_dirty_bitmap_attach(v->n, bm), 0);
			vs_co_sleep_ns(500000);
			vs_node_dirty_bitmap_detach(bm);
			vs_dirty_bitmap_free(bm);
		} else if (k == 3) {
			vs_node_drain_begin(v->n);
			vs_node_drain_end(v->n);
		}
		st->chaos_ops++;
		vs_co_sleep_ns(1000000);
	}
}

static void run_phase(struct stress *st, unsigned ops, uint64_t *rng)
{
	struct group g[MAX_THREADS + 1];
	unsigned ng = 0;

	for (unsigned i = 0; i < st->nworkers; i++)
		st->w[i].ops = ops;
	st->done = false;
	st->running = st->v->nthreads + 1;
	g[ng++] = (struct group){ st, -1 };
	for (unsigned k = 0; k < st->v->nthreads; k++)
		g[ng++] = (struct group){ st, (int)k };
	for (unsigned i = 0; i < ng; i++)
		vs_co_spawn(vs_reactor_current(), group_call, &g[i]);
	chaos(st, rng);
	while (!st->done)
		vs_co_queue_wait(&st->finished);
	for (unsigned i = 0; i < st->nworkers; i++)
		if (st->w[i].failed)
			fail_msg("line %d: %s", st->w[i].failed, st->w[i].why);
}

static void stress_body(struct env *v)
{
	static struct stress st;
	bool long_run = getenv("VSTOR_STRESS_LONG") != NULL;
	const char *sample = getenv("VSTOR_COMBOS_SAMPLE");
	/* CI's sample of the long tier (VSTOR_COMBOS_SAMPLE set) runs an eighth of it. */
	unsigned ops = !long_run ? 250 : sample && *sample ? 375 : 3000;
	uint64_t rng = 0x9e3779b97f4a7c15ull ^ v->nthreads;
	uint8_t *snapref, *buf = aligned(REGION, 0);
	bool(*snapknown)[REGION / 4096];
	bool qcow2 = !strcmp(v->format, "qcow2");
	struct vs_error err = { 0 };
	struct vs_export_port_stats ps = { 0 };

	memset(&st, 0, sizeof(st));
	st.v = v;
	st.nworkers = (v->nthreads + 1) * WORKERS_PER_REACTOR;
	assert_true(st.nworkers * (uint64_t)REGION <= v->size);
	for (unsigned i = 0; i < st.nworkers; i++) {
		st.w[i] = (struct worker){ .st = &st,
					   .port = (int)(i / WORKERS_PER_REACTOR) - 1,
					   .base = i * (uint64_t)REGION,
					   .ref = calloc(1, REGION),
					   .rng = rng_next(&rng) | 1 };
		memset(st.w[i].known, 1, sizeof(st.w[i].known));
		assert_non_null(st.w[i].ref);
	}
	run_phase(&st, ops, &rng);
	snapref = malloc((size_t)st.nworkers * REGION);
	snapknown = malloc(sizeof(*snapknown) * st.nworkers);
	assert_non_null(snapref);
	assert_non_null(snapknown);
	for (unsigned i = 0; i < st.nworkers; i++) {
		memcpy(snapref + (size_t)i * REGION, st.w[i].ref, REGION);
		memcpy(snapknown[i], st.w[i].known, sizeof(st.w[i].known));
	}
	if (qcow2)
		assert_int_equal(vs_node_snapshot_create(v->n, "phase1",
							 &(struct vs_snapshot_opts){ 0 }, &err),
				 0);
	run_phase(&st, ops, &rng);
	/* Everything reads as the workers wrote it, at home. */
	for (unsigned i = 0; i < st.nworkers; i++) {
		assert_int_equal(at_home(v, VS_EXPORT_OP_READ, st.w[i].base, REGION, buf), 0);
		if (!same(&st.w[i], buf, 0, REGION))
			fail_msg("region %u differs at the end", i);
	}
	for (unsigned k = 0; k < v->nthreads; k++) {
		struct vs_export_port_stats one = port_stats(v, k);

		ps.direct += one.direct;
		ps.home += one.home;
	}
	print_message("%s, %u reactors: %u chaos operations; port requests %llu direct, %llu at "
		      "home\n",
		      v->format, v->nthreads + 1, st.chaos_ops, (unsigned long long)ps.direct,
		      (unsigned long long)ps.home);
	assert_true(ps.direct > 0);
	assert_int_equal(vs_node_flush(v->n), 0);
	if (qcow2) {
		struct vs_node *snap;

		assert_int_equal(vs_image_open(&snap,
					       &(struct vs_open_opts){ .filename = v->path,
								       .format = "qcow2",
								       .read_only = true,
								       .force_share = true,
								       .snapshot = "phase1" },
					       &err),
				 0);
		for (unsigned i = 0; i < st.nworkers; i++) {
			assert_int_equal(vs_node_pread(snap, st.w[i].base, buf, REGION), 0);
			for (uint64_t k = 0; k < REGION; k += 4096)
				if (snapknown[i][k / 4096] &&
				    memcmp(buf + k, snapref + (size_t)i * REGION + k, 4096))
					fail_msg("snapshot phase1 differs in region %u at %llu", i,
						 (unsigned long long)k);
		}
		vs_node_close(snap);
	}
	for (unsigned i = 0; i < st.nworkers; i++)
		free(st.w[i].ref);
	free(snapref);
	free(snapknown);
	free(buf);
}

static void run_stress(const char *format, const char *opts, unsigned nthreads)
{
	struct env v = {
		.format = format, .create_opts = opts, .size = 32 * MIB, .nthreads = nthreads
	};
	char cmd[256];

	if (!have_qemu_img()) {
		if (getenv("CI"))
			fail_msg("qemu-img is missing");
		skip();
	}
	run_case(&v, stress_body);
	if (!strcmp(format, "qcow2")) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", v.path);
		assert_int_equal(system(cmd), 0);
	}
}

static void test_stress_raw_2(void **state)
{
	(void)state;
	run_stress("raw", NULL, 1);
}

static void test_stress_qcow2_2(void **state)
{
	(void)state;
	run_stress("qcow2", NULL, 1);
}

static void test_stress_qcow2_4(void **state)
{
	(void)state;
	run_stress("qcow2", NULL, 3);
}

static void test_stress_qcow2_small_clusters_4(void **state)
{
	(void)state;
	run_stress("qcow2", "cluster_size=4096", 3);
}

static void test_stress_qcow2_extl2_4(void **state)
{
	(void)state;
	run_stress("qcow2", "extended_l2=on,cluster_size=65536", 3);
}

/* test-export-port [PATTERN]: only the tests whose names match (cmocka's filter). */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw_direct),
		cmocka_unit_test(test_qcow2_discard),
		cmocka_unit_test(test_qcow2_allocate),
		cmocka_unit_test(test_qcow2_snapshot),
		cmocka_unit_test(test_qcow2_corrupt),
		cmocka_unit_test(test_bitmap_raw),
		cmocka_unit_test(test_bitmap_qcow2),
		cmocka_unit_test(test_revoke_waits_for_inflight),
		cmocka_unit_test(test_stress_raw_2),
		cmocka_unit_test(test_stress_qcow2_2),
		cmocka_unit_test(test_stress_qcow2_4),
		cmocka_unit_test(test_stress_qcow2_small_clusters_4),
		cmocka_unit_test(test_stress_qcow2_extl2_4),
	};
	int ret;

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vstor-port-XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	if (ret == 0) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			ret = 1;
	}
	return ret;
}
