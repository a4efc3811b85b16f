/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Storage pools: definitions, the state directory, the backend vtable and
 * the generic pool and volume operations the tools call.
 *
 * A pool is a definition (struct vs_pool_def, persisted as versioned JSON in
 * the state directory) plus a backend (struct vs_pool_backend) that knows how
 * to build, start, stop, refresh and delete that kind of pool, and how to
 * create, delete, resize, list and open its volumes. The tools never call a
 * backend directly: they go through the vs_pool_* functions below, which
 * check names, refuse operations on volumes in use, and keep the state file
 * consistent. See docs/pools.md.
 *
 * Context: every function here (and every backend callback) runs in
 * coroutine context on the calling thread's reactor (the tools run each
 * command inside vs_run_in_coroutine()), so backends can use libstore's image
 * functions. Backend callbacks may block: they run in control tools or at
 * export setup, never on a reactor that serves I/O.
 *
 * Errors: 0 or -errno, with a message in the struct vs_error (may be NULL).
 */
#ifndef VSTOR_POOL_H
#define VSTOR_POOL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "vstor/error.h"
#include "vstor/node.h"

#define VS_POOL_NAME_MAX 128	/* pool and volume names, without the NUL */
#define VS_POOL_PATH_MAX 4096	/* paths, device names, URLs */
#define VS_POOL_MAX_DEVS 16	/* source devices of one pool */
#define VS_POOL_MAX_EXTRA 16	/* per-type extra key/values */
#define VS_POOL_STATE_VERSION 1 /* "version" of the JSON files */

/* ---- Definitions ---------------------------------------------------------- */

/* One per-type extra field ("mutual_username", "port", ...). */
struct vs_pool_kv {
	char key[64];
	char value[VS_POOL_PATH_MAX];
};

/*
 * A pool definition, as pool-define-as / pool-define give it. Empty strings
 * mean "not given". Field names follow virsh's options (--source-host ...).
 */
struct vs_pool_def {
	char name[VS_POOL_NAME_MAX + 1];
	char type[16];			    /* "dir", "netfs", "logical", "iscsi" */
	char uuid[37];			    /* generated at define when not given */
	char target[VS_POOL_PATH_MAX];	    /* --target: a directory (dir, netfs mount point) */
	char source_host[256];		    /* --source-host (host name or address) */
	unsigned source_port;		    /* host:port or <host port=>; 0 = default */
	char source_path[VS_POOL_PATH_MAX]; /* --source-path (NFS export path) */
	char source_devs[VS_POOL_MAX_DEVS][VS_POOL_PATH_MAX]; /* --source-dev (PV, IQN) */
	unsigned nb_source_devs;
	char source_name[256];	 /* --source-name (VG name) */
	char source_format[32];	 /* --source-format (netfs: "nfs"; logical: "lvm2") */
	char initiator_iqn[256]; /* --source-initiator (iSCSI initiator name) */
	char auth_type[16];	 /* --auth-type: "" or "chap" */
	char auth_username[256]; /* --auth-username */
	char auth_secret_file[VS_POOL_PATH_MAX]; /* --auth-secret-file (no secret store) */
	/*
	 * <target><permissions> of libvirt's pool XML: the mode (octal) and the
	 * numeric owner and group of the target directory, applied by
	 * pool-build. "" (or "-1" for owner and group) = not given.
	 */
	char perm_mode[8];
	char perm_owner[16];
	char perm_group[16];
	bool autostart;
	/* Backend-specific fields, e.g. iscsi "mutual_username"/"mutual_secret_file". */
	struct vs_pool_kv extra[VS_POOL_MAX_EXTRA];
	unsigned nb_extra;
};

/* Value of extra field @key or NULL. */
const char *vs_pool_def_extra(const struct vs_pool_def *def, const char *key);
/* Set extra field @key (replacing it). Returns 0, -ENOSPC or -ENAMETOOLONG. */
int vs_pool_def_set_extra(struct vs_pool_def *def, const char *key, const char *value);

/*
 * Serialise @def as the versioned JSON of the state directory (and of
 * pool-dump) into a malloc'd string. NULL when out of memory.
 */
char *vs_pool_def_to_json(const struct vs_pool_def *def, bool active);

