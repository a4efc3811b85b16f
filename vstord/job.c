/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job framework (job.h): the job table, the state machine, the
 * verbs (block-job-* and job-*), the queries, the events, the speed limit
 * and on-error. The jobs themselves are in job-*.c.
 */
#include "job.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block.h"
#include "monitor.h"
#include "reactors.h"
#include "state.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

/* The longest a job sleeps for its speed limit before it looks at its verbs again. */
#define JOB_SLEEP_SLICE_NS 100000000ull

struct vd_job {
	struct vd_job *next;
	struct vs_reactor *reactor; /* its coroutine's: its node's home */
	char *id;
	const struct vd_job_driver *drv;
	void *opaque;
	enum vd_job_status status;
	uint64_t speed;
	uint64_t new_speed; /* block-job-set-speed's, on its way to the job's reactor */
	enum vd_job_on_error on_error;
	bool auto_finalize, auto_dismiss;
	uint64_t offset, len;
	bool busy;
	bool user_paused; /* block-job-pause given, not yet resumed */
	bool cancelled, force;
	bool io_failed;		/* io-status "failed": stopped by an I/O error */
	bool finalize_wanted;	/* block-job-finalize given */
	bool co_running;	/* the coroutine has not returned yet */
	char *error;		/* why it failed; NULL when it did not */
	struct vs_node **nodes; /* busy: no other job, no blockdev-del */
	unsigned nnodes;
	struct vs_node *held[VD_JOB_MAX_HELD]; /* in use (vd_job_hold) */
	unsigned nheld;
	struct vs_co_queue wake; /* the job waits here: paused, stopped, pending */
	uint64_t rl_next_ns;	 /* the speed limit lets the job go on at this time */
};

static struct vd_job *jobs;
/* Woken at every state change (commands that wait for one, vd_job_close_all). */
static struct vs_co_queue jobs_changed;

static const char *const status_names[] = {
	[VD_JOB_CREATED] = "created",	  [VD_JOB_RUNNING] = "running",
	[VD_JOB_PAUSED] = "paused",	  [VD_JOB_READY] = "ready",
	[VD_JOB_STANDBY] = "standby",	  [VD_JOB_WAITING] = "waiting",
	[VD_JOB_PENDING] = "pending",	  [VD_JOB_ABORTING] = "aborting",
	[VD_JOB_CONCLUDED] = "concluded", [VD_JOB_NULL] = "null",
};

/* The verbs a monitor applies, and the states that accept each (qapi/job.json). */
enum job_verb {
	VERB_CANCEL,
	VERB_PAUSE,
	VERB_RESUME,
	VERB_SET_SPEED,
	VERB_COMPLETE,
	VERB_FINALIZE,
	VERB_DISMISS
};
static const char *const verb_names[] = { "cancel",   "pause",	  "resume", "set-speed",
					  "complete", "finalize", "dismiss" };
#define LIVE                                                                       \
	((1u << VD_JOB_CREATED) | (1u << VD_JOB_RUNNING) | (1u << VD_JOB_PAUSED) | \
	 (1u << VD_JOB_READY) | (1u << VD_JOB_STANDBY))
static const unsigned verb_states[] = {
	[VERB_CANCEL] = LIVE | (1u << VD_JOB_WAITING) | (1u << VD_JOB_PENDING),
	[VERB_PAUSE] = LIVE,
	[VERB_RESUME] = LIVE,
	[VERB_SET_SPEED] = LIVE,
	[VERB_COMPLETE] = 1u << VD_JOB_READY,
	[VERB_FINALIZE] = 1u << VD_JOB_PENDING,
	[VERB_DISMISS] = 1u << VD_JOB_CONCLUDED,
};

