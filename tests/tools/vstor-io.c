/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-io: apply a script of I/O commands to an image through the public
 * libstore API, like qemu-io does for QEMU. Test-only: the integration tests
 * use it to write workloads that qemu-img then checks, and to hold an image
 * open (and locked) while a peer tries to open it.
 *
 *   vstor-io [-f FMT] [-r] [-U] [-t CACHE] [-k KEYFILE] [-c CMD]... [-s SCRIPT] IMAGE
 *
 * -k: the passphrase of an encrypted image (luks, qcow2 with LUKS) is the
 * content of KEYFILE.
 *
 * Without -c or -s the commands are read from standard input, one per line.
 * Numbers take 0x and K/M/G/T suffixes. Commands:
 *
 *   write OFF LEN SEED [fua]   write the seeded pattern (see below)
 *   writeb OFF LEN BYTE [fua]  write LEN bytes of BYTE (qemu-io's -P)
 *   read OFF LEN SEED          read and verify the seeded pattern
 *   readb OFF LEN BYTE         read and verify LEN bytes of BYTE
 *   zero OFF LEN [unmap] [nofallback]
 *   discard OFF LEN
 *   flush
 *   map                        print "OFFSET LENGTH data|zero|hole..." runs
 *   size                       print the virtual size
 *   echo TEXT                  print TEXT on stdout (a readiness marker)
 *   wait                       block until a line (or EOF) arrives on stdin
 *
 * The seeded pattern: the byte at image offset o is
 *   (seed + 7 * ((o >> 9) % 251) + (o & 511)) & 0xff
 * so data written to the wrong sector is caught; tests/integration/workload.py
 * computes the same bytes for the reference raw image.
 *
 * Exit status: 0 when every command succeeded, 1 at the first failing command
 * (with a message on stderr naming the line), 2 on a usage error.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/cache.h"
#include "vstor/error.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#define IO_CHUNK (4u << 20)
#define MAX_ARGS 8

struct io_ctx {
	struct vs_open_opts opts;
	char **cmds; /* -c commands, or NULL */
	size_t ncmds;
	FILE *script; /* -s file or stdin when no -c */
	struct vs_node *node;
	unsigned char *buf; /* IO_CHUNK bytes, 4 KiB aligned */
	unsigned char *cmp;
	int status;
};

static unsigned char pattern_byte(uint64_t o, unsigned seed)
{
	return (unsigned char)((seed + 7 * ((o >> 9) % 251) + (o & 511)) & 0xff);
}

static void fill_pattern(unsigned char *p, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(off + i, seed);
}

static int parse_num(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		end++;
		break;
	case 'M':
		shift = 20;
		end++;
		break;
	case 'G':
		shift = 30;
		end++;
		break;
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static int has_word(char **argv, int argc, int from, const char *w)
{
	for (int i = from; i < argc; i++)
		if (!strcmp(argv[i], w))
			return 1;
	return 0;
}

static int do_write(struct io_ctx *c, uint64_t off, uint64_t len, unsigned val, bool seeded,
		    unsigned flags)
{
	while (len) {
		size_t n = len < IO_CHUNK ? (size_t)len : IO_CHUNK;
		int ret;

		if (seeded)
			fill_pattern(c->buf, off, n, val);
		else
			memset(c->buf, (int)val, n);
		ret = vs_node_pwrite(c->node, off, c->buf, n, flags);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int do_read(struct io_ctx *c, uint64_t off, uint64_t len, unsigned val, bool seeded)
{
	while (len) {
		size_t n = len < IO_CHUNK ? (size_t)len : IO_CHUNK;
		int ret;

		ret = vs_node_pread(c->node, off, c->buf, n);
		if (ret < 0)
			return ret;
		if (seeded)
			fill_pattern(c->cmp, off, n, val);
		else
			memset(c->cmp, (int)val, n);
		if (memcmp(c->buf, c->cmp, n)) {
			for (size_t i = 0; i < n; i++) {
				if (c->buf[i] != c->cmp[i]) {
					fprintf(stderr,
						"vstor-io: mismatch at offset %" PRIu64
						": read 0x%02x, expected 0x%02x\n",
						off + i, c->buf[i], c->cmp[i]);
					break;
				}
			}
			return -EIO;
		}
		off += n;
		len -= n;
	}
	return 0;
}

static int do_map(struct io_ctx *c)
{
	uint64_t size = vs_node_size(c->node);
	uint64_t off = 0;

	while (off < size) {
		uint64_t pnum = 0, map = 0;
		unsigned st = 0;
		int ret;

		ret = vs_node_block_status(c->node, off, size - off, &pnum, &st, &map, NULL);
		if (ret < 0)
			return ret;
		if (pnum == 0)
			return -EIO;
		printf("%" PRIu64 " %" PRIu64 " %s%s%s\n", off, pnum,
		       (st & VS_BS_DATA) ? "data" : "hole", (st & VS_BS_ZERO) ? " zero" : "",
		       (st & VS_BS_ALLOCATED) ? " allocated" : "");
		off += pnum;
	}
	fflush(stdout);
	return 0;
}

static int wait_stdin(void)
{
	char line[256];

	/* Blocking on purpose: the tool has nothing else to run meanwhile. */
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	return 0;
}

/* Run one command line. Returns 0, -errno, or 1 for a syntax error. */
static int run_line(struct io_ctx *c, char *line)
{
	char *argv[MAX_ARGS];
	int argc = 0;
	uint64_t off = 0, len = 0, val = 0;
	char *save = NULL, *tok, *echo_text;

	line[strcspn(line, "\r\n")] = '\0';
	while (isspace((unsigned char)*line))
		line++;
	if (!*line || *line == '#')
		return 0;
	if (!strncmp(line, "echo", 4) && (line[4] == '\0' || isspace((unsigned char)line[4]))) {
		echo_text = line + 4;
		while (isspace((unsigned char)*echo_text))
			echo_text++;
		printf("%s\n", echo_text);
		fflush(stdout);
		return 0;
	}
	for (tok = strtok_r(line, " \t", &save); tok && argc < MAX_ARGS;
	     tok = strtok_r(NULL, " \t", &save))
		argv[argc++] = tok;
	if (tok)
		return 1;

	if (!strcmp(argv[0], "flush"))
		return argc == 1 ? vs_node_flush(c->node) : 1;
	if (!strcmp(argv[0], "map"))
		return argc == 1 ? do_map(c) : 1;
	if (!strcmp(argv[0], "wait"))
		return argc == 1 ? wait_stdin() : 1;
	if (!strcmp(argv[0], "size")) {
		if (argc != 1)
			return 1;
		printf("%" PRIu64 "\n", vs_node_size(c->node));
		fflush(stdout);
		return 0;
	}

	if (argc < 3 || parse_num(argv[1], &off) || parse_num(argv[2], &len))
		return 1;

	if (!strcmp(argv[0], "discard"))
		return argc == 3 ? vs_node_discard(c->node, off, len) : 1;
	if (!strcmp(argv[0], "zero")) {
		unsigned flags = 0;

		for (int i = 3; i < argc; i++) {
			if (!strcmp(argv[i], "unmap"))
				flags |= VS_REQ_MAY_UNMAP;
			else if (!strcmp(argv[i], "nofallback"))
				flags |= VS_REQ_NO_FALLBACK;
			else if (!strcmp(argv[i], "fua"))
				flags |= VS_REQ_FUA;
			else
				return 1;
		}
		return vs_node_write_zeroes(c->node, off, len, flags);
	}

	if (argc < 4 || parse_num(argv[3], &val) || val > 0xffffffffu)
		return 1;
	if (!strcmp(argv[0], "write") || !strcmp(argv[0], "writeb")) {
		bool seeded = !strcmp(argv[0], "write");

		if (argc > 5 || (argc == 5 && !has_word(argv, argc, 4, "fua")))
			return 1;
		if (!seeded && val > 0xff)
			return 1;
		return do_write(c, off, len, (unsigned)val, seeded, argc == 5 ? VS_REQ_FUA : 0);
	}
	if (!strcmp(argv[0], "read") || !strcmp(argv[0], "readb")) {
		bool seeded = !strcmp(argv[0], "read");

		if (argc != 4 || (!seeded && val > 0xff))
			return 1;
		return do_read(c, off, len, (unsigned)val, seeded);
	}
	return 1;
}

static int run_one(struct io_ctx *c, const char *text, unsigned lineno)
{
	char *copy = strdup(text);
	int ret;

	if (!copy)
		return -ENOMEM;
	ret = run_line(c, copy);
	free(copy);
	if (ret == 1) {
		fprintf(stderr, "vstor-io: line %u: cannot parse: %s\n", lineno, text);
		return -EINVAL;
	}
	if (ret < 0) {
		char shown[256];

		snprintf(shown, sizeof(shown), "%s", text);
		shown[strcspn(shown, "\r\n")] = '\0';
		fprintf(stderr, "vstor-io: line %u: %s: %s\n", lineno, shown, strerror(-ret));
	}
	return ret;
}

static void io_main(void *arg)
{
	struct io_ctx *c = arg;
	struct vs_error err = { 0 };
	char line[1024];
	unsigned lineno = 0;
	int ret;

	ret = vs_image_open(&c->node, &c->opts, &err);
	if (ret < 0) {
		fprintf(stderr, "vstor-io: %s\n", err.msg[0] ? err.msg : strerror(-ret));
		c->status = 1;
		return;
	}

	if (c->cmds) {
		for (size_t i = 0; i < c->ncmds; i++) {
			if (run_one(c, c->cmds[i], (unsigned)i + 1) < 0) {
				c->status = 1;
				break;
			}
		}
	} else {
		while (fgets(line, sizeof(line), c->script)) {
			if (run_one(c, line, ++lineno) < 0) {
				c->status = 1;
				break;
			}
		}
	}

	vs_node_close(c->node);
	c->node = NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: vstor-io [-f FMT] [-r] [-U] [-t CACHE] [-k KEYFILE] [-c CMD]... "
		   "[-s SCRIPT] IMAGE\n");
}

int main(int argc, char **argv)
{
	struct io_ctx c = { 0 };
	const char *script = NULL;
	int opt, ret;

	c.cmds = calloc((size_t)argc, sizeof(*c.cmds));
	if (!c.cmds)
		return 1;
	c.opts.cache = VS_CACHE_WRITEBACK;
	while ((opt = getopt(argc, argv, "f:rUt:k:c:s:h")) != -1) {
		switch (opt) {
		case 'k': {
			static char key[1024];
			FILE *kf = fopen(optarg, "r");
			size_t n;

			if (!kf) {
				fprintf(stderr, "vstor-io: %s: %s\n", optarg, strerror(errno));
				return 1;
			}
			n = fread(key, 1, sizeof(key), kf);
			fclose(kf);
			c.opts.key_secret_data = key;
			c.opts.key_secret_len = n;
			break;
		}
		case 'f':
			c.opts.format = optarg;
			break;
		case 'r':
			c.opts.read_only = true;
			break;
		case 'U':
			c.opts.force_share = true;
			break;
		case 't':
			if (vs_cache_mode_parse(optarg, &c.opts.cache) < 0) {
				fprintf(stderr, "vstor-io: invalid cache mode '%s'\n", optarg);
				return 2;
			}
			break;
		case 'c':
			c.cmds[c.ncmds++] = optarg;
			break;
		case 's':
			script = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || (script && c.ncmds)) {
		usage(stderr);
		return 2;
	}
	c.opts.filename = argv[optind];
	if (!c.ncmds) {
		free(c.cmds);
		c.cmds = NULL;
		c.script = stdin;
		if (script) {
			c.script = fopen(script, "r");
			if (!c.script) {
				fprintf(stderr, "vstor-io: %s: %s\n", script, strerror(errno));
				return 1;
			}
		}
	}
	if (posix_memalign((void **)&c.buf, 4096, IO_CHUNK) ||
	    posix_memalign((void **)&c.cmp, 4096, IO_CHUNK)) {
		fprintf(stderr, "vstor-io: out of memory\n");
		return 1;
	}

	ret = vs_run_in_coroutine(io_main, &c);
	if (ret < 0) {
		fprintf(stderr, "vstor-io: cannot start the engine: %s\n", strerror(-ret));
		c.status = 1;
	}
	if (c.script && c.script != stdin)
		fclose(c.script);
	free(c.buf);
	free(c.cmp);
	free(c.cmds);
	return c.status;
}
