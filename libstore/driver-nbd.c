/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The nbd protocol driver: an NBD client on the reactor, so every tool takes
 * NBD URIs as qemu-img does:
 *   nbd://HOST[:PORT]/EXPORT     nbd+unix:///EXPORT?socket=PATH
 *   nbd:HOST:PORT[:exportname=NAME]   nbd:unix:PATH[:exportname=NAME]
 *
 * Requests from many coroutines share one connection: each takes a slot
 * (its cookie), sends its request under the send lock and parks; a reader
 * coroutine reads replies in whatever order the server sends them, copies
 * data straight into the waiting request's buffers and wakes it.
 */
#include "config.h"
#include "driver.h"
#include "iov.h"
#include "nbd-proto.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NBD_CLIENT_SLOTS 64
#define NBD_DEFAULT_PORT "10809"
#define NBD_CLIENT_MAX_TRANSFER (32u << 20)

struct nbd_slot {
	bool in_use;
	bool done;
	struct vs_co *co;
	uint16_t type;
	uint64_t offset;
	uint64_t len;
	struct iovec *iov;
	int niov;
	int err;	 /* -errno */
	uint64_t seen;	 /* read: bytes the structured chunks covered */
	uint64_t bs_len; /* first base:allocation descriptor */
	uint32_t bs_flags;
	bool bs_seen;
};

struct nbd_client {
	int fd;
	bool structured;
	uint16_t flags;
	uint32_t base_ctx; /* id of base:allocation, if negotiated */
	bool has_base_ctx;
	bool dead;
	struct vs_co_mutex send_lock;
	struct nbd_slot slots[NBD_CLIENT_SLOTS];
	unsigned used;
	struct vs_co_queue slot_wait;
	struct vs_co *reader;
	bool reader_running;
	struct vs_co_queue reader_exit;
};

static int wire_to_errno(uint32_t e)
{
	switch (e) {
	case NBD_EPERM:
		return -EPERM;
	case NBD_EIO:
		return -EIO;
	case NBD_ENOMEM:
		return -ENOMEM;
	case NBD_EINVAL:
		return -EINVAL;
	case NBD_ENOSPC:
		return -ENOSPC;
	case NBD_EOVERFLOW:
		return -EOVERFLOW;
	case NBD_ENOTSUP:
		return -ENOTSUP;
	case NBD_ESHUTDOWN:
		return -ESHUTDOWN;
	default:
		return -EIO;
	}
}

/* ---- URI parsing ---- */

struct nbd_target {
	char host[256];
	char port[16];
	char socket[108];
	char export_name[NBD_MAX_STRING + 1];
	bool is_unix;
};

static int pct_decode(char *dst, size_t dstsz, const char *src, size_t len)
{
	size_t k = 0;

	for (size_t i = 0; i < len; i++) {
		char c = src[i];

		if (c == '%' && i + 2 < len) {
			char hex[3] = { src[i + 1], src[i + 2], 0 };
			char *end;
			long v = strtol(hex, &end, 16);

			if (*end)
				return -EINVAL;
			c = (char)v;
			i += 2;
		}
		if (k + 1 >= dstsz)
			return -ENAMETOOLONG;
		dst[k++] = c;
	}
	dst[k] = '\0';
	return 0;
}