static const char *const on_error_names[] = {
	[VD_ON_ERROR_REPORT] = "report",
	[VD_ON_ERROR_IGNORE] = "ignore",
	[VD_ON_ERROR_ENOSPC] = "enospc",
	[VD_ON_ERROR_STOP] = "stop",
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct vd_job *job_find(const char *id)
{
	for (struct vd_job *j = jobs; j; j = j->next)
		if (!strcmp(j->id, id))
			return j;
	return NULL;
}

static bool job_alive(const struct vd_job *job)
{
	for (struct vd_job *j = jobs; j; j = j->next)
		if (j == job)
			return true;
	return false;
}

const char *vd_job_type(const struct vd_job *job)
{
	return job->drv->type;
}

void *vd_job_opaque(const struct vd_job *job)
{
	return job->opaque;
}

struct vd_job *vd_job_using(const struct vs_node *node)
{
	for (struct vd_job *j = jobs; j; j = j->next)
		for (unsigned i = 0; i < j->nnodes; i++)
			if (j->nodes[i] == node)
				return j;
	return NULL;
}

void vd_job_hold(struct vd_job *job, struct vs_node *node)
{
	if (job->nheld < VD_JOB_MAX_HELD)
		job->held[job->nheld++] = vs_node_ref(node);
}

bool vd_job_holds(const struct vs_node *node)
{
	for (struct vd_job *j = jobs; j; j = j->next)
		for (unsigned i = 0; i < j->nheld; i++)
			if (j->held[i] == node)
				return true;
	return false;
}

int vd_job_check_node_free(struct qmp_call *call, const struct vs_node *node, const char *name)
{
	struct vd_job *j = vd_job_using(node);

	if (!j)
		return 0;
	return qmp_error(call, QMP_ERR_GENERIC,
			 "Node '%s' is busy: block device is in use by block job: %s", name,
			 j->drv->type);
}

/* ---- events ---- */

static void emit_status(struct vd_job *job)
{
	json_object *data = json_object_new_object();

	json_object_object_add(data, "status", json_object_new_string(status_names[job->status]));
	json_object_object_add(data, "id", json_object_new_string(job->id));
	monitor_emit_event("JOB_STATUS_CHANGE", data);
	json_object_put(data);
}

/* Wake the waiters of jobs_changed: they are on the main reactor. */
static void jobs_changed_wake(void *arg)
{
	(void)arg;
	vs_co_queue_wake_all(&jobs_changed);
}

static void transition(struct vd_job *job, enum vd_job_status status)
{
	job->status = status;
	emit_status(job);
	if (vd_on_main() || vd_reactor_post_main(jobs_changed_wake, NULL) < 0)
		jobs_changed_wake(NULL);
}

/* BLOCK_JOB_COMPLETED, _CANCELLED and _READY carry the same fields. */
static void emit_block_event(struct vd_job *job, const char *name, bool with_error)
{
	json_object *data = json_object_new_object();

	json_object_object_add(data, "device", json_object_new_string(job->id));
	json_object_object_add(data, "len", json_object_new_int64((int64_t)job->len));
	json_object_object_add(data, "offset", json_object_new_int64((int64_t)job->offset));
	json_object_object_add(data, "speed", json_object_new_int64((int64_t)job->speed));
	json_object_object_add(data, "type", json_object_new_string(job->drv->type));
	if (with_error && job->error)
		json_object_object_add(data, "error", json_object_new_string(job->error));
	monitor_emit_event(name, data);
	json_object_put(data);
}

/* ---- the job's side ---- */

bool vd_job_cancelled(const struct vd_job *job)
{
	return job->cancelled;
}

void vd_job_set_progress(struct vd_job *job, uint64_t offset, uint64_t len)
{
	job->offset = offset;
	job->len = len;
}

void vd_job_progress(struct vd_job *job, uint64_t done)
{
	job->offset += done;
}

static void pause_point(struct vd_job *job);

void vd_job_set_remaining(struct vd_job *job, uint64_t remaining)
{
	job->len = job->offset + remaining;
}

void vd_job_sleep(struct vd_job *job, uint64_t ns)
{
	if (!job->cancelled && !job->user_paused) {
		job->busy = false;
		vs_co_sleep_ns(ns < JOB_SLEEP_SLICE_NS ? ns : JOB_SLEEP_SLICE_NS);
		job->busy = true;
	}
	pause_point(job);
}

void vd_job_set_error(struct vd_job *job, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (!msg)
		return;
	free(job->error);
	job->error = msg;
}

bool vd_job_is_ready(const struct vd_job *job)
{
	return job->status == VD_JOB_READY || job->status == VD_JOB_STANDBY;
}

void vd_job_set_ready(struct vd_job *job)
{
	if (job->status != VD_JOB_RUNNING)
		return;
	transition(job, VD_JOB_READY);
	emit_block_event(job, "BLOCK_JOB_READY", false);
}

/* Wait, not busy, until woken; the caller loops on its condition. */
static void job_wait(struct vd_job *job)
{
	job->busy = false;
	vs_co_queue_wait(&job->wake);
	job->busy = true;
}

/* Paused by block-job-pause (or stopped by an error): wait for resume or cancel. */
static void pause_point(struct vd_job *job)
{
	enum vd_job_status was = job->status;

	if (!job->user_paused || job->cancelled)
		return;
	transition(job, was == VD_JOB_READY ? VD_JOB_STANDBY : VD_JOB_PAUSED);
	while (job->user_paused && !job->cancelled)
		job_wait(job);
	transition(job, was);
}

void vd_job_yield_point(struct vd_job *job, uint64_t bytes)
{
	if (job->speed && bytes) {
		uint64_t now = now_ns();

		if (job->rl_next_ns < now)
			job->rl_next_ns = now;
		job->rl_next_ns += bytes * 1000000000ull / job->speed;
		while (!job->cancelled && job->speed && (now = now_ns()) < job->rl_next_ns) {
			uint64_t d = job->rl_next_ns - now;

			job->busy = false;
			vs_co_sleep_ns(d < JOB_SLEEP_SLICE_NS ? d : JOB_SLEEP_SLICE_NS);
			job->busy = true;
			if (job->user_paused)
				break;
		}
	} else {
		/* Let the monitor and the exports run between steps. */
		vs_co_yield_now();
	}
	pause_point(job);
}

int vd_job_io_error(struct vd_job *job, bool read, int ret)
{
	enum vd_job_on_error policy = job->on_error;
	const char *action;
	json_object *data;

	if (policy == VD_ON_ERROR_ENOSPC)
		policy = ret == -ENOSPC ? VD_ON_ERROR_STOP : VD_ON_ERROR_REPORT;
	action = policy == VD_ON_ERROR_STOP   ? "stop" :
		 policy == VD_ON_ERROR_IGNORE ? "ignore" :
						"report";
	data = json_object_new_object();
	json_object_object_add(data, "device", json_object_new_string(job->id));
	json_object_object_add(data, "operation", json_object_new_string(read ? "read" : "write"));
	json_object_object_add(data, "action", json_object_new_string(action));
	monitor_emit_event("BLOCK_JOB_ERROR", data);
	json_object_put(data);
	if (policy == VD_ON_ERROR_REPORT) {
		vd_job_set_error(job, "%s", strerror(-ret));
		return ret;
	}
	if (policy == VD_ON_ERROR_IGNORE) {
		vd_job_set_error(job, "%s", strerror(-ret));
		return 1;
	}
	/* stop: paused as by block-job-pause, io-status failed until resumed. */
	job->io_failed = true;
	job->user_paused = true;
	pause_point(job);
	if (job->cancelled) {
		vd_job_set_error(job, "%s", strerror(-ret));
		return ret;
	}
	return 0;
}

static void job_free(struct vd_job *job)
{
	struct vd_job **pp;

	for (pp = &jobs; *pp && *pp != job; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = job->next;
	if (job->drv->clean)
		job->drv->clean(job);
	for (unsigned i = 0; i < job->nnodes; i++)
		vs_node_close(job->nodes[i]);
	for (unsigned i = 0; i < job->nheld; i++)
		vs_node_close(job->held[i]);
	free(job->nodes);
	free(job->error);
	free(job->id);
	free(job);
	vs_co_queue_wake_all(&jobs_changed);
}

static void job_dismiss(struct vd_job *job)
{
	transition(job, VD_JOB_NULL);
	job_free(job);
}

/* The job list and the state are main's: a job on another reactor ends there. */
static void job_dismiss_main(void *arg)
{
	qmp_commands_hold(); /* the job list is the commands' too */
	/*
	 * Unless quit's vd_job_close_all() freed it first: it waits for the
	 * jobs' coroutines to end, not for the dismissals they posted.
	 */
	if (job_alive(arg))
		job_dismiss(arg);
	qmp_commands_release();
}

static void state_save_main(void *arg)
{
	(void)arg;
	qmp_commands_hold();
	vd_state_save();
	qmp_commands_release();
}

/*
 * A job's end (prepare: mirror's pivot, commit's and stream's new chain;
 * abort) changes the graph and the exports' nodes. With several reactors
 * it runs while main holds the commands' hold, so no command walks the
 * graph or the node table meanwhile; on the job's own reactor, where its
 * nodes live.
 */
struct job_end {
	struct vd_job *job;
	bool prepare; /* else abort */
	int ret;
};

static void job_end_there(void *arg)
{
	struct job_end *e = arg;

	if (e->prepare)
		e->ret = e->job->drv->prepare(e->job);
	else
		e->job->drv->abort(e->job);
}

static void job_end_held(void *arg)
{
	struct job_end *e = arg;

	qmp_commands_hold();
	if (vs_reactor_call(e->job->reactor, job_end_there, e) < 0)
		e->ret = -ESHUTDOWN;
	qmp_commands_release();
}

static int job_end_run(struct vd_job *job, bool prepare)
{
	struct job_end e = { job, prepare, 0 };

	if (vd_reactor_count() == 1 || vd_reactor_run_on(-1, job_end_held, &e) < 0)
		job_end_there(&e);
	return e.ret;
}

static void job_co(void *arg)
{
	struct vd_job *job = arg;
	int ret = 0;

	job->busy = true;
	/*
	 * The job's own copies (and the coroutines it spawns for them) go to
	 * the device in the idle class: the guest's requests first. What the
	 * guest waits for (a mirror's last copies, prepare) is normal again.
	 */
	vs_co_set_io_class(VS_IO_CLASS_IDLE);
	if (!job->cancelled)
		ret = job->drv->run(job);
	vs_co_set_io_class(VS_IO_CLASS_NORMAL);
	if (ret == 0 && !job->cancelled) {
		transition(job, VD_JOB_WAITING);
		transition(job, VD_JOB_PENDING);
		if (!job->auto_finalize) {
			json_object *data = json_object_new_object();

			json_object_object_add(data, "type",
					       json_object_new_string(job->drv->type));
			json_object_object_add(data, "id", json_object_new_string(job->id));
			monitor_emit_event("BLOCK_JOB_PENDING", data);
			json_object_put(data);
			while (!job->finalize_wanted && !job->cancelled)
				job_wait(job);
		}
		if (!job->cancelled) {
			ret = job->drv->prepare ? job_end_run(job, true) : 0;
			if (ret == 0) {
				/* The chain or the exports' nodes changed. */
				if (vd_on_main())
					vd_state_save();
				else
					vd_reactor_post_main(state_save_main, NULL);
				emit_block_event(job, "BLOCK_JOB_COMPLETED", false);
				goto concluded;
			}
		}
	}
	/* Failed or cancelled. */
	transition(job, VD_JOB_ABORTING);
	if (job->drv->abort)
		job_end_run(job, false);
	if (job->cancelled && ret >= 0) {
		free(job->error);
		job->error = strdup("Operation canceled");
		emit_block_event(job, "BLOCK_JOB_CANCELLED", false);
	} else {
		if (!job->error)
			vd_job_set_error(job, "%s", strerror(ret < 0 ? -ret : EIO));
		emit_block_event(job, "BLOCK_JOB_COMPLETED", true);
	}
concluded:
	job->busy = false;
	job->co_running = false;
	transition(job, VD_JOB_CONCLUDED);
	if (job->auto_dismiss) {
		if (vd_on_main() || vd_reactor_post_main(job_dismiss_main, job) < 0)
			job_dismiss(job);
	}
}

/* ---- creating a job ---- */

static bool id_wellformed(const char *id)
{
	if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
		return false;
	for (const char *p = id + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
			return false;
	return true;
}

int vd_job_check_id(struct qmp_call *call, const char *id)
{
	if (!id_wellformed(id))
		return qmp_error(call, QMP_ERR_GENERIC, "Invalid job ID '%s'", id);
	if (job_find(id))
		return qmp_error(call, QMP_ERR_GENERIC, "Job ID '%s' already in use", id);
	return 0;
}

static int arg_speed(struct qmp_call *call, const char *name, uint64_t *out)
{
	int64_t v;
	int r = qmp_arg_int(call, name, false, &v);

	if (r <= 0)
		return r;
	if (v < 0)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter '%s' expects a non-negative value", name);
	*out = (uint64_t)v;
	return 1;
}

int vd_job_parse_on_error(struct qmp_call *call, const char *name, const char *value,
			  enum vd_job_on_error *out)
{
	if (!value)
		return 0;
	for (unsigned i = 0; i < sizeof(on_error_names) / sizeof(on_error_names[0]); i++) {
		if (!strcmp(value, on_error_names[i])) {
			*out = (enum vd_job_on_error)i;
			return 0;
		}
	}
	return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' does not accept value '%s'", name,
			 value);
}

int vd_job_parse_opts(struct qmp_call *call, struct vd_job_opts *opts)
{
	const char *on_error = NULL;

	*opts = (struct vd_job_opts){ .id = "", .auto_finalize = true, .auto_dismiss = true };
	if (qmp_arg_str(call, "job-id", false, &opts->id) < 0 ||
	    qmp_arg_int(call, "speed", false, &opts->speed) < 0 ||
	    qmp_arg_str(call, "on-error", false, &on_error) < 0 ||
	    qmp_arg_bool(call, "auto-finalize", false, &opts->auto_finalize) < 0 ||
	    qmp_arg_bool(call, "auto-dismiss", false, &opts->auto_dismiss) < 0)
		return -1;
	if (on_error && vd_job_parse_on_error(call, "on-error", on_error, &opts->on_error) < 0)
		return -1;
	return 0;
}

struct vd_job *vd_job_new(struct qmp_call *call, const struct vd_job_driver *drv, void *opaque,
			  const struct vd_job_opts *opts, struct vs_node *const *nodes,
			  unsigned nnodes, uint64_t len)
{
	struct vd_job *job = NULL, **tail;

	if (!id_wellformed(opts->id)) {
		qmp_error(call, QMP_ERR_GENERIC, "Invalid job ID '%s'", opts->id);
		goto fail;
	}
	if (job_find(opts->id)) {
		qmp_error(call, QMP_ERR_GENERIC, "Job ID '%s' already in use", opts->id);
		goto fail;
	}
	job = calloc(1, sizeof(*job));
	if (!job || !(job->id = strdup(opts->id)) ||
	    !(job->nodes = calloc(nnodes ? nnodes : 1, sizeof(*job->nodes)))) {
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		goto fail;
	}
	job->drv = drv;
	job->opaque = opaque;
	job->speed = (uint64_t)opts->speed;
	job->on_error = opts->on_error;
	job->auto_finalize = opts->auto_finalize;
	job->auto_dismiss = opts->auto_dismiss;
	job->len = len;
	for (unsigned i = 0; i < nnodes; i++)
		job->nodes[job->nnodes++] = vs_node_ref(nodes[i]);
	for (tail = &jobs; *tail; tail = &(*tail)->next)
		;
	*tail = job;
	job->status = VD_JOB_CREATED;
	emit_status(job);
	if (opts->speed < 0) {
		/* As in qsd: the job exists for a moment, then fails. */
		qmp_error(call, QMP_ERR_GENERIC, "Parameter 'speed' expects a non-negative value");
		job_dismiss(job);
		return NULL;
	}
	job->co_running = true;
	/* Here: a command on a homed node runs on its home reactor (reactors.h). */
	job->reactor = vs_reactor_current();
	if (!vs_co_spawn(job->reactor, job_co, job)) {
		job->co_running = false;
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		job_dismiss(job);
		return NULL;
	}
	/* Running when the command answers, as in qsd (the coroutine starts next). */
	transition(job, VD_JOB_RUNNING);
	return job;

fail:
	if (job) {
		free(job->id);
		free(job);
	}
	if (drv->clean) {
		struct vd_job tmp = { .drv = drv, .opaque = opaque };

		drv->clean(&tmp);
	}
	return NULL;
}

/* ---- the verbs ---- */

static int apply_verb(struct qmp_call *call, struct vd_job *job, enum job_verb verb)
{
	if (verb_states[verb] & (1u << job->status))
		return 0;
	return qmp_error(call, QMP_ERR_GENERIC,
			 "Job '%s' in state '%s' cannot accept command verb '%s'", job->id,
			 status_names[job->status], verb_names[verb]);
}

/*
 * The job named by argument @arg: block-job-* commands say "Block job 'X'
 * not found" (DeviceNotActive), job-* ones "Job not found".
 */
static struct vd_job *job_arg(struct qmp_call *call, const char *arg, bool block)
{
	const char *id;
	struct vd_job *job;

	if (qmp_arg_str(call, arg, true, &id) < 0)
		return NULL;
	job = job_find(id);
	if (!job) {
		if (block)
			qmp_error(call, QMP_ERR_DEVICE_NOT_ACTIVE, "Block job '%s' not found", id);
		else
			qmp_error(call, QMP_ERR_GENERIC, "Job not found");
	}
	return job;
}

/*
 * A verb runs where the job's coroutine does (its flags, its wake queue,
 * its driver's state); the command waits for it on the main reactor.
 */
struct verb_call {
	struct qmp_call *call;
	struct vd_job *job;
	int (*fn)(struct qmp_call *call, struct vd_job *job);
	int ret;
};

static void verb_run(void *arg)
{
	struct verb_call *v = arg;

	v->ret = v->fn(v->call, v->job);
}

static int on_job(struct qmp_call *call, struct vd_job *job,
		  int (*fn)(struct qmp_call *call, struct vd_job *job))
{
	struct verb_call v = { call, job, fn, -1 };

	if (vs_reactor_call(job->reactor, verb_run, &v) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "Job '%s' is stopping", job->id);
	return v.ret;
}

static int job_cancel(struct qmp_call *call, struct vd_job *job, bool force)
{
	if (apply_verb(call, job, VERB_CANCEL) < 0)
		return -1;
	if (job->drv->cancel && !job->drv->cancel(job, force)) {
		/* It ends on its own. */
		vs_co_queue_wake_all(&job->wake);
		return 0;
	}
	job->cancelled = true;
	job->force = job->force || force;
	vs_co_queue_wake_all(&job->wake);
	return 0;
}

static int job_pause(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_PAUSE) < 0)
		return -1;
	if (job->user_paused)
		return qmp_error(call, QMP_ERR_GENERIC, "Job is already paused");
	job->user_paused = true;
	return 0;
}

