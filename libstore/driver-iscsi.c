/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The iscsi protocol driver: a LUN of an iSCSI target through libiscsi's
 * async API, on the reactor (see driver-iscsi.h for the URI). READ(16)/WRITE(16)
 * go straight between the target and the request's buffers; flush is
 * SYNCHRONIZE CACHE(16); discard is UNMAP and write-zeroes WRITE SAME(16)
 * where the LUN says it supports them (logical block provisioning VPD).
 *
 * As with libnfs, a pump coroutine polls libiscsi's socket through the ring
 * and services it; callbacks only record the result and wake the request
 * (the call bookkeeping and the pump are async-call.h's).
 */
#include "driver.h"
#include "driver-iscsi.h"

#include "async-call.h"

#include <errno.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define ISCSI_DEFAULT_INITIATOR "iqn.2026-01.org.vstor:initiator"
#define ISCSI_MAX_TRANSFER (4u << 20)
#define ISCSI_WS_CHUNK (32u << 20) /* bytes per WRITE SAME */
#define ISCSI_TICK_NS 1000000000ull
/* Reconnect attempts after the connection drops before requests fail. */
#define ISCSI_RECONNECTS 5

_Static_assert(sizeof(struct scsi_iovec) == sizeof(struct iovec), "scsi_iovec layout");

struct iscsi_call;

struct isess {
	struct iscsi_context *iscsi;
	struct vs_async_pump pump; /* its exit queue is the ticker's too */
	struct vs_co *ticker;	   /* runs libiscsi's timers (reconnect, timeouts) */
	bool ticker_running;
	struct vs_async_call *calls;
	/* connect / login */
	struct vs_co *connect_co;
	bool connect_done;
	int connect_status;
	int lun;
};

struct iscsi_call {
	struct vs_async_call base; /* first: the calls list holds these; status is SCSI's */
	struct scsi_task *task;
	int sense_key;
	int ascq;
};

/* ---- calls ---- */

static struct iscsi_call *call_new(struct isess *s)
{
	struct iscsi_call *c;

	if (s->pump.dead)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	vs_async_call_start(&c->base, &s->calls);
	return c;
}

static void call_release(struct iscsi_call *c)
{
	if (!c)
		return;
	if (vs_async_call_release(&c->base)) {
		if (c->task)
			scsi_free_scsi_task(c->task);
		free(c);
	}
}

static void task_cb(struct iscsi_context *iscsi, int status, void *data, void *priv)
{
	struct iscsi_call *c = priv;
	struct scsi_task *task = data;

	(void)iscsi;
	if (c->base.abandoned) {
		if (task)
			scsi_free_scsi_task(task);
		free(c);
		return;
	}
	c->task = task;
	if (status == SCSI_STATUS_CHECK_CONDITION && task) {
		c->sense_key = task->sense.key;
		c->ascq = task->sense.ascq;
	}
	vs_async_call_complete(&c->base, status);
}

static void sess_fail_all(struct isess *s)
{
	while (s->calls)
		vs_async_call_abandon(s->calls, SCSI_STATUS_ERROR);
	if (s->connect_co && !s->connect_done) {
		s->connect_done = true;
		s->connect_status = SCSI_STATUS_ERROR;
		vs_co_wake(s->connect_co);
	}
}

/* SCSI status and sense to -errno, in one place. */
static int call_errno(const struct iscsi_call *c)
{
	switch (c->base.status) {
	case SCSI_STATUS_GOOD:
		return 0;
	case SCSI_STATUS_CHECK_CONDITION:
		switch (c->sense_key) {
		case SCSI_SENSE_ILLEGAL_REQUEST:
			return c->ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE ? -ENOTSUP :
										   -EINVAL;
		case SCSI_SENSE_DATA_PROTECTION:
			return -EACCES;
		case SCSI_SENSE_NOT_READY:
			return -EAGAIN;
		case SCSI_SENSE_MEDIUM_ERROR:
		case SCSI_SENSE_HARDWARE_ERROR:
		default:
			return -EIO;
		}
	case SCSI_STATUS_RESERVATION_CONFLICT:
		return -EBUSY;
	case SCSI_STATUS_BUSY:
		return -EAGAIN;
	case SCSI_STATUS_TIMEOUT:
		return -ETIMEDOUT;
	case SCSI_STATUS_CANCELLED:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

/* ---- the pump's calls into libiscsi ---- */

static int pump_get_fd(void *lib)
{
	return iscsi_get_fd(lib);
}

static int pump_which_events(void *lib)
{
	return iscsi_which_events(lib);
}

static int pump_service(void *lib, int revents)
{
	return iscsi_service(lib, revents);
}

/*
 * libiscsi takes one PDU per service call: drain what the socket already
 * holds (a 1 MiB read is many Data-In PDUs) before polling again, saving a
 * ring round trip per PDU.
 */
static int pump_drain(void *lib, int fd)
{
	struct iscsi_context *iscsi = lib;

	for (int i = 0; i < 256; i++) {
		int avail = 0;

		if (ioctl(fd, FIONREAD, &avail) < 0 || avail <= 0 || iscsi_get_fd(iscsi) != fd)
			break;
		if (iscsi_service(iscsi, POLLIN) < 0)
			return -1;
	}
	return 0;
}

/* Logged in with queued PDUs: write them without blocking. */
static bool pump_can_send(void *lib, unsigned events)
{
	return (events & POLLOUT) && iscsi_is_logged_in(lib);
}

static void pump_fail_all(void *owner)
{
	sess_fail_all(owner);
}

static const struct vs_async_pump_ops iscsi_pump_ops = {
	.get_fd = pump_get_fd,
	.which_events = pump_which_events,
	.service = pump_service,
	.drain = pump_drain,
	.can_send = pump_can_send,
	.fail_all = pump_fail_all,
};

/*
 * libiscsi's reconnect backoff and command timeouts advance only when it is
 * serviced: service it with no events once a second.
 */
static void ticker_main(void *opaque)
{
	struct isess *s = opaque;

	s->ticker = vs_co_self();
	while (!s->pump.stopping && !s->pump.dead) {
		vs_co_sleep_ns(ISCSI_TICK_NS);
		if (s->pump.stopping || s->pump.dead)
			break;
		if (iscsi_service(s->iscsi, 0) < 0) {
			s->pump.dead = true;
			sess_fail_all(s);
		}
		/* A reconnect changes the socket and the events. */
		vs_async_pump_kick(&s->pump);
	}
	s->ticker = NULL;
	s->ticker_running = false;
	vs_co_queue_wake_all(&s->pump.exit);
}

/* Wait for the task queued for @c (@task NULL: it could not be queued). */
static int call_run(struct isess *s, struct iscsi_call *c, struct scsi_task *task)
{
	if (!task) {
		vs_async_call_not_queued(&c->base, SCSI_STATUS_ERROR);
		return -EIO;
	}
	vs_async_pump_kick(&s->pump);
	vs_async_call_wait(&c->base);
	return call_errno(c);
}

#define ISCSI_CALL_ONCE(s, c, start)                          \
	({                                                    \
		int q_;                                       \
		(c) = call_new(s);                            \
		if (!(c))                                     \
			q_ = (s)->pump.dead ? -EIO : -ENOMEM; \
		else                                          \
			q_ = call_run((s), (c), (start));     \
		q_;                                           \
	})

#define ISCSI_NO_RETRY UINT64_MAX
#define ISCSI_UA_RETRIES 8
#define ISCSI_BUSY_RETRIES 7

/*
 * Whether a command that ended as @c did is sent again, and after how long
 * (ISCSI_NO_RETRY: it is not). A UNIT ATTENTION reports an event once (LUN
 * inventory or capacity changed, a reset, a mode page changed) and says
 * nothing about the command itself, which the target did not run: it goes
 * again at once. BUSY and TASK SET FULL mean "not now": again after 8 ms,
 * 32 ms, ... 32 s (43 s in all), as QEMU's initiator does; so does NOT
 * READY "becoming ready" (ASC/ASCQ 04/01). Anything else is final.
 */
static uint64_t call_retry_delay(const struct iscsi_call *c, unsigned attempt)
{
	bool busy = c->base.status == SCSI_STATUS_BUSY ||
		    c->base.status == SCSI_STATUS_TASK_SET_FULL ||
		    (c->base.status == SCSI_STATUS_CHECK_CONDITION &&
		     c->sense_key == SCSI_SENSE_NOT_READY && c->ascq == 0x0401);

	if (c->base.status == SCSI_STATUS_CHECK_CONDITION &&
	    c->sense_key == SCSI_SENSE_UNIT_ATTENTION)
		return attempt < ISCSI_UA_RETRIES ? 0 : ISCSI_NO_RETRY;
	if (busy && attempt < ISCSI_BUSY_RETRIES)
		return 8000000ull << (2 * attempt);
	return ISCSI_NO_RETRY;
}

/*
 * Run a command (@start builds and queues its task; evaluated again for
 * each attempt), sending it again while call_retry_delay() says so. @c is
 * left holding the last attempt, for the caller to read and release.
 */
#define ISCSI_CALL(s, c, start)                                                          \
	({                                                                               \
		int r_;                                                                  \
		for (unsigned a_ = 0;; a_++) {                                           \
			uint64_t d_;                                                     \
			r_ = ISCSI_CALL_ONCE(s, c, start);                               \
			d_ = (c) && r_ < 0 ? call_retry_delay((c), a_) : ISCSI_NO_RETRY; \
			if (d_ == ISCSI_NO_RETRY)                                        \
				break;                                                   \
			call_release(c);                                                 \
			(c) = NULL;                                                      \
			if (d_)                                                          \
				vs_co_sleep_ns(d_);                                      \
		}                                                                        \
		r_;                                                                      \
	})

/* ---- sessions ---- */

static void connect_cb(struct iscsi_context *iscsi, int status, void *data, void *priv)
{
	struct isess *s = priv;

	(void)iscsi;
	(void)data;
	if (s->connect_done)
		return; /* the second call: the connection ended; the pump sees it */
	s->connect_done = true;
	s->connect_status = status;
	if (s->connect_co && s->connect_co != vs_co_self())
		vs_co_wake(s->connect_co);
}

static int wait_connect(struct isess *s)
{
	vs_async_pump_kick(&s->pump);
	while (!s->connect_done)
		vs_co_yield();
	s->connect_co = NULL;
	return s->connect_status == SCSI_STATUS_GOOD ? 0 : -EIO;
}

static void sess_stop(struct isess *s)
{
	s->pump.stopping = true;
	if (s->ticker_running && s->ticker)
		(void)vs_aio_cancel(s->ticker);
	vs_async_pump_stop(&s->pump);
	while (s->ticker_running)
		vs_co_queue_wait(&s->pump.exit);
}

static void sess_free(struct isess *s)
{
	if (!s)
		return;
	sess_stop(s);
	/* Cancels what is in flight: abandoned calls are freed in task_cb. */
	if (s->iscsi)
		iscsi_destroy_context(s->iscsi);
	while (s->calls)
		(void)vs_async_call_release(s->calls);
	free(s);
}

/* The options vstor adds to libiscsi's URL. */
struct iscsi_opts {
	char *url; /* without our query options */
	char secret[256];
	bool has_secret;
	char target_user[256];
	char target_secret[256];
	bool has_target_secret;
	char initiator[256];
	char user[256]; /* USER of USER[%PASSWORD]@ (libiscsi drops it without a password) */
};

static int read_secret(const char *path, char *out, size_t outsz, struct vs_error *err)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return vs_error_setf_errno(err, -errno, "Could not read the CHAP secret file '%s'",
					   path);
	n = fread(out, 1, outsz - 1, f);
	fclose(f);
	out[n] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	if (!out[0])
		return vs_error_set(err, -EINVAL, "The CHAP secret file '%s' is empty", path);
	return 0;
}

static int parse_opts(const char *uri, struct iscsi_opts *o, struct vs_error *err)
{
	char *q, *tok, *save = NULL;
	int ret = 0;

	memset(o, 0, sizeof(*o));
	o->url = strdup(uri);
	if (!o->url)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	{
		const char *p = strstr(uri, "://"), *at, *end;

		p = p ? p + 3 : uri;
		end = p + strcspn(p, "/?");
		at = memchr(p, '@', (size_t)(end - p));
		if (at) {
			size_t l = strcspn(p, "%:@");

			snprintf(o->user, sizeof(o->user), "%.*s", (int)l, p);
		}
	}
	q = strchr(o->url, '?');
	if (!q)
		return 0;
	*q++ = '\0';
	for (tok = strtok_r(q, "&", &save); tok && ret == 0; tok = strtok_r(NULL, "&", &save)) {
		char *v = strchr(tok, '=');

		if (!v) {
			ret = vs_error_set(err, -EINVAL, "Invalid iSCSI URI option '%s'", tok);
			break;
		}
		*v++ = '\0';
		if (!strcmp(tok, "secret-file")) {
			ret = read_secret(v, o->secret, sizeof(o->secret), err);
			o->has_secret = ret == 0;
		} else if (!strcmp(tok, "target-secret-file")) {
			ret = read_secret(v, o->target_secret, sizeof(o->target_secret), err);
			o->has_target_secret = ret == 0;
		} else if (!strcmp(tok, "target-user")) {
			snprintf(o->target_user, sizeof(o->target_user), "%s", v);
		} else if (!strcmp(tok, "initiator")) {
			snprintf(o->initiator, sizeof(o->initiator), "%s", v);
		} else {
			ret = vs_error_set(err, -EINVAL,
					   "Unknown iSCSI URI option '%s' (known: secret-file, "
					   "target-user, target-secret-file, initiator)",
					   tok);
		}
	}
	return ret;
}

static void opts_free(struct iscsi_opts *o)
{
	free(o->url);
	o->url = NULL;
	memset(o->secret, 0, sizeof(o->secret));
	memset(o->target_secret, 0, sizeof(o->target_secret));
}

/* Strip a password from @url for messages. */
static void redact(char *out, size_t outsz, const char *url)
{
	const char *at = strchr(url, '@'), *pct;
	size_t l = strlen(url) < outsz ? strlen(url) : outsz - 1;

	memcpy(out, url, l);
	out[l] = '\0';
	if (!at)
		return;
	pct = memchr(url, '%', (size_t)(at - url));
	if (pct)
		snprintf(out, outsz, "%.*s%%***%s", (int)(pct - url), url, at);
}

/*
 * Connect and log in to the target of @uri. With @lun >= 0 (full URL), also
 * check that LUN is there; with -1 (portal + target only), just log in.
 */
static int sess_open(struct isess **out, const char *uri, bool want_lun, struct vs_error *err)
{
	struct iscsi_opts o;
	struct iscsi_url *u = NULL;
	struct isess *s;
	char shown[512];
	int ret;

	redact(shown, sizeof(shown), uri);
	ret = parse_opts(uri, &o, err);
	if (ret < 0) {
		opts_free(&o);
		return ret;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		opts_free(&o);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	vs_async_ignore_sigpipe();
	s->iscsi = iscsi_create_context(o.initiator[0] ? o.initiator : ISCSI_DEFAULT_INITIATOR);
	if (!s->iscsi) {
		ret = vs_error_set(err, -ENOMEM, "Could not create an iSCSI context");
		goto fail;
	}
	vs_async_pump_init(&s->pump, &iscsi_pump_ops, s->iscsi, s);
	if (want_lun) {
		u = iscsi_parse_full_url(s->iscsi, o.url);
	} else {
		/* iscsi://HOST/IQN[/LUN]: parse as full, adding a LUN when absent. */
		char *full = NULL;
		const char *p = strstr(o.url, "://"), *slash1 = p ? strchr(p + 3, '/') : NULL;
		const char *slash2 = slash1 ? strchr(slash1 + 1, '/') : NULL;

		if (slash1 && !slash2 && asprintf(&full, "%s/0", o.url) < 0)
			full = NULL;
		u = iscsi_parse_full_url(s->iscsi, full ? full : o.url);
		free(full);
	}
	if (!u) {
		ret = vs_error_set(
			err, -EINVAL,
			"Invalid iSCSI URI '%s' (use iscsi://[USER@]HOST[:PORT]/IQN/LUN): "
			"%s",
			shown, iscsi_get_error(s->iscsi));
		goto fail;
	}
	s->lun = u->lun;
	iscsi_set_targetname(s->iscsi, u->target);
	iscsi_set_reconnect_max_retries(s->iscsi, ISCSI_RECONNECTS);
	iscsi_set_session_type(s->iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(s->iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (o.user[0]) {
		const char *pw = o.has_secret ? o.secret : u->passwd;

		if (!pw[0] && getenv("LIBISCSI_CHAP_PASSWORD"))
			pw = getenv("LIBISCSI_CHAP_PASSWORD");
		if (!pw[0]) {
			ret = vs_error_set(err, -EINVAL,
					   "iSCSI user '%s' given without a CHAP secret (use "
					   "?secret-file=PATH)",
					   o.user);
			goto fail;
		}
		iscsi_set_initiator_username_pwd(s->iscsi, o.user, pw);
		if (o.target_user[0]) {
			if (!o.has_target_secret) {
				ret = vs_error_set(err, -EINVAL,
						   "Mutual CHAP: target-user given without "
						   "target-secret-file");
				goto fail;
			}
			iscsi_set_target_username_pwd(s->iscsi, o.target_user, o.target_secret);
		}
	} else if (o.target_user[0]) {
		ret = vs_error_set(err, -EINVAL, "Mutual CHAP needs an initiator user as well");
		goto fail;
	}

	if (vs_async_pump_start(&s->pump) < 0) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	s->ticker_running = true;
	if (!vs_co_spawn(vs_reactor_current(), ticker_main, s)) {
		s->ticker_running = false;
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	s->connect_co = vs_co_self();
	if (want_lun)
		ret = iscsi_full_connect_async(s->iscsi, u->portal, u->lun, connect_cb, s);
	else
		ret = iscsi_connect_async(s->iscsi, u->portal, connect_cb, s);
	if (ret == 0)
		ret = wait_connect(s);
	if (ret == 0 && !want_lun) {
		s->connect_done = false;
		s->connect_co = vs_co_self();
		ret = iscsi_login_async(s->iscsi, connect_cb, s);
		if (ret == 0)
			ret = wait_connect(s);
	}
	if (ret < 0) {
		const char *e = iscsi_get_error(s->iscsi);

		if (e && (strstr(e, "uthentication") || strstr(e, "CHAP")))
			ret = vs_error_set(err, -EACCES,
					   "iSCSI login to '%s' failed: CHAP authentication "
					   "refused (wrong user or secret?): %s",
					   shown, e);
		else
			ret = vs_error_set(err, -EIO, "Could not connect to iSCSI target '%s': %s",
					   shown, e && e[0] ? e : "connection failed");
		goto fail;
	}
	iscsi_destroy_url(u);
	opts_free(&o);
	*out = s;
	return 0;
fail:
	if (u)
		iscsi_destroy_url(u);
	opts_free(&o);
	sess_free(s);
	return ret;
}

/* READ CAPACITY(16), or (10) when the target lacks 16. */
static int read_capacity(struct isess *s, int lun, uint64_t *size, uint32_t *bs)
{
	struct iscsi_call *c = NULL;
	int ret = ISCSI_CALL(s, c, iscsi_readcapacity16_task(s->iscsi, lun, task_cb, c));

	if (ret == 0) {
		struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(c->task);

		if (!rc)
			ret = -EIO;
		else {
			*bs = rc->block_length;
			*size = (rc->returned_lba + 1) * rc->block_length;
		}
		call_release(c);
		return ret;
	}
	call_release(c);
	ret = ISCSI_CALL(s, c, iscsi_readcapacity10_task(s->iscsi, lun, 0, 0, task_cb, c));
	if (ret == 0) {
		struct scsi_readcapacity10 *rc = scsi_datain_unmarshall(c->task);

		if (!rc)
			ret = -EIO;
		else {
			*bs = rc->block_size;
			*size = ((uint64_t)rc->lba + 1) * rc->block_size;
		}
	}
	call_release(c);
	return ret;
}

/* INQUIRY; @page 0 = standard. Returns the unmarshalled data via @c (release it). */
static int inquiry(struct isess *s, int lun, int page, struct iscsi_call **c, void **data)
{
	int ret = ISCSI_CALL(
		s, *c, iscsi_inquiry_task(s->iscsi, lun, page ? 1 : 0, page, 255, task_cb, *c));

	*data = ret == 0 ? scsi_datain_unmarshall((*c)->task) : NULL;
	if (ret == 0 && !*data)
		ret = -EIO;
	return ret;
}

int vs_iscsi_list_luns(const char *url, struct vs_iscsi_lun **out, size_t *n, struct vs_error *err)
{
	struct isess *s = NULL;
	struct iscsi_call *c = NULL;
	struct scsi_reportluns_list *list;
	struct vs_iscsi_lun *luns = NULL;
	size_t count = 0;
	int ret;

	*out = NULL;
	*n = 0;
	ret = sess_open(&s, url, false, err);
	if (ret < 0)
		return ret;
	ret = ISCSI_CALL(s, c, iscsi_reportluns_task(s->iscsi, 0, 16384, task_cb, c));
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "REPORT LUNS failed");
		goto out;
	}
	list = scsi_datain_unmarshall(c->task);
	if (!list) {
		ret = vs_error_set(err, -EIO, "REPORT LUNS: malformed reply");
		goto out;
	}
	luns = calloc(list->num ? list->num : 1, sizeof(*luns));
	if (!luns) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < list->num; i++) {
		struct vs_iscsi_lun *l = &luns[count++];
		struct iscsi_call *ic = NULL;
		struct scsi_inquiry_standard *inq;
		void *d;

		l->lun = list->luns[i];
		l->device_type = -1;
		if (inquiry(s, l->lun, 0, &ic, &d) == 0) {
			inq = d;
			l->device_type = inq->device_type;
		}
		call_release(ic);
		if (l->device_type == 0)
			(void)read_capacity(s, l->lun, &l->size, &l->block_size);
	}
	*out = luns;
	*n = count;
	luns = NULL;
	ret = 0;
out:
	call_release(c);
	free(luns);
	sess_free(s);
	return ret;
}

/* ---- the protocol driver ---- */

struct iscsi_node {
	struct isess *s;
	uint32_t bs;
	bool can_unmap;
	bool can_ws;
	bool no_sync;
	bool dpofua;	    /* the LUN honours the FUA bit (MODE SENSE DPOFUA) */
	uint64_t max_unmap; /* blocks per UNMAP */
	uint64_t max_ws;    /* blocks per WRITE SAME */
	void *zero_block;
};

/*
 * Whether the LUN says (DPOFUA in MODE SENSE's device-specific parameter)
 * that it honours the FUA bit. One that does not may ignore it, so then a
 * FUA write is a write and a SYNCHRONIZE CACHE; so it is when MODE SENSE
 * fails.
 */
static bool lun_dpofua(struct isess *s)
{
	struct iscsi_call *c = NULL;
	struct scsi_mode_sense *ms;
	bool dpofua = false;

	if (ISCSI_CALL(s, c,
		       iscsi_modesense6_task(s->iscsi, s->lun, 1, SCSI_MODESENSE_PC_CURRENT,
					     SCSI_MODEPAGE_RETURN_ALL_PAGES, 0, 255, task_cb, c)) ==
	    0) {
		ms = scsi_datain_unmarshall(c->task);
		dpofua = ms && (ms->device_specific_parameter & 0x10);
	}
	call_release(c);
	return dpofua;
}

static int iscsi_node_open(struct vs_node *node, const struct vs_open_opts *opts,
			   struct vs_error *err)
{
	struct iscsi_node *n = node->opaque;
	struct iscsi_call *c = NULL;
	uint64_t size = 0;
	uint32_t bs = 0;
	void *d;
	int ret;

	ret = sess_open(&n->s, opts->filename, true, err);
	if (ret < 0)
		return ret;
	ret = read_capacity(n->s, n->s->lun, &size, &bs);
	if (ret < 0 || bs == 0 || bs > 65536 || (bs & (bs - 1))) {
		ret = vs_error_setf_errno(err, ret < 0 ? ret : -EIO,
					  "READ CAPACITY of LUN %d failed", n->s->lun);
		goto fail;
	}
	n->bs = bs;
	node->size = size;
	node->limits.request_align = bs;
	node->limits.mem_align = 1;
	node->limits.max_transfer = ISCSI_MAX_TRANSFER;
	n->max_ws = ISCSI_WS_CHUNK / bs;
	n->max_unmap = 0xffffffffu;
	if (inquiry(n->s, n->s->lun, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, &c, &d) == 0) {
		struct scsi_inquiry_block_limits *bl = d;

		if (bl->max_xfer_len && (uint64_t)bl->max_xfer_len * bs < ISCSI_MAX_TRANSFER)
			node->limits.max_transfer = (uint64_t)bl->max_xfer_len * bs;
		if (bl->max_unmap && bl->max_unmap != 0xffffffffu)
			n->max_unmap = bl->max_unmap;
		if (bl->max_ws_len && bl->max_ws_len < n->max_ws)
			n->max_ws = bl->max_ws_len;
	}
	call_release(c);
	c = NULL;
	if (inquiry(n->s, n->s->lun, SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, &c, &d) ==
	    0) {
		struct scsi_inquiry_logical_block_provisioning *lbp = d;

		n->can_unmap = lbp->lbpu;
		n->can_ws = lbp->lbpws;
	}
	call_release(c);
	n->dpofua = lun_dpofua(n->s);
	n->zero_block = calloc(1, bs);
	if (!n->zero_block) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	node->limits.max_discard = n->max_unmap * bs;
	node->caps = VS_CAP_FLUSH | VS_CAP_WRITE_ZEROES;
	if (n->can_unmap)
		node->caps |= VS_CAP_DISCARD;
	return 0;
fail:
	sess_free(n->s);
	n->s = NULL;
	return ret;
}

static void iscsi_node_close(struct vs_node *node)
{
	struct iscsi_node *n = node->opaque;

	sess_free(n->s);
	n->s = NULL;
	free(n->zero_block);
	n->zero_block = NULL;
}

static int iscsi_flush(struct iscsi_node *n)
{
	struct iscsi_call *c = NULL;
	int ret;

	if (n->no_sync)
		return 0;
	ret = ISCSI_CALL(n->s, c,
			 iscsi_synchronizecache16_task(n->s->iscsi, n->s->lun, 0, 0, 0, 0, task_cb,
						       c));
	call_release(c);
	if (ret == -ENOTSUP) {
		/* Some targets only know the 10-byte form. */
		c = NULL;
		ret = ISCSI_CALL(n->s, c,
				 iscsi_synchronizecache10_task(n->s->iscsi, n->s->lun, 0, 0, 0, 0,
							       task_cb, c));
		call_release(c);
	}
	if (ret == -ENOTSUP) {
		n->no_sync = true; /* neither form: no cache to write back */
		return 0;
	}
	return ret;
}

static int iscsi_zero(struct iscsi_node *n, struct vs_req *req)
{
	uint64_t lba = req->offset / n->bs, left = req->len / n->bs;
	bool unmap = (req->flags & VS_REQ_MAY_UNMAP) && n->can_ws;
	int ret = 0;

	if (!n->can_ws && !n->can_unmap)
		return -ENOTSUP; /* writes of zeroes by the generic layer */
	while (left && ret == 0) {
		uint64_t nb = left < n->max_ws ? left : n->max_ws;
		struct iscsi_call *c = NULL;

		ret = ISCSI_CALL(n->s, c,
				 iscsi_writesame16_task(n->s->iscsi, n->s->lun, lba, n->zero_block,
							n->bs, (uint32_t)nb, 0, unmap ? 1 : 0, 0, 0,
							task_cb, c));
		call_release(c);
		lba += nb;
		left -= nb;
	}
	if (ret == -ENOTSUP || ret == -EINVAL) {
		n->can_ws = false;
		return -ENOTSUP;
	}
	if (ret == 0 && (req->flags & VS_REQ_FUA))
		ret = iscsi_flush(n);
	return ret;
}

static int iscsi_submit(struct vs_node *node, struct vs_req *req)
{
	struct iscsi_node *n = node->opaque;
	struct isess *s = n->s;
	struct iscsi_call *c = NULL;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		ret = ISCSI_CALL(s, c,
				 iscsi_read16_iov_task(s->iscsi, s->lun, req->offset / n->bs,
						       (uint32_t)req->len, (int)n->bs, 0, 0, 0, 0,
						       0, task_cb, c, (struct scsi_iovec *)req->iov,
						       req->niov));
		call_release(c);
		return ret;
	case VS_OP_WRITE: {
		bool fua = req->flags & VS_REQ_FUA;

		ret = ISCSI_CALL(s, c,
				 iscsi_write16_iov_task(s->iscsi, s->lun, req->offset / n->bs, NULL,
							(uint32_t)req->len, (int)n->bs, 0, 0,
							fua && n->dpofua ? 1 : 0, 0, 0, task_cb, c,
							(struct scsi_iovec *)req->iov, req->niov));
		call_release(c);
		if (ret == 0 && fua && !n->dpofua)
			ret = iscsi_flush(n);
		return ret;
	}
	case VS_OP_FLUSH:
		if (!node->knobs.flush_to_disk)
			return 0;
		return iscsi_flush(n);
	case VS_OP_DISCARD: {
		struct unmap_list ul = { .lba = req->offset / n->bs,
					 .num = (uint32_t)(req->len / n->bs) };

		if (!n->can_unmap || ul.num == 0)
			return 0;
		ret = ISCSI_CALL(s, c,
				 iscsi_unmap_task(s->iscsi, s->lun, 0, 0, &ul, 1, task_cb, c));
		call_release(c);
		if (ret == -ENOTSUP) {
			n->can_unmap = false;
			return 0;
		}
		return ret;
	}
	case VS_OP_WRITE_ZEROES:
		return iscsi_zero(n, req);
	case VS_OP_BLOCK_STATUS:
		vs_req_bs_whole(req, node, VS_BS_DATA | VS_BS_ALLOCATED);
		return 0;
	}
	return -EINVAL;
}

static int iscsi_node_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			       bool exact, struct vs_error *err)
{
	(void)prealloc;
	if (size > node->size || (exact && size != node->size))
		return vs_error_set(err, -ENOTSUP,
				    "Cannot resize iSCSI LUN '%s': resize it on the target",
				    node->filename);
	return 0;
}

/*
 * A LUN exists on the target: "creating" it (what formats do before they
 * write their header) checks that it is there and large enough, as the file
 * driver does for a block device.
 */
static int iscsi_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
			unsigned flags, struct vs_error *err)
{
	uint64_t have = 0;
	int ret = vs_protocol_create_existing(filename, size, opts, nopts, "on iSCSI", &have, err);

	(void)flags;
	if (ret == -ENOSPC)
		ret = vs_error_set(
			err, -ENOSPC,
			"The iSCSI LUN is smaller (%llu bytes) than the %llu bytes asked "
			"for; LUNs are sized on the target",
			(unsigned long long)have, (unsigned long long)size);
	return ret;
}