static int parse_target(const char *uri, struct nbd_target *t)
{
	const char *p, *slash, *q;

	memset(t, 0, sizeof(*t));
	snprintf(t->port, sizeof(t->port), "%s", NBD_DEFAULT_PORT);
	if (!strncmp(uri, "nbd+unix://", 11)) {
		/* nbd+unix:///EXPORT?socket=PATH */
		t->is_unix = true;
		p = uri + 11;
		if (*p != '/')
			return -EINVAL; /* no host part allowed */
		p++;
		q = strchr(p, '?');
		if (!q || strncmp(q, "?socket=", 8))
			return -EINVAL;
		if (pct_decode(t->export_name, sizeof(t->export_name), p, (size_t)(q - p)) < 0 ||
		    pct_decode(t->socket, sizeof(t->socket), q + 8, strlen(q + 8)) < 0)
			return -EINVAL;
		return t->socket[0] ? 0 : -EINVAL;
	}
	if (!strncmp(uri, "nbd://", 6) || !strncmp(uri, "nbd+tcp://", 10)) {
		const char *hostend, *colon;

		p = strstr(uri, "://") + 3;
		slash = strchr(p, '/');
		hostend = slash ? slash : p + strlen(p);
		if (*p == '[') { /* [v6addr] */
			const char *rb = memchr(p, ']', (size_t)(hostend - p));

			if (!rb || (size_t)(rb - p - 1) >= sizeof(t->host))
				return -EINVAL;
			memcpy(t->host, p + 1, (size_t)(rb - p - 1));
			colon = rb[1] == ':' ? rb + 1 : NULL;
		} else {
			colon = memchr(p, ':', (size_t)(hostend - p));
			size_t hl = (size_t)((colon ? colon : hostend) - p);

			if (hl == 0 || hl >= sizeof(t->host))
				return -EINVAL;
			memcpy(t->host, p, hl);
		}
		if (colon) {
			size_t pl = (size_t)(hostend - colon - 1);

			if (pl == 0 || pl >= sizeof(t->port))
				return -EINVAL;
			memcpy(t->port, colon + 1, pl);
			t->port[pl] = '\0';
		}
		if (slash && slash[1] && strchr(slash + 1, '?'))
			return -EINVAL; /* no query parameters for TCP */
		if (slash && pct_decode(t->export_name, sizeof(t->export_name), slash + 1,
					strlen(slash + 1)) < 0)
			return -EINVAL;
		return 0;
	}
	/* Legacy: nbd:unix:PATH[:exportname=N] or nbd:HOST:PORT[:exportname=N] */
	p = uri + 4;
	q = strstr(p, ":exportname=");
	if (q) {
		if (strlen(q + 12) >= sizeof(t->export_name))
			return -EINVAL;
		strcpy(t->export_name, q + 12);
	} else {
		q = p + strlen(p);
	}
	if (!strncmp(p, "unix:", 5)) {
		size_t l = (size_t)(q - p - 5);

		if (l == 0 || l >= sizeof(t->socket))
			return -EINVAL;
		memcpy(t->socket, p + 5, l);
		t->is_unix = true;
		return 0;
	}
	slash = memchr(p, ':', (size_t)(q - p));
	if (!slash || slash == p || (size_t)(slash - p) >= sizeof(t->host) ||
	    (size_t)(q - slash - 1) >= sizeof(t->port) || q == slash + 1)
		return -EINVAL;
	memcpy(t->host, p, (size_t)(slash - p));
	memcpy(t->port, slash + 1, (size_t)(q - slash - 1));
	return 0;
}

static int connect_target(const struct nbd_target *t, struct vs_error *err)
{
	int fd;

	if (t->is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->socket);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return vs_error_setf_errno(err, -errno, "socket");
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = -errno;

			close(fd);
			return vs_error_setf_errno(err, e, "Failed to connect to '%s'", t->socket);
		}
		return fd;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	int ret, e = -ECONNREFUSED;

	ret = getaddrinfo(t->host, t->port, &hints, &res);
	if (ret)
		return vs_error_set(err, -EHOSTUNREACH, "Cannot resolve '%s': %s", t->host,
				    gai_strerror(ret));
	fd = -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		e = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return vs_error_setf_errno(err, e, "Failed to connect to '%s:%s'", t->host,
					   t->port);
	return fd;
}

/* ---- handshake ---- */

static int send_option(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];
	struct iovec iov[2] = { { h, 16 }, { (void *)data, len } };

	vs_put_be64(h, NBD_IHAVEOPT);
	vs_put_be32(h + 8, opt);
	vs_put_be32(h + 12, len);
	return vs_aio_sendmsg_full(fd, iov, len ? 2 : 1);
}

/* Read one option reply; its data (at most @cap bytes kept) into @buf. */
static int recv_option_reply(int fd, uint32_t opt, uint32_t *type, uint8_t *buf, uint32_t cap,
			     uint32_t *len)
{
	uint8_t h[20];
	int ret = vs_aio_recv_full(fd, h, sizeof(h));

	if (ret < 0)
		return ret;
	if (vs_be64(h) != NBD_REP_MAGIC || vs_be32(h + 8) != opt)
		return -EPROTO;
	*type = vs_be32(h + 12);
	*len = vs_be32(h + 16);
	if (*len > 1u << 20)
		return -EPROTO;
	if (*len <= cap)
		return *len ? vs_aio_recv_full(fd, buf, *len) : 0;
	/* Keep what fits, drop the rest. */
	ret = vs_aio_recv_full(fd, buf, cap);
	for (uint32_t left = *len - cap; ret == 0 && left;) {
		uint8_t tmp[512];
		uint32_t n = left < sizeof(tmp) ? left : sizeof(tmp);

		ret = vs_aio_recv_full(fd, tmp, n);
		left -= n;
	}
	*len = cap;
	return ret;
}

