/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's reactors (--reactors N). The main reactor keeps the monitors,
 * the tables and the state file. N = 1: the one I/O reactor, index 0, is
 * the main one (no thread, as before --reactors). N > 1: N I/O reactor
 * threads, indexes 0..N-1, run the exports' data path. A node is homed on
 * the reactor of the exports that use it; what touches a homed node runs
 * there (vd_reactor_run_on). The home table is under a lock: any thread.
 */
#ifndef VSTORD_REACTORS_H
#define VSTORD_REACTORS_H

#include <stdbool.h>
#include <stddef.h>

#include "vstor/reactor.h"

struct vs_node;

/*
 * The default number of I/O reactors: one per CPU the process may run on
 * (its affinity mask, else the CPUs online), at most VD_REACTORS_DEFAULT_MAX.
 */
#define VD_REACTORS_DEFAULT_MAX 8
unsigned vd_reactors_default(void);

/* Start @n I/O reactors (1: the main one, no thread). 0 or -errno. */
int vd_reactors_start(unsigned n);
/* Stop and join them (after the exports are gone). */
void vd_reactors_stop(void);

/* How many I/O reactors (--reactors). */
unsigned vd_reactor_count(void);
/* I/O reactor @i; -1: the main reactor. */
struct vs_reactor *vd_reactor_get(int i);
/* Whether the caller runs on the main reactor (any thread). */
bool vd_on_main(void);

/*
 * Coroutine context: run @fn(@arg) on reactor @i and wait for it (inline
 * when that is the caller's). 0, or -errno when the reactor is gone.
 */
int vd_reactor_run_on(int i, void (*fn)(void *), void *arg);
/* Any thread: run @fn(@arg) on the main reactor, later (events, job state). */
int vd_reactor_post_main(void (*fn)(void *), void *arg);

/*
 * The I/O reactor @node is homed on (the one of the exports that use it
 * or a node above it); -1 when none does, or with one reactor: main.
 */
int vd_node_home(const struct vs_node *node);

/*
 * Home @node and the nodes below it for one more export: on the reactor
 * they already have, else on @want (VD_REACTOR_ANY: the next one, round
 * robin); on
 * main (-1) when a node of the chain has a driver whose service coroutine
 * stays there (nbd, iscsi, rbd). Returns the reactor index or -1 (main),
 * or -2 when the chain is split between two reactors already, or its home
 * differs from @want (the export is refused).
 */
#define VD_REACTOR_ANY (-3)
int vd_node_home_get(const struct vs_node *node, int want);
/* One export of @node less: its chain goes home to main when none is left. */
void vd_node_home_put(const struct vs_node *node);

/*
 * Where command @name with @args runs: the home reactor of the nodes (or
 * exports) it names when it is one that works on a node (block_resize,
 * snapshots, bitmaps, block jobs' start, transactions, throttling), else
 * main (*@out NULL); 0. When it names nodes homed on two reactors, or
 * works on the tables too (checkpoint-add/remove): 1, to run on main with
 * every export drained; -1 with @why when it would start a job on nodes
 * of two reactors.
 */
struct json_object;
int vd_command_reactor(const char *name, struct json_object *args, struct vs_reactor **out,
		       char *why, size_t len);

#endif
