/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Cross-host volume leases through sanlock (shared pools: netfs, iscsi).
 *
 * A pool whose definition has the extra field "sanlock_leases" (a directory
 * that the sanlock daemons of every host reach: an NFS mount of the export,
 * a cluster file system; see docs/pools.md) keeps there, as libvirt's
 * sanlock plugin does, one lockspace file (__lockspace__, written by
 * pool-build) and one resource file per volume (VOLUME.lease, written on
 * the first write open). A writer joins the lockspace with this host's id
 * and acquires the volume's resource before it opens the volume; a second
 * host is refused while the holder's lease is alive.
 *
 * Losing the lease: sanlock runs without a watchdog here (-w 0), so the
 * process itself must stop writing. A monitor thread watches the
 * registered connection (the daemon going away ends every lease) and,
 * every second, the lockspace (still joined, this host not failing); once
 * either fails, every lease of the process is marked lost and the nodes
 * opened under it fail their writes with EIO (a fence: one atomic load per
 * write).
 */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "pool-int.h"

#define LOCKSPACE_FILE "__lockspace__"
#define DEFAULT_IO_TIMEOUT 10 /* sanlock's own default */
#define LEASE_FILE_SIZE (1u << 20)

const char *pool_sanlock_dir(const struct vs_pool *p)
{
	const char *d = vs_pool_def_extra(&p->def, "sanlock_leases");

	return d && d[0] ? d : NULL;
}

int vs_sanlock_host_id(uint64_t *id, struct vs_error *err)
{
	const char *env = getenv("VSTOR_HOST_ID");
	char buf[32] = "";
	unsigned long long v;
	char *end;

	if (env && env[0]) {
		snprintf(buf, sizeof(buf), "%s", env);
	} else {
		FILE *f = fopen("/etc/vstor/host-id", "re");

		if (!f)
			return vs_error_set(
				err, -ENOENT,
				"sanlock leases need this host's id (1-2000): write it to "
				"/etc/vstor/host-id or set VSTOR_HOST_ID");
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
		buf[strcspn(buf, " \t\r\n")] = '\0';
	}
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || end == buf || *end || v < 1 || v > 2000)
		return vs_error_set(err, -EINVAL, "invalid host id '%s': expected 1-2000", buf);
	*id = v;
	return 0;
}

#ifdef HAVE_SANLOCK

#include <sanlock.h>
#include <sanlock_admin.h>
#include <sanlock_resource.h>
#include <sanlock_rv.h>

struct pool_sanlock_lease {
	struct sanlk_lockspace ls;
	char pool[VS_POOL_NAME_MAX + 1];
	char vol[VS_POOL_NAME_MAX + 1];
	uint32_t io_timeout; /* the lockspace's */
	atomic_bool lost;
	bool released; /* given back to sanlock once lost (by the monitor) */
	struct pool_sanlock_lease *next;
	/* followed by the resource and its one disk */
	union {
		struct sanlk_resource res;
		char res_buf[sizeof(struct sanlk_resource) + sizeof(struct sanlk_disk)];
	};
};

/* The process's registered connection and its leases (the monitor's list). */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int reg_sock = -1;
static bool reg_dead;
static struct pool_sanlock_lease *leases;
static pthread_t monitor_thread;
static bool monitor_started;