static int handshake(struct vs_node *node, struct nbd_client *c, const struct nbd_target *t,
		     struct vs_error *err)
{
	uint8_t b[512];
	uint32_t type, len, nl = (uint32_t)strlen(t->export_name);
	uint16_t hflags;
	uint8_t *go;
	bool have_export = false;
	int ret;

	ret = vs_aio_recv_full(c->fd, b, 18);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "NBD handshake");
	if (vs_be64(b) != NBD_MAGIC)
		return vs_error_set(err, -EPROTO, "Not an NBD server (bad magic)");
	if (vs_be64(b + 8) != NBD_IHAVEOPT)
		return vs_error_set(err, -EPROTO, "NBD server uses the old-style handshake");
	hflags = vs_be16(b + 16);
	if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE))
		return vs_error_set(err, -EPROTO, "NBD server is not fixed-newstyle");
	vs_put_be32(b, NBD_FLAG_C_FIXED_NEWSTYLE | (hflags & NBD_FLAG_NO_ZEROES));
	ret = vs_aio_send_full(c->fd, b, 4);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "NBD handshake");

	/* Structured replies, then base:allocation for block status. */
	ret = send_option(c->fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	if (ret == 0)
		ret = recv_option_reply(c->fd, NBD_OPT_STRUCTURED_REPLY, &type, b, sizeof(b), &len);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "NBD handshake");
	c->structured = type == NBD_REP_ACK;
	if (c->structured) {
		static const char q[] = "base:allocation";
		uint8_t *m = malloc(4 + nl + 4 + 4 + sizeof(q) - 1);
		size_t ml = 0;

		if (!m)
			return vs_error_set(err, -ENOMEM, "Out of memory");
		vs_put_be32(m, nl);
		memcpy(m + 4, t->export_name, nl);
		vs_put_be32(m + 4 + nl, 1);
		vs_put_be32(m + 8 + nl, sizeof(q) - 1);
		memcpy(m + 12 + nl, q, sizeof(q) - 1);
		ml = 12 + nl + sizeof(q) - 1;
		ret = send_option(c->fd, NBD_OPT_SET_META_CONTEXT, m, (uint32_t)ml);
		free(m);
		while (ret == 0) {
			ret = recv_option_reply(c->fd, NBD_OPT_SET_META_CONTEXT, &type, b,
						sizeof(b) - 1, &len);
			if (ret < 0 || type != NBD_REP_META_CONTEXT)
				break;
			if (len >= 4 && len - 4 == sizeof(q) - 1 &&
			    !memcmp(b + 4, q, sizeof(q) - 1)) {
				c->base_ctx = vs_be32(b);
				c->has_base_ctx = true;
			}
		}
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "NBD handshake");
	}

	go = malloc(4 + nl + 2 + 2);
	if (!go)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	vs_put_be32(go, nl);
	memcpy(go + 4, t->export_name, nl);
	vs_put_be16(go + 4 + nl, 1);
	vs_put_be16(go + 6 + nl, NBD_INFO_BLOCK_SIZE);
	ret = send_option(c->fd, NBD_OPT_GO, go, 8 + nl);
	free(go);
	node->limits.max_transfer = NBD_CLIENT_MAX_TRANSFER;
	while (ret == 0) {
		ret = recv_option_reply(c->fd, NBD_OPT_GO, &type, b, sizeof(b) - 1, &len);
		if (ret < 0)
			break;
		if (type == NBD_REP_ACK) {
			if (!have_export)
				return vs_error_set(err, -EPROTO,
						    "NBD server did not describe the export");
			if (node->size > VS_NODE_MAX_SIZE)
				return vs_error_set(err, -EFBIG,
						    "NBD server reported an export size of %" PRIu64
						    " bytes, beyond 2^63 - 1 GiB (%" PRIu64
						    "), the largest an image may have",
						    node->size, VS_NODE_MAX_SIZE);
			if (node->limits.request_align > 1 &&
			    node->size % node->limits.request_align)
				return vs_error_set(
					err, -EPROTO,
					"NBD export size %" PRIu64
					" is not a multiple of its minimum block size %u",
					node->size, (unsigned)node->limits.request_align);
			return 0;
		}
		if (type == NBD_REP_INFO && len >= 2) {
			uint16_t it = vs_be16(b);

			if (it == NBD_INFO_EXPORT && len >= 12) {
				node->size = vs_be64(b + 2);
				c->flags = vs_be16(b + 10);
				have_export = true;
			} else if (it == NBD_INFO_BLOCK_SIZE && len >= 14) {
				uint32_t min = vs_be32(b + 2), max = vs_be32(b + 10);

				if (min && min <= 65536 && !(min & (min - 1)))
					node->limits.request_align = min;
				if (max && max < node->limits.max_transfer && max >= min)
					node->limits.max_transfer = max;
			}
			continue;
		}
		if (type & (1u << 31)) {
			b[len] = '\0';
			if (type == NBD_REP_ERR_UNKNOWN)
				return vs_error_set(err, -ENOENT, "NBD export '%s' not found%s%s",
						    t->export_name, len ? ": " : "", (char *)b);
			if (type == NBD_REP_ERR_TLS_REQD)
				return vs_error_set(err, -EACCES, "NBD server requires TLS");
			return vs_error_set(err, -EPROTO, "NBD server refused the export (%#x)%s%s",
					    type, len ? ": " : "", (char *)b);
		}
	}
	if (ret == -EPROTO)
		return vs_error_set(err, ret, "NBD server does not support NBD_OPT_GO");
	return vs_error_setf_errno(err, ret, "NBD handshake");
}