static int job_resume(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_RESUME) < 0)
		return -1;
	if (!job->user_paused)
		return qmp_error(call, QMP_ERR_GENERIC, "Can't resume a job that was not paused");
	job->user_paused = false;
	job->io_failed = false;
	job->rl_next_ns = 0;
	vs_co_queue_wake_all(&job->wake);
	return 0;
}

static int job_complete(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_COMPLETE) < 0)
		return -1;
	if (job->cancelled || !job->drv->complete)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "The active block job '%s' cannot be completed", job->id);
	job->drv->complete(job);
	vs_co_queue_wake_all(&job->wake);
	return 0;
}

static int job_finalize_wake(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_FINALIZE) < 0)
		return -1;
	job->finalize_wanted = true;
	vs_co_queue_wake_all(&job->wake);
	return 0;
}

static int job_finalize(struct qmp_call *call, struct vd_job *job)
{
	bool paused;

	if (on_job(call, job, job_finalize_wake) < 0)
		return -1;
	/*
	 * As in qsd, the job has concluded (or is gone) when the command
	 * answers. Its end takes the commands' hold (job_end_run()): let go.
	 */
	paused = qmp_commands_pause();
	while (job_alive(job) && job->co_running)
		vs_co_queue_wait(&jobs_changed);
	qmp_commands_resume(paused);
	return 0;
}

