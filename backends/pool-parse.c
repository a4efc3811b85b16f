/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "pool-parse.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARSE_MAX_DEPTH 32

struct parser {
	const char *s;
	size_t pos;
	char *msg;
	size_t msgsz;
	bool failed;
};

__attribute__((format(printf, 2, 3))) static int parse_fail(struct parser *p, const char *fmt, ...)
{
	unsigned line = 1;
	char what[256];
	va_list ap;

	if (p->failed)
		return -EINVAL;
	p->failed = true;
	for (size_t i = 0; i < p->pos && p->s[i]; i++)
		if (p->s[i] == '\n')
			line++;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(p->msg, p->msgsz, "line %u: %s", line, what);
	return -EINVAL;
}

static void skip_ws(struct parser *p)
{
	while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
	       p->s[p->pos] == '\r')
		p->pos++;
}

/* A growable string. */
struct sbuf {
	char *b;
	size_t n, cap;
	bool oom;
};

static void sb_putc(struct sbuf *sb, char c)
{
	if (sb->oom)
		return;
	if (sb->n + 2 > sb->cap) {
		size_t cap = sb->cap ? sb->cap * 2 : 32;
		char *nb = realloc(sb->b, cap);

		if (!nb) {
			sb->oom = true;
			return;
		}
		sb->b = nb;
		sb->cap = cap;
	}
	sb->b[sb->n++] = c;
	sb->b[sb->n] = '\0';
}

static void sb_put_utf8(struct sbuf *sb, uint32_t cp)
{
	if (cp < 0x80) {
		sb_putc(sb, (char)cp);
	} else if (cp < 0x800) {
		sb_putc(sb, (char)(0xc0 | (cp >> 6)));
		sb_putc(sb, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		sb_putc(sb, (char)(0xe0 | (cp >> 12)));
		sb_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_putc(sb, (char)(0x80 | (cp & 0x3f)));
	} else {
		sb_putc(sb, (char)(0xf0 | (cp >> 18)));
		sb_putc(sb, (char)(0x80 | ((cp >> 12) & 0x3f)));
		sb_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_putc(sb, (char)(0x80 | (cp & 0x3f)));
	}
}

static char *sb_take(struct sbuf *sb)
{
	if (sb->oom) {
		free(sb->b);
		return NULL;
	}
	if (!sb->b)
		return strdup("");
	return sb->b;
}

/* ---- JSON ------------------------------------------------------------------ */

void pj_free(struct pj_value *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		pj_free(v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->str);
	free(v);
}

const struct pj_value *pj_get(const struct pj_value *obj, const char *key)
{
	if (!obj || obj->type != PJ_OBJ)
		return NULL;
	for (size_t i = obj->n; i-- > 0;)
		if (!strcmp(obj->keys[i], key))
			return obj->items[i];
	return NULL;
}

static int hex4(struct parser *p, uint32_t *out)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p->s[p->pos];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return parse_fail(p, "bad \\u escape");
		p->pos++;
	}
	*out = v;
	return 0;
}

/* What the one-character escape \@c stands for, -1 if it is not one. */
static int json_unescape(unsigned char c)
{
	static const char escapes[][2] = { { '"', '"' },  { '\\', '\\' }, { '/', '/' },
					   { 'b', '\b' }, { 'f', '\f' },  { 'n', '\n' },
					   { 'r', '\r' }, { 't', '\t' } };

	for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++)
		if (c == (unsigned char)escapes[i][0])
			return escapes[i][1];
	return -1;
}

