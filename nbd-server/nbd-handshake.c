/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server: the fixed newstyle handshake, from the greeting to
 * the export chosen (options, TLS upgrade, meta contexts; see nbd-server.c).
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

/* ---- handshake ---- */

static int send_info_export(struct nbd_conn *c, uint32_t opt, struct nbd_export *e)
{
	uint8_t b[12];

	vs_put_be16(b, NBD_INFO_EXPORT);
	vs_put_be64(b + 2, vs_export_size(e->exp));
	vs_put_be16(b + 10, nbd_export_flags(c->srv, e));
	return nbd_opt_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

static int send_info_string(struct nbd_conn *c, uint32_t opt, uint16_t type, const char *s)
{
	size_t len = strlen(s);
	uint8_t *b = malloc(2 + len);
	int ret;

	if (!b)
		return -ENOMEM;
	vs_put_be16(b, type);
	memcpy(b + 2, s, len);
	ret = nbd_opt_reply(c, opt, NBD_REP_INFO, b, (uint32_t)(2 + len));
	free(b);
	return ret;
}

static int send_info_block_size(struct nbd_conn *c, uint32_t opt)
{
	uint8_t b[14];

	vs_put_be16(b, NBD_INFO_BLOCK_SIZE);
	vs_put_be32(b + 2, 1); /* the generic layer bounces anything unaligned */
	vs_put_be32(b + 6, NBD_PREFERRED_BLOCK);
	vs_put_be32(b + 10, NBD_MAX_PAYLOAD);
	return nbd_opt_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

/* NBD_OPT_INFO / NBD_OPT_GO. Returns 1 when GO succeeded, 0 to continue, <0 to hang up. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	uint32_t namelen;
	uint16_t ninfo;
	struct nbd_export *e;
	bool want_name = false, want_desc = false;
	int ret;

	if (len < 6 || (namelen = vs_be32(d)) > len - 6 ||
	    (ninfo = vs_be16(d + 4 + namelen), len != 6 + namelen + 2u * ninfo))
		return nbd_opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request",
				     opt == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
	for (unsigned i = 0; i < ninfo; i++) {
		uint16_t t = vs_be16(d + 6 + namelen + 2 * i);

		want_name |= t == NBD_INFO_NAME;
		want_desc |= t == NBD_INFO_DESCRIPTION;
	}
	e = nbd_find_export(c->srv, (const char *)d + 4, namelen);
	if (!e)
		return nbd_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
				     (int)(namelen > 256 ? 256 : namelen), (const char *)d + 4);
	ret = send_info_export(c, opt, e);
	if (ret == 0 && want_name)
		ret = send_info_string(c, opt, NBD_INFO_NAME, e->name);
	if (ret == 0 && want_desc && e->description)
		ret = send_info_string(c, opt, NBD_INFO_DESCRIPTION, e->description);
	if (ret == 0)
		ret = send_info_block_size(c, opt);
	if (ret == 0)
		ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (ret < 0)
		return ret;
	if (opt != NBD_OPT_GO)
		return 0;
	if (e->removed) /* removed while we answered: as if it never was */
		return -ENOENT;
	c->exp = e;
	/* Contexts negotiated for another export do not apply. */
	if (c->ctx_export && strcmp(c->ctx_export, e->name))
		c->contexts = 0;
	return 1;
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
	int ret = 0;

	if (len)
		return nbd_opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				     "NBD_OPT_LIST takes no data");
	for (struct nbd_export *e = c->srv->exports; e && ret == 0; e = e->next) {
		size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
		uint8_t *b = malloc(4 + nl + dl);

		if (!b)
			return -ENOMEM;
		vs_put_be32(b, (uint32_t)nl);
		memcpy(b + 4, e->name, nl);
		if (dl)
			memcpy(b + 4 + nl, e->description, dl);
		ret = nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, b, (uint32_t)(4 + nl + dl));
		free(b);
	}
	if (ret == 0)
		ret = nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
	return ret;
}

static int send_meta_context(struct nbd_conn *c, uint32_t opt, uint32_t id, const char *prefix,
			     const char *name)
{
	size_t pl = strlen(prefix), nl = strlen(name);
	uint8_t *b = malloc(4 + pl + nl);
	int ret;

	if (!b)
		return -ENOMEM;
	vs_put_be32(b, id);
	memcpy(b + 4, prefix, pl);
	memcpy(b + 4 + pl, name, nl);
	ret = nbd_opt_reply(c, opt, NBD_REP_META_CONTEXT, b, (uint32_t)(4 + pl + nl));
	free(b);
	return ret;
}

static bool query_is(const uint8_t *q, uint32_t ql, const char *s)
{
	return ql == strlen(s) && !memcmp(q, s, ql);
}