/*
 * Parse a definition from JSON (the format vs_pool_def_to_json() writes) or
 * from libvirt's pool XML (the subset these pool types use), chosen by the
 * first non-blank character. @what names the source in messages. *@active
 * (may be NULL) receives the "active" member of a state file.
 */
int vs_pool_def_parse(struct vs_pool_def *def, const char *text, const char *what, bool *active,
		      struct vs_error *err);

/*
 * A name is valid for a pool or a volume when it is 1..VS_POOL_NAME_MAX
 * bytes, is not "." or "..", and has no '/', no control character, and
 * no leading '-'. Returns 0 or -EINVAL with a message naming @what.
 */
int vs_pool_check_name(const char *name, const char *what, struct vs_error *err);

/* An octal permission mode of at most 07777 ("0640"): 0 or -EINVAL. */
int vs_pool_parse_mode(const char *s, uint32_t *mode);
/* A numeric user or group id; "" and "-1" (libvirt's "not given") set *given false. */
int vs_pool_parse_id(const char *s, uint32_t *id, bool *given);

/* ---- Volumes --------------------------------------------------------------- */

/* What vol-info calls Type. */
enum vs_vol_type {
	VS_VOL_FILE,	/* a local file (OFD image locks protect it) */
	VS_VOL_BLOCK,	/* a local block device (OFD image locks protect it) */
	VS_VOL_NETWORK, /* NFS file, iSCSI LUN: a lease protects it */
	VS_VOL_MAPPED,	/* an LV mapped in user space: a lease protects it */
};
const char *vs_vol_type_name(enum vs_vol_type t); /* "file", "block", "network", "mapped" */

struct vs_vol_info {
	char name[VS_POOL_NAME_MAX + 1];
	/* What libstore opens: a local path, or a URL of a protocol driver. */
	char path[VS_POOL_PATH_MAX];
	char format[16]; /* "raw" or "qcow2" (probed) */
	enum vs_vol_type type;
	uint64_t capacity;		/* virtual size (qcow2) or bytes (raw) */
	uint64_t allocation;		/* bytes the volume takes on its storage */
	char backing[VS_POOL_PATH_MAX]; /* backing file as recorded, "" if none */
	char backing_format[16];
	/* Permissions of the volume's file, when the backend knows them (dir, netfs). */
	bool has_perms;
	uint32_t mode; /* permission bits (07777) */
	uint32_t owner, group;
	/* Bytes the storage holds for it (file size, LV size); 0: unknown. */
	uint64_t physical;
	/* Times of the volume's file, when the backend knows them (dir). */
	bool has_times;
	struct timespec atime, mtime, ctime;
	/* qcow2 only (probed): "0.10" or "1.1", the cluster size, lazy refcounts. */
	char compat[8];
	uint32_t cluster_size;
	bool lazy_refcounts;
	/*
	 * "luks" when the volume is encrypted (a raw LUKS volume, whose format
	 * is then "raw" as libvirt says it, or qcow2 with encrypt.format=luks),
	 * "aes" for qcow2's legacy AES; "" when it is not (probed).
	 */
	char encryption[8];
};

/* A growable list of volumes (refresh). */
struct vs_vol_list {
	struct vs_vol_info *v;
	size_t n, cap;
};
/* Append a zeroed entry and return it, or NULL when out of memory. */
struct vs_vol_info *vs_vol_list_add(struct vs_vol_list *l);
/* Sort by name. */
void vs_vol_list_sort(struct vs_vol_list *l);
void vs_vol_list_free(struct vs_vol_list *l);

/* Pool-wide numbers. */
struct vs_pool_info {
	uint64_t capacity;
	uint64_t allocation;
	uint64_t available;
};

