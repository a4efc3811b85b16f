/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord: the storage daemon a VM platform drives over QMP, with
 * qemu-storage-daemon's command line (--chardev/--monitor, --pidfile,
 * --daemonize).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "block.h"
#include "export.h"
#include "job.h"
#include "cmd-throttle.h"
#include "object.h"
#include "qmp.h"
#include "monitor.h"
#include "pool.h"
#include "reactors.h"
#include "state.h"
#include "vstor/reactor.h"
#include "vstord.h"

#define MAX_CHARDEVS 16
#define MAX_MONITORS 16
#define MAX_STARTUP 256

static const char *prog = "vstord";

struct chardev {
	char *id;
	char *path;
	bool used;
};

/* A --blockdev, --export, --nbd-server or --object: a QMP command run at startup. */
struct startup_cmd {
	const char *option;  /* "--blockdev" */
	const char *command; /* "blockdev-add" */
	json_object *args;
	bool keyval;
};

struct config {
	struct startup_cmd startup[MAX_STARTUP];
	unsigned nstartup;
	struct chardev chardevs[MAX_CHARDEVS];
	unsigned nchardevs;
	const char *monitor_paths[MAX_MONITORS];
	unsigned nmonitors;
	const char *pid_file;
	const char *state_dir; /* --state-dir: the monitor's changes persist there */
	bool daemonize;
	unsigned reactors; /* --reactors: I/O reactors */
	int sigfd;
	struct vs_co *sigco; /* the signal watcher while it runs */
	int exit_code;
};

static void usage(void)
{
	printf("Usage: %s [options]\n"
	       "vstor storage daemon, driven over QMP\n\n"
	       "  -h, --help             display this help and exit\n"
	       "  -V, --version          output version information and exit\n\n"
	       "  --chardev socket,id=<id>,path=<path>,server=on,wait=off\n"
	       "                         a unix socket for a monitor (created mode 0600)\n"
	       "  --monitor [chardev=]<id>[,mode=control][,pretty=off]\n"
	       "                         serve QMP on the chardev <id>\n"
	       "  --monitor <path>       the same, on the unix socket <path>\n"
	       "  --blockdev <options>   add a block node (blockdev-add's arguments)\n"
	       "  --nbd-server <options> start the NBD server (nbd-server-start's arguments)\n"
	       "  --export <options>     add an export (block-export-add's arguments)\n"
	       "  --object <options>     add an object (throttle-group, tls-creds-x509, tls-creds-psk)\n"
	       "                         <options>: JSON ('{...}') or QEMU keyval\n"
	       "                         (key=value,a.b=value; ',,' is a comma)\n"
	       "  --pidfile <path>       write the daemon's pid to <path>\n"
	       "  --daemonize            daemonize the process, and have the parent exit\n"
	       "                         once startup is complete\n"
	       "  --state-dir <dir>      keep what the monitor adds (objects, nodes, the NBD\n"
	       "                         server, exports) in <dir> and restore it at start\n"
	       "  --reactors <n>         run the exports on <n> I/O threads (default: one per\n"
	       "                         CPU, at most 8; 1: all on the main thread, with the\n"
	       "                         monitors)\n\n"
	       "Under systemd socket activation the passed sockets are monitors.\n"
	       "See vstord(8) and docs/vstord.md.\n",
	       prog);
}

/*
 * One "key=value" (or bare "key") item of a QEMU option string, with ",,"
 * as a literal comma. Advances *@s past the item and its comma; the
 * returned strings are allocated.
 */
static bool next_item(const char **s, char **key, char **val)
{
	const char *p = *s;
	size_t cap = strlen(p) + 1, n = 0;
	char *buf;

	if (!*p)
		return false;
	buf = malloc(cap);
	if (!buf)
		vs_die("out of memory");
	while (*p) {
		if (*p == ',') {
			if (p[1] != ',')
				break;
			p++;
		}
		buf[n++] = *p++;
	}
	buf[n] = 0;
	*s = *p ? p + 1 : p;
	char *eq = strchr(buf, '=');

	if (eq) {
		*eq = 0;
		*val = strdup(eq + 1);
	} else {
		*val = NULL;
	}
	*key = buf;
	return true;
}