static int job_dismiss_verb(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_DISMISS) < 0)
		return -1;
	job_dismiss(job);
	return 0;
}

/* The verbs a job's reactor runs (job_finalize waits on main itself). */
static int job_pause_there(struct qmp_call *call, struct vd_job *job)
{
	return on_job(call, job, job_pause);
}

static int job_resume_there(struct qmp_call *call, struct vd_job *job)
{
	return on_job(call, job, job_resume);
}

static int job_complete_there(struct qmp_call *call, struct vd_job *job)
{
	return on_job(call, job, job_complete);
}

static int job_cancel_soft(struct qmp_call *call, struct vd_job *job)
{
	return job_cancel(call, job, false);
}

static int job_cancel_force(struct qmp_call *call, struct vd_job *job)
{
	return job_cancel(call, job, true);
}

#define JOB_VERB_COMMANDS(verb, block_name, block_arg, job_name, fn)    \
	static int cmd_block_job_##verb(struct qmp_call *call)          \
	{                                                               \
		struct vd_job *job = job_arg(call, block_arg, true);    \
		return job ? fn(call, job) : -1;                        \
	}                                                               \
	QMP_COMMAND(block_job_##verb, block_name, cmd_block_job_##verb, \
		    .params = QMP_PARAMS(block_arg))                    \
	static int cmd_job_##verb(struct qmp_call *call)                \
	{                                                               \
		struct vd_job *job = job_arg(call, "id", false);        \
		return job ? fn(call, job) : -1;                        \
	}                                                               \
	QMP_COMMAND(job_##verb, job_name, cmd_job_##verb, .params = QMP_PARAMS("id"))

JOB_VERB_COMMANDS(pause, "block-job-pause", "device", "job-pause", job_pause_there)
JOB_VERB_COMMANDS(resume, "block-job-resume", "device", "job-resume", job_resume_there)
JOB_VERB_COMMANDS(complete, "block-job-complete", "device", "job-complete", job_complete_there)
JOB_VERB_COMMANDS(finalize, "block-job-finalize", "id", "job-finalize", job_finalize)
JOB_VERB_COMMANDS(dismiss, "block-job-dismiss", "id", "job-dismiss", job_dismiss_verb)

static int cmd_block_job_cancel(struct qmp_call *call)
{
	struct vd_job *job = job_arg(call, "device", true);
	bool force = false;

	if (!job || qmp_arg_bool(call, "force", false, &force) < 0)
		return -1;
	return on_job(call, job, force ? job_cancel_force : job_cancel_soft);
}
QMP_COMMAND(block_job_cancel, "block-job-cancel", cmd_block_job_cancel,
	    .params = QMP_PARAMS("device", "force"))

static int cmd_job_cancel(struct qmp_call *call)
{
	struct vd_job *job = job_arg(call, "id", false);

	return job ? on_job(call, job, job_cancel_force) : -1;
}
QMP_COMMAND(job_cancel, "job-cancel", cmd_job_cancel, .params = QMP_PARAMS("id"))

static int job_set_speed(struct qmp_call *call, struct vd_job *job)
{
	if (apply_verb(call, job, VERB_SET_SPEED) < 0)
		return -1;
	job->speed = job->new_speed;
	job->rl_next_ns = 0;
	return 0;
}

static int cmd_block_job_set_speed(struct qmp_call *call)
{
	struct vd_job *job = job_arg(call, "device", true);
	uint64_t speed = 0;

	if (!job)
		return -1;
	if (!json_object_object_get_ex(call->args, "speed", NULL))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'speed' is missing");
	if (arg_speed(call, "speed", &speed) < 0)
		return -1;
	job->new_speed = speed;
	return on_job(call, job, job_set_speed);
}
QMP_COMMAND(block_job_set_speed, "block-job-set-speed", cmd_block_job_set_speed,
	    .params = QMP_PARAMS("device", "speed"))

/* ---- queries ---- */

static json_object *block_job_info(const struct vd_job *j)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "auto-finalize", json_object_new_boolean(j->auto_finalize));
	json_object_object_add(o, "io-status",
			       json_object_new_string(j->io_failed ? "failed" : "ok"));
	json_object_object_add(o, "device", json_object_new_string(j->id));
	json_object_object_add(o, "auto-dismiss", json_object_new_boolean(j->auto_dismiss));
	json_object_object_add(o, "busy", json_object_new_boolean(j->busy));
	json_object_object_add(o, "len", json_object_new_int64((int64_t)j->len));
	json_object_object_add(o, "offset", json_object_new_int64((int64_t)j->offset));
	json_object_object_add(o, "status", json_object_new_string(status_names[j->status]));
	json_object_object_add(o, "paused", json_object_new_boolean(j->user_paused));
	json_object_object_add(o, "speed", json_object_new_int64((int64_t)j->speed));
	json_object_object_add(o, "ready", json_object_new_boolean(vd_job_is_ready(j)));
	json_object_object_add(o, "type", json_object_new_string(j->drv->type));
	if (j->error && j->status == VD_JOB_CONCLUDED)
		json_object_object_add(o, "error", json_object_new_string(j->error));
	return o;
}

