/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The logical backend: an LVM volume group through liblvm2cmd; volumes are
 * its LVs. pool-define-as NAME logical --source-name VG --source-dev PV...
 * [--extra lvm_system_dir=DIR] (the LVM configuration directory to use
 * instead of the host's /etc/lvm: LVM_SYSTEM_DIR for every lvm command).
 *
 * liblvm2cmd is not thread-safe, keeps global state and prints. Each lvm
 * command therefore runs in a forked child: it sets LVM_SYSTEM_DIR, runs
 * lvm2_run() and writes what LVM reports (log level 4 and below through the
 * log callback, and its stdout) to a pipe; the parent takes the JSON report
 * from it, and the error lines for messages.
 *
 * Data path: the LV's device node when it is active and the node exists
 * (device-mapper); otherwise the lvmap protocol driver maps the LV's linear
 * segments onto its PVs in user space, read from lvs/pvs reports while the
 * VG lock is held shared, and keeps holding it while the volume is open.
 * LVs that are not linear are refused there. Metadata only changes through
 * lvm commands.
 */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lvm2cmd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver.h"
#include "pool-int.h"
#include "pool-parse.h"

#define LVM_OUT_MAX (16u << 20)
/*
 * Room in front of an encrypted (raw LUKS) volume's payload: the largest
 * LUKS1 header vstor writes (64-byte key, aes-256-xts: 4 KiB and 8 key
 * slots of 64 x 4000 bytes, each 4 KiB aligned: 2068480 bytes), as libvirt
 * adds the header to the LV's size.
 */
#define LOGICAL_LUKS_HEADER (2u << 20)

struct logical_priv {
	char locking_dir[VS_POOL_PATH_MAX];
};

/* ---- running lvm ---- */

static int lvm_child_fd = -1;

static void lvm_child_log(int level, const char *file, int line, int dm_errno, const char *msg)
{
	char buf[8192];
	int n;

	(void)file;
	(void)line;
	(void)dm_errno;
	if (level > LVM2_LOG_PRINT || lvm_child_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "\001%d %s\n", level, msg);
	if (n > 0) {
		size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;

		if (write(lvm_child_fd, buf, len) < 0)
			_exit(98);
	}
}

struct lvm_out {
	char *report; /* level-4 and stdout lines */
	char err[VS_ERROR_MSG_MAX];
};

static void lvm_out_free(struct lvm_out *o)
{
	free(o->report);
	o->report = NULL;
}

/*
 * Run one lvm command line in a child. Returns 0 when lvm2_run() succeeded;
 * else -EIO with LVM's last error line in @err.
 */
static int lvm_run(const struct vs_pool *p, struct lvm_out *out, struct vs_error *err,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int lvm_run(const struct vs_pool *p, struct lvm_out *out, struct vs_error *err,
		   const char *fmt, ...)
{
	const char *sysdir = vs_pool_def_extra(&p->def, "lvm_system_dir");
	char cmd[8192];
	size_t len = 0, cap = 65536;
	char *buf;
	int pfd[2], status = 0, n;
	pid_t pid;
	va_list ap;

	memset(out, 0, sizeof(*out));
	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return vs_error_set(err, -ENAMETOOLONG, "lvm command too long");
	buf = malloc(cap);
	if (!buf)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		free(buf);
		return vs_error_setf_errno(err, -errno, "pipe");
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		int e = -errno;

		close(pfd[0]);
		close(pfd[1]);
		free(buf);
		return vs_error_setf_errno(err, e, "fork");
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		void *h;
		int rc;

		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 2);
		}
		dup2(pfd[1], 1); /* what lvm prints (lvmconfig) joins the report */
		lvm_child_fd = 1;
		if (sysdir)
			setenv("LVM_SYSTEM_DIR", sysdir, 1);
		setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 1);
		lvm2_log_fn(lvm_child_log);
		h = lvm2_init();
		if (!h)
			_exit(97);
		rc = lvm2_run(h, cmd);
		fflush(stdout);
		_exit(rc == LVM2_COMMAND_SUCCEEDED ? 0 : (rc > 0 && rc < 90 ? rc : 96));
	}
	close(pfd[1]);
	for (;;) {
		ssize_t r;

		if (len + 1 >= cap) {
			char *nb = cap < LVM_OUT_MAX ? realloc(buf, cap * 2) : NULL;

			if (!nb) {
				/* Too much: drain the rest so the child can exit. */
				char sink[4096];

				while ((r = read(pfd[0], sink, sizeof(sink))) > 0 ||
				       (r < 0 && errno == EINTR))
					;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(pfd[0], buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(pfd[0]);
	buf[len] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* Split: "\001L msg" lines from the log callback, plain lines from stdout. */
	{
		char *rep = malloc(len + 1), *line = buf;
		size_t rl = 0;

		if (!rep) {
			free(buf);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		while (*line) {
			char *nl = strchr(line, '\n');
			size_t l;

			if (nl)
				*nl = '\0';
			if (line[0] == '\001') {
				int level = line[1] - '0';
				const char *msg = line + 3;

				/* The first error is the precise one ("VG x not found"). */
				if (level <= LVM2_LOG_ERROR && !out->err[0])
					snprintf(out->err, sizeof(out->err), "%s", msg);
				else if (strncmp(msg, "WARNING:", 8) &&
					 strncmp(msg, "  WARNING:", 10))
					line = (char *)msg;
				else
					line = NULL;
				if (level <= LVM2_LOG_ERROR)
					line = NULL;
			}
			if (line) {
				l = strlen(line);
				memcpy(rep + rl, line, l);
				rl += l;
				rep[rl++] = '\n';
			}
			if (!nl)
				break;
			line = nl + 1;
		}
		rep[rl] = '\0';
		out->report = rep;
	}
	free(buf);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		int ret = vs_error_set(err, -EIO, "lvm %.*s: %s", (int)strcspn(cmd, " "), cmd,
				       out->err[0] ? out->err : "command failed");

		lvm_out_free(out);
		return ret;
	}
	return 0;
}

/* The rows of report @kind ("lv", "vg", "pv") of lvm's JSON, or NULL. */
static const struct pj_value *lvm_rows(const struct pj_value *root, const char *kind)
{
	const struct pj_value *rep = pj_get(root, "report");

	if (!rep || rep->type != PJ_ARR || rep->n < 1)
		return NULL;
	rep = pj_get(rep->items[0], kind);
	return rep && rep->type == PJ_ARR ? rep : NULL;
}

static int lvm_parse(struct lvm_out *o, struct pj_value **root, struct vs_error *err)
{
	char msg[256];
	const char *json = o->report ? strchr(o->report, '{') : NULL;

	if (!json || pj_parse(json, root, msg, sizeof(msg)) < 0)
		return vs_error_set(err, -EIO, "cannot parse the lvm report%s%s", json ? ": " : "",
				    json ? msg : "");
	return 0;
}

static const char *row_str(const struct pj_value *row, const char *key)
{
	const struct pj_value *v = pj_get(row, key);

	return v && v->type == PJ_STR ? v->str : "";
}

static uint64_t row_u64(const struct pj_value *row, const char *key)
{
	const struct pj_value *v = pj_get(row, key);

	if (v && v->type == PJ_INT)
		return (uint64_t)v->i;
	return v && v->type == PJ_STR ? strtoull(v->str, NULL, 10) : 0;
}

/* ---- names ---- */

/* LVM's names: [a-zA-Z0-9+_.-], not starting with '-'. */
static int lvm_check_name(const char *name, const char *what, struct vs_error *err)
{
	if (!name[0] || name[0] == '-' ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
			 "OPQRSTUVWXYZ0123456789+_.-") != strlen(name))
		return vs_error_set(err, -EINVAL,
				    "%s name '%s' is not valid for LVM (use letters, digits and "
				    "+_.-)",
				    what, name);
	return 0;
}

static int lvm_check_dev(const char *dev, struct vs_error *err)
{
	if (!dev[0] || dev[0] != '/' || strpbrk(dev, " \t\n'\"\\"))
		return vs_error_set(err, -EINVAL,
				    "device '%s' must be an absolute path without "
				    "spaces or quotes",
				    dev);
	return 0;
}

static int logical_check_def(const struct vs_pool_def *def, struct vs_error *err)
{
	const char *sysdir = vs_pool_def_extra(def, "lvm_system_dir");
	int ret;

	if (!def->source_name[0])
		return vs_error_set(err, -EINVAL,
				    "a logical pool needs the volume group (--source-name)");
	ret = lvm_check_name(def->source_name, "Volume group", err);
	for (unsigned i = 0; ret == 0 && i < def->nb_source_devs; i++)
		ret = lvm_check_dev(def->source_devs[i], err);
	if (ret == 0 && def->source_format[0] && strcmp(def->source_format, "lvm2") &&
	    strcmp(def->source_format, "auto"))
		ret = vs_error_set(err, -ENOTSUP, "logical source format '%s' is not supported",
				   def->source_format);
	if (ret == 0 && sysdir && sysdir[0] != '/')
		ret = vs_error_set(err, -EINVAL, "lvm_system_dir must be an absolute path");
	return ret;
}

/* ---- pool ---- */

static int logical_attach(struct vs_pool *p, struct vs_error *err)
{
	struct logical_priv *lp = calloc(1, sizeof(*lp));
	struct lvm_out o;
	const char *q, *e;
	int ret;

	if (!lp)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = lvm_run(p, &o, err, "lvmconfig --typeconfig full global/locking_dir");
	if (ret < 0) {
		free(lp);
		return ret;
	}
	/* locking_dir="/run/lock/lvm" */
	q = strstr(o.report, "locking_dir=\"");
	e = q ? strchr(q + 13, '"') : NULL;
	if (!q || !e || (size_t)(e - q - 13) >= sizeof(lp->locking_dir)) {
		lvm_out_free(&o);
		free(lp);
		return vs_error_set(err, -EIO, "cannot read LVM's locking_dir");
	}
	memcpy(lp->locking_dir, q + 13, (size_t)(e - q - 13));
	lvm_out_free(&o);
	p->priv = lp;
	return 0;
}

static void logical_detach(struct vs_pool *p)
{
	free(p->priv);
	p->priv = NULL;
}

static int logical_build(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	char devs[VS_POOL_MAX_DEVS * (VS_POOL_PATH_MAX + 1)] = "";
	struct lvm_out o;
	int ret;

	if (!p->def.nb_source_devs)
		return vs_error_set(
			err, -EINVAL,
			"pool-build of a logical pool needs its devices (--source-dev)");
	for (unsigned i = 0; i < p->def.nb_source_devs; i++) {
		strcat(devs, " ");
		strcat(devs, p->def.source_devs[i]);
	}
	ret = lvm_run(p, &o, err, "pvcreate -y%s%s",
		      (flags & VS_POOL_BUILD_OVERWRITE) ? " -ff" : "", devs);
	lvm_out_free(&o);
	if (ret < 0)
		return ret;
	ret = lvm_run(p, &o, err, "vgcreate -y %s%s", p->def.source_name, devs);
	lvm_out_free(&o);
	if (ret < 0) {
		/* Leave the devices as they were. */
		(void)lvm_run(p, &o, NULL, "pvremove -y%s", devs);
		lvm_out_free(&o);
	}
	return ret;
}

static int logical_vg_numbers(struct vs_pool *p, struct vs_pool_info *info, struct vs_error *err)
{
	struct lvm_out o;
	struct pj_value *root = NULL;
	const struct pj_value *rows;
	int ret = lvm_run(p, &o, err,
			  "vgs --reportformat json --units b --nosuffix -o "
			  "vg_name,vg_size,vg_free %s",
			  p->def.source_name);

	if (ret < 0)
		return ret;
	ret = lvm_parse(&o, &root, err);
	lvm_out_free(&o);
	if (ret < 0)
		return ret;
	rows = lvm_rows(root, "vg");
	if (!rows || rows->n != 1) {
		pj_free(root);
		return vs_error_set(err, -ENOENT, "volume group '%s' not found",
				    p->def.source_name);
	}
	if (info) {
		info->capacity = row_u64(rows->items[0], "vg_size");
		info->available = row_u64(rows->items[0], "vg_free");
		info->allocation = info->capacity - info->available;
	}
	pj_free(root);
	return 0;
}

static int logical_start(struct vs_pool *p, struct vs_error *err)
{
	return logical_vg_numbers(p, NULL, err);
}

static int logical_delete(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	struct lvm_out o;
	int ret;

	(void)flags;
	ret = lvm_run(p, &o, err, "vgremove -f %s", p->def.source_name);
	lvm_out_free(&o);
	for (unsigned i = 0; ret == 0 && i < p->def.nb_source_devs; i++) {
		ret = lvm_run(p, &o, err, "pvremove -y %s", p->def.source_devs[i]);
		lvm_out_free(&o);
	}
	return ret;
}

/* Fill @vol from an lvs row. */
static int logical_fill(struct vs_pool *p, const struct pj_value *row, struct vs_vol_info *vol,
			struct vs_error *err)
{
	const char *path = row_str(row, "lv_path");
	struct stat st;

	memset(vol, 0, sizeof(*vol));
	snprintf(vol->name, sizeof(vol->name), "%s", row_str(row, "lv_name"));
	if (path[0])
		snprintf(vol->path, sizeof(vol->path), "%s", path);
	else
		snprintf(vol->path, sizeof(vol->path), "/dev/%s/%s", p->def.source_name, vol->name);
	vol->allocation = row_u64(row, "lv_size");
	/* Active with a device node (device-mapper): a block device. */
	vol->type = !strcmp(row_str(row, "lv_active"), "active") && stat(vol->path, &st) == 0 &&
				    S_ISBLK(st.st_mode) ?
			    VS_VOL_BLOCK :
			    VS_VOL_MAPPED;
	return vs_pool_probe_volume(p, vol, err);
}

/* lvs of the VG, or of one LV when @lv is not NULL. */
static int logical_lvs(struct vs_pool *p, const char *lv, struct pj_value **root,
		       struct vs_error *err)
{
	struct lvm_out o;
	int ret = lvm_run(p, &o, err,
			  "lvs --reportformat json --units b --nosuffix -o "
			  "lv_name,lv_size,lv_attr,lv_path,lv_active %s%s%s",
			  p->def.source_name, lv ? "/" : "", lv ? lv : "");

	if (ret < 0)
		return ret;
	ret = lvm_parse(&o, root, err);
	lvm_out_free(&o);
	return ret;
}

static int logical_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
			   struct vs_error *err)
{
	struct pj_value *root = NULL;
	const struct pj_value *rows;
	int ret = logical_vg_numbers(p, info, err);

	if (ret < 0 || !vols)
		return ret;
	ret = logical_lvs(p, NULL, &root, err);
	if (ret < 0)
		return ret;
	rows = lvm_rows(root, "lv");
	for (size_t i = 0; rows && i < rows->n && ret == 0; i++) {
		const char *name = row_str(rows->items[i], "lv_name");
		struct vs_vol_info *v;
		struct vs_error e = { 0 };

		/* Hidden LVs (thin pool metadata ...) and volumes being built (".NAME..."). */
		if (name[0] == '[' || name[0] == '.' ||
		    vs_pool_check_name(name, "Volume", NULL) < 0)
			continue;
		v = vs_vol_list_add(vols);
		if (!v)
			ret = vs_error_set(err, -ENOMEM, "Out of memory");
		else if (logical_fill(p, rows->items[i], v, &e) < 0) {
			/* Not mappable (not linear): listed, as raw bytes of unknown format. */
			snprintf(v->format, sizeof(v->format), "raw");
			v->capacity = v->allocation;
		}
	}
	pj_free(root);
	return ret;
}

static int logical_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			    struct vs_error *err)
{
	struct pj_value *root = NULL;
	const struct pj_value *rows;
	struct vs_error e = { 0 };
	int ret;

	if (lvm_check_name(name, "Volume", NULL) < 0 || logical_lvs(p, name, &root, &e) < 0 ||
	    !(rows = lvm_rows(root, "lv")) || rows->n != 1) {
		pj_free(root);
		return vs_pool_vol_not_found(err, name);
	}
	ret = logical_fill(p, rows->items[0], out, err);
	pj_free(root);
	return ret;
}

