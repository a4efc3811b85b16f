/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's I/O reactors and where nodes live: the threads (--reactors N),
 * the round-robin placement of exports and the home of every node an
 * export uses (its node and everything below it).
 */
#include "reactors.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "block.h"
#include "export.h"
#include "vstor/node.h"

#define MAX_REACTORS 256

struct home {
	const struct vs_node *node;
	int reactor;
	unsigned refs;
};

static struct vs_reactor *main_reactor;
static struct vs_reactor_thread *threads[MAX_REACTORS];
static unsigned nreactors = 1;
static unsigned next_rr;
static bool listening;

static pthread_mutex_t homes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct home *homes;
static unsigned nhomes, homes_cap;

unsigned vd_reactors_default(void)
{
	cpu_set_t set;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		return 1;
	return n > VD_REACTORS_DEFAULT_MAX ? VD_REACTORS_DEFAULT_MAX : (unsigned)n;
}

int vd_reactors_start(unsigned n)
{
	char name[16];
	int ret;

	main_reactor = vs_reactor_current();
	if (n < 1 || n > MAX_REACTORS)
		return -EINVAL;
	if (n == 1)
		return 0;
	/* Events and job ends are posted to main: it reads its mailbox when idle. */
	vs_reactor_listen(main_reactor, true);
	listening = true;
	for (unsigned i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "vstord-io%u", i);
		ret = vs_reactor_thread_start(&threads[i], name);
		if (ret < 0) {
			vd_reactors_stop();
			return ret;
		}
		nreactors = i + 1;
	}
	return 0;
}

void vd_reactors_stop(void)
{
	for (unsigned i = 0; i < MAX_REACTORS; i++) {
		if (threads[i]) {
			int ret = vs_reactor_thread_stop(threads[i]);

			if (ret < 0)
				fprintf(stderr, "vstord: reactor %u: %s\n", i, strerror(-ret));
			threads[i] = NULL;
		}
	}
	nreactors = 1;
	if (listening)
		vs_reactor_listen(main_reactor, false);
	listening = false;
	pthread_mutex_lock(&homes_lock);
	free(homes);
	homes = NULL;
	nhomes = homes_cap = 0;
	pthread_mutex_unlock(&homes_lock);
}

unsigned vd_reactor_count(void)
{
	return nreactors;
}

struct vs_reactor *vd_reactor_get(int i)
{
	/* Without vd_reactors_start() (the QMP fuzz target): the caller's one reactor. */
	if (!main_reactor)
		return vs_reactor_current();
	if (i < 0 || (unsigned)i >= nreactors || !threads[i])
		return main_reactor;
	return vs_reactor_thread_reactor(threads[i]);
}

bool vd_on_main(void)
{
	return !main_reactor || vs_reactor_current() == main_reactor;
}

int vd_reactor_run_on(int i, void (*fn)(void *), void *arg)
{
	return vs_reactor_call(vd_reactor_get(i), fn, arg);
}

int vd_reactor_post_main(void (*fn)(void *), void *arg)
{
	return vs_reactor_post(main_reactor, fn, arg);
}

/* ---- homes ---- */

static struct home *home_find(const struct vs_node *node)
{
	for (unsigned i = 0; i < nhomes; i++)
		if (homes[i].node == node)
			return &homes[i];
	return NULL;
}

int vd_node_home(const struct vs_node *node)
{
	const struct home *h;
	int r;

	if (nreactors == 1)
		return -1;
	pthread_mutex_lock(&homes_lock);
	h = home_find(node);
	r = h ? h->reactor : -1;
	pthread_mutex_unlock(&homes_lock);
	return r;
}

#define HOME_NONE (-3)
#define HOME_SPLIT (-2)

/* Homes @a and @b together: the one that is set, or HOME_SPLIT when they differ. */
static int home_merge(int a, int b)
{
	if (a == HOME_NONE)
		return b;
	if (b == HOME_NONE || a == b)
		return a;
	return HOME_SPLIT;
}

/*
 * The home of @node's chain (the node, its backing chain and, at any
 * depth, their files: a filter's source below its file too): a reactor,
 * -1 main, HOME_NONE or HOME_SPLIT.
 */
static int chain_home(const struct vs_node *node)
{
	int r = HOME_NONE;

	for (; node && r != HOME_SPLIT; node = vs_node_backing(node)) {
		const struct home *h = home_find(node);

		if (h)
			r = home_merge(r, h->reactor);
		if (vs_node_file(node) && r != HOME_SPLIT)
			r = home_merge(r, chain_home(vs_node_file(node)));
	}
	return r;
}

/* Room for @more entries. */
static bool homes_reserve(unsigned more)
{
	unsigned cap = homes_cap ? homes_cap : 16;
	struct home *n;

	while (cap < nhomes + more)
		cap *= 2;
	if (cap == homes_cap)
		return true;
	n = realloc(homes, cap * sizeof(*n));
	if (!n)
		return false;
	homes = n;
	homes_cap = cap;
	return true;
}

static void home_add(const struct vs_node *node, int reactor)
{
	struct home *h = home_find(node);

	if (h)
		h->refs++;
	else
		homes[nhomes++] = (struct home){ node, reactor, 1 };
}

static void home_drop(const struct vs_node *node)
{
	struct home *h = home_find(node);

	if (h && --h->refs == 0)
		*h = homes[--nhomes];
}

