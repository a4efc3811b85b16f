/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rings of the vhost-user back end: one coroutine per started ring waits
 * on its kick eventfd (a poll SQE) and takes chains, each served by its own
 * coroutine on the image node with iovecs into guest memory, in a bounded
 * pool of request slots.
 */
#include "vhost-user-int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

static struct vu_req *vq_get_slot(struct vu_vq *vq)
{
	struct vu_req *r = vq->free_reqs;

	if (r) {
		vq->free_reqs = r->next_free;
		return r;
	}
	if (vq->nreqs >= vq_ring_num(&vq->ring) || vq->nreqs >= VU_MAX_INFLIGHT)
		return NULL;
	r = malloc(sizeof(*r));
	if (!r)
		return NULL;
	r->vq = vq;
	r->elem.iov = r->iov;
	r->elem.cap = VU_IOV_CAP;
	vq->nreqs++;
	return r;
}

static void vq_put_slot(struct vu_vq *vq, struct vu_req *r)
{
	r->next_free = vq->free_reqs;
	vq->free_reqs = r;
}

void vu_vq_free_slots(struct vu_vq *vq)
{
	struct vu_req *r;

	while ((r = vq->free_reqs)) {
		vq->free_reqs = r->next_free;
		free(r);
	}
	vq->nreqs = 0;
}

static void vq_broken(struct vu_vq *vq, const char *why)
{
	vu_log(vq->c->b, "queue %u: %s; the queue stops until the front end resets it", vq->index,
	       why);
	vq->broken = true;
	signal_fd(vq->err_fd);
}

static void req_main(void *opaque)
{
	struct vu_req *r = opaque;
	struct vu_vq *vq = r->vq;
	struct vs_vhost_blk *b = vq->c->b;
	struct vblk_req br;
	uint32_t used = 0;

	if (!r->chain_err && vblk_parse(&r->elem, &br) < 0)
		r->chain_err = "no writable status byte";
	if (r->chain_err) {
		__atomic_fetch_add(&b->stats.bad_chains, 1, __ATOMIC_RELAXED);
		if (b->opts.verbose)
			vu_log(b, "queue %u: chain %u returned unprocessed: %s", vq->index,
			       r->elem.head, r->chain_err);
	} else {
		br.home = vq->reactor != b->reactor ? b->reactor : NULL;
		br.port = br.home ? vu_vq_port(b, vq->index) : NULL;
		used = vblk_exec(&b->dev, &br);
	}
	if (vq->tracking)
		memcpy(vq->inflight + 12, &r->elem.head, 2); /* last_batch_head */
	vq_ring_push(&vq->ring, &r->elem, used);
	if (vq->tracking) {
		__atomic_store_n(vu_inflight_desc(vq, r->elem.head), 0, __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_RELEASE);
		memcpy(vq->inflight + 14, &vq->ring.s.used_idx, 2);
	}
	if (vq_ring_should_notify(&vq->ring))
		signal_fd(vq->call_fd);
	vq_put_slot(vq, r);
	vq->in_flight--;
	vs_co_queue_wake_one(&vq->slot_wait);
	if (!vq->in_flight)
		vs_co_queue_wake_all(&vq->idle_wait);
}

/* Take every available chain and start a coroutine for each. */
static void vq_process(struct vu_vq *vq)
{
	while (!vq->stopping && !vq->broken) {
		struct vu_req *r = vq_get_slot(vq);
		const char *why = NULL;
		int ret;

		if (!r) {
			if (!vq->in_flight) {
				vq_broken(vq, "out of memory");
				return;
			}
			vs_co_queue_wait(&vq->slot_wait); /* backpressure: a slot frees up */
			continue;
		}
		ret = vq_ring_pop(&vq->ring, &vq->c->mem, &r->elem, &why);
		if (ret == 0) {
			vq_put_slot(vq, r);
			return;
		}
		if (ret == -EPROTO) {
			vq_put_slot(vq, r);
			vq_broken(vq, why);
			return;
		}
		r->chain_err = ret < 0 ? why : NULL;
		if (vq->tracking)
			vu_inflight_start(vq, r->elem.head);
		vq->in_flight++;
		if (!vs_co_spawn(vq->reactor, req_main, r)) {
			/* No coroutine: give the chain back unprocessed. */
			vq_ring_push(&vq->ring, &r->elem, 0);
			signal_fd(vq->call_fd);
			vq->in_flight--;
			vq_put_slot(vq, r);
			vq_broken(vq, "out of memory");
			return;
		}
	}
}

