/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of work across reactors: vs_reactor_call, vs_reactor_post, reactor threads. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "coroutine-int.h" /* vs_reactor_mbox_close: a stop made deterministic */
#include "vstor/reactor.h"

#define NTHREADS 3

struct where {
	struct vs_reactor *reactor;
	pthread_t thread;
	bool in_co;
};

static void record_where(void *arg)
{
	struct where *w = arg;

	w->reactor = vs_reactor_current();
	w->thread = pthread_self();
	w->in_co = vs_in_coroutine();
	vs_co_sleep_ns(1000000); /* a function may wait for I/O there */
}

struct one_call {
	struct vs_reactor *target;
	struct where w;
	int ret;
};

static void co_call_once(void *arg)
{
	struct one_call *c = arg;

	c->ret = vs_reactor_call(c->target, record_where, &c->w);
}

static void test_call_runs_on_target(void **state)
{
	struct vs_reactor_thread *t;
	struct vs_reactor *main_r;
	struct one_call c = { .ret = -1 };

	(void)state;
	assert_int_equal(vs_reactor_new(&main_r, 0), 0);
	assert_int_equal(vs_reactor_thread_start(&t, "test-io"), 0);
	c.target = vs_reactor_thread_reactor(t);
	assert_non_null(c.target);
	assert_ptr_not_equal(c.target, main_r);
	assert_non_null(vs_co_spawn(main_r, co_call_once, &c));
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	assert_int_equal(c.ret, 0);
	assert_ptr_equal(c.w.reactor, c.target);
	assert_true(c.w.in_co);
	assert_false(pthread_equal(c.w.thread, pthread_self()));
	assert_int_equal(vs_reactor_thread_stop(t), 0);
	vs_reactor_free(main_r);
}

static void test_call_own_reactor_inline(void **state)
{
	struct vs_reactor *main_r;
	struct one_call c = { .ret = -1 };

	(void)state;
	assert_int_equal(vs_reactor_new(&main_r, 0), 0);
	c.target = main_r;
	assert_non_null(vs_co_spawn(main_r, co_call_once, &c));
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	assert_int_equal(c.ret, 0);
	assert_ptr_equal(c.w.reactor, main_r);
	assert_true(pthread_equal(c.w.thread, pthread_self()));
	vs_reactor_free(main_r);
}

/* Many coroutines call into several reactors at once, and those call each other. */
struct many {
	struct vs_reactor *targets[NTHREADS];
	pthread_t owner[NTHREADS];
	unsigned counter[NTHREADS]; /* counter[k] is only touched on reactor k */
	unsigned wrong_thread;	    /* main thread only */
	unsigned failed;	    /* main thread only */
};

struct many_op {
	struct many *m;
	int k;
	bool nested;
	int nested_ret;
};

static void bump(void *arg)
{
	struct many_op *op = arg;
	struct many *m = op->m;

	if (!pthread_equal(pthread_self(), m->owner[op->k]))
		__atomic_fetch_add(&m->wrong_thread, 1, __ATOMIC_RELAXED);
	m->counter[op->k]++;
	vs_co_yield_now(); /* others interleave on the target */
	if (op->nested) {
		/* From reactor k into the next one: calls nest across threads. */
		struct many_op inner = { .m = m, .k = (op->k + 1) % NTHREADS };

		op->nested_ret = vs_reactor_call(m->targets[inner.k], bump, &inner);
	}
}

static void learn_owner(void *arg)
{
	*(pthread_t *)arg = pthread_self();
}

struct many_caller {
	struct many *m;
	int id;
};

static void co_many_caller(void *arg)
{
	struct many_caller *c = arg;

	for (int i = 0; i < 10; i++) {
		struct many_op op = { .m = c->m,
				      .k = (c->id + i) % NTHREADS,
				      .nested = (i % 3) == 0 };

		if (vs_reactor_call(c->m->targets[op.k], bump, &op) != 0 || op.nested_ret != 0)
			c->m->failed++;
	}
}

