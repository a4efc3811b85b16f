/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server library: exports of opened nodes, served to clients on the
 * calling thread's reactor (the export's home reactor). See docs/nbd.md.
 */
#ifndef VSTOR_NBD_SERVER_H
#define VSTOR_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "vstor/error.h"
#include "vstor/export.h"
#include "vstor/node.h"

struct vs_nbd_server;

struct vs_nbd_export_opts {
	const char *name;	 /* "" is the default export */
	const char *description; /* NULL for none */
	struct vs_node *node;	 /* borrowed; outlives the server */
	bool read_only;
	bool wce; /* advertise SEND_FLUSH/SEND_FUA (cache mode knob) */
	/* TRIM: ignore (succeeds and does nothing, qemu-nbd's default) or unmap */
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes; /* an all-zero WRITE becomes WRITE_ZEROES */
	/*
	 * Dirty bitmaps served as the meta contexts qemu:dirty-bitmap:NAME
	 * (names copied; at most VS_NBD_MAX_BITMAPS, no duplicates). Their
	 * state comes from @bitmap_status, or vs_node_bitmap_status() on
	 * @node when it is NULL; it must not yield.
	 */
	const char *const *bitmaps;
	unsigned nb_bitmaps;
	int (*bitmap_status)(void *opaque, const char *name, uint64_t offset, uint64_t len,
			     bool *dirty, uint64_t *run);
	void *bitmap_opaque;
};

#define VS_NBD_MAX_BITMAPS 60

struct vs_nbd_tls; /* nbd-tls.h */

enum vs_nbd_tls_mode {
	VS_NBD_TLS_OFF,	    /* STARTTLS refused */
	VS_NBD_TLS_ON,	    /* clients may upgrade */
	VS_NBD_TLS_REQUIRE, /* no export without TLS */
};

/* For the limits below that take 0 as "the default": no limit at all. */
#define VS_NBD_UNLIMITED UINT32_MAX

#define VS_NBD_DEFAULT_CONNECTION_LIMIT 100
#define VS_NBD_DEFAULT_HANDSHAKE_LIMIT 10 /* seconds */
#define VS_NBD_DEFAULT_REQUEST_TIMEOUT 30 /* seconds */
#define VS_NBD_DEFAULT_MAX_BUFFERED (256ull << 20)
#define VS_NBD_MIN_MAX_BUFFERED (64ull << 20) /* two requests of the largest size */

struct vs_nbd_server_opts {
	struct vs_nbd_tls *tls; /* borrowed credentials, NULL without TLS */
	enum vs_nbd_tls_mode tls_mode;
	/* -e/--shared: clients served at once, more wait in the backlog; 0 = unlimited */
	unsigned max_connections;
	/*
	 * Connections held at once, whatever -e says: one more is closed as
	 * soon as it is accepted. 0 = default (100).
	 */
	unsigned connection_limit;
	bool persistent;	  /* -t: keep serving after the last client leaves */
	unsigned max_requests;	  /* in flight per connection; 0 = default (64) */
	unsigned handshake_limit; /* seconds to reach the transmission phase; 0 = default (10) */
	/* Seconds a started request (header or payload) may go without a byte; 0 = default (30) */
	unsigned request_timeout;
	/*
	 * Server-wide bound on request and reply buffers; 0 = default (256 MiB),
	 * at least VS_NBD_MIN_MAX_BUFFERED. Each connection may also always use
	 * 1 MiB of its own, so no client can be starved by the others.
	 */
	uint64_t max_buffered;
	/*
	 * Coroutine context, on the server's reactor: called before the
	 * handshake lists or looks up the exports (NBD_OPT_LIST, NBD_OPT_INFO,
	 * NBD_OPT_GO, NBD_OPT_EXPORT_NAME), so the program may add and remove
	 * exports first (vstor-nbd --pool picks up new volumes). May yield;
	 * handshakes may call it concurrently. NULL: none.
	 */
	void (*refresh_exports)(void *opaque);
	void *refresh_opaque;
};

/* Create a server on the calling thread's reactor. */
int vs_nbd_server_new(struct vs_nbd_server **out, const struct vs_nbd_server_opts *opts);

/* Add an export; names must be unique. */
int vs_nbd_server_add_export(struct vs_nbd_server *s, const struct vs_nbd_export_opts *opts,
			     struct vs_error *err);