/* ---- the user-space mapping ---- */

/*
 * Take LVM's VG lock shared (as lvm's own readers do; see driver-lvmap.c)
 * so the report read under it stays true until the lvmap node has its own.
 */
static int logical_lock(struct vs_pool *p, char *path, size_t pathsz, int *fd, struct vs_error *err)
{
	struct logical_priv *lp = p->priv;
	int n = snprintf(path, pathsz, "%s/V_%s", lp->locking_dir, p->def.source_name);

	if (n < 0 || (size_t)n >= pathsz)
		return vs_error_set(err, -ENAMETOOLONG, "lock path too long");
	for (int tries = 0; tries < 500; tries++) {
		struct stat a, b;
		int f = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (f < 0)
			return vs_error_setf_errno(err, -errno, "cannot open the LVM lock '%s'",
						   path);
		if (flock(f, LOCK_SH | LOCK_NB) == 0) {
			if (stat(path, &a) == 0 && fstat(f, &b) == 0 && a.st_ino == b.st_ino &&
			    a.st_dev == b.st_dev) {
				*fd = f;
				return 0;
			}
			close(f);
			continue;
		}
		close(f);
		vs_co_sleep_ns(20000000);
	}
	return vs_error_set(err, -EBUSY, "the volume group is locked by an LVM command");
}

