/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the vhost-user back end (vhost-user-blk/vhost-user.c) as a
 * front end drives it. The input is a sequence of messages (12-byte header
 * with the payload size, then the payload), sent one by one over a
 * socketpair to a back end exporting a 1 MiB memory image with two queues.
 * Since an input cannot carry file descriptors, the harness attaches them:
 * SET_MEM_TABLE gets as many copies of a 1 MiB memfd (the guest memory) as
 * its region count says, SET_INFLIGHT_FD that memfd too (so the input can
 * write the inflight area), SET_VRING_KICK/CALL/ERR an eventfd unless the
 * no-fd bit is set. Two harness-only requests let the input act as the
 * guest: 0xf0 writes its payload (after a 4-byte offset) into guest memory,
 * 0xf1 kicks the queue named by its first payload byte. Replies are drained.
 * Everything runs on one reactor.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vhost-user.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GUEST_MEM (1u << 20)
#define H_WRITE_MEM 0xf0
#define H_KICK 0xf1

struct run {
	const uint8_t *data;
	size_t size;
	int client;
	int memfd;
	uint8_t *mem;
	int kick[256];
	bool drained, written;
	struct vs_co_queue wait;
};

static int send_with_fds(int sock, const uint8_t *buf, size_t len, int fd, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr a;
	} cbuf;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		for (unsigned i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof(int));
	}
	/* Small messages: a non-blocking sendmsg on an empty socket goes whole. */
	return sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -1 : 0;
}

static void writer(void *opaque)
{
	struct run *r = opaque;
	size_t pos = 0;

	while (pos + 12 <= r->size) {
		const uint8_t *h = r->data + pos;
		uint32_t req, size;
		size_t len;
		unsigned nfds = 0;
		int fd = -1;

		memcpy(&req, h, 4);
		memcpy(&size, h + 8, 4);
		len = 12 + (size < r->size - pos - 12 ? size : r->size - pos - 12);
		if (req == H_WRITE_MEM && len >= 16) {
			uint32_t off;

			memcpy(&off, h + 12, 4);
			off %= GUEST_MEM;
			memcpy(r->mem + off, h + 16,
			       len - 16 < GUEST_MEM - off ? len - 16 : GUEST_MEM - off);
		} else if (req == H_KICK && len >= 13) {
			uint64_t one = 1;

			if (r->kick[h[12]] >= 0 && write(r->kick[h[12]], &one, 8) < 0) {
				/* a full counter: the kick is pending anyway */
			}
			/* A few loop turns: the poll completes, the ring is read, requests run. */
			for (int i = 0; i < 16; i++)
				vs_co_yield_now();
		} else {
			if (req == 5 && len >= 16) { /* SET_MEM_TABLE */
				uint32_t n;

				memcpy(&n, h + 12, 4);
				nfds = n < 8 ? n : 8;
				fd = r->memfd;
			} else if (req == 32) { /* SET_INFLIGHT_FD: guest memory as the area */
				nfds = 1;
				fd = r->memfd;
			} else if (req >= 12 && req <= 14 && len >= 20 && !(h[13] & 1)) {
				fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
				nfds = fd >= 0;
			}
			if (send_with_fds(r->client, h, len, fd, nfds) < 0) {
				if (fd >= 0 && fd != r->memfd)
					close(fd);
				break;
			}
			if (req == 12 && fd >= 0) {
				if (r->kick[h[12]] >= 0)
					close(r->kick[h[12]]);
				r->kick[h[12]] = fd;
			} else if (fd >= 0 && fd != r->memfd) {
				close(fd);
			}
			/* Let the back end act on it before the next one. */
			vs_co_yield_now();
		}
		pos += len;
	}
	shutdown(r->client, SHUT_WR);
	r->written = true;
	vs_co_queue_wake_all(&r->wait);
}

static void drainer(void *opaque)
{
	struct run *r = opaque;
	char buf[4096];

	while (vs_aio_recv(r->client, buf, sizeof(buf), 0) > 0)
		;
	r->drained = true;
	vs_co_queue_wake_all(&r->wait);
}

static void run_session(void *opaque)
{
	struct run *r = opaque;
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_vhost_blk_opts bo = { .wce = true,
					.discard = true,
					.write_zeroes = true,
					.num_queues = 2,
					.quiet = true,
					.verbose = false };
	struct vs_vhost_blk *b = NULL;
	struct vs_node *node = NULL;
	struct vs_error err = { 0 };
	int sv[2];

	if (vs_image_open(&node, &o, &err) < 0)
		abort();
	bo.node = node;
	bo.quiet = bo.verbose = getenv("VSTOR_FUZZ_VERBOSE") != NULL;
	bo.quiet = !bo.quiet;
	if (vs_vhost_blk_new(&b, &bo) < 0)
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	r->client = sv[1];
	if (vs_vhost_blk_serve_fd(b, sv[0]) < 0)
		abort();
	vs_co_spawn(vs_reactor_current(), writer, r);
	vs_co_spawn(vs_reactor_current(), drainer, r);
	/* The back end reads to the end of the input, then hangs up. */
	while (!r->written || !r->drained)
		vs_co_queue_wait(&r->wait);
	vs_vhost_blk_shutdown(b);
	if (getenv("VSTOR_FUZZ_VERBOSE")) { /* what a seed reaches, for corpus work */
		struct vs_vhost_blk_stats st;

		vs_vhost_blk_get_stats(b, &st);
		fprintf(stderr,
			"reads %llu writes %llu flushes %llu discards %llu zeroes %llu ids %llu "
			"ioerr %llu unsupp %llu bad %llu\n",
			(unsigned long long)st.reads, (unsigned long long)st.writes,
			(unsigned long long)st.flushes, (unsigned long long)st.discards,
			(unsigned long long)st.write_zeroes, (unsigned long long)st.get_ids,
			(unsigned long long)st.io_errors, (unsigned long long)st.unsupported,
			(unsigned long long)st.bad_chains);
	}
	vs_vhost_blk_free(b);
	close(sv[1]);
	vs_node_close(node);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r = { .data = data, .size = size };

	r.memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
	if (r.memfd < 0 || ftruncate(r.memfd, GUEST_MEM) < 0)
		abort();
	r.mem = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE, MAP_SHARED, r.memfd, 0);
	if (r.mem == MAP_FAILED)
		abort();
	for (int i = 0; i < 256; i++)
		r.kick[i] = -1;
	if (vs_run_in_coroutine(run_session, &r) < 0)
		abort();
	for (int i = 0; i < 256; i++)
		if (r.kick[i] >= 0)
			close(r.kick[i]);
	munmap(r.mem, GUEST_MEM);
	close(r.memfd);
	return 0;
}
