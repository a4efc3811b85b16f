/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A reactor: one io_uring and the coroutines of one thread.
 *
 * The loop runs every runnable coroutine, then submits the SQEs they
 * prepared in one io_uring_enter (which also waits for a completion when
 * nothing is runnable), then turns completions into wake-ups. Submissions
 * made while the loop runs coroutines are thereby batched.
 *
 * Sockets and other pollable descriptors do not wait in the ring: a socket
 * call is first tried as a non-blocking syscall, and when it would block the
 * coroutine waits for readiness on the reactor's epoll instance, of which
 * the ring watches only the descriptor. A connection that sends nothing for
 * hours thereby holds no slot of the outstanding-operation budget (the CQ
 * size), which belongs to the I/O that completes.
 */
#include "config.h"
#include "coroutine-int.h"
#include "iov.h"

#include <errno.h>
#include <linux/ioprio.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#if HAVE_VALGRIND
#include <valgrind/memcheck.h>
/*
 * valgrind does not see the kernel fill a buffer through io_uring: what a
 * read or a receive returned is made defined, as a read(2) would make it.
 */
#define MARK_FILLED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define MARK_FILLED(p, n) ((void)(p), (void)(n))
#endif

#define VS_RING_ENTRIES 256
#define VS_CO_POOL_MAX 64
/*
 * CQ entries kept out of the budget of get_sqe(): the epoll watch and the
 * worker-pool eventfd read are armed from the loop, where nobody can park.
 */
#define VS_RING_RESERVED 4
/* Readiness events taken per epoll_wait. */
#define VS_EPOLL_BATCH 64
/*
 * Socket receives parked in the ring at once, per reactor. A receive waits
 * as an IORING_OP_RECV while fewer are parked (no epoll_ctl, epoll_wait and
 * second recv per wait: measured 1.5 system calls per NBD request), and on
 * the epoll instance beyond, so peers that never send cannot take the ring:
 * at most a quarter of the CQ.
 */
#define VS_RING_RECV_MAX 64

/* Setup flags of kernels newer than the liburing headers (values from the kernel ABI). */
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif

struct vs_reactor {
	struct io_uring ring;
	struct vs_co_ctx main_ctx;
	struct vs_co *run_head, *run_tail;
	struct vs_co *free_pool;
	unsigned free_count;
	unsigned alive;	    /* spawned and not yet finished */
	unsigned in_flight; /* SQEs handed to the kernel without a CQE yet */
	unsigned prepared;  /* SQEs prepared but not submitted */
	unsigned cq_entries;
	struct vs_co_queue sqe_waiters;
	struct vs_reactor_stats stats;
	/* Worker-pool completions: workers queue them and ring the eventfd. */
	int efd;
	uint64_t efd_value;
	bool efd_armed;
	unsigned jobs_pending;
	pthread_mutex_t done_lock;
	struct vs_worker_job *done_head;
	/* Readiness waits: an epoll instance, watched by one poll SQE when armed. */
	int epfd;
	bool ep_armed;
	unsigned fd_waiters;
	unsigned ring_recvs;  /* receives parked in the ring (VS_RING_RECV_MAX) */
	struct fd_wait **fdw; /* per descriptor number: its waiters (a reader and a writer) */
	unsigned fdw_cap;
	/*
	 * The mailbox (reactor-call.c): messages other threads push under
	 * done_lock and announce on the eventfd. @listen counts the reasons to
	 * keep the eventfd read armed while idle (a reactor thread, callers
	 * waiting for replies); closed refuses new requests.
	 */
	struct vs_reactor_msg *mbox_head, *mbox_tail;
	bool mbox_closed;
	unsigned listen;
};

static __thread struct vs_reactor *tls_reactor;

/* One outstanding operation; lives on the waiting coroutine's stack. */
struct aio_wait {
	struct vs_co *co;
	int res;
};

/* A coroutine waiting for readiness on the epoll instance; on its stack. */
struct fd_wait {
	struct vs_co *co;
	int fd;
	unsigned events;
	int res; /* revents, or -errno */
	bool fired;
	struct fd_wait *next; /* the other waiters on the same descriptor */
};

/* user_data of the eventfd read that reports worker completions. */
static char efd_tag;
/* user_data of the poll on the epoll instance. */
static char ep_tag;

