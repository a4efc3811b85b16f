/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-vhost: serve an image to a VM as a vhost-user-blk device, like
 * qemu-storage-daemon's vhost-user-blk export.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "pool.h"
#include "secret.h"
#include "vhost-user.h"
#include "vstor/parse.h"
#include "vstor/reactor.h"

static const char *prog = "vstor-vhost";

struct config {
	const char *image;
	const char *format;
	const char *key_secret; /* --image-opts encrypt.key-secret: an encrypted image's secret */
	const char *socket_path;
	const char *pid_file;
	const char *pool;
	const char *state_dir;
	const char *serial;
	struct vs_daemon_export_opts eo; /* --cache, --aio, --discard, --detect-zeroes */
	bool read_only;
	bool write_zeroes;
	bool verbose;
	unsigned num_queues;
	unsigned max_connections; /* 0 = the back end's default */
	unsigned handshake_limit;
	int listen_fd;
	int sigfd;
	int exit_code;
	struct vs_vhost_blk *blk;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTIONS] --socket PATH IMAGE\n"
		"Serve IMAGE (a raw or qcow2 image, or vol:POOL/VOLUME) as a vhost-user-blk\n"
		"device on the unix socket PATH, to one front end (QEMU) at a time.\n\n"
		"  -k, --socket=PATH        the vhost-user socket to listen on (required)\n"
		"  -f, --format=FORMAT      image format (raw, qcow2); probed when omitted\n"
		"  -r, --read-only          export read-only (VIRTIO_BLK_F_RO)\n"
		"      --cache=MODE         writeback (default), none, writethrough, directsync, "
		"unsafe\n"
		"      --aio=MODE           accepted for compatibility (vstor always uses io_uring)\n"
		"      --num-queues=N       number of request queues (default 1, at most %d)\n"
		"      --discard=MODE       ignore (default) or unmap: offer VIRTIO_BLK_F_DISCARD\n"
		"      --detect-zeroes=MODE off (default), on or unmap: an all-zero write becomes\n"
		"                           write-zeroes (unmap: that may deallocate, with\n"
		"                           --discard=unmap)\n"
		"      --write-zeroes=on|off  offer VIRTIO_BLK_F_WRITE_ZEROES (default on)\n"
		"      --serial=STRING      the device's serial number (GET_ID, 20 bytes at most)\n"
		"      --pool=NAME          IMAGE is a volume of pool NAME\n"
		"      --state-dir=DIR      the pools' state directory (see vstor(1))\n"
		"      --pid-file=PATH      write the pid to PATH once the socket is listening\n"
		"      --max-connections=N  hold at most N connections (the front end served and\n"
		"                           those waiting); more are closed at once (default 16;\n"
		"                           0 = no limit)\n"
		"      --handshake-limit=SECONDS  drop a connection that has not sent SET_OWNER\n"
		"                           SECONDS after it was accepted (default 10; 0 = none)\n"
		"      --object secret,id=ID,data=STRING|file=PATH[,format=raw|base64]\n"
		"                           a secret: the passphrase of an encrypted image\n"
		"      --image-opts         IMAGE is driver=FMT,file.filename=PATH[,encrypt.key-secret=ID]\n"
		"  -v, --verbose            log front ends and their request counts\n"
		"  -h, --help               show this help\n"
		"  -V, --version            show the version\n",
		prog, VS_VHOST_BLK_MAX_QUEUES);
}

