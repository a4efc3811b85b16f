/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's persistent configuration; see state.h. The file:
 *
 *   { "vstord-state": 1,
 *     "objects": [ object-add arguments ... ],
 *     "nodes": [ blockdev-add arguments ... ],
 *     "nbd-server": nbd-server-start arguments (absent: not running),
 *     "exports": [ { "arguments": block-export-add arguments,
 *                    "node": the node it serves now, when another } ... ] }
 *
 * The records hold the arguments as given; what later commands changed is
 * read from the graph at each save: an export moved to a snapshot's overlay
 * is restored on the overlay (and still shows the node-name it was added
 * with, as it did), a node whose backing is a named node names it, and a
 * named node that no blockdev-add made (blockdev-snapshot-sync's overlay)
 * is kept as the blockdev-add that opens it again. The command line's
 * nodes are left out: it gives them again.
 */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block.h"
#include "daemon.h"
#include "export.h"
#include "qmp.h"

#define STATE_FILE "vstord.json"
#define STATE_VERSION 1
#define STATE_MAX_BYTES (16u << 20)

struct record {
	struct record *next;
	enum vd_state_kind kind;
	char *key;
	json_object *args;
};

static struct {
	char *dir, *path;
	int lock_fd;
	bool active;	/* recording changes */
	bool restoring; /* records are taken, saves wait for the end */
	struct record *records;
	/* The command line's nodes: given again at each start, never saved. */
	char **static_nodes;
	size_t nstatic;
} st = { .lock_fd = -1 };

static const char *const kind_names[] = { "object", "node", "NBD server", "export" };

int vd_state_open(const char *dir, struct vs_error *err)
{
	char lock[4096];
	struct stat sb;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return vs_error_setf_errno(err, -errno, "Cannot create state directory '%s'", dir);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot open state directory '%s'", dir);
	/* The state names files and sockets: only its owner reads it. */
	if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) && fchmod(fd, sb.st_mode & 0700) < 0) {
		int ret = -errno;

		close(fd);
		return vs_error_setf_errno(err, ret, "Cannot make '%s' private", dir);
	}
	close(fd);
	if (snprintf(lock, sizeof(lock), "%s/lock", dir) >= (int)sizeof(lock))
		return vs_error_set(err, -ENAMETOOLONG, "State directory name too long");
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot open '%s'", lock);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int ret = -errno;

		close(fd);
		if (ret == -EWOULDBLOCK)
			return vs_error_set(err, -EBUSY,
					    "State directory '%s' is in use by another vstord",
					    dir);
		return vs_error_setf_errno(err, ret, "Cannot lock '%s'", lock);
	}
	st.lock_fd = fd;
	st.dir = realpath(dir, NULL); /* --daemonize changes to "/" */
	if (!st.dir || asprintf(&st.path, "%s/" STATE_FILE, st.dir) < 0) {
		st.path = NULL;
		vd_state_close();
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	return 0;
}

bool vd_state_active(void)
{
	return st.active;
}

static struct record **record_find(enum vd_state_kind kind, const char *key)
{
	struct record **p;

	for (p = &st.records; *p; p = &(*p)->next)
		if ((*p)->kind == kind && !strcmp((*p)->key, key))
			break;
	return p;
}

static void record_free(struct record *r)
{
	json_object_put(r->args);
	free(r->key);
	free(r);
}

void vd_state_add(enum vd_state_kind kind, const char *key, json_object *args)
{
	struct record **p, *r;
	json_object *copy = NULL;

	if (!st.active)
		return;
	p = record_find(kind, key);
	if (*p) { /* the same key again: a restore replacing what it ran */
		r = *p;
		*p = r->next;
		record_free(r);
		for (p = &st.records; *p; p = &(*p)->next)
			;
	}
	r = calloc(1, sizeof(*r));
	if (r)
		r->key = strdup(key);
	if (r && r->key && json_object_deep_copy(args, &copy, NULL) == 0) {
		r->kind = kind;
		r->args = copy;
		*p = r;
	} else {
		if (r)
			free(r->key);
		free(r);
		fprintf(stderr, "vstord: state: %s '%s' is not recorded: Out of memory\n",
			kind_names[kind], key);
	}
	vd_state_save();
}