/*
 * The ring's setup flags. COOP_TASKRUN (5.19) posts completions at the
 * thread's next kernel entry instead of interrupting it, and TASKRUN_FLAG
 * then makes liburing enter the kernel when completions wait in task work.
 * Measured on kernel 6.18 (bench/RESULTS.md, issue 16), it did not pay
 * here: the loop already submits a turn's SQEs in one io_uring_enter and
 * waits for completions in it, and CPU per 4 KiB O_DIRECT read was within
 * the noise; DEFER_TASKRUN (with SINGLE_ISSUER) cost 40% more CPU per read.
 * So the default stays plain, and VSTOR_RING_SETUP=coop asks for it, to
 * measure on other hosts; a kernel that refuses it gets a plain ring.
 */
static int ring_init(struct vs_reactor *r, unsigned entries, struct io_uring_params *p)
{
	const char *e = getenv("VSTOR_RING_SETUP");
	int ret;

	memset(p, 0, sizeof(*p));
	if (e && !strcmp(e, "coop")) {
		p->flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
		ret = io_uring_queue_init_params(entries, &r->ring, p);
		if (ret != -EINVAL)
			return ret;
		memset(p, 0, sizeof(*p));
	}
	return io_uring_queue_init_params(entries, &r->ring, p);
}

int vs_reactor_new(struct vs_reactor **out, unsigned entries)
{
	struct vs_reactor *r = calloc(1, sizeof(*r));
	struct io_uring_params p;
	int ret;

	if (!r)
		return -ENOMEM;
	ret = ring_init(r, entries ? entries : VS_RING_ENTRIES, &p);
	if (ret < 0) {
		free(r);
		return ret;
	}
	r->cq_entries = p.cq_entries;
	r->efd = eventfd(0, EFD_CLOEXEC);
	if (r->efd < 0) {
		ret = -errno;
		io_uring_queue_exit(&r->ring);
		free(r);
		return ret;
	}
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0) {
		ret = -errno;
		close(r->efd);
		io_uring_queue_exit(&r->ring);
		free(r);
		return ret;
	}
	pthread_mutex_init(&r->done_lock, NULL);
	if (!tls_reactor)
		tls_reactor = r;
	*out = r;
	return 0;
}

void vs_reactor_free(struct vs_reactor *r)
{
	struct vs_co *co;

	if (!r)
		return;
	vs_reactor_mbox_close(r);
	while ((co = r->free_pool)) {
		r->free_pool = co->next;
		vs_co_free_stack(co);
	}
	io_uring_queue_exit(&r->ring);
	close(r->efd);
	close(r->epfd);
	free(r->fdw);
	pthread_mutex_destroy(&r->done_lock);
	if (tls_reactor == r)
		tls_reactor = NULL;
	free(r);
}

struct vs_reactor *vs_reactor_current(void)
{
	if (vs_co_current)
		return vs_co_current->reactor;
	return tls_reactor;
}

struct vs_co_ctx *vs_reactor_main_ctx(struct vs_reactor *r)
{
	return &r->main_ctx;
}

void vs_reactor_enqueue(struct vs_reactor *r, struct vs_co *co)
{
	if (co->queued)
		return;
	co->queued = true;
	co->next = NULL;
	if (r->run_tail)
		r->run_tail->next = co;
	else
		r->run_head = co;
	r->run_tail = co;
}

struct vs_co *vs_reactor_take_free_co(struct vs_reactor *r)
{
	struct vs_co *co = r->free_pool;

	if (co) {
		r->free_pool = co->next;
		r->free_count--;
	}
	return co;
}

void vs_reactor_put_free_co(struct vs_reactor *r, struct vs_co *co)
{
	r->alive--;
	if (r->free_count >= VS_CO_POOL_MAX) {
		vs_co_free_stack(co);
		return;
	}
	co->next = r->free_pool;
	r->free_pool = co;
	r->free_count++;
}

void vs_reactor_co_started(struct vs_reactor *r)
{
	r->alive++;
}

