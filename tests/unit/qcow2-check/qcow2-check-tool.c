/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test helper: run qcow2_check_image() on a file through the engine and print
 * the result as `qemu-img check --output=json` does, with qemu-img's exit
 * codes (0 clean, 1 check not completed, 2 corruptions, 3 leaks only). It
 * lets the corrupt-image catalogue compare vstor's counting with qemu-img's
 * independently of the CLI.
 *
 *   qcow2-check-tool [-r leaks|all] [-v] FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#include "formats/qcow2/qcow2-check.h"

struct tool {
	const char *filename;
	unsigned fix;
	bool verbose;
	struct vs_check_result res;
	struct vs_error err;
	int ret;
};

static void report(const char *msg, void *opaque)
{
	fprintf(stderr, "%s\n", msg);
}

static void tool_co(void *arg)
{
	struct tool *t = arg;
	struct vs_open_opts o = { .filename = t->filename, .read_only = !t->fix };
	struct vs_node *file;

	t->ret = vs_protocol_open(&file, t->filename, &o, &t->err);
	if (t->ret < 0)
		return;
	t->ret = qcow2_check_image_report(file, &t->res, t->fix, t->verbose ? report : NULL, NULL,
					  &t->err);
	vs_node_close(file);
}

static void field(const char *name, int64_t v, bool always, bool *first)
{
	if (!always && !v)
		return;
	printf("%s    \"%s\": %lld", *first ? "" : ",\n", name, (long long)v);
	*first = false;
}

int main(int argc, char **argv)
{
	struct tool t = { 0 };
	bool first = true;
	int c, ret;

	while ((c = getopt(argc, argv, "r:v")) != -1) {
		switch (c) {
		case 'r':
			if (!strcmp(optarg, "leaks"))
				t.fix = VS_CHECK_FIX_LEAKS;
			else if (!strcmp(optarg, "all"))
				t.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
			else
				return 1;
			break;
		case 'v':
			t.verbose = true;
			break;
		default:
			return 1;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: %s [-r leaks|all] [-v] FILE\n", argv[0]);
		return 1;
	}
	t.filename = argv[optind];
	ret = vs_run_in_coroutine(tool_co, &t);
	if (ret < 0 || t.ret < 0) {
		fprintf(stderr, "check failed: %s\n", t.err.msg[0] ? t.err.msg : "engine error");
		return 1;
	}
	printf("{\n");
	field("image-end-offset", t.res.image_end_offset, false, &first);
	field("total-clusters", t.res.total_clusters, false, &first);
	field("check-errors", t.res.check_errors, true, &first);
	field("leaks", t.res.leaks, false, &first);
	field("leaks-fixed", t.res.leaks_fixed, false, &first);
	field("corruptions", t.res.corruptions, false, &first);
	field("corruptions-fixed", t.res.corruptions_fixed, false, &first);
	field("allocated-clusters", t.res.allocated_clusters, false, &first);
	field("fragmented-clusters", t.res.fragmented_clusters, false, &first);
	field("compressed-clusters", t.res.compressed_clusters, false, &first);
	printf("\n}\n");
	if (t.res.check_errors)
		return 1;
	if (t.res.corruptions)
		return 2;
	return t.res.leaks ? 3 : 0;
}
