/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A main() for fuzz targets built without libFuzzer: feeds every file named
 * on the command line (or every file in a named directory) to
 * LLVMFuzzerTestOneInput once. The test suite replays the committed corpus
 * this way in every build, sanitizers included.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f) {
		perror(path);
		return 1;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
		fprintf(stderr, "%s: read error\n", path);
		fclose(f);
		free(buf);
		return 1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)(n > 0 ? n : 0));
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int count = 0, errors = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			struct dirent **names;
			int n = scandir(argv[i], &names, NULL, alphasort);

			for (int k = 0; k < n; k++) {
				char path[4096];

				if (names[k]->d_name[0] != '.') {
					snprintf(path, sizeof(path), "%s/%s", argv[i],
						 names[k]->d_name);
					errors += run_file(path);
					count++;
				}
				free(names[k]);
			}
			free(names);
		} else {
			errors += run_file(argv[i]);
			count++;
		}
	}
	printf("replayed %d inputs\n", count);
	return errors ? 1 : (count ? 0 : 77);
}