static void run_ready(struct vs_reactor *r)
{
	struct vs_co *co;

	/* Only what is runnable now: coroutines woken meanwhile wait a turn. */
	struct vs_co *tail = r->run_tail;

	while ((co = r->run_head)) {
		r->run_head = co->next;
		if (!r->run_head)
			r->run_tail = NULL;
		co->queued = false;
		co->next = NULL;
		vs_co_current = co;
		r->stats.co_switches++;
		vs_co_ctx_resume(&r->main_ctx, co);
		vs_co_current = NULL;
		if (co->done)
			vs_reactor_put_free_co(r, co);
		if (co == tail)
			break;
	}
}

static void worker_reap(struct vs_reactor *r);
static int submit(struct vs_reactor *r, unsigned wait_nr);

/*
 * (Re-)arm the one-shot registration of @fd for what its waiters still want,
 * or drop it when nobody waits. A registration is keyed by the descriptor
 * number; one left behind by a closed descriptor is disabled and never fires.
 */
static int fd_rearm(struct vs_reactor *r, int fd)
{
	struct epoll_event ev = { .data.u64 = (uint64_t)fd };

	for (struct fd_wait *w = r->fdw[fd]; w; w = w->next)
		ev.events |= w->events;
	if (!ev.events)
		return epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
	ev.events |= EPOLLONESHOT;
	if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	return epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void fd_wake(struct vs_reactor *r, struct fd_wait *w, int res)
{
	struct fd_wait **pp;

	for (pp = &r->fdw[w->fd]; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	w->res = res;
	w->fired = true;
	r->fd_waiters--;
	vs_reactor_enqueue(r, w->co);
}

/* Wake the coroutines whose descriptors the epoll instance reports ready. */
static void epoll_reap(struct vs_reactor *r)
{
	struct epoll_event ev[VS_EPOLL_BATCH];
	int n;

	r->ep_armed = false;
	do {
		n = epoll_wait(r->epfd, ev, VS_EPOLL_BATCH, 0);
		for (int i = 0; i < n; i++) {
			int fd = (int)ev[i].data.u64;
			unsigned got = ev[i].events;
			struct fd_wait *w, *next;

			if ((unsigned)fd >= r->fdw_cap)
				continue;
			for (w = r->fdw[fd]; w; w = next) {
				next = w->next;
				if (got & (w->events | EPOLLERR | EPOLLHUP))
					fd_wake(r, w, (int)got);
			}
			/* One-shot: re-arm for whoever still waits (a writer, say). */
			if (r->fdw[fd]) {
				int err = fd_rearm(r, fd);

				while (err < 0 && r->fdw[fd])
					fd_wake(r, r->fdw[fd], err);
			}
		}
	} while (n == VS_EPOLL_BATCH);
}

/*
 * From the loop: read the eventfd while worker jobs are out or anyone
 * listens for the mailbox.
 */
static void efd_arm(struct vs_reactor *r)
{
	struct io_uring_sqe *sqe;

	if (r->efd_armed || (!r->jobs_pending && !r->listen))
		return;
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe && (submit(r, 0) < 0 || !(sqe = io_uring_get_sqe(&r->ring))))
		return; /* the ring is in trouble: the loop reports it */
	r->prepared++;
	io_uring_prep_read(sqe, r->efd, &r->efd_value, sizeof(r->efd_value), 0);
	io_uring_sqe_set_data(sqe, &efd_tag);
	r->efd_armed = true;
}

/* From the loop: watch the epoll instance while anyone waits on it. */
static void epoll_arm(struct vs_reactor *r)
{
	struct io_uring_sqe *sqe;

	if (r->ep_armed || !r->fd_waiters)
		return;
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe && (submit(r, 0) < 0 || !(sqe = io_uring_get_sqe(&r->ring))))
		return; /* the ring is in trouble: the loop reports it */
	r->prepared++;
	io_uring_prep_poll_add(sqe, r->epfd, POLLIN);
	io_uring_sqe_set_data(sqe, &ep_tag);
	r->ep_armed = true;
}

static void reap(struct vs_reactor *r)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	bool workers = false, ready = false;

	io_uring_for_each_cqe(&r->ring, head, cqe)
	{
		struct aio_wait *w = io_uring_cqe_get_data(cqe);

		if ((void *)w == &efd_tag) {
			workers = true;
		} else if ((void *)w == &ep_tag) {
			ready = true;
		} else if (w) {
			w->res = cqe->res;
			vs_reactor_enqueue(r, w->co);
		}
		n++;
	}
	io_uring_cq_advance(&r->ring, n);
	r->in_flight -= n;
	r->stats.cqes_reaped += n;
	if (workers)
		worker_reap(r);
	if (ready)
		epoll_reap(r);
	if (n)
		vs_co_queue_wake_all(&r->sqe_waiters);
}