static void vq_kick_main(void *opaque)
{
	struct vu_vq *vq = opaque;

	vq->kick_co = vs_co_self();
	/* First what the previous back end left in flight, oldest first. */
	for (unsigned k = 0; k < vq->nresubmit && !vq->stopping && !vq->broken; k++) {
		struct vu_req *r;
		const char *why = NULL;
		int ret;

		while (!(r = vq_get_slot(vq)) && !vq->stopping)
			vs_co_queue_wait(&vq->slot_wait);
		if (!r)
			break;
		ret = vq_split_read_chain(&vq->ring.s, &vq->c->mem, vq->resubmit[k], &r->elem,
					  &why);
		r->chain_err = ret < 0 ? why : NULL;
		vq->in_flight++;
		if (!vs_co_spawn(vq->reactor, req_main, r)) {
			vq->in_flight--;
			vq_put_slot(vq, r);
			break;
		}
	}
	free(vq->resubmit);
	vq->resubmit = NULL;
	vq->nresubmit = 0;
	while (!vq->stopping && !vq->broken) {
		uint64_t v;
		ssize_t n;
		int ev;

		vq_process(vq);
		if (vq->stopping || vq->broken)
			break;
		if (vq_ring_enable_notify(&vq->ring))
			continue;
		ev = vs_aio_poll(vq->kick_fd, POLLIN);
		if (vq->stopping)
			break;
		if (ev == -ECANCELED || ev == -EINTR)
			continue;
		if (ev < 0 || (ev & (POLLERR | POLLHUP | POLLNVAL))) {
			vq_broken(vq, "kick file descriptor failed");
			break;
		}
		n = read(vq->kick_fd, &v, sizeof(v));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			vq_broken(vq, "kick file descriptor is not an eventfd");
			break;
		}
	}
	vq->kick_co = NULL;
	vq->running = false;
	vs_co_queue_wake_all(&vq->idle_wait);
}

/* Start the ring if the front end has given everything it needs. */
void vu_vq_maybe_start(struct vu_vq *vq)
{
	struct vu_conn *c = vq->c;
	int ret;

	if (vq->running || vq->broken || !vq->enabled || vq->kick_fd < 0 || !vq->addr_set ||
	    !vq->num || !c->mem.n)
		return;
	ret = vq_ring_map(&vq->ring, &c->mem, c->features & (1ull << VIRTIO_F_RING_PACKED),
			  c->features & (1ull << VIRTIO_RING_F_EVENT_IDX),
			  c->features & (1ull << VIRTIO_RING_F_INDIRECT_DESC), vq->num, vq->desc,
			  vq->avail, vq->used, vq->base);
	if (ret < 0) {
		vq_broken(vq, ret == -EFAULT ? "ring addresses outside the memory table" :
					       "bad ring size, alignment or base");
		return;
	}
	vq->tracking = vq->inflight && !vq->ring.packed && vq->inflight_qsize >= vq->num;
	if (vq->tracking)
		vu_inflight_recover(vq);
	vq->running = true;
	vq->stopping = false;
	vq->reactor = vu_vq_reactor(c->b, vq->index);
	/* On another reactor: the message goes first in its mailbox, before any stop. */
	if (vq->reactor == vs_reactor_current() ?
		    !vs_co_spawn(vq->reactor, vq_kick_main, vq) :
		    vs_reactor_post(vq->reactor, vq_kick_main, vq) < 0) {
		vq->running = false;
		vq_broken(vq, "out of memory");
	}
}

struct vs_export_port *vu_vq_port(const struct vs_vhost_blk *b, unsigned index)
{
	unsigned n = b->opts.nb_queue_reactors;

	return n ? b->queue_ports[index % n] : NULL;
}

struct vs_reactor *vu_vq_reactor(const struct vs_vhost_blk *b, unsigned index)
{
	unsigned n = b->opts.nb_queue_reactors;

	return n ? b->queue_reactors[index % n] : b->reactor;
}

static void vq_stop_here(void *opaque)
{
	struct vu_vq *vq = opaque;
	bool was_running = vq->running;

	if (vq->running) {
		vq->stopping = true;
		if (vq->kick_co && vq->kick_co != vs_co_self())
			vs_aio_cancel(vq->kick_co);
		vs_co_queue_wake_all(&vq->slot_wait);
		while (vq->running)
			vs_co_queue_wait(&vq->idle_wait);
		vq->stopping = false;
	}
	while (vq->in_flight)
		vs_co_queue_wait(&vq->idle_wait);
	/* A stopped ring's base is the front end's (SET_VRING_BASE), not ours. */
	if (was_running)
		vq->base = vq_ring_base(&vq->ring);
}

/*
 * Coroutine context: stop taking requests and wait for those in flight,
 * on the reactor the ring runs on.
 */
void vu_vq_stop(struct vu_vq *vq)
{
	if (!vq->reactor || vq->reactor == vs_reactor_current()) {
		vq_stop_here(vq);
		return;
	}
	if (vs_reactor_call(vq->reactor, vq_stop_here, vq) < 0) {
		/* Its reactor is gone, and its coroutines with it. */
		vq->running = false;
		vq->in_flight = 0;
	}
}

void vu_vq_reset(struct vu_vq *vq)
{
	vu_vq_stop(vq);
	close_fd(&vq->kick_fd);
	close_fd(&vq->call_fd);
	close_fd(&vq->err_fd);
	vu_vq_free_slots(vq);
	vq->num = 0;
	vq->base = 0;
	vq->addr_set = false;
	vq->enabled = false;
	vq->broken = false;
	free(vq->resubmit);
	vq->resubmit = NULL;
	vq->nresubmit = 0;
	memset(&vq->ring, 0, sizeof(vq->ring));
}