/* What vol-create-as asks for. */
struct vs_vol_create_args {
	const char *name;
	const char *format;  /* "raw", "qcow2"; NULL = the backend's default */
	uint64_t capacity;   /* virtual size in bytes */
	uint64_t allocation; /* bytes to allocate up front; UINT64_MAX = not given */
	bool prealloc_metadata;
	/* Backing volume (resolved by the generic layer to its path), or NULL. */
	const char *backing_path;
	const char *backing_format;
	/*
	 * <permissions> of libvirt's volume XML, for backends that store files:
	 * the mode (0 = the default, 0600, as libvirt's) and, when set_owner /
	 * set_group, the numeric owner and group (else the creator's).
	 */
	uint32_t mode;
	bool set_owner, set_group;
	uint32_t owner, group;
	/*
	 * qcow2 options of libvirt's volume XML (<compat>, <clusterSize>,
	 * <features><lazy_refcounts/>), as create option values; NULL: the
	 * default. Ignored for raw volumes.
	 */
	const char *compat;
	const char *cluster_size;
	const char *lazy_refcounts;
	/*
	 * vol-clone on a backend with cow_clone: make the volume a
	 * copy-on-write clone of this one (same pool) instead of empty.
	 */
	const struct vs_vol_info *clone_of;
	/*
	 * <encryption format='luks'><secret uuid=.../>: the uuid of the secret
	 * (of the secret store) whose value is the new volume's passphrase, or
	 * NULL for a clear volume; the PBKDF2 time in ms (NULL: QEMU's 2000).
	 * The generic layer fills encrypt_key_secret, the id under which the
	 * value is registered with libstore (vs_secret_add()), for the
	 * backend's create options (vs_pool_create_encrypt_opts()).
	 */
	const char *encrypt_secret;
	const char *encrypt_iter_time;
	const char *encrypt_key_secret;
};

#define VS_VOL_DEFAULT_MODE 0600  /* libvirt's default for new volumes */
#define VS_POOL_DEFAULT_MODE 0711 /* libvirt's default for a new pool directory */

/* ---- The backend vtable -------------------------------------------------- */

struct vs_pool;

/* Flags of build, delete, vol_delete, vol_resize. */
#define VS_POOL_BUILD_OVERWRITE 0x1    /* pool-build --overwrite */
#define VS_POOL_BUILD_NO_OVERWRITE 0x2 /* pool-build --no-overwrite */
#define VS_VOL_RESIZE_ALLOCATE 0x1     /* vol-resize --allocate */
#define VS_VOL_RESIZE_SHRINK 0x2       /* vol-resize --shrink */

struct vs_pool_backend {
	const char *type; /* "dir", ... */
	/* Default volume format when vol-create-as has no --format. */
	const char *default_format;
	/*
	 * The volume formats vol-create takes (NULL-terminated), and the
	 * <source><format type=...> values a definition takes, the default
	 * first; NULL: none. pool-capabilities lists them.
	 */
	const char *const *vol_formats;
	const char *const *source_formats;

	/*
	 * find-storage-pool-sources: the sources @spec (its source_host,
	 * source_port, initiator_iqn) leads to, as definitions of this type
	 * with their source filled (*@out malloc'd, *@n of them; none is not
	 * an error). Optional: the type cannot be searched.
	 */
	int (*find_sources)(const struct vs_pool_def *spec, struct vs_pool_def **out, size_t *n,
			    struct vs_error *err);
	/* vol_create honours clone_of (storage-side clones: RBD layering). */
	bool cow_clone;
	/* vol_create makes encrypted volumes (vs_pool_create_encrypt_opts()). */
	bool encryption;

	/*
	 * Check a definition at define time (required fields of this type,
	 * say which are missing). Optional.
	 */
	int (*check_def)(const struct vs_pool_def *def, struct vs_error *err);

	/*
	 * Optional. Called before any other callback of a command on @p, with
	 * @p->priv NULL: connect (iSCSI login, NFS mount over libnfs) and set
	 * p->priv. detach undoes it; it is called once per successful attach.
	 */
	int (*attach)(struct vs_pool *p, struct vs_error *err);
	void (*detach)(struct vs_pool *p);

	/* pool-build (create the directory, the VG, ...). Optional: no-op. */
	int (*build)(struct vs_pool *p, unsigned flags, struct vs_error *err);
	/* pool-start: check the pool can be used. Optional: no-op. */
	int (*start)(struct vs_pool *p, struct vs_error *err);
	/* pool-destroy: stop using it (the data stays). Optional: no-op. */
	int (*stop)(struct vs_pool *p, struct vs_error *err);
	/* pool-delete: remove the storage itself (empty dir, the VG). Optional: -ENOTSUP. */
	int (*delete)(struct vs_pool *p, unsigned flags, struct vs_error *err);