static int submit(struct vs_reactor *r, unsigned wait_nr)
{
	int ret;

	do {
		ret = io_uring_submit_and_wait(&r->ring, wait_nr);
	} while (ret == -EINTR);
	if (ret >= 0) {
		r->in_flight += (unsigned)ret;
		r->stats.sqes_submitted += (unsigned)ret;
		r->prepared -= (unsigned)ret < r->prepared ? (unsigned)ret : r->prepared;
		return 0;
	}
	if (ret == -EAGAIN || ret == -EBUSY)
		return 0; /* completions must be reaped first; the loop does that */
	return ret;
}

int vs_reactor_run(struct vs_reactor *r, const bool *done)
{
	struct vs_reactor *saved = tls_reactor;
	int ret = 0;

	tls_reactor = r;
	for (;;) {
		run_ready(r);
		if (done ? *done : r->alive == 0)
			break;
		epoll_arm(r);
		efd_arm(r);
		if (r->run_head) {
			/* More to run: submit without waiting, then reap. */
			if (r->prepared) {
				ret = submit(r, 0);
				if (ret < 0)
					break;
			}
		} else {
			if (!r->prepared && !r->in_flight) {
				/* Coroutines alive but nobody can wake them. */
				ret = -EDEADLK;
				break;
			}
			ret = submit(r, 1);
			if (ret < 0)
				break;
		}
		reap(r);
	}
	tls_reactor = saved;
	return ret;
}

struct run_ctx {
	vs_co_fn *fn;
	void *arg;
	bool done;
};

static void run_entry(void *opaque)
{
	struct run_ctx *c = opaque;

	c->fn(c->arg);
	c->done = true;
}

int vs_run_in_coroutine(vs_co_fn *fn, void *arg)
{
	struct vs_reactor *r = tls_reactor;
	struct run_ctx c = { .fn = fn, .arg = arg };
	bool own = false;
	int ret;

	if (vs_co_current) {
		fn(arg); /* already in coroutine context */
		return 0;
	}
	if (!r) {
		ret = vs_reactor_new(&r, 0);
		if (ret < 0)
			return ret;
		own = true;
	}
	if (!vs_co_spawn(r, run_entry, &c)) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vs_reactor_run(r, &c.done);
out:
	if (own)
		vs_reactor_free(r);
	return ret;
}

void vs_reactor_get_stats(const struct vs_reactor *r, struct vs_reactor_stats *st)
{
	*st = r->stats;
	st->co_alive = r->alive;
}

/* Coroutine context: an SQE of the current reactor, parking while none is free. */
static struct io_uring_sqe *get_sqe(struct vs_reactor *r)
{
	struct io_uring_sqe *sqe;

	for (;;) {
		/* Bound what can be outstanding by the CQ so completions never overflow. */
		if (r->in_flight + r->prepared + VS_RING_RESERVED < r->cq_entries) {
			sqe = io_uring_get_sqe(&r->ring);
			if (sqe) {
				r->prepared++;
				return sqe;
			}
			/* SQ full: hand it to the kernel and try again. */
			if (submit(r, 0) == 0 && (sqe = io_uring_get_sqe(&r->ring))) {
				r->prepared++;
				return sqe;
			}
		}
		r->stats.sqe_waits++;
		vs_co_queue_wait(&r->sqe_waiters);
	}
}

static int wait_sqe(struct vs_reactor *r, struct io_uring_sqe *sqe)
{
	struct aio_wait w = { .co = vs_co_current, .res = 0 };

	(void)r;
	io_uring_sqe_set_data(sqe, &w);
	w.co->pending = &w;
	vs_co_yield();
	w.co->pending = NULL;
	return w.res;
}

static struct vs_reactor *cur(void)
{
	if (!vs_co_current)
		abort(); /* vs_aio_* outside coroutine context is a programming error */
	return vs_co_current->reactor;
}

/* The I/O priority of the running coroutine's class; 0: the thread's own. */
static uint16_t co_ioprio(void)
{
	return vs_co_current->io_class == VS_IO_CLASS_IDLE ?
		       IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0) :
		       0;
}

