/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor: the verbs that drive a running daemon over QMP, with virsh's
 * names (blockresize, snapshot-create-as, blockcommit, blockpull,
 * blockcopy, blockjob, blkdeviotune, domblkstat) and a domblklist-like
 * blklist. They speak qemu-storage-daemon 7.2's QMP shapes, which vstord
 * takes too, so they drive either daemon.
 *
 * Where virsh takes a domain and a disk, these take one EXPORT argument:
 * the id of a block export (resolved with query-block-exports to its
 * node, below any filter node a job put above it) or a node name. Block
 * jobs started here get the job id "vstor-" and the argument, so that
 * blockjob finds the job again with the same argument, across pivots.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vstor-qmp.h"
#include "vstor.h"
#include "vstor/node.h"

/* How often a waiting verb looks at its job (and prints progress). */
#define JOB_POLL_MS 200

/* A verb's connection and the node it works on. */
struct blk {
	struct vstor_ctx *c;
	struct vstor_qmp *q;
	struct vstor_qmp_error err;
	const char *target;	/* the EXPORT argument as given */
	const char *export_id;	/* when the target is an export */
	char node[128];		/* the node it resolved to */
	char job_id[160];	/* "vstor-" and the argument */
	json_object *nodes;	/* query-named-block-nodes, once asked */
	char created[PATH_MAX]; /* blockcopy --dest: the file it created */
};

/* ---- Connection and errors --------------------------------------------- */

/* Print @b->err for command @cmd as virsh prints a failed monitor command. */
static int qmp_fail(struct blk *b, const char *cmd)
{
	struct vstor_qmp_error *e = &b->err;

	if (!e->cls[0])
		return vstor_error(b->c, e->code ? e->code : -EIO, "%s", e->desc);
	if (!strcmp(e->cls, "CommandNotFound"))
		return vstor_error(b->c, -EOPNOTSUPP,
				   "Operation not supported: the daemon has no command '%s'", cmd);
	return vstor_error(b->c, !strcmp(e->cls, "DeviceNotFound") ? -ENOENT : -EIO,
			   "internal error: unable to execute QEMU command '%s': %s", cmd, e->desc);
}

/* Run @cmd (@args taken): 0 with *@ret (may be NULL), or 1 after the error is printed. */
static int run(struct blk *b, const char *cmd, json_object *args, json_object **ret)
{
	if (vstor_qmp_execute(b->q, cmd, args, ret, &b->err) != 0)
		return qmp_fail(b, cmd);
	return 0;
}

static json_object *query_nodes(struct blk *b, bool refresh)
{
	if (refresh) {
		json_object_put(b->nodes);
		b->nodes = NULL;
	}
	if (!b->nodes && run(b, "query-named-block-nodes", NULL, &b->nodes))
		return NULL;
	return b->nodes;
}

/* The entry of node @name in query-named-block-nodes, or NULL. */
static json_object *find_node(struct blk *b, const char *name)
{
	json_object *nodes = query_nodes(b, false);

	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i);
		const char *nn = vstor_json_str(n, "node-name");

		if (nn && !strcmp(nn, name))
			return n;
	}
	return NULL;
}

/*
 * A node named by @name or by its image's file name (the format node, not
 * the protocol node below it); NULL when none.
 */
static const char *node_by_name_or_file(struct blk *b, const char *name)
{
	json_object *nodes = query_nodes(b, false), *n = find_node(b, name);

	if (n)
		return vstor_json_str(n, "node-name");
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		const char *file, *drv;

		n = json_object_array_get_idx(nodes, i);
		file = vstor_json_str(n, "file");
		drv = vstor_json_str(n, "drv");
		if (file && drv && !strcmp(file, name) && strcmp(drv, "file") &&
		    strcmp(drv, "host_device"))
			return vstor_json_str(n, "node-name");
	}
	return NULL;
}

static bool is_filter(const char *drv)
{
	static const char *const filters[] = { "mirror_top",	  "commit_top", "throttle",
					       "copy-on-read",	  "compress",	"preallocate",
					       "snapshot-access", NULL };

	for (const char *const *f = filters; drv && *f; f++)
		if (!strcmp(drv, *f))
			return true;
	return false;
}

static bool is_protocol(const char *drv)
{
	return drv && (!strcmp(drv, "file") || !strcmp(drv, "host_device") || !strcmp(drv, "nbd") ||
		       !strcmp(drv, "vol"));
}

/*
 * The node a verb works on for export node @nn: @nn, or below a filter a
 * job put above it (qsd's mirror_top, commit_top), the format node of the
 * same image.
 */
static const char *below_filters(struct blk *b, const char *nn)
{
	json_object *nodes = query_nodes(b, false), *n = find_node(b, nn);
	const char *file = vstor_json_str(n, "file");

	if (!n || !is_filter(vstor_json_str(n, "drv")) || !file)
		return nn;
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *m = json_object_array_get_idx(nodes, i);
		const char *drv = vstor_json_str(m, "drv"), *f = vstor_json_str(m, "file");

		if (f && !strcmp(f, file) && !is_filter(drv) && !is_protocol(drv))
			return vstor_json_str(m, "node-name");
	}
	return nn;
}

/* A QMP id from @prefix and @name (letters, digits, '-', '.', '_'; at most @max). */
static void make_id(char *out, size_t len, size_t max, const char *prefix, const char *name)
{
	size_t i = strlen(prefix), k = 0;

	if (max >= len)
		max = len - 1;
	snprintf(out, len, "%s", prefix);
	for (; name[k] && i < max; k++) {
		char ch = name[k];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';

		out[i++] = ok ? ch : '_';
	}
	out[i] = '\0';
}

/* A node name from @prefix and @name that no node has yet (at most 31 characters). */
static void make_node_name(struct blk *b, char *out, size_t len, const char *prefix,
			   const char *name)
{
	char base[32], cand[48];

	make_id(base, sizeof(base), 27, prefix, name);
	snprintf(cand, sizeof(cand), "%s", base);
	for (int k = 2; find_node(b, cand) && k < 1000; k++)
		snprintf(cand, sizeof(cand), "%s-%d", base, k);
	cand[31] = '\0'; /* QEMU's limit on node names */
	memcpy(out, cand, len < 32 ? len : 32);
	out[len - 1] = '\0';
}

/*
 * Resolve b->target: an export id (to its node) or a node name. Returns 0,
 * 1 after an error is printed, 2 when nothing has that name (printed only
 * with @report).
 */
static int resolve_target(struct blk *b, bool report)
{
	json_object *exports = NULL;
	int ret = 1;

	if (run(b, "query-block-exports", NULL, &exports))
		return 1;
	for (size_t i = 0; i < json_object_array_length(exports); i++) {
		json_object *e = json_object_array_get_idx(exports, i);
		const char *id = vstor_json_str(e, "id"), *nn = vstor_json_str(e, "node-name");

		if (id && nn && !strcmp(id, b->target)) {
			b->export_id = b->target;
			if (!query_nodes(b, false)) {
				json_object_put(exports);
				return 1;
			}
			snprintf(b->node, sizeof(b->node), "%s", below_filters(b, nn));
			ret = 0;
			break;
		}
	}
	json_object_put(exports);
	if (ret && find_node(b, b->target)) {
		snprintf(b->node, sizeof(b->node), "%s", b->target);
		ret = 0;
	} else if (ret && b->nodes) {
		if (!report)
			return 2;
		return vstor_error(b->c, -ENOENT,
				   "invalid argument: no export or block node named '%s'",
				   b->target);
	}
	/* The job id follows the argument, which stays the same across pivots. */
	if (ret == 0)
		make_id(b->job_id, sizeof(b->job_id), sizeof(b->job_id) - 1, "vstor-", b->target);
	return ret;
}

