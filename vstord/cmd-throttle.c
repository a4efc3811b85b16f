/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Throttling in vstord: named throttle groups (libstore's vs_throttle_group)
 * that exports join, made two ways as in QEMU: block_set_io_throttle (the
 * drive-era command: limits for one export, in a group named after it
 * unless `group` says otherwise) and throttle-group objects (--object,
 * object-add) whose limits qom-get shows and qom-set changes. vstord has no
 * devices: block_set_io_throttle's `id` and `device` name an export, and
 * `device` may also name a node (all its exports). Control reactor only.
 */
#include "cmd-throttle.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "reactors.h"
#include "vstor/export.h"
#include "vstor/throttle.h"

struct vd_tgroup {
	struct vd_tgroup *next;
	char *id;
	struct vs_throttle_group *g; /* the table's reference */
	bool object;		     /* made by object-add/--object (object-del removes it) */
};

static struct vd_tgroup *groups;

static struct vd_tgroup *group_find(const char *id)
{
	for (struct vd_tgroup *t = groups; t; t = t->next)
		if (!strcmp(t->id, id))
			return t;
	return NULL;
}

bool vd_throttle_group_exists(const char *id)
{
	return group_find(id) != NULL;
}

struct uses {
	struct vs_throttle_group *g;
	unsigned n;
	int reactor;
};

static void count_use(const struct vd_export_view *v, void *opaque)
{
	struct uses *u = opaque;

	if (v->exp && vs_export_throttle(v->exp) == u->g)
		u->n++;
}

static unsigned group_users(struct vs_throttle_group *g)
{
	struct uses u = { g, 0, -1 };

	vd_export_for_each(count_use, &u);
	return u.n;
}

static void find_reactor(const struct vd_export_view *v, void *opaque)
{
	struct uses *u = opaque;

	if (v->exp && vs_export_throttle(v->exp) == u->g && !u->n) {
		u->n = 1;
		u->reactor = v->reactor;
	}
}

/* The reactor @g's members run on (they share one); -1 (main) when it has none. */
static int group_reactor(struct vs_throttle_group *g)
{
	struct uses u = { g, 0, -1 };

	vd_export_for_each(find_reactor, &u);
	return u.reactor;
}

struct set_config {
	struct vs_throttle_group *g;
	const struct vs_throttle_config *cfg;
	struct vs_error *err;
	int ret;
};

static void set_config_run(void *arg)
{
	struct set_config *c = arg;

	c->ret = vs_throttle_group_set_config(c->g, c->cfg, c->err);
}

static void group_unlink(struct vd_tgroup *t)
{
	struct vd_tgroup **pp;

	for (pp = &groups; *pp != t; pp = &(*pp)->next)
		;
	*pp = t->next;
	vs_throttle_group_unref(t->g);
	free(t->id);
	free(t);
}

/* Groups block_set_io_throttle made go with their last export, as in QEMU. */
static void prune_implicit(void)
{
	for (struct vd_tgroup *t = groups, *next; t; t = next) {
		next = t->next;
		if (!t->object && !group_users(t->g))
			group_unlink(t);
	}
}

static struct vd_tgroup *group_new(struct qmp_call *call, const char *id, bool object)
{
	struct vd_tgroup *t = calloc(1, sizeof(*t));

	if (!t || !(t->id = strdup(id)) || vs_throttle_group_new(&t->g) < 0) {
		if (t)
			free(t->id);
		free(t);
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		return NULL;
	}
	t->object = object;
	t->next = groups;
	groups = t;
	return t;
}

/* ---- the limits, by QEMU's throttle-group property names ---- */

/* What a limit's property sets: the average, the burst rate or the burst length. */
enum field { F_AVG, F_MAX, F_LEN };

static uint64_t *field_of(struct vs_throttle_config *cfg, int b, enum field f)
{
	struct vs_throttle_limit *l = &cfg->limit[b];

	return f == F_AVG ? &l->avg : f == F_MAX ? &l->max : &l->burst_length;
}

/* "bps-total", "bps-total-max", "bps-total-max-length" ... and "iops-size". */
static bool limit_name(const char *name, struct vs_throttle_config *cfg, uint64_t **out)
{
	static const char *const suffix[] = { "", "-max", "-max-length" };

	if (!strcmp(name, "iops-size")) {
		*out = &cfg->iops_size;
		return true;
	}
	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++) {
		const char *base = vs_throttle_bucket_name(b);
		size_t n = strlen(base);

		if (strncmp(name, base, n))
			continue;
		for (int f = 0; f < 3; f++) {
			if (!strcmp(name + n, suffix[f])) {
				*out = field_of(cfg, b, (enum field)f);
				return true;
			}
		}
	}
	return false;
}

