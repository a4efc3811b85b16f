/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The execution engine: reactors (one io_uring per thread) and the request
 * coroutines that run on them.
 *
 * A reactor belongs to the thread that created it. Coroutines are spawned on
 * a reactor and never migrate. Inside a coroutine, the vs_aio_* calls submit
 * one SQE, yield, and return the completion's result: format code reads as
 * straight-line code while the thread serves many requests at once.
 *
 * Functions marked "coroutine context" must only be called from a coroutine
 * running on the calling thread's reactor.
 */
#ifndef VSTOR_REACTOR_H
#define VSTOR_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vs_reactor;
struct vs_co;

typedef void vs_co_fn(void *arg);

/* Default stack of a request coroutine. */
#define VS_CO_STACK_SIZE (256 * 1024)

/*
 * Create a reactor for the calling thread with an io_uring of @entries SQEs
 * (0 picks the default). Returns 0 or -errno.
 */
int vs_reactor_new(struct vs_reactor **out, unsigned entries);

/* Destroy a reactor; no coroutine may still be alive on it. NULL is a no-op. */
void vs_reactor_free(struct vs_reactor *r);

/* The reactor of the calling thread, or NULL. */
struct vs_reactor *vs_reactor_current(void);

/*
 * Spawn a coroutine that runs @fn(@arg) on @r. It first runs the next time
 * the reactor loop turns. Returns the coroutine, or NULL when out of memory.
 * The coroutine is freed (returned to the reactor's pool) when @fn returns.
 */
struct vs_co *vs_co_spawn(struct vs_reactor *r, vs_co_fn *fn, void *arg);

/*
 * Run the reactor until *@done becomes true (checked after every turn), or,
 * when @done is NULL, until no coroutine is alive. Returns 0, or -errno on a
 * fatal ring error.
 */
int vs_reactor_run(struct vs_reactor *r, const bool *done);

/*
 * Convenience for tools: create a reactor on this thread if it has none,
 * spawn @fn(@arg) as a coroutine, and run until it returns.
 * Returns 0 or -errno (the ring could not be set up).
 */
int vs_run_in_coroutine(vs_co_fn *fn, void *arg);

/* The running coroutine, or NULL outside coroutine context. */
struct vs_co *vs_co_self(void);

/*
 * The I/O class of a coroutine's file reads and writes, which the coroutines
 * it spawns inherit. VS_IO_CLASS_IDLE is the kernel's idle I/O priority
 * class (ionice -c3): where the device's I/O scheduler honours classes
 * (mq-deadline, bfq) its requests go only when no normal one waits, so a
 * background copy (a block job) leaves the device to the guest's requests.
 * Where the scheduler ignores classes (none) nothing changes.
 */
enum vs_io_class {
	VS_IO_CLASS_NORMAL,
	VS_IO_CLASS_IDLE,
};
/* Coroutine context: set the calling coroutine's class. */
void vs_co_set_io_class(enum vs_io_class c);
enum vs_io_class vs_co_io_class(void);

/* True if the caller runs inside a coroutine. */
bool vs_in_coroutine(void);

/* Coroutine context: suspend until someone calls vs_co_wake(self). */
void vs_co_yield(void);

/*
 * Make a suspended coroutine of the same reactor runnable again. Safe to call
 * from another coroutine or from a completion handler of the same thread.
 */
void vs_co_wake(struct vs_co *co);

/* Coroutine context: let other runnable coroutines run, then continue. */
void vs_co_yield_now(void);

/* Coroutine context: sleep for @ns nanoseconds (IORING_OP_TIMEOUT). */
void vs_co_sleep_ns(uint64_t ns);

/*
 * A coroutine mutex (no threads involved: it only orders coroutines of one
 * reactor). Zero-initialised is unlocked.
 */
struct vs_co_waiter;
struct vs_co_mutex {
	bool locked;
	struct vs_co_waiter *head, *tail;
};
void vs_co_mutex_lock(struct vs_co_mutex *m);
void vs_co_mutex_unlock(struct vs_co_mutex *m);

/*
 * A wait queue: coroutines park on it and are woken all at once or one by
 * one. Zero-initialised is empty.
 */
struct vs_co_queue {
	struct vs_co_waiter *head, *tail;
};
void vs_co_queue_wait(struct vs_co_queue *q);
bool vs_co_queue_wake_one(struct vs_co_queue *q);
void vs_co_queue_wake_all(struct vs_co_queue *q);
bool vs_co_queue_empty(const struct vs_co_queue *q);

/*
 * Asynchronous system calls through the reactor's ring; coroutine context.
 * Each returns what the syscall would (a byte count or 0), or -errno.
 * Short transfers are returned as is: callers that need the whole range use
 * the _full variants, which loop.
 */
ssize_t vs_aio_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t offset);
ssize_t vs_aio_pwritev(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, int rw_flags);
int vs_aio_preadv_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, size_t len);
int vs_aio_pwritev_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, size_t len,
			int rw_flags);
int vs_aio_fsync(int fd, bool datasync);
int vs_aio_fallocate(int fd, int mode, uint64_t offset, uint64_t len);
/*
 * Wait until @fd reports one of @events (POLLIN, POLLOUT...). Returns revents.
 * Pollable descriptors (sockets, pipes, eventfds) wait on the reactor's
 * epoll instance and hold no slot of the ring however long they wait.
 */