	/*
	 * pool-refresh, pool-info, vol-list: fill @info and, when @vols is not
	 * NULL, append every volume (sorting is done by the caller).
	 */
	int (*refresh)(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		       struct vs_error *err);

	/* One volume by name: -ENOENT with "Storage volume not found" style message. */
	int (*vol_info)(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			struct vs_error *err);

	/* Optional (-ENOTSUP: say why, e.g. LUNs are not created over iSCSI). */
	int (*vol_create)(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_error *err);
	int (*vol_delete)(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err);
	/*
	 * Give volume @vol the name @name, atomically, failing with -EEXIST
	 * (and changing nothing) when a volume of that name exists. The
	 * generic layer builds new volumes under a hidden temporary name (one
	 * that refresh does not list: it starts with '.') and renames them
	 * into place when they are whole. Optional: without it a volume is
	 * built under its own name, and a create that is killed midway can
	 * leave a half-made volume behind.
	 */
	int (*vol_rename)(struct vs_pool *p, const struct vs_vol_info *vol, const char *name,
			  struct vs_error *err);
	/* Set the virtual size to @capacity (the generic layer checked --shrink). */
	int (*vol_resize)(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			  unsigned flags, struct vs_error *err);

	/*
	 * Open the volume's storage as a libstore protocol node (a file or
	 * block device node, or an nfs/iscsi/mapped node) with @opts
	 * (read_only, cache, force_share are honoured; filename is ignored).
	 * The format node on top is the generic layer's job. Optional: the
	 * default opens vol->path with the protocol driver libstore picks.
	 */
	int (*vol_open)(struct vs_pool *p, const struct vs_vol_info *vol,
			const struct vs_open_opts *opts, struct vs_node **out,
			struct vs_error *err);
};

/* A pool of the state directory, loaded for one command. */
struct vs_pool {
	struct vs_pool_def def;
	bool active; /* pool-start'ed (persisted in the state file) */
	const struct vs_pool_backend *backend;
	struct vs_pool_state *state;
	void *priv; /* backend's, between attach and detach */
	bool attached;
};

/*
 * Read a whole text file (a definition for pool-define) into a malloc'd,
 * NUL-terminated string; refuses NUL bytes and files above 16 MiB.
 */
int vs_pool_read_file(const char *path, char **out, struct vs_error *err);

/*
 * Read a CHAP secret (or any secret) from @path into @out: the file's bytes
 * with one trailing newline removed. Refuses an empty secret, one with a
 * NUL or another newline, one that does not fit, and a file that other
 * users may read or write (mode & 077, as ssh does for keys). For backends
 * that log in (iscsi).
 */
int vs_pool_read_secret(const char *path, char *out, size_t outsz, struct vs_error *err);

/* ---- Registry ------------------------------------------------------------ */

/* The backend for @type, or NULL. Backends register themselves (backends/registry.c). */
const struct vs_pool_backend *vs_pool_backend_find(const char *type);
/* The registered types, NULL-terminated (for messages and --help). */
const char *const *vs_pool_backend_types(void);

/* ---- The state directory ------------------------------------------------- */

/*
 * The state directory: DIR/pools/NAME.json (one per pool), DIR/leases/
 * (volume leases), DIR/lock (taken with flock while a command runs:
 * exclusive for commands that change definitions, shared otherwise).
 */
struct vs_pool_state;

/*
 * The state directory to use: @override if not NULL, else $VSTOR_STATE_DIR,
 * else /var/lib/vstor as root, else $XDG_DATA_HOME/vstor (~/.local/share/vstor).
 */
int vs_pool_state_dir(char *out, size_t outsz, const char *override);

/* Open (creating) the state directory @dir and take its lock. */
int vs_pool_state_open(struct vs_pool_state **out, const char *dir, bool exclusive,
		       struct vs_error *err);
void vs_pool_state_close(struct vs_pool_state *st);
const char *vs_pool_state_path(const struct vs_pool_state *st);

