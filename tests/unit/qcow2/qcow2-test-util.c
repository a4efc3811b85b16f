/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "qcow2-test-util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "vstor/reactor.h"

char tmpdir[64];

void path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

int sh(const char *fmt, ...)
{
	char cmd[2048];
	int n;
	va_list ap;

	n = snprintf(cmd, sizeof(cmd), "cd %s && (", tmpdir);
	va_start(ap, fmt);
	n += vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
	va_end(ap);
	snprintf(cmd + n, sizeof(cmd) - (size_t)n, ") >/dev/null 2>&1");
	n = system(cmd);
	return WIFEXITED(n) ? WEXITSTATUS(n) : -1;
}

struct co_call {
	void (*fn)(void *);
	void *arg;
};

static void co_trampoline(void *arg)
{
	struct co_call *c = arg;

	c->fn(c->arg);
}

void in_co(void (*fn)(void *), void *arg)
{
	struct co_call c = { fn, arg };

	assert_int_equal(vs_run_in_coroutine(co_trampoline, &c), 0);
}

struct vs_node *open_img(const char *name, bool ro, struct vs_error *err)
{
	char p[128];
	struct vs_open_opts o = { 0 };
	struct vs_node *n = NULL;

	path(p, sizeof(p), name);
	o.filename = p;
	o.read_only = ro;
	if (vs_image_open(&n, &o, err) < 0)
		return NULL;
	return n;
}

int create_img(const char *name, uint64_t size, const char *opts, struct vs_error *err)
{
	char p[128], buf[512];
	struct vs_kv kv[16];
	size_t n = 0;
	char *save = NULL, *tok;

	path(p, sizeof(p), name);
	snprintf(buf, sizeof(buf), "%s", opts ? opts : "");
	for (tok = strtok_r(buf, ",", &save); tok && n < 16; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq)
			continue;
		*eq = 0;
		kv[n].key = tok;
		kv[n++].value = eq + 1;
	}
	return vs_image_create(p, "qcow2", size, kv, n, err);
}

int setup_tmp(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vstor-qcow2-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

int teardown_tmp(void **state)
{
	char cmd[128];

	(void)state;
	if (getenv("VSTOR_KEEP_TMP"))
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}