static int pj_string(struct parser *p, char **out)
{
	struct sbuf sb = { 0 };

	p->pos++; /* '"' */
	for (;;) {
		unsigned char c = (unsigned char)p->s[p->pos];
		uint32_t cp, lo;

		if (!c) {
			free(sb.b);
			return parse_fail(p, "unterminated string");
		}
		if (c < 0x20) {
			free(sb.b);
			return parse_fail(p, "control character in string");
		}
		p->pos++;
		if (c == '"')
			break;
		if (c != '\\') {
			sb_putc(&sb, (char)c);
			continue;
		}
		c = (unsigned char)p->s[p->pos++];
		if (json_unescape(c) >= 0) {
			sb_putc(&sb, (char)json_unescape(c));
			continue;
		}
		if (c != 'u') {
			parse_fail(p, "bad escape in string");
			goto fail;
		}
		if (hex4(p, &cp) < 0)
			goto fail;
		if (cp >= 0xd800 && cp < 0xdc00) {
			if (p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
				parse_fail(p, "lone surrogate in \\u escape");
				goto fail;
			}
			p->pos += 2;
			if (hex4(p, &lo) < 0)
				goto fail;
			if (lo < 0xdc00 || lo >= 0xe000) {
				parse_fail(p, "bad surrogate pair");
				goto fail;
			}
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		} else if (cp >= 0xdc00 && cp < 0xe000) {
			parse_fail(p, "lone surrogate in \\u escape");
			goto fail;
		}
		if (cp == 0) {
			parse_fail(p, "NUL in string");
			goto fail;
		}
		sb_put_utf8(&sb, cp);
	}
	*out = sb_take(&sb);
	if (!*out)
		return parse_fail(p, "out of memory");
	return 0;
fail:
	free(sb.b);
	return -EINVAL;
}

static int pj_value_parse(struct parser *p, struct pj_value **out, int depth);

static int pj_push(struct parser *p, struct pj_value *v, struct pj_value *item, char *key)
{
	struct pj_value **items = realloc(v->items, (v->n + 1) * sizeof(*items));

	if (!items)
		goto oom;
	v->items = items;
	if (v->type == PJ_OBJ) {
		char **keys = realloc(v->keys, (v->n + 1) * sizeof(*keys));

		if (!keys)
			goto oom;
		v->keys = keys;
		keys[v->n] = key;
	}
	items[v->n++] = item;
	return 0;
oom:
	pj_free(item);
	free(key);
	return parse_fail(p, "out of memory");
}

static int pj_container(struct parser *p, struct pj_value *v, int depth)
{
	char close = v->type == PJ_OBJ ? '}' : ']';

	p->pos++;
	skip_ws(p);
	if (p->s[p->pos] == close) {
		p->pos++;
		return 0;
	}
	for (;;) {
		struct pj_value *item = NULL;
		char *key = NULL;

		skip_ws(p);
		if (v->type == PJ_OBJ) {
			if (p->s[p->pos] != '"')
				return parse_fail(p, "expected a member name");
			if (pj_string(p, &key) < 0)
				return -EINVAL;
			skip_ws(p);
			if (p->s[p->pos] != ':') {
				free(key);
				return parse_fail(p, "expected ':'");
			}
			p->pos++;
		}
		if (pj_value_parse(p, &item, depth + 1) < 0) {
			free(key);
			return -EINVAL;
		}
		if (pj_push(p, v, item, key) < 0)
			return -EINVAL;
		skip_ws(p);
		if (p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->s[p->pos] == close) {
			p->pos++;
			return 0;
		}
		return parse_fail(p, "expected ',' or '%c'", close);
	}
}

static int pj_number(struct parser *p, struct pj_value *v)
{
	const char *start = p->s + p->pos;
	char *end;
	long long n;

	if (*start != '-' && (*start < '0' || *start > '9'))
		return parse_fail(p, "unexpected character '%c'", *start);
	errno = 0;
	n = strtoll(start, &end, 10);
	if (end == start || (start[0] == '-' && end == start + 1))
		return parse_fail(p, "bad number");
	if (*end == '.' || *end == 'e' || *end == 'E')
		return parse_fail(p, "only integers are accepted here");
	if (errno == ERANGE)
		return parse_fail(p, "number out of range");
	v->type = PJ_INT;
	v->i = n;
	p->pos += (size_t)(end - start);
	return 0;
}

