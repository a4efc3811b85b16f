/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Exports: what a protocol server (NBD, vhost-user-blk, later vstord's
 * exports) does to the node it serves, held in one place.
 *
 * An export is a view of an open node with a policy: read-only, write
 * cache (writethrough makes every write FUA), discard (ignore or unmap),
 * detect-zeroes (an all-zero write becomes write-zeroes), the range a client
 * may address, per-operation statistics, and hooks for throttling, dirty
 * tracking and resize. The protocol servers only translate their wire format
 * into vs_export_request() and its result back into wire codes, as nbdkit's
 * server/backend.c and QEMU's block/export/ do for their servers.
 *
 * All request functions run in coroutine context (see reactor.h) on the
 * node's reactor and return 0 or -errno. Requests allocate nothing: the
 * payload iovecs go to the node as they are.
 */
#ifndef VSTOR_EXPORT_H
#define VSTOR_EXPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vs_node;
struct vs_export;

/* The data operations every protocol maps its requests to. */
enum vs_export_op {
	VS_EXPORT_OP_READ,
	VS_EXPORT_OP_WRITE,
	VS_EXPORT_OP_FLUSH,
	VS_EXPORT_OP_DISCARD,
	VS_EXPORT_OP_WRITE_ZEROES,
	VS_EXPORT_OP_COUNT,
};

/* What a discard (NBD TRIM, virtio-blk DISCARD) does. */
enum vs_export_discard {
	VS_EXPORT_DISCARD_IGNORE, /* succeeds and does nothing (qemu-nbd's default) */
	VS_EXPORT_DISCARD_UNMAP,  /* deallocates; write-zeroes may deallocate too */
};

/* Whether all-zero writes are detected (QEMU's detect-zeroes). */
enum vs_export_detect_zeroes {
	VS_EXPORT_DETECT_ZEROES_OFF,
	VS_EXPORT_DETECT_ZEROES_ON,    /* an all-zero write becomes write-zeroes */
	VS_EXPORT_DETECT_ZEROES_UNMAP, /* ... that may deallocate (if discard=unmap) */
};

/* Flags of vs_export_request(). */
#define VS_EXPORT_FUA 0x1	  /* write, write-zeroes, discard: durable on completion */
#define VS_EXPORT_MAY_UNMAP 0x2	  /* write-zeroes: may deallocate (if discard=unmap) */
#define VS_EXPORT_NO_FALLBACK 0x4 /* write-zeroes: -ENOTSUP rather than writing zeroes */

/*
 * Hooks for the layers above (throttling, dirty bitmaps, resize), all
 * optional (NULL), all called with @opaque on the export's reactor.
 */
struct vs_export_hooks {
	/*
	 * Coroutine context. Called before each request that passed the range
	 * and read-only checks, before it reaches the node. May yield (a
	 * throttle delays the request) or return -errno to fail it (counted as
	 * an error of @op). Return 0 to let it run.
	 */
	int (*before_request)(void *opaque, enum vs_export_op op, uint64_t offset, uint64_t len);
	/*
	 * After a write, write-zeroes or a discard that reached the node
	 * succeeded: [@offset, @offset + @len) may have changed (dirty tracking).
	 * Not called for an ignored discard. Must not yield.
	 */
	void (*after_write)(void *opaque, enum vs_export_op op, uint64_t offset, uint64_t len);
	/* After vs_export_resize(): the new size that range checks now use. */
	void (*resized)(void *opaque, uint64_t size);
	void *opaque;
};

struct vs_export_opts {
	const char *name;     /* copied; NULL is "" */
	struct vs_node *node; /* borrowed; outlives the export */
	bool read_only;	      /* writes fail -EPERM (also when the node is read-only) */
	bool writethrough;    /* writes and write-zeroes are FUA (the write cache is off) */
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes;
	/*
	 * The unit the protocol addresses (virtio-blk: 512): the size clients
	 * see is the node's size rounded down to it. 0 or 1: bytes.
	 */
	uint32_t block_size;
	const struct vs_export_hooks *hooks; /* copied; NULL for none */
};

/* Create an export of @opts->node. Returns 0 or -errno (-EINVAL, -ENOMEM). */
int vs_export_new(struct vs_export **out, const struct vs_export_opts *opts);

/* Free @e (its node stays open). NULL is a no-op. */
void vs_export_free(struct vs_export *e);