static int path_in(const char *dir, const char *name, const char *suffix, char *out, size_t outsz)
{
	int n = snprintf(out, outsz, "%s/%s%s", dir, name, suffix);

	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/* The lockspace of @p (read from its lease directory) into @ls, host id @host_id. */
static int lockspace_get(const struct vs_pool *p, uint64_t host_id, struct sanlk_lockspace *ls,
			 uint32_t *io_timeout, struct vs_error *err)
{
	const char *dir = pool_sanlock_dir(p);
	int ret;

	memset(ls, 0, sizeof(*ls));
	if (path_in(dir, LOCKSPACE_FILE, "", ls->host_id_disk.path, sizeof(ls->host_id_disk.path)))
		return vs_error_set(err, -ENAMETOOLONG, "sanlock lease directory name too long");
	ret = sanlock_read_lockspace(ls, 0, io_timeout);
	if (ret < 0)
		return vs_error_set(
			err, ret < -1000 ? -EIO : ret,
			"Cannot read the sanlock lockspace '%s' of pool '%s' (error %d): "
			"run pool-build, and start the sanlock daemon",
			ls->host_id_disk.path, p->def.name, ret);
	ls->host_id = host_id;
	return 0;
}

int pool_sanlock_start(struct vs_pool *p, struct vs_error *err)
{
	struct sanlk_lockspace ls;
	uint32_t io_timeout = 0;
	uint64_t host_id;
	int ret;

	if (!pool_sanlock_dir(p))
		return 0;
	ret = vs_sanlock_host_id(&host_id, err);
	if (ret == 0)
		ret = lockspace_get(p, host_id, &ls, &io_timeout, err);
	if (ret < 0 || sanlock_inq_lockspace(&ls, 0) == 0)
		return ret;
	ret = sanlock_add_lockspace_timeout(&ls, SANLK_ADD_ASYNC, io_timeout);
	if (ret < 0 && ret != -EEXIST && ret != -EINPROGRESS)
		return vs_error_set(err, ret < -1000 ? -EIO : ret,
				    "Cannot join the sanlock lockspace '%.48s' as host %" PRIu64
				    " (error %d)",
				    ls.name, host_id, ret);
	return 0;
}

/* Join @ls (~3 s with io_timeout 1, ~20 s with 10); already joined is fine. */
static int lockspace_join(struct sanlk_lockspace *ls, uint32_t io_timeout, struct vs_error *err)
{
	int ret = sanlock_inq_lockspace(ls, 0);

	if (ret == 0)
		return 0;
	ret = sanlock_add_lockspace_timeout(ls, 0, io_timeout);
	if (ret == -EEXIST)
		return 0;
	if (ret == -EINPROGRESS) /* another process of this host is joining: wait for it */
		ret = sanlock_inq_lockspace(ls, SANLK_INQ_WAIT);
	if (ret < 0)
		return vs_error_set(err, ret < -1000 ? -EIO : ret,
				    "Cannot join the sanlock lockspace '%.48s' as host %" PRIu64
				    " (error %d)",
				    ls->name, ls->host_id, ret);
	return 0;
}

/* Resource name: the volume's own when it fits, else a hash of it. */
static void resource_name(const char *vol, char out[SANLK_NAME_LEN])
{
	uint64_t h = 0xcbf29ce484222325ull;

	memset(out, 0, SANLK_NAME_LEN);
	if (strlen(vol) < SANLK_NAME_LEN) {
		memcpy(out, vol, strlen(vol));
		return;
	}
	for (const char *s = vol; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	snprintf(out, SANLK_NAME_LEN, "%.24s~%016" PRIx64, vol, h);
}

static int resource_fill(const struct vs_pool *p, const struct sanlk_lockspace *ls, const char *vol,
			 struct sanlk_resource *res, struct vs_error *err)
{
	memcpy(res->lockspace_name, ls->name, SANLK_NAME_LEN);
	resource_name(vol, res->name);
	res->num_disks = 1;
	res->disks[0].offset = 0;
	if (path_in(pool_sanlock_dir(p), vol, ".lease", res->disks[0].path,
		    sizeof(res->disks[0].path)))
		return vs_error_set(err, -ENAMETOOLONG, "sanlock lease path too long");
	return 0;
}

/*
 * Make the resource file of @res unless it is there: written under a
 * temporary name, then linked into place (no host sees a half-written one).
 */
static int resource_init(struct sanlk_resource *res, struct vs_error *err)
{
	char path[SANLK_PATH_LEN], tmp[SANLK_PATH_LEN];
	int fd, ret;

	memcpy(path, res->disks[0].path, sizeof(path));
	if (access(path, F_OK) == 0)
		return 0;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return vs_error_set(err, -ENAMETOOLONG, "sanlock lease path too long");
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0660);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot create '%s'", tmp);
	ret = ftruncate(fd, LEASE_FILE_SIZE) < 0 ? -errno : 0;
	close(fd);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Cannot size '%s'", tmp);
		goto out_unlink;
	}
	memcpy(res->disks[0].path, tmp, sizeof(tmp));
	ret = sanlock_write_resource(res, 0, 0, 0);
	memcpy(res->disks[0].path, path, sizeof(path));
	if (ret < 0)
		ret = vs_error_set(err, ret < -1000 ? -EIO : ret,
				   "Cannot write the sanlock lease '%s' (error %d)", tmp, ret);
	else if (link(tmp, path) < 0 && errno != EEXIST) /* EEXIST: another host's won */
		ret = vs_error_setf_errno(err, -errno, "Cannot create '%s'", path);

out_unlink:
	unlink(tmp);
	return ret;
}