int vs_aio_poll(int fd, unsigned events);

/*
 * Sockets. recv/send return the byte count (0 on EOF for recv) or -errno;
 * the _full variants transfer exactly @len bytes or fail (-ECONNRESET on EOF
 * before the end). accept returns the new fd (SOCK_CLOEXEC) or -errno.
 * recv waits in the ring (IORING_OP_RECV) while a reactor has few such
 * receives parked (a quarter of its CQ, at most 64), beyond that as the
 * sends do: non-blocking syscalls that wait for readiness as vs_aio_poll()
 * does when the socket has nothing for them. With MSG_DONTWAIT in @flags
 * they return -EAGAIN instead of waiting. So idle peers take a bounded
 * share of the ring; accept holds one slot per listener.
 */
ssize_t vs_aio_recv(int fd, void *buf, size_t len, int flags);
ssize_t vs_aio_send(int fd, const void *buf, size_t len, int flags);
int vs_aio_recv_full(int fd, void *buf, size_t len);
int vs_aio_send_full(int fd, const void *buf, size_t len);
int vs_aio_sendmsg_full(int fd, struct iovec *iov, int iovcnt);
int vs_aio_accept(int fd);

/*
 * Cancel what a coroutine waits for in the ring: the pending operation of
 * @co (parked in a vs_aio_* call) completes with -ECANCELED. Used to stop a
 * connection's reader on shutdown. Returns 0 or -ENOENT if nothing pending.
 */
int vs_aio_cancel(struct vs_co *co);

/*
 * CPU-heavy work (compression) off the reactor: coroutine context. Runs
 * @fn(@arg) on a thread of the process-wide worker pool while the calling
 * coroutine yields; returns when @fn has returned. @fn must not touch the
 * reactor or any node: it works on memory it was given. Returns 0, or -errno
 * if no worker thread could be started (then @fn ran on the calling thread).
 */
int vs_co_run_in_worker(void (*fn)(void *arg), void *arg);

/*
 * Size of the worker pool (default: the number of online CPUs). Takes effect
 * for threads started afterwards; call before the first vs_co_run_in_worker.
 */
void vs_worker_pool_set_threads(unsigned n);
unsigned vs_worker_pool_threads(void);

/*
 * Work across reactors. A reactor belongs to one thread and so does all it
 * serves (its coroutines, the nodes and exports that live there); another
 * thread reaches them by running a function there.
 *
 * vs_reactor_call: coroutine context. Spawns @fn(@arg) as a coroutine on
 * @r and suspends the caller until @fn has returned (@fn may yield, do I/O,
 * and call further reactors). When @r is the caller's own reactor, @fn runs
 * inline. Returns 0 once @fn ran, -ESHUTDOWN if @r stops and will never run
 * it, -ENOMEM if @r could not spawn the coroutine. No allocation per call.
 *
 * vs_reactor_post: any thread, any context. Queues @fn(@arg) to run as a
 * coroutine on @r and returns at once (0, -ENOMEM, or -ESHUTDOWN once @r
 * stops). A post that @r cannot run (it stops first, or is out of memory)
 * is dropped: @fn never runs, so @arg must not need it to be freed.
 * Posts from one thread run in the order they were made.
 *
 * Either way @r must outlive the call: a reactor thread stopped with
 * vs_reactor_thread_stop() refuses what comes after its stop.
 */
int vs_reactor_call(struct vs_reactor *r, vs_co_fn *fn, void *arg);
int vs_reactor_post(struct vs_reactor *r, vs_co_fn *fn, void *arg);

/*
 * On @r's thread: while listening (@on counts up, !@on down), @r reads its
 * mailbox even when idle, so vs_reactor_run(r, &done) waits for posts
 * instead of reporting -EDEADLK. A reactor that others post to (a daemon's
 * main reactor, which receives events) listens; reactor threads and
 * coroutines waiting in vs_reactor_call() do so on their own.
 */
void vs_reactor_listen(struct vs_reactor *r, bool on);

/*
 * A thread that runs its own reactor and serves the calls and posts sent to
 * it, until vs_reactor_thread_stop(). @name (15 characters kept) names the
 * thread. Returns 0 or -errno.
 */
struct vs_reactor_thread;
int vs_reactor_thread_start(struct vs_reactor_thread **out, const char *name);
struct vs_reactor *vs_reactor_thread_reactor(const struct vs_reactor_thread *t);
/*
 * Stop @t: calls and posts already queued run first (later ones fail with
 * -ESHUTDOWN), then the coroutines still alive there finish, then the
 * thread is joined and the reactor freed. The owner ends its long-lived
 * coroutines there first (a connection waiting on its socket never
 * finishes). Returns the loop's result (0 or -errno). NULL is a no-op.
 */
int vs_reactor_thread_stop(struct vs_reactor_thread *t);

/* Counters of a reactor, for statistics and tests. */
struct vs_reactor_stats {
	uint64_t sqes_submitted;
	uint64_t cqes_reaped;
	uint64_t co_switches;
	uint64_t co_alive;
	uint64_t sqe_waits; /* times a coroutine parked for a free SQE */
};
void vs_reactor_get_stats(const struct vs_reactor *r, struct vs_reactor_stats *st);

#ifdef __cplusplus
}
#endif

#endif
