/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program against the installed libvstor: open a disk image (raw or
 * qcow2, with its backing chain) read-only, print its format and size, the
 * runs of data and zeroes a guest would see, and the first bytes.
 *
 *   cc -o image-map image-map.c $(pkg-config --cflags --libs libvstor)
 *   ./image-map disk.qcow2
 *
 * libvstor's I/O runs in coroutines on an io_uring reactor:
 * vs_run_in_coroutine() runs a function as one and returns when it is done.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <vstor/error.h>
#include <vstor/node.h>
#include <vstor/reactor.h>

struct job {
	const char *path;
	int ret;
};

static void show(void *arg)
{
	struct job *job = arg;
	struct vs_open_opts opts;
	struct vs_error err = { 0 };
	struct vs_node *node;
	unsigned char head[16];
	uint64_t off = 0, size;

	memset(&opts, 0, sizeof(opts));
	opts.filename = job->path;
	opts.read_only = true;
	job->ret = vs_image_open(&node, &opts, &err);
	if (job->ret < 0) {
		fprintf(stderr, "image-map: %s\n", err.msg);
		return;
	}
	size = vs_node_size(node);
	printf("format %s size %" PRIu64 "\n", vs_node_format(node), size);

	/* Runs as the guest sees them: through the whole backing chain. */
	while (off < size) {
		uint64_t pnum;
		unsigned status, depth;

		job->ret = vs_node_block_status_above(node, off, size - off, &pnum, &status, NULL,
						      NULL, &depth);
		if (job->ret < 0) {
			fprintf(stderr, "image-map: block status at %" PRIu64 ": %s\n", off,
				strerror(-job->ret));
			break;
		}
		printf("%" PRIu64 " %" PRIu64 " %s\n", off, pnum,
		       (status & VS_BS_DATA) ? "data" : "zero");
		off += pnum;
	}

	if (job->ret >= 0 && size >= sizeof(head)) {
		job->ret = vs_node_pread(node, 0, head, sizeof(head));
		if (job->ret < 0) {
			fprintf(stderr, "image-map: read: %s\n", strerror(-job->ret));
		} else {
			printf("head");
			for (size_t i = 0; i < sizeof(head); i++)
				printf(" %02x", head[i]);
			printf("\n");
		}
	}
	vs_node_close(node);
}

int main(int argc, char **argv)
{
	struct job job = { 0 };

	if (argc != 2) {
		fprintf(stderr, "usage: image-map IMAGE\n");
		return 2;
	}
	job.path = argv[1];
	if (vs_run_in_coroutine(show, &job) < 0)
		return 1;
	return job.ret < 0 ? 1 : 0;
}
