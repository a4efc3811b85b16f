/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Calls into a callback-driven client library (libnfs, libiscsi) from
 * coroutines on the reactor (internal to libstore). Both libraries have the
 * shape libnbd made common: they never own the event loop, they expose a
 * socket, the events they want on it and a "service" call, and they report
 * each request's end through a callback.
 *
 * Two parts, shared by driver-nfs.c and driver-iscsi.c:
 *
 * - struct vs_async_call, the bookkeeping of one request: the coroutine
 *   that issued it parks until the library's callback records the result
 *   and wakes it. A call is heap-allocated by its driver (which embeds this
 *   struct first in its own): when the session dies its waiter returns,
 *   and a late callback must still find the call (then it frees it).
 *
 * - struct vs_async_pump, the coroutine that polls the library's socket
 *   through the ring (vs_aio_poll) and services it, re-armed when the
 *   events wanted change (vs_async_pump_kick).
 *
 * Everything runs on one reactor, in coroutine context except the
 * callbacks, which run inside the library's service call.
 */
#ifndef VSTOR_ASYNC_CALL_H
#define VSTOR_ASYNC_CALL_H

#include <stdbool.h>

#include "vstor/reactor.h"

struct vs_async_call {
	struct vs_async_call **list; /* the list it is in flight on, or NULL */
	struct vs_async_call *prev, *next;
	struct vs_co *co; /* the waiter */
	bool done;	  /* the callback came (or the call was never queued) */
	bool abandoned;	  /* the waiter has gone: the callback frees the call */
	int status;	  /* the driver's result code */
};

/* Start @c (zeroed) for the calling coroutine, in flight on @list. */
void vs_async_call_start(struct vs_async_call *c, struct vs_async_call **list);

/* Take @c off its list (if it is on one). */
void vs_async_call_unlink(struct vs_async_call *c);

/*
 * The callback came with @status: record it, take @c off its list and wake
 * the waiter (unless the callback runs in the waiter itself, as libnfs does
 * for some calls before they return). The caller has checked that @c is
 * not abandoned.
 */
void vs_async_call_complete(struct vs_async_call *c, int status);

/* The library did not queue @c: no callback will come. */
void vs_async_call_not_queued(struct vs_async_call *c, int status);

/* Park until @c is done or abandoned (the session died). */
void vs_async_call_wait(struct vs_async_call *c);

/*
 * The waiter is done with @c. Returns true when the caller frees it now;
 * false when a callback is still due (it frees @c then).
 */
bool vs_async_call_release(struct vs_async_call *c);

/*
 * Fail @c, still in flight, with @status: the waiter returns; a callback
 * may still come and then frees it.
 */
void vs_async_call_abandon(struct vs_async_call *c, int status);

/* The library's calls for the pump, with @lib its context. */
struct vs_async_pump_ops {
	int (*get_fd)(void *lib);
	int (*which_events)(void *lib);
	/* Service @revents; < 0 when the session is dead. */
	int (*service)(void *lib, int revents);
	/*
	 * Optional: after the pump serviced socket @fd (not in error), take
	 * what it already holds; < 0 when the session is dead.
	 */
	int (*drain)(void *lib, int fd);
	/* Whether queued requests can be written at once when @events are wanted. */
	bool (*can_send)(void *lib, unsigned events);
	/* The session died: fail the calls in flight (@owner is the session). */
	void (*fail_all)(void *owner);
};

struct vs_async_pump {
	const struct vs_async_pump_ops *ops;
	void *lib;
	void *owner;
	struct vs_co *co;
	bool running;
	bool polling; /* parked in vs_aio_poll(poll_fd, poll_ev) */
	int poll_fd;
	unsigned poll_ev;
	bool stopping;
	bool dead;
	struct vs_co_queue exit; /* woken when the pump (or a helper) ends */
};

/* Set up @p (zeroed) for library context @lib of session @owner. */
void vs_async_pump_init(struct vs_async_pump *p, const struct vs_async_pump_ops *ops, void *lib,
			void *owner);

/* Spawn the pump coroutine on the current reactor. 0 or -ENOMEM. */
int vs_async_pump_start(struct vs_async_pump *p);

/*
 * After queueing a request: write it now if the library can, and re-arm
 * the pump when the library wants other events or another socket.
 */
void vs_async_pump_kick(struct vs_async_pump *p);

/* Stop the pump and wait until it has ended. */
void vs_async_pump_stop(struct vs_async_pump *p);

/*
 * libnfs and libiscsi write to their sockets with plain send(): a server
 * that goes away would kill the process with SIGPIPE instead of failing the
 * request with EPIPE. Ignore SIGPIPE unless the program handles it.
 */
void vs_async_ignore_sigpipe(void);

#endif