/* The names of all defined pools, sorted; free with vs_pool_names_free(). */
int vs_pool_state_list(struct vs_pool_state *st, char ***names, size_t *n, struct vs_error *err);
void vs_pool_names_free(char **names, size_t n);

/*
 * Store a new definition. A pool of that name is redefined as libvirt
 * does: with the same uuid (else -EEXIST), its autostart kept;
 * an inactive pool takes the definition at once, an active one when it
 * stops (vs_pool_apply_next). Fails with -EEXIST when another pool has the
 * uuid, -EINVAL for a bad name or an unknown type, or what the backend's
 * check_def says. The state lock must be exclusive.
 */
int vs_pool_define(struct vs_pool_state *st, struct vs_pool_def *def, struct vs_error *err);
/*
 * The definition an active pool takes when it stops (pool-dumpxml
 * --inactive shows it): 0, -ENOENT when there is none, or an error.
 */
int vs_pool_load_next(struct vs_pool_state *st, const char *name, struct vs_pool_def *def,
		      struct vs_error *err);
/* An inactive @p takes its next definition, if it has one (pool-destroy, pool-start). */
int vs_pool_apply_next(struct vs_pool *p, struct vs_error *err);

/* Load pool @name ("Storage pool not found" -ENOENT); free with vs_pool_free(). */
int vs_pool_load(struct vs_pool_state *st, const char *name, struct vs_pool **out,
		 struct vs_error *err);
void vs_pool_free(struct vs_pool *p); /* detaches; NULL is a no-op */
/* Write @p's definition and active flag back (atomic rename). */
int vs_pool_save(struct vs_pool *p, struct vs_error *err);

/* ---- Pool operations (generic layer: checks, then the backend) ------------- */

#define VS_POOL_FORCE 0x100 /* pool-destroy/pool-delete --force: skip the in-use check */

int vs_pool_build(struct vs_pool *p, unsigned flags, struct vs_error *err);
int vs_pool_start(struct vs_pool *p, struct vs_error *err); /* -EBUSY if active */
/*
 * pool-destroy: -EINVAL if not active; -EBUSY when a volume of the pool is
 * open (an export, a convert, QEMU: see vs_pool_vol_check_closed()), unless
 * @flags has VS_POOL_FORCE.
 */
int vs_pool_stop(struct vs_pool *p, unsigned flags, struct vs_error *err);
/*
 * pool-delete: inactive only; like pool-destroy, refused with -EBUSY while
 * a volume the backend still lists is open, unless VS_POOL_FORCE.
 */
int vs_pool_delete(struct vs_pool *p, unsigned flags, struct vs_error *err);
int vs_pool_undefine(struct vs_pool *p, struct vs_error *err); /* inactive only */
int vs_pool_set_autostart(struct vs_pool *p, bool on, struct vs_error *err);
int vs_pool_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		    struct vs_error *err);

/* ---- Volume operations (the pool must be active) --------------------------- */

#define VS_VOL_FORCE 0x100 /* --force: skip the in-use check */

int vs_pool_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
		     struct vs_error *err);
/* Create a volume; it is listed only once it is whole (see vs_pool_vol_build_begin()). */
int vs_pool_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a, struct vs_error *err);
/*
 * Delete a volume. Refused with -EBUSY, unless @flags has VS_VOL_FORCE,
 * when it is in use (vs_pool_vol_check_unused()) or when a volume of this
 * pool, or of another active local pool (dir, logical), names it as its
 * backing file.
 */
int vs_pool_vol_delete(struct vs_pool *p, const char *name, unsigned flags, struct vs_error *err);
/* @capacity is the new virtual size; shrinking needs VS_VOL_RESIZE_SHRINK. */
int vs_pool_vol_resize(struct vs_pool *p, const char *name, uint64_t capacity, unsigned flags,
		       struct vs_error *err);

/*
 * Open volume @name for I/O. With @raw_bytes, the node is the volume's
 * storage (vol-upload/vol-download/vol-wipe: bytes as stored); otherwise the
 * image on it (format probed, or @opts->format). Non-file volumes take a
 * lease (see below) that the node releases when it is closed.
 */
int vs_pool_vol_open(struct vs_pool *p, const char *name, const struct vs_open_opts *opts,
		     bool raw_bytes, struct vs_node **out, struct vs_error *err);