/* Build the lvmap: URI of LV @name (the VG lock held by the caller). */
static int logical_map_uri(struct vs_pool *p, const char *name, const char *lock, char *uri,
			   size_t urisz, struct vs_error *err)
{
	struct lvm_out o;
	struct pj_value *segs = NULL, *pvs = NULL;
	const struct pj_value *srows, *prows;
	size_t len;
	int ret;

	ret = lvm_run(
		p, &o, err,
		"lvs --reportformat json --units b --nosuffix -o "
		"lv_name,lv_attr,segtype,seg_start_pe,seg_size_pe,seg_pe_ranges,vg_extent_size "
		"--sort seg_start_pe %s/%s",
		p->def.source_name, name);
	if (ret == 0)
		ret = lvm_parse(&o, &segs, err);
	lvm_out_free(&o);
	if (ret == 0)
		ret = lvm_run(p, &o, err,
			      "pvs --reportformat json --units b --nosuffix -o "
			      "pv_name,pe_start,vg_name");
	if (ret == 0 && o.report)
		ret = lvm_parse(&o, &pvs, err);
	lvm_out_free(&o);
	if (ret < 0)
		goto out;
	srows = lvm_rows(segs, "lv");
	prows = lvm_rows(pvs, "pv");
	if (!srows || !srows->n || !prows) {
		ret = vs_error_set(err, -ENOENT, "logical volume '%s' not found", name);
		goto out;
	}
	len = (size_t)snprintf(uri, urisz, "lvmap:%s", lock);
	for (size_t i = 0; i < srows->n; i++) {
		const struct pj_value *r = srows->items[i];
		const char *type = row_str(r, "segtype"), *range = row_str(r, "seg_pe_ranges");
		uint64_t ext = row_u64(r, "vg_extent_size"), count = row_u64(r, "seg_size_pe");
		uint64_t first, last, pe_start = UINT64_MAX;
		const char *colon = strrchr(range, ':');
		char pv[VS_POOL_PATH_MAX];

		const char *attr = row_str(r, "lv_attr");

		/*
		 * Only a plain volume ('-') that device-mapper does not map:
		 * writing the PV extents of a snapshot origin would bypass the
		 * snapshots' copy-on-write, a snapshot's extents hold its
		 * exception store, a pvmove's are in flight; and an active LV
		 * has a kernel mapping whose page cache would not see ours.
		 */
		if (strcmp(type, "linear")) {
			ret = vs_error_set(err, -ENOTSUP,
					   "logical volume '%s' is not linear (segment type %s): "
					   "without device-mapper only linear LVs can be mapped",
					   name, type);
			goto out;
		}
		if (attr[0] != '-') {
			ret = vs_error_set(
				err, -ENOTSUP,
				"logical volume '%s' is not a plain volume (lv_attr %s): "
				"snapshots, their origins, mirrors, raid, thin and "
				"pvmove volumes cannot be mapped without device-mapper",
				name, attr);
			goto out;
		}
		if (strlen(attr) > 4 && attr[4] == 'a') {
			ret = vs_error_set(err, -EBUSY,
					   "logical volume '%s' is active but has no device node: "
					   "deactivate it (lvchange -an) to map it in user space",
					   name);
			goto out;
		}
		if (!colon || sscanf(colon + 1, "%" SCNu64 "-%" SCNu64, &first, &last) != 2 ||
		    last < first || last - first + 1 != count || !ext ||
		    (size_t)(colon - range) >= sizeof(pv)) {
			ret = vs_error_set(err, -EIO, "unexpected segment '%s' of '%s'", range,
					   name);
			goto out;
		}
		memcpy(pv, range, (size_t)(colon - range));
		pv[colon - range] = '\0';
		for (size_t j = 0; j < prows->n; j++)
			if (!strcmp(row_str(prows->items[j], "pv_name"), pv))
				pe_start = row_u64(prows->items[j], "pe_start");
		if (pe_start == UINT64_MAX) {
			ret = vs_error_set(err, -EIO, "physical volume '%s' not found", pv);
			goto out;
		}
		/* PV offset = pe_start + first PE of the range x extent size. */
		len += (size_t)snprintf(uri + len, len < urisz ? urisz - len : 0,
					"|%" PRIu64 "+%" PRIu64 "@%s", pe_start + first * ext,
					count * ext, pv);
		if (len >= urisz) {
			ret = vs_error_set(err, -ENAMETOOLONG, "too many segments in '%s'", name);
			goto out;
		}
	}
	ret = 0;
out:
	pj_free(segs);
	pj_free(pvs);
	return ret;
}

