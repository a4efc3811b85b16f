/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Throttle groups: leaky buckets with QEMU's throttle semantics, and the
 * FIFO queues of the requests they hold back (see vstor/throttle.h).
 *
 * Each bucket has a level that requests fill (bytes or operations) and time
 * drains at the average rate. A request may start while every bucket it
 * uses is below its size: a tenth of a second of the average, or, with a
 * burst rate, the burst rate times its length; a second level, drained at
 * the burst rate, keeps the burst itself at that rate. Otherwise the
 * request waits for the time the fullest bucket needs to drain to its size.
 */
#include "vstor/throttle.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vstor/reactor.h"

#define NS_PER_SEC 1000000000.0

struct bucket_state {
	double level;	    /* units not yet drained at the average rate */
	double burst_level; /* units not yet drained at the burst rate */
};

/* A request waiting in a group: on its coroutine's stack. */
struct waiter {
	struct waiter *next;
	struct vs_co *co;
	const unsigned *epoch; /* released once *epoch != start */
	unsigned start;
	bool released;
};

/*
 * The requests of one direction, in arrival order. The first is the head:
 * it alone runs, waiting on the timer for the budget; the others are
 * parked until they become the head or are released.
 */
struct wait_queue {
	struct waiter *first, *last;
	struct vs_co *sleeper; /* the head, while it waits on its timer */
};

struct vs_throttle_group {
	unsigned refs;
	struct vs_throttle_config cfg;
	struct bucket_state st[VS_THROTTLE_BUCKET_COUNT];
	uint64_t last_ns;	/* when the buckets last drained */
	struct wait_queue q[2]; /* reads, writes */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void vs_throttle_config_init(struct vs_throttle_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (int i = 0; i < VS_THROTTLE_BUCKET_COUNT; i++)
		cfg->limit[i].burst_length = 1;
}

bool vs_throttle_config_enabled(const struct vs_throttle_config *cfg)
{
	for (int i = 0; i < VS_THROTTLE_BUCKET_COUNT; i++)
		if (cfg->limit[i].avg)
			return true;
	return false;
}

int vs_throttle_config_check(const struct vs_throttle_config *cfg, struct vs_error *err)
{
	const struct vs_throttle_limit *l = cfg->limit;

	for (int base = 0; base < VS_THROTTLE_BUCKET_COUNT; base += 3) {
		bool total = l[base].avg || l[base].max;
		bool rw = l[base + 1].avg || l[base + 2].avg || l[base + 1].max || l[base + 2].max;

		if (total && rw)
			return vs_error_set(err, -EINVAL,
					    "bps/iops/max total values and read/write values "
					    "cannot be used at the same time");
	}
	for (int i = 0; i < VS_THROTTLE_BUCKET_COUNT; i++) {
		if (l[i].avg > VS_THROTTLE_VALUE_MAX || l[i].max > VS_THROTTLE_VALUE_MAX)
			return vs_error_set(err, -EINVAL,
					    "bps/iops/max values must be within [0, %llu]",
					    (unsigned long long)VS_THROTTLE_VALUE_MAX);
		if (!l[i].burst_length)
			return vs_error_set(err, -EINVAL, "the burst length cannot be 0");
		if (l[i].burst_length > 1 && !l[i].max)
			return vs_error_set(err, -EINVAL, "burst length set without burst rate");
		if (l[i].max && l[i].burst_length > VS_THROTTLE_VALUE_MAX / l[i].max)
			return vs_error_set(err, -EINVAL,
					    "burst length too high for this burst rate");
		if (l[i].max && !l[i].avg)
			return vs_error_set(
				err, -EINVAL,
				"bps_max/iops_max require corresponding bps/iops values");
		if (l[i].max && l[i].max < l[i].avg)
			return vs_error_set(err, -EINVAL,
					    "bps_max/iops_max cannot be lower than bps/iops");
	}
	if (cfg->iops_size > VS_THROTTLE_VALUE_MAX)
		return vs_error_set(err, -EINVAL, "bps/iops/max values must be within [0, %llu]",
				    (unsigned long long)VS_THROTTLE_VALUE_MAX);
	return 0;
}

const char *vs_throttle_bucket_name(enum vs_throttle_bucket b)
{
	static const char *const names[VS_THROTTLE_BUCKET_COUNT] = {
		[VS_THROTTLE_BPS_TOTAL] = "bps-total", [VS_THROTTLE_BPS_READ] = "bps-read",
		[VS_THROTTLE_BPS_WRITE] = "bps-write", [VS_THROTTLE_IOPS_TOTAL] = "iops-total",
		[VS_THROTTLE_IOPS_READ] = "iops-read", [VS_THROTTLE_IOPS_WRITE] = "iops-write",
	};

	return (unsigned)b < VS_THROTTLE_BUCKET_COUNT ? names[b] : NULL;
}

int vs_throttle_group_new(struct vs_throttle_group **out)
{
	struct vs_throttle_group *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	g->refs = 1;
	vs_throttle_config_init(&g->cfg);
	g->last_ns = now_ns();
	*out = g;
	return 0;
}

struct vs_throttle_group *vs_throttle_group_ref(struct vs_throttle_group *g)
{
	g->refs++;
	return g;
}

void vs_throttle_group_unref(struct vs_throttle_group *g)
{
	if (g && --g->refs == 0)
		free(g);
}

int vs_throttle_group_set_config(struct vs_throttle_group *g, const struct vs_throttle_config *cfg,
				 struct vs_error *err)
{
	int ret = vs_throttle_config_check(cfg, err);