/* Set property @name of @cfg from @call's argument @arg: 1 set, 0 unknown, -1 error. */
static int limit_arg(struct qmp_call *call, const char *arg, const char *name,
		     struct vs_throttle_config *cfg)
{
	uint64_t *field;
	int64_t v;

	if (!limit_name(name, cfg, &field))
		return 0;
	if (qmp_arg_int(call, arg, true, &v) < 0)
		return -1;
	if (v < 0) /* QEMU's properties are signed: a negative one is out of range */
		return qmp_error(call, QMP_ERR_GENERIC,
				 "bps/iops/max values must be within [0, %llu]",
				 (unsigned long long)VS_THROTTLE_VALUE_MAX);
	*field = (uint64_t)v;
	return 1;
}

/* QEMU's "limits" object into @cfg (unset members keep their values). */
static int limits_obj(struct qmp_call *call, json_object *limits, struct vs_throttle_config *cfg)
{
	struct qmp_call sub = { .session = call->session, .args = limits, .keyval = call->keyval };

	json_object_object_foreach(limits, key, val)
	{
		int ret;

		(void)val;
		ret = limit_arg(&sub, key, key, cfg);
		if (ret == 0)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'limits.%s' is unexpected", key);
		if (ret < 0)
			return qmp_error(call, sub.cls, "%s", sub.desc);
	}
	return 0;
}

static void add_limits(json_object *o, const struct vs_throttle_config *cfg)
{
	static const char *const suffix[] = { "", "-max", "-max-length" };
	struct vs_throttle_config c = *cfg;
	char name[64];

	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++) {
		for (int f = 0; f < 3; f++) {
			snprintf(name, sizeof(name), "%s%s", vs_throttle_bucket_name(b), suffix[f]);
			json_object_object_add(o, name,
					       json_object_new_int64((int64_t)*field_of(&c, b, f)));
		}
	}
	json_object_object_add(o, "iops-size", json_object_new_int64((int64_t)cfg->iops_size));
}

/* ---- throttle-group objects ---- */