int pool_sanlock_build(struct vs_pool *p, struct vs_error *err)
{
	const char *dir = pool_sanlock_dir(p),
		   *t = vs_pool_def_extra(&p->def, "sanlock_io_timeout");
	struct sanlk_lockspace ls = { 0 };
	unsigned long io_timeout = DEFAULT_IO_TIMEOUT;
	uint32_t cur;
	char *end;
	int fd, ret;

	if (!dir)
		return 0;
	if (t) {
		io_timeout = strtoul(t, &end, 10);
		if (*end || !t[0] || io_timeout < 1 || io_timeout > 300)
			return vs_error_set(
				err, -EINVAL,
				"invalid sanlock_io_timeout '%s': expected 1-300 seconds", t);
	}
	ret = pool_mkdir_p(dir, 0775);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot create '%s'", dir);
	if (path_in(dir, LOCKSPACE_FILE, "", ls.host_id_disk.path, sizeof(ls.host_id_disk.path)))
		return vs_error_set(err, -ENAMETOOLONG, "sanlock lease directory name too long");
	if (sanlock_read_lockspace(&ls, 0, &cur) == 0)
		return 0; /* built already: other hosts may hold leases in it */
	snprintf(ls.name, sizeof(ls.name), "vstor-%.41s", p->def.name);
	fd = open(ls.host_id_disk.path, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot create '%s'", ls.host_id_disk.path);
	ret = ftruncate(fd, LEASE_FILE_SIZE) < 0 ? -errno : 0;
	close(fd);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot size '%s'", ls.host_id_disk.path);
	ret = sanlock_write_lockspace(&ls, 0, 0, (uint32_t)io_timeout);
	if (ret < 0)
		return vs_error_set(err, ret < -1000 ? -EIO : ret,
				    "Cannot write the sanlock lockspace '%s' (error %d): is the "
				    "sanlock daemon running?",
				    ls.host_id_disk.path, ret);
	return 0;
}

/* ---- The monitor --------------------------------------------------------- */

static void lease_mark_lost(struct pool_sanlock_lease *l, const char *why)
{
	if (atomic_exchange(&l->lost, true))
		return;
	fprintf(stderr,
		"vstor: lost the sanlock lease of volume '%s' of pool '%s' (%s): its writes "
		"fail from now on\n",
		l->vol, l->pool, why);
}

/*
 * Whether this host still holds @l's lockspace: joined, and renewed within
 * 6 io_timeouts (sanlock gives up at 8; another host may take the volume
 * 60 s after that). The delta lease's timestamp is sanlock's monotonic
 * clock in seconds, which is CLOCK_MONOTONIC.
 */
static const char *lockspace_check(struct pool_sanlock_lease *l)
{
	struct sanlk_host *h = NULL;
	int n = 0, ret = sanlock_inq_lockspace(&l->ls, 0);
	const char *why = NULL;
	struct timespec now;

	if (ret < 0)
		return "the lockspace is gone";
	clock_gettime(CLOCK_MONOTONIC, &now);
	ret = sanlock_get_hosts(l->ls.name, l->ls.host_id, &h, &n, 0);
	if (ret == 0 && n > 0) {
		uint32_t st = h[0].flags & SANLK_HOST_MASK;
		uint32_t io = l->io_timeout ? l->io_timeout : DEFAULT_IO_TIMEOUT;

		if (st == SANLK_HOST_FAIL || st == SANLK_HOST_DEAD)
			why = "lease renewal failed";
		else if (h[0].timestamp && (uint64_t)now.tv_sec > h[0].timestamp + 6ull * io)
			why = "lease not renewed in time";
	}
	free(h);
	return why;
}

static void *monitor_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd pfd;
		int sock;

		pthread_mutex_lock(&reg_lock);
		sock = reg_sock;
		pthread_mutex_unlock(&reg_lock);
		pfd = (struct pollfd){ .fd = sock, .events = POLLRDHUP };
		if (poll(&pfd, 1, 1000) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			pthread_mutex_lock(&reg_lock);
			reg_dead = true;
			for (struct pool_sanlock_lease *l = leases; l; l = l->next)
				lease_mark_lost(l, "the sanlock daemon went away");
			pthread_mutex_unlock(&reg_lock);
			return NULL;
		}
		pthread_mutex_lock(&reg_lock);
		for (struct pool_sanlock_lease *l = leases; l; l = l->next) {
			const char *why = atomic_load(&l->lost) ? NULL : lockspace_check(l);
			struct sanlk_resource *res = &l->res;

			if (!why)
				continue;
			lease_mark_lost(l, why);
			/* Fenced: give it back, so sanlock's recovery need not wait for us. */
			(void)sanlock_release(reg_sock, -1, 0, 1, &res);
			l->released = true;
		}
		pthread_mutex_unlock(&reg_lock);
	}
	return NULL;
}