/* Connect; with @target, resolve it too. Returns 0, or 1 after the error is printed. */
static int blk_open(struct vstor_ctx *c, struct blk *b, const char *target)
{
	char buf[VS_POOL_PATH_MAX + 16];
	const char *path = vstor_daemon_socket(c, "connect", buf, sizeof(buf));

	memset(b, 0, sizeof(*b));
	b->c = c;
	b->target = target;
	if (vstor_qmp_connect(path, &b->q, &b->err) < 0)
		return vstor_error(c, b->err.code, "%s", b->err.desc);
	if (target && resolve_target(b, true)) {
		vstor_qmp_close(b->q);
		json_object_put(b->nodes);
		b->q = NULL;
		b->nodes = NULL;
		return 1;
	}
	return 0;
}

static void blk_close(struct blk *b)
{
	vstor_qmp_close(b->q);
	json_object_put(b->nodes);
}

static void print_json(json_object *o)
{
	printf("%s\n",
	       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
							 JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A JSON result of a verb that has nothing else to say: {"export": ..., "node": ...}. */
static void print_json_done(struct blk *b, const char *key, const char *val)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "node", json_object_new_string(b->node));
	if (b->export_id)
		json_object_object_add(o, "export", json_object_new_string(b->export_id));
	if (key)
		json_object_object_add(o, key, json_object_new_string(val));
	print_json(o);
	json_object_put(o);
}

/*
 * A bandwidth as virsh takes it: a plain number is MiB/s, a scaled one
 * (with a unit) bytes/s. Returns 0, or 1 after the error is printed.
 */
static int parse_bandwidth(struct vstor_ctx *c, uint64_t *out)
{
	const char *s = opt_get(c, "bandwidth");
	size_t n;

	*out = 0;
	if (!s)
		return 0;
	n = strspn(s, "0123456789");
	if (n && !s[n]) {
		if (vstor_parse_size(s, out) < 0 || *out > (uint64_t)INT64_MAX >> 20)
			goto bad;
		*out <<= 20;
		return 0;
	}
	if (vstor_parse_size(s, out) == 0)
		return 0;
bad:
	return vstor_error(c, -EINVAL,
			   "Scaled numeric value '%s' for <--bandwidth> option is malformed or "
			   "out of range",
			   s);
}

/* --timeout SECONDS (implies --wait); 0 when not given. */
static int parse_timeout(struct vstor_ctx *c, long *out)
{
	const char *s = opt_get(c, "timeout");
	char *end;

	*out = 0;
	if (!s)
		return 0;
	*out = strtol(s, &end, 10);
	if (*end || end == s || *out <= 0 || *out > INT_MAX)
		return vstor_error(c, -EINVAL, "invalid timeout");
	return 0;
}

/* ---- Block jobs ----------------------------------------------------------- */

static const char *job_label(const char *type)
{
	if (!type)
		return "Block Job";
	if (!strcmp(type, "commit"))
		return "Block Commit";
	if (!strcmp(type, "stream"))
		return "Block Pull";
	if (!strcmp(type, "mirror"))
		return "Block Copy";
	if (!strcmp(type, "backup"))
		return "Block Backup";
	return "Block Job";
}

/* Our job's entry in query-block-jobs (*@job, caller puts it; NULL if none). */
static int find_job(struct blk *b, const char *id, json_object **job)
{
	json_object *jobs = NULL;

	*job = NULL;
	if (run(b, "query-block-jobs", NULL, &jobs))
		return 1;
	for (size_t i = 0; i < json_object_array_length(jobs); i++) {
		json_object *j = json_object_array_get_idx(jobs, i);
		const char *dev = vstor_json_str(j, "device");

		if (dev && !strcmp(dev, id)) {
			*job = json_object_get(j);
			break;
		}
	}
	json_object_put(jobs);
	return 0;
}

static void print_progress(const char *label, long long cur, long long end)
{
	int pct = end > 0 ? (int)(cur * 100 / end) : 0;

	if (pct > 100)
		pct = 100;
	/* virsh's layout, on stderr. */
	fprintf(stderr, "\r%s: [%3d %%]", label, pct);
	fflush(stderr);
}

enum job_action {
	JOB_STOP_AT_READY, /* leave the job running once it is ready */
	JOB_COMPLETE,	   /* block-job-complete once ready (pivot) */
	JOB_SOFT_CANCEL,   /* block-job-cancel once ready (finish, keep overlay) */
};

enum job_outcome {
	JOB_READY,     /* ready, and left running */
	JOB_DONE,      /* completed without error (or finished by a soft cancel) */
	JOB_FAILED,    /* completed with an error (in @msg) */
	JOB_ABORTED,   /* cancelled by someone else */
	JOB_TIMED_OUT, /* --timeout ran out: cancelled */
	JOB_LOST,      /* the connection failed (in @msg) */
};

/*
 * Wait for job @id: events (BLOCK_JOB_READY, _COMPLETED, _CANCELLED) say
 * what happened; query-block-jobs every JOB_POLL_MS shows progress with
 * @verbose and notices a job that vanished. @timeout_s > 0 cancels the job
 * when it runs out.
 */
