/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the NBD server's handshake and transmission phase. The input
 * is what a client sends; it is fed over a socketpair to a server exporting
 * a 1 MiB memory image (read-write as "", read-only as "ro"), while the
 * server's replies are drained. Everything runs on one reactor, so a run is
 * deterministic and ends when the server hangs up or the input is consumed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd-server.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	const uint8_t *data;
	size_t size;
	int client;
	bool drained;
	bool written;
	struct vs_co_queue wait;
};

static void writer(void *opaque)
{
	struct run *r = opaque;

	(void)vs_aio_send_full(r->client, r->data, r->size); /* the server may hang up early */
	shutdown(r->client, SHUT_WR);
	r->written = true;
	vs_co_queue_wake_all(&r->wait);
}

static void drainer(void *opaque)
{
	struct run *r = opaque;
	char buf[65536];

	while (vs_aio_recv(r->client, buf, sizeof(buf), 0) > 0)
		;
	r->drained = true;
	vs_co_queue_wake_all(&r->wait);
}

/* The export's dirty bitmaps: "b0" dirty in its first 64 KiB, "b1" clean. */
static int fuzz_bitmap_status(void *opaque, const char *name, uint64_t offset, uint64_t len,
			      bool *dirty, uint64_t *run)
{
	(void)opaque;
	*dirty = !strcmp(name, "b0") && offset < 65536;
	*run = *dirty && 65536 - offset < len ? 65536 - offset : len;
	return 0;
}

static void run_session(void *opaque)
{
	struct run *r = opaque;
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_open_opts ro = { .filename = "memory:64k", .format = "raw", .read_only = true };
	struct vs_nbd_server_opts so = { .max_connections = 0,
					 .persistent = true,
					 .max_requests = 8 };
	struct vs_node *node = NULL, *rnode = NULL;
	struct vs_nbd_server *srv = NULL;
	struct vs_error err = { 0 };
	int sv[2];

	if (vs_image_open(&node, &o, &err) < 0 || vs_image_open(&rnode, &ro, &err) < 0)
		abort();
	/* Some data so reads and block status have something to say. */
	if (vs_node_pwrite(node, 4096, "vstor fuzz", 10, 0) < 0)
		abort();
	if (vs_nbd_server_new(&srv, &so) < 0)
		abort();
	{
		struct vs_nbd_export_opts e = { .name = "",
						.description = "fuzz",
						.node = node,
						.wce = true,
						.discard = VS_EXPORT_DISCARD_UNMAP,
						.detect_zeroes = VS_EXPORT_DETECT_ZEROES_UNMAP,
						.bitmaps = (const char *const[]){ "b0", "b1" },
						.nb_bitmaps = 2,
						.bitmap_status = fuzz_bitmap_status };
		struct vs_nbd_export_opts e2 = { .name = "ro", .node = rnode, .read_only = true };

		if (vs_nbd_server_add_export(srv, &e, &err) < 0 ||
		    vs_nbd_server_add_export(srv, &e2, &err) < 0)
			abort();
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	r->client = sv[1];
	if (vs_nbd_server_serve_fd(srv, sv[0]) < 0)
		abort();
	vs_co_spawn(vs_reactor_current(), writer, r);
	vs_co_spawn(vs_reactor_current(), drainer, r);
	while (!r->drained || !r->written)
		vs_co_queue_wait(&r->wait);
	vs_nbd_server_shutdown(srv);
	vs_nbd_server_free(srv);
	close(sv[1]);
	vs_node_close(rnode);
	vs_node_close(node);
}

#ifdef FUZZ_NBD_TRANSMISSION
/*
 * The transmission-phase target (fuzz-nbd-transmission): a fixed, valid
 * handshake that ends in the transmission phase, chosen by the first input
 * byte (0: NBD_OPT_EXPORT_NAME with simple replies, 1: structured replies
 * and base:allocation, 2: extended headers, 3: the read-only export with
 * structured replies), followed by the rest of the input as requests.
 */
#define OPT_HDR(o, len) 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, (o), 0, 0, 0, (len)
static const uint8_t hs_simple[] = { 0, 0, 0, 3, OPT_HDR(1, 0) };
#define GO(len, ...) OPT_HDR(7, 4 + (len) + 4), 0, 0, 0, (len), __VA_ARGS__ 0, 1, 0, 3
#define META(o)                                                                                   \
	OPT_HDR(o, 4 + 4 + 4 + 15), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 15, 'b', 'a', 's', 'e', ':', \
		'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n'
static const uint8_t hs_structured[] = { 0, 0, 0, 3, OPT_HDR(8, 0), META(10), GO(0, ) };
static const uint8_t hs_extended[] = { 0, 0, 0, 3, OPT_HDR(11, 0), META(10), GO(0, ) };
static const uint8_t hs_readonly[] = { 0, 0, 0, 3, OPT_HDR(8, 0), GO(2, 'r', 'o', ) };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct {
		const uint8_t *p;
		size_t len;
	} hs[] = {
		{ hs_simple, sizeof(hs_simple) },
		{ hs_structured, sizeof(hs_structured) },
		{ hs_extended, sizeof(hs_extended) },
		{ hs_readonly, sizeof(hs_readonly) },
	};
	unsigned mode = size ? data[0] % 4 : 0;
	size_t rest = size ? size - 1 : 0;
	uint8_t *buf = malloc(hs[mode].len + rest + 1);
	struct run r;

	if (!buf)
		abort();
	memcpy(buf, hs[mode].p, hs[mode].len);
	if (rest)
		memcpy(buf + hs[mode].len, data + 1, rest);
	r = (struct run){ .data = buf, .size = hs[mode].len + rest };
	if (vs_run_in_coroutine(run_session, &r) < 0)
		abort();
	free(buf);
	return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r = { .data = data, .size = size };

	if (vs_run_in_coroutine(run_session, &r) < 0)
		abort();
	return 0;
}
#endif