/* ---- replies ---- */

/* Scatter @len bytes from the socket into @s's iov at byte @skip. */
static int recv_into(struct nbd_client *c, struct nbd_slot *s, uint64_t skip, uint64_t len)
{
	for (int i = 0; i < s->niov && len; i++) {
		size_t l = s->iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t n = l - skip < len ? l - skip : (size_t)len;
		int ret = vs_aio_recv_full(c->fd, (char *)s->iov[i].iov_base + skip, n);

		if (ret < 0)
			return ret;
		len -= n;
		skip = 0;
	}
	return len ? -EPROTO : 0;
}

static int drop_bytes(struct nbd_client *c, uint64_t len)
{
	uint8_t tmp[1024];

	while (len) {
		size_t n = len < sizeof(tmp) ? (size_t)len : sizeof(tmp);
		int ret = vs_aio_recv_full(c->fd, tmp, n);

		if (ret < 0)
			return ret;
		len -= n;
	}
	return 0;
}

static struct nbd_slot *slot_for(struct nbd_client *c, uint64_t cookie)
{
	if (cookie >= NBD_CLIENT_SLOTS || !c->slots[cookie].in_use || c->slots[cookie].done)
		return NULL;
	return &c->slots[cookie];
}

static void complete(struct nbd_slot *s)
{
	s->done = true;
	vs_co_wake(s->co);
}