/* The registered connection (made once per process); called with reg_lock. */
static int reg_get(struct vs_error *err)
{
	int ret;

	if (reg_dead)
		return vs_error_set(err, -EIO,
				    "the sanlock daemon went away: restart the process to take "
				    "leases again");
	if (reg_sock >= 0)
		return reg_sock;
	ret = sanlock_register();
	if (ret < 0)
		return vs_error_set(err, ret < -1000 ? -EIO : ret,
				    "Cannot register with the sanlock daemon (error %d): is it "
				    "running?",
				    ret);
	reg_sock = ret;
	/*
	 * No signals from sanlock: a graceful exit would flush, and a SIGKILL
	 * would end every export of the process for one lost lockspace. The
	 * monitor fences the nodes of the lost leases and releases them.
	 */
	(void)sanlock_restrict(reg_sock, SANLK_RESTRICT_SIGTERM | SANLK_RESTRICT_SIGKILL);
	if (!monitor_started) {
		pthread_attr_t a;

		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&monitor_thread, &a, monitor_main, NULL) == 0)
			monitor_started = true;
		pthread_attr_destroy(&a);
		if (!monitor_started)
			return vs_error_set(err, -EAGAIN, "Cannot start the lease monitor");
	}
	return reg_sock;
}

/* Owners of @res that are alive: *@host_id (0: none). */
static int resource_holder(struct sanlk_lockspace *ls, struct sanlk_resource *res,
			   uint64_t *host_id, struct vs_error *err)
{
	struct sanlk_host *owners = NULL, *hosts = NULL;
	int nowners = 0, nhosts = 0, ret;
	uint32_t test = 0;

	*host_id = 0;
	if (access(res->disks[0].path, F_OK) < 0)
		return 0; /* never leased */
	ret = sanlock_read_resource_owners(res, 0, &owners, &nowners);
	if (ret < 0)
		return vs_error_set(err, ret < -1000 ? -EIO : ret,
				    "Cannot read the sanlock lease '%s' (error %d)",
				    res->disks[0].path, ret);
	if (nowners > 0) {
		ret = sanlock_get_hosts(ls->name, 0, &hosts, &nhosts, 0);
		if (ret < 0 ||
		    sanlock_test_resource_owners(res, 0, owners, nowners, hosts, nhosts, &test) < 0)
			test = SANLK_TRF_FAIL; /* cannot tell: count it as held */
		if (test & SANLK_TRF_FAIL)
			*host_id = owners[0].host_id;
	}
	free(owners);
	free(hosts);
	return 0;
}