static int logical_vol_open(struct vs_pool *p, const struct vs_vol_info *vol,
			    const struct vs_open_opts *opts, struct vs_node **out,
			    struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	char lock[VS_POOL_PATH_MAX], *uri;
	int lfd = -1, ret;

	if (vol->type == VS_VOL_BLOCK) {
		o.filename = vol->path;
		return vs_protocol_open(out, vol->path, &o, err);
	}
	uri = malloc(65536);
	if (!uri)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = logical_lock(p, lock, sizeof(lock), &lfd, err);
	if (ret == 0)
		ret = logical_map_uri(p, vol->name, lock, uri, 65536, err);
	if (ret == 0) {
		o.filename = uri;
		/* The node takes the lock itself before ours goes. */
		ret = vs_protocol_open(out, uri, &o, err);
	}
	if (lfd >= 0)
		close(lfd);
	free(uri);
	return ret;
}

/* ---- volumes ---- */

static int logical_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a,
			      struct vs_error *err)
{
	struct vs_measure_result m;
	struct vs_vol_info vol;
	struct lvm_out o;
	bool qcow2 = !strcmp(a->format, "qcow2");
	uint64_t size = a->capacity;
	struct vs_kv kv[9];
	size_t nkv;
	int ret = lvm_check_name(a->name, "Volume", err);