/* Accessors. */
const char *vs_export_name(const struct vs_export *e);
struct vs_node *vs_export_node(const struct vs_export *e);
uint64_t vs_export_size(const struct vs_export *e); /* the size clients see */
bool vs_export_is_read_only(const struct vs_export *e);
enum vs_export_discard vs_export_discard_mode(const struct vs_export *e);
enum vs_export_detect_zeroes vs_export_detect_zeroes_mode(const struct vs_export *e);
bool vs_export_writethrough(const struct vs_export *e);

/* Turn the write cache off (@on) or on, e.g. when a guest toggles it (virtio CONFIG_WCE). */
void vs_export_set_writethrough(struct vs_export *e, bool on);

/*
 * Check a request without running it, for protocols that must answer
 * before reading a payload (NBD): -EPERM for a write, write-zeroes or
 * discard on a read-only export, -EINVAL for a range outside the export.
 * Flush has no range and is always allowed.
 */
int vs_export_check(const struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len);

/*
 * Coroutine context. Run one request: vs_export_check(), the
 * before_request hook, the policy (writethrough, discard mode,
 * detect-zeroes), the node call, the after_write hook and the statistics.
 * @iov/@niov hold @len bytes for reads and writes (unused otherwise);
 * @flags are VS_EXPORT_* flags. A zero-length request is checked and
 * counted but does not reach the node (a discard with FUA still flushes).
 * Returns 0 or -errno.
 */
int vs_export_request(struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len,
		      struct iovec *iov, int niov, unsigned flags);

/*
 * For a request the protocol runs in several node calls (an NBD structured
 * read that skips holes): vs_export_begin() checks it and runs the
 * before_request hook, and on success the protocol does the I/O on
 * vs_export_node() and calls vs_export_end() with its result. A failed
 * begin is already counted; end is not called then.
 */
struct vs_export_span {
	enum vs_export_op op;
	uint64_t offset, len;
	uint64_t start_ns;
};
int vs_export_begin(struct vs_export *e, enum vs_export_op op, uint64_t offset, uint64_t len,
		    struct vs_export_span *span);
void vs_export_end(struct vs_export *e, const struct vs_export_span *span, int ret);

/*
 * The node was resized to @node_size bytes (by whoever resized it): range
 * checks follow from now on and the resized hook is told the size clients
 * see.
 */
void vs_export_resize(struct vs_export *e, uint64_t node_size);

/* Latency buckets: bucket i counts requests of [2^i, 2^(i+1)) µs; 0 also < 1 µs. */
#define VS_EXPORT_LATENCY_BUCKETS 24

struct vs_export_op_stats {
	uint64_t ops;	 /* requests, failed ones included */
	uint64_t bytes;	 /* bytes of the successful ones */
	uint64_t errors; /* requests that failed (check, hook or node) */
	uint64_t latency_us[VS_EXPORT_LATENCY_BUCKETS];
};

struct vs_export_stats {
	struct vs_export_op_stats op[VS_EXPORT_OP_COUNT];
};

/*
 * Coroutine context. A change of the graph under an export (an external
 * snapshot, a pivot): drain_begin holds new requests at the export's entry
 * and returns once those in it have finished; vs_export_set_node() points
 * the export at another node (borrowed, of the same size), and drain_end
 * lets the held requests run, on the new node. Drains nest: the requests
 * run again after the last drain_end.
 */
void vs_export_drain_begin(struct vs_export *e);
void vs_export_drain_end(struct vs_export *e);
void vs_export_set_node(struct vs_export *e, struct vs_node *node);

/*
 * Throttling: the export's reads, writes and write-zeroes wait for the
 * budget of @g (vstor/throttle.h; flush and discard are not throttled, as in
 * QEMU) after the range checks and before the before_request hook. The
 * export takes a reference; NULL removes throttling. Takes effect on the
 * next request; the export's requests waiting in its previous group run at
 * once. vs_export_drain_begin() lets waiting requests through too (as
 * QEMU's drain does), so a graph change never waits for the budget.
 */
struct vs_throttle_group;
void vs_export_set_throttle(struct vs_export *e, struct vs_throttle_group *g);
/* The group set, or NULL (borrowed). */
struct vs_throttle_group *vs_export_throttle(const struct vs_export *e);

/*
 * Error policy, as QEMU's werror/rerror: what a failed node call of a read
 * (rerror) or of any other operation (werror) does. Checks that refuse a
 * request (range, read-only) are not node errors and always fail it.
 */
enum vs_export_error_action {
	VS_EXPORT_ERROR_REPORT, /* the request fails (the default) */
	VS_EXPORT_ERROR_STOP,	/* the export stops: the request is held, retried on resume */
	VS_EXPORT_ERROR_ENOSPC, /* stop on -ENOSPC, report the rest */
};