ssize_t vs_aio_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t offset)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);
	int ret;

	io_uring_prep_readv(sqe, fd, iov, (unsigned)iovcnt, offset);
	sqe->ioprio = co_ioprio();
	ret = wait_sqe(r, sqe);
#if HAVE_VALGRIND
	for (int i = 0, left = ret; RUNNING_ON_VALGRIND && i < iovcnt && left > 0; i++) {
		size_t k = iov[i].iov_len < (size_t)left ? iov[i].iov_len : (size_t)left;

		MARK_FILLED(iov[i].iov_base, k);
		left -= (int)k;
	}
#endif
	return ret;
}

ssize_t vs_aio_pwritev(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, int rw_flags)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_writev(sqe, fd, iov, (unsigned)iovcnt, offset);
	sqe->rw_flags = rw_flags;
	sqe->ioprio = co_ioprio();
	return wait_sqe(r, sqe);
}

/* Advance @iov (a private copy) by @done bytes. */
static int iov_advance(struct iovec *iov, int iovcnt, size_t done, int *first)
{
	int i = *first;

	while (i < iovcnt && done >= iov[i].iov_len) {
		done -= iov[i].iov_len;
		i++;
	}
	if (i < iovcnt) {
		iov[i].iov_base = (char *)iov[i].iov_base + done;
		iov[i].iov_len -= done;
	}
	*first = i;
	return iovcnt - i;
}

/*
 * A copy of @iov that the *_full loops advance through: @small (@nsmall
 * entries) when it fits, else malloc'd. NULL when out of memory.
 */
static struct iovec *iov_copy(struct iovec *small, int nsmall, const struct iovec *iov, int iovcnt)
{
	int cap;
	struct iovec *copy = vs_iov_room(small, nsmall, iovcnt, &cap);

	if (copy)
		memcpy(copy, iov, sizeof(*copy) * (size_t)iovcnt);
	return copy;
}

static int rw_full(bool write, int fd, const struct iovec *iov, int iovcnt, uint64_t offset,
		   size_t len, int rw_flags)
{
	struct iovec small[16];
	struct iovec *copy = iov_copy(small, 16, iov, iovcnt);
	size_t done = 0;
	int first = 0, ret = 0;

	if (!copy)
		return -ENOMEM;
	while (done < len) {
		ssize_t n = write ? vs_aio_pwritev(fd, copy + first, iovcnt - first, offset + done,
						   rw_flags) :
				    vs_aio_preadv(fd, copy + first, iovcnt - first, offset + done);
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0) {
			ret = (int)n;
			break;
		}
		if (n == 0) {
			if (write) {
				ret = -EIO;
				break;
			}
			/* End of file: the rest reads as zeroes. */
			size_t left = len - done;
			int i = first;

			while (left && i < iovcnt) {
				size_t c = copy[i].iov_len < left ? copy[i].iov_len : left;

				memset(copy[i].iov_base, 0, c);
				left -= c;
				i++;
			}
			break;
		}
		done += (size_t)n;
		if (iov_advance(copy, iovcnt, (size_t)n, &first) == 0)
			break;
	}
	vs_iov_room_free(copy, small);
	return ret;
}

int vs_aio_preadv_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, size_t len)
{
	return rw_full(false, fd, iov, iovcnt, offset, len, 0);
}

int vs_aio_pwritev_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, size_t len,
			int rw_flags)
{
	return rw_full(true, fd, iov, iovcnt, offset, len, rw_flags);
}

int vs_aio_fsync(int fd, bool datasync)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
	return wait_sqe(r, sqe);
}

int vs_aio_fallocate(int fd, int mode, uint64_t offset, uint64_t len)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_fallocate(sqe, fd, mode, (off_t)offset, (off_t)len);
	return wait_sqe(r, sqe);
}

/*
 * Coroutine context: wait until @fd reports one of @events, through the
 * epoll instance (one-shot, so a registration left behind by a descriptor
 * that was closed meanwhile never fires again). Returns revents or -errno.
 */