void vd_state_remove(enum vd_state_kind kind, const char *key)
{
	struct record **p, *r;

	if (!st.active)
		return;
	p = record_find(kind, key);
	if (*p) {
		r = *p;
		*p = r->next;
		record_free(r);
	}
	vd_state_save();
}

/* The name of @node when it is a named node (blockdev-add's), or NULL. */
struct name_search {
	const struct vs_node *node;
	const char *name;
};

static void match_node(struct vd_node *n, void *opaque)
{
	struct name_search *s = opaque;

	if (n->node == s->node && !s->name)
		s->name = n->name;
}

static const char *named(const struct vs_node *node)
{
	struct name_search s = { .node = node };

	if (node)
		vd_node_for_each(match_node, &s);
	return s.name;
}

static json_object *copy_of(json_object *o)
{
	json_object *copy = NULL;

	if (json_object_deep_copy(o, &copy, NULL) != 0)
		return NULL;
	return copy;
}

static bool is_static(const char *name)
{
	for (size_t i = 0; i < st.nstatic; i++)
		if (!strcmp(st.static_nodes[i], name))
			return true;
	return false;
}

static void note_static(struct vd_node *n, void *opaque)
{
	char **grown = realloc(st.static_nodes, (st.nstatic + 1) * sizeof(*grown));

	(void)opaque;
	if (!grown)
		return;
	st.static_nodes = grown;
	if ((grown[st.nstatic] = strdup(n->name)))
		st.nstatic++;
}

/*
 * The blockdev-add that opens @n again, for a node a command other than
 * blockdev-add named (blockdev-snapshot-sync's overlay, a job's target):
 * its format over its file, with its options.
 */
static json_object *node_synthesized(const struct vd_node *n)
{
	json_object *args, *file;
	const char *format = vs_node_format(n->node), *filename = vs_node_filename(n->node);

	if (!format || !filename)
		return NULL; /* nothing that opens it again */
	args = json_object_new_object();
	file = json_object_new_object();

	json_object_object_add(file, "driver", json_object_new_string("file"));
	json_object_object_add(file, "filename", json_object_new_string(vs_node_filename(n->node)));
	if (!strcmp(format, "file")) {
		json_object_put(args);
		args = file;
	} else {
		json_object_object_add(args, "driver", json_object_new_string(format));
		json_object_object_add(args, "file", file);
	}
	json_object_object_add(args, "node-name", json_object_new_string(n->name));
	if (vs_node_is_read_only(n->node))
		json_object_object_add(args, "read-only", json_object_new_boolean(true));
	if (n->direct || n->no_flush) {
		json_object *cache = json_object_new_object();

		json_object_object_add(cache, "direct", json_object_new_boolean(n->direct));
		json_object_object_add(cache, "no-flush", json_object_new_boolean(n->no_flush));
		json_object_object_add(args, "cache", cache);
	}
	return args;
}

/* A node's arguments with its backing as the graph has it now. */
static json_object *node_entry(const struct vd_node *n)
{
	struct record *r = *record_find(VD_STATE_NODE, n->name);
	json_object *args = r ? copy_of(r->args) : node_synthesized(n), *given = NULL;
	const char *backing;

	if (!args)
		return args;
	backing = named(vs_node_backing(n->node));
	json_object_object_get_ex(args, "backing", &given);
	if (backing && (!json_object_is_type(given, json_type_string) ||
			strcmp(json_object_get_string(given), backing)))
		json_object_object_add(args, "backing", json_object_new_string(backing));
	return args;
}

static json_object *export_entry(const struct record *r)
{
	json_object *e, *given, *args = copy_of(r->args);
	const char *now = named(vd_export_node(r->key));

	if (!args)
		return NULL;
	e = json_object_new_object();
	json_object_object_add(e, "arguments", args);
	if (now && json_object_object_get_ex(r->args, "node-name", &given) &&
	    strcmp(json_object_get_string(given), now))
		json_object_object_add(e, "node", json_object_new_string(now));
	return e;
}