static void co_learn_owners(void *arg)
{
	struct many *m = arg;

	for (int k = 0; k < NTHREADS; k++)
		assert_int_equal(vs_reactor_call(m->targets[k], learn_owner, &m->owner[k]), 0);
}

static void test_call_many_concurrent(void **state)
{
	enum { NCALLERS = 200 };
	struct vs_reactor_thread *t[NTHREADS];
	struct vs_reactor *main_r;
	struct many m = { .failed = 0 };
	struct many_caller *callers = calloc(NCALLERS, sizeof(*callers));
	unsigned total = 0;

	(void)state;
	assert_non_null(callers);
	assert_int_equal(vs_reactor_new(&main_r, 0), 0);
	for (int k = 0; k < NTHREADS; k++) {
		assert_int_equal(vs_reactor_thread_start(&t[k], "test-io"), 0);
		m.targets[k] = vs_reactor_thread_reactor(t[k]);
	}
	assert_non_null(vs_co_spawn(main_r, co_learn_owners, &m));
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	for (int i = 0; i < NCALLERS; i++) {
		callers[i] = (struct many_caller){ .m = &m, .id = i };
		assert_non_null(vs_co_spawn(main_r, co_many_caller, &callers[i]));
	}
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	for (int k = 0; k < NTHREADS; k++)
		assert_int_equal(vs_reactor_thread_stop(t[k]), 0);
	for (int k = 0; k < NTHREADS; k++)
		total += m.counter[k];
	/* 10 calls per caller, every third one with a nested call. */
	assert_int_equal(total, NCALLERS * (10 + 4));
	assert_int_equal(m.failed, 0);
	assert_int_equal(m.wrong_thread, 0);
	free(callers);
	vs_reactor_free(main_r);
}

/* A reactor thread posts back to the main reactor (as events are sent). */
struct post_ctx {
	struct vs_reactor *main_r;
	unsigned on_main; /* main thread only */
	unsigned posts;
	bool done;
};

static void on_main(void *arg)
{
	struct post_ctx *p = arg;

	if (vs_reactor_current() == p->main_r && ++p->on_main == p->posts)
		p->done = true;
}

static void on_thread(void *arg)
{
	struct post_ctx *p = arg;

	assert_int_equal(vs_reactor_post(p->main_r, on_main, p), 0);
}

static void test_post_both_ways(void **state)
{
	struct vs_reactor_thread *t;
	struct post_ctx p = { .posts = 500 };

	(void)state;
	assert_int_equal(vs_reactor_new(&p.main_r, 0), 0);
	assert_int_equal(vs_reactor_thread_start(&t, "test-io"), 0);
	vs_reactor_listen(p.main_r, true);
	/* From outside any coroutine, as a signal handler thread would. */
	for (unsigned i = 0; i < p.posts; i++)
		assert_int_equal(vs_reactor_post(vs_reactor_thread_reactor(t), on_thread, &p), 0);
	assert_int_equal(vs_reactor_run(p.main_r, &p.done), 0);
	vs_reactor_listen(p.main_r, false);
	assert_int_equal(p.on_main, p.posts);
	assert_int_equal(vs_reactor_thread_stop(t), 0);
	vs_reactor_free(p.main_r);
}

/* Stop with work queued and running: it all finishes, nothing leaks. */
struct stop_ctx {
	struct vs_reactor_thread *t;
	unsigned ran; /* the reactor thread's, read after the join */
	int call_ret;
	bool call_done;
	struct vs_reactor_thread *stopped;
	int stop_ret;
};

static void slow_bump(void *arg)
{
	struct stop_ctx *s = arg;

	vs_co_sleep_ns(2000000);
	s->ran++;
}

static void co_slow_call(void *arg)
{
	struct stop_ctx *s = arg;

	s->call_ret = vs_reactor_call(vs_reactor_thread_reactor(s->t), slow_bump, s);
	s->call_done = true;
}