static int wait_ready(struct vs_reactor *r, int fd, unsigned events)
{
	struct fd_wait w = { .co = vs_co_current, .fd = fd, .events = events };
	int ret;

	if (fd < 0)
		return -EBADF;
	if ((unsigned)fd >= r->fdw_cap) {
		unsigned cap = r->fdw_cap ? r->fdw_cap : 64;
		struct fd_wait **p;

		while (cap <= (unsigned)fd)
			cap *= 2;
		p = realloc(r->fdw, sizeof(*p) * cap);
		if (!p)
			return -ENOMEM;
		memset(p + r->fdw_cap, 0, sizeof(*p) * (cap - r->fdw_cap));
		r->fdw = p;
		r->fdw_cap = cap;
	}
	w.next = r->fdw[fd];
	r->fdw[fd] = &w;
	ret = fd_rearm(r, fd);
	if (ret < 0) {
		r->fdw[fd] = w.next;
		return ret;
	}
	r->fd_waiters++;
	w.co->fd_wait = &w;
	vs_co_yield();
	w.co->fd_wait = NULL;
	return w.res;
}

int vs_aio_poll(int fd, unsigned events)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe;
	int ret = wait_ready(r, fd, events);

	if (ret != -EPERM)
		return ret;
	/* A descriptor epoll does not take (a regular file): poll in the ring. */
	sqe = get_sqe(r);
	io_uring_prep_poll_add(sqe, fd, events);
	return wait_sqe(r, sqe);
}

/*
 * Socket calls: the syscall without blocking, then, when it would block and
 * the caller did not ask for MSG_DONTWAIT, a readiness wait and again.
 */
/*
 * sendmsg (@out), or recv into the one iovec of @msg, waiting for readiness
 * when it would block.
 */
static ssize_t msg_ready(struct vs_reactor *r, int fd, struct msghdr *msg, int flags, bool out)
{
	if (!out && !(flags & MSG_DONTWAIT) && r->ring_recvs < VS_RING_RECV_MAX &&
	    r->ring_recvs < r->cq_entries / 4) {
		/* The ring tries the receive at once and parks it only if it would block. */
		struct io_uring_sqe *sqe = get_sqe(r);
		int ret;

		io_uring_prep_recv(sqe, fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len,
				   flags);
		r->ring_recvs++;
		ret = wait_sqe(r, sqe);
		r->ring_recvs--;
		if (ret > 0)
			MARK_FILLED(msg->msg_iov[0].iov_base, (size_t)ret);
		return ret;
	}
	for (;;) {
		ssize_t n = out ? sendmsg(fd, msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL) :
				  recv(fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len,
				       flags | MSG_DONTWAIT);
		int ret;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if ((errno != EAGAIN && errno != EWOULDBLOCK) || (flags & MSG_DONTWAIT))
			return -errno;
		ret = wait_ready(r, fd, out ? POLLOUT : POLLIN);
		if (ret < 0)
			return ret;
	}
}

ssize_t vs_aio_recv(int fd, void *buf, size_t len, int flags)
{
	struct iovec iov = { buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	return msg_ready(cur(), fd, &msg, flags, false);
}

ssize_t vs_aio_send(int fd, const void *buf, size_t len, int flags)
{
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	return msg_ready(cur(), fd, &msg, flags, true);
}

/* All @len bytes of @buf through vs_aio_send (@send) or vs_aio_recv. */
static int aio_xfer_full(int fd, char *buf, size_t len, bool send)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send ? vs_aio_send(fd, buf + done, len - done, 0) :
				   vs_aio_recv(fd, buf + done, len - done, 0);

		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return send ? -EPIPE : -ECONNRESET;
		done += (size_t)n;
	}
	return 0;
}

int vs_aio_recv_full(int fd, void *buf, size_t len)
{
	return aio_xfer_full(fd, buf, len, false);
}

int vs_aio_send_full(int fd, const void *buf, size_t len)
{
	return aio_xfer_full(fd, (char *)buf, len, true);
}

int vs_aio_sendmsg_full(int fd, struct iovec *iov, int iovcnt)
{
	struct vs_reactor *r = cur();
	struct iovec small[16];
	struct iovec *copy = iov_copy(small, 16, iov, iovcnt);
	int first = 0, ret = 0;

	if (!copy)
		return -ENOMEM;
	while (first < iovcnt) {
		struct msghdr msg = { .msg_iov = copy + first,
				      .msg_iovlen = (size_t)(iovcnt - first) };
		ssize_t n = msg_ready(r, fd, &msg, 0, true);

		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0) {
			ret = (int)n;
			break;
		}
		if (n == 0) {
			ret = -EPIPE;
			break;
		}
		iov_advance(copy, iovcnt, (size_t)n, &first);
	}
	vs_iov_room_free(copy, small);
	return ret;
}