/* One structured chunk (header already read). Returns 0 or -EPROTO etc. */
static int handle_chunk(struct nbd_client *c, uint8_t *h)
{
	uint16_t flags = vs_be16(h + 4), type = vs_be16(h + 6);
	uint32_t len = vs_be32(h + 16);
	struct nbd_slot *s = slot_for(c, vs_be64(h + 8));
	uint8_t b[12];
	int ret = 0;

	if (!s)
		return -EPROTO;
	switch (type) {
	case NBD_REPLY_TYPE_NONE:
		if (len)
			return -EPROTO;
		break;
	case NBD_REPLY_TYPE_OFFSET_DATA: {
		uint64_t off;

		if (len < 8 || s->type != NBD_CMD_READ)
			return -EPROTO;
		ret = vs_aio_recv_full(c->fd, b, 8);
		if (ret < 0)
			return ret;
		off = vs_be64(b);
		if (off < s->offset || len - 8 > s->len || off - s->offset > s->len - (len - 8))
			return -EPROTO;
		ret = recv_into(c, s, off - s->offset, len - 8);
		s->seen += len - 8;
		break;
	}
	case NBD_REPLY_TYPE_OFFSET_HOLE: {
		uint64_t off;
		uint32_t hl;

		if (len != 12 || s->type != NBD_CMD_READ)
			return -EPROTO;
		ret = vs_aio_recv_full(c->fd, b, 12);
		if (ret < 0)
			return ret;
		off = vs_be64(b);
		hl = vs_be32(b + 8);
		if (off < s->offset || hl > s->len || off - s->offset > s->len - hl)
			return -EPROTO;
		vs_iov_memset(s->iov, s->niov, off - s->offset, 0, hl);
		s->seen += hl;
		break;
	}
	case NBD_REPLY_TYPE_BLOCK_STATUS: {
		uint32_t ctx;

		if (len < 12 || (len - 4) % 8 || s->type != NBD_CMD_BLOCK_STATUS)
			return -EPROTO;
		ret = vs_aio_recv_full(c->fd, b, 12);
		if (ret < 0)
			return ret;
		ctx = vs_be32(b);
		if (ctx == c->base_ctx && !s->bs_seen) {
			s->bs_len = vs_be32(b + 4);
			s->bs_flags = vs_be32(b + 8);
			s->bs_seen = true;
		}
		ret = drop_bytes(c, len - 12);
		break;
	}
	default:
		if (type & (1u << 15)) {
			uint32_t e;

			if (len < 6)
				return -EPROTO;
			ret = vs_aio_recv_full(c->fd, b, 6);
			if (ret < 0)
				return ret;
			e = vs_be32(b);
			s->err = wire_to_errno(e ? e : NBD_EIO);
			ret = drop_bytes(c, len - 6);
			break;
		}
		/* Unknown non-error chunk types must be skipped. */
		ret = drop_bytes(c, len);
		break;
	}
	if (ret < 0)
		return ret;
	if (flags & NBD_REPLY_FLAG_DONE) {
		/*
		 * A successful read must have covered the whole range with
		 * data and hole chunks (which may not overlap): a server that
		 * leaves part of it out would hand back whatever the buffer
		 * held before.
		 */
		if (s->type == NBD_CMD_READ && !s->err && s->seen < s->len)
			s->err = -EIO;
		complete(s);
	}
	return 0;
}

static void reader_main(void *opaque)
{
	struct vs_node *node = opaque;
	struct nbd_client *c = node->opaque;
	uint8_t h[20];
	int ret = 0;

	c->reader = vs_co_self();
	while (!c->dead) {
		ret = vs_aio_recv_full(c->fd, h, 4);
		if (ret < 0)
			break;
		if (vs_be32(h) == NBD_SIMPLE_REPLY_MAGIC) {
			struct nbd_slot *s;

			ret = vs_aio_recv_full(c->fd, h + 4, 12);
			if (ret < 0)
				break;
			s = slot_for(c, vs_be64(h + 8));
			if (!s) {
				ret = -EPROTO;
				break;
			}
			s->err = vs_be32(h + 4) ? wire_to_errno(vs_be32(h + 4)) : 0;
			if (!s->err && s->type == NBD_CMD_READ) {
				ret = recv_into(c, s, 0, s->len);
				if (ret < 0)
					break;
			}
			complete(s);
		} else if (vs_be32(h) == NBD_STRUCTURED_REPLY_MAGIC && c->structured) {
			ret = vs_aio_recv_full(c->fd, h + 4, 16);
			if (ret == 0)
				ret = handle_chunk(c, h);
			if (ret < 0)
				break;
		} else {
			ret = -EPROTO;
			break;
		}
	}
	/* The connection is gone: fail everything that waits. */
	c->dead = true;
	for (unsigned i = 0; i < NBD_CLIENT_SLOTS; i++) {
		struct nbd_slot *s = &c->slots[i];

		if (s->in_use && !s->done) {
			s->err = -EIO;
			complete(s);
		}
	}
	c->reader = NULL;
	c->reader_running = false;
	vs_co_queue_wake_all(&c->reader_exit);
	vs_co_queue_wake_all(&c->slot_wait);
}

/* ---- requests ---- */