static int lease_setup(struct vs_pool *p, const char *vol, struct pool_sanlock_lease *l,
		       struct vs_error *err)
{
	uint64_t host_id;
	uint32_t io_timeout = 0;
	int ret = vs_sanlock_host_id(&host_id, err);

	if (ret == 0)
		ret = lockspace_get(p, host_id, &l->ls, &io_timeout, err);
	l->io_timeout = io_timeout;
	if (ret == 0)
		ret = lockspace_join(&l->ls, io_timeout, err);
	if (ret == 0)
		ret = resource_fill(p, &l->ls, vol, &l->res, err);
	snprintf(l->pool, sizeof(l->pool), "%s", p->def.name);
	snprintf(l->vol, sizeof(l->vol), "%s", vol);
	return ret;
}

int pool_sanlock_holder(struct vs_pool *p, const char *vol, uint64_t *host_id, struct vs_error *err)
{
	struct pool_sanlock_lease *l;
	int ret;

	*host_id = 0;
	if (!pool_sanlock_dir(p))
		return 0;
	l = calloc(1, sizeof(*l));
	if (!l)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = lease_setup(p, vol, l, err);
	if (ret == 0)
		ret = resource_holder(&l->ls, &l->res, host_id, err);
	free(l);
	return ret;
}

int pool_sanlock_check_free(struct vs_pool *p, const char *vol, struct vs_error *err)
{
	uint64_t holder, self = 0;
	int ret = pool_sanlock_holder(p, vol, &holder, err);

	if (ret < 0)
		return ret;
	/* This host's own users are the local locks' business (and --force's). */
	(void)vs_sanlock_host_id(&self, NULL);
	if (holder && holder != self)
		return vs_error_set(err, -EBUSY,
				    "storage volume '%s' is in use by host %" PRIu64
				    " (it holds the volume's sanlock lease)",
				    vol, holder);
	return 0;
}

int pool_sanlock_acquire(struct vs_pool *p, const char *vol, struct pool_sanlock_lease **out,
			 struct vs_error *err)
{
	struct pool_sanlock_lease *l = calloc(1, sizeof(*l));
	struct sanlk_resource *res;
	uint64_t holder = 0;
	int sock, ret;

