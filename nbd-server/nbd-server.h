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
#include "vstor/node.h"

struct vs_nbd_server;

enum vs_nbd_discard {
	VS_NBD_DISCARD_IGNORE, /* TRIM succeeds and does nothing (qemu-nbd's default) */
	VS_NBD_DISCARD_UNMAP,
};

enum vs_nbd_detect_zeroes {
	VS_NBD_DETECT_ZEROES_OFF,
	VS_NBD_DETECT_ZEROES_ON,    /* an all-zero WRITE becomes WRITE_ZEROES */
	VS_NBD_DETECT_ZEROES_UNMAP, /* ... that may deallocate (if discard=unmap) */
};

struct vs_nbd_export_opts {
	const char *name;	 /* "" is the default export */
	const char *description; /* NULL for none */
	struct vs_node *node;	 /* borrowed; outlives the server */
	bool read_only;
	bool wce; /* advertise SEND_FLUSH/SEND_FUA (cache mode knob) */
	enum vs_nbd_discard discard;
	enum vs_nbd_detect_zeroes detect_zeroes;
};

struct vs_nbd_tls; /* nbd-tls.h */

enum vs_nbd_tls_mode {
	VS_NBD_TLS_OFF,	    /* STARTTLS refused */
	VS_NBD_TLS_ON,	    /* clients may upgrade */
	VS_NBD_TLS_REQUIRE, /* no export without TLS */
};

struct vs_nbd_server_opts {
	struct vs_nbd_tls *tls; /* borrowed credentials, NULL without TLS */
	enum vs_nbd_tls_mode tls_mode;
	unsigned max_connections; /* -e/--shared; 0 = unlimited */
	bool persistent;	  /* -t: keep serving after the last client leaves */
	unsigned max_requests;	  /* in flight per connection; 0 = default (64) */
};

/* Create a server on the calling thread's reactor. */
int vs_nbd_server_new(struct vs_nbd_server **out, const struct vs_nbd_server_opts *opts);

/* Add an export; names must be unique. */
int vs_nbd_server_add_export(struct vs_nbd_server *s, const struct vs_nbd_export_opts *opts,
			     struct vs_error *err);

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

/* True once vs_nbd_server_shutdown() has started. */
bool vs_nbd_server_is_shutting_down(const struct vs_nbd_server *s);

/* Free after shutdown (or if it never served). NULL is a no-op. */
void vs_nbd_server_free(struct vs_nbd_server *s);

/* The NBD wire error for a -errno. */
uint32_t vs_nbd_errno_to_wire(int err);

#endif
