/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Key slot changes of an open LUKS1 header (qemu-img amend's
 * encrypt.state/keyslot/new-secret/old-secret/iter-time), shared by the luks
 * format and qcow2: the header lives at @base of @file. Checks and messages
 * as qemu-img 7.2. New key material is written and flushed before the header
 * that activates it; an erased slot is marked inactive in the header first,
 * then its material is overwritten with random bytes.
 */
#include "crypto-luks.h"
#include "driver.h"
#include "secret.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AMEND_DEFAULT_ITER_TIME 2000
#define AMEND_MIN_SLOT_ITERS 1000

struct amend_params {
	int state;   /* -1 missing, 0 inactive, 1 active */
	int keyslot; /* -1: not given */
	const char *new_secret, *old_secret;
	uint64_t iter_time;
	bool force;
};

static int parse(const struct vs_kv *opts, size_t nopts, struct amend_params *p,
		 struct vs_error *err)
{
	memset(p, 0, sizeof(*p));
	p->state = -1;
	p->keyslot = -1;
	p->iter_time = AMEND_DEFAULT_ITER_TIME;
	for (size_t i = 0; i < nopts; i++) {
		const char *k = opts[i].key, *v = opts[i].value ? opts[i].value : "";
		char *end;

		if (!strncmp(k, "encrypt.", 8))
			k += 8;
		if (!strcmp(k, "state")) {
			if (!strcmp(v, "active"))
				p->state = 1;
			else if (!strcmp(v, "inactive"))
				p->state = 0;
			else
				return vs_error_set(err, -EINVAL,
						    "Parameter 'state' does not accept value '%s'",
						    v);
		} else if (!strcmp(k, "keyslot")) {
			long n = strtol(v, &end, 10);

			if (!*v || *end)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'keyslot' expects a number");
			if (n < 0 || n >= VS_LUKS_NUM_SLOTS)
				return vs_error_set(
					err, -EINVAL,
					"Invalid keyslot %ld specified, must be between 0 "
					"and %d",
					n, VS_LUKS_NUM_SLOTS - 1);
			p->keyslot = (int)n;
		} else if (!strcmp(k, "new-secret")) {
			p->new_secret = v;
		} else if (!strcmp(k, "old-secret")) {
			p->old_secret = v;
		} else if (!strcmp(k, "iter-time")) {
			p->iter_time = strtoull(v, &end, 10);
			if (!*v || *end || !p->iter_time || p->iter_time > 3600000)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'iter-time' expects a number of "
						    "milliseconds");
		} else if (!strcmp(k, VS_LUKS_AMEND_FORCE)) {
			p->force = true;
		} else {
			return vs_error_set(err, -EINVAL, "Invalid parameter '%s'", opts[i].key);
		}
	}
	if (p->state < 0)
		return vs_error_set(err, -EINVAL, "Parameter 'state' is missing");
	if (p->state == 1 && !p->new_secret)
		return vs_error_set(err, -EINVAL, "'new-secret' is required to activate a keyslot");
	if (p->state == 0 && p->new_secret)
		return vs_error_set(err, -EINVAL,
				    "'new-secret' must not be given when erasing keyslots");
	if (p->state == 0 && p->keyslot < 0 && !p->old_secret)
		return vs_error_set(err, -EINVAL,
				    "To erase keyslot(s), either explicit keyslot index or the "
				    "password currently contained in them must be given");
	return 0;
}

/* PBKDF2 runs on a worker thread: which active slots does @pass open? */
struct match_job {
	const struct vs_luks_header *h;
	uint8_t *material[VS_LUKS_NUM_SLOTS];
	const uint8_t *pass;
	size_t passlen;
	bool match[VS_LUKS_NUM_SLOTS];
	int ret;
};

static void match_fn(void *arg)
{
	struct match_job *j = arg;
	uint8_t mk[VS_CRYPTO_MAX_KEY];

	j->ret = 0;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && j->ret == 0; i++) {
		int r;

		if (!j->material[i])
			continue;
		r = vs_luks_slot_unlock(j->h, i, j->material[i], j->pass, j->passlen, mk);
		if (r == 0)
			j->match[i] = true;
		else if (r != -EACCES)
			j->ret = r;
	}
	gnutls_memset(mk, 0, sizeof(mk));
}

