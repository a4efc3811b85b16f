/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TLS for the NBD server, with GnuTLS: x509 certificates or PSK. A session
 * runs in coroutine context: GnuTLS calls our transport functions, which
 * park the coroutine on the ring until the socket has data, so GnuTLS's
 * blocking API never blocks the thread.
 */
#ifndef VSTOR_NBD_TLS_H
#define VSTOR_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "vstor/error.h"

struct vs_nbd_tls;
struct nbd_tls_session;

struct vs_nbd_tls_opts {
	const char *certificates_dir; /* ca-cert.pem, server-cert.pem, server-key.pem */
	const char *psk_file;	      /* psktool format: "username:hexkey" lines */
	bool verify_peer;	      /* x509: require a client certificate signed by the CA */
};

/* Load credentials. Exactly one of certificates_dir and psk_file. */
int vs_nbd_tls_new(struct vs_nbd_tls **out, const struct vs_nbd_tls_opts *opts,
		   struct vs_error *err);
void vs_nbd_tls_free(struct vs_nbd_tls *t);

/* Coroutine context: the server side of a TLS handshake on @fd. */
int nbd_tls_session_start(struct vs_nbd_tls *t, int fd, struct nbd_tls_session **out);
/* Coroutine context: read up to @len bytes; 0 at the end of the stream, or -errno. */
ssize_t nbd_tls_recv(struct nbd_tls_session *s, void *buf, size_t len);
/* Coroutine context: send every byte of @iov as one corked run of records. */
int nbd_tls_sendv(struct nbd_tls_session *s, const struct iovec *iov, int n);
/* Send close_notify (best effort) and free. NULL is a no-op. */
void nbd_tls_session_free(struct nbd_tls_session *s);

#endif
