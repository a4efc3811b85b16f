/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Calls into a callback-driven client library from coroutines, and the pump
 * coroutine that services its socket (see async-call.h): the bookkeeping
 * libnfs (driver-nfs.c) and libiscsi (driver-iscsi.c) share.
 */
#include "async-call.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>

/* A socket in error that the library keeps for a reconnect: wait this long, no spin. */
#define ASYNC_PUMP_ERR_WAIT_NS 100000000ull

void vs_async_call_start(struct vs_async_call *c, struct vs_async_call **list)
{
	c->list = list;
	c->co = vs_co_self();
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
}

void vs_async_call_unlink(struct vs_async_call *c)
{
	if (!c->list)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		*c->list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->list = NULL;
}

void vs_async_call_complete(struct vs_async_call *c, int status)
{
	c->status = status;
	c->done = true;
	vs_async_call_unlink(c);
	if (c->co != vs_co_self())
		vs_co_wake(c->co);
}

void vs_async_call_not_queued(struct vs_async_call *c, int status)
{
	vs_async_call_unlink(c);
	c->done = true;
	c->status = status;
}

void vs_async_call_wait(struct vs_async_call *c)
{
	while (!c->done && !c->abandoned)
		vs_co_yield();
}

bool vs_async_call_release(struct vs_async_call *c)
{
	vs_async_call_unlink(c);
	if (c->done)
		return true;
	c->abandoned = true;
	return false;
}

void vs_async_call_abandon(struct vs_async_call *c, int status)
{
	c->status = status;
	vs_async_call_unlink(c);
	c->abandoned = true;
	vs_co_wake(c->co);
}

void vs_async_pump_init(struct vs_async_pump *p, const struct vs_async_pump_ops *ops, void *lib,
			void *owner)
{
	p->ops = ops;
	p->lib = lib;
	p->owner = owner;
}

static void async_pump_main(void *opaque)
{
	struct vs_async_pump *p = opaque;
	const struct vs_async_pump_ops *ops = p->ops;

	p->co = vs_co_self();
	while (!p->stopping && !p->dead) {
		int fd = ops->get_fd(p->lib), rev;

		if (fd < 0) {
			p->dead = true;
			break;
		}
		p->poll_fd = fd;
		p->poll_ev = (unsigned)ops->which_events(p->lib);
		if (!p->poll_ev)
			p->poll_ev = POLLIN;
		p->polling = true;
		rev = vs_aio_poll(fd, p->poll_ev);
		p->polling = false;
		if (p->stopping)
			break;
		if (rev == -ECANCELED || rev == -EINTR || rev == 0)
			continue; /* re-armed with the events wanted now */
		if (rev < 0 || ops->service(p->lib, rev) < 0) {
			p->dead = true;
			break;
		}
		if ((rev & (POLLERR | POLLHUP)) && ops->get_fd(p->lib) == fd) {
			vs_co_sleep_ns(ASYNC_PUMP_ERR_WAIT_NS);
			continue;
		}
		if (ops->drain && ops->drain(p->lib, fd) < 0) {
			p->dead = true;
			break;
		}
	}
	if (p->dead)
		ops->fail_all(p->owner);
	p->co = NULL;
	p->running = false;
	vs_co_queue_wake_all(&p->exit);
}

int vs_async_pump_start(struct vs_async_pump *p)
{
	p->running = true;
	if (!vs_co_spawn(vs_reactor_current(), async_pump_main, p)) {
		p->running = false;
		return -ENOMEM;
	}
	return 0;
}

void vs_async_pump_kick(struct vs_async_pump *p)
{
	const struct vs_async_pump_ops *ops = p->ops;
	unsigned ev = (unsigned)ops->which_events(p->lib);

	if (ops->can_send(p->lib, ev)) {
		if (ops->service(p->lib, POLLOUT) < 0) {
			p->dead = true;
			ops->fail_all(p->owner);
		}
		ev = (unsigned)ops->which_events(p->lib);
	}
	if (p->polling && p->co &&
	    ((ev & ~p->poll_ev) || ops->get_fd(p->lib) != p->poll_fd || p->dead))
		(void)vs_aio_cancel(p->co);
}

void vs_async_pump_stop(struct vs_async_pump *p)
{
	p->stopping = true;
	if (p->running && p->co)
		(void)vs_aio_cancel(p->co);
	while (p->running)
		vs_co_queue_wait(&p->exit);
}

void vs_async_ignore_sigpipe(void)
{
	struct sigaction sa;

	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
	    !(sa.sa_flags & SA_SIGINFO))
		signal(SIGPIPE, SIG_IGN);
}
