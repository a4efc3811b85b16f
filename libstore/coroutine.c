/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Request coroutines: stackful, pooled per reactor, never migrating.
 */
#include "config.h"

#include "coroutine-int.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

__thread struct vs_co *vs_co_current;

struct vs_co *vs_co_new_stack(size_t stack_size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct vs_co *co = calloc(1, sizeof(*co));
	void *mem;

	if (!co)
		return NULL;
	stack_size = (stack_size + page - 1) & ~(page - 1);
	/* One guard page below the stack turns an overflow into a clean SIGSEGV. */
	mem = mmap(NULL, stack_size + page, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		free(co);
		return NULL;
	}
	if (mprotect(mem, page, PROT_NONE) < 0) {
		munmap(mem, stack_size + page);
		free(co);
		return NULL;
	}
	co->stack = (char *)mem + page;
	co->stack_size = stack_size;
#if HAVE_VALGRIND
	co->valgrind_id = VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + stack_size);
#endif
	return co;
}

void vs_co_free_stack(struct vs_co *co)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (!co)
		return;
#if HAVE_VALGRIND
	VALGRIND_STACK_DEREGISTER(co->valgrind_id);
#endif
	vs_co_ctx_fini(co);
	munmap((char *)co->stack - page, co->stack_size + page);
	free(co);
}

struct vs_co *vs_co_spawn(struct vs_reactor *r, vs_co_fn *fn, void *arg)
{
	struct vs_co *co = vs_reactor_take_free_co(r);

	if (!co) {
		co = vs_co_new_stack(VS_CO_STACK_SIZE);
		if (!co)
			return NULL;
	}
	co->reactor = r;
	co->io_class = vs_co_current ? vs_co_current->io_class : VS_IO_CLASS_NORMAL;
	co->fn = fn;
	co->arg = arg;
	co->done = false;
	co->queued = false;
	co->next = NULL;
	co->asan_fake_stack = NULL;
	vs_co_ctx_init(co);
	vs_reactor_co_started(r);
	vs_reactor_enqueue(r, co);
	return co;
}

size_t vs_co_stack_left(void)
{
	struct vs_co *co = vs_co_current;
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0), lo;

	if (!co)
		return SIZE_MAX;
	lo = (uintptr_t)co->stack;
	if (sp < lo || sp > lo + co->stack_size)
		return SIZE_MAX; /* not on its own stack: nothing to guard */
	return sp - lo;
}

struct vs_co *vs_co_self(void)
{
	return vs_co_current;
}

void vs_co_set_io_class(enum vs_io_class c)
{
	if (vs_co_current)
		vs_co_current->io_class = c;
}

enum vs_io_class vs_co_io_class(void)
{
	return vs_co_current ? vs_co_current->io_class : VS_IO_CLASS_NORMAL;
}

bool vs_in_coroutine(void)
{
	return vs_co_current != NULL;
}

void vs_co_yield(void)
{
	struct vs_co *co = vs_co_current;

	if (!co)
		abort(); /* a programming error, never input-driven */
	vs_co_ctx_yield(co, vs_reactor_main_ctx(co->reactor));
}

void vs_co_wake(struct vs_co *co)
{
	vs_reactor_enqueue(co->reactor, co);
}

void vs_co_yield_now(void)
{
	vs_co_wake(vs_co_current);
	vs_co_yield();
}

static void waiter_push(struct vs_co_waiter **head, struct vs_co_waiter **tail,
			struct vs_co_waiter *w)
{
	w->next = NULL;
	if (*tail)
		(*tail)->next = w;
	else
		*head = w;
	*tail = w;
}

static struct vs_co_waiter *waiter_pop(struct vs_co_waiter **head, struct vs_co_waiter **tail)
{
	struct vs_co_waiter *w = *head;

	if (w) {
		*head = w->next;
		if (!*head)
			*tail = NULL;
	}
	return w;
}

void vs_co_mutex_lock(struct vs_co_mutex *m)
{
	struct vs_co_waiter w = { .co = vs_co_current };

	/*
	 * No hand-over on unlock: a woken waiter competes again. Handing the
	 * lock to a coroutine that only runs on the next loop turn would make
	 * everyone else queue behind it, a convoy that never dissolves once a
	 * single holder has yielded with the lock.
	 */
	while (m->locked) {
		waiter_push(&m->head, &m->tail, &w);
		vs_co_yield();
	}
	m->locked = true;
}

void vs_co_mutex_unlock(struct vs_co_mutex *m)
{
	struct vs_co_waiter *w = waiter_pop(&m->head, &m->tail);

	m->locked = false;
	if (w)
		vs_co_wake(w->co);
}

void vs_co_queue_wait(struct vs_co_queue *q)
{
	struct vs_co_waiter w = { .co = vs_co_current };

	waiter_push(&q->head, &q->tail, &w);
	vs_co_yield();
}

bool vs_co_queue_wake_one(struct vs_co_queue *q)
{
	struct vs_co_waiter *w = waiter_pop(&q->head, &q->tail);

	if (!w)
		return false;
	vs_co_wake(w->co);
	return true;
}

void vs_co_queue_wake_all(struct vs_co_queue *q)
{
	while (vs_co_queue_wake_one(q))
		;
}

bool vs_co_queue_empty(const struct vs_co_queue *q)
{
	return q->head == NULL;
}