static int pj_value_parse(struct parser *p, struct pj_value **out, int depth)
{
	struct pj_value *v;
	int ret = 0;

	if (depth > PARSE_MAX_DEPTH)
		return parse_fail(p, "nested too deeply");
	skip_ws(p);
	v = calloc(1, sizeof(*v));
	if (!v)
		return parse_fail(p, "out of memory");
	switch (p->s[p->pos]) {
	case '{':
		v->type = PJ_OBJ;
		ret = pj_container(p, v, depth);
		break;
	case '[':
		v->type = PJ_ARR;
		ret = pj_container(p, v, depth);
		break;
	case '"':
		v->type = PJ_STR;
		ret = pj_string(p, &v->str);
		break;
	case 't':
	case 'f':
	case 'n': {
		static const char *const words[] = { "true", "false", "null" };

		ret = parse_fail(p, "unexpected word");
		for (int i = 0; i < 3; i++) {
			size_t len = strlen(words[i]);

			if (!strncmp(p->s + p->pos, words[i], len)) {
				p->failed = false;
				v->type = i == 2 ? PJ_NULL : PJ_BOOL;
				v->b = i == 0;
				p->pos += len;
				ret = 0;
				break;
			}
		}
		break;
	}
	case '\0':
		ret = parse_fail(p, "unexpected end of input");
		break;
	default:
		ret = pj_number(p, v);
		break;
	}
	if (ret < 0) {
		pj_free(v);
		return ret;
	}
	*out = v;
	return 0;
}

int pj_parse(const char *text, struct pj_value **out, char *msg, size_t msgsz)
{
	struct parser p = { .s = text, .msg = msg, .msgsz = msgsz };
	struct pj_value *v = NULL;

	if (pj_value_parse(&p, &v, 0) < 0)
		return -EINVAL;
	skip_ws(&p);
	if (p.s[p.pos]) {
		pj_free(v);
		return parse_fail(&p, "trailing characters after the JSON value");
	}
	*out = v;
	return 0;
}

/* ---- XML ------------------------------------------------------------------- */

void px_free(struct px_elem *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nattrs; i++) {
		free(e->attrs[i].name);
		free(e->attrs[i].value);
	}
	for (size_t i = 0; i < e->nchildren; i++)
		px_free(e->children[i]);
	free(e->attrs);
	free(e->children);
	free(e->name);
	free(e->text);
	free(e);
}

const struct px_elem *px_child(const struct px_elem *e, const char *name)
{
	for (size_t i = 0; e && i < e->nchildren; i++)
		if (!strcmp(e->children[i]->name, name))
			return e->children[i];
	return NULL;
}

const char *px_attr(const struct px_elem *e, const char *name)
{
	for (size_t i = 0; e && i < e->nattrs; i++)
		if (!strcmp(e->attrs[i].name, name))
			return e->attrs[i].value;
	return NULL;
}

static bool px_name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (unsigned char)c >= 0x80 ||
	       (!first && ((c >= '0' && c <= '9') || c == '-' || c == '.'));
}

static int px_name(struct parser *p, char **out)
{
	size_t start = p->pos;

	if (!px_name_char(p->s[p->pos], true))
		return parse_fail(p, "expected a name");
	while (px_name_char(p->s[p->pos], false))
		p->pos++;
	*out = strndup(p->s + start, p->pos - start);
	return *out ? 0 : parse_fail(p, "out of memory");
}