/*
 * Coroutine context. Remove the export named @name (NULL: "") while the
 * server runs: new clients no longer see it, its connected clients read no
 * more requests (those in flight finish and reply) and are disconnected,
 * then the node is flushed (unless read-only). When this returns nothing
 * reaches the node through the export any more. -ENOENT if there is none.
 */
int vs_nbd_server_remove_export(struct vs_nbd_server *s, const char *name, struct vs_error *err);

/*
 * Serve the export named @name on another reactor: @shard is a server made
 * with vs_nbd_server_new() on that reactor, with the same options and no
 * listeners or exports. A client's handshake stays on @s; once it chose the
 * export, its connection moves to @shard, whose reactor runs its requests
 * (and counts its buffers) until it ends. vs_nbd_server_export_clients()
 * on @shard, on its reactor, counts those. @shard is shut down, on its
 * reactor, before @s, and freed after it. -ENOENT if there is no export.
 */
int vs_nbd_server_set_export_shard(struct vs_nbd_server *s, const char *name,
				   struct vs_nbd_server *shard);

/*
 * Spread the export named @name over one more reactor: after
 * vs_nbd_server_set_export_shard() named its home, each added @shard (made
 * the same way, on another reactor) takes connections too: a new one goes
 * to the shard with the fewest of the export's connections, the home first
 * on a tie. So the protocol work of a multi-conn client (receiving, parsing, sending)
 * runs on several threads. The node-side part of each request on an added
 * shard (the export layer, the node) runs on the home reactor, through
 * vs_reactor_call(): the node keeps one thread. Removing the export evicts
 * its clients on every shard. -ENOENT: no export; -EINVAL: no home yet;
 * -EEXIST: already a shard of it; -ENOSPC: too many.
 */
int vs_nbd_server_add_export_shard(struct vs_nbd_server *s, const char *name,
				   struct vs_nbd_server *shard);

/* The clients connected to the export named @name (NULL: ""), past their handshake. */
unsigned vs_nbd_server_export_clients(const struct vs_nbd_server *s, const char *name);

/*
 * The export layer object of the export named @name (NULL: ""), for its
 * statistics (vs_export_get_stats()), resize and hooks; NULL if there is
 * none. Owned by the server.
 */
struct vs_export *vs_nbd_server_get_export(struct vs_nbd_server *s, const char *name);

/*
 * Start accepting on the listening socket @fd (the server takes it). Spawns
 * an acceptor coroutine. Any number of listeners may be added.
 */
int vs_nbd_server_add_listener(struct vs_nbd_server *s, int fd);

/* Serve one already-connected socket @fd (taken), e.g. a socketpair in tests. */
int vs_nbd_server_serve_fd(struct vs_nbd_server *s, int fd);

/*
 * Coroutine context. Stop: close the listeners, let in-flight requests
 * finish and their replies go out, close every connection, flush every
 * writable export. Returns the first flush error or 0.
 */
int vs_nbd_server_shutdown(struct vs_nbd_server *s);

/* True once the server has nothing more to do (non-persistent, last client gone). */
bool vs_nbd_server_finished(const struct vs_nbd_server *s);

/* Coroutine context: wait until vs_nbd_server_finished() becomes true. */
void vs_nbd_server_wait(struct vs_nbd_server *s);

/* Counters, for logs and tests. */
struct vs_nbd_server_stats {
	uint64_t accepted;	     /* connections served */
	uint64_t refused;	     /* closed at accept: over the connection limit */
	uint64_t handshake_timeouts; /* dropped: no export chosen in time */
	uint64_t request_timeouts;   /* dropped: a started request stopped arriving */
	uint64_t buffered;	     /* request and reply buffer bytes now */
	uint64_t buffered_peak;
};
void vs_nbd_server_get_stats(const struct vs_nbd_server *s, struct vs_nbd_server_stats *st);

/* True once vs_nbd_server_shutdown() has started. */
bool vs_nbd_server_is_shutting_down(const struct vs_nbd_server *s);

/* Free after shutdown (or if it never served). NULL is a no-op. */
void vs_nbd_server_free(struct vs_nbd_server *s);

/* The NBD wire error for a -errno. */
uint32_t vs_nbd_errno_to_wire(int err);

#endif