static enum job_outcome job_wait(struct blk *b, const char *id, const char *label,
				 enum job_action action, bool verbose, long timeout_s, char *msg,
				 size_t msglen)
{
	time_t deadline = timeout_s > 0 ? time(NULL) + timeout_s : 0;
	bool acted = false, timed_out = false;
	int missing = 0;

	msg[0] = '\0';
	for (;;) {
		json_object *ev = NULL, *data = NULL;
		int r = vstor_qmp_next_event(b->q, JOB_POLL_MS, &ev, &b->err);

		if (r < 0) {
			snprintf(msg, msglen, "%s", b->err.desc);
			return JOB_LOST;
		}
		if (r > 0) {
			const char *name = vstor_json_str(ev, "event"), *dev;
			enum job_outcome out = JOB_LOST;
			bool done = false;

			json_object_object_get_ex(ev, "data", &data);
			dev = vstor_json_str(data, "device");
			if (!name || !dev || strcmp(dev, id)) {
				json_object_put(ev);
				continue;
			}
			if (!strcmp(name, "BLOCK_JOB_READY") && !acted && !timed_out) {
				if (verbose)
					print_progress(label, 1, 1);
				if (action == JOB_STOP_AT_READY) {
					json_object_put(ev);
					return JOB_READY;
				}
				json_object *args = json_object_new_object();

				json_object_object_add(args, "device", json_object_new_string(id));
				acted = true;
				if (vstor_qmp_execute(b->q,
						      action == JOB_COMPLETE ?
							      "block-job-complete" :
							      "block-job-cancel",
						      args, NULL, &b->err) != 0) {
					snprintf(msg, msglen, "%s", b->err.desc);
					json_object_put(ev);
					return JOB_FAILED;
				}
			} else if (!strcmp(name, "BLOCK_JOB_COMPLETED")) {
				const char *e = vstor_json_str(data, "error");

				if (verbose && !e)
					print_progress(label, 1, 1);
				if (e)
					snprintf(msg, msglen, "%s", e);
				out = e ? JOB_FAILED : timed_out ? JOB_TIMED_OUT : JOB_DONE;
				done = true;
			} else if (!strcmp(name, "BLOCK_JOB_CANCELLED")) {
				out = timed_out				 ? JOB_TIMED_OUT :
				      acted && action == JOB_SOFT_CANCEL ? JOB_DONE :
									   JOB_ABORTED;
				done = true;
			}
			json_object_put(ev);
			if (done) {
				if (verbose)
					fputc('\n', stderr);
				return out;
			}
			continue;
		}
		/* Nothing for JOB_POLL_MS: look at the job (progress, liveness). */
		json_object *job = NULL;

		if (find_job(b, id, &job)) {
			snprintf(msg, msglen, "%s", b->err.desc);
			return JOB_LOST;
		}
		if (!job && ++missing > 2) {
			snprintf(msg, msglen, "the job '%s' is gone", id);
			return JOB_FAILED;
		}
		if (job && verbose)
			print_progress(label, vstor_json_int(job, "offset", 0),
				       vstor_json_int(job, "len", 0));
		json_object_put(job);
		if (deadline && !timed_out && time(NULL) >= deadline) {
			json_object *args = json_object_new_object();

			timed_out = true;
			json_object_object_add(args, "device", json_object_new_string(id));
			json_object_object_add(args, "force", json_object_new_boolean(true));
			vstor_qmp_execute(b->q, "block-job-cancel", args, NULL, &b->err);
		}
	}
}

/*
 * Report a waited-for job as virsh does ("\nCommit complete\n", "Commit
 * failed" ...). @what is "Commit", "Pull" or "Copy"; @ok the message of
 * a successful end. Returns the exit code.
 */
static int job_report(struct blk *b, enum job_outcome out, const char *what, const char *ok,
		      const char *msg)
{
	struct vstor_ctx *c = b->c;

	switch (out) {
	case JOB_READY:
	case JOB_DONE:
		if (c->json)
			print_json_done(b, "result", out == JOB_READY ? "ready" : "done");
		else
			vstor_msg(c, "\n%s\n", ok);
		return 0;
	case JOB_FAILED:
		return vstor_error(c, -EIO, "%s failed%s%s", what, msg[0] ? ": " : "", msg);
	case JOB_ABORTED:
		return vstor_error(c, -ECANCELED, "%s aborted", what);
	case JOB_TIMED_OUT:
		return vstor_error(c, -ETIMEDOUT, "%s aborted (timeout)", what);
	case JOB_LOST:
		break;
	}
	return vstor_error(c, -EIO, "%s", msg);
}

/* Start @cmd (@args taken) as our job, then wait as the options say. */
static int start_and_wait(struct blk *b, const char *cmd, json_object *args, const char *what,
			  const char *label, enum job_action action, bool wait, const char *ok)
{
	struct vstor_ctx *c = b->c;
	enum job_outcome out;
	char msg[1024];
	long timeout_s;

	if (parse_timeout(c, &timeout_s)) {
		json_object_put(args);
		return 1;
	}
	if (timeout_s)
		wait = true;
	if (run(b, cmd, args, NULL))
		return 1;
	if (!wait) {
		if (c->json)
			print_json_done(b, "job", b->job_id);
		else
			vstor_msg(c, "%s started\n", label);
		return 0;
	}
	out = job_wait(b, b->job_id, label, action, opt_bool(c, "verbose"), timeout_s, msg,
		       sizeof(msg));
	return job_report(b, out, what, ok, msg);
}

/* --base / --top: a node name or an image's file name, as QMP's X-node or X. */
static void add_layer(struct blk *b, json_object *args, const char *opt, const char *key)
{
	const char *v = opt_get(b->c, opt), *node;
	char knode[32];

	if (!v)
		return;
	node = node_by_name_or_file(b, v);
	snprintf(knode, sizeof(knode), "%s-node", key);
	if (node)
		json_object_object_add(args, knode, json_object_new_string(node));
	else
		json_object_object_add(args, key, json_object_new_string(v));
}

/* ---- blockcommit, blockpull ----------------------------------------------- */

static int cmd_blockcommit(struct vstor_ctx *c)
{
	bool active = opt_bool(c, "active"), pivot = opt_bool(c, "pivot");
	bool keep = opt_bool(c, "keep-overlay");
	const char *top = opt_get(c, "top");
	enum job_action action = JOB_STOP_AT_READY;
	json_object *args;
	uint64_t bw;
	struct blk b;
	int ret;

	if (pivot && keep)
		return vstor_error(c, -EINVAL,
				   "Options --pivot and --keep-overlay are mutually "
				   "exclusive");
	if ((pivot || keep) && !active)
		return vstor_error(c, -EINVAL, "--%s requires --active",
				   pivot ? "pivot" : "keep-overlay");
	if (parse_bandwidth(c, &bw) || blk_open(c, &b, opt_get(c, "export")))
		return 1;
	if (!active) {
		const char *tn = top ? node_by_name_or_file(&b, top) : NULL;

		if (!top || (tn && !strcmp(tn, b.node))) {
			blk_close(&b);
			return vstor_error(c, -EINVAL,
					   "invalid argument: commit of '%s' active layer requires "
					   "active flag",
					   b.target);
		}
	}
	args = json_object_new_object();
	json_object_object_add(args, "job-id", json_object_new_string(b.job_id));
	json_object_object_add(args, "device", json_object_new_string(b.node));
	add_layer(&b, args, "base", "base");
	if (top && !active)
		add_layer(&b, args, "top", "top");
	if (bw)
		json_object_object_add(args, "speed", json_object_new_int64((int64_t)bw));
	if (pivot)
		action = JOB_COMPLETE;
	else if (keep)
		action = JOB_SOFT_CANCEL;
	ret = start_and_wait(&b, "block-commit", args, "Commit",
			     active ? "Active Block Commit" : "Block Commit", action,
			     opt_bool(c, "wait") || pivot || keep,
			     pivot  ? "Successfully pivoted" :
			     keep   ? "Commit complete, overlay image kept" :
			     active ? "Now in synchronized phase" :
				      "Commit complete");
	blk_close(&b);
	return ret;
}

static int cmd_blockpull(struct vstor_ctx *c)
{
	json_object *args;
	uint64_t bw;
	struct blk b;
	int ret;

	if (parse_bandwidth(c, &bw) || blk_open(c, &b, opt_get(c, "export")))
		return 1;
	args = json_object_new_object();
	json_object_object_add(args, "job-id", json_object_new_string(b.job_id));
	json_object_object_add(args, "device", json_object_new_string(b.node));
	add_layer(&b, args, "base", "base");
	if (bw)
		json_object_object_add(args, "speed", json_object_new_int64((int64_t)bw));
	ret = start_and_wait(&b, "block-stream", args, "Pull", "Block Pull", JOB_STOP_AT_READY,
			     opt_bool(c, "wait"), "Pull complete");
	blk_close(&b);
	return ret;
}

