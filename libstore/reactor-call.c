/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Work across reactors: run a function as a coroutine on another thread's
 * reactor and wait for it (vs_reactor_call), or hand it over and go on
 * (vs_reactor_post); and reactor threads that serve such messages.
 *
 * A message travels through the target reactor's mailbox (reactor.c): a
 * list under the reactor's lock and a ring of its eventfd, which the
 * target's loop reads through its ring. The target spawns the coroutine
 * there, so coroutines still never migrate and whatever the function
 * touches is touched by the target's thread only. A call's two messages
 * live in the caller's frame: no allocation per call.
 */
#include "coroutine-int.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

struct reactor_call {
	struct vs_reactor_msg req;   /* to the target */
	struct vs_reactor_msg reply; /* back to the caller */
	vs_co_fn *fn;
	void *arg;
	struct vs_reactor *caller;
	struct vs_co *co;
	int ret;
	bool done;
};

/* On the caller's thread: the call is over, resume its coroutine. */
static void call_reply(struct vs_reactor *r, struct vs_reactor_msg *m, bool cancelled)
{
	struct reactor_call *c = container_of(m, struct reactor_call, reply);

	(void)r;
	(void)cancelled; /* a caller always waits for its reply: none is cancelled */
	c->done = true;
	vs_co_wake(c->co);
}

/* The coroutine on the target: run the function, then answer. */
static void call_entry(void *opaque)
{
	struct reactor_call *c = opaque;

	c->fn(c->arg);
	c->ret = 0;
	/* @c may be gone as soon as the reply is pushed. */
	(void)vs_reactor_mbox_push(c->caller, &c->reply, true);
}

static void call_request(struct vs_reactor *r, struct vs_reactor_msg *m, bool cancelled)
{
	struct reactor_call *c = container_of(m, struct reactor_call, req);

	if (!cancelled && vs_co_spawn(r, call_entry, c))
		return;
	c->ret = cancelled ? -ESHUTDOWN : -ENOMEM;
	(void)vs_reactor_mbox_push(c->caller, &c->reply, true);
}

int vs_reactor_call(struct vs_reactor *r, vs_co_fn *fn, void *arg)
{
	struct vs_co *self = vs_co_self();
	struct reactor_call c = { .fn = fn, .arg = arg, .co = self };
	int ret;

	if (!self)
		abort(); /* coroutine context only: a programming error */
	c.caller = self->reactor;
	if (r == c.caller) {
		fn(arg);
		return 0;
	}
	c.req.deliver = call_request;
	c.reply.deliver = call_reply;
	vs_reactor_listen(c.caller, true);
	ret = vs_reactor_mbox_push(r, &c.req, false);
	if (ret == 0) {
		while (!c.done)
			vs_co_yield();
		ret = c.ret;
	}
	vs_reactor_listen(c.caller, false);
	return ret;
}

struct reactor_post {
	struct vs_reactor_msg m;
	vs_co_fn *fn;
	void *arg;
};

static void post_entry(void *opaque)
{
	struct reactor_post *p = opaque;
	vs_co_fn *fn = p->fn;
	void *arg = p->arg;

	free(p);
	fn(arg);
}

static void post_deliver(struct vs_reactor *r, struct vs_reactor_msg *m, bool cancelled)
{
	struct reactor_post *p = container_of(m, struct reactor_post, m);

	if (cancelled || !vs_co_spawn(r, post_entry, p))
		free(p); /* dropped: documented in reactor.h */
}

int vs_reactor_post(struct vs_reactor *r, vs_co_fn *fn, void *arg)
{
	struct reactor_post *p;
	int ret;

	if (r == vs_reactor_current())
		return vs_co_spawn(r, fn, arg) ? 0 : -ENOMEM;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->m.deliver = post_deliver;
	p->fn = fn;
	p->arg = arg;
	ret = vs_reactor_mbox_push(r, &p->m, false);
	if (ret < 0)
		free(p);
	return ret;
}

/* ---- reactor threads ---- */

struct vs_reactor_thread {
	pthread_t tid;
	struct vs_reactor *r;
	struct vs_reactor_msg stop_msg;
	bool stop; /* the reactor's own thread reads and writes it */
	int ret;
	char name[16];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;
};

static void stop_deliver(struct vs_reactor *r, struct vs_reactor_msg *m, bool cancelled)
{
	struct vs_reactor_thread *t = container_of(m, struct vs_reactor_thread, stop_msg);

	(void)r;
	(void)cancelled;
	t->stop = true;
}

static void *thread_main(void *opaque)
{
	struct vs_reactor_thread *t = opaque;
	struct vs_reactor *r = NULL;
	int ret = vs_reactor_new(&r, 0);

	pthread_mutex_lock(&t->lock);
	t->r = ret < 0 ? NULL : r;
	t->ret = ret;
	t->started = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	if (ret < 0)
		return NULL;
	vs_reactor_listen(r, true);
	ret = vs_reactor_run(r, &t->stop);
	vs_reactor_listen(r, false);
	/* New requests now fail with -ESHUTDOWN; queued ones are answered so. */
	vs_reactor_mbox_close(r);
	/* Let the coroutines that still run finish (replies still arrive). */
	if (ret == 0 && vs_reactor_alive(r))
		ret = vs_reactor_run(r, NULL);
	t->ret = ret;
	return NULL;
}

int vs_reactor_thread_start(struct vs_reactor_thread **out, const char *name)
{
	struct vs_reactor_thread *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->stop_msg.deliver = stop_deliver;
	snprintf(t->name, sizeof(t->name), "%s", name ? name : "vs-reactor");
	ret = pthread_create(&t->tid, NULL, thread_main, t);
	if (ret != 0) {
		pthread_cond_destroy(&t->cond);
		pthread_mutex_destroy(&t->lock);
		free(t);
		return -ret;
	}
	(void)pthread_setname_np(t->tid, t->name);
	pthread_mutex_lock(&t->lock);
	while (!t->started)
		pthread_cond_wait(&t->cond, &t->lock);
	ret = t->ret;
	pthread_mutex_unlock(&t->lock);
	if (ret < 0) {
		pthread_join(t->tid, NULL);
		pthread_cond_destroy(&t->cond);
		pthread_mutex_destroy(&t->lock);
		free(t);
		return ret;
	}
	*out = t;
	return 0;
}

struct vs_reactor *vs_reactor_thread_reactor(const struct vs_reactor_thread *t)
{
	return t->r;
}

int vs_reactor_thread_stop(struct vs_reactor_thread *t)
{
	int ret;

	if (!t)
		return 0;
	/* Forced: a reactor whose loop already failed closed its mailbox. */
	(void)vs_reactor_mbox_push(t->r, &t->stop_msg, true);
	pthread_join(t->tid, NULL);
	ret = t->ret;
	vs_reactor_free(t->r);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return ret;
}