/* Append the text up to @stop (not included) with references decoded. */
static int px_text(struct parser *p, struct sbuf *sb, char stop)
{
	while (p->s[p->pos] && p->s[p->pos] != stop) {
		char c = p->s[p->pos];

		if (stop != '<' && c == '<')
			return parse_fail(p, "'<' in an attribute value");
		if (c != '&') {
			sb_putc(sb, c);
			p->pos++;
			continue;
		}
		p->pos++;
		if (p->s[p->pos] == '#') {
			bool hex = p->s[p->pos + 1] == 'x';
			char *end;
			unsigned long cp;

			p->pos += hex ? 2 : 1;
			if (p->s[p->pos] < '0' || p->s[p->pos] > (hex ? 'f' : '9'))
				return parse_fail(p, "bad character reference");
			cp = strtoul(p->s + p->pos, &end, hex ? 16 : 10);
			if (*end != ';' || cp == 0 || cp > 0x10ffff ||
			    (cp >= 0xd800 && cp < 0xe000))
				return parse_fail(p, "bad character reference");
			sb_put_utf8(sb, (uint32_t)cp);
			p->pos = (size_t)(end - p->s) + 1;
			continue;
		}
		static const struct {
			const char *name;
			char c;
		} ents[] = { { "lt;", '<' },
			     { "gt;", '>' },
			     { "amp;", '&' },
			     { "quot;", '"' },
			     { "apos;", '\'' } };
		size_t i;

		for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
			if (!strncmp(p->s + p->pos, ents[i].name, strlen(ents[i].name))) {
				sb_putc(sb, ents[i].c);
				p->pos += strlen(ents[i].name);
				break;
			}
		}
		if (i == sizeof(ents) / sizeof(ents[0]))
			return parse_fail(p, "unknown entity reference");
	}
	return 0;
}

/* Skip comments, processing instructions and a DOCTYPE. Returns true if it skipped one. */
static int px_skip_misc(struct parser *p, bool *skipped)
{
	const char *s = p->s + p->pos;
	const char *end;

	*skipped = false;
	if (!strncmp(s, "<!--", 4)) {
		end = strstr(s + 4, "-->");
		if (!end)
			return parse_fail(p, "unterminated comment");
		p->pos = (size_t)(end - p->s) + 3;
	} else if (!strncmp(s, "<?", 2)) {
		end = strstr(s + 2, "?>");
		if (!end)
			return parse_fail(p, "unterminated processing instruction");
		p->pos = (size_t)(end - p->s) + 2;
	} else if (!strncmp(s, "<!DOCTYPE", 9)) {
		end = strchr(s, '>');
		if (!end || memchr(s, '[', (size_t)(end - s)))
			return parse_fail(p, "DOCTYPE with an internal subset is not supported");
		p->pos = (size_t)(end - p->s) + 1;
	} else {
		return 0;
	}
	*skipped = true;
	return 0;
}

static void trim(char *s)
{
	size_t len = strlen(s), start = 0;

	while (len && strchr(" \t\r\n", s[len - 1]))
		s[--len] = '\0';
	while (s[start] && strchr(" \t\r\n", s[start]))
		start++;
	memmove(s, s + start, len - start + 1);
}