	if (ret < 0)
		return ret;
	if (a->backing_path && !qcow2)
		return vs_error_set(err, -EINVAL, "a backing volume needs the qcow2 format");
	if (a->encrypt_secret && qcow2)
		return vs_error_set(err, -ENOTSUP,
				    "an encrypted volume of a logical pool is raw LUKS: use "
				    "--format raw");
	if (a->encrypt_secret)
		size += LOGICAL_LUKS_HEADER;
	if (qcow2) {
		/* Room for every cluster and the metadata. */
		ret = vs_image_measure("qcow2", a->capacity, a->capacity, NULL, 0, &m, err);
		if (ret < 0)
			return ret;
		size = m.fully_allocated;
	}
	if (!size)
		size = 1;
	ret = lvm_run(p, &o, err, "lvcreate -an -Zn -Wn -y -L %" PRIu64 "b -n %s %s", size, a->name,
		      p->def.source_name);
	lvm_out_free(&o);
	if (ret < 0)
		return ret;
	memset(&vol, 0, sizeof(vol));
	snprintf(vol.name, sizeof(vol.name), "%s", a->name);
	snprintf(vol.path, sizeof(vol.path), "/dev/%s/%s", p->def.source_name, a->name);
	vol.type = VS_VOL_MAPPED;
	{
		struct stat st;

		if (stat(vol.path, &st) == 0 && S_ISBLK(st.st_mode))
			vol.type = VS_VOL_BLOCK;
	}
	{
		/* The LV is not zeroed (-Zn): clear its start so no old header shows. */
		struct vs_open_opts oo = { .format = "file" };
		struct vs_node *n = NULL;
		void *zero = vs_buf_zalloc(1u << 20);

		ret = zero ? logical_vol_open(p, &vol, &oo, &n, err) :
			     vs_error_set(err, -ENOMEM, "Out of memory");
		if (ret == 0) {
			uint64_t l = vs_node_size(n) < (1u << 20) ? vs_node_size(n) : 1u << 20;

			ret = vs_node_pwrite(n, 0, zero, (size_t)l, VS_REQ_FUA);
			if (ret < 0)
				vs_error_setf_errno(err, ret, "cannot clear the new LV '%s'",
						    a->name);
			vs_node_close(n);
		}
		free(zero);
	}
	if (ret == 0 && (qcow2 || a->encrypt_secret)) {
		char lock[VS_POOL_PATH_MAX], *uri = malloc(65536);
		const char *format;
		int lfd = -1;

		nkv = vs_pool_create_opts(kv, a->backing_path, a->backing_format, NULL);
		nkv += vs_pool_create_qcow2_opts(kv + nkv, a);
		/* Encrypted: "luks" over the LV, as libvirt's qemu-img create -f luks. */
		nkv += vs_pool_create_encrypt_opts(kv + nkv, a, &format);
		ret = uri ? 0 : vs_error_set(err, -ENOMEM, "Out of memory");
		if (ret == 0 && vol.type == VS_VOL_BLOCK)
			snprintf(uri, 65536, "%s", vol.path);
		else if (ret == 0) {
			ret = logical_lock(p, lock, sizeof(lock), &lfd, err);
			if (ret == 0)
				ret = logical_map_uri(p, a->name, lock, uri, 65536, err);
		}
		if (ret == 0)
			ret = vs_image_create(uri, format, a->capacity, kv, nkv, err);
		if (lfd >= 0)
			close(lfd);
		free(uri);
	}
	if (ret < 0) {
		(void)lvm_run(p, &o, NULL, "lvremove -f %s/%s", p->def.source_name, a->name);
		lvm_out_free(&o);
	}
	return ret;
}

