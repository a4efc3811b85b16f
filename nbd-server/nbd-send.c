/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server: connection I/O (plain or through TLS) and sending:
 * replies go out whole under the connection's send lock, queued ones
 * together in one sendmsg (see nbd-server.c).
 */
#include "nbd-server-int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd-proto.h"
#include "nbd-tls.h"

/* ---- connection I/O: plain or through TLS ---- */

/* Some bytes from the socket (or TLS), at most @len: > 0, 0 at EOF, or -errno. */
static ssize_t conn_recv_some(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t n;

	if (c->tls)
		n = nbd_tls_recv(c->tls, buf, len);
	else
		n = vs_aio_recv(c->fd, buf, len, 0);
	if (n > 0 && c->refresh_ns)
		c->deadline = nbd_now_ns() + c->refresh_ns;
	return n;
}

int nbd_conn_recv_full(struct nbd_conn *c, void *buf, size_t len)
{
	uint8_t *out = buf;

	while (len) {
		ssize_t n;

		if (c->rpos < c->rlen) {
			size_t k = c->rlen - c->rpos < len ? c->rlen - c->rpos : len;

			memcpy(out, c->rbuf + c->rpos, k);
			c->rpos += k;
			out += k;
			len -= k;
			continue;
		}
		if (len >= NBD_RBUF_SIZE || !c->rbuf) {
			/* A big payload goes straight into its buffer. */
			n = conn_recv_some(c, out, len);
			if (n > 0) {
				out += n;
				len -= (size_t)n;
			}
		} else {
			c->rpos = c->rlen = 0;
			n = conn_recv_some(c, c->rbuf, NBD_RBUF_SIZE);
			if (n > 0)
				c->rlen = (size_t)n;
		}
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
	}
	return 0;
}

static int conn_sendv(struct nbd_conn *c, struct iovec *iov, int n)
{
	if (c->tls)
		return nbd_tls_sendv(c->tls, iov, n);
	return vs_aio_sendmsg_full(c->fd, iov, n);
}

int nbd_conn_send_buf(struct nbd_conn *c, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return conn_sendv(c, &iov, 1);
}

/* ---- sending ---- */

int nbd_conn_send(struct nbd_conn *c, struct iovec *iov, int n)
{
	int ret;

	if (c->dead)
		return -EPIPE;
	ret = conn_sendv(c, iov, n);
	if (ret < 0)
		c->dead = true;
	return ret;
}

#define NBD_OUT_MAX_IOV 512

/* The sender: sends the queue in batches until it is empty. */
static void conn_sender(void *opaque)
{
	struct nbd_conn *c = opaque;
	struct iovec iov[NBD_OUT_MAX_IOV];

	vs_co_mutex_lock(&c->send_lock);
	while (c->out_head) {
		struct nbd_out *first = c->out_head, *o = first, *end;
		int n = 0, ret;

		/* Whole replies only, as many as fit. */
		while (o && n + o->niov <= NBD_OUT_MAX_IOV) {
			memcpy(iov + n, o->iov, sizeof(*iov) * (size_t)o->niov);
			n += o->niov;
			o = o->next;
		}
		end = o;
		c->out_head = end;
		if (!end)
			c->out_tail = &c->out_head;
		ret = c->dead ? -EPIPE : conn_sendv(c, iov, n);
		if (ret < 0)
			c->dead = true;
		for (o = first; o != end;) {
			struct nbd_out *next = o->next;

			o->ret = ret;
			o->done = true;
			if (o->co != vs_co_self()) /* not the fallback in nbd_conn_reply() */
				vs_co_wake(o->co);
			o = next;
		}
	}
	c->sending = false;
	vs_co_mutex_unlock(&c->send_lock);
}

/*
 * Send one whole reply through the sender and wait until it is on the
 * socket (its buffers may be reused after that). Replies of up to
 * NBD_OUT_MAX_IOV iovecs.
 */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
/* @o lives on this coroutine's stack until the sender has unlinked it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
int nbd_conn_reply(struct nbd_conn *c, struct iovec *iov, int n)
{
	struct nbd_out o = { .iov = iov, .niov = n, .co = vs_co_self() };

	if (c->dead)
		return -EPIPE;
	if (n > NBD_OUT_MAX_IOV)
		return -EINVAL; /* a bug: no reply is built that large */
	if (!c->out_tail)
		c->out_tail = &c->out_head;
	*c->out_tail = &o;
	c->out_tail = &o.next;
	if (!c->sending) {
		c->sending = true;
		if (!vs_co_spawn(c->srv->reactor, conn_sender, c)) {
			/* No coroutine for the sender: send what is queued from here. */
			conn_sender(c);
		}
	}
	while (!o.done)
		vs_co_yield();
	return o.ret;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif

int nbd_opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	uint8_t hdr[20];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

	vs_put_be64(hdr, NBD_REP_MAGIC);
	vs_put_be32(hdr + 8, opt);
	vs_put_be32(hdr + 12, type);
	vs_put_be32(hdr + 16, len);
	return nbd_conn_send(c, iov, len ? 2 : 1);
}

int nbd_opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return nbd_opt_reply(c, opt, type, msg, (uint32_t)n);
}

/* The header of a structured (or extended) reply chunk into @hdr; returns its size. */
size_t nbd_chunk_header(struct nbd_conn *c, uint8_t *hdr, uint16_t flags, uint16_t type,
			uint64_t cookie, uint64_t offset, uint64_t len)
{
	if (c->extended) {
		vs_put_be32(hdr, NBD_EXTENDED_REPLY_MAGIC);
		vs_put_be16(hdr + 4, flags);
		vs_put_be16(hdr + 6, type);
		vs_put_be64(hdr + 8, cookie);
		vs_put_be64(hdr + 16, offset);
		vs_put_be64(hdr + 24, len);
		return 32;
	}
	vs_put_be32(hdr, NBD_STRUCTURED_REPLY_MAGIC);
	vs_put_be16(hdr + 4, flags);
	vs_put_be16(hdr + 6, type);
	vs_put_be64(hdr + 8, cookie);
	vs_put_be32(hdr + 16, (uint32_t)len);
	return 20;
}

/* A reply without payload: simple, or a structured NONE / ERROR chunk with DONE. */
int nbd_send_status(struct nbd_req *r, int err)
{
	struct nbd_conn *c = r->conn;
	uint32_t wire = vs_nbd_errno_to_wire(err);
	uint8_t hdr[32], body[6];
	struct iovec iov[2];
	int n = 1;

	if (!c->structured) {
		vs_put_be32(hdr, NBD_SIMPLE_REPLY_MAGIC);
		vs_put_be32(hdr + 4, wire);
		vs_put_be64(hdr + 8, r->cookie);
		iov[0] = (struct iovec){ hdr, 16 };
	} else if (!wire) {
		iov[0] = (struct iovec){ hdr, nbd_chunk_header(c, hdr, NBD_REPLY_FLAG_DONE,
							       NBD_REPLY_TYPE_NONE, r->cookie,
							       r->offset, 0) };
	} else {
		vs_put_be32(body, wire);
		vs_put_be16(body + 4, 0); /* no message */
		iov[0] = (struct iovec){ hdr, nbd_chunk_header(c, hdr, NBD_REPLY_FLAG_DONE,
							       NBD_REPLY_TYPE_ERROR, r->cookie,
							       r->offset, sizeof(body)) };
		iov[1] = (struct iovec){ body, sizeof(body) };
		n = 2;
	}
	return nbd_conn_reply(c, iov, n);
}
