/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server's insides, shared by its files: the limits, the server,
 * export, connection and request structures, and the functions one part
 * calls in another. nbd-server.c: errors, the server and its exports, time
 * limits and the memory bound, connections; nbd-send.c: connection I/O
 * (plain or TLS) and sending; nbd-requests.c: the transmission phase;
 * nbd-handshake.c: the option haggling. Not installed.
 */
#ifndef VSTOR_NBD_SERVER_INT_H
#define VSTOR_NBD_SERVER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "nbd-server.h"
#include "vstor/reactor.h"

#define NBD_MAX_PAYLOAD (32u << 20)    /* largest READ/WRITE we accept */
#define NBD_MAX_OPTION_LEN (64u << 10) /* option data we read; more is dropped */
#define NBD_MAX_OPTIONS 4096	       /* options per handshake */
#define NBD_DEFAULT_MAX_REQUESTS 64
#define NBD_MAX_BYTES_IN_FLIGHT (64u << 20)
#define NBD_MAX_EXTENTS 4096 /* descriptors per block-status reply */
#define NBD_PREFERRED_BLOCK 4096
#define NBD_SPARSE_READ_MIN (64u << 10) /* reads this large look for holes */
/*
 * Buffer bytes every connection may hold whatever the others do (and what
 * it may keep cached while the server is under memory pressure).
 */
#define NBD_CONN_RESERVE (1u << 20)
#define NBD_RBUF_SIZE (64u << 10) /* a connection's receive buffer */

/*
 * Meta contexts, as bits of nbd_conn.contexts; the wire id of a context is
 * its bit number plus one (base:allocation 1, qemu:allocation-depth 2, the
 * export's bitmap i: 3 + i).
 */
/* Reactors one export's connections can be spread over (vs_nbd_server_add_export_shard). */
#define NBD_MAX_SHARDS 64

#define CTX_BASE_ALLOCATION 1u
#define CTX_ALLOCATION_DEPTH 2u
#define CTX_BITMAP_SHIFT 2
#define CTX_BITMAP(i) (UINT64_C(1) << (CTX_BITMAP_SHIFT + (i)))
#define CTX_BITMAP_PREFIX "qemu:dirty-bitmap:"

struct nbd_export {
	struct vs_export *exp; /* the policy: read-only, discard, detect-zeroes, ranges, stats */
	const char *name;      /* vs_export_name(exp) */
	char *description;
	struct vs_node *node; /* vs_export_node(exp), for block status */
	bool read_only;	      /* vs_export_is_read_only(exp) */
	bool wce;
	char **bitmaps; /* served as qemu:dirty-bitmap:NAME */
	unsigned nb_bitmaps;
	int (*bitmap_status)(void *opaque, const char *name, uint64_t offset, uint64_t len,
			     bool *dirty, uint64_t *run);
	void *bitmap_opaque;
	/*
	 * Removed (vs_nbd_server_remove_export()): kept on the server's
	 * removed list while a handshake may still hold it; never served again.
	 */
	bool removed; /* atomic: a shard reads it */
	/*
	 * The servers on other reactors that serve its connections, none when
	 * @nshards is 0. shards[0] is its home, the reactor its node lives on;
	 * a connection goes to the one with the fewest of its connections (the
	 * home first on a tie), and the node-side part
	 * of a request on another one runs at home (nbd_on_home()).
	 */
	struct vs_nbd_server *shards[NBD_MAX_SHARDS];
	unsigned nshards;
	unsigned shard_conns[NBD_MAX_SHARDS]; /* its connections on each (the home reactor's count) */
	/*
	 * The export's port on each shard but the home, made at home for the
	 * first connection there (atomic pointers); vs_export_free() frees them.
	 */
	struct vs_export_port *ports[NBD_MAX_SHARDS];
	struct nbd_export *next;
};

struct nbd_conn;

struct nbd_req {
	struct nbd_conn *conn;
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint64_t len;
	void *buf;
	size_t cap;
	uint64_t accounted; /* bytes counted in bytes_in_flight */
	uint64_t charged;   /* reply memory counted in the buffered bytes while it runs */
	struct nbd_req *next_free;
};

/* A reply waiting to be sent: the iovecs (and what they point to) belong to its sender. */
struct nbd_out {
	struct iovec *iov;
	int niov;
	int ret;
	bool done;
	struct vs_co *co;
	struct nbd_out *next;
};