/* ---- blockcopy ------------------------------------------------------------- */

/* The node's backing node (for --shallow): the node whose file is its backing file. */
static const char *backing_node(struct blk *b, json_object *n)
{
	const char *bf = vstor_json_str(n, "backing_file");

	return bf ? node_by_name_or_file(b, bf) : NULL;
}

/*
 * Create the copy's image: --dest PATH (unless --reuse-external) with
 * libstore, or --dest-vol POOL/VOL in its pool. Fills @file with the
 * blockdev-add "file" member. Returns 0, or 1 after the error is printed.
 */
static int create_dest(struct blk *b, json_object *src, const char *fmt, json_object **file)
{
	struct vstor_ctx *c = b->c;
	const char *dest = opt_get(c, "dest"), *dvol = opt_get(c, "dest-vol");
	json_object *img = NULL;
	uint64_t size = 0;

	json_object_object_get_ex(src, "image", &img);
	size = (uint64_t)vstor_json_int(img, "virtual-size", 0);
	*file = json_object_new_object();
	if (dest) {
		char abs[PATH_MAX];

		if (dest[0] != '/') {
			if (!getcwd(abs, sizeof(abs)) ||
			    strlen(abs) + strlen(dest) + 2 > sizeof(abs))
				return vstor_error(c, -ENAMETOOLONG, "path too long: %s", dest);
			strcat(abs, "/");
			strcat(abs, dest);
			dest = abs;
		}
		if (!opt_bool(c, "reuse-external")) {
			struct vs_kv kv[2];
			size_t nkv = 0;

			if (access(dest, F_OK) == 0)
				return vstor_error(c, -EEXIST,
						   "requested operation is not valid: "
						   "destination file '%s' exists, use "
						   "--reuse-external",
						   dest);
			if (opt_bool(c, "shallow")) {
				kv[nkv++] = (struct vs_kv){ "backing_file",
							    vstor_json_str(src, "backing_file") };
				kv[nkv++] = (struct vs_kv){ "backing_fmt", "qcow2" };
				json_object *bi = NULL;

				if (json_object_object_get_ex(img, "backing-image", &bi) &&
				    vstor_json_str(bi, "format"))
					kv[1].value = vstor_json_str(bi, "format");
			}
			vs_error_clear(&c->err);
			if (vs_image_create_ex(dest, fmt, size, kv, nkv, VS_CREATE_NO_BACKING_CHECK,
					       &c->err) < 0)
				return vstor_error_err(c, "cannot create '%s'", dest);
			snprintf(b->created, sizeof(b->created), "%s", dest);
		}
		json_object_object_add(*file, "driver", json_object_new_string("file"));
		json_object_object_add(*file, "filename", json_object_new_string(dest));
		return 0;
	}
	/* --dest-vol POOL/VOL */
	const char *slash = strchr(dvol, '/');
	char pool[VS_POOL_NAME_MAX + 1];
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_vol_info vi;
	struct vs_pool *p;

	if (!slash || slash == dvol || !slash[1] || (size_t)(slash - dvol) > VS_POOL_NAME_MAX)
		return vstor_error(c, -EINVAL, "--dest-vol takes POOL/VOLUME, not '%s'", dvol);
	if (!c->st)
		return vstor_error(c, -ENOENT, "--dest-vol needs vstor's state directory");
	if (opt_bool(c, "shallow"))
		return vstor_error(c, -EOPNOTSUPP,
				   "Operation not supported: --shallow with --dest-vol");
	snprintf(pool, sizeof(pool), "%.*s", (int)(slash - dvol), dvol);
	p = vstor_pool_get(c, pool);
	if (!p)
		return 1;
	vs_error_clear(&c->err);
	if (!opt_bool(c, "reuse-external")) {
		a.name = slash + 1;
		a.format = fmt;
		a.capacity = size;
		if (vs_pool_vol_create(p, &a, &c->err) < 0) {
			vs_pool_free(p);
			return vstor_error_err(c, "Failed to create vol %s", slash + 1);
		}
	}
	if (vs_pool_vol_info(p, slash + 1, &vi, &c->err) < 0) {
		vs_pool_free(p);
		return vstor_error_err(c, "failed to get vol '%s'", slash + 1);
	}
	vs_pool_free(p);
	if (vstor_qmp_is_vstord(b->q)) {
		/* vstord opens pool volumes itself (any backend). */
		json_object_object_add(*file, "driver", json_object_new_string("vol"));
		json_object_object_add(*file, "pool", json_object_new_string(pool));
		json_object_object_add(*file, "volume", json_object_new_string(slash + 1));
	} else if (vi.path[0] == '/') {
		json_object_object_add(*file, "driver", json_object_new_string("file"));
		json_object_object_add(*file, "filename", json_object_new_string(vi.path));
	} else {
		return vstor_error(c, -EOPNOTSUPP,
				   "Operation not supported: volume '%s' is not a local file; only "
				   "vstord opens it",
				   dvol);
	}
	return 0;
}

static int cmd_blockcopy(struct vstor_ctx *c)
{
	bool pivot = opt_bool(c, "pivot"), finish = opt_bool(c, "finish");
	const char *fmt = opt_get(c, "format");
	json_object *src, *file = NULL, *args;
	enum job_action action = JOB_STOP_AT_READY;
	char target[32];
	uint64_t bw;
	struct blk b;
	int ret;

	if (!opt_get(c, "dest") == !opt_get(c, "dest-vol"))
		return vstor_error(c, -EINVAL, "exactly one of --dest and --dest-vol is required");
	if (pivot && finish)
		return vstor_error(c, -EINVAL,
				   "Options --pivot and --finish are mutually exclusive");
	if (parse_bandwidth(c, &bw) || blk_open(c, &b, opt_get(c, "export")))
		return 1;
	src = find_node(&b, b.node);
	if (!src) {
		blk_close(&b);
		return vstor_error(c, -ENOENT, "node '%s' is gone", b.node);
	}
	if (!fmt)
		fmt = vstor_json_str(src, "drv");
	if (!fmt || (strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))) {
		blk_close(&b);
		return vstor_error(c, -EINVAL, "unsupported format '%s' for the copy",
				   fmt ? fmt : "?");
	}
	if (opt_bool(c, "shallow") && !backing_node(&b, src)) {
		blk_close(&b);
		return vstor_error(c, -EINVAL, "--shallow: '%s' has no backing node", b.target);
	}
	if (!vstor_qmp_has_command(b.q, "blockdev-mirror")) {
		blk_close(&b);
		return vstor_error(c, -EOPNOTSUPP,
				   "Operation not supported: the daemon has no command "
				   "'blockdev-mirror'");
	}
	if (create_dest(&b, src, fmt, &file)) {
		json_object_put(file);
		blk_close(&b);
		return 1;
	}
	/* The target node, then the mirror job onto it. */
	make_node_name(&b, target, sizeof(target), "copy-", b.target);
	args = json_object_new_object();
	json_object_object_add(args, "driver", json_object_new_string(fmt));
	json_object_object_add(args, "node-name", json_object_new_string(target));
	json_object_object_add(args, "file", file);
	if (!strcmp(fmt, "qcow2")) {
		const char *bn = opt_bool(c, "shallow") ? backing_node(&b, src) : NULL;

		json_object_object_add(args, "backing", bn ? json_object_new_string(bn) : NULL);
	}
	if (run(&b, "blockdev-add", args, NULL)) {
		if (b.created[0])
			unlink(b.created); /* nothing uses it */
		blk_close(&b);
		return 1;
	}
	args = json_object_new_object();
	json_object_object_add(args, "job-id", json_object_new_string(b.job_id));
	json_object_object_add(args, "device", json_object_new_string(b.node));
	json_object_object_add(args, "target", json_object_new_string(target));
	json_object_object_add(args, "sync",
			       json_object_new_string(opt_bool(c, "shallow") ? "top" : "full"));
	if (bw)
		json_object_object_add(args, "speed", json_object_new_int64((int64_t)bw));
	if (pivot)
		action = JOB_COMPLETE;
	else if (finish)
		action = JOB_SOFT_CANCEL;
	ret = start_and_wait(&b, "blockdev-mirror", args, "Copy", "Block Copy", action,
			     opt_bool(c, "wait") || pivot || finish,
			     pivot  ? "Successfully pivoted" :
			     finish ? "Successfully copied" :
				      "Now in mirroring phase");
	/* The target stays only as the new active node, or under a running job. */
	if (!pivot && (finish || ret)) {
		json_object *del = json_object_new_object();

		json_object_object_add(del, "node-name", json_object_new_string(target));
		vstor_qmp_execute(b.q, "blockdev-del", del, NULL, &b.err);
	}
	blk_close(&b);
	return ret;
}