static int nbd_request(struct vs_node *node, uint16_t type, uint16_t flags, uint64_t offset,
		       uint64_t len, struct iovec *iov, int niov, struct nbd_slot *out)
{
	struct nbd_client *c = node->opaque;
	struct nbd_slot *s = NULL;
	uint8_t h[28];
	struct iovec siov[1 + 64];
	int n = 1, ret;
	unsigned i;

	for (;;) {
		if (c->dead)
			return -EIO;
		if (c->used < NBD_CLIENT_SLOTS)
			break;
		vs_co_queue_wait(&c->slot_wait);
	}
	for (i = 0; i < NBD_CLIENT_SLOTS; i++)
		if (!c->slots[i].in_use)
			break;
	s = &c->slots[i];
	memset(s, 0, sizeof(*s));
	s->in_use = true;
	s->co = vs_co_self();
	s->type = type;
	s->offset = offset;
	s->len = len;
	s->iov = iov;
	s->niov = niov;
	c->used++;

	vs_put_be32(h, NBD_REQUEST_MAGIC);
	vs_put_be16(h + 4, flags);
	vs_put_be16(h + 6, type);
	vs_put_be64(h + 8, i);
	vs_put_be64(h + 16, offset);
	vs_put_be32(h + 24, (uint32_t)len);
	siov[0] = (struct iovec){ h, sizeof(h) };
	if (type == NBD_CMD_WRITE) {
		if (niov > 64) {
			ret = -EINVAL;
			goto out;
		}
		memcpy(siov + 1, iov, sizeof(*iov) * (size_t)niov);
		n += niov;
	}
	vs_co_mutex_lock(&c->send_lock);
	ret = c->dead ? -EIO : vs_aio_sendmsg_full(c->fd, siov, n);
	vs_co_mutex_unlock(&c->send_lock);
	if (ret < 0) {
		c->dead = true;
		shutdown(c->fd, SHUT_RDWR);
		goto out;
	}
	while (!s->done)
		vs_co_yield();
	ret = s->err;
	if (out)
		*out = *s;
out:
	s->in_use = false;
	c->used--;
	vs_co_queue_wake_one(&c->slot_wait);
	return ret;
}

static int nbd_block_status(struct vs_node *node, struct vs_req *req)
{
	struct nbd_client *c = node->opaque;
	struct nbd_slot s;
	uint64_t len = req->len > UINT32_MAX ? UINT32_MAX & ~4095ull : req->len;
	int ret;

	ret = nbd_request(node, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, req->offset, len, NULL,
			  0, &s);
	req->bs_pnum = req->len;
	req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED;
	if (ret < 0 || !s.bs_seen || s.bs_len == 0)
		return ret < 0 && ret != -EINVAL && ret != -ENOTSUP ? ret : 0;
	(void)c;
	req->bs_pnum = s.bs_len < req->len ? s.bs_len : req->len;
	req->bs_status = VS_BS_ALLOCATED;
	if (s.bs_flags & NBD_STATE_ZERO)
		req->bs_status |= VS_BS_ZERO;
	if (!(s.bs_flags & NBD_STATE_HOLE))
		req->bs_status |= VS_BS_DATA;
	return 0;
}

static int nbd_submit(struct vs_node *node, struct vs_req *req)
{
	struct nbd_client *c = node->opaque;
	uint16_t fua = (req->flags & VS_REQ_FUA) ? NBD_CMD_FLAG_FUA : 0;

	switch (req->op) {
	case VS_OP_READ:
		return nbd_request(node, NBD_CMD_READ, 0, req->offset, req->len, req->iov,
				   req->niov, NULL);
	case VS_OP_WRITE: {
		int ret;

		if (!fua || (c->flags & NBD_FLAG_SEND_FUA))
			return nbd_request(node, NBD_CMD_WRITE, fua, req->offset, req->len,
					   req->iov, req->niov, NULL);
		/* The server has no FUA: write, then flush. */
		ret = nbd_request(node, NBD_CMD_WRITE, 0, req->offset, req->len, req->iov,
				  req->niov, NULL);
		if (ret == 0 && (c->flags & NBD_FLAG_SEND_FLUSH))
			ret = nbd_request(node, NBD_CMD_FLUSH, 0, 0, 0, NULL, 0, NULL);
		return ret;
	}
	case VS_OP_FLUSH:
		if (!(c->flags & NBD_FLAG_SEND_FLUSH))
			return 0;
		return nbd_request(node, NBD_CMD_FLUSH, 0, 0, 0, NULL, 0, NULL);
	case VS_OP_DISCARD:
		return nbd_request(node, NBD_CMD_TRIM, 0, req->offset, req->len, NULL, 0, NULL);
	case VS_OP_WRITE_ZEROES: {
		uint16_t hole = (req->flags & VS_REQ_MAY_UNMAP) ? 0 : NBD_CMD_FLAG_NO_HOLE;
		bool server_fua = c->flags & NBD_FLAG_SEND_FUA;
		int ret = nbd_request(node, NBD_CMD_WRITE_ZEROES, hole | (server_fua ? fua : 0),
				      req->offset, req->len, NULL, 0, NULL);

		if (ret == 0 && fua && !server_fua && (c->flags & NBD_FLAG_SEND_FLUSH))
			ret = nbd_request(node, NBD_CMD_FLUSH, 0, 0, 0, NULL, 0, NULL);
		return ret;
	}
	case VS_OP_BLOCK_STATUS:
		return nbd_block_status(node, req);
	}
	return -EINVAL;
}

