/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * For the unit tests of one disk on several reactors: one export request
 * through a port (vs_export_port_request) run on the port's reactor @r,
 * from a coroutine on another one. Returns the request's result, or the
 * call's error when @r could not be reached.
 */
#ifndef VSTOR_TEST_PORT_REQUEST_H
#define VSTOR_TEST_PORT_REQUEST_H

#include "vstor/export.h"
#include "vstor/reactor.h"

struct test_port_request {
	struct vs_export_port *p;
	enum vs_export_op op;
	uint64_t off, len;
	struct iovec *iov;
	int niov;
	unsigned flags;
	int ret;
};

static void test_port_request_run(void *arg)
{
	struct test_port_request *q = arg;

	q->ret = vs_export_port_request(q->p, q->op, q->off, q->len, q->iov, q->niov, q->flags);
}

static inline int test_port_request(struct vs_reactor *r, struct vs_export_port *p,
				    enum vs_export_op op, uint64_t off, uint64_t len,
				    struct iovec *iov, int niov, unsigned flags)
{
	struct test_port_request q = { p, op, off, len, iov, niov, flags, 0 };
	int ret = vs_reactor_call(r, test_port_request_run, &q);

	return ret < 0 ? ret : q.ret;
}

#endif
