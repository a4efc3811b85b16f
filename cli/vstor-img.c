/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img: the image tool, with qemu-img's commands, options, output and
 * exit codes, running on the vstor engine.
 */
#include "img.h"

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "pool.h"

struct img_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
};

static const struct img_command commands[] = {
	{ "amend", img_cmd_amend,
	  "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o "
	  "options filename" },
	{ "bench", img_cmd_bench,
	  "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
	  "[--no-drain] [-o offset] [--pattern=pattern] [-q] [--random[=seed]] [-s buffer_size] "
	  "[-S step_size] "
	  "[-t cache] [-w] [-U] filename" },
	{ "bitmap", img_cmd_bitmap,
	  "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... "
	  "[-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] "
	  "[--image-opts | -f fmt] filename bitmap" },
	{ "check", img_cmd_check,
	  "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename" },
	{ "commit", img_cmd_commit,
	  "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] "
	  "[-r rate_limit] [-d] [-p] filename" },
	{ "compact", img_cmd_compact,
	  "compact [-f fmt] [-t cache] [-p] [-q] [--output=ofmt] filename" },
	{ "compare", img_cmd_compare,
	  "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2" },
	{ "convert", img_cmd_convert,
	  "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] "
	  "[--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] "
	  "[-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] "
	  "[-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename "
	  "[filename2 [...]] output_filename" },
	{ "create", img_cmd_create,
	  "create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
	  "[-o options] filename [size]" },
	{ "dd", img_cmd_dd,
	  "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] "
	  "[skip=blocks] if=input of=output" },
	{ "info", img_cmd_info,
	  "info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] "
	  "[-U] filename" },
	{ "map", img_cmd_map,
	  "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] "
	  "filename" },
	{ "measure", img_cmd_measure,
	  "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] "
	  "[--image-opts] [-f fmt] [-l snapshot_param] filename]" },
	{ "rebase", img_cmd_rebase,
	  "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] "
	  "[-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename" },
	{ "resize", img_cmd_resize,
	  "resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size" },
	{ "snapshot", img_cmd_snapshot,
	  "snapshot [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-l | -a snapshot | -c snapshot | -d snapshot] filename" },
};

#define NB_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_version(void)
{
	printf("%s version %s\n", IMG_PROGNAME, VSTOR_VERSION);
}

void img_help(void)
{
	print_version();
	printf("usage: %s [standard options] command [command options]\n"
	       "Disk image utility (qemu-img compatible)\n"
	       "\n"
	       "    '-h', '--help'       display this help and exit\n"
	       "    '-V', '--version'    output version information and exit\n"
	       "    '-T', '--trace'      accepted for compatibility and ignored\n"
	       "\n"
	       "Command syntax:\n",
	       IMG_PROGNAME);
	for (size_t i = 0; i < NB_COMMANDS; i++)
		printf("  %s\n", commands[i].usage);
	printf("\n"
	       "Command parameters:\n"
	       "  'filename' is a disk image filename\n"
	       "  'fmt' is the disk image format. It is guessed automatically in most cases\n"
	       "  'cache' is the cache mode used to write the output disk image, the valid\n"
	       "    options are: 'none', 'writeback' (default), 'writethrough',\n"
	       "    'directsync' and 'unsafe'\n"
	       "  'src_cache' is the cache mode used to read input disk images, the valid\n"
	       "    options are the same as for the 'cache' option\n"
	       "  'size' is the disk image size in bytes. Optional suffixes\n"
	       "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
	       "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
	       "    supported. 'b' is ignored.\n"
	       "  'options' is a comma separated list of format specific options in a\n"
	       "    name=value format. Use -o help for an overview of the options supported by\n"
	       "    the used format\n"
	       "  '-u' allows unsafe backing chains: create without opening the backing file.\n"
	       "  '-q' use Quiet mode - do not print any output (except errors)\n"
	       "  '--output' takes the format in which the output must be done (human or json)\n"
	       "\n"
	       "Parameters to check subcommand:\n"
	       "  '-r' tries to repair any inconsistencies that are found during the check.\n"
	       "       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
	       "       kinds of errors, with a higher risk of choosing the wrong fix or\n"
	       "       hiding corruption that has already occurred.\n"
	       "\n"
	       "Parameters to compare subcommand:\n"
	       "  '-f' first image format\n"
	       "  '-F' second image format\n"
	       "  '-s' run in Strict mode - fail on different image size or sector allocation\n"
	       "\n"
	       "Supported formats: qcow2 raw\n"
	       "\n"
	       "See the %s(1) manual page for more information.\n",
	       IMG_PROGNAME);
}

int main(int argc, char **argv)
{
	int i = 1;

	/* Global options come before the command. */
	while (i < argc && argv[i][0] == '-') {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			img_help();
			return 0;
		}
		if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			print_version();
			return 0;
		}
		if (!strcmp(a, "-T") || !strcmp(a, "--trace")) {
			if (i + 1 >= argc)
				return img_usage_error("missing argument for option '%s'", a);
			i += 2;
			continue;
		}
		if (!strncmp(a, "--trace=", 8) || (!strncmp(a, "-T", 2) && a[2])) {
			i++;
			continue;
		}
		return img_usage_error("unrecognized option '%s'", a);
	}
	if (i >= argc)
		return img_usage_error("Not enough arguments");
	/* vol:POOL/VOLUME names a pool volume wherever a file name is accepted. */
	(void)vs_pool_register_resolver(NULL); /* fails only without any state dir */
	for (size_t c = 0; c < NB_COMMANDS; c++) {
		if (!strcmp(argv[i], commands[c].name))
			return commands[c].run(argc - i, argv + i);
	}
	return img_usage_error("Command not found: %s", argv[i]);
}