/*
 * The contexts of export @e that query @q names: exactly, or (listing
 * only) a namespace or the leading part QEMU accepts ("base:", "qemu:",
 * "qemu:dirty-bitmap:" for all the bitmaps).
 */
static uint64_t query_contexts(const struct nbd_export *e, const uint8_t *q, uint32_t ql, bool set)
{
	size_t pl = strlen(CTX_BITMAP_PREFIX);
	uint64_t found = 0;

	if (query_is(q, ql, "base:allocation") || (!set && query_is(q, ql, "base:")))
		found |= CTX_BASE_ALLOCATION;
	if (query_is(q, ql, "qemu:allocation-depth") || (!set && query_is(q, ql, "qemu:")))
		found |= CTX_ALLOCATION_DEPTH;
	if (!set && (query_is(q, ql, "qemu:") || query_is(q, ql, CTX_BITMAP_PREFIX))) {
		for (unsigned i = 0; i < e->nb_bitmaps; i++)
			found |= CTX_BITMAP(i);
	} else if (ql > pl && !memcmp(q, CTX_BITMAP_PREFIX, pl)) {
		for (unsigned i = 0; i < e->nb_bitmaps; i++)
			if (query_is(q + pl, ql - (uint32_t)pl, e->bitmaps[i]))
				found |= CTX_BITMAP(i);
	}
	return found;
}

static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	bool set = opt == NBD_OPT_SET_META_CONTEXT;
	uint32_t namelen, nq, pos;
	uint64_t found = 0;
	struct nbd_export *e;
	int ret = 0;

	if (set && !c->structured)
		return nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
				     "structured replies must be negotiated first");
	if (len < 8 || (namelen = vs_be32(d)) > len - 8)
		return nbd_opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed meta context request");
	nq = vs_be32(d + 4 + namelen);
	/* Validate the whole query list before acting on it. */
	pos = 8 + namelen;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql;

		if (len - pos < 4 || (ql = vs_be32(d + pos)) > len - pos - 4)
			return nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
					     "malformed meta context query");
		pos += 4 + ql;
	}
	if (pos != len)
		return nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
				     "trailing data in meta context request");
	e = nbd_find_export(c->srv, (const char *)d + 4, namelen);
	if (!e)
		return nbd_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
				     (int)(namelen > 256 ? 256 : namelen), (const char *)d + 4);
	if (nq == 0 && !set) {
		found = CTX_BASE_ALLOCATION | CTX_ALLOCATION_DEPTH;
		for (unsigned i = 0; i < e->nb_bitmaps; i++)
			found |= CTX_BITMAP(i);
	} else {
		pos = 8 + namelen;
		for (uint32_t i = 0; i < nq; i++) {
			uint32_t ql = vs_be32(d + pos);

			found |= query_contexts(e, d + pos + 4, ql, set);
			pos += 4 + ql;
		}
	}
	if (found & CTX_BASE_ALLOCATION)
		ret = send_meta_context(c, opt, CTX_BASE_ALLOCATION, "", "base:allocation");
	if (ret == 0 && (found & CTX_ALLOCATION_DEPTH))
		ret = send_meta_context(c, opt, CTX_ALLOCATION_DEPTH, "", "qemu:allocation-depth");
	for (unsigned i = 0; i < e->nb_bitmaps && ret == 0; i++)
		if (found & CTX_BITMAP(i))
			ret = send_meta_context(c, opt, CTX_BITMAP_SHIFT + 1 + i, CTX_BITMAP_PREFIX,
						e->bitmaps[i]);
	if (ret == 0)
		ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (ret == 0 && set) {
		char *name = strdup(e->name);

		if (!name)
			return -ENOMEM;
		free(c->ctx_export);
		c->ctx_export = name;
		c->contexts = found;
	}
	return ret;
}