/* ---- blockjob ---------------------------------------------------------------- */

/*
 * After a copy was aborted: delete the target nodes blockcopy added for
 * this argument ("copy-TARGET[-N]"); the daemon refuses those still in
 * use (a copy pivoted to earlier), which stay.
 */
static void drop_copy_targets(struct blk *b)
{
	json_object *nodes = query_nodes(b, true);
	char prefix[32];
	size_t plen;

	make_id(prefix, sizeof(prefix), 27, "copy-", b->target);
	plen = strlen(prefix);
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		const char *nn = vstor_json_str(json_object_array_get_idx(nodes, i), "node-name");
		json_object *args;

		if (!nn || strncmp(nn, prefix, plen) || (nn[plen] && nn[plen] != '-'))
			continue;
		args = json_object_new_object();
		json_object_object_add(args, "node-name", json_object_new_string(nn));
		vstor_qmp_execute(b->q, "blockdev-del", args, NULL, NULL);
	}
}

/* Our job id for the target, else the target itself as a job id. */
static int job_of(struct blk *b, json_object **job)
{
	if (find_job(b, b->job_id, job))
		return 1;
	if (!*job && find_job(b, b->target, job))
		return 1;
	return 0;
}

static int cmd_blockjob(struct vstor_ctx *c)
{
	bool do_abort = opt_bool(c, "abort"), pivot = opt_bool(c, "pivot");
	const char *bws = opt_get(c, "bandwidth");
	json_object *job = NULL, *args;
	const char *id;
	uint64_t bw;
	struct blk b;
	int ret = 0;

	if (do_abort && pivot)
		return vstor_error(c, -EINVAL,
				   "Options --abort and --pivot are mutually exclusive");
	if ((do_abort || pivot) && bws)
		return vstor_error(c, -EINVAL, "--bandwidth cannot go with --abort or --pivot");
	if (parse_bandwidth(c, &bw))
		return 1;
	memset(&b, 0, sizeof(b));
	if (blk_open(c, &b, NULL))
		return 1;
	b.target = opt_get(c, "export");
	/* The job of an export or node, or a job named directly. */
	ret = resolve_target(&b, false);
	if (ret == 1) {
		blk_close(&b);
		return 1;
	}
	ret = 0;
	if (!b.job_id[0])
		make_id(b.job_id, sizeof(b.job_id), sizeof(b.job_id) - 1, "vstor-", b.target);
	if (job_of(&b, &job)) {
		blk_close(&b);
		return 1;
	}
	if (!job) {
		if (do_abort || pivot || bws) {
			ret = vstor_error(c, -ENOENT,
					  "Requested operation is not valid: No active block job "
					  "'%s'",
					  b.target);
		} else if (c->json) {
			printf("null\n");
		} else {
			vstor_msg(c, "No current block job for %s\n", b.target);
		}
		blk_close(&b);
		return ret;
	}
	id = vstor_json_str(job, "device");
	args = json_object_new_object();
	json_object_object_add(args, "device", json_object_new_string(id));
	if (do_abort) {
		json_object_object_add(args, "force", json_object_new_boolean(true));
		ret = run(&b, "block-job-cancel", args, NULL);
		/* As virsh: wait until the job is gone, unless --async. */
		if (!ret && !opt_bool(c, "async")) {
			char msg[1024];
			enum job_outcome out = job_wait(&b, id, "Block Job", JOB_STOP_AT_READY,
							false, 0, msg, sizeof(msg));

			if (out == JOB_LOST)
				ret = vstor_error(c, -EIO, "%s", msg);
			else
				drop_copy_targets(&b);
		}
	} else if (pivot) {
		ret = run(&b, "block-job-complete", args, NULL);
		if (!ret) {
			char msg[1024];
			enum job_outcome out = job_wait(&b, id, "Block Job", JOB_STOP_AT_READY,
							false, 0, msg, sizeof(msg));

			if (out != JOB_DONE)
				ret = job_report(&b, out, "Pivot", "", msg);
			else if (!c->json)
				vstor_msg(c, "Successfully pivoted\n");
		}
	} else if (bws) {
		json_object_object_add(args, "speed", json_object_new_int64((int64_t)bw));
		ret = run(&b, "block-job-set-speed", args, NULL);
	} else {
		json_object_put(args);
		const char *label = job_label(vstor_json_str(job, "type"));
		long long cur = vstor_json_int(job, "offset", 0),
			  end = vstor_json_int(job, "len", 0);
		long long speed = vstor_json_int(job, "speed", 0);

		if (c->json) {
			print_json(job);
		} else if (opt_bool(c, "raw")) {
			printf(" type=%s\n bandwidth=%lld\n cur=%lld\n end=%lld\n", label, speed,
			       cur, end);
		} else {
			printf("%s: [%3d %%]", label, end > 0 ? (int)(cur * 100 / end) : 0);
			if (speed)
				printf("    Bandwidth limit: %lld bytes/s (%.3f MiB/s)", speed,
				       (double)speed / 1048576.0);
			printf("\n");
		}
	}
	json_object_put(job);
	blk_close(&b);
	return ret;
}

/* ---- blockresize, snapshot-create-as ---------------------------------------- */