static json_object *job_info(const struct vd_job *j)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "current-progress", json_object_new_int64((int64_t)j->offset));
	json_object_object_add(o, "status", json_object_new_string(status_names[j->status]));
	json_object_object_add(o, "total-progress", json_object_new_int64((int64_t)j->len));
	json_object_object_add(o, "type", json_object_new_string(j->drv->type));
	json_object_object_add(o, "id", json_object_new_string(j->id));
	if (j->error && j->status == VD_JOB_CONCLUDED)
		json_object_object_add(o, "error", json_object_new_string(j->error));
	return o;
}

/*
 * A job's fields (status, progress, error) are its coroutine's: they are
 * read on the job's reactor. The list is stable meanwhile: the commands
 * run one at a time and a job is dismissed under the same hold.
 */
struct job_info_call {
	const struct vd_job *job;
	json_object *(*fn)(const struct vd_job *job);
	json_object *ret;
};

static void job_info_run(void *arg)
{
	struct job_info_call *c = arg;

	c->ret = c->fn(c->job);
}

static json_object *job_list(json_object *(*fn)(const struct vd_job *job))
{
	json_object *list = json_object_new_array();

	for (struct vd_job *j = jobs; j; j = j->next) {
		struct job_info_call c = { j, fn, NULL };

		if (vs_reactor_call(j->reactor, job_info_run, &c) < 0 || !c.ret)
			c.ret = fn(j); /* its reactor stopped: nothing runs there now */
		json_object_array_add(list, c.ret);
	}
	return list;
}

