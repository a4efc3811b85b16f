/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP monitors on unix sockets (see monitor.h).
 */
#include "monitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "qmp.h"
#include "reactors.h"
#include "vstor/reactor.h"

/* How long a closing monitor waits for its clients to take their last replies. */
#define MONITOR_DRAIN_NS (2ull * 1000 * 1000 * 1000)
#define MONITOR_DRAIN_STEP_NS (10ull * 1000 * 1000)
/* How long, and how much, a client's input is read and dropped after a fatal error. */
#define MONITOR_LINGER_NS (1000ull * 1000 * 1000)
#define MONITOR_LINGER_BYTES (64u << 20)

struct out_msg {
	struct out_msg *next;
	size_t len;
	char data[];
};

struct client {
	struct monitor *mon;
	struct client *next;
	int fd;
	struct qmp_session *qmp;
	struct out_msg *head, *tail;
	size_t out_bytes;
	struct vs_co_queue out_wait; /* the writer, waiting for messages */
	struct vs_co_queue writer_exit;
	bool closing;	/* no more input is read; the writer drains and stops */
	bool lingering; /* closing after an error reply: keep reading a while */
	bool writer_running;
};

struct monitor {
	struct monitor *next;
	int fd;
	char *path; /* the socket file this monitor created, NULL if passed in */
	struct vs_co *acceptor;
	bool stopping;
	bool acceptor_running;
	struct client *clients;
	unsigned nclients;
};

static struct monitor *monitors;

/* ---- the outbox ---- */

/* Shut the connection down: the reader's recv returns 0, the writer's send fails. */
static void client_kill(struct client *c)
{
	c->closing = true;
	shutdown(c->fd, SHUT_RDWR);
	vs_co_queue_wake_all(&c->out_wait);
}

static void client_queue(struct client *c, const char *msg, size_t len)
{
	struct out_msg *m;

	if (c->closing && !c->writer_running)
		return;
	if (c->out_bytes + len > MONITOR_MAX_OUTBOX) {
		fprintf(stderr, "vstord: monitor client dropped: it reads too slowly\n");
		client_kill(c);
		return;
	}
	m = malloc(sizeof(*m) + len);
	if (!m) {
		client_kill(c);
		return;
	}
	m->next = NULL;
	m->len = len;
	memcpy(m->data, msg, len);
	if (c->tail)
		c->tail->next = m;
	else
		c->head = m;
	c->tail = m;
	c->out_bytes += len;
	vs_co_queue_wake_one(&c->out_wait);
}

static void client_send(void *opaque, const char *msg, size_t len)
{
	client_queue(opaque, msg, len);
}

static void client_writer(void *arg)
{
	struct client *c = arg;

	for (;;) {
		struct out_msg *m = c->head;

		if (!m) {
			if (c->closing)
				break;
			vs_co_queue_wait(&c->out_wait);
			continue;
		}
		int ret = vs_aio_send_full(c->fd, m->data, m->len);

		c->head = m->next;
		if (!c->head)
			c->tail = NULL;
		c->out_bytes -= m->len;
		free(m);
		if (ret < 0) {
			client_kill(c);
			break;
		}
	}
	while (c->head) {
		struct out_msg *m = c->head;

		c->head = m->next;
		free(m);
	}
	c->tail = NULL;
	c->out_bytes = 0;
	c->writer_running = false;
	/*
	 * The reader may still wait in recv (the monitor is closing): wake it.
	 * A lingering reader reads on: the client sees EOF after the reply.
	 */
	shutdown(c->fd, c->lingering ? SHUT_WR : SHUT_RDWR);
	vs_co_queue_wake_all(&c->writer_exit);
}

/* ---- clients ---- */

/*
 * After an error that ends the connection (a message too large), read and
 * drop what the client still sends, for a bounded time: closing a socket
 * with unread input resets the connection, and the client would lose the
 * error reply that says why.
 */
static void client_linger(struct client *c, char *buf)
{
	uint64_t waited = 0;
	size_t dropped = 0;

	while (waited < MONITOR_LINGER_NS && dropped < MONITOR_LINGER_BYTES) {
		ssize_t n = vs_aio_recv(c->fd, buf, 64 * 1024, MSG_DONTWAIT);

		if (n == -EAGAIN) {
			vs_co_sleep_ns(MONITOR_DRAIN_STEP_NS);
			waited += MONITOR_DRAIN_STEP_NS;
			continue;
		}
		if (n <= 0 && n != -EINTR)
			break;
		if (n > 0)
			dropped += (size_t)n;
	}
}