static int px_element(struct parser *p, struct px_elem **out, int depth)
{
	struct px_elem *e;
	struct sbuf text = { 0 };

	if (depth > PARSE_MAX_DEPTH)
		return parse_fail(p, "nested too deeply");
	if (p->s[p->pos] != '<')
		return parse_fail(p, "expected an element");
	p->pos++;
	e = calloc(1, sizeof(*e));
	if (!e)
		return parse_fail(p, "out of memory");
	if (px_name(p, &e->name) < 0)
		goto fail;
	/* Attributes. */
	for (;;) {
		struct px_attr *attrs;
		struct sbuf val = { 0 };
		char *name, q;

		skip_ws(p);
		if (p->s[p->pos] == '/' && p->s[p->pos + 1] == '>') {
			p->pos += 2;
			e->text = strdup("");
			if (!e->text)
				goto oom;
			*out = e;
			return 0;
		}
		if (p->s[p->pos] == '>') {
			p->pos++;
			break;
		}
		if (px_name(p, &name) < 0)
			goto fail;
		skip_ws(p);
		if (p->s[p->pos] != '=') {
			parse_fail(p, "expected '=' after attribute '%s'", name);
			free(name);
			goto fail;
		}
		p->pos++;
		skip_ws(p);
		q = p->s[p->pos];
		if (q != '"' && q != '\'') {
			free(name);
			parse_fail(p, "expected a quoted attribute value");
			goto fail;
		}
		p->pos++;
		if (px_text(p, &val, q) < 0 || p->s[p->pos] != q) {
			free(name);
			free(val.b);
			parse_fail(p, "unterminated attribute value");
			goto fail;
		}
		p->pos++;
		attrs = realloc(e->attrs, (e->nattrs + 1) * sizeof(*attrs));
		if (attrs)
			e->attrs = attrs;
		if (!attrs || val.oom) {
			free(name);
			free(val.b);
			goto oom;
		}
		attrs[e->nattrs].name = name;
		attrs[e->nattrs].value = sb_take(&val);
		e->nattrs++;
		if (!attrs[e->nattrs - 1].value)
			goto oom;
	}
	/* Content. */
	for (;;) {
		bool skipped;

		if (px_text(p, &text, '<') < 0)
			goto fail;
		if (!p->s[p->pos]) {
			parse_fail(p, "element <%s> is not closed", e->name);
			goto fail;
		}
		if (px_skip_misc(p, &skipped) < 0)
			goto fail;
		if (skipped)
			continue;
		if (!strncmp(p->s + p->pos, "<![CDATA[", 9)) {
			const char *end = strstr(p->s + p->pos + 9, "]]>");

			if (!end) {
				parse_fail(p, "unterminated CDATA section");
				goto fail;
			}
			for (const char *c = p->s + p->pos + 9; c < end; c++)
				sb_putc(&text, *c);
			p->pos = (size_t)(end - p->s) + 3;
			continue;
		}
		if (p->s[p->pos + 1] == '/') {
			char *name;

			p->pos += 2;
			if (px_name(p, &name) < 0)
				goto fail;
			if (strcmp(name, e->name)) {
				parse_fail(p, "</%s> closes <%s>", name, e->name);
				free(name);
				goto fail;
			}
			free(name);
			skip_ws(p);
			if (p->s[p->pos] != '>') {
				parse_fail(p, "expected '>'");
				goto fail;
			}
			p->pos++;
			break;
		}
		struct px_elem *child = NULL, **children;

		if (px_element(p, &child, depth + 1) < 0)
			goto fail;
		children = realloc(e->children, (e->nchildren + 1) * sizeof(*children));
		if (!children) {
			px_free(child);
			goto oom;
		}
		e->children = children;
		children[e->nchildren++] = child;
	}
	e->text = sb_take(&text);
	text.b = NULL;
	if (!e->text)
		goto oom;
	trim(e->text);
	*out = e;
	return 0;
oom:
	parse_fail(p, "out of memory");
fail:
	free(text.b);
	px_free(e);
	return -EINVAL;
}

int px_parse(const char *text, struct px_elem **out, char *msg, size_t msgsz)
{
	struct parser p = { .s = text, .msg = msg, .msgsz = msgsz };
	struct px_elem *root = NULL;
	bool skipped;

	if (!strncmp(text, "\xef\xbb\xbf", 3))
		p.pos = 3;
	do {
		skip_ws(&p);
		if (px_skip_misc(&p, &skipped) < 0)
			return -EINVAL;
	} while (skipped);
	if (px_element(&p, &root, 0) < 0)
		return -EINVAL;
	do {
		skip_ws(&p);
		if (px_skip_misc(&p, &skipped) < 0) {
			px_free(root);
			return -EINVAL;
		}
	} while (skipped);
	if (p.s[p.pos]) {
		px_free(root);
		return parse_fail(&p, "content after the root element");
	}
	*out = root;
	return 0;
}