static int logical_vol_delete(struct vs_pool *p, const struct vs_vol_info *vol,
			      struct vs_error *err)
{
	struct lvm_out o;
	int ret = lvm_run(p, &o, err, "lvremove -f %s/%s", p->def.source_name, vol->name);

	lvm_out_free(&o);
	return ret;
}

/* lvrename refuses a name that an LV of the VG has: it never replaces one. */
static int logical_vol_rename(struct vs_pool *p, const struct vs_vol_info *vol, const char *name,
			      struct vs_error *err)
{
	struct vs_vol_info other;
	struct lvm_out o;
	int ret = lvm_check_name(name, "Volume", err);

	if (ret < 0)
		return ret;
	if (logical_vol_info(p, name, &other, NULL) == 0)
		return vs_error_set(err, -EEXIST, "LV '%s' exists", name);
	ret = lvm_run(p, &o, err, "lvrename %s %s %s", p->def.source_name, vol->name, name);
	lvm_out_free(&o);
	return ret;
}

static int logical_vol_resize(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			      unsigned flags, struct vs_error *err)
{
	struct lvm_out o;
	int ret;

	(void)flags;
	if (strcmp(vol->format, "qcow2")) {
		/* Raw LUKS: the header stays in front of the payload. */
		uint64_t header = 0;

		if (!strcmp(vol->encryption, "luks") && vol->allocation > vol->capacity)
			header = vol->allocation - vol->capacity;

		ret = lvm_run(p, &o, err, "lvresize -f -y -L %" PRIu64 "b %s/%s", capacity + header,
			      p->def.source_name, vol->name);
		lvm_out_free(&o);
		return ret;
	}
	if (capacity < vol->capacity)
		return vs_error_set(err, -ENOTSUP, "shrinking a qcow2 volume is not supported");
	{
		struct vs_measure_result m;

		ret = vs_image_measure("qcow2", capacity, capacity, NULL, 0, &m, err);
		if (ret < 0)
			return ret;
		if (m.fully_allocated > vol->allocation) {
			ret = lvm_run(p, &o, err, "lvextend -y -L %" PRIu64 "b %s/%s",
				      m.fully_allocated, p->def.source_name, vol->name);
			lvm_out_free(&o);
			if (ret < 0)
				return ret;
		}
	}
	/* Then the image, over the mapping read again under the VG lock. */
	{
		char lock[VS_POOL_PATH_MAX], *uri = malloc(65536);
		struct vs_open_opts io = { .format = "qcow2", .no_backing = true };
		struct vs_node *img = NULL;
		int lfd = -1;

		ret = uri ? 0 : vs_error_set(err, -ENOMEM, "Out of memory");
		if (ret == 0 && vol->type == VS_VOL_BLOCK)
			snprintf(uri, 65536, "%s", vol->path);
		else if (ret == 0) {
			ret = logical_lock(p, lock, sizeof(lock), &lfd, err);
			if (ret == 0)
				ret = logical_map_uri(p, vol->name, lock, uri, 65536, err);
		}
		io.filename = uri;
		if (ret == 0)
			ret = vs_image_open(&img, &io, err);
		if (lfd >= 0)
			close(lfd);
		if (ret == 0) {
			ret = vs_node_truncate(img, capacity, VS_PREALLOC_OFF, false, err);
			vs_node_close(img);
		}
		free(uri);
	}
	return ret;
}