static int match_slots(struct vs_node *file, uint64_t base, const struct vs_luks_header *h,
		       const char *secret, bool *match, struct vs_error *err)
{
	struct match_job j = { .h = h };
	size_t split = (size_t)h->key_bytes * VS_LUKS_STRIPES;
	uint8_t *pass = NULL;
	int ret = 0;

	if (vs_secret_get(secret, &pass, &j.passlen) < 0)
		return vs_error_set(err, -ENOENT, "No secret with id '%s' found", secret);
	j.pass = pass;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && ret == 0; i++) {
		if (h->slots[i].active != VS_LUKS_SLOT_ACTIVE)
			continue;
		j.material[i] = vs_buf_alloc(split);
		ret = j.material[i] ? vs_node_pread(file,
						    base + (uint64_t)h->slots[i].key_offset *
								    VS_CRYPTO_SECTOR,
						    j.material[i], split) :
				      -ENOMEM;
	}
	if (ret == 0) {
		vs_co_run_in_worker(match_fn, &j);
		ret = j.ret;
	}
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
		free(j.material[i]);
	gnutls_memset(pass, 0, j.passlen);
	free(pass);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read LUKS key material");
	memcpy(match, j.match, sizeof(j.match));
	return 0;
}

/* Write the header (@h encoded) at @base and flush. */
static int write_header(struct vs_node *file, uint64_t base, const struct vs_luks_header *h)
{
	uint8_t *buf = vs_buf_zalloc(4096);
	int ret;

	if (!buf)
		return -ENOMEM;
	/* The header's sector(s) as on disk: the bytes after the 592 header bytes stay. */
	ret = vs_node_pread(file, base, buf, 4096);
	if (ret == 0) {
		vs_luks_encode(h, buf);
		ret = vs_node_pwrite(file, base, buf, 4096, 0);
	}
	if (ret == 0)
		ret = vs_node_flush(file);
	free(buf);
	return ret;
}

struct add_job {
	struct vs_luks_header *h;
	unsigned slot;
	const uint8_t *mk;
	const uint8_t *pass;
	size_t passlen;
	uint64_t iter_time;
	uint8_t *material;
	int ret;
};

static void add_fn(void *arg)
{
	struct add_job *j = arg;
	uint64_t iters = vs_pbkdf2_count_iters(j->h->hash, j->h->key_bytes, (unsigned)j->iter_time);

	if (iters > UINT32_MAX)
		iters = UINT32_MAX;
	if (iters < AMEND_MIN_SLOT_ITERS)
		iters = AMEND_MIN_SLOT_ITERS;
	j->ret = vs_luks_slot_set(j->h, j->slot, j->mk, j->pass, j->passlen, (uint32_t)iters,
				  j->material);
}

static int add_slot(struct vs_node *file, uint64_t base, struct vs_luks_header *h,
		    const uint8_t *mk, const struct amend_params *p, struct vs_error *err)
{
	struct vs_luks_header nh = *h;
	struct add_job j = { .h = &nh, .mk = mk, .iter_time = p->iter_time };
	uint64_t bytes = vs_luks_slot_bytes(h);
	uint8_t *pass = NULL;
	int slot = p->keyslot, ret;

	if (p->old_secret) {
		bool match[VS_LUKS_NUM_SLOTS] = { false }, any = false;

		ret = match_slots(file, base, h, p->old_secret, match, err);
		if (ret < 0)
			return ret;
		for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
			any |= match[i];
		if (!any)
			return vs_error_set(err, -EACCES,
					    "Invalid password, cannot unlock any keyslot");
	}
	if (slot >= 0 && h->slots[slot].active == VS_LUKS_SLOT_ACTIVE)
		return vs_error_set(err, -EINVAL,
				    "Refusing to overwrite active keyslot %d - please erase it "
				    "first",
				    slot);
	for (unsigned i = 0; slot < 0 && i < VS_LUKS_NUM_SLOTS; i++)
		if (h->slots[i].active != VS_LUKS_SLOT_ACTIVE)
			slot = (int)i;
	if (slot < 0)
		return vs_error_set(err, -EINVAL, "Can't add a keyslot - all keyslots are in use");
	if (vs_secret_get(p->new_secret, &pass, &j.passlen) < 0)
		return vs_error_set(err, -ENOENT, "No secret with id '%s' found", p->new_secret);
	j.pass = pass;
	j.slot = (unsigned)slot;
	j.material = vs_buf_zalloc(bytes);
	if (!j.material) {
		ret = -ENOMEM;
	} else {
		vs_co_run_in_worker(add_fn, &j);
		ret = j.ret;
	}
	gnutls_memset(pass, 0, j.passlen);
	free(pass);
	/* The material first: the header that points at it only once it is on disk. */
	if (ret == 0)
		ret = vs_node_pwrite(file,
				     base + (uint64_t)nh.slots[slot].key_offset * VS_CRYPTO_SECTOR,
				     j.material, bytes, 0);
	if (ret == 0)
		ret = vs_node_flush(file);
	if (ret == 0)
		ret = write_header(file, base, &nh);
	if (j.material) {
		gnutls_memset(j.material, 0, bytes);
		free(j.material);
	}
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not write LUKS keyslot %d", slot);
	*h = nh;
	gnutls_memset(&nh, 0, sizeof(nh));
	return 0;
}