/* Calls @fn for @node and every node below it. */
static void chain_walk(const struct vs_node *node, void (*fn)(const struct vs_node *, int *),
		       int *arg)
{
	for (; node; node = vs_node_backing(node)) {
		fn(node, arg);
		if (vs_node_file(node))
			chain_walk(vs_node_file(node), fn, arg);
	}
}

static void walk_add(const struct vs_node *node, int *reactor)
{
	home_add(node, *reactor);
}

static void walk_count(const struct vs_node *node, int *n)
{
	(void)node;
	(*n)++;
}

/*
 * Drivers that keep a service coroutine on the reactor that opened the
 * node (blockdev-add: main) serve their requests there only.
 */
static void walk_main_bound(const struct vs_node *node, int *bound)
{
	static const char *const drivers[] = { "nbd", "iscsi", "rbd", NULL };
	const char *fmt = vs_node_format(node);

	for (unsigned i = 0; fmt && drivers[i]; i++)
		if (!strcmp(fmt, drivers[i]))
			*bound = 1;
}

static void walk_drop(const struct vs_node *node, int *unused)
{
	(void)unused;
	home_drop(node);
}

int vd_node_home_get(const struct vs_node *node, int want)
{
	int r, n = 0, bound = 0;

	if (nreactors == 1)
		return 0;
	pthread_mutex_lock(&homes_lock);
	r = chain_home(node);
	chain_walk(node, walk_count, &n);
	chain_walk(node, walk_main_bound, &bound);
	if (r == HOME_NONE && bound)
		r = -1;
	if (r == HOME_NONE && want != VD_REACTOR_ANY)
		r = want;
	if (r == HOME_SPLIT || (bound && r != -1) || (want != VD_REACTOR_ANY && r != want) ||
	    !homes_reserve((unsigned)n)) {
		pthread_mutex_unlock(&homes_lock);
		return -2;
	}
	if (r == HOME_NONE)
		r = (int)(next_rr++ % nreactors);
	chain_walk(node, walk_add, &r);
	pthread_mutex_unlock(&homes_lock);
	return r;
}

void vd_node_home_put(const struct vs_node *node)
{
	int none = 0;

	if (nreactors == 1)
		return;
	pthread_mutex_lock(&homes_lock);
	chain_walk(node, walk_drop, &none);
	pthread_mutex_unlock(&homes_lock);
}

/* ---- which reactor runs a command ---- */

/* The commands that work on the nodes (or exports) they name. */
static const char *const homed_commands[] = {
	"block_resize",
	"block_set_io_throttle",
	"block-commit",
	"block-dirty-bitmap-add",
	"block-dirty-bitmap-clear",
	"block-dirty-bitmap-disable",
	"block-dirty-bitmap-enable",
	"block-dirty-bitmap-merge",
	"block-dirty-bitmap-remove",
	"block-stream",
	"blockdev-backup",
	"blockdev-mirror",
	"blockdev-snapshot",
	"blockdev-snapshot-delete-internal-sync",
	"blockdev-snapshot-internal-sync",
	"blockdev-snapshot-sync",
	"drive-backup",
	"drive-mirror",
	"transaction",
	NULL,
};

/*
 * The commands that work on nodes and on vstord's tables (they add
 * exports and nodes): on main, every export drained.
 */
static const char *const drained_commands[] = { "checkpoint-add", "checkpoint-remove", NULL };

/* Of the homed ones, those that start a job. */
static const char *const job_commands[] = {
	"block-commit", "block-stream", "blockdev-backup", "blockdev-mirror", "drive-backup",
	"drive-mirror", NULL,
};

struct route {
	int reactor; /* -1: none named yet */
	const char *first, *other;
};

/* The home of what string @v names: a node, else an export's id. */
static void route_value(struct route *r, const char *v)
{
	const struct vd_node *n = vd_node_find(v);
	const struct vs_node *node = n ? n->node : vd_export_node(v);
	int home = node ? vd_node_home(node) : -1;

	if (home < 0)
		return;
	if (r->reactor < 0) {
		r->reactor = home;
		r->first = v;
	} else if (home != r->reactor && !r->other) {
		r->other = v;
	}
}

static void route_object(struct route *r, json_object *o, int depth)
{
	if (!o || depth > 4)
		return;
	if (json_object_is_type(o, json_type_string)) {
		route_value(r, json_object_get_string(o));
	} else if (json_object_is_type(o, json_type_object)) {
		json_object_object_foreach(o, key, val)
		{
			(void)key;
			route_object(r, val, depth + 1);
		}
	} else if (json_object_is_type(o, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(o); i++)
			route_object(r, json_object_array_get_idx(o, i), depth + 1);
	}
}

int vd_command_reactor(const char *name, json_object *args, struct vs_reactor **out, char *why,
		       size_t len)
{
	struct route r = { -1, NULL, NULL };
	unsigned i;

	*out = NULL;
	if (nreactors == 1 || !args)
		return 0;
	for (i = 0; drained_commands[i] && strcmp(drained_commands[i], name); i++)
		;
	if (drained_commands[i])
		return 1;
	for (i = 0; homed_commands[i] && strcmp(homed_commands[i], name); i++)
		;
	if (!homed_commands[i])
		return 0;
	route_object(&r, args, 0);
	if (r.other) {
		/* A job would run on one of them and touch the other. */
		for (i = 0; job_commands[i] && strcmp(job_commands[i], name); i++)
			;
		if (!job_commands[i])
			return 1;
		snprintf(why, len, "'%s' and '%s' run on different reactors", r.first, r.other);
		return -1;
	}
	if (r.reactor >= 0)
		*out = vd_reactor_get(r.reactor);
	return 0;
}