const struct vs_driver vs_driver_iscsi = {
	.name = "iscsi",
	.prefixes = (const char *const[]){ "iscsi://", NULL },
	.state_size = sizeof(struct iscsi_node),
	.open = iscsi_node_open,
	.close = iscsi_node_close,
	.submit = iscsi_submit,
	.truncate = iscsi_node_truncate,
	.create = iscsi_create,
	/*
	 * FUA is the WRITE(16) FUA bit where the LUN reports DPOFUA, and a
	 * SYNCHRONIZE CACHE after the write or WRITE SAME where it does not.
	 */
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_iscsi)

int vs_iscsi_discover(const char *host, unsigned port, const char *initiator, char ***iqns,
		      size_t *n, struct vs_error *err)
{
	struct iscsi_context *ctx =
		iscsi_create_context(initiator ? initiator : ISCSI_DEFAULT_INITIATOR);
	struct iscsi_discovery_address *list = NULL, *a;
	char portal[300];
	size_t count = 0, i = 0;
	int ret = 0;

	*iqns = NULL;
	*n = 0;
	if (!ctx)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	snprintf(portal, sizeof(portal), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
		 port ? port : 3260);
	iscsi_set_session_type(ctx, ISCSI_SESSION_DISCOVERY);
	iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (iscsi_connect_sync(ctx, portal) != 0 || iscsi_login_sync(ctx) != 0 ||
	    !(list = iscsi_discovery_sync(ctx))) {
		ret = vs_error_set(err, -EHOSTUNREACH, "iSCSI discovery on %s failed: %s", portal,
				   iscsi_get_error(ctx));
		goto out;
	}
	for (a = list; a; a = a->next)
		count++;
	*iqns = calloc(count ? count : 1, sizeof(**iqns));
	if (!*iqns) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	for (a = list; a; a = a->next) {
		(*iqns)[i] = strdup(a->target_name);
		if (!(*iqns)[i]) {
			ret = vs_error_set(err, -ENOMEM, "Out of memory");
			break;
		}
		i++;
	}
	*n = i;
out:
	if (list)
		iscsi_free_discovery_data(ctx, list);
	(void)iscsi_logout_sync(ctx);
	iscsi_destroy_context(ctx);
	return ret;
}
