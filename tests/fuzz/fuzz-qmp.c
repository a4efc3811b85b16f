/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: vstord's QMP sessions (framing, the JSON parser, the
 * envelope, negotiation, dispatch and the commands' argument checks). The
 * input is what a monitor client sends, fed in chunks whose sizes the input
 * also chooses. Every message the session sends back must be one complete
 * JSON object ending in "\r\n": a greeting, a return, an error or an event.
 *
 * The input may name any file, socket or URI in blockdev-add: a resolver
 * that claims every name (the empty prefix) refuses them all, so the fuzzer
 * reaches every argument check but never opens what the machine holds.
 * Likewise nbd-server-start and vhost-user-blk exports listen on nothing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "export.h"
#include "qmp.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(void *opaque, const char *msg, size_t len)
{
	json_object *o;
	int kinds;

	(void)opaque;
	if (len < 3 || msg[len - 2] != '\r' || msg[len - 1] != '\n' || memchr(msg, '\n', len - 1))
		abort();
	o = json_tokener_parse(msg);
	if (!o || !json_object_is_type(o, json_type_object))
		abort();
	kinds = json_object_object_get_ex(o, "return", NULL) +
		json_object_object_get_ex(o, "error", NULL) +
		json_object_object_get_ex(o, "QMP", NULL) +
		json_object_object_get_ex(o, "event", NULL);
	if (kinds != 1)
		abort();
	json_object_put(o);
}

static int refuse_open(const char *name, const struct vs_open_opts *opts, struct vs_node **out,
		       struct vs_error *err)
{
	(void)opts;
	(void)out;
	return vs_error_set(err, -EACCES, "Could not open '%s': the fuzzer opens nothing", name);
}

static const struct vs_image_resolver refuse_all = { .prefix = "", .open = refuse_open };

struct input {
	const uint8_t *data;
	size_t size;
};

static void run(void *arg)
{
	struct input *in = arg;
	struct qmp_session *s = qmp_session_new(check_reply, NULL);
	size_t off = 0, step;

	if (!s)
		abort();
	qmp_session_greet(s);
	/* The first byte picks the chunk size: framing across reads. */
	step = in->size ? (in->data[0] % 64) + 1 : 1;
	off = in->size ? 1 : 0;
	while (off < in->size) {
		size_t n = in->size - off < step ? in->size - off : step;

		if (qmp_session_feed(s, (const char *)in->data + off, n) < 0)
			break;
		off += n;
	}
	qmp_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	static bool init;

	if (!init) {
		init = true;
		if (vs_image_register_resolver(&refuse_all) < 0)
			abort();
		vd_export_refuse_addresses();
	}

	if (vs_run_in_coroutine(run, &in) < 0)
		abort();
	return 0;
}
