/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the nbd protocol driver (vstor's NBD client) against a
 * hostile server. The input is everything the server says: it is sent, as
 * is, to a client that connects over a unix socket, negotiates, and then
 * runs a fixed set of requests (two reads in parallel with a block status,
 * a write, write-zeroes, a discard and a flush) before closing. What the
 * client sends is drained. Everything runs on one reactor; a run ends when
 * the client is done, which it must be once the input is used up (the
 * server side then hangs up).
 *
 * The client numbers its requests in order (libnbd: cookie 1, 2, ...), so a seed
 * can answer them; see make-nbd-corpus.py.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vstor/node.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	const uint8_t *data;
	size_t size;
	int lfd;
	int sfd; /* the server's end */
	bool accepted;
	bool served;
	bool client_done;
	unsigned readers; /* reader coroutines spawned and not yet done */
	unsigned next_reader;
	struct vs_node *node;
	struct vs_co_queue wait;
	char uri[160];
};

static char sock_dir[64];

/* With VSTOR_FUZZ_VERBOSE set (replaying a seed), what each step returned. */
static int note(const char *what, int ret)
{
	if (getenv("VSTOR_FUZZ_VERBOSE"))
		fprintf(stderr, "%s: %d\n", what, ret);
	return ret;
}

static void server(void *opaque)
{
	struct run *r = opaque;
	char buf[65536];

	r->sfd = vs_aio_accept(r->lfd);
	r->accepted = true;
	if (r->sfd >= 0) {
		/* The client may hang up early: a failed send is the end. */
		if (vs_aio_send_full(r->sfd, r->data, r->size) == 0)
			shutdown(r->sfd, SHUT_WR);
		while (vs_aio_recv(r->sfd, buf, sizeof(buf), 0) > 0)
			;
		close(r->sfd);
	}
	r->served = true;
	vs_co_queue_wake_all(&r->wait);
}

static void reader(void *opaque)
{
	struct run *r = opaque;
	static uint8_t buf[2][8192];
	unsigned i = r->next_reader++;
	uint64_t size = vs_node_size(r->node), pnum = 0;
	unsigned st = 0;

	if (i < 2) {
		uint64_t off = i * 8192ull;

		if (size >= off + 8192)
			note("read", vs_node_pread(r->node, off, buf[i], 8192));
	} else if (size) {
		note("block status",
		     vs_node_block_status(r->node, 0, size, &pnum, &st, NULL, NULL));
	}
	r->readers--;
	vs_co_queue_wake_all(&r->wait);
}

static void client(void *opaque)
{
	struct run *r = opaque;
	struct vs_open_opts o = { .filename = r->uri, .format = "raw" };
	struct vs_error err = { 0 };
	static const uint8_t pat[4096] = { 0x5a };

	if (note("open", vs_image_open(&r->node, &o, &err)) == 0) {
		uint64_t size = vs_node_size(r->node);

		for (int i = 0; i < 3; i++)
			if (vs_co_spawn(vs_reactor_current(), reader, r))
				r->readers++;
		while (r->readers)
			vs_co_queue_wait(&r->wait);
		if (size >= 65536) {
			note("write", vs_node_pwrite(r->node, 4096, pat, sizeof(pat), VS_REQ_FUA));
			note("write zeroes",
			     vs_node_write_zeroes(r->node, 8192, 8192, VS_REQ_MAY_UNMAP));
			note("discard", vs_node_discard(r->node, 16384, 16384));
		}
		note("flush", vs_node_flush(r->node));
		vs_node_close(r->node);
		r->node = NULL;
	}
	r->client_done = true;
	vs_co_queue_wake_all(&r->wait);
}

static void run_session(void *opaque)
{
	struct run *r = opaque;

	vs_co_spawn(vs_reactor_current(), server, r);
	vs_co_spawn(vs_reactor_current(), client, r);
	while (!r->client_done)
		vs_co_queue_wait(&r->wait);
	/* A client that never connected leaves the server in accept. */
	if (!r->accepted) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		snprintf(a.sun_path, sizeof(a.sun_path), "%s/s", sock_dir);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			abort();
		close(fd); /* the server's send fails, its recv ends */
	}
	while (!r->served)
		vs_co_queue_wait(&r->wait);
}

static void cleanup(void)
{
	char path[80];

	snprintf(path, sizeof(path), "%s/s", sock_dir);
	unlink(path);
	rmdir(sock_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int lfd = -1;
	struct run r = { .data = data, .size = size };

	if (lfd < 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		snprintf(sock_dir, sizeof(sock_dir), "/tmp/vstor-fuzz-nbdc.XXXXXX");
		if (!mkdtemp(sock_dir))
			abort();
		snprintf(a.sun_path, sizeof(a.sun_path), "%s/s", sock_dir);
		lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
		    listen(lfd, 4) < 0)
			abort();
		atexit(cleanup);
	}
	r.lfd = lfd;
	snprintf(r.uri, sizeof(r.uri), "nbd+unix:///?socket=%s/s", sock_dir);
	if (vs_run_in_coroutine(run_session, &r) < 0)
		abort();
	return 0;
}