	if (!l)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = lease_setup(p, vol, l, err);
	if (ret == 0)
		ret = resource_init(&l->res, err);
	if (ret < 0)
		goto out_free;
	pthread_mutex_lock(&reg_lock);
	sock = reg_get(err);
	if (sock < 0) {
		ret = sock;
		pthread_mutex_unlock(&reg_lock);
		goto out_free;
	}
	res = &l->res;
	/*
	 * No waiting in the daemon for a failed holder's lease to time out
	 * (up to 8 io_timeouts + 60 s, uninterruptible): refused now, with
	 * the holder's id; the caller retries.
	 */
	ret = sanlock_acquire(sock, -1, SANLK_ACQUIRE_OWNER_NOWAIT, 1, &res, NULL);
	if (ret == 0) {
		l->next = leases;
		leases = l;
	}
	pthread_mutex_unlock(&reg_lock);
	if (ret < 0) {
		struct vs_error e = { 0 };

		(void)resource_holder(&l->ls, &l->res, &holder, &e);
		if (ret == SANLK_ACQUIRE_IDLIVE || ret == SANLK_ACQUIRE_OWNED ||
		    ret == SANLK_ACQUIRE_OTHER || ret == SANLK_ACQUIRE_OWNED_RETRY || holder)
			ret = holder ? vs_error_set(err, -EAGAIN,
						    "storage volume '%s' of pool '%s' is in use "
						    "by host %" PRIu64
						    " (it holds the volume's sanlock lease)",
						    vol, p->def.name, holder) :
				       vs_error_set(err, -EAGAIN,
						    "storage volume '%s' of pool '%s' is in use "
						    "by another host (sanlock error %d)",
						    vol, p->def.name, ret);
		else
			ret = vs_error_set(err, ret < -1000 ? -EIO : ret,
					   "Cannot acquire the sanlock lease of volume '%s' of "
					   "pool '%s' (error %d)",
					   vol, p->def.name, ret);
		goto out_free;
	}
	*out = l;
	return 0;

out_free:
	free(l);
	return ret;
}

const atomic_bool *pool_sanlock_lost_flag(const struct pool_sanlock_lease *l)
{
	return &l->lost;
}

void pool_sanlock_release(struct pool_sanlock_lease *l)
{
	struct pool_sanlock_lease **pp;
	struct sanlk_resource *res;

	if (!l)
		return;
	pthread_mutex_lock(&reg_lock);
	for (pp = &leases; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	res = &l->res;
	if (reg_sock >= 0 && !reg_dead && !l->released)
		(void)sanlock_release(reg_sock, -1, 0, 1, &res);
	pthread_mutex_unlock(&reg_lock);
	free(l);
}

void pool_sanlock_remove(struct vs_pool *p, const char *vol)
{
	char path[VS_POOL_PATH_MAX];

	if (pool_sanlock_dir(p) &&
	    path_in(pool_sanlock_dir(p), vol, ".lease", path, sizeof(path)) == 0)
		(void)unlink(path);
}

#else /* !HAVE_SANLOCK */

struct pool_sanlock_lease {
	atomic_bool lost;
};

static int no_sanlock(const struct vs_pool *p, struct vs_error *err)
{
	return vs_error_set(err, -ENOTSUP,
			    "pool '%s' uses sanlock leases, but vstor was built without sanlock",
			    p->def.name);
}

int pool_sanlock_build(struct vs_pool *p, struct vs_error *err)
{
	return pool_sanlock_dir(p) ? no_sanlock(p, err) : 0;
}

int pool_sanlock_start(struct vs_pool *p, struct vs_error *err)
{
	return pool_sanlock_dir(p) ? no_sanlock(p, err) : 0;
}

int pool_sanlock_holder(struct vs_pool *p, const char *vol, uint64_t *host_id, struct vs_error *err)
{
	(void)vol;
	*host_id = 0;
	return pool_sanlock_dir(p) ? no_sanlock(p, err) : 0;
}

int pool_sanlock_check_free(struct vs_pool *p, const char *vol, struct vs_error *err)
{
	(void)vol;
	return pool_sanlock_dir(p) ? no_sanlock(p, err) : 0;
}

int pool_sanlock_acquire(struct vs_pool *p, const char *vol, struct pool_sanlock_lease **out,
			 struct vs_error *err)
{
	(void)vol;
	(void)out;
	return no_sanlock(p, err);
}

const atomic_bool *pool_sanlock_lost_flag(const struct pool_sanlock_lease *l)
{
	return &l->lost;
}

void pool_sanlock_release(struct pool_sanlock_lease *l)
{
	(void)l;
}

void pool_sanlock_remove(struct vs_pool *p, const char *vol)
{
	(void)p;
	(void)vol;
}

#endif
