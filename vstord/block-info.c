/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* BlockDeviceInfo and ImageInfo for the queries (see block-info.h). */
#include "block-info.h"

#include <stdint.h>
#include <stdlib.h>

#include "bitmap.h"
#include "cmd-throttle.h"

static void add_str(json_object *o, const char *key, const char *val)
{
	json_object_object_add(o, key, json_object_new_string(val));
}

static void add_int(json_object *o, const char *key, int64_t val)
{
	json_object_object_add(o, key, json_object_new_int64(val));
}

static void add_bool(json_object *o, const char *key, bool val)
{
	json_object_object_add(o, key, json_object_new_boolean(val));
}

static json_object *snapshot_info(const struct vs_snapshot_info *sn)
{
	json_object *o = json_object_new_object();

	if (sn->icount != UINT64_MAX)
		add_int(o, "icount", (int64_t)sn->icount);
	add_int(o, "vm-clock-nsec", (int64_t)(sn->vm_clock_nsec % 1000000000ULL));
	add_str(o, "name", sn->name);
	add_int(o, "date-sec", (int64_t)sn->date_sec);
	add_int(o, "date-nsec", sn->date_nsec);
	add_int(o, "vm-clock-sec", (int64_t)(sn->vm_clock_nsec / 1000000000ULL));
	add_str(o, "id", sn->id);
	add_int(o, "vm-state-size", (int64_t)sn->vm_state_size);
	return o;
}

static json_object *format_specific(const struct vs_image_info *info)
{
	json_object *o = json_object_new_object();
	json_object *data = json_object_new_object();

	for (unsigned i = 0; i < info->nb_specific; i++) {
		const struct vs_info_kv *kv = &info->specific[i];

		if (kv->type == VS_KV_STR)
			add_str(data, kv->key, kv->str);
		else if (kv->type == VS_KV_INT)
			add_int(data, kv->key, kv->i);
		else
			add_bool(data, kv->key, kv->b);
	}
	add_str(o, "type", info->specific_type);
	json_object_object_add(o, "data", data);
	return o;
}

json_object *vd_image_info(struct vs_node *node, bool backing)
{
	json_object *o = json_object_new_object();
	struct vs_image_info info;

	if (vs_node_get_info(node, &info) < 0) {
		add_int(o, "virtual-size", (int64_t)vs_node_size(node));
		add_str(o, "filename", vs_node_filename(node));
		add_str(o, "format", vs_node_format(node));
		add_bool(o, "dirty-flag", false);
		return o;
	}
	if (info.nb_snapshots) {
		json_object *arr = json_object_new_array();

		for (unsigned i = 0; i < info.nb_snapshots; i++)
			json_object_array_add(arr, snapshot_info(&info.snapshots[i]));
		json_object_object_add(o, "snapshots", arr);
	}
	if (backing && vs_node_backing(node))
		json_object_object_add(o, "backing-image",
				       vd_image_info(vs_node_backing(node), true));
	if (info.backing_filename && info.backing_format[0])
		add_str(o, "backing-filename-format", info.backing_format);
	add_int(o, "virtual-size", (int64_t)info.virtual_size);
	add_str(o, "filename", vs_node_filename(node));
	if (info.cluster_size)
		add_int(o, "cluster-size", (int64_t)info.cluster_size);
	add_str(o, "format", info.format);
	if (info.actual_size >= 0)
		add_int(o, "actual-size", info.actual_size);
	if (info.specific_type[0])
		json_object_object_add(o, "format-specific", format_specific(&info));
	if (info.backing_filename && info.full_backing_filename)
		add_str(o, "full-backing-filename", info.full_backing_filename);
	if (info.encrypted)
		add_bool(o, "encrypted", true);
	if (info.backing_filename)
		add_str(o, "backing-filename", info.backing_filename);
	add_bool(o, "dirty-flag", info.dirty);
	vs_image_info_free(&info);
	return o;
}

/* QEMU's BlockDirtyInfo list, present only when the node has bitmaps. */
static void dirty_bitmaps(json_object *o, struct vs_node *node)
{
	struct vs_dirty_bitmap_info *list;
	json_object *arr;
	unsigned nb;

	if (vd_bitmap_list(node, &list, &nb) < 0 || !nb)
		return;
	arr = json_object_new_array();
	for (unsigned i = 0; i < nb; i++) {
		json_object *b = json_object_new_object();

		add_str(b, "name", list[i].name);
		add_bool(b, "recording", list[i].recording);
		add_bool(b, "persistent", list[i].persistent);
		add_bool(b, "busy", vd_bitmap_busy(node, list[i].name));
		add_int(b, "granularity", (int64_t)list[i].granularity);
		add_int(b, "count", (int64_t)list[i].count);
		if (list[i].inconsistent)
			add_bool(b, "inconsistent", true);
		json_object_array_add(arr, b);
	}
	json_object_object_add(o, "dirty-bitmaps", arr);
	free(list);
}

json_object *vd_block_device_info(struct vs_node *node, const char *name,
				  const struct vd_node *named, bool backing_image)
{
	json_object *o = json_object_new_object();
	json_object *cache = json_object_new_object();
	enum vs_cache_mode mode = vs_node_cache_mode(node);
	unsigned depth = 0;

	/* As QEMU: the depth is only counted where the chain is shown too. */
	for (struct vs_node *b = vs_node_backing(node); backing_image && b; b = vs_node_backing(b))
		depth++;
	add_str(o, "file", vs_node_filename(node));
	add_str(o, "node-name", name);
	add_bool(o, "ro", vs_node_is_read_only(node));
	add_str(o, "drv", vs_node_format(node));
	if (vs_node_backing(node))
		add_str(o, "backing_file", vs_node_filename(vs_node_backing(node)));
	add_int(o, "backing_file_depth", depth);
	add_bool(o, "encrypted", false);
	add_str(o, "detect_zeroes",
		named ? vs_export_detect_zeroes_name(named->detect_zeroes) : "off");
	vd_throttle_node_info(node, o);
	json_object_object_add(o, "image", vd_image_info(node, backing_image));
	add_bool(cache, "writeback", true);
	add_bool(cache, "direct", mode == VS_CACHE_NONE || mode == VS_CACHE_DIRECTSYNC);
	add_bool(cache, "no-flush", mode == VS_CACHE_UNSAFE);
	json_object_object_add(o, "cache", cache);
	add_int(o, "write_threshold", 0);
	dirty_bitmaps(o, node);
	return o;
}
