/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Exports: the policy every protocol server applies to the node it serves
 * (read-only, write cache, discard, detect-zeroes, ranges), its statistics
 * and its hooks, in one place so that NBD and virtio-blk cannot drift.
 *
 * This is the hot path of both servers: a request is a few compares, two
 * reads of the monotonic clock (vDSO, no syscall) and the node call; no
 * allocation and no copy.
 */
#include "export-int.h"
#include "direct.h"
#include "iov.h"
#include "vstor/node.h"
#include "vstor/reactor.h"
#include "vstor/throttle.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t visible_size(uint64_t node_size, uint32_t block_size)
{
	return node_size - node_size % block_size;
}

int vs_export_new(struct vs_export **out, const struct vs_export_opts *opts)
{
	struct vs_export *e;

	if (!opts->node || opts->discard > VS_EXPORT_DISCARD_UNMAP ||
	    opts->detect_zeroes > VS_EXPORT_DETECT_ZEROES_UNMAP)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->name = strdup(opts->name ? opts->name : "");
	if (!e->name) {
		free(e);
		return -ENOMEM;
	}
	e->node = opts->node;
	e->block_size = opts->block_size ? opts->block_size : 1;
	e->size = visible_size(vs_node_size(opts->node), e->block_size);
	e->read_only = opts->read_only || vs_node_is_read_only(opts->node);
	e->writethrough = opts->writethrough;
	e->discard = opts->discard;
	e->detect_zeroes = opts->detect_zeroes;
	if (opts->hooks)
		e->hooks = *opts->hooks;
	*out = e;
	return 0;
}

void vs_export_free(struct vs_export *e)
{
	if (!e)
		return;
	vs_throttle_group_unref(e->throttle);
	while (e->ports) /* a protocol server's that no request uses any more */
		vs_export_port_free(e->ports);
	vs_direct_free(e->direct);
	free(e->name);
	free(e);
}

const char *vs_export_name(const struct vs_export *e)
{
	return e->name;
}

struct vs_node *vs_export_node(const struct vs_export *e)
{
	return e->node;
}

/*
 * The size is read by protocol servers on other reactors than the
 * export's (an NBD connection away from home checks ranges there, the
 * handshake runs on main): a relaxed atomic, stored by resize.
 */
uint64_t vs_export_size(const struct vs_export *e)
{
	return __atomic_load_n(&e->size, __ATOMIC_RELAXED);
}

bool vs_export_is_read_only(const struct vs_export *e)
{
	return e->read_only;
}

enum vs_export_discard vs_export_discard_mode(const struct vs_export *e)
{
	return e->discard;
}

enum vs_export_detect_zeroes vs_export_detect_zeroes_mode(const struct vs_export *e)
{
	return e->detect_zeroes;
}

/* Ports read it on their reactors (export-port.c). */
bool vs_export_writethrough(const struct vs_export *e)
{
	return __atomic_load_n(&e->writethrough, __ATOMIC_RELAXED);
}

void vs_export_set_writethrough(struct vs_export *e, bool on)
{
	__atomic_store_n(&e->writethrough, on, __ATOMIC_RELAXED);
}

int vs_export_check(const struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len)
{
	uint64_t size;

	switch (op) {
	case VS_EXPORT_OP_FLUSH:
		return 0;
	case VS_EXPORT_OP_READ:
		break;
	case VS_EXPORT_OP_WRITE:
	case VS_EXPORT_OP_DISCARD:
	case VS_EXPORT_OP_WRITE_ZEROES:
		if (e->read_only)
			return -EPERM;
		break;
	default:
		return -EINVAL;
	}
	size = vs_export_size(e);
	if (offset > size || len > size - offset)
		return -EINVAL;
	return 0;
}

static void account(struct vs_export *e, enum vs_export_op op, uint64_t len, int ret,
		    uint64_t start_ns)
{
	struct vs_export_op_stats *s = &e->stats.op[op];

	s->ops++;
	if (ret < 0)
		s->errors++;
	else
		s->bytes += len;
	s->latency_us[vs_export_latency_bucket(vs_export_clock_ns() - start_ns)]++;
}

static void export_leave(struct vs_export *e)
{
	if (--e->active == 0 && e->quiesced)
		vs_co_queue_wake_all(&e->drained);
}

/* Requests of @e waiting for the throttle's budget run now (as QEMU drains). */
static void release_throttled(struct vs_export *e)
{
	if (e->throttle) {
		e->throttle_epoch++;
		vs_throttle_group_kick(e->throttle);
	}
}

void vs_export_drain_begin(struct vs_export *e)
{
	e->quiesced++;
	release_throttled(e);
	/* Ports go home from now on (no window is made while quiesced). */
	vs_export_direct_revoke(e);
	while (e->active)
		vs_co_queue_wait(&e->drained);
}

void vs_export_drain_end(struct vs_export *e)
{
	if (e->quiesced && --e->quiesced)
		return;
	vs_co_queue_wake_all(&e->held);
}

