/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The streaming JSON writer of the tools' qemu-img-style output; see json.h. */
#include "json.h"

#include <inttypes.h>
#include <string.h>

void json_init(struct json_writer *w, FILE *f, bool pretty)
{
	memset(w, 0, sizeof(*w));
	w->f = f;
	w->pretty = pretty;
}

static void json_indent(struct json_writer *w, int depth)
{
	for (int i = 0; i < depth; i++)
		fputs("    ", w->f);
}

/* Decode one UTF-8 sequence at @s; returns its length, 0 if invalid. */
static int utf8_decode(const unsigned char *s, uint32_t *cp)
{
	int len, i;
	uint32_t c = s[0];

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xe0) == 0xc0) {
		len = 2;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4;
		c &= 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

static void json_write_codepoint(FILE *f, uint32_t cp)
{
	if (cp >= 0x10000) {
		cp -= 0x10000;
		fprintf(f, "\\u%04X\\u%04X", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
	} else {
		fprintf(f, "\\u%04X", cp);
	}
}

/* The characters written as a backslash and a letter, and their letters. */
static const char escaped[] = "\"\\\b\f\n\r\t";
static const char escape_letter[] = "\"\\bfnrt";

void json_write_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', f);
	while (*s) {
		const char *e = strchr(escaped, *s);
		uint32_t cp;
		int len;

		if (e) {
			fputc('\\', f);
			fputc(escape_letter[e - escaped], f);
		} else if (*s >= 0x20 && *s < 0x7f) {
			fputc(*s, f);
		} else if ((len = utf8_decode(s, &cp))) {
			json_write_codepoint(f, cp);
			s += len;
			continue;
		} else {
			json_write_codepoint(f, 0xfffd);
		}
		s++;
	}
	fputc('"', f);
}

/* Separator, indent and key before a member or element. */
static void json_member(struct json_writer *w, const char *key)
{
	if (w->depth > 0) {
		if (w->has_members[w->depth])
			fputs(w->pretty ? ",\n" : ", ", w->f);
		else if (w->pretty)
			fputc('\n', w->f);
		w->has_members[w->depth] = true;
		if (w->pretty)
			json_indent(w, w->depth);
	}
	if (key) {
		json_write_string(w->f, key);
		fputs(": ", w->f);
	}
}

static void json_open(struct json_writer *w, const char *key, char c)
{
	json_member(w, key);
	fputc(c, w->f);
	if (w->depth + 1 < JSON_MAX_DEPTH)
		w->depth++;
	w->has_members[w->depth] = false;
}

static void json_close(struct json_writer *w, char c)
{
	if (w->pretty && (w->has_members[w->depth] || w->qemu_empty)) {
		fputc('\n', w->f);
		json_indent(w, w->depth - 1);
	}
	fputc(c, w->f);
	if (w->depth > 0)
		w->depth--;
}

void json_obj_begin(struct json_writer *w, const char *key)
{
	json_open(w, key, '{');
}

void json_obj_end(struct json_writer *w)
{
	json_close(w, '}');
}

void json_arr_begin(struct json_writer *w, const char *key)
{
	json_open(w, key, '[');
}

void json_arr_end(struct json_writer *w)
{
	json_close(w, ']');
}

void json_str(struct json_writer *w, const char *key, const char *val)
{
	json_member(w, key);
	json_write_string(w->f, val);
}

void json_int(struct json_writer *w, const char *key, int64_t val)
{
	json_member(w, key);
	fprintf(w->f, "%" PRId64, val);
}

void json_uint(struct json_writer *w, const char *key, uint64_t val)
{
	json_member(w, key);
	fprintf(w->f, "%" PRIu64, val);
}

void json_bool(struct json_writer *w, const char *key, bool val)
{
	json_member(w, key);
	fputs(val ? "true" : "false", w->f);
}