static int nbd_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct nbd_client *c = node->opaque;
	struct nbd_target t;
	int ret;

	if (parse_target(opts->filename, &t) < 0)
		return vs_error_set(err, -EINVAL,
				    "Invalid NBD URI '%s' (use nbd://HOST[:PORT]/EXPORT or "
				    "nbd+unix:///EXPORT?socket=PATH)",
				    opts->filename);
	c->fd = connect_target(&t, err);
	if (c->fd < 0)
		return c->fd;
	ret = handshake(node, c, &t, err);
	if (ret < 0)
		goto fail;
	if (!opts->read_only && (c->flags & NBD_FLAG_READ_ONLY)) {
		ret = vs_error_set(err, -EACCES, "NBD export '%s' is read-only; open it read-only",
				   t.export_name);
		goto fail;
	}
	node->limits.mem_align = 1;
	if (node->limits.request_align == 0)
		node->limits.request_align = 1;
	node->caps = 0;
	if (c->flags & NBD_FLAG_SEND_TRIM)
		node->caps |= VS_CAP_DISCARD;
	if (c->flags & NBD_FLAG_SEND_WRITE_ZEROES)
		node->caps |= VS_CAP_WRITE_ZEROES;
	if (c->flags & NBD_FLAG_SEND_FLUSH)
		node->caps |= VS_CAP_FLUSH;
	if (c->has_base_ctx)
		node->caps |= VS_CAP_BLOCK_STATUS;
	c->reader_running = true;
	if (!vs_co_spawn(vs_reactor_current(), reader_main, node)) {
		c->reader_running = false;
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	return 0;
fail:
	close(c->fd);
	c->fd = -1;
	return ret;
}

static void nbd_close(struct vs_node *node)
{
	struct nbd_client *c = node->opaque;
	uint8_t h[28];

	if (c->fd < 0)
		return;
	if (!c->dead) {
		/* NBD_CMD_DISC, then let the reader see the end of the stream. */
		memset(h, 0, sizeof(h));
		vs_put_be32(h, NBD_REQUEST_MAGIC);
		vs_put_be16(h + 6, NBD_CMD_DISC);
		vs_co_mutex_lock(&c->send_lock);
		(void)vs_aio_send_full(c->fd, h, sizeof(h));
		vs_co_mutex_unlock(&c->send_lock);
	}
	c->dead = true;
	shutdown(c->fd, SHUT_RDWR);
	while (c->reader_running)
		vs_co_queue_wait(&c->reader_exit);
	close(c->fd);
	c->fd = -1;
}

const struct vs_driver vs_driver_nbd = {
	.name = "nbd",
	/* nbd://, nbd+unix://, nbd+tcp:// and QEMU's legacy nbd:unix:PATH, nbd:HOST:PORT */
	.prefixes = (const char *const[]){ "nbd:", "nbd+unix://", "nbd+tcp://", NULL },
	.state_size = sizeof(struct nbd_client),
	.open = nbd_open,
	.close = nbd_close,
	.submit = nbd_submit,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

/*
 * The hand-written client, kept for comparison with the libnbd one
 * (driver-nbd-libnbd.c): used with VSTOR_NBD_CLIENT=builtin, or when vstor
 * was built without libnbd.
 */
static void __attribute__((constructor)) nbd_builtin_register(void)
{
#ifdef HAVE_LIBNBD
	const char *e = getenv("VSTOR_NBD_CLIENT");

	if (!e || strcmp(e, "builtin"))
		return;
#endif
	vs_driver_register(&vs_driver_nbd);
}