static int cmd_query_block_jobs(struct qmp_call *call)
{
	call->ret = job_list(block_job_info);
	return 0;
}
QMP_COMMAND(query_block_jobs, "query-block-jobs", cmd_query_block_jobs, .params = QMP_PARAMS(NULL))

static int cmd_query_jobs(struct qmp_call *call)
{
	call->ret = job_list(job_info);
	return 0;
}
QMP_COMMAND(query_jobs, "query-jobs", cmd_query_jobs, .params = QMP_PARAMS(NULL))

static void job_cancel_here(void *arg)
{
	struct vd_job *j = arg;

	j->cancelled = j->force = true;
	vs_co_queue_wake_all(&j->wake);
}

void vd_job_close_all(void)
{
	for (;;) {
		struct vd_job *todo = NULL;
		bool running = false;

		for (struct vd_job *j = jobs; j && !todo; j = j->next) {
			if (!j->co_running)
				continue;
			running = true;
			if (!j->cancelled || !j->force)
				todo = j;
		}
		if (todo) {
			/* Woken on its reactor; the list may change meanwhile. */
			if (vs_reactor_call(todo->reactor, job_cancel_here, todo) < 0)
				job_cancel_here(todo);
			continue;
		}
		if (!running)
			break;
		vs_co_queue_wait(&jobs_changed);
	}
	while (jobs)
		job_free(jobs);
}

int vd_job_open_drive_target(struct qmp_call *call, struct vs_node *src, struct vs_node *backing,
			     const char *file, const char *format, bool existing,
			     struct vs_node **out)
{
	struct vs_error err = { 0 };
	struct vs_open_opts oo = {
		.filename = file,
		.format = format,
		.no_backing = true,
		.cache = vs_node_cache_mode(src),
	};

	if (!existing) {
		struct vs_kv kv[2] = { { "backing_file", NULL }, { "backing_fmt", NULL } };

		if (backing) {
			kv[0].value = vs_node_filename(backing);
			kv[1].value = vs_node_format(backing);
		}
		if (vs_image_create(file, format, vs_node_size(src), kv, backing ? 2 : 0, &err) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	if (vs_image_open(out, &oo, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (backing && vs_node_replace_backing(*out, backing, &err) < 0) {
		vs_node_close(*out);
		*out = NULL;
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	return 0;
}