/* Adds @entry to @arr; NULL (out of memory, nothing to save) is left out. */
static void add_entry(json_object *arr, json_object *entry)
{
	if (entry)
		json_object_array_add(arr, entry);
}

static void add_node_entry(struct vd_node *n, void *opaque)
{
	if (!is_static(n->name))
		add_entry(opaque, node_entry(n));
}

int vd_state_save(void)
{
	struct vs_error err = { 0 };
	json_object *root, *objects, *nodes, *exports, *v;
	const char *text;
	int ret;

	if (!st.active || st.restoring)
		return 0;
	root = json_object_new_object();
	objects = json_object_new_array();
	nodes = json_object_new_array();
	exports = json_object_new_array();
	json_object_object_add(root, "vstord-state", json_object_new_int(STATE_VERSION));
	for (struct record *r = st.records; r; r = r->next) {
		switch (r->kind) {
		case VD_STATE_OBJECT:
			add_entry(objects, copy_of(r->args));
			break;
		case VD_STATE_NODE: /* below, in the graph's order */
			break;
		case VD_STATE_NBD_SERVER:
			if ((v = copy_of(r->args)))
				json_object_object_add(root, "nbd-server", v);
			break;
		case VD_STATE_EXPORT:
			add_entry(exports, export_entry(r));
			break;
		}
	}
	vd_node_for_each(add_node_entry, nodes);
	json_object_object_add(root, "objects", objects);
	json_object_object_add(root, "nodes", nodes);
	json_object_object_add(root, "exports", exports);
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		ret = vs_error_set(&err, -ENOMEM, "Cannot save the state: Out of memory");
	else
		ret = vs_daemon_write_file_atomic(st.path, text, strlen(text), 0600, &err);
	json_object_put(root);
	if (ret < 0)
		fprintf(stderr, "vstord: state: %s\n", err.msg);
	return ret;
}

/* ---- restore ---- */

struct restore {
	json_object *root;
	bool skipped;
};

static void skip(struct restore *rs, enum vd_state_kind kind, const char *key, const char *why)
{
	fprintf(stderr, "vstord: state: %s '%s' is not restored: %s\n", kind_names[kind], key, why);
	rs->skipped = true;
}