int vs_aio_accept(int fd)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	return wait_sqe(r, sqe);
}

int vs_aio_cancel(struct vs_co *co)
{
	struct vs_reactor *r = co->reactor;
	struct io_uring_sqe *sqe;

	if (co->fd_wait) {
		struct fd_wait *w = co->fd_wait;

		/* Fired already: its wake-up is queued, the result stands. */
		if (!w->fired) {
			fd_wake(r, w, -ECANCELED);
			(void)fd_rearm(r, w->fd); /* for the others, or none */
		}
		return 0;
	}
	if (!co->pending)
		return -ENOENT;
	/* The cancel SQE itself carries no waiter: its CQE is just counted. */
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		if (submit(r, 0) < 0 || !(sqe = io_uring_get_sqe(&r->ring)))
			return -EBUSY;
	}
	r->prepared++;
	io_uring_prep_cancel(sqe, co->pending, 0);
	io_uring_sqe_set_data(sqe, NULL);
	return 0;
}

void vs_co_sleep_ns(uint64_t ns)
{
	struct vs_reactor *r = cur();
	struct io_uring_sqe *sqe = get_sqe(r);
	struct __kernel_timespec ts = { .tv_sec = (long long)(ns / 1000000000u),
					.tv_nsec = (long long)(ns % 1000000000u) };

	io_uring_prep_timeout(sqe, &ts, 0, 0);
	(void)wait_sqe(r, sqe); /* -ETIME is the normal outcome */
}

/* ---- the worker pool ---- */

struct vs_worker_job {
	void (*fn)(void *arg);
	void *arg;
	struct vs_co *co;
	struct vs_reactor *reactor;
	bool done;
	struct vs_worker_job *next;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static struct vs_worker_job *pool_head, *pool_tail;
static unsigned pool_threads, pool_started;
/* The automatic size, worked out once (it reads /sys and the affinity mask). */
static unsigned pool_auto;

void vs_worker_pool_set_threads(unsigned n)
{
	pthread_mutex_lock(&pool_lock);
	pool_threads = n;
	pthread_mutex_unlock(&pool_lock);
}

unsigned vs_worker_pool_threads(void)
{
	unsigned n;

	pthread_mutex_lock(&pool_lock);
	n = pool_threads ? pool_threads : pool_auto;
	pthread_mutex_unlock(&pool_lock);
	if (!n) {
		/* The CPUs this process may run on (taskset, cgroups), else those online. */
		cpu_set_t set;
		long c = sysconf(_SC_NPROCESSORS_ONLN);

		if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
			c = CPU_COUNT(&set);
		n = c > 0 ? (unsigned)c : 1;
		pthread_mutex_lock(&pool_lock);
		pool_auto = n;
		pthread_mutex_unlock(&pool_lock);
	}
	return n;
}

/*
 * Under done_lock: whether @r's eventfd needs ringing for one more
 * completion or message. While either list is non-empty, the push that
 * made it so rang it, and the reactor takes both lists whole when it reads
 * the eventfd (worker_reap): one write per batch instead of one each.
 */
static bool efd_unrung(const struct vs_reactor *r)
{
	return !r->done_head && !r->mbox_head;
}

static void *worker_main(void *unused)
{
	(void)unused;
	for (;;) {
		struct vs_worker_job *j;
		struct vs_reactor *r;
		uint64_t one = 1;
		bool ring;

		pthread_mutex_lock(&pool_lock);
		while (!pool_head)
			pthread_cond_wait(&pool_cond, &pool_lock);
		j = pool_head;
		pool_head = j->next;
		if (!pool_head)
			pool_tail = NULL;
		pthread_mutex_unlock(&pool_lock);

		j->fn(j->arg);

		r = j->reactor;
		pthread_mutex_lock(&r->done_lock);
		ring = efd_unrung(r);
		j->next = r->done_head;
		r->done_head = j;
		/*
		 * Ring the reactor under the lock: once the job is reaped, its
		 * coroutine may end and the reactor be freed (its eventfd closed,
		 * the number reused). A full counter (impossible here) only
		 * merges wake-ups.
		 */
		if (ring && write(r->efd, &one, sizeof(one)) != sizeof(one)) {
		}
		pthread_mutex_unlock(&r->done_lock);
	}
	return NULL;
}

/* Start worker threads up to the pool size. Returns how many run. */
static unsigned pool_ensure(void)
{
	unsigned want = vs_worker_pool_threads(), have;

	pthread_mutex_lock(&pool_lock);
	while (pool_started < want) {
		pthread_t t;
		pthread_attr_t a;

		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, worker_main, NULL) != 0) {
			pthread_attr_destroy(&a);
			break;
		}
		pthread_attr_destroy(&a);
		pool_started++;
	}
	have = pool_started;
	pthread_mutex_unlock(&pool_lock);
	return have;
}