static void daemon_main(void *opaque)
{
	struct config *cfg = opaque;
	struct vs_open_opts o = { .filename = cfg->image,
				  .format = cfg->format,
				  .read_only = cfg->read_only,
				  .cache = cfg->eo.cache };
	struct vs_error err = { 0 };
	struct vs_node *node = NULL;
	uint8_t *pass = NULL;
	size_t passlen = 0;
	int ret;

	if (cfg->key_secret) {
		if (vs_secret_get(cfg->key_secret, &pass, &passlen) < 0) {
			fprintf(stderr, "%s: No secret with id '%s' found\n", prog,
				cfg->key_secret);
			goto fail;
		}
		o.key_secret_data = pass;
		o.key_secret_len = passlen;
	}
	ret = vs_image_open(&node, &o, &err);
	if (pass) {
		gnutls_memset(pass, 0, passlen);
		free(pass);
	}
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		goto fail;
	}
	{
		struct vs_vhost_blk_opts bo = {
			.node = node,
			.read_only = cfg->read_only,
			.wce = vs_cache_mode_knobs(cfg->eo.cache).wce,
			.discard = cfg->eo.discard == VS_EXPORT_DISCARD_UNMAP,
			.detect_zeroes = cfg->eo.detect_zeroes,
			.write_zeroes = cfg->write_zeroes,
			.num_queues = cfg->num_queues,
			.serial = cfg->serial,
			.verbose = cfg->verbose,
			.max_connections = cfg->max_connections,
			.handshake_limit = cfg->handshake_limit,
		};

		ret = vs_vhost_blk_new(&cfg->blk, &bo);
	}
	if (ret < 0) {
		fprintf(stderr, "%s: cannot create the back end: %s\n", prog, strerror(-ret));
		goto fail;
	}
	ret = vs_vhost_blk_add_listener(cfg->blk, cfg->listen_fd);
	cfg->listen_fd = -1;
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", prog, strerror(-ret));
		goto fail;
	}
	if (cfg->pid_file && vs_daemon_write_pid(cfg->pid_file, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		vs_vhost_blk_shutdown(cfg->blk);
		goto fail;
	}
	vs_daemon_notify_ready();
	/* Serve until SIGTERM, SIGINT or SIGHUP (read through the ring). */
	vs_daemon_wait_signal(cfg->sigfd);
	vs_daemon_notify_stopping();
	ret = vs_vhost_blk_shutdown(cfg->blk);
	if (ret < 0) {
		fprintf(stderr, "%s: flush on shutdown failed: %s\n", prog, strerror(-ret));
		cfg->exit_code = EXIT_FAILURE;
	}
	vs_vhost_blk_free(cfg->blk);
	cfg->blk = NULL;
	vs_node_close(node);
	if (cfg->pid_file)
		unlink(cfg->pid_file);
	return;

fail:
	cfg->exit_code = EXIT_FAILURE;
	vs_vhost_blk_free(cfg->blk);
	cfg->blk = NULL;
	vs_node_close(node);
}