/* Returns 1 when an export was selected, 0 when the client ended politely, <0 on error. */
int nbd_conn_handshake(struct nbd_conn *c)
{
	uint8_t b[18];
	uint32_t cflags;
	int ret;

	vs_put_be64(b, NBD_MAGIC);
	vs_put_be64(b + 8, NBD_IHAVEOPT);
	vs_put_be16(b + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	ret = vs_aio_send_full(c->fd, b, sizeof(b));
	if (ret < 0)
		return ret;
	ret = vs_aio_recv_full(c->fd, b, 4);
	if (ret < 0)
		return ret;
	cflags = vs_be32(b);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EPROTO;
	c->fixed = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
	c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

	for (unsigned n = 0; n < NBD_MAX_OPTIONS; n++) {
		uint8_t h[16];
		uint8_t *data = NULL;
		uint32_t opt, len;

		ret = nbd_conn_recv_full(c, h, sizeof(h));
		if (ret < 0)
			return ret;
		if (vs_be64(h) != NBD_IHAVEOPT)
			return -EPROTO;
		opt = vs_be32(h + 8);
		len = vs_be32(h + 12);
		if (len > NBD_MAX_OPTION_LEN) {
			/* Too big to read: drop it, and hang up if it is huge. */
			if (len > 16 * NBD_MAX_OPTION_LEN || !c->fixed)
				return -EPROTO;
			ret = nbd_drain_payload(c, len);
			if (ret == 0)
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
						    "option data too long");
			if (ret < 0)
				return ret;
			continue;
		}
		if (len) {
			data = malloc(len);
			if (!data)
				return -ENOMEM;
			ret = nbd_conn_recv_full(c, data, len);
			if (ret < 0) {
				free(data);
				return ret;
			}
		}
		if (c->srv->opts.tls_mode == VS_NBD_TLS_REQUIRE && !c->tls &&
		    opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
			free(data);
			if (opt == NBD_OPT_EXPORT_NAME)
				return -EACCES; /* no error reply exists for it */
			ret = nbd_opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
					    "TLS is required: use NBD_OPT_STARTTLS first");
			if (ret < 0)
				return ret;
			continue;
		}
		if ((opt == NBD_OPT_EXPORT_NAME || opt == NBD_OPT_LIST || opt == NBD_OPT_INFO ||
		     opt == NBD_OPT_GO) &&
		    c->srv->opts.refresh_exports)
			c->srv->opts.refresh_exports(c->srv->opts.refresh_opaque);
		switch (opt) {
		case NBD_OPT_EXPORT_NAME: {
			struct nbd_export *e = nbd_find_export(c->srv, (const char *)data, len);
			uint8_t r[10 + 124];
			size_t rl = c->no_zeroes ? 10 : sizeof(r);

			free(data);
			if (!e)
				return -ENOENT; /* this option has no error reply: hang up */
			memset(r, 0, sizeof(r));
			vs_put_be64(r, vs_export_size(e->exp));
			vs_put_be16(r + 8, nbd_export_flags(c->srv, e));
			ret = nbd_conn_send_buf(c, r, rl);
			if (ret < 0)
				return ret;
			if (e->removed)
				return -ENOENT;
			c->exp = e;
			if (c->ctx_export && strcmp(c->ctx_export, e->name))
				c->contexts = 0;
			return 1;
		}
		case NBD_OPT_ABORT:
			free(data);
			(void)nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
			return 0;
		case NBD_OPT_LIST:
			ret = opt_list(c, len);
			break;
		case NBD_OPT_INFO:
		case NBD_OPT_GO:
			ret = opt_info_go(c, opt, data, len);
			if (ret == 1) {
				free(data);
				return 1;
			}
			break;
		case NBD_OPT_STRUCTURED_REPLY:
			if (len)
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
						    "option takes no data");
			else if (c->extended)
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_EXT_HEADER_REQD,
						    "extended headers already negotiated");
			else {
				ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				c->structured = true;
			}
			break;
		case NBD_OPT_EXTENDED_HEADERS:
			if (len) {
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
						    "option takes no data");
			} else {
				ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				c->extended = true;
				c->structured = true;
			}
			break;
		case NBD_OPT_LIST_META_CONTEXT:
		case NBD_OPT_SET_META_CONTEXT:
			ret = opt_meta_context(c, opt, data, len);
			break;
		case NBD_OPT_STARTTLS:
			if (len) {
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
						    "option takes no data");
			} else if (c->tls) {
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_INVALID,
						    "TLS is already active");
			} else if (c->srv->opts.tls_mode == VS_NBD_TLS_OFF || !c->srv->opts.tls) {
				ret = nbd_opt_error(c, opt, NBD_REP_ERR_POLICY,
						    "TLS is not enabled on this server");
			} else if (c->rpos < c->rlen) {
				/*
				 * Bytes sent after STARTTLS but before the handshake would
				 * be taken as if they came through TLS: an injection. Hang up.
				 */
				free(data);
				return -EPROTO;
			} else {
				ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				if (ret == 0)
					ret = nbd_tls_session_start(c->srv->opts.tls, c->fd,
								    &c->tls);
				/* What was negotiated in the clear does not carry over. */
				c->structured = false;
				c->extended = false;
				c->contexts = 0;
			}
			break;
		default:
			if (!c->fixed) {
				free(data);
				return -EPROTO;
			}
			ret = nbd_opt_error(c, opt, NBD_REP_ERR_UNSUP, "option %u not supported",
					    opt);
			break;
		}
		free(data);
		if (ret < 0)
			return ret;
	}
	return -EPROTO; /* too many options: a client that never decides */
}