/*
 * Check that nobody else has volume @vol open for writing (image OFD locks
 * for files and block devices, the lease otherwise): 0, or -EBUSY with
 * "Volume X is in use ..." in @err.
 */
int vs_pool_vol_check_unused(struct vs_pool *p, const struct vs_vol_info *vol,
			     struct vs_error *err);

/*
 * Check that nobody has volume @vol open at all (any lock byte of the image
 * locks, or of the lease, held by another process: readers too, but not
 * users that opened it with force-share): 0, or -EBUSY with "... is open"
 * in @err. What pool-destroy and pool-delete check.
 */
int vs_pool_vol_check_closed(struct vs_pool *p, const struct vs_vol_info *vol,
			     struct vs_error *err);

/* ---- Building volumes --------------------------------------------------------- */

/*
 * A volume is listed only when it is whole. To make one (create, clone,
 * create-from), vs_pool_vol_build_begin() checks @a as vs_pool_vol_create()
 * does and has the backend create it under a hidden temporary name,
 * ".NAME.vstor-tmp-XXXXXX", that refresh does not list; the build is
 * recorded in the state directory (DIR/building/POOL/TMPNAME, locked with
 * flock for as long as the build runs). The caller fills the volume through
 * vs_vol_build_name() (vs_pool_vol_open() takes that name), closes it, then
 * vs_pool_vol_build_commit() renames it into place (failing with -EEXIST if
 * the name was taken meanwhile), or vs_pool_vol_build_abort() deletes it.
 * A build whose process died (its record is no longer locked) is deleted
 * by the next refresh of the pool. Backends without vol_rename build under
 * the final name. Both free @b; abort accepts NULL.
 */
struct vs_vol_build;
int vs_pool_vol_build_begin(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_vol_build **out, struct vs_error *err);
const char *vs_vol_build_name(const struct vs_vol_build *b);
int vs_pool_vol_build_commit(struct vs_vol_build *b, struct vs_error *err);
void vs_pool_vol_build_abort(struct vs_vol_build *b);

/* Wipe algorithms of vol-wipe. */
enum vs_wipe_alg {
	VS_WIPE_ZERO,
	VS_WIPE_NNSA,
	VS_WIPE_DOD,
	VS_WIPE_BSI,
	VS_WIPE_GUTMANN,
	VS_WIPE_SCHNEIER,
	VS_WIPE_PFITZNER7,
	VS_WIPE_PFITZNER33,
	VS_WIPE_RANDOM,
	VS_WIPE_TRIM,
};
int vs_wipe_alg_parse(const char *s, enum vs_wipe_alg *out);
int vs_pool_vol_wipe(struct vs_pool *p, const char *name, enum vs_wipe_alg alg, unsigned flags,
		     struct vs_error *err);

/* ---- The secret store (pool-secret.c) ------------------------------------------ */

/*
 * libvirt's secret objects, kept in DIR/secrets (mode 0700): a definition
 * per secret and its value in a file of mode 0600. Values are never in the
 * state files, never printed. See docs/encryption.md.
 */
struct vs_pool_secret_def {
	char uuid[37];
	char description[256];
	char usage_type[16];		 /* "volume", "ceph", "iscsi", "tls"; "" = none */
	char usage_id[VS_POOL_PATH_MAX]; /* the volume's path, or the usage name */
};

/* Define (or redefine) a secret from libvirt's secret XML @xml; *@out (may be NULL). */
int vs_pool_secret_define(struct vs_pool_state *st, const char *xml, const char *what,
			  struct vs_pool_secret_def *out, struct vs_error *err);
/* Secret @uuid's definition: -ENOENT ("secret not found") when there is none. */
int vs_pool_secret_load(struct vs_pool_state *st, const char *uuid, struct vs_pool_secret_def *d,
			struct vs_error *err);
/* All definitions (*@out malloc'd, unsorted). */
int vs_pool_secret_list(struct vs_pool_state *st, struct vs_pool_secret_def **out, size_t *n,
			struct vs_error *err);
int vs_pool_secret_undefine(struct vs_pool_state *st, const char *uuid, struct vs_error *err);
/* Store @len bytes as @uuid's value (a 0600 file, replaced atomically). */
int vs_pool_secret_set_value(struct vs_pool_state *st, const char *uuid, const void *data,
			     size_t len, struct vs_error *err);