/* "on"/"off" (or a bare key: on) for option @opt. */
static bool on_off(const char *opt, const char *key, const char *val)
{
	if (!val || !strcmp(val, "on"))
		return true;
	if (!strcmp(val, "off"))
		return false;
	vs_die("%s: %s=%s: expected on or off", opt, key, val);
}

static void parse_chardev(struct config *cfg, const char *arg)
{
	struct chardev *cd;
	const char *s = arg;
	char *key, *val;
	bool first = true, server = false, wait = true;

	if (cfg->nchardevs == MAX_CHARDEVS)
		vs_die("--chardev: at most %d", MAX_CHARDEVS);
	cd = &cfg->chardevs[cfg->nchardevs];
	while (next_item(&s, &key, &val)) {
		if (first && !val) {
			if (strcmp(key, "socket"))
				vs_die("--chardev: backend '%s' is not supported (only socket)",
				       key);
		} else if (!strcmp(key, "backend")) {
			if (!val || strcmp(val, "socket"))
				vs_die("--chardev: backend '%s' is not supported (only socket)",
				       val ? val : "");
		} else if (!strcmp(key, "id")) {
			free(cd->id);
			cd->id = val ? strdup(val) : NULL;
		} else if (!strcmp(key, "path")) {
			free(cd->path);
			cd->path = val ? strdup(val) : NULL;
		} else if (!strcmp(key, "server")) {
			server = on_off("--chardev", key, val);
		} else if (!strcmp(key, "wait")) {
			wait = on_off("--chardev", key, val);
		} else if (!strcmp(key, "nowait") && !val) {
			wait = false;
		} else {
			vs_die("--chardev: unsupported parameter '%s'", key);
		}
		first = false;
		free(key);
		free(val);
	}
	if (!cd->id)
		vs_die("--chardev: Parameter 'id' is missing");
	if (!cd->path)
		vs_die("--chardev %s: a unix socket 'path' is required", cd->id);
	if (!server)
		vs_die("--chardev %s: only server=on is supported", cd->id);
	if (wait)
		vs_die("--chardev %s: only wait=off is supported", cd->id);
	for (unsigned i = 0; i < cfg->nchardevs; i++)
		if (!strcmp(cfg->chardevs[i].id, cd->id))
			vs_die("--chardev: duplicate ID '%s'", cd->id);
	cfg->nchardevs++;
}

static void parse_monitor(struct config *cfg, const char *arg)
{
	const char *s = arg, *path = NULL;
	char *key, *val, *id = NULL;
	bool first = true;

	if (cfg->nmonitors == MAX_MONITORS)
		vs_die("--monitor: at most %d", MAX_MONITORS);
	if (!strchr(arg, '=') && strchr(arg, '/')) {
		cfg->monitor_paths[cfg->nmonitors++] = arg;
		return;
	}
	while (next_item(&s, &key, &val)) {
		if (first && !val) {
			id = strdup(key);
		} else if (!strcmp(key, "chardev") && val) {
			free(id);
			id = strdup(val);
		} else if (!strcmp(key, "mode")) {
			if (!val || strcmp(val, "control"))
				vs_die("--monitor: mode '%s' is not supported (only control)",
				       val ? val : "");
		} else if (!strcmp(key, "pretty")) {
			if (on_off("--monitor", key, val))
				vs_die("--monitor: pretty=on is not supported");
		} else {
			vs_die("--monitor: unsupported parameter '%s'", key);
		}
		first = false;
		free(key);
		free(val);
	}
	if (!id)
		vs_die("--monitor: Parameter 'chardev' is missing");
	for (unsigned i = 0; i < cfg->nchardevs; i++) {
		if (!strcmp(cfg->chardevs[i].id, id)) {
			if (cfg->chardevs[i].used)
				vs_die("--monitor: chardev '%s' is already in use", id);
			cfg->chardevs[i].used = true;
			path = cfg->chardevs[i].path;
		}
	}
	if (!path)
		vs_die("--monitor: chardev \"%s\" not found", id);
	free(id);
	cfg->monitor_paths[cfg->nmonitors++] = path;
}

/*
 * Set @key (dotted: nested objects) to the string @val in @obj, as QEMU's
 * keyval parser does. False when the key conflicts with another.
 */