static void co_stop(void *arg)
{
	struct stop_ctx *s = arg;

	/* Blocks this thread in the join; the reply to the call above waits meanwhile. */
	s->stop_ret = vs_reactor_thread_stop(s->t);
	s->stopped = s->t;
}

static void test_stop_with_work_queued(void **state)
{
	struct vs_reactor *main_r;
	struct stop_ctx s = { .call_ret = -1 };

	(void)state;
	assert_int_equal(vs_reactor_new(&main_r, 0), 0);
	assert_int_equal(vs_reactor_thread_start(&s.t, "test-io"), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(vs_reactor_post(vs_reactor_thread_reactor(s.t), slow_bump, &s), 0);
	assert_non_null(vs_co_spawn(main_r, co_slow_call, &s));
	assert_non_null(vs_co_spawn(main_r, co_stop, &s));
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	assert_true(s.call_done);
	assert_int_equal(s.call_ret, 0);
	assert_int_equal(s.stop_ret, 0);
	assert_non_null(s.stopped);
	assert_int_equal(s.ran, 101);
	vs_reactor_free(main_r);
}

/*
 * A reactor that stops with a call and a post queued: the call fails with
 * -ESHUTDOWN, the post is dropped (and freed), later ones are refused. The
 * target is a second reactor of this thread that never runs, closed from a
 * coroutine as a stopping reactor thread closes its own.
 */
struct shut_ctx {
	struct vs_reactor *target;
	int queued_ret, later_ret, post_ret;
	bool ran;
};

static void never_runs(void *arg)
{
	((struct shut_ctx *)arg)->ran = true;
}

static void co_queued_call(void *arg)
{
	struct shut_ctx *s = arg;

	s->queued_ret = vs_reactor_call(s->target, never_runs, s);
	s->later_ret = vs_reactor_call(s->target, never_runs, s);
	s->post_ret = vs_reactor_post(s->target, never_runs, s);
}

static void co_close_target(void *arg)
{
	struct shut_ctx *s = arg;

	vs_reactor_mbox_close(s->target);
}

static void test_stopped_reactor_refuses(void **state)
{
	struct vs_reactor *main_r, *target;
	struct shut_ctx s = { .queued_ret = 1 };

	(void)state;
	assert_int_equal(vs_reactor_new(&main_r, 0), 0);
	assert_int_equal(vs_reactor_new(&target, 0), 0);
	s.target = target;
	assert_int_equal(vs_reactor_post(target, never_runs, &s), 0);
	assert_non_null(vs_co_spawn(main_r, co_queued_call, &s));
	assert_non_null(vs_co_spawn(main_r, co_close_target, &s));
	assert_int_equal(vs_reactor_run(main_r, NULL), 0);
	assert_int_equal(s.queued_ret, -ESHUTDOWN);
	assert_int_equal(s.later_ret, -ESHUTDOWN);
	assert_int_equal(s.post_ret, -ESHUTDOWN);
	assert_false(s.ran);
	vs_reactor_free(target);
	vs_reactor_free(main_r);
}

/* Start and stop many idle threads: nothing leaks, nothing hangs. */
static void test_start_stop_idle(void **state)
{
	(void)state;
	for (int i = 0; i < 20; i++) {
		struct vs_reactor_thread *t;

		assert_int_equal(vs_reactor_thread_start(&t, NULL), 0);
		assert_int_equal(vs_reactor_thread_stop(t), 0);
	}
	assert_int_equal(vs_reactor_thread_stop(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_call_runs_on_target),
		cmocka_unit_test(test_call_own_reactor_inline),
		cmocka_unit_test(test_call_many_concurrent),
		cmocka_unit_test(test_post_both_ways),
		cmocka_unit_test(test_stop_with_work_queued),
		cmocka_unit_test(test_stopped_reactor_refuses),
		cmocka_unit_test(test_start_stop_idle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