/*
 * @uuid's value into *@data (malloc'd, *@len bytes: wipe with
 * gnutls_memset and free). Refuses (-EPERM) a value file that other users
 * may read or write or that another user owns.
 */
int vs_pool_secret_get_value(struct vs_pool_state *st, const char *uuid, uint8_t **data,
			     size_t *len, struct vs_error *err);
/*
 * Print @s as XML text or attribute value: the five special characters
 * escaped, other control characters as character references.
 */
void vs_pool_xml_escape(FILE *f, const char *s);
/* Print @d as libvirt's secret XML (secret-dumpxml). */
void vs_pool_secret_def_format(FILE *f, const struct vs_pool_secret_def *d);

/*
 * The uuid of the secret of volume @vol (37 bytes at @uuid): the one it was
 * created with, else a secret whose usage is the volume's path (libvirt's
 * convention). -ENOENT when it has none.
 */
int vs_pool_vol_secret(struct vs_pool *p, const struct vs_vol_info *vol, char *uuid,
		       struct vs_error *err);
/* Record @uuid as volume @vol's secret (NULL: forget it). */
int vs_pool_vol_link_secret(struct vs_pool *p, const char *vol, const char *uuid,
			    struct vs_error *err);
/* Move the record of volume @from to @to (a build renamed into place). */
void vs_pool_vol_rename_secret(struct vs_pool *p, const char *from, const char *to);

/* ---- Leases (volumes that are not local files) ----------------------------- */

/*
 * A lease is a file DIR/leases/POOL/VOLUME.lease in the state directory that
 * users of the volume lock with the image OFD locks in QEMU's byte layout
 * (libstore/lock.c): holding @perm (VS_PERM_*) and refusing to share the
 * permissions not in @shared. It is held until vs_vol_lease_release() or
 * the process ends. Conflicting users get -EAGAIN ("... is using the
 * volume"). vs_pool_vol_open() takes one for non-file volumes; backends
 * need not call these unless they open volumes by other means.
 */
struct vs_vol_lease;
int vs_vol_lease_acquire(struct vs_pool_state *st, const char *pool, const char *vol, unsigned perm,
			 unsigned shared, struct vs_vol_lease **out, struct vs_error *err);
void vs_vol_lease_release(struct vs_vol_lease *l); /* NULL is a no-op */
/* Remove the lease file of a deleted volume (ignores errors). */
void vs_vol_lease_remove(struct vs_pool_state *st, const char *pool, const char *vol);

/*
 * Cross-host leases (shared pools whose definition has the extra field
 * "sanlock_leases"): the host id holding volume @name's sanlock lease while
 * that host is alive, 0 when none does. -EINVAL when @p takes no such leases.
 */
int vs_pool_vol_lease_holder(struct vs_pool *p, const char *name, uint64_t *host_id,
			     struct vs_error *err);

/* ---- vol:POOL/VOLUME names ------------------------------------------------- */

/*
 * Register the "vol:" resolver with libstore (vs_image_open and
 * vs_image_create accept vol:POOL/VOLUME then), using the state directory
 * @state_dir (NULL: vs_pool_state_dir()'s default). For tools.
 */
int vs_pool_register_resolver(const char *state_dir);

/*
 * The volume of an active pool of @st whose path is @path (the same string,
 * or the same local file): its pool's name in @pool_out and its name in
 * @vol_out (each VS_POOL_NAME_MAX + 1 bytes). -ENOENT when no pool holds it.
 */
int vs_pool_find_vol_by_path(struct vs_pool_state *st, const char *path, char *pool_out,
			     char *vol_out, struct vs_error *err);

/* ---- Helpers for backends ------------------------------------------------- */

/*
 * Fill @vol's format, capacity, backing and backing_format by opening the
 * image at @vol->path read-only with force_share (no lock taken or
 * checked), through @p's vol_open. Sets format "raw" and capacity = size
 * when no format matches.
 */
int vs_pool_probe_volume(struct vs_pool *p, struct vs_vol_info *vol, struct vs_error *err);

#endif
