/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internal to backends/: backend registration and the helpers the pool files share. */
#ifndef VSTOR_POOL_INT_H
#define VSTOR_POOL_INT_H

#include <sys/types.h>

#include "pool.h"

/*
 * The registry (registry.c). A backend defines its vtable with
 *	VS_POOL_BACKEND(name) = { .type = ..., ... };
 * which registers it before main; nothing else names it.
 */
void vs_pool_backend_register(const struct vs_pool_backend *b);
#define VS_POOL_BACKEND(name)                                                          \
	static const struct vs_pool_backend name;                                      \
	static void __attribute__((constructor)) vs_pool_backend_register_##name(void) \
	{                                                                              \
		vs_pool_backend_register(&name);                                       \
	}                                                                              \
	static const struct vs_pool_backend name

/* An open state directory (pool-state.c). */
struct vs_pool_state {
	char path[VS_POOL_PATH_MAX];
	int lock_fd; /* -1 without lock */
};

/*
 * DIR/@sub/@name@suffix of @st into @out (@name NULL: DIR/@sub@suffix);
 * -ENAMETOOLONG when it does not fit (pool-state.c).
 */
int pool_state_file(const struct vs_pool_state *st, char *out, size_t outsz, const char *sub,
		    const char *name, const char *suffix);
/* The definition file DIR/pools/@name.json (pool-state.c). */
int pool_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz);
/* DIR/next/@name.json: a redefined active pool's next definition (pool-state.c). */
int pool_next_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz);
/* mkdir -p with @mode for the directories it creates; 0 or -errno (pool-state.c). */
int pool_mkdir_p(const char *path, mode_t mode);

/* 0 when @p is active (attached to its backend), else an error (pool.c). */
int pool_need_active(struct vs_pool *p, struct vs_error *err);

/* The checks of a create; fills @args (format, allocation) from @a (pool-vol.c). */
int pool_vol_create_check(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_vol_create_args *args, struct vs_error *err);

/* vs_pool_vol_check_unused, unless @flags has VS_VOL_FORCE (pool-lease.c). */
int pool_vol_check_unforced(struct vs_pool *p, const struct vs_vol_info *vol, unsigned flags,
			    struct vs_error *err);

/* Is @name one of the builds' temporary names (".NAME.vstor-tmp-XXXXXX")? (pool-build.c) */
bool pool_build_tmp_name(const char *name);
/* Delete what builds that died left in @p (pool-build.c). */
void pool_build_cleanup(struct vs_pool *p);

/*
 * Shared by the backends' volume callbacks (pool-vol.c).
 */
/* virsh's "Storage volume not found" error for @name; returns -ENOENT. */
int vs_pool_vol_not_found(struct vs_error *err, const char *name);
/* Whether @a asks for the whole capacity allocated (--allocation >= capacity). */
bool vs_vol_create_full(const struct vs_vol_create_args *a);
/*
 * Creation options into @kv (room for 3): backing_file and backing_fmt
 * when @backing is given (@backing_fmt when not empty), preallocation
 * when @prealloc is not NULL. Returns how many.
 */
size_t vs_pool_create_opts(struct vs_kv *kv, const char *backing, const char *backing_fmt,
			   const char *prealloc);
/*
 * The qcow2 options of @a (compat, cluster_size, lazy_refcounts) into @kv
 * (room for 3) when @a->format is qcow2. Returns how many.
 */
size_t vs_pool_create_qcow2_opts(struct vs_kv *kv, const struct vs_vol_create_args *a);
/*
 * The encryption options of @a into @kv (room for 3): for qcow2
 * encrypt.format, encrypt.key-secret (and encrypt.iter-time), for raw the
 * luks format's key-secret (and iter-time). Returns how many; *@format is
 * the format to create ("luks" for an encrypted raw volume).
 */
size_t vs_pool_create_encrypt_opts(struct vs_kv *kv, const struct vs_vol_create_args *a,
				   const char **format);
/*
 * Open @vol's image of @p (its path, without backing; @force_share as -U;
 * an encrypted qcow2 with the pool's secret), resize it to @capacity with
 * @prealloc, close it.
 */
int vs_pool_image_resize(struct vs_pool *p, const struct vs_vol_info *vol, bool force_share,
			 uint64_t capacity, enum vs_prealloc prealloc, struct vs_error *err);

/*
 * Register the value of secret @uuid of the store with libstore
 * (vs_secret_add()) under an id of its own, in *@id, for a create's
 * key-secret option; the caller removes it (vs_secret_remove()) after the
 * create (pool-secret.c).
 */
int pool_secret_register(struct vs_pool_state *st, const char *uuid, const char **id,
			 struct vs_error *err);

/* libvirt pool XML -> definition (pool-xml.c). */
int vs_pool_def_from_xml(struct vs_pool_def *def, const char *text, const char *what,
			 struct vs_error *err);

/* Copy @src into @dst of @dstsz bytes; -ENAMETOOLONG when it does not fit. */
int vs_pool_strcpy(char *dst, size_t dstsz, const char *src);

/* The checked <permissions> of @def (mode 0 and *set_* false when not given). */
int vs_pool_def_perms(const struct vs_pool_def *def, uint32_t *mode, uint32_t *owner,
		      bool *set_owner, uint32_t *group, bool *set_group, struct vs_error *err);

/*
 * Cross-host leases through sanlock (pool-sanlock.c), for pools whose
 * definition has the extra field "sanlock_leases" (the lease directory).
 */
#include <stdatomic.h>
struct pool_sanlock_lease;
/* The lease directory of @p, or NULL when @p takes no sanlock leases. */
const char *pool_sanlock_dir(const struct vs_pool *p);
/* This host's id: VSTOR_HOST_ID, else /etc/vstor/host-id (1-2000). */
int vs_sanlock_host_id(uint64_t *id, struct vs_error *err);
/* pool-build: write the lockspace unless there is one (no-op without leases). */
int pool_sanlock_build(struct vs_pool *p, struct vs_error *err);
/* pool-start: start joining the lockspace as this host (no-op without leases). */
int pool_sanlock_start(struct vs_pool *p, struct vs_error *err);
/* Acquire @vol's lease for writing (-EAGAIN "in use by host N" when held). */
int pool_sanlock_acquire(struct vs_pool *p, const char *vol, struct pool_sanlock_lease **out,
			 struct vs_error *err);
/* Set once the process lost @l (its writes must fail from then on). */
const atomic_bool *pool_sanlock_lost_flag(const struct pool_sanlock_lease *l);
void pool_sanlock_release(struct pool_sanlock_lease *l); /* NULL is a no-op */
/* The host holding @vol's lease while alive (0: none, or no leases in @p). */
int pool_sanlock_holder(struct vs_pool *p, const char *vol, uint64_t *host_id,
			struct vs_error *err);
/* 0, or -EBUSY "in use by host N" when a live host holds @vol's lease. */
int pool_sanlock_check_free(struct vs_pool *p, const char *vol, struct vs_error *err);
/* Remove the lease file of a deleted volume (ignores errors). */
void pool_sanlock_remove(struct vs_pool *p, const char *vol);

#endif