struct vs_export_error_policy {
	enum vs_export_error_action read, write;
	/*
	 * Optional: told of every node error under this policy, with the
	 * action taken (REPORT or STOP), before the request fails or is held.
	 * Must not yield.
	 */
	void (*on_error)(void *opaque, enum vs_export_op op, int err,
			 enum vs_export_error_action action);
	void *opaque;
};

/* Set the policy (copied; NULL: report everything). Held requests stay held. */
void vs_export_set_error_policy(struct vs_export *e, const struct vs_export_error_policy *p);

/*
 * Stopped by an error: requests that failed wait to be retried and new
 * ones wait at the entry (neither counts as in flight for a drain). Their
 * number is bounded by what the protocol server lets a client have in
 * flight. vs_export_resume() retries the held requests and lets the others
 * in; a request that fails again applies the policy again.
 */
bool vs_export_is_stopped(const struct vs_export *e);
void vs_export_resume(struct vs_export *e);

/*
 * Coroutine context. For vs_export_begin()/vs_export_end() users: the node
 * I/O of @span failed with @ret (< 0). Applies the error policy: returns
 * true once the export was resumed (run the I/O again, then end), false
 * when the error is to be reported (end with it).
 */
bool vs_export_retry(struct vs_export *e, const struct vs_export_span *span, int ret);

/* "report", "stop", "enospc"; NULL for an unknown @a. */
const char *vs_export_error_action_name(enum vs_export_error_action a);
/* Parse one of those names: 0 or -EINVAL. */
int vs_export_error_action_parse(const char *s, enum vs_export_error_action *out);

/* Copy the counters since the export was created into @st. */
void vs_export_get_stats(const struct vs_export *e, struct vs_export_stats *st);

/*
 * Ports: the export served on another reactor than its node's home (one
 * disk over several cores). A port takes requests on its reactor; reads
 * and writes of bytes whose place in a file is fixed (a raw image; the
 * allocated, unshared clusters of a qcow2 image) go from there straight to
 * the file, the rest run at home by a call (vs_reactor_call) as
 * vs_export_request(). Where the bytes lie is asked of the home once per
 * window of the disk, and revoked by the home before anything moves them
 * (libstore/direct.h). Drains, stops, throttles, bitmaps and hooks send
 * every request home while they last.
 *
 * vs_export_port_new/free: at home, coroutine context; a port is freed
 * before its export, and only once no request uses it.
 * vs_export_port_request: on the port's reactor, coroutine context; the
 * same contract as vs_export_request().
 */
struct vs_reactor;
struct vs_export_port;
int vs_export_port_new(struct vs_export *e, struct vs_reactor *r, struct vs_export_port **out);
void vs_export_port_free(struct vs_export_port *p);
int vs_export_port_request(struct vs_export_port *p, enum vs_export_op op, uint64_t offset,
			   uint64_t len, struct iovec *iov, int niov, unsigned flags);
/*
 * On the port's reactor: read [offset, offset+len) straight from the file
 * if the port's windows map all of it (so it has no hole either), else do
 * nothing and return false.
 */
bool vs_export_port_read_direct(struct vs_export_port *p, uint64_t offset, uint64_t len,
				struct iovec *iov, int niov);

struct vs_export_port_stats {
	uint64_t direct;  /* requests that went straight to the file */
	uint64_t home;	  /* requests that ran at home */
	uint64_t windows; /* windows the home mapped for it */
};
/* Any thread: the counters of @p (relaxed). */
void vs_export_port_get_stats(const struct vs_export_port *p, struct vs_export_port_stats *st);
/* At home: the sum over @e's ports; false when it has none. */
bool vs_export_get_port_stats(const struct vs_export *e, struct vs_export_port_stats *st);

/* "read", "write", "flush", "discard", "write-zeroes"; NULL for an unknown @op. */
const char *vs_export_op_name(enum vs_export_op op);

/* Parse a mode as the --discard / --detect-zeroes options spell it: 0 or -EINVAL. */
int vs_export_discard_parse(const char *s, enum vs_export_discard *out);
int vs_export_detect_zeroes_parse(const char *s, enum vs_export_detect_zeroes *out);
/* "off", "on", "unmap" (as QEMU's detect_zeroes); NULL for an unknown @mode. */
const char *vs_export_detect_zeroes_name(enum vs_export_detect_zeroes mode);

#ifdef __cplusplus
}
#endif

#endif
