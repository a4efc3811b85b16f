/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The context switch: a few lines of assembly on x86-64 (save the
 * callee-saved registers on the old stack, swap stack pointers, restore),
 * ucontext elsewhere. Both tell AddressSanitizer and valgrind about stack
 * changes so the sanitizer runs stay clean; ThreadSanitizer is told that
 * each coroutine is a fiber of the thread that runs it, so it neither
 * mixes the shadow call stacks of two coroutines nor reports a race
 * between two coroutines of one reactor (which never run at once).
 */
#include "config.h"

#include "coroutine-int.h"

#include <stdint.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define VS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VS_ASAN 1
#endif
#endif

#ifdef VS_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
				     size_t *size_old);
/* The thread's own stack, learnt on the first switch into a coroutine. */
static __thread const void *main_stack_bottom;
static __thread size_t main_stack_size;
#endif

#if defined(__SANITIZE_THREAD__)
#define VS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VS_TSAN 1
#endif
#endif

#ifdef VS_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
/* The fiber of the thread's loop, which every yield returns to. */
static __thread void *loop_fiber;
#endif

#ifndef VS_CO_UCONTEXT
/*
 * void vs_co_switch(void **save_sp, void *new_sp)
 * Pushes rbp, rbx, r12-r15, stores rsp in *save_sp, loads new_sp, pops the
 * same registers of the other side and returns into it.
 */
void vs_co_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
	".globl vs_co_switch\n"
	".hidden vs_co_switch\n"
	".type vs_co_switch,@function\n"
	"vs_co_switch:\n"
	"\tpushq %rbp\n"
	"\tpushq %rbx\n"
	"\tpushq %r12\n"
	"\tpushq %r13\n"
	"\tpushq %r14\n"
	"\tpushq %r15\n"
	"\tmovq %rsp, (%rdi)\n"
	"\tmovq %rsi, %rsp\n"
	"\tpopq %r15\n"
	"\tpopq %r14\n"
	"\tpopq %r13\n"
	"\tpopq %r12\n"
	"\tpopq %rbx\n"
	"\tpopq %rbp\n"
	"\tret\n"
	".size vs_co_switch, .-vs_co_switch\n");

static void co_trampoline(void)
{
	vs_co_entry(vs_co_current);
	abort(); /* vs_co_entry never returns */
}

/*
 * A pooled coroutine starts afresh at its trampoline: it gets a new fiber
 * (the old one's shadow stack ended inside vs_co_entry).
 */
static void co_tsan_fiber_init(struct vs_co *co)
{
#ifdef VS_TSAN
	if (co->tsan_fiber)
		__tsan_destroy_fiber(co->tsan_fiber);
	co->tsan_fiber = __tsan_create_fiber(0);
#else
	(void)co;
#endif
}

void vs_co_ctx_fini(struct vs_co *co)
{
#ifdef VS_TSAN
	if (co->tsan_fiber)
		__tsan_destroy_fiber(co->tsan_fiber);
	co->tsan_fiber = NULL;
#else
	(void)co;
#endif
}

void vs_co_ctx_init(struct vs_co *co)
{
	uintptr_t top = ((uintptr_t)co->stack + co->stack_size) & ~(uintptr_t)15;
	void **sp = (void **)top;

	*--sp = NULL;		       /* fake return address of the trampoline */
	*--sp = (void *)co_trampoline; /* where the first switch "returns" */
	for (int i = 0; i < 6; i++)
		*--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
	co->ctx.sp = sp;
	co_tsan_fiber_init(co);
}
#else
static void co_trampoline_uc(unsigned hi, unsigned lo)
{
	struct vs_co *co = (struct vs_co *)(((uintptr_t)hi << 32) | lo);

	vs_co_entry(co);
	abort();
}

void vs_co_ctx_init(struct vs_co *co)
{
	uintptr_t p = (uintptr_t)co;

	getcontext(&co->ctx.uc);
	co->ctx.uc.uc_stack.ss_sp = co->stack;
	co->ctx.uc.uc_stack.ss_size = co->stack_size;
	co->ctx.uc.uc_link = NULL;
	makecontext(&co->ctx.uc, (void (*)(void))co_trampoline_uc, 2, (unsigned)(p >> 32),
		    (unsigned)p);
	co_tsan_fiber_init(co);
}
#endif

static void raw_switch(struct vs_co_ctx *from, struct vs_co_ctx *to)
{
#ifdef VS_CO_UCONTEXT
	swapcontext(&from->uc, &to->uc);
#else
	vs_co_switch(&from->sp, to->sp);
#endif
}

void vs_co_ctx_resume(struct vs_co_ctx *main, struct vs_co *co)
{
#ifdef VS_ASAN
	void *fake = NULL;

	__sanitizer_start_switch_fiber(&fake, co->stack, co->stack_size);
#endif
#ifdef VS_TSAN
	loop_fiber = __tsan_get_current_fiber();
	__tsan_switch_to_fiber(co->tsan_fiber, 0);
#endif
	raw_switch(main, &co->ctx);
#ifdef VS_ASAN
	__sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

void vs_co_ctx_yield(struct vs_co *co, struct vs_co_ctx *main)
{
#ifdef VS_ASAN
	/* A finished coroutine's fake stack is released (NULL save slot). */
	__sanitizer_start_switch_fiber(co->done ? NULL : &co->asan_fake_stack, main_stack_bottom,
				       main_stack_size);
#endif
#ifdef VS_TSAN
	__tsan_switch_to_fiber(loop_fiber, 0);
#endif
	raw_switch(&co->ctx, main);
#ifdef VS_ASAN
	__sanitizer_finish_switch_fiber(co->asan_fake_stack, NULL, NULL);
#endif
}

void vs_co_entry(struct vs_co *co)
{
	for (;;) {
#ifdef VS_ASAN
		__sanitizer_finish_switch_fiber(NULL, &main_stack_bottom, &main_stack_size);
#endif
		co->fn(co->arg);
		co->done = true;
		/*
		 * Back to the loop, which returns the coroutine to the pool. A
		 * pooled coroutine is re-initialised before reuse, so this
		 * switch never comes back here.
		 */
		vs_co_ctx_yield(co, vs_reactor_main_ctx(co->reactor));
	}
}