void vs_export_set_node(struct vs_export *e, struct vs_node *node)
{
	e->node = node;
	if (e->direct)
		vs_direct_set_top(e->direct, node);
}

int vs_export_begin(struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len,
		    struct vs_export_span *span)
{
	int ret;

	*span = (struct vs_export_span){ .op = op, .offset = offset, .len = len };
	span->start_ns = vs_export_clock_ns();
	while (e->quiesced || e->stopped)
		vs_co_queue_wait(&e->held);
	e->active++;
	ret = vs_export_check(e, op, offset, len);
	if (ret == 0 && e->throttle &&
	    (op == VS_EXPORT_OP_READ || op == VS_EXPORT_OP_WRITE ||
	     op == VS_EXPORT_OP_WRITE_ZEROES))
		vs_throttle_group_wait(e->throttle, op != VS_EXPORT_OP_READ, len,
				       &e->throttle_epoch);
	if (ret == 0 && e->hooks.before_request)
		ret = e->hooks.before_request(e->hooks.opaque, op, offset, len);
	if (ret < 0) {
		if (op < VS_EXPORT_OP_COUNT)
			account(e, op, len, ret, span->start_ns);
		export_leave(e);
	}
	return ret;
}

/* Account a request that ran; @changed: it reached the node and may have changed data. */
static void finish(struct vs_export *e, const struct vs_export_span *span, int ret, bool changed)
{
	if (ret == 0 && changed && e->hooks.after_write && span->len &&
	    span->op != VS_EXPORT_OP_READ && span->op != VS_EXPORT_OP_FLUSH)
		e->hooks.after_write(e->hooks.opaque, span->op, span->offset, span->len);
	account(e, span->op, span->len, ret, span->start_ns);
	export_leave(e);
}

void vs_export_end(struct vs_export *e, const struct vs_export_span *span, int ret)
{
	finish(e, span, ret, true);
}

/* The node flags for a write-zeroes of this export. */
static unsigned zero_flags(const struct vs_export *e, unsigned flags)
{
	unsigned fl = 0;

	if ((flags & VS_EXPORT_FUA) || vs_export_writethrough(e))
		fl |= VS_REQ_FUA;
	if ((flags & VS_EXPORT_MAY_UNMAP) && e->discard == VS_EXPORT_DISCARD_UNMAP)
		fl |= VS_REQ_MAY_UNMAP;
	if (flags & VS_EXPORT_NO_FALLBACK)
		fl |= VS_REQ_NO_FALLBACK;
	return fl;
}

static int run_write(struct vs_export *e, uint64_t offset, uint64_t len, struct iovec *iov,
		     int niov, unsigned flags)
{
	unsigned fl = ((flags & VS_EXPORT_FUA) || vs_export_writethrough(e)) ? VS_REQ_FUA : 0;

	if (e->detect_zeroes != VS_EXPORT_DETECT_ZEROES_OFF && vs_iov_is_zero(iov, niov)) {
		unsigned zf =
			e->detect_zeroes == VS_EXPORT_DETECT_ZEROES_UNMAP ? VS_EXPORT_MAY_UNMAP : 0;

		return vs_node_write_zeroes(e->node, offset, len, fl | zero_flags(e, zf));
	}
	return vs_node_pwritev(e->node, offset, len, iov, niov, fl);
}

/* A discard: deallocate when the policy says so; FUA makes it durable either way. */
static int run_discard(struct vs_export *e, uint64_t offset, uint64_t len, unsigned flags,
		       bool *ignored)
{
	int ret = 0;

	*ignored = e->discard != VS_EXPORT_DISCARD_UNMAP || !len;
	if (!*ignored)
		ret = vs_node_discard(e->node, offset, len);
	if (ret == 0 && (flags & VS_EXPORT_FUA))
		ret = vs_node_flush(e->node);
	return ret;
}

int vs_export_request(struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len,
		      struct iovec *iov, int niov, unsigned flags)
{
	struct vs_export_span span;
	bool ignored = false;
	int ret;

	ret = vs_export_begin(e, op, offset, len, &span);
	if (ret < 0)
		return ret;
again:
	switch (op) {
	case VS_EXPORT_OP_READ:
		ret = len ? vs_node_preadv(e->node, offset, len, iov, niov, 0) : 0;
		break;
	case VS_EXPORT_OP_WRITE:
		ret = len ? run_write(e, offset, len, iov, niov, flags) : 0;
		break;
	case VS_EXPORT_OP_FLUSH:
		ret = vs_node_flush(e->node);
		break;
	case VS_EXPORT_OP_DISCARD:
		ret = run_discard(e, offset, len, flags, &ignored);
		break;
	case VS_EXPORT_OP_WRITE_ZEROES:
		ret = len ? vs_node_write_zeroes(e->node, offset, len, zero_flags(e, flags)) : 0;
		break;
	default: /* vs_export_check() refused it */
		break;
	}
	if (ret < 0 && vs_export_retry(e, &span, ret))
		goto again;
	finish(e, &span, ret, !ignored);
	return ret;
}