static const char *str_member(json_object *o, const char *name)
{
	json_object *v;

	if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Run @command with @args; 0, or -1 with the reason reported and the entry skipped. */
static int run(struct restore *rs, enum vd_state_kind kind, const char *key, const char *command,
	       json_object *args)
{
	char desc[512];

	if (qmp_run_command(command, args, false, desc, sizeof(desc)) < 0) {
		skip(rs, kind, key, desc);
		return -1;
	}
	return 0;
}

/* The node names @args refers to (children "file" and "backing", at any depth). */
static void node_refs(json_object *args, const char **refs, unsigned *n, unsigned max)
{
	json_object_object_foreach(args, key, val)
	{
		if (json_object_is_type(val, json_type_object))
			node_refs(val, refs, n, max);
		else if (json_object_is_type(val, json_type_string) && *n < max &&
			 (!strcmp(key, "file") || !strcmp(key, "backing")))
			refs[(*n)++] = json_object_get_string(val);
	}
}

static bool refs_ready(json_object *args, const char **missing)
{
	const char *refs[16];
	unsigned n = 0;

	node_refs(args, refs, &n, 16);
	for (unsigned i = 0; i < n; i++) {
		if (!vd_node_find(refs[i])) {
			*missing = refs[i];
			return false;
		}
	}
	return true;
}

/* Each node once the nodes it names are there; what never gets there is skipped. */
static void restore_nodes(struct restore *rs, json_object *nodes)
{
	size_t len = json_object_array_length(nodes);
	bool *done = calloc(len ? len : 1, sizeof(*done)), progress = true;
	const char *missing = NULL;

	if (!done) {
		skip(rs, VD_STATE_NODE, "*", "Out of memory");
		return;
	}
	while (progress) {
		progress = false;
		for (size_t i = 0; i < len; i++) {
			json_object *args = json_object_array_get_idx(nodes, i);

			if (done[i] || !refs_ready(args, &missing))
				continue;
			done[i] = progress = true;
			run(rs, VD_STATE_NODE, str_member(args, "node-name"), "blockdev-add", args);
		}
	}
	for (size_t i = 0; i < len; i++) {
		json_object *args = json_object_array_get_idx(nodes, i);
		char why[300];

		if (done[i])
			continue;
		refs_ready(args, &missing);
		snprintf(why, sizeof(why), "node '%s' is missing", missing);
		skip(rs, VD_STATE_NODE, str_member(args, "node-name"), why);
	}
	free(done);
}

static void restore_export(struct restore *rs, json_object *entry)
{
	json_object *given, *args;
	const char *id, *now = NULL, *node_name;

	json_object_object_get_ex(entry, "arguments", &given);
	id = str_member(given, "id");
	node_name = str_member(given, "node-name");
	now = str_member(entry, "node");
	if (!now) {
		run(rs, VD_STATE_EXPORT, id, "block-export-add", given);
		return;
	}
	/* Served on the node a snapshot put above the one it was added on. */
	args = copy_of(given);
	if (!args) {
		skip(rs, VD_STATE_EXPORT, id, "Out of memory");
		return;
	}
	json_object_object_add(args, "node-name", json_object_new_string(now));
	if (!strcmp(str_member(given, "type"), "nbd") && !str_member(given, "name"))
		json_object_object_add(args, "name", json_object_new_string(node_name));
	if (run(rs, VD_STATE_EXPORT, id, "block-export-add", args) == 0) {
		vd_export_set_node_name(id, node_name);
		vd_state_add(VD_STATE_EXPORT, id, given);
	}
	json_object_put(args);
}

/* Whether @root has the shape of a state file; else the reason in @why. */
static bool well_formed(json_object *root, char *why, size_t len)
{
	static const char *const lists[] = { "objects", "nodes", "exports" };
	/* The members each entry must have, by list. */
	static const char *const keys[][2] = { { "qom-type", "id" },
					       { "node-name", "driver" },
					       { "type", "id" } };
	json_object *v;

	if (!json_object_is_type(root, json_type_object)) {
		snprintf(why, len, "not a JSON object");
		return false;
	}
	if (!json_object_object_get_ex(root, "vstord-state", &v) ||
	    !json_object_is_type(v, json_type_int) || json_object_get_int(v) != STATE_VERSION) {
		snprintf(why, len, "no \"vstord-state\": %d", STATE_VERSION);
		return false;
	}
	if (json_object_object_get_ex(root, "nbd-server", &v) &&
	    !json_object_is_type(v, json_type_object)) {
		snprintf(why, len, "\"nbd-server\" is not an object");
		return false;
	}
	for (unsigned l = 0; l < 3; l++) {
		json_object *arr;

		if (!json_object_object_get_ex(root, lists[l], &arr))
			continue;
		if (!json_object_is_type(arr, json_type_array)) {
			snprintf(why, len, "\"%s\" is not an array", lists[l]);
			return false;
		}
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			json_object *e = json_object_array_get_idx(arr, i), *args = e;

			if (l == 2 && json_object_is_type(e, json_type_object))
				json_object_object_get_ex(e, "arguments", &args);
			if (!json_object_is_type(args, json_type_object) ||
			    !str_member(args, keys[l][0]) || !str_member(args, keys[l][1]) ||
			    (l == 2 && json_object_object_get_ex(e, "node", &v) &&
			     !json_object_is_type(v, json_type_string))) {
				snprintf(why, len, "entry %zu of \"%s\" is malformed", i, lists[l]);
				return false;
			}
		}
	}
	return true;
}