struct nbd_conn {
	struct vs_nbd_server *srv;
	/* Where its export's node lives, when not on this connection's reactor. */
	struct vs_reactor *home;
	/* Then: the export's port on this reactor (reads and writes), or NULL. */
	struct vs_export_port *port;
	int fd;
	struct nbd_export *exp;
	bool structured;
	bool extended;
	bool no_zeroes;
	bool fixed;
	struct nbd_tls_session *tls; /* after STARTTLS */
	/*
	 * Receive buffer: one recv takes whatever the client has sent, so a
	 * burst of pipelined request headers costs one SQE, not one each.
	 */
	uint8_t *rbuf;
	size_t rpos, rlen;
	uint64_t contexts; /* CTX_* negotiated for the export in ctx_export */
	char *ctx_export;  /* export the contexts were set for */
	bool dead;	   /* a send failed or the client left: stop reading */
	bool evicted;	   /* its export was removed: read no more requests */
	struct vs_co_mutex send_lock;
	/*
	 * Replies queued for the sender coroutine, which sends everything that
	 * queued up while it was busy in one sendmsg: under load, the replies
	 * of one loop turn cost one SQE and one wakeup of the client.
	 */
	struct nbd_out *out_head, **out_tail;
	bool sending;
	unsigned in_flight;
	uint64_t bytes_in_flight;
	struct vs_co_queue slot_wait;  /* reader waits for a free slot */
	struct vs_co_queue drain_wait; /* reader waits for in-flight to end */
	struct nbd_req *free_reqs;
	struct vs_co *reader;
	/*
	 * Buffer bytes this connection holds (request buffers in use or cached,
	 * reply memory of requests running), part of the server's total.
	 */
	uint64_t buffered;
	bool mem_waiting; /* the reader waits for the server's memory bound */
	/* Time limits: the watchdog shuts the socket down after the deadline. */
	bool in_handshake;
	uint64_t deadline;   /* CLOCK_MONOTONIC ns, 0 = none */
	uint64_t refresh_ns; /* a received byte moves the deadline this far ahead */
	struct nbd_conn *next;
};

struct nbd_listener {
	struct vs_nbd_server *srv;
	int fd;
	struct vs_co *co;
	bool closed;
	struct nbd_listener *next;
};

struct vs_nbd_server {
	struct vs_reactor *reactor;
	struct vs_nbd_server_opts opts;
	struct nbd_export *exports;
	struct nbd_export *removed; /* removed exports a handshake may still hold */
	struct nbd_listener *listeners;
	struct nbd_conn *conns;
	unsigned nconns;
	unsigned forwarded; /* of them, moved to an export's shard */
	unsigned served;    /* connections ever accepted */
	bool shutting_down;
	bool finished;
	unsigned listeners_alive;
	struct vs_co_queue accept_wait;	   /* acceptors wait for a connection slot */
	struct vs_co_queue idle_wait;	   /* shutdown waits for connections to end */
	struct vs_co_queue finish_wait;	   /* vs_nbd_server_wait() */
	uint64_t buffered;		   /* sum of the connections' buffered bytes */
	unsigned mem_waiters;		   /* readers waiting for the memory bound */
	uint64_t handshake_ns, request_ns; /* the time limits, 0 = none */
	struct vs_co *watchdog;		   /* alive while connections have deadlines */
	struct vs_nbd_server_stats stats;
};

/* nbd-server.c */
int nbd_export_bitmap_status(const struct nbd_export *e, unsigned i, uint64_t offset, uint64_t len,
			     bool *dirty, uint64_t *run);
struct nbd_export *nbd_find_export(struct vs_nbd_server *s, const char *name, size_t len);
uint16_t nbd_export_flags(struct vs_nbd_server *s, const struct nbd_export *e);
uint64_t nbd_now_ns(void);
void nbd_conn_expect_bytes(struct nbd_conn *c, uint64_t ns);
void nbd_conn_account(struct nbd_conn *c, int64_t delta);
bool nbd_conn_may_take(struct nbd_conn *c, uint64_t extra);
bool nbd_conn_may_cache(const struct nbd_conn *c);
void nbd_server_trim_caches(struct vs_nbd_server *s);
int nbd_on_home(struct nbd_conn *c, vs_co_fn *fn, void *arg);

/* nbd-send.c */
int nbd_conn_recv_full(struct nbd_conn *c, void *buf, size_t len);
int nbd_conn_send_buf(struct nbd_conn *c, const void *buf, size_t len);
int nbd_conn_send(struct nbd_conn *c, struct iovec *iov, int n);
int nbd_conn_reply(struct nbd_conn *c, struct iovec *iov, int n);
int nbd_opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len);
int nbd_opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
size_t nbd_chunk_header(struct nbd_conn *c, uint8_t *hdr, uint16_t flags, uint16_t type,
			uint64_t cookie, uint64_t offset, uint64_t len);
int nbd_send_status(struct nbd_req *r, int err);

/* nbd-requests.c */
int nbd_drain_payload(struct nbd_conn *c, uint64_t len);
void nbd_conn_transmission(struct nbd_conn *c);

/* nbd-handshake.c */
int nbd_conn_handshake(struct nbd_conn *c);

#endif
