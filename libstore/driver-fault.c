/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fault:RULES:INNER, a test protocol driver that passes requests on to the
 * protocol node INNER (a file name, memory:SIZE, another fault: ...) and
 * fails the ones its rules choose. RULES is one or more rules separated by
 * '+'; a rule is an operation list followed by ','-separated conditions:
 *
 *   OPS         read, write, flush, discard, zero or any, joined with '|'
 *   nth=N       the first N-1 matching requests pass, the Nth fails (default 1)
 *   after=N     same as nth=N+1
 *   count=N     fail N requests from the nth on (default: all of them)
 *   once        count=1
 *   always      count unlimited (the default)
 *   off=N       only requests that end after byte N ...
 *   len=N       ... and start before byte N+len (default: to the end)
 *   prob=P      fail a matching request with probability P (0..1) ...
 *   seed=N      ... drawn from a generator seeded with N (default 1)
 *   err=E       EIO (default), ENOSPC, EDQUOT, EROFS, ENOMEM, ETIMEDOUT,
 *               or short: reads and writes move the first half of their
 *               bytes (rounded down to the alignment), then fail with EIO
 *   if=PATH     the rule only applies while PATH exists (a test switch)
 *   hold=PATH   the rule fails nothing: a request it picks waits while PATH
 *               exists (looked at every 10 ms), then goes on (a request
 *               kept in flight for as long as a test needs it)
 *
 * Numbers are qemu-img sizes (vstor/parse.h: 0x hex, k/M/G/T suffixes).
 * RULES ends at the first ':' (so PATH has none). Every injected fault is
 * reported with vs_warn() as
 * "fault: injected ERR on OP offset=N len=N (rule N)".
 *
 * Example: fault:write,off=1M,err=ENOSPC+flush,nth=3,once:img.qcow2
 */
#include "driver.h"
#include "vstor/parse.h"
#include "vstor/reactor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FAULT_MAX_RULES 16
/* How often a held request looks at its hold file. */
#define FAULT_HOLD_POLL_NS 10000000ull
#define OPBIT(op) (1u << (op))

struct fault_rule {
	unsigned ops;
	uint64_t off, end;
	uint64_t nth, count;
	double prob;
	uint64_t rng;
	int err; /* negative errno */
	bool short_io;
	char *if_path;
	char *hold_path; /* a hold rule: waits instead of failing */
	uint64_t seen, fired;
};

struct fault_state {
	struct fault_rule rules[FAULT_MAX_RULES];
	unsigned nrules;
};

static int parse_ops(char *s, unsigned *ops)
{
	static const struct {
		const char *name;
		unsigned bits;
	} names[] = {
		{ "read", OPBIT(VS_OP_READ) },
		{ "write", OPBIT(VS_OP_WRITE) },
		{ "flush", OPBIT(VS_OP_FLUSH) },
		{ "discard", OPBIT(VS_OP_DISCARD) },
		{ "zero", OPBIT(VS_OP_WRITE_ZEROES) },
		{ "any", OPBIT(VS_OP_READ) | OPBIT(VS_OP_WRITE) | OPBIT(VS_OP_FLUSH) |
				 OPBIT(VS_OP_DISCARD) | OPBIT(VS_OP_WRITE_ZEROES) },
	};
	char *save = NULL;

	*ops = 0;
	for (char *t = strtok_r(s, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
		size_t i;

		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(t, names[i].name))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return -EINVAL;
		*ops |= names[i].bits;
	}
	return *ops ? 0 : -EINVAL;
}