static void client_reader(void *arg)
{
	struct client *c = arg;
	struct monitor *m = c->mon;
	char *buf = malloc(64 * 1024);

	if (buf) {
		qmp_session_greet(c->qmp);
		while (!c->closing) {
			ssize_t n = vs_aio_recv(c->fd, buf, 64 * 1024, 0);

			if (n == -EINTR || n == -EAGAIN)
				continue;
			if (n <= 0)
				break;
			if (qmp_session_feed(c->qmp, buf, (size_t)n) < 0) {
				c->lingering = true;
				break;
			}
		}
	}
	/* Let the writer send what is queued (the last reply), then stop. */
	c->closing = true;
	vs_co_queue_wake_all(&c->out_wait);
	while (c->writer_running)
		vs_co_queue_wait(&c->writer_exit);
	if (c->lingering && buf)
		client_linger(c, buf);
	free(buf);
	for (struct client **p = &m->clients; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	m->nclients--;
	close(c->fd);
	qmp_session_free(c->qmp);
	free(c);
}

static void client_start(struct monitor *m, int fd)
{
	struct client *c = calloc(1, sizeof(*c));

	if (c)
		c->qmp = qmp_session_new(client_send, c);
	if (!c || !c->qmp) {
		free(c);
		close(fd);
		return;
	}
	c->mon = m;
	c->fd = fd;
	c->next = m->clients;
	m->clients = c;
	m->nclients++;
	c->writer_running = true;
	vs_co_spawn(vs_reactor_current(), client_writer, c);
	vs_co_spawn(vs_reactor_current(), client_reader, c);
}

static void monitor_acceptor(void *arg)
{
	struct monitor *m = arg;

	while (!m->stopping) {
		int fd = vs_aio_accept(m->fd);

		if (fd == -EINTR || fd == -EAGAIN || fd == -ECONNABORTED)
			continue;
		if (fd < 0) {
			if (fd != -ECANCELED)
				fprintf(stderr, "vstord: monitor: accept: %s\n", strerror(-fd));
			break;
		}
		if (m->stopping) {
			close(fd);
			break;
		}
		if (m->nclients >= MONITOR_MAX_CLIENTS) {
			fprintf(stderr, "vstord: monitor: refusing a client: %u are connected\n",
				m->nclients);
			close(fd);
			continue;
		}
		client_start(m, fd);
	}
	m->acceptor_running = false;
}

static int monitor_start(struct monitor *m, struct monitor **out)
{
	m->acceptor_running = true;
	m->acceptor = vs_co_spawn(vs_reactor_current(), monitor_acceptor, m);
	m->next = monitors;
	monitors = m;
	*out = m;
	return 0;
}

int monitor_open(const char *path, struct monitor **out, struct vs_error *err)
{
	struct monitor *m = calloc(1, sizeof(*m));
	mode_t old;
	int fd;

	if (!m)
		return vs_error_set(err, -ENOMEM, "out of memory");
	/* Only the daemon's user may drive it: the socket is created 0600. */
	old = umask(0177);
	fd = vs_daemon_listen_unix(path, err);
	umask(old);
	if (fd < 0) {
		free(m);
		return fd;
	}
	m->fd = fd;
	m->path = strdup(path);
	return monitor_start(m, out);
}

int monitor_open_fd(int fd, struct monitor **out, struct vs_error *err)
{
	struct monitor *m = calloc(1, sizeof(*m));

	if (!m)
		return vs_error_set(err, -ENOMEM, "out of memory");
	m->fd = fd;
	return monitor_start(m, out);
}

void monitor_close(struct monitor *m)
{
	uint64_t waited = 0;

	if (!m)
		return;
	m->stopping = true;
	if (m->acceptor_running)
		vs_aio_cancel(m->acceptor);
	/* Clients stop reading; writers send what is queued, for a bounded time. */
	for (struct client *c = m->clients; c; c = c->next) {
		c->closing = true;
		vs_co_queue_wake_all(&c->out_wait);
	}
	while (m->nclients && waited < MONITOR_DRAIN_NS) {
		vs_co_sleep_ns(MONITOR_DRAIN_STEP_NS);
		waited += MONITOR_DRAIN_STEP_NS;
	}
	for (struct client *c = m->clients; c; c = c->next)
		client_kill(c);
	while (m->nclients || m->acceptor_running)
		vs_co_sleep_ns(MONITOR_DRAIN_STEP_NS);
	for (struct monitor **p = &monitors; *p; p = &(*p)->next) {
		if (*p == m) {
			*p = m->next;
			break;
		}
	}
	close(m->fd);
	if (m->path)
		unlink(m->path);
	free(m->path);
	free(m);
}

static void emit_msg(char *msg, size_t len)
{
	for (struct monitor *m = monitors; m; m = m->next)
		for (struct client *c = m->clients; c; c = c->next)
			if (!c->closing && qmp_session_negotiated(c->qmp))
				client_queue(c, msg, len);
	free(msg);
}

struct posted_event {
	char *msg;
	size_t len;
};

static void emit_posted(void *arg)
{
	struct posted_event *ev = arg;

	emit_msg(ev->msg, ev->len);
	free(ev);
}

void monitor_emit_event(const char *name, json_object *data)
{
	struct posted_event *ev;
	size_t len;
	char *msg = qmp_event_format(name, data, &len);

	if (!msg)
		return;
	if (vd_on_main()) {
		emit_msg(msg, len);
		return;
	}
	/* Raised on an I/O reactor: the monitors are main's. Formatted here, in order. */
	ev = malloc(sizeof(*ev));
	if (ev) {
		*ev = (struct posted_event){ msg, len };
		if (vd_reactor_post_main(emit_posted, ev) == 0)
			return;
		free(ev);
	}
	free(msg);
}
