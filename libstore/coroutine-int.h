/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Coroutine internals shared by coroutine.c, coroutine-switch.c and reactor.c.
 *
 * Switches only ever go between a reactor's loop (the "main" context of the
 * thread) and one coroutine: resume enters a coroutine, yield returns to the
 * loop. That keeps the machine-dependent part to one primitive.
 */
#ifndef VSTOR_COROUTINE_INT_H
#define VSTOR_COROUTINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/reactor.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#define VS_CO_UCONTEXT 1
#endif

struct vs_co_ctx {
#ifdef VS_CO_UCONTEXT
	ucontext_t uc;
#else
	void *sp;
#endif
};

struct vs_co {
	struct vs_co_ctx ctx;
	struct vs_reactor *reactor;
	vs_co_fn *fn;
	void *arg;
	void *stack;	    /* mmap'd, guard page at the low end */
	size_t stack_size;  /* usable bytes above the guard page */
	struct vs_co *next; /* run queue or free pool */
	bool queued;
	bool done;
	unsigned valgrind_id;
	void *asan_fake_stack;
	void *pending;		   /* the aio_wait of the operation it waits for, or NULL */
	void *fd_wait;		   /* the readiness wait (epoll) it is parked in, or NULL */
	void *tsan_fiber;	   /* ThreadSanitizer builds: the coroutine's fiber */
	enum vs_io_class io_class; /* of its file reads and writes; inherited by spawn */
};

struct vs_co_waiter {
	struct vs_co *co;
	struct vs_co_waiter *next;
};

/* coroutine-switch.c */
/* Prepare @co to start at its trampoline on its own stack. */
void vs_co_ctx_init(struct vs_co *co);
/* Release what vs_co_ctx_init() set up beside the stack (a TSan fiber). */
void vs_co_ctx_fini(struct vs_co *co);
/* From the loop: run @co until it yields or finishes. */
void vs_co_ctx_resume(struct vs_co_ctx *main, struct vs_co *co);
/* From @co: return to the loop. */
void vs_co_ctx_yield(struct vs_co *co, struct vs_co_ctx *main);
/* Entry point of every coroutine (runs fn, marks done, yields for good). */
void vs_co_entry(struct vs_co *co);

/* reactor.c */
struct vs_co_ctx *vs_reactor_main_ctx(struct vs_reactor *r);
void vs_reactor_enqueue(struct vs_reactor *r, struct vs_co *co);
struct vs_co *vs_reactor_take_free_co(struct vs_reactor *r);
void vs_reactor_put_free_co(struct vs_reactor *r, struct vs_co *co);
void vs_reactor_co_started(struct vs_reactor *r);

/*
 * A message for another thread's reactor (reactor-call.c): pushed from any
 * thread, delivered on the receiving reactor's thread from its loop, in
 * push order. @deliver runs outside coroutine context; @cancelled says the
 * reactor stops and will not run it (the message must still be released).
 */
struct vs_reactor_msg {
	struct vs_reactor_msg *next;
	void (*deliver)(struct vs_reactor *r, struct vs_reactor_msg *m, bool cancelled);
};
/*
 * Push @m; -ESHUTDOWN once the mailbox is closed, unless @force (replies,
 * which a closing reactor still awaits).
 */
int vs_reactor_mbox_push(struct vs_reactor *r, struct vs_reactor_msg *m, bool force);
/* On @r's thread: refuse new messages and cancel those queued. */
void vs_reactor_mbox_close(struct vs_reactor *r);
/* Coroutines alive on @r. */
unsigned vs_reactor_alive(const struct vs_reactor *r);

/* coroutine.c */
/* Bytes left below the running coroutine's stack pointer (SIZE_MAX outside one). */
size_t vs_co_stack_left(void);
struct vs_co *vs_co_new_stack(size_t stack_size);
void vs_co_free_stack(struct vs_co *co);
extern __thread struct vs_co *vs_co_current;

#endif