static int cmd_blockresize(struct vstor_ctx *c)
{
	const char *s = opt_get(c, "size");
	json_object *args;
	uint64_t size;
	size_t n = strspn(s, "0123456789");
	struct blk b;

	/* virsh: a plain number is KiB; a unit (b for bytes) scales it. */
	if (vstor_parse_size(s, &size) < 0 || (n && !s[n] && size > (uint64_t)INT64_MAX >> 10))
		return vstor_error(c, -EINVAL,
				   "Scaled numeric value '%s' for <--size> option is malformed or "
				   "out of range",
				   s);
	if (n && !s[n])
		size <<= 10;
	if (blk_open(c, &b, opt_get(c, "export")))
		return 1;
	args = json_object_new_object();
	json_object_object_add(args, "node-name", json_object_new_string(b.node));
	json_object_object_add(args, "size", json_object_new_int64((int64_t)size));
	if (run(&b, "block_resize", args, NULL)) {
		blk_close(&b);
		return 1;
	}
	if (c->json)
		print_json_done(&b, NULL, NULL);
	else
		vstor_msg(c, "Block device '%s' is resized\n", b.target);
	blk_close(&b);
	return 0;
}

/*
 * --diskspec: a path, or virsh's "DISK,snapshot=external,file=PATH,driver=F"
 * (the disk name is ignored: an export has one disk). Sets *@file and
 * *@driver (NULL when not given) into @buf.
 */
static int parse_diskspec(struct vstor_ctx *c, const char *spec, char *buf, size_t len,
			  const char **file, const char **driver, bool *internal)
{
	char *save = NULL, *tok;

	*file = *driver = NULL;
	*internal = false;
	if (!strchr(spec, '=')) {
		*file = spec;
		return 0;
	}
	if (strlen(spec) >= len)
		return vstor_error(c, -EINVAL, "--diskspec too long");
	strcpy(buf, spec);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq)
			continue; /* the disk name */
		*eq++ = '\0';
		if (!strcmp(tok, "file"))
			*file = eq;
		else if (!strcmp(tok, "driver"))
			*driver = eq;
		else if (!strcmp(tok, "snapshot"))
			*internal = !strcmp(eq, "internal");
		else if (strcmp(tok, "stype"))
			return vstor_error(c, -EINVAL, "--diskspec: unknown key '%s'", tok);
	}
	return 0;
}

/* The overlay's default name: the image's file with its extension replaced by .NAME. */
static int default_overlay(struct vstor_ctx *c, json_object *n, const char *name, char *out,
			   size_t len)
{
	const char *f = vstor_json_str(n, "file");
	const char *slash, *dot;
	int k;

	if (!f || !*f || strchr(f, ':'))
		return vstor_error(c, -EINVAL,
				   "unsupported configuration: no local image file to put the "
				   "overlay beside; give --diskspec");
	slash = strrchr(f, '/');
	dot = strrchr(f, '.');
	if (dot && (!slash || dot > slash))
		k = snprintf(out, len, "%.*s.%s", (int)(dot - f), f, name);
	else
		k = snprintf(out, len, "%s.%s", f, name);
	if (k < 0 || (size_t)k >= len)
		return vstor_error(c, -ENAMETOOLONG, "overlay path too long");
	return 0;
}

static int cmd_snapshot_create_as(struct vstor_ctx *c)
{
	const char *name = opt_get(c, "name"), *file = NULL, *driver = NULL, **specs;
	char namebuf[32], specbuf[4096], overlay[PATH_MAX], snode[32];
	bool internal = !opt_bool(c, "disk-only");
	unsigned nspecs = opt_multi(c, "diskspec", &specs);
	json_object *args, *n;
	struct blk b;
	int ret;

	if (nspecs > 1)
		return vstor_error(c, -EINVAL,
				   "unsupported configuration: an export has one disk: one "
				   "--diskspec");
	if (nspecs && internal)
		return vstor_error(c, -EINVAL, "--diskspec requires --disk-only");
	if (!name) {
		snprintf(namebuf, sizeof(namebuf), "%lld", (long long)time(NULL));
		name = namebuf;
	}
	if (nspecs) {
		bool spec_internal;

		if (parse_diskspec(c, specs[0], specbuf, sizeof(specbuf), &file, &driver,
				   &spec_internal))
			return 1;
		if (spec_internal)
			return vstor_error(
				c, -EINVAL,
				"--diskspec snapshot=internal: drop --disk-only instead");
	}
	if (blk_open(c, &b, opt_get(c, "export")))
		return 1;
	args = json_object_new_object();
	if (internal) {
		json_object_object_add(args, "device", json_object_new_string(b.node));
		json_object_object_add(args, "name", json_object_new_string(name));
		ret = run(&b, "blockdev-snapshot-internal-sync", args, NULL);
	} else {
		n = find_node(&b, b.node);
		if (!file && (ret = default_overlay(c, n, name, overlay, sizeof(overlay)))) {
			json_object_put(args);
			blk_close(&b);
			return ret;
		}
		make_node_name(&b, snode, sizeof(snode), "snap-", name);
		json_object_object_add(args, "node-name", json_object_new_string(b.node));
		json_object_object_add(args, "snapshot-file",
				       json_object_new_string(file ? file : overlay));
		json_object_object_add(args, "snapshot-node-name", json_object_new_string(snode));
		json_object_object_add(args, "format",
				       json_object_new_string(driver ? driver : "qcow2"));
		if (opt_bool(c, "reuse-external"))
			json_object_object_add(args, "mode", json_object_new_string("existing"));
		ret = run(&b, "blockdev-snapshot-sync", args, NULL);
	}
	if (ret == 0) {
		if (c->json)
			print_json_done(&b, "snapshot", name);
		else
			vstor_msg(c, "Domain snapshot %s created\n", name);
	}
	blk_close(&b);
	return ret;
}

/* ---- blkdeviotune ------------------------------------------------------------ */

/* virsh's option, QMP's block_set_io_throttle argument. */
static const struct {
	const char *opt, *qmp;
} iotune_map[] = {
	{ "total-bytes-sec", "bps" },
	{ "read-bytes-sec", "bps_rd" },
	{ "write-bytes-sec", "bps_wr" },
	{ "total-iops-sec", "iops" },
	{ "read-iops-sec", "iops_rd" },
	{ "write-iops-sec", "iops_wr" },
	{ "total-bytes-sec-max", "bps_max" },
	{ "read-bytes-sec-max", "bps_rd_max" },
	{ "write-bytes-sec-max", "bps_wr_max" },
	{ "total-iops-sec-max", "iops_max" },
	{ "read-iops-sec-max", "iops_rd_max" },
	{ "write-iops-sec-max", "iops_wr_max" },
	{ "size-iops-sec", "iops_size" },
	{ "total-bytes-sec-max-length", "bps_max_length" },
	{ "read-bytes-sec-max-length", "bps_rd_max_length" },
	{ "write-bytes-sec-max-length", "bps_wr_max_length" },
	{ "total-iops-sec-max-length", "iops_max_length" },
	{ "read-iops-sec-max-length", "iops_rd_max_length" },
	{ "write-iops-sec-max-length", "iops_wr_max_length" },
};
#define IOTUNE_N (sizeof(iotune_map) / sizeof(iotune_map[0]))