static int erase_slots(struct vs_node *file, uint64_t base, struct vs_luks_header *h,
		       const struct amend_params *p, struct vs_error *err)
{
	struct vs_luks_header nh = *h;
	bool erase[VS_LUKS_NUM_SLOTS] = { false }, match[VS_LUKS_NUM_SLOTS] = { false };
	unsigned active = 0, n = 0;
	uint64_t bytes = vs_luks_slot_bytes(h);
	uint8_t *junk;
	int ret;

	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
		active += h->slots[i].active == VS_LUKS_SLOT_ACTIVE;
	if (p->keyslot >= 0 && h->slots[p->keyslot].active != VS_LUKS_SLOT_ACTIVE)
		return vs_error_set(err, -EINVAL, "Given keyslot %d is already erased (inactive) ",
				    p->keyslot);
	if (p->old_secret) {
		ret = match_slots(file, base, h, p->old_secret, match, err);
		if (ret < 0)
			return ret;
	}
	if (p->keyslot >= 0) {
		if (p->old_secret && !match[p->keyslot])
			return vs_error_set(err, -EINVAL,
					    "Given keyslot %d doesn't contain the given old "
					    "password for erase operation",
					    p->keyslot);
		if (active == 1 && !p->force)
			return vs_error_set(err, -EINVAL,
					    "Attempt to erase the only active keyslot %d which "
					    "will erase all the data in the image irreversibly - "
					    "refusing operation",
					    p->keyslot);
		erase[p->keyslot] = true;
		n = 1;
	} else {
		for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
			if (match[i]) {
				erase[i] = true;
				n++;
			}
		if (!n)
			return vs_error_set(err, -EINVAL,
					    "Didn't erase a keyslot, because no keyslots match "
					    "the given password");
		if (n == active && !p->force)
			return vs_error_set(err, -EINVAL,
					    "All the active keyslots match the (old) password "
					    "that was given and erasing them will erase all the "
					    "data in the image irreversibly - refusing operation");
	}
	/* The header first: a crash leaves an inactive slot with stale material, never the reverse. */
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++) {
		if (!erase[i])
			continue;
		nh.slots[i].active = VS_LUKS_SLOT_INACTIVE;
		nh.slots[i].iterations = 0;
		memset(nh.slots[i].salt, 0, VS_LUKS_SALT_LEN);
	}
	ret = write_header(file, base, &nh);
	junk = ret == 0 ? vs_buf_alloc(bytes) : NULL;
	if (ret == 0 && !junk)
		ret = -ENOMEM;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && ret == 0; i++) {
		if (!erase[i])
			continue;
		ret = vs_crypto_random(junk, bytes);
		if (ret == 0)
			ret = vs_node_pwrite(
				file, base + (uint64_t)nh.slots[i].key_offset * VS_CRYPTO_SECTOR,
				junk, bytes, 0);
	}
	if (ret == 0)
		ret = vs_node_flush(file);
	free(junk);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not erase LUKS keyslots");
	*h = nh;
	return 0;
}

int vs_luks_amend(struct vs_node *file, uint64_t base, struct vs_luks_header *h, const uint8_t *mk,
		  const struct vs_kv *opts, size_t nopts, struct vs_error *err)
{
	struct amend_params p;
	int ret = parse(opts, nopts, &p, err);

	if (ret < 0)
		return ret;
	if (!mk)
		return vs_error_set(err, -EINVAL,
				    "Parameter 'encrypt.key-secret' is required for cipher");
	return p.state ? add_slot(file, base, h, mk, &p, err) : erase_slots(file, base, h, &p, err);
}