void vs_export_set_throttle(struct vs_export *e, struct vs_throttle_group *g)
{
	if (g == e->throttle)
		return;
	if (g)
		vs_throttle_group_ref(g);
	release_throttled(e);
	vs_throttle_group_unref(e->throttle);
	e->throttle = g;
	vs_export_direct_revoke(e); /* throttled requests run at home */
}

struct vs_throttle_group *vs_export_throttle(const struct vs_export *e)
{
	return e->throttle;
}

void vs_export_set_error_policy(struct vs_export *e, const struct vs_export_error_policy *p)
{
	if (p)
		e->policy = *p;
	else
		e->policy = (struct vs_export_error_policy){ 0 };
}

bool vs_export_is_stopped(const struct vs_export *e)
{
	return e->stopped;
}

void vs_export_resume(struct vs_export *e)
{
	e->stopped = false;
	vs_co_queue_wake_all(&e->held);
}

bool vs_export_retry(struct vs_export *e, const struct vs_export_span *span, int ret)
{
	enum vs_export_error_action a = span->op == VS_EXPORT_OP_READ ? e->policy.read :
									e->policy.write;

	if (a == VS_EXPORT_ERROR_ENOSPC)
		a = ret == -ENOSPC ? VS_EXPORT_ERROR_STOP : VS_EXPORT_ERROR_REPORT;
	if (e->policy.on_error)
		e->policy.on_error(e->policy.opaque, span->op, ret, a);
	if (a != VS_EXPORT_ERROR_STOP)
		return false;
	/* Held, not in flight: a drain (a snapshot) may run while stopped. */
	e->stopped = true;
	export_leave(e);
	vs_export_direct_revoke(e); /* the ports' requests are held too */
	while (e->quiesced || e->stopped)
		vs_co_queue_wait(&e->held);
	e->active++;
	return true;
}

static const char *const error_action_names[] = {
	[VS_EXPORT_ERROR_REPORT] = "report",
	[VS_EXPORT_ERROR_STOP] = "stop",
	[VS_EXPORT_ERROR_ENOSPC] = "enospc",
};

const char *vs_export_error_action_name(enum vs_export_error_action a)
{
	return (unsigned)a < sizeof(error_action_names) / sizeof(error_action_names[0]) ?
		       error_action_names[a] :
		       NULL;
}

int vs_export_error_action_parse(const char *s, enum vs_export_error_action *out)
{
	for (unsigned i = 0; i < sizeof(error_action_names) / sizeof(error_action_names[0]); i++) {
		if (!strcmp(s, error_action_names[i])) {
			*out = (enum vs_export_error_action)i;
			return 0;
		}
	}
	return -EINVAL;
}

void vs_export_resize(struct vs_export *e, uint64_t node_size)
{
	__atomic_store_n(&e->size, visible_size(node_size, e->block_size), __ATOMIC_RELAXED);
	if (e->hooks.resized)
		e->hooks.resized(e->hooks.opaque, e->size);
}

void vs_export_get_stats(const struct vs_export *e, struct vs_export_stats *st)
{
	*st = e->stats;
	vs_export_ports_add_stats(e, st);
}

const char *vs_export_op_name(enum vs_export_op op)
{
	static const char *const names[VS_EXPORT_OP_COUNT] = {
		[VS_EXPORT_OP_READ] = "read",
		[VS_EXPORT_OP_WRITE] = "write",
		[VS_EXPORT_OP_FLUSH] = "flush",
		[VS_EXPORT_OP_DISCARD] = "discard",
		[VS_EXPORT_OP_WRITE_ZEROES] = "write-zeroes",
	};

	return (unsigned)op < VS_EXPORT_OP_COUNT ? names[op] : NULL;
}

int vs_export_discard_parse(const char *s, enum vs_export_discard *out)
{
	if (!strcmp(s, "ignore") || !strcmp(s, "off"))
		*out = VS_EXPORT_DISCARD_IGNORE;
	else if (!strcmp(s, "unmap") || !strcmp(s, "on"))
		*out = VS_EXPORT_DISCARD_UNMAP;
	else
		return -EINVAL;
	return 0;
}

static const char *const detect_zeroes_names[] = {
	[VS_EXPORT_DETECT_ZEROES_OFF] = "off",
	[VS_EXPORT_DETECT_ZEROES_ON] = "on",
	[VS_EXPORT_DETECT_ZEROES_UNMAP] = "unmap",
};

int vs_export_detect_zeroes_parse(const char *s, enum vs_export_detect_zeroes *out)
{
	for (unsigned i = 0; i < sizeof(detect_zeroes_names) / sizeof(detect_zeroes_names[0]);
	     i++) {
		if (!strcmp(s, detect_zeroes_names[i])) {
			*out = (enum vs_export_detect_zeroes)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *vs_export_detect_zeroes_name(enum vs_export_detect_zeroes mode)
{
	return (unsigned)mode < sizeof(detect_zeroes_names) / sizeof(detect_zeroes_names[0]) ?
		       detect_zeroes_names[mode] :
		       NULL;
}