int vd_throttle_object_add(struct qmp_call *call, const char *id)
{
	struct vs_throttle_config cfg;
	struct vs_error err = { 0 };
	json_object *limits = NULL;
	struct vd_tgroup *t;

	vs_throttle_config_init(&cfg);
	json_object_object_foreach(call->args, key, val)
	{
		int ret;

		(void)val;
		if (!strcmp(key, "qom-type") || !strcmp(key, "id") || !strcmp(key, "limits"))
			continue;
		ret = !strncmp(key, "x-", 2) ? limit_arg(call, key, key + 2, &cfg) : 0;
		if (ret == 0)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Property 'throttle-group.%s' not found", key);
		if (ret < 0)
			return -1;
	}
	if (qmp_arg_obj(call, "limits", false, &limits) < 0 ||
	    (limits && limits_obj(call, limits, &cfg) < 0))
		return -1;
	if (vs_throttle_config_check(&cfg, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	prune_implicit();
	if (group_find(id))
		return qmp_error(call, QMP_ERR_GENERIC, "A group with this name already exists");
	t = group_new(call, id, true);
	if (!t)
		return -1;
	vs_throttle_group_set_config(t->g, &cfg, NULL);
	return 0;
}

int vd_throttle_object_del(struct qmp_call *call, const char *id)
{
	struct vd_tgroup *t = group_find(id);

	if (!t || !t->object)
		return 0;
	if (group_users(t->g))
		return qmp_error(call, QMP_ERR_GENERIC, "object '%s' is in use, can not be deleted",
				 id);
	group_unlink(t);
	return 1;
}

static int cmd_qom_get(struct qmp_call *call)
{
	const char *path, *prop;
	struct vs_throttle_config cfg;
	struct vd_tgroup *t;
	uint64_t *field;

	if (qmp_arg_str(call, "path", true, &path) < 0 ||
	    qmp_arg_str(call, "property", true, &prop) < 0)
		return -1;
	if (!strncmp(path, "/objects/", 9))
		path += 9;
	prune_implicit(); /* those of deleted exports */
	t = group_find(path);
	if (!t)
		return qmp_error(call, QMP_ERR_DEVICE_NOT_FOUND, "Device '%s' not found", path);
	vs_throttle_group_get_config(t->g, &cfg);
	if (!strcmp(prop, "limits")) {
		call->ret = json_object_new_object();
		add_limits(call->ret, &cfg);
		return 0;
	}
	if (strncmp(prop, "x-", 2) || !limit_name(prop + 2, &cfg, &field))
		return qmp_error(call, QMP_ERR_GENERIC, "Property 'throttle-group.%s' not found",
				 prop);
	call->ret = json_object_new_int64((int64_t)*field);
	return 0;
}
QMP_COMMAND(qom_get, "qom-get", cmd_qom_get, .params = QMP_PARAMS("path", "property"))

static int cmd_qom_set(struct qmp_call *call)
{
	const char *path, *prop;
	struct vs_throttle_config cfg;
	struct vs_error err = { 0 };
	struct set_config sc;
	struct vd_tgroup *t;
	json_object *value;
	uint64_t *field;

	if (qmp_arg_str(call, "path", true, &path) < 0 ||
	    qmp_arg_str(call, "property", true, &prop) < 0)
		return -1;
	if (!json_object_object_get_ex(call->args, "value", &value))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'value' is missing");
	if (!strncmp(path, "/objects/", 9))
		path += 9;
	prune_implicit();
	t = group_find(path);
	if (!t)
		return qmp_error(call, QMP_ERR_DEVICE_NOT_FOUND, "Device '%s' not found", path);
	vs_throttle_group_get_config(t->g, &cfg);
	if (!strcmp(prop, "limits")) {
		if (!json_object_is_type(value, json_type_object))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'limits', expected: object");
		if (limits_obj(call, value, &cfg) < 0)
			return -1;
	} else if (!strncmp(prop, "x-", 2) && limit_name(prop + 2, &cfg, &field)) {
		if (limit_arg(call, "value", prop + 2, &cfg) < 0)
			return -1;
	} else {
		return qmp_error(call, QMP_ERR_GENERIC, "Property 'throttle-group.%s' not found",
				 prop);
	}
	/*
	 * The group's state (its queued requests, their timer) is its members':
	 * it changes on their reactor.
	 */
	sc = (struct set_config){ t->g, &cfg, &err, -1 };
	if (vd_reactor_run_on(group_reactor(t->g), set_config_run, &sc) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "The reactor of '%s' is stopping", path);
	if (sc.ret < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	return 0;
}
QMP_COMMAND(qom_set, "qom-set", cmd_qom_set, .params = QMP_PARAMS("path", "property", "value"))

/* ---- block_set_io_throttle ---- */

/* QMP's argument names, in the order of the buckets, then the burst ones. */
static const char *const qmp_avg[VS_THROTTLE_BUCKET_COUNT] = { "bps",  "bps_rd",  "bps_wr",
							       "iops", "iops_rd", "iops_wr" };

struct targets {
	const char *device, *id;
	struct vs_export *exp[64];
	unsigned n;
	int reactor; /* theirs; -2: they are on different ones */
	bool overflow;
};

static void find_targets(const struct vd_export_view *v, void *opaque)
{
	struct targets *t = opaque;
	bool match = t->id ? !strcmp(v->id, t->id) :
			     (!strcmp(v->id, t->device) || !strcmp(v->node_name, t->device));

	if (!match || !v->exp)
		return;
	if (t->n == sizeof(t->exp) / sizeof(t->exp[0])) {
		t->overflow = true;
		return;
	}
	if (t->n && t->reactor != v->reactor)
		t->reactor = -2;
	else if (!t->n)
		t->reactor = v->reactor;
	t->exp[t->n++] = v->exp;
}

struct group_home {
	struct vs_throttle_group *g;
	int reactor;
	int other; /* a member's reactor other than @reactor, or -1 */
};

static void check_home(const struct vd_export_view *v, void *opaque)
{
	struct group_home *h = opaque;

	if (v->exp && vs_export_throttle(v->exp) == h->g && v->reactor != h->reactor)
		h->other = v->reactor;
}

/*
 * A group's members wake each other's requests: they all run on one
 * reactor. 0, or -1 after qmp_error() when @tg's exports would join
 * members on another one.
 */
static int check_group_home(struct qmp_call *call, const struct targets *tg, struct vd_tgroup *t,
			    const char *group)
{
	struct group_home h = { t->g, tg->reactor, -1 };

	if (tg->reactor == -2)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "The exports of '%s' run on different reactors: they cannot "
				 "share throttle group '%s'",
				 tg->id ? tg->id : tg->device, group);
	vd_export_for_each(check_home, &h);
	if (h.other >= 0)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Throttle group '%s' has members on reactor %d, '%s' runs on "
				 "reactor %d",
				 group, h.other, tg->id ? tg->id : tg->device, tg->reactor);
	return 0;
}

static int cmd_block_set_io_throttle(struct qmp_call *call)
{
	struct targets tg = { 0 };
	struct vs_throttle_config cfg;
	struct vs_error err = { 0 };
	const char *group = NULL;
	struct vd_tgroup *t;
	char name[64];
	int64_t v;

	vs_throttle_config_init(&cfg);
	if (qmp_arg_str(call, "device", false, &tg.device) < 0 ||
	    qmp_arg_str(call, "id", false, &tg.id) < 0)
		return -1;
	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++) {
		if (qmp_arg_int(call, qmp_avg[b], true, &v) < 0)
			return -1;
		cfg.limit[b].avg = (uint64_t)v; /* as QEMU: a negative one fails the check */
	}
	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++) {
		int ret;

		snprintf(name, sizeof(name), "%s_max", qmp_avg[b]);
		ret = qmp_arg_int(call, name, false, &v);
		if (ret < 0)
			return -1;
		if (ret)
			cfg.limit[b].max = (uint64_t)v;
		snprintf(name, sizeof(name), "%s_max_length", qmp_avg[b]);
		ret = qmp_arg_int(call, name, false, &v);
		if (ret < 0)
			return -1;
		if (ret)
			cfg.limit[b].burst_length = (uint64_t)v;
	}
	if (qmp_arg_int(call, "iops_size", false, &v) < 0 ||
	    qmp_arg_str(call, "group", false, &group) < 0)
		return -1;
	if (json_object_object_get_ex(call->args, "iops_size", NULL))
		cfg.iops_size = (uint64_t)v;
	/*
	 * As QEMU's qmp_get_blk(): exactly one name, DeviceNotFound when
	 * unknown; the limits are checked after.
	 */
	if (!tg.device == !tg.id)
		return qmp_error(call, QMP_ERR_GENERIC, "Need exactly one of 'device' and 'id'");
	vd_export_for_each(find_targets, &tg);
	if (!tg.n)
		return qmp_error(call, QMP_ERR_DEVICE_NOT_FOUND, "Device '%s' not found",
				 tg.id ? tg.id : tg.device);
	if (tg.overflow)
		return qmp_error(call, QMP_ERR_GENERIC, "Too many exports of node '%s'", tg.device);
	if (vs_throttle_config_check(&cfg, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (!vs_throttle_config_enabled(&cfg)) { /* all zero: no throttling */
		for (unsigned i = 0; i < tg.n; i++)
			vs_export_set_throttle(tg.exp[i], NULL);
		prune_implicit();
		return 0;
	}
	if (!group)
		group = tg.id ? tg.id : tg.device;
	t = group_find(group);
	if (t && check_group_home(call, &tg, t, group) < 0)
		return -1;
	if (!t && !(t = group_new(call, group, false)))
		return -1;
	vs_throttle_group_set_config(t->g, &cfg, NULL);
	for (unsigned i = 0; i < tg.n; i++)
		vs_export_set_throttle(tg.exp[i], t->g);
	prune_implicit();
	return 0;
}
QMP_COMMAND(block_set_io_throttle, "block_set_io_throttle", cmd_block_set_io_throttle,
	    .params = QMP_PARAMS("device", "id", "bps", "bps_rd", "bps_wr", "iops", "iops_rd",
				 "iops_wr", "bps_max", "bps_rd_max", "bps_wr_max", "iops_max",
				 "iops_rd_max", "iops_wr_max", "bps_max_length",
				 "bps_rd_max_length", "bps_wr_max_length", "iops_max_length",
				 "iops_rd_max_length", "iops_wr_max_length", "iops_size", "group"))

/* ---- the limits in query-named-block-nodes ---- */

struct node_group {
	const struct vs_node *node;
	struct vs_throttle_group *g;
};

static void find_node_group(const struct vd_export_view *v, void *opaque)
{
	struct node_group *ng = opaque;

	if (!ng->g && v->exp && vs_export_node(v->exp) == ng->node && vs_export_throttle(v->exp))
		ng->g = vs_export_throttle(v->exp);
}

void vd_throttle_node_info(const struct vs_node *node, json_object *o)
{
	struct node_group ng = { node, NULL };
	struct vs_throttle_config cfg;
	char name[32];

	vd_export_for_each(find_node_group, &ng);
	if (ng.g)
		vs_throttle_group_get_config(ng.g, &cfg);
	else
		vs_throttle_config_init(&cfg);
	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++)
		json_object_object_add(o, qmp_avg[b],
				       json_object_new_int64((int64_t)cfg.limit[b].avg));
	if (!ng.g || !vs_throttle_config_enabled(&cfg))
		return;
	/* As QEMU's BlockDeviceInfo for a throttled drive: bursts, iops_size, group. */
	for (int b = 0; b < VS_THROTTLE_BUCKET_COUNT; b++) {
		snprintf(name, sizeof(name), "%s_max", qmp_avg[b]);
		json_object_object_add(o, name, json_object_new_int64((int64_t)cfg.limit[b].max));
		snprintf(name, sizeof(name), "%s_max_length", qmp_avg[b]);
		json_object_object_add(o, name,
				       json_object_new_int64((int64_t)cfg.limit[b].burst_length));
	}
	json_object_object_add(o, "iops_size", json_object_new_int64((int64_t)cfg.iops_size));
	for (struct vd_tgroup *t = groups; t; t = t->next)
		if (t->g == ng.g)
			json_object_object_add(o, "group", json_object_new_string(t->id));
}

void vd_throttle_close_all(void)
{
	while (groups)
		group_unlink(groups);
}