static int cmd_blkdeviotune(struct vstor_ctx *c)
{
	bool set = opt_get(c, "group-name") != NULL;
	uint64_t vals[IOTUNE_N];
	json_object *n, *args;
	struct blk b;
	int ret;

	for (size_t i = 0; i < IOTUNE_N; i++) {
		const char *s = opt_get(c, iotune_map[i].opt);

		if (!s)
			continue;
		set = true;
		if (vstor_parse_size(s, &vals[i]) < 0)
			return vstor_error(c, -EINVAL,
					   "Scaled numeric value '%s' for <--%s> option is "
					   "malformed or out of range",
					   s, iotune_map[i].opt);
	}
	if (blk_open(c, &b, opt_get(c, "export")))
		return 1;
	n = find_node(&b, b.node);
	if (!n) {
		blk_close(&b);
		return vstor_error(c, -ENOENT, "node '%s' is gone", b.node);
	}
	if (!set) {
		/* Show the current limits: query-named-block-nodes carries them. */
		if (c->json) {
			json_object *o = json_object_new_object();

			for (size_t i = 0; i < IOTUNE_N; i++)
				json_object_object_add(o, iotune_map[i].opt,
						       json_object_new_int64(vstor_json_int(
							       n, iotune_map[i].qmp, 0)));
			json_object_object_add(
				o, "group-name",
				json_object_new_string(vstor_json_str(n, "group") ?
							       vstor_json_str(n, "group") :
							       ""));
			print_json(o);
			json_object_put(o);
		} else {
			for (size_t i = 0; i < IOTUNE_N; i++) {
				char key[40];

				snprintf(key, sizeof(key), "%s", iotune_map[i].opt);
				for (char *p = key; *p; p++)
					if (*p == '-')
						*p = '_';
				printf("%-15s: %lld\n", key,
				       vstor_json_int(n, iotune_map[i].qmp, 0));
			}
			printf("%-15s: %s\n", "group_name",
			       vstor_json_str(n, "group") ? vstor_json_str(n, "group") : "");
		}
		blk_close(&b);
		return 0;
	}
	/* Values not given keep their current setting, as virsh does. */
	args = json_object_new_object();
	json_object_object_add(args, "device", json_object_new_string(b.node));
	for (size_t i = 0; i < IOTUNE_N; i++) {
		int64_t v = opt_get(c, iotune_map[i].opt) ? (int64_t)vals[i] :
							    vstor_json_int(n, iotune_map[i].qmp, 0);

		if (i < 6 || v)
			json_object_object_add(args, iotune_map[i].qmp, json_object_new_int64(v));
	}
	if (opt_get(c, "group-name"))
		json_object_object_add(args, "group",
				       json_object_new_string(opt_get(c, "group-name")));
	else if (vstor_json_str(n, "group"))
		json_object_object_add(args, "group",
				       json_object_new_string(vstor_json_str(n, "group")));
	ret = vstor_qmp_execute(b.q, "block_set_io_throttle", json_object_get(args), NULL, &b.err);
	/* QEMU's device names a BlockBackend: a daemon may know the export by its id. */
	if (ret == 1 && b.export_id && !strcmp(b.err.cls, "DeviceNotFound")) {
		json_object_object_del(args, "device");
		json_object_object_add(args, "id", json_object_new_string(b.export_id));
		ret = vstor_qmp_execute(b.q, "block_set_io_throttle", json_object_get(args), NULL,
					&b.err);
	}
	json_object_put(args);
	if (ret)
		ret = qmp_fail(&b, "block_set_io_throttle");
	else if (c->json)
		print_json_done(&b, NULL, NULL);
	blk_close(&b);
	return ret;
}

/* ---- domblkstat, blklist ----------------------------------------------------- */

static int cmd_domblkstat(struct vstor_ctx *c)
{
	static const struct {
		const char *qmp, *field, *human;
	} fields[] = {
		{ "rd_operations", "rd_req", "number of read operations:" },
		{ "rd_bytes", "rd_bytes", "number of bytes read:" },
		{ "wr_operations", "wr_req", "number of write operations:" },
		{ "wr_bytes", "wr_bytes", "number of bytes written:" },
		{ "flush_operations", "flush_operations", "number of flush operations:" },
		{ "rd_total_time_ns", "rd_total_times", "total duration of reads (ns):" },
		{ "wr_total_time_ns", "wr_total_times", "total duration of writes (ns):" },
		{ "flush_total_time_ns", "flush_total_times", "total duration of flushes (ns):" },
	};
	json_object *args = json_object_new_object(), *all = NULL, *stats = NULL;
	struct blk b;

	if (blk_open(c, &b, opt_get(c, "export"))) {
		json_object_put(args);
		return 1;
	}
	/* Per node: qsd has no named BlockBackends, so only query-nodes lists its nodes. */
	json_object_object_add(args, "query-nodes", json_object_new_boolean(true));
	if (run(&b, "query-blockstats", args, &all)) {
		blk_close(&b);
		return 1;
	}
	for (size_t i = 0; i < json_object_array_length(all); i++) {
		json_object *e = json_object_array_get_idx(all, i);
		const char *nn = vstor_json_str(e, "node-name");

		if (nn && !strcmp(nn, b.node) && json_object_object_get_ex(e, "stats", &stats))
			break;
		stats = NULL;
	}
	if (!stats) {
		json_object_put(all);
		blk_close(&b);
		return vstor_error(c, -ENOENT, "failed to get block stats for '%s'", b.target);
	}
	if (c->json) {
		print_json(stats);
	} else if (opt_bool(c, "human")) {
		printf("Device: %s\n", b.target);
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			printf(" %-31s %lld\n", fields[i].human,
			       vstor_json_int(stats, fields[i].qmp, 0));
	} else {
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			printf("%s %s %lld\n", b.target, fields[i].field,
			       vstor_json_int(stats, fields[i].qmp, 0));
	}
	printf("\n");
	json_object_put(all);
	blk_close(&b);
	return 0;
}

static int cmd_blklist(struct vstor_ctx *c)
{
	struct vstor_table t = { .ncols = 3, .head = { "Target", "Node", "Source" } };
	json_object *exports = NULL, *nodes, *out = NULL;
	bool all = opt_bool(c, "all");
	struct blk b;

	if (blk_open(c, &b, NULL))
		return 1;
	if (run(&b, "query-block-exports", NULL, &exports) || !(nodes = query_nodes(&b, false))) {
		json_object_put(exports);
		blk_close(&b);
		return 1;
	}
	if (c->json)
		out = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(exports); i++) {
		json_object *e = json_object_array_get_idx(exports, i);
		const char *id = vstor_json_str(e, "id"), *nn = vstor_json_str(e, "node-name");
		json_object *n = nn ? find_node(&b, nn) : NULL;
		const char *row[3] = { id, nn, vstor_json_str(n, "file") };

		if (out) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "export", json_object_new_string(id ? id : ""));
			json_object_object_add(o, "node", json_object_new_string(nn ? nn : ""));
			json_object_object_add(o, "source",
					       json_object_new_string(row[2] ? row[2] : ""));
			json_object_object_add(
				o, "type",
				json_object_new_string(vstor_json_str(e, "type") ?
							       vstor_json_str(e, "type") :
							       ""));
			json_object_array_add(out, o);
		} else {
			vstor_table_add(&t, row);
		}
	}
	for (size_t i = 0; all && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i);
		const char *row[3] = { "-", vstor_json_str(n, "node-name"),
				       vstor_json_str(n, "file") };

		if (out) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "node",
					       json_object_new_string(row[1] ? row[1] : ""));
			json_object_object_add(o, "source",
					       json_object_new_string(row[2] ? row[2] : ""));
			json_object_object_add(
				o, "driver",
				json_object_new_string(
					vstor_json_str(n, "drv") ? vstor_json_str(n, "drv") : ""));
			json_object_array_add(out, o);
		} else {
			vstor_table_add(&t, row);
		}
	}
	if (out) {
		print_json(out);
		json_object_put(out);
	} else {
		vstor_table_print(&t);
	}
	json_object_put(exports);
	blk_close(&b);
	return 0;
}

