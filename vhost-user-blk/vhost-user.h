/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vhost-user-blk back end: serves one opened image node to a vhost-user
 * front end (QEMU's vhost-user-blk-pci device, or any VMM) over a unix
 * socket, on the calling thread's reactor (the export's home reactor).
 * One front end is served at a time; when it goes away the back end waits
 * for the next one, as qemu-storage-daemon does. Connections are accepted
 * at once (up to a limit) and the device goes to the first one that sends a
 * message, so a socket that only connects never keeps a front end out; a
 * connection that has not sent VHOST_USER_SET_OWNER within the handshake
 * limit is dropped. See docs/vhost.md.
 */
#ifndef VSTOR_VHOST_USER_H
#define VSTOR_VHOST_USER_H

#include <stdbool.h>
#include <stdint.h>

#include "vstor/export.h"
#include "vstor/node.h"

struct vs_vhost_blk;

struct vs_vhost_blk_opts {
	struct vs_node *node; /* borrowed; outlives the back end */
	bool read_only;	      /* VIRTIO_BLK_F_RO; writes fail */
	bool wce;	      /* the guest starts with a volatile write cache (cache mode knob) */
	bool discard;	      /* offer VIRTIO_BLK_F_DISCARD (punches holes) */
	/* An all-zero write becomes write-zeroes (unmap: deallocating if discard) */
	enum vs_export_detect_zeroes detect_zeroes;
	bool write_zeroes;   /* offer VIRTIO_BLK_F_WRITE_ZEROES */
	unsigned num_queues; /* 1..VS_VHOST_BLK_MAX_QUEUES; 0 = 1 */
	const char *serial;  /* VIRTIO_BLK_T_GET_ID answer (20 bytes at most); NULL: "vstor" */
	bool verbose;	     /* log connections and per-connection counters on stderr */
	bool quiet;	     /* do not log front-end errors either (fuzzing) */
	/* Connections held at once (the one served and those waiting); 0 = default (16) */
	unsigned max_connections;
	/* Seconds from accept to SET_OWNER; 0 = default (10), VS_VHOST_BLK_UNLIMITED = none */
	unsigned handshake_limit;
	/*
	 * Queue i runs on queue_reactors[i % nb_queue_reactors] (its kick
	 * coroutine, the chains, the used ring and the call eventfd), each a
	 * reactor thread that outlives the back end; the node calls of its
	 * requests run on the back end's own reactor, where the node lives
	 * (vs_reactor_call). 0: every queue on the back end's reactor.
	 */
	struct vs_reactor *const *queue_reactors;
	unsigned nb_queue_reactors; /* at most VS_VHOST_BLK_MAX_QUEUES */
};

#define VS_VHOST_BLK_UNLIMITED 0xffffffffu
#define VS_VHOST_BLK_DEFAULT_MAX_CONNECTIONS 16
#define VS_VHOST_BLK_DEFAULT_HANDSHAKE_LIMIT 10

#define VS_VHOST_BLK_MAX_QUEUES 64

/* Counters since the back end was created. */
struct vs_vhost_blk_stats {
	uint64_t connections;
	uint64_t refused;	     /* closed at accept: over the connection limit */
	uint64_t handshake_timeouts; /* dropped: no SET_OWNER within the limit */
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t io_errors;   /* requests answered VIRTIO_BLK_S_IOERR */
	uint64_t unsupported; /* requests answered VIRTIO_BLK_S_UNSUPP */
	uint64_t bad_chains;  /* malformed descriptor chains returned unprocessed */
};

/* Create a back end on the calling thread's reactor. Returns 0 or -errno. */
int vs_vhost_blk_new(struct vs_vhost_blk **out, const struct vs_vhost_blk_opts *opts);

/*
 * Accept front ends on the listening unix socket @fd (taken); one is served
 * at a time. Spawns the acceptor coroutine.
 */
int vs_vhost_blk_add_listener(struct vs_vhost_blk *b, int fd);

/* Serve one connected socket @fd (taken), e.g. a socketpair in tests. */
int vs_vhost_blk_serve_fd(struct vs_vhost_blk *b, int fd);

/*
 * Coroutine context. Stop: close the listener, stop the rings (requests in
 * flight complete), drop the front end and flush the node unless read-only.
 * Returns the flush's result.
 */
int vs_vhost_blk_shutdown(struct vs_vhost_blk *b);

/* Coroutine context: wait until no connection is being served. */
void vs_vhost_blk_wait_idle(struct vs_vhost_blk *b);

/*
 * Tell the front end that the device's config space changed (after
 * vs_export_resize(): the capacity): VHOST_USER_BACKEND_CONFIG_CHANGE_MSG
 * on the back-end channel, so a guest sees the new capacity at once.
 * -ENOTCONN when no front end with that channel (PROTOCOL_F_BACKEND_REQ
 * and F_CONFIG) is served; it reads the new capacity on its next GET_CONFIG.
 */
int vs_vhost_blk_config_changed(struct vs_vhost_blk *b);

/* Whether a front end is being served now (block-export-del's safe mode). */
bool vs_vhost_blk_connected(const struct vs_vhost_blk *b);

void vs_vhost_blk_get_stats(const struct vs_vhost_blk *b, struct vs_vhost_blk_stats *st);

/*
 * The export layer object under the device, for its per-operation
 * statistics (vs_export_get_stats()), resize and hooks. Owned by @b.
 */
struct vs_export *vs_vhost_blk_get_export(struct vs_vhost_blk *b);

/* Free after shutdown (or if it never served). NULL is a no-op. */
void vs_vhost_blk_free(struct vs_vhost_blk *b);

#endif