static bool keyval_set(json_object *obj, char *key, const char *val)
{
	char *dot = strchr(key, '.');
	json_object *sub;

	if (!*key)
		return false;
	if (!dot) {
		if (json_object_object_get_ex(obj, key, NULL))
			return false;
		json_object_object_add(obj, key, json_object_new_string(val));
		return true;
	}
	*dot = 0;
	if (!json_object_object_get_ex(obj, key, &sub)) {
		sub = json_object_new_object();
		json_object_object_add(obj, key, sub);
	} else if (!json_object_is_type(sub, json_type_object)) {
		return false;
	}
	return keyval_set(sub, dot + 1, val);
}

/*
 * The arguments of @opt: a JSON object ("{...}"), or keyval where a first
 * item without '=' is the value of @implied (NULL: none).
 */
static void parse_startup(struct config *cfg, const char *opt, const char *command,
			  const char *implied, const char *arg)
{
	struct startup_cmd *sc;
	const char *s = arg;
	char *key, *val;
	bool first = true;

	if (cfg->nstartup == MAX_STARTUP)
		vs_die("%s: at most %d of these options", opt, MAX_STARTUP);
	sc = &cfg->startup[cfg->nstartup++];
	sc->option = opt;
	sc->command = command;
	if (arg[0] == '{') {
		sc->args = json_tokener_parse(arg);
		if (!sc->args || !json_object_is_type(sc->args, json_type_object))
			vs_die("%s: invalid JSON object '%s'", opt, arg);
		return;
	}
	sc->keyval = true;
	sc->args = json_object_new_object();
	while (next_item(&s, &key, &val)) {
		if (!val && first && implied) {
			val = key;
			key = strdup(implied);
		}
		if (!val)
			vs_die("%s: Expected '=' after parameter '%s'", opt, key);
		if (!keyval_set(sc->args, key, val))
			vs_die("%s: Parameter '%s' conflicts with another", opt, key);
		first = false;
		free(key);
		free(val);
	}
}

/* Run the startup commands in order; the first error stops the daemon. */
static int run_startup(struct config *cfg)
{
	char desc[512];

	for (unsigned i = 0; i < cfg->nstartup; i++) {
		struct startup_cmd *sc = &cfg->startup[i];
		if (qmp_run_command(sc->command, sc->args, sc->keyval, desc, sizeof(desc)) < 0) {
			fprintf(stderr, "%s: %s: %s\n", prog, sc->option, desc);
			return -1;
		}
	}
	return 0;
}

static void free_startup(struct config *cfg)
{
	for (unsigned i = 0; i < cfg->nstartup; i++)
		json_object_put(cfg->startup[i].args);
}

static void signal_watch(void *arg)
{
	struct config *cfg = arg;

	if (vs_daemon_wait_signal(cfg->sigfd) != -ECANCELED)
		vstord_request_stop();
	cfg->sigco = NULL; /* gone: its coroutine may serve another */
}

