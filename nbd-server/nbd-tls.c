/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * GnuTLS for the NBD server (a well-kept library beats a hand-written TLS
 * stack; nbdkit and QEMU use it too).
 */
#include "nbd-tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "vstor/reactor.h"

struct vs_nbd_tls {
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk;
	bool verify_peer;
};

struct nbd_tls_session {
	gnutls_session_t session;
	int fd;
};

int vs_nbd_tls_new(struct vs_nbd_tls **out, const struct vs_nbd_tls_opts *opts,
		   struct vs_error *err)
{
	struct vs_nbd_tls *t;
	int ret;

	if (!!opts->certificates_dir == !!opts->psk_file)
		return vs_error_set(
			err, -EINVAL,
			"TLS needs either --tls-certificates or --tls-psk (one of them)");
	t = calloc(1, sizeof(*t));
	if (!t)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	t->verify_peer = opts->verify_peer;
	if (opts->psk_file) {
		if (gnutls_psk_allocate_server_credentials(&t->psk) < 0)
			goto nomem;
		ret = gnutls_psk_set_server_credentials_file(t->psk, opts->psk_file);
		if (ret < 0) {
			vs_error_set(err, -EINVAL, "Cannot load TLS PSK file '%s': %s",
				     opts->psk_file, gnutls_strerror(ret));
			goto fail;
		}
	} else {
		char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];

		snprintf(ca, sizeof(ca), "%s/ca-cert.pem", opts->certificates_dir);
		snprintf(cert, sizeof(cert), "%s/server-cert.pem", opts->certificates_dir);
		snprintf(key, sizeof(key), "%s/server-key.pem", opts->certificates_dir);
		if (gnutls_certificate_allocate_credentials(&t->x509) < 0)
			goto nomem;
		ret = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
		if (ret < 0 && opts->verify_peer) {
			vs_error_set(err, -EINVAL, "Cannot load the CA certificate '%s': %s", ca,
				     gnutls_strerror(ret));
			goto fail;
		}
		ret = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			vs_error_set(err, -EINVAL,
				     "Cannot load the server certificate '%s' and key "
				     "'%s': %s",
				     cert, key, gnutls_strerror(ret));
			goto fail;
		}
	}
	*out = t;
	return 0;
nomem:
	vs_error_set(err, -ENOMEM, "Out of memory");
fail:
	vs_nbd_tls_free(t);
	return err ? err->code : -EINVAL;
}

void vs_nbd_tls_free(struct vs_nbd_tls *t)
{
	if (!t)
		return;
	if (t->x509)
		gnutls_certificate_free_credentials(t->x509);
	if (t->psk)
		gnutls_psk_free_server_credentials(t->psk);
	free(t);
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct nbd_tls_session *s = p;
	ssize_t n;

	do {
		n = vs_aio_recv(s->fd, buf, len, 0);
	} while (n == -EINTR || n == -EAGAIN);
	if (n < 0) {
		gnutls_transport_set_errno(s->session, (int)-n);
		return -1;
	}
	return n;
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
	struct nbd_tls_session *s = p;
	int ret = vs_aio_send_full(s->fd, buf, len);

	if (ret < 0) {
		gnutls_transport_set_errno(s->session, -ret);
		return -1;
	}
	return (ssize_t)len;
}

int nbd_tls_session_start(struct vs_nbd_tls *t, int fd, struct nbd_tls_session **out)
{
	struct nbd_tls_session *s = calloc(1, sizeof(*s));
	const char *prio = t->psk ? "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" : "NORMAL";
	int ret;

	if (!s)
		return -ENOMEM;
	s->fd = fd;
	if (gnutls_init(&s->session, GNUTLS_SERVER) < 0) {
		free(s);
		return -ENOMEM;
	}
	if (gnutls_priority_set_direct(s->session, prio, NULL) < 0)
		goto fail;
	if (t->psk)
		ret = gnutls_credentials_set(s->session, GNUTLS_CRD_PSK, t->psk);
	else
		ret = gnutls_credentials_set(s->session, GNUTLS_CRD_CERTIFICATE, t->x509);
	if (ret < 0)
		goto fail;
	if (t->x509 && t->verify_peer)
		gnutls_certificate_server_set_request(s->session, GNUTLS_CERT_REQUIRE);
	gnutls_transport_set_ptr(s->session, s);
	gnutls_transport_set_pull_function(s->session, tls_pull);
	gnutls_transport_set_push_function(s->session, tls_push);
	do {
		ret = gnutls_handshake(s->session);
	} while (ret < 0 && !gnutls_error_is_fatal(ret));
	if (ret < 0)
		goto fail;
	if (t->x509 && t->verify_peer) {
		unsigned status = 0;

		if (gnutls_certificate_verify_peers2(s->session, &status) < 0 || status)
			goto fail;
	}
	*out = s;
	return 0;
fail:
	gnutls_deinit(s->session);
	free(s);
	return -EACCES;
}

ssize_t nbd_tls_recv(struct nbd_tls_session *s, void *buf, size_t len)
{
	ssize_t n;

	do {
		n = gnutls_record_recv(s->session, buf, len);
	} while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	return n < 0 ? -EIO : n;
}

int nbd_tls_sendv(struct nbd_tls_session *s, const struct iovec *iov, int n)
{
	ssize_t r;

	gnutls_record_cork(s->session);
	for (int i = 0; i < n; i++) {
		const char *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			r = gnutls_record_send(s->session, p, left);
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				continue;
			if (r < 0) {
				(void)gnutls_record_uncork(s->session, 0);
				return -EIO;
			}
			p += r;
			left -= (size_t)r;
		}
	}
	do {
		r = gnutls_record_uncork(s->session, GNUTLS_RECORD_WAIT);
	} while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	return r < 0 ? -EIO : 0;
}

void nbd_tls_session_free(struct nbd_tls_session *s)
{
	if (!s)
		return;
	(void)gnutls_bye(s->session, GNUTLS_SHUT_WR);
	gnutls_deinit(s->session);
	free(s);
}