static int load(json_object **out, struct vs_error *err)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	char why[128], *buf;
	struct stat sb;
	ssize_t n;
	int fd;

	*out = NULL;
	fd = open(st.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot read state file '%s'", st.path);
	if (fstat(fd, &sb) < 0 || sb.st_size > STATE_MAX_BYTES) {
		close(fd);
		return vs_error_set(err, -EFBIG, "State file '%s' is too large", st.path);
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		close(fd);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	n = read(fd, buf, (size_t)sb.st_size);
	close(fd);
	if (n != sb.st_size) {
		free(buf);
		return vs_error_set(err, -EIO, "Cannot read state file '%s'", st.path);
	}
	tok = json_tokener_new_ex(QMP_MAX_DEPTH);
	if (!tok) {
		free(buf);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	*out = json_tokener_parse_ex(tok, buf, (int)n);
	jerr = json_tokener_get_error(tok);
	if (*out && json_tokener_get_parse_end(tok) < (size_t)n &&
	    buf[json_tokener_get_parse_end(tok) +
		strspn(buf + json_tokener_get_parse_end(tok), " \t\r\n")])
		jerr = json_tokener_error_parse_unexpected;
	json_tokener_free(tok);
	free(buf);
	if (!*out || jerr != json_tokener_success) {
		json_object_put(*out);
		*out = NULL;
		return vs_error_set(err, -EINVAL,
				    "State file '%s' is corrupt (%s); move it away to start "
				    "without it",
				    st.path,
				    jerr == json_tokener_success || jerr == json_tokener_continue ?
					    "truncated" :
					    json_tokener_error_desc(jerr));
	}
	if (!well_formed(*out, why, sizeof(why))) {
		json_object_put(*out);
		*out = NULL;
		return vs_error_set(err, -EINVAL,
				    "State file '%s' is corrupt (%s); move it away to start "
				    "without it",
				    st.path, why);
	}
	return 0;
}

/* Keep the file as loaded: a restore that skipped entries saves less. */
static void keep_loaded(json_object *root)
{
	struct vs_error err = { 0 };
	const char *text = json_object_to_json_string_ext(
		root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	char *bak = NULL;

	if (!text || asprintf(&bak, "%s.bak", st.path) < 0)
		return;
	if (vs_daemon_write_file_atomic(bak, text, strlen(text), 0600, &err) < 0)
		fprintf(stderr, "vstord: state: %s\n", err.msg);
	else
		fprintf(stderr, "vstord: state: the state as loaded is kept in '%s'\n", bak);
	free(bak);
}

int vd_state_restore(struct vs_error *err)
{
	struct restore rs = { 0 };
	json_object *arr, *v;
	int ret;

	if (!st.path)
		return 0;
	ret = load(&rs.root, err);
	if (ret < 0)
		return ret;
	vd_node_for_each(note_static, NULL);
	st.active = true;
	if (!rs.root)
		return 0;
	st.restoring = true;
	if (json_object_object_get_ex(rs.root, "objects", &arr)) {
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			v = json_object_array_get_idx(arr, i);
			run(&rs, VD_STATE_OBJECT, str_member(v, "id"), "object-add", v);
		}
	}
	if (json_object_object_get_ex(rs.root, "nodes", &arr))
		restore_nodes(&rs, arr);
	if (json_object_object_get_ex(rs.root, "nbd-server", &v))
		run(&rs, VD_STATE_NBD_SERVER, "", "nbd-server-start", v);
	if (json_object_object_get_ex(rs.root, "exports", &arr))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			restore_export(&rs, json_object_array_get_idx(arr, i));
	st.restoring = false;
	if (rs.skipped) {
		keep_loaded(rs.root);
		vd_state_save();
	}
	json_object_put(rs.root);
	return 0;
}

void vd_state_close(void)
{
	while (st.records) {
		struct record *r = st.records;

		st.records = r->next;
		record_free(r);
	}
	for (size_t i = 0; i < st.nstatic; i++)
		free(st.static_nodes[i]);
	free(st.static_nodes);
	st.static_nodes = NULL;
	st.nstatic = 0;
	if (st.lock_fd >= 0)
		close(st.lock_fd);
	st.lock_fd = -1;
	free(st.dir);
	free(st.path);
	st.dir = st.path = NULL;
	st.active = st.restoring = false;
}