/*
 * The volume groups of this host and their PVs (pvs), one source per VG, as
 * libvirt's logical backend finds them; PVs in no VG are left out.
 */
static int logical_find_sources(const struct vs_pool_def *spec, struct vs_pool_def **out, size_t *n,
				struct vs_error *err)
{
	struct vs_pool *tmp = calloc(1, sizeof(*tmp));
	struct pj_value *root = NULL;
	const struct pj_value *rows;
	struct lvm_out o;
	int ret;

	*out = NULL;
	*n = 0;
	if (!tmp)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	tmp->def = *spec; /* lvm_run reads its lvm_system_dir */
	ret = lvm_run(tmp, &o, err, "pvs --reportformat json -o pv_name,vg_name");
	free(tmp);
	if (ret < 0)
		return ret;
	ret = lvm_parse(&o, &root, err);
	lvm_out_free(&o);
	if (ret < 0)
		return ret;
	rows = lvm_rows(root, "pv");
	if (rows && rows->n && !(*out = calloc(rows->n, sizeof(**out))))
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
	for (size_t i = 0; ret == 0 && rows && i < rows->n; i++) {
		const char *pv = row_str(rows->items[i], "pv_name");
		const char *vg = row_str(rows->items[i], "vg_name");
		struct vs_pool_def *d = NULL;

		if (!pv || !vg || !vg[0] || strlen(vg) >= sizeof(d->source_name) ||
		    strlen(pv) >= sizeof(d->source_devs[0]))
			continue;
		for (size_t k = 0; k < *n && !d; k++)
			if (!strcmp((*out)[k].source_name, vg))
				d = &(*out)[k];
		if (!d) {
			d = &(*out)[(*n)++];
			strcpy(d->type, "logical");
			strcpy(d->source_name, vg);
			strcpy(d->source_format, "lvm2");
		}
		if (d->nb_source_devs < VS_POOL_MAX_DEVS)
			strcpy(d->source_devs[d->nb_source_devs++], pv);
	}
	pj_free(root);
	if (ret < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return ret;
}

VS_POOL_BACKEND(logical_backend) = {
	.type = "logical",
	.default_format = "raw",
	.vol_formats = (const char *const[]){ "raw", "qcow2", NULL },
	.source_formats = (const char *const[]){ "auto", "lvm2", NULL },
	.encryption = true,
	.find_sources = logical_find_sources,
	.check_def = logical_check_def,
	.attach = logical_attach,
	.detach = logical_detach,
	.build = logical_build,
	.start = logical_start,
	.delete = logical_delete,
	.refresh = logical_refresh,
	.vol_info = logical_vol_info,
	.vol_create = logical_vol_create,
	.vol_delete = logical_vol_delete,
	.vol_rename = logical_vol_rename,
	.vol_resize = logical_vol_resize,
	.vol_open = logical_vol_open,
};