static int parse_err(const char *s, struct fault_rule *r)
{
	static const struct {
		const char *name;
		int err;
	} names[] = {
		{ "EIO", -EIO },     { "ENOSPC", -ENOSPC }, { "EDQUOT", -EDQUOT },
		{ "EROFS", -EROFS }, { "ENOMEM", -ENOMEM }, { "ETIMEDOUT", -ETIMEDOUT },
		{ "EPERM", -EPERM }, { "EINVAL", -EINVAL },
	};

	if (!strcmp(s, "short")) {
		r->short_io = true;
		r->err = -EIO;
		return 0;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcasecmp(s, names[i].name)) {
			r->err = names[i].err;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_rule(char *s, struct fault_rule *r)
{
	char *save = NULL, *t = strtok_r(s, ",", &save);
	uint64_t len = 0, seed = 1;
	bool have_len = false;

	r->end = UINT64_MAX;
	r->nth = 1;
	r->prob = 1.0;
	r->err = -EIO;
	if (!t || parse_ops(t, &r->ops) < 0)
		return -EINVAL;
	while ((t = strtok_r(NULL, ",", &save))) {
		char *eq = strchr(t, '=');
		const char *v = eq ? eq + 1 : "";
		int ret = 0;

		if (eq)
			*eq = '\0';
		if (!strcmp(t, "once") && !eq) {
			r->count = 1;
		} else if (!strcmp(t, "always") && !eq) {
			r->count = 0;
		} else if (!strcmp(t, "short") && !eq) {
			ret = parse_err("short", r);
		} else if (!strcmp(t, "nth") && eq) {
			ret = vs_parse_size(v, &r->nth);
			if (ret == 0 && r->nth == 0)
				ret = -EINVAL;
		} else if (!strcmp(t, "after") && eq) {
			ret = vs_parse_size(v, &r->nth);
			if (ret == 0 && r->nth == UINT64_MAX)
				ret = -EINVAL;
			r->nth++;
		} else if (!strcmp(t, "count") && eq) {
			ret = vs_parse_size(v, &r->count);
		} else if (!strcmp(t, "off") && eq) {
			ret = vs_parse_size(v, &r->off);
		} else if (!strcmp(t, "len") && eq) {
			ret = vs_parse_size(v, &len);
			have_len = true;
		} else if (!strcmp(t, "prob") && eq) {
			char *end;

			r->prob = strtod(v, &end);
			if (end == v || *end || !(r->prob >= 0.0 && r->prob <= 1.0))
				ret = -EINVAL;
		} else if (!strcmp(t, "seed") && eq) {
			ret = vs_parse_size(v, &seed);
		} else if (!strcmp(t, "err") && eq) {
			ret = parse_err(v, r);
		} else if (!strcmp(t, "if") && eq && *v) {
			free(r->if_path);
			r->if_path = strdup(v);
			if (!r->if_path)
				ret = -ENOMEM;
		} else if (!strcmp(t, "hold") && eq && *v) {
			free(r->hold_path);
			r->hold_path = strdup(v);
			if (!r->hold_path)
				ret = -ENOMEM;
		} else {
			ret = -EINVAL;
		}
		if (ret < 0)
			return ret;
	}
	if (have_len)
		r->end = len > UINT64_MAX - r->off ? UINT64_MAX : r->off + len;
	/* xorshift64* must not start at 0. */
	r->rng = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
	if (!r->rng)
		r->rng = 1;
	return 0;
}

static void fault_free_rules(struct fault_state *s)
{
	for (unsigned i = 0; i < s->nrules; i++) {
		free(s->rules[i].if_path);
		free(s->rules[i].hold_path);
		s->rules[i].if_path = NULL;
		s->rules[i].hold_path = NULL;
	}
	s->nrules = 0;
}

static int fault_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct fault_state *s = node->opaque;
	const char *spec = opts->filename + strlen("fault:");
	const char *colon = strchr(spec, ':');
	char *rules, *save = NULL;
	int ret = 0;

	if (strncmp(opts->filename, "fault:", 6) || !colon || colon == spec)
		return vs_error_set(err, -EINVAL, "Invalid fault URI '%s' (fault:RULES:INNER)",
				    opts->filename);
	rules = strndup(spec, (size_t)(colon - spec));
	if (!rules)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	for (char *t = strtok_r(rules, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
		char *copy = strdup(t);

		if (!copy) {
			ret = vs_error_set(err, -ENOMEM, "Out of memory");
			break;
		}
		if (s->nrules == FAULT_MAX_RULES) {
			free(copy);
			ret = vs_error_set(err, -EINVAL, "fault: more than %d rules",
					   FAULT_MAX_RULES);
			break;
		}
		ret = parse_rule(copy, &s->rules[s->nrules]);
		s->nrules++;
		if (ret < 0) {
			vs_error_set(err, ret, "fault: invalid rule '%s' in '%s'", t,
				     opts->filename);
			free(copy);
			break;
		}
		free(copy);
	}
	free(rules);
	if (ret == 0 && !s->nrules)
		ret = vs_error_set(err, -EINVAL, "fault: no rules in '%s'", opts->filename);
	if (ret == 0)
		ret = vs_filter_open_inner(node, colon + 1, opts, err);
	if (ret < 0)
		fault_free_rules(s);
	return ret;
}

static void fault_close(struct vs_node *node)
{
	fault_free_rules(node->opaque);
}

static double rule_random(struct fault_rule *r)
{
	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return (double)((r->rng * 0x2545f4914f6cdd1dull) >> 11) / (double)(1ull << 53);
}

/* The first rule that fails @req, or NULL. Counts the request for every matching rule. */
static struct fault_rule *fault_match(struct fault_state *s, const struct vs_req *req)
{
	struct fault_rule *hit = NULL;

	for (unsigned i = 0; i < s->nrules; i++) {
		struct fault_rule *r = &s->rules[i];
		struct stat st;

		if (!(r->ops & OPBIT(req->op)))
			continue;
		if (req->op != VS_OP_FLUSH &&
		    (req->offset + req->len <= r->off || req->offset >= r->end))
			continue;
		if (req->op == VS_OP_FLUSH && r->off)
			continue;
		if (r->if_path && stat(r->if_path, &st) < 0)
			continue;
		r->seen++;
		if (hit || r->seen < r->nth || (r->count && r->fired >= r->count))
			continue;
		if (r->prob < 1.0 && rule_random(r) >= r->prob)
			continue;
		r->fired++;
		hit = r;
	}
	return hit;
}

static const char *op_name(enum vs_op op)
{
	static const char *const names[] = { "read",	"write",	"flush",
					     "discard", "write-zeroes", "block-status" };

	return (unsigned)op < 6 ? names[op] : "?";
}

/* A short transfer: move the first half (aligned down) of the request, then fail. */
static int fault_short(struct vs_node *node, struct vs_req *req)
{
	uint64_t a = node->limits.request_align > 1 ? node->limits.request_align : 1;
	uint64_t part = (req->len / 2) & ~(a - 1);
	struct iovec one;
	int ret = 0;

	if (!part || (req->op != VS_OP_READ && req->op != VS_OP_WRITE))
		return -EIO;
	if (req->niov == 1 || req->iov[0].iov_len >= part) {
		one.iov_base = req->iov[0].iov_base;
		one.iov_len = part;
		if (req->op == VS_OP_READ)
			ret = vs_node_preadv(node->file, req->offset, part, &one, 1, 0);
		else
			ret = vs_node_pwritev(node->file, req->offset, part, &one, 1, 0);
	}
	return ret < 0 ? ret : -EIO;
}

static int fault_submit(struct vs_node *node, struct vs_req *req)
{
	struct fault_state *s = node->opaque;
	struct fault_rule *r;

	if (req->op == VS_OP_BLOCK_STATUS)
		return vs_filter_submit(node, req);
	r = fault_match(s, req);
	if (!r)
		return vs_filter_submit(node, req);
	if (r->hold_path) {
		struct stat st;

		while (stat(r->hold_path, &st) == 0)
			vs_co_sleep_ns(FAULT_HOLD_POLL_NS);
		return vs_filter_submit(node, req);
	}
	vs_warn("fault: injected %s%s on %s offset=%" PRIu64 " len=%" PRIu64 " (rule %u)",
		r->short_io ? "short transfer, " : "", vs_errno_name(r->err), op_name(req->op),
		req->offset, req->len, (unsigned)(r - s->rules) + 1);
	if (r->short_io)
		return fault_short(node, req);
	return r->err;
}

const struct vs_driver vs_driver_fault = {
	.name = "fault",
	.prefixes = (const char *const[]){ "fault:", NULL },
	.state_size = sizeof(struct fault_state),
	.open = fault_open,
	.close = fault_close,
	.submit = fault_submit,
	.truncate = vs_filter_truncate,
	.allocated_size = vs_filter_allocated_size,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_fault)