static void worker_arm(struct vs_reactor *r)
{
	struct io_uring_sqe *sqe;

	if (r->efd_armed)
		return;
	sqe = get_sqe(r);
	io_uring_prep_read(sqe, r->efd, &r->efd_value, sizeof(r->efd_value), 0);
	io_uring_sqe_set_data(sqe, &efd_tag);
	r->efd_armed = true;
}

static void worker_reap(struct vs_reactor *r)
{
	struct vs_worker_job *j;
	struct vs_reactor_msg *m;

	r->efd_armed = false;
	pthread_mutex_lock(&r->done_lock);
	j = r->done_head;
	r->done_head = NULL;
	m = r->mbox_head;
	r->mbox_head = r->mbox_tail = NULL;
	pthread_mutex_unlock(&r->done_lock);
	while (j) {
		struct vs_worker_job *next = j->next;

		j->done = true;
		r->jobs_pending--;
		vs_reactor_enqueue(r, j->co);
		j = next;
	}
	/* In the order they were pushed. */
	while (m) {
		struct vs_reactor_msg *next = m->next;

		m->deliver(r, m, false);
		m = next;
	}
	/* Still waiting for some: the loop re-arms the read (efd_arm). */
}

/* ---- the mailbox (the messages themselves: reactor-call.c) ---- */

int vs_reactor_mbox_push(struct vs_reactor *r, struct vs_reactor_msg *m, bool force)
{
	uint64_t one = 1;
	bool ring;

	m->next = NULL;
	pthread_mutex_lock(&r->done_lock);
	if (r->mbox_closed && !force) {
		pthread_mutex_unlock(&r->done_lock);
		return -ESHUTDOWN;
	}
	ring = efd_unrung(r);
	if (r->mbox_tail)
		r->mbox_tail->next = m;
	else
		r->mbox_head = m;
	r->mbox_tail = m;
	/* Under the lock, as worker_main() rings: @r may go once @m is read. */
	if (ring && write(r->efd, &one, sizeof(one)) != sizeof(one)) {
	}
	pthread_mutex_unlock(&r->done_lock);
	return 0;
}

void vs_reactor_mbox_close(struct vs_reactor *r)
{
	struct vs_reactor_msg *m;

	pthread_mutex_lock(&r->done_lock);
	r->mbox_closed = true;
	m = r->mbox_head;
	r->mbox_head = r->mbox_tail = NULL;
	pthread_mutex_unlock(&r->done_lock);
	while (m) {
		struct vs_reactor_msg *next = m->next;

		m->deliver(r, m, true);
		m = next;
	}
}

void vs_reactor_listen(struct vs_reactor *r, bool on)
{
	if (on)
		r->listen++;
	else if (r->listen)
		r->listen--;
}

unsigned vs_reactor_alive(const struct vs_reactor *r)
{
	return r->alive;
}

int vs_co_run_in_worker(void (*fn)(void *arg), void *arg)
{
	struct vs_reactor *r = cur();
	struct vs_worker_job j = { .fn = fn, .arg = arg, .co = vs_co_current, .reactor = r };

	if (pool_ensure() == 0) {
		fn(arg);
		return -EAGAIN;
	}
	r->jobs_pending++;
	pthread_mutex_lock(&pool_lock);
	if (pool_tail)
		pool_tail->next = &j;
	else
		pool_head = &j;
	pool_tail = &j;
	pthread_cond_signal(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
	while (!j.done) {
		worker_arm(r);
		vs_co_yield();
	}
	return 0;
}