enum {
	OPT_FIRST = 256,
	OPT_NUM_QUEUES,
	OPT_WRITE_ZEROES,
	OPT_SERIAL,
	OPT_POOL,
	OPT_STATE_DIR,
	OPT_PID_FILE,
	OPT_MAX_CONNECTIONS,
	OPT_HANDSHAKE_LIMIT,
	OPT_OBJECT,
	OPT_IMAGE_OPTS,
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 'k' },
		{ "format", required_argument, NULL, 'f' },
		{ "read-only", no_argument, NULL, 'r' },
		VS_DAEMON_EXPORT_LONGOPTS,
		{ "num-queues", required_argument, NULL, OPT_NUM_QUEUES },
		{ "write-zeroes", required_argument, NULL, OPT_WRITE_ZEROES },
		{ "serial", required_argument, NULL, OPT_SERIAL },
		{ "pool", required_argument, NULL, OPT_POOL },
		{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
		{ "pid-file", required_argument, NULL, OPT_PID_FILE },
		{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
		{ "handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct config cfg = { .num_queues = 1, .write_zeroes = true, .listen_fd = -1, .sigfd = -1 };
	struct vs_error lerr = { 0 };
	char *vol = NULL, *end;
	bool image_opts = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, "k:f:rvhV", longopts, NULL)) != -1) {
		if (vs_daemon_export_option(c, optarg, &cfg.eo))
			continue;
		switch (c) {
		case 'k':
			cfg.socket_path = optarg;
			break;
		case 'f':
			cfg.format = optarg;
			break;
		case 'r':
			cfg.read_only = true;
			break;
		case OPT_NUM_QUEUES: {
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > VS_VHOST_BLK_MAX_QUEUES)
				vs_die("Invalid number of queues '%s' (1 to %d)", optarg,
				       VS_VHOST_BLK_MAX_QUEUES);
			cfg.num_queues = (unsigned)v;
			break;
		}
		case OPT_WRITE_ZEROES:
			cfg.write_zeroes = vs_daemon_parse_bool(optarg, "--write-zeroes");
			break;
		case OPT_SERIAL:
			if (strlen(optarg) > 20)
				vs_die("Serial '%s' is longer than 20 bytes", optarg);
			cfg.serial = optarg;
			break;
		case OPT_POOL:
			cfg.pool = optarg;
			break;
		case OPT_STATE_DIR:
			cfg.state_dir = optarg;
			break;
		case OPT_PID_FILE:
			cfg.pid_file = optarg;
			break;
		case OPT_MAX_CONNECTIONS:
			cfg.max_connections = vs_daemon_parse_limit(optarg, "connection limit",
								    VS_VHOST_BLK_UNLIMITED);
			break;
		case OPT_HANDSHAKE_LIMIT:
			cfg.handshake_limit = vs_daemon_parse_limit(optarg, "handshake limit",
								    VS_VHOST_BLK_UNLIMITED);
			break;
		case OPT_OBJECT:
			vs_daemon_object_secret(optarg);
			break;
		case OPT_IMAGE_OPTS:
			image_opts = true;
			break;
		case 'v':
			cfg.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("vstor-vhost %s\n", VSTOR_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try '%s --help' for more information.\n", prog);
			return EXIT_FAILURE;
		}
	}
	if (optind != argc - 1)
		vs_die("Expected one IMAGE. Try '%s --help'.", prog);
	/* Socket activation hands over the listening socket; else --socket makes it. */
	ret = vs_daemon_listen_fds(&cfg.listen_fd, 1, &lerr);
	if (ret < 0)
		vs_die("%s", lerr.msg);
	if (ret == 0 && !cfg.socket_path)
		vs_die("--socket=PATH is required. Try '%s --help'.", prog);
	if (ret > 0 && cfg.socket_path)
		vs_die("--socket cannot be used with socket activation");
	cfg.image = argv[optind];
	if (image_opts)
		vs_daemon_image_opts(argv[optind], &cfg.image, &cfg.format, &cfg.key_secret);
	/* vol:POOL/VOLUME names a pool volume wherever a file name is accepted. */
	(void)vs_pool_register_resolver(cfg.state_dir);
	if (cfg.pool) {
		if (asprintf(&vol, "vol:%s/%s", cfg.pool, cfg.image) < 0)
			vs_die("Out of memory");
		cfg.image = vol;
	}

	cfg.sigfd = vs_daemon_signalfd(&lerr);
	if (cfg.sigfd < 0)
		vs_die("%s", lerr.msg);
	if (cfg.listen_fd < 0) {
		cfg.listen_fd = vs_daemon_listen_unix(cfg.socket_path, &lerr);
		if (cfg.listen_fd < 0)
			vs_die("%s", lerr.msg);
	}

	ret = vs_run_in_coroutine(daemon_main, &cfg);
	if (ret < 0) {
		fprintf(stderr, "%s: engine error: %s\n", prog, strerror(-ret));
		cfg.exit_code = EXIT_FAILURE;
	}
	if (cfg.socket_path)
		unlink(cfg.socket_path);
	if (cfg.listen_fd >= 0)
		close(cfg.listen_fd);
	close(cfg.sigfd);
	free(vol);
	return cfg.exit_code;
}