	if (ret < 0)
		return ret;
	g->cfg = *cfg;
	memset(g->st, 0, sizeof(g->st));
	g->last_ns = now_ns();
	/* A head waiting on its timer re-evaluates under the new limits now. */
	for (int d = 0; d < 2; d++)
		if (g->q[d].sleeper)
			(void)vs_aio_cancel(g->q[d].sleeper);
	return 0;
}

void vs_throttle_group_get_config(const struct vs_throttle_group *g, struct vs_throttle_config *cfg)
{
	*cfg = g->cfg;
}

/* Let time drain every bucket up to now. */
static void drain_buckets(struct vs_throttle_group *g)
{
	uint64_t now = now_ns();
	double secs = (double)(now - g->last_ns) / NS_PER_SEC;

	g->last_ns = now;
	for (int i = 0; i < VS_THROTTLE_BUCKET_COUNT; i++) {
		const struct vs_throttle_limit *l = &g->cfg.limit[i];
		struct bucket_state *s = &g->st[i];

		s->level -= secs * (double)l->avg;
		if (s->level < 0)
			s->level = 0;
		s->burst_level -= secs * (double)l->max;
		if (s->burst_level < 0)
			s->burst_level = 0;
	}
}

/* Nanoseconds until bucket @i may take another request; 0: now. */
static uint64_t bucket_wait_ns(const struct vs_throttle_group *g, int i)
{
	const struct vs_throttle_limit *l = &g->cfg.limit[i];
	const struct bucket_state *s = &g->st[i];
	double size, burst_size, over;

	if (!l->avg)
		return 0;
	if (l->max) { /* the whole burst may pass before the average applies */
		size = (double)l->max * (double)l->burst_length;
		burst_size = (double)l->max / 10;
	} else { /* a tenth of a second's worth keeps small bursts smooth */
		size = (double)l->avg / 10;
		burst_size = 0;
	}
	over = s->level - size;
	if (over > 0)
		return (uint64_t)(over * NS_PER_SEC / (double)l->avg) + 1;
	if (l->burst_length > 1) {
		over = s->burst_level - burst_size;
		if (over > 0)
			return (uint64_t)(over * NS_PER_SEC / (double)l->max) + 1;
	}
	return 0;
}

/* The buckets a read (@write 0) or write uses: total and its direction, bytes and ops. */
static const int dir_buckets[2][4] = {
	{ VS_THROTTLE_BPS_TOTAL, VS_THROTTLE_BPS_READ, VS_THROTTLE_IOPS_TOTAL,
	  VS_THROTTLE_IOPS_READ },
	{ VS_THROTTLE_BPS_TOTAL, VS_THROTTLE_BPS_WRITE, VS_THROTTLE_IOPS_TOTAL,
	  VS_THROTTLE_IOPS_WRITE },
};

static uint64_t dir_wait_ns(const struct vs_throttle_group *g, int d)
{
	uint64_t wait = 0;

	for (int k = 0; k < 4; k++) {
		uint64_t w = bucket_wait_ns(g, dir_buckets[d][k]);

		if (w > wait)
			wait = w;
	}
	return wait;
}

static void account(struct vs_throttle_group *g, int d, uint64_t bytes)
{
	double ops = 1;

	if (g->cfg.iops_size && bytes > g->cfg.iops_size)
		ops = (double)bytes / (double)g->cfg.iops_size;
	for (int k = 0; k < 4; k++) {
		int i = dir_buckets[d][k];
		double units = i < VS_THROTTLE_IOPS_TOTAL ? (double)bytes : ops;

		g->st[i].level += units;
		if (g->cfg.limit[i].burst_length > 1)
			g->st[i].burst_level += units;
	}
}

/* The head leaves @q: the next request becomes the head and runs. */
static void pop_head(struct wait_queue *q)
{
	q->first = q->first->next;
	if (!q->first)
		q->last = NULL;
	else
		vs_co_wake(q->first->co);
}

void vs_throttle_group_wait(struct vs_throttle_group *g, bool write, uint64_t bytes,
			    const unsigned *epoch)
{
	int d = write ? 1 : 0;
	struct wait_queue *q = &g->q[d];
	struct waiter w = { .co = vs_co_self(), .epoch = epoch, .start = epoch ? *epoch : 0 };
	uint64_t ns;

	vs_throttle_group_ref(g);
	if (q->last)
		q->last->next = &w;
	else
		q->first = &w;
	q->last = &w;
	if (q->first != &w) {
		vs_co_yield(); /* until the head or released */
		if (q->first != &w)
			goto out; /* released: unlinked by vs_throttle_group_kick() */
		/* The head (maybe released after it was woken: it leaves below). */
	}
	for (;;) {
		drain_buckets(g);
		ns = dir_wait_ns(g, d);
		if (!ns || w.released)
			break;
		q->sleeper = w.co;
		vs_co_sleep_ns(ns);
		q->sleeper = NULL;
	}
	if (!w.released)
		account(g, d, bytes);
	pop_head(q);
out:
	vs_throttle_group_unref(g);
}

void vs_throttle_group_kick(struct vs_throttle_group *g)
{
	for (int d = 0; d < 2; d++) {
		struct wait_queue *q = &g->q[d];
		struct waiter *prev = q->first, *w;

		if (!q->first)
			continue;
		/* The head leaves by itself; cut its timer short. */
		if (q->first->epoch && *q->first->epoch != q->first->start) {
			q->first->released = true;
			if (q->sleeper)
				(void)vs_aio_cancel(q->sleeper);
		}
		/* The parked ones are unlinked and woken here. */
		while ((w = prev->next)) {
			if (w->epoch && *w->epoch != w->start) {
				prev->next = w->next;
				if (q->last == w)
					q->last = prev;
				w->released = true;
				vs_co_wake(w->co);
			} else {
				prev = w;
			}
		}
	}
}