static void serve(void *arg)
{
	struct config *cfg = arg;
	struct monitor *mons[MAX_MONITORS + 8];
	unsigned nmons = 0;
	struct vs_error err = { 0 };
	int fds[8];
	int nfds, ret;

	ret = vd_reactors_start(cfg->reactors);
	if (ret < 0) {
		fprintf(stderr, "%s: --reactors %u: %s\n", prog, cfg->reactors, strerror(-ret));
		cfg->exit_code = EXIT_FAILURE;
		goto out;
	}
	if (run_startup(cfg) < 0) {
		cfg->exit_code = EXIT_FAILURE;
		goto out;
	}
	/* After the command line, whose items the state may name; before ready. */
	if (vd_state_restore(&err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		cfg->exit_code = EXIT_FAILURE;
		goto out;
	}
	nfds = vs_daemon_listen_fds(fds, 8, &err);
	if (nfds < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		cfg->exit_code = EXIT_FAILURE;
		goto out;
	}
	for (int i = 0; i < nfds; i++)
		monitor_open_fd(fds[i], &mons[nmons++], &err);
	for (unsigned i = 0; i < cfg->nmonitors; i++) {
		if (monitor_open(cfg->monitor_paths[i], &mons[nmons], &err) < 0) {
			fprintf(stderr, "%s: %s\n", prog, err.msg);
			cfg->exit_code = EXIT_FAILURE;
			goto out;
		}
		nmons++;
	}
	if (cfg->pid_file && vs_daemon_write_pid(cfg->pid_file, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		cfg->exit_code = EXIT_FAILURE;
		goto out;
	}
	cfg->sigco = vs_co_spawn(vs_reactor_current(), signal_watch, cfg);
	vs_daemon_notify_ready();
	vstord_wait_stop();
	vs_daemon_notify_stopping();
	if (cfg->sigco)
		vs_aio_cancel(cfg->sigco);
	if (cfg->pid_file)
		unlink(cfg->pid_file);
out:
	vd_state_close(); /* what stops with the daemon stays in the state */
	for (unsigned i = 0; i < nmons; i++)
		monitor_close(mons[i]);
	vd_job_close_all();
	vd_export_close_all();
	vd_object_close_all();
	vd_throttle_close_all();
	vd_block_close_all();
	vd_reactors_stop(); /* nothing is left on them */
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "chardev", required_argument, NULL, 'c' },
		{ "monitor", required_argument, NULL, 'm' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "daemonize", no_argument, NULL, 'd' },
		{ "blockdev", required_argument, NULL, 'b' },
		{ "export", required_argument, NULL, 'e' },
		{ "nbd-server", required_argument, NULL, 'n' },
		{ "object", required_argument, NULL, 'o' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "reactors", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	struct config cfg = { .sigfd = -1, .reactors = vd_reactors_default() };
	struct vs_error err = { 0 };
	const char *reactors = getenv("VSTORD_REACTORS"); /* the tests' default */
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			usage();
			return EXIT_SUCCESS;
		case 'V':
			printf("vstord %s\n", VSTOR_VERSION);
			return EXIT_SUCCESS;
		case 'c':
			parse_chardev(&cfg, optarg);
			break;
		case 'm':
			parse_monitor(&cfg, optarg);
			break;
		case 'p':
			cfg.pid_file = optarg;
			break;
		case 'd':
			cfg.daemonize = true;
			break;
		case 's':
			cfg.state_dir = optarg;
			break;
		case 'r':
			reactors = optarg;
			break;
		case 'b':
			parse_startup(&cfg, "--blockdev", "blockdev-add", NULL, optarg);
			break;
		case 'e':
			parse_startup(&cfg, "--export", "block-export-add", "type", optarg);
			break;
		case 'n':
			parse_startup(&cfg, "--nbd-server", "nbd-server-start", NULL, optarg);
			break;
		case 'o':
			parse_startup(&cfg, "--object", "object-add", "qom-type", optarg);
			break;
		default:
			fprintf(stderr, "Try '%s --help' for more information.\n", prog);
			return EXIT_FAILURE;
		}
	}
	if (optind < argc)
		vs_die("unexpected argument '%s'", argv[optind]);
	if (reactors && *reactors) {
		char *end;
		unsigned long n = strtoul(reactors, &end, 10);

		if (*end || n < 1 || n > 256 || reactors[0] == '-')
			vs_die("--reactors: '%s' is not a number from 1 to 256", reactors);
		cfg.reactors = (unsigned)n;
	}
	for (unsigned i = 0; i < cfg.nchardevs; i++)
		if (!cfg.chardevs[i].used)
			fprintf(stderr, "%s: warning: chardev '%s' is not used by a monitor\n",
				prog, cfg.chardevs[i].id);
	if (!cfg.nmonitors && !getenv("LISTEN_FDS"))
		fprintf(stderr, "%s: warning: no monitor: only a signal stops this daemon\n", prog);

	/* Pool volumes (driver "vol") as the other tools open them. */
	(void)vs_pool_register_resolver(NULL);
	/* Locked before forking: a second daemon on the same state fails at once. */
	if (cfg.state_dir && vd_state_open(cfg.state_dir, &err) < 0)
		vs_die("%s", err.msg);
	if (cfg.daemonize && vs_daemon_fork(true, &err) < 0)
		vs_die("%s", err.msg);
	cfg.sigfd = vs_daemon_signalfd(&err);
	if (cfg.sigfd < 0)
		vs_die("%s", err.msg);
	ret = vs_run_in_coroutine(serve, &cfg);
	if (ret < 0)
		vs_die("%s", strerror(-ret));
	close(cfg.sigfd);
	free_startup(&cfg);
	return cfg.exit_code;
}
