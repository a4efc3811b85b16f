/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A small streaming JSON writer. The pretty style is the one qemu-img prints
 * (4-space indent, one member per line); the compact style puts everything on
 * one line with ", " and ": " separators. The command-line tools'
 * --output=json must match qemu-img's bytes, and json-c's printer knows no
 * 4-space indent: this writer stays for that; what is not tool output (the
 * pool state files, QMP) is written by json-c. Not part of the shared
 * library: the programs link it as the static library vstor_json.
 */
#ifndef VSTOR_JSON_H
#define VSTOR_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

struct json_writer {
	FILE *f;
	bool pretty;
	/*
	 * Empty containers as qemu-img prints them in the pretty style: the
	 * closing bracket on its own line ("[\n    ]"). Set after json_init.
	 */
	bool qemu_empty;
	int depth;
	bool has_members[JSON_MAX_DEPTH];
};

void json_init(struct json_writer *w, FILE *f, bool pretty);
/* @key is the member name inside an object, NULL inside an array or at top level. */
void json_obj_begin(struct json_writer *w, const char *key);
void json_obj_end(struct json_writer *w);
void json_arr_begin(struct json_writer *w, const char *key);
void json_arr_end(struct json_writer *w);
void json_str(struct json_writer *w, const char *key, const char *val);
void json_int(struct json_writer *w, const char *key, int64_t val);
void json_uint(struct json_writer *w, const char *key, uint64_t val);
void json_bool(struct json_writer *w, const char *key, bool val);
/* Write @s as a JSON string literal (quotes included), non-ASCII as \uXXXX. */
void json_write_string(FILE *f, const char *s);

#endif