/* ---- The command table --------------------------------------------------------- */

#define OPT_EXPORT                                                \
	{                                                         \
		"export", OT_DATA, true, "export id or node name" \
	}
#define OPT_CONNECT                                                                                    \
	{                                                                                              \
		"connect", OT_STR, false,                                                              \
			"the daemon's QMP socket (else -c PATH, VSTORD_SOCKET, STATE_DIR/vstord.sock)" \
	}
#define OPT_JOB_WAIT                                                                  \
	{ "wait", OT_BOOL, false, "wait for the job to finish" },                     \
		{ "verbose", OT_BOOL, false, "show progress (with --wait)" },         \
		{ "timeout", OT_STR, false, "abort after SECONDS (implies --wait)" }, \
	{                                                                             \
		"bandwidth", OT_STR, false, "MiB/s, or a scaled integer in bytes/s"   \
	}

static const struct opt_spec resize_opts[] = {
	OPT_EXPORT,
	{ "size", OT_DATA, true, "new size (scaled integer, default KiB)" },
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec snapshot_opts[] = {
	OPT_EXPORT,
	{ "name", OT_DATA, false, "name of the snapshot (default: the time in seconds)" },
	{ "description", OT_STR, false, "accepted (vstor keeps no snapshot metadata)" },
	{ "disk-only", OT_BOOL, false, "external snapshot: an overlay above the node" },
	{ "diskspec", OT_MULTI, false, "PATH or DISK,snapshot=external,file=PATH[,driver=F]" },
	{ "reuse-external", OT_BOOL, false, "the overlay file exists already" },
	{ "no-metadata", OT_BOOL, false, "accepted (vstor keeps no snapshot metadata)" },
	{ "atomic", OT_BOOL, false, "accepted (one disk)" },
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec commit_opts[] = {
	OPT_EXPORT,
	{ "base", OT_STR, false, "bottom of the commit: node name or file" },
	{ "top", OT_STR, false, "top of the commit: node name or file" },
	{ "active", OT_BOOL, false, "commit the active layer" },
	{ "pivot", OT_BOOL, false, "pivot to the base when ready (implies --wait)" },
	{ "keep-overlay", OT_BOOL, false, "finish without pivot (implies --wait)" },
	OPT_JOB_WAIT,
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec pull_opts[] = {
	OPT_EXPORT,   { "base", OT_STR, false, "keep this layer and below: node name or file" },
	OPT_JOB_WAIT, OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec copy_opts[] = {
	OPT_EXPORT,
	{ "dest", OT_STR, false, "path of the copy" },
	{ "dest-vol", OT_STR, false, "POOL/VOLUME of the copy (created in the pool)" },
	{ "format", OT_STR, false, "format of the copy (default: the source's)" },
	{ "shallow", OT_BOOL, false, "copy only the top layer (--dest)" },
	{ "reuse-external", OT_BOOL, false, "the destination exists already" },
	{ "pivot", OT_BOOL, false, "pivot to the copy when ready (implies --wait)" },
	{ "finish", OT_BOOL, false, "finish the copy without pivot (implies --wait)" },
	OPT_JOB_WAIT,
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec job_opts[] = {
	OPT_EXPORT,
	{ "info", OT_BOOL, false, "show the job (the default)" },
	{ "abort", OT_BOOL, false, "abort the job" },
	{ "pivot", OT_BOOL, false, "complete the job (pivot)" },
	{ "async", OT_BOOL, false, "with --abort: do not wait until the job is gone" },
	{ "bandwidth", OT_STR, false, "set the speed: MiB/s, or a scaled integer in bytes/s" },
	{ "raw", OT_BOOL, false, "key=value output" },
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec iotune_opts[] = {
	OPT_EXPORT,
	{ "total-bytes-sec", OT_STR, false, "total throughput limit, bytes/s" },
	{ "read-bytes-sec", OT_STR, false, "read throughput limit, bytes/s" },
	{ "write-bytes-sec", OT_STR, false, "write throughput limit, bytes/s" },
	{ "total-iops-sec", OT_STR, false, "total I/O operations limit per second" },
	{ "read-iops-sec", OT_STR, false, "read I/O operations limit per second" },
	{ "write-iops-sec", OT_STR, false, "write I/O operations limit per second" },
	{ "total-bytes-sec-max", OT_STR, false, "total throughput burst" },
	{ "read-bytes-sec-max", OT_STR, false, "read throughput burst" },
	{ "write-bytes-sec-max", OT_STR, false, "write throughput burst" },
	{ "total-iops-sec-max", OT_STR, false, "total I/O operations burst" },
	{ "read-iops-sec-max", OT_STR, false, "read I/O operations burst" },
	{ "write-iops-sec-max", OT_STR, false, "write I/O operations burst" },
	{ "size-iops-sec", OT_STR, false, "I/O size in bytes" },
	{ "total-bytes-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "read-bytes-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "write-bytes-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "total-iops-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "read-iops-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "write-iops-sec-max-length", OT_STR, false, "burst duration (s)" },
	{ "group-name", OT_STR, false, "throttle group" },
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec stat_opts[] = {
	OPT_EXPORT,
	{ "human", OT_BOOL, false, "human readable output" },
	OPT_CONNECT,
	{ 0 },
};

static const struct opt_spec list_opts[] = {
	{ "all", OT_BOOL, false, "every named node too, not only exports" },
	OPT_CONNECT,
	{ 0 },
};

const struct vstor_cmd vstor_block_cmds[] = {
	{ "blkdeviotune", cmd_blkdeviotune, iotune_opts, "set or query I/O limits of an export",
	  false },
	{ "blklist", cmd_blklist, list_opts, "list the daemon's exports (and nodes)", false },
	{ "blockcommit", cmd_blockcommit, commit_opts, "start a block commit operation", false },
	{ "blockcopy", cmd_blockcopy, copy_opts, "start a block copy operation", false },
	{ "blockjob", cmd_blockjob, job_opts, "manage active block operations", false },
	{ "blockpull", cmd_blockpull, pull_opts, "populate a disk from its backing image", false },
	{ "blockresize", cmd_blockresize, resize_opts, "resize the block device of an export",
	  false },
	{ "domblkstat", cmd_domblkstat, stat_opts, "get device block stats of an export", false },
	{ "snapshot-create-as", cmd_snapshot_create_as, snapshot_opts,
	  "create a snapshot of an export's image", false },
	{ 0 },
};
