/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the pool definitions: the JSON of the state directory (and
 * its round trip), libvirt's pool XML, the parsers' errors, names and leases.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool-int.h"
#include "pool-parse.h"
#include "pool.h"

static struct vs_pool_def def;

static int parse(const char *text, struct vs_error *err)
{
	vs_error_clear(err);
	return vs_pool_def_parse(&def, text, "t", NULL, err);
}

/* A definition with every member set, names and paths with bytes to escape. */
static void fill_def(struct vs_pool_def *d)
{
	memset(d, 0, sizeof(*d));
	strcpy(d->name, "p\"1");
	strcpy(d->type, "iscsi");
	strcpy(d->uuid, "u-1");
	strcpy(d->target, "/dev/disk/by-path");
	strcpy(d->source_host, "127.0.0.1");
	d->source_port = 3260;
	strcpy(d->source_path, "/p\xc3\xa9\xff"); /* bytes, not necessarily UTF-8 */
	strcpy(d->source_devs[0], "iqn.2026-01.x:t");
	strcpy(d->source_devs[1], "/dev/b\\c");
	d->nb_source_devs = 2;
	strcpy(d->source_name, "vg");
	strcpy(d->source_format, "lvm2");
	strcpy(d->initiator_iqn, "iqn.i");
	strcpy(d->auth_type, "chap");
	strcpy(d->auth_username, "u\tser");
	strcpy(d->auth_secret_file, "/etc/s");
	strcpy(d->perm_mode, "0750");
	strcpy(d->perm_owner, "107");
	strcpy(d->perm_group, "-1");
	d->autostart = true;
	assert_int_equal(vs_pool_def_set_extra(d, "mutual_username", "t\x01\r"), 0);
}

static void test_json_round_trip(void **state)
{
	struct vs_pool_def copy;
	struct vs_error err = { 0 };
	bool active = false;
	char *json;

	fill_def(&copy);
	json = vs_pool_def_to_json(&copy, true);
	assert_non_null(json);
	assert_int_equal(vs_pool_def_parse(&def, json, "t", &active, &err), 0);
	free(json);
	assert_true(active);
	assert_string_equal(def.name, "p\"1");
	assert_string_equal(def.type, "iscsi");
	assert_int_equal(def.source_port, 3260);
	assert_int_equal(def.nb_source_devs, 2);
	assert_string_equal(def.source_devs[1], "/dev/b\\c");
	assert_string_equal(def.auth_username, "u\tser");
	assert_string_equal(def.perm_mode, "0750");
	assert_string_equal(def.perm_owner, "107");
	assert_string_equal(def.perm_group, "-1");
	assert_string_equal(vs_pool_def_extra(&def, "mutual_username"), "t\x01\r");
	assert_memory_equal(&def, &copy, sizeof(def));
	assert_true(def.autostart);
	/* Started in another boot: inactive now. */
	assert_int_equal(vs_pool_def_parse(&def,
					   "{\"version\": 1, \"name\": \"a\", \"active\": true, "
					   "\"boot_id\": \"00000000-0000-0000-0000-000000000000\"}",
					   "t", &active, &err),
			 0);
	assert_false(active);
	/* Owner and group may be JSON integers too. */
	assert_int_equal(vs_pool_def_parse(&def,
					   "{\"version\": 1, \"name\": \"a\", \"permissions\": "
					   "{\"mode\": \"0700\", \"owner\": 107, \"group\": -1}}",
					   "t", &active, &err),
			 0);
	assert_string_equal(def.perm_owner, "107");
	assert_string_equal(def.perm_group, "-1");
}

/*
 * fill_def's definition as the pool layer wrote it before it used
 * libstore/json.c (devices on one line, control characters as \\u escapes)
 * still loads, to the same definition.
 */
static void test_json_old_format(void **state)
{
	static const char old[] = "{\n"
				  "    \"version\": 1,\n"
				  "    \"name\": \"p\\\"1\",\n"
				  "    \"type\": \"iscsi\",\n"
				  "    \"uuid\": \"u-1\",\n"
				  "    \"autostart\": true,\n"
				  "    \"active\": false,\n"
				  "    \"target\": \"/dev/disk/by-path\",\n"
				  "    \"source\": {\n"
				  "        \"host\": \"127.0.0.1\",\n"
				  "        \"port\": 3260,\n"
				  "        \"path\": \"/p\xc3\xa9\xff\",\n"
				  "        \"devices\": [\"iqn.2026-01.x:t\", \"/dev/b\\\\c\"],\n"
				  "        \"name\": \"vg\",\n"
				  "        \"format\": \"lvm2\",\n"
				  "        \"initiator\": \"iqn.i\"\n"
				  "    },\n"
				  "    \"auth\": {\n"
				  "        \"type\": \"chap\",\n"
				  "        \"username\": \"u\\tser\",\n"
				  "        \"secret_file\": \"/etc/s\"\n"
				  "    },\n"
				  "    \"permissions\": {\n"
				  "        \"mode\": \"0750\",\n"
				  "        \"owner\": \"107\",\n"
				  "        \"group\": \"-1\"\n"
				  "    },\n"
				  "    \"extra\": {\n"
				  "        \"mutual_username\": \"t\\u0001\\u000d\"\n"
				  "    }\n"
				  "}\n";
	struct vs_pool_def want;
	struct vs_error err = { 0 };
	bool active = true;

	(void)state;
	fill_def(&want);
	assert_int_equal(vs_pool_def_parse(&def, old, "t", &active, &err), 0);
	assert_false(active);
	assert_memory_equal(&def, &want, sizeof(def));
}

static void test_json_errors(void **state)
{
	struct vs_error err;

	assert_int_equal(parse("{\"version\": 1,\n\"name\": \"a\",\n\"type\": 3}", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "\"type\" must be a string"));
	assert_int_equal(parse("{\"version\": 1,\n\n \"name\" \"a\"}", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 3"));
	assert_int_equal(parse("{\"name\": \"a\"}", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "version"));
	assert_int_equal(parse("{\"version\": 1} x", &err), -EINVAL);
	assert_int_equal(parse("{\"version\": 1.5}", &err), -EINVAL);
	/* A lone surrogate becomes U+FFFD (json-c's choice, as most decoders'). */
	assert_int_equal(parse("{\"version\": 1, \"type\": \"dir\", \"name\": \"\\ud800\"}", &err),
			 0);
	assert_string_equal(def.name, "\xef\xbf\xbd");
	assert_int_equal(parse("{\"version\": 1, \"name\": \"a\\u0000b\"}", &err), -EINVAL);
	assert_int_equal(parse("{\"version\": 1, \"name\": \"a", &err), -EINVAL);
	assert_int_equal(parse("{\"version\": 1, \"source\": {\"port\": 70000}}", &err), -EINVAL);
	assert_int_equal(parse("", &err), -EINVAL);
	assert_int_equal(parse("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]", &err), -EINVAL);
	assert_int_equal(parse("{\"version\": 1, \"name\": \"\\u00e9\\ud83d\\ude00\"}", &err), 0);
	assert_string_equal(def.name, "\xc3\xa9\xf0\x9f\x98\x80");
}

static void test_xml_libvirt(void **state)
{
	struct vs_error err;
	const char *netfs = "<?xml version='1.0'?>\n<!-- c -->\n<pool type='netfs'>\n"
			    "  <name>nfs&amp;1</name>\n"
			    "  <uuid>0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0</uuid>\n"
			    "  <capacity unit='bytes'>0</capacity>\n"
			    "  <source><host name='h.example' port='2049'/>"
			    "<dir path='/export'/><format type='nfs'/></source>\n"
			    "  <target><path><![CDATA[/mnt/a<b]]></path><permissions><mode>0755"
			    "</mode></permissions></target>\n</pool>\n";
	const char *logical = "<pool type=\"logical\"><name>vg</name><source>"
			      "<device path=\"/dev/loop0\"/><device path=\"/dev/loop1\"/>"
			      "<name>vg0</name><format type=\"lvm2\"/></source>"
			      "<target><path>/dev/vg0</path></target></pool>";
	const char *iscsi =
		"<pool type='iscsi'><name>i</name><source><host name='127.0.0.1'/>"
		"<device path='iqn.2026-01.x:t'/><initiator><iqn name='iqn.2026-01.x:i'/>"
		"</initiator><auth type='chap' username='u'><secret file='/etc/s'/>"
		"</auth></source></pool>";

	assert_int_equal(parse(netfs, &err), 0);
	assert_string_equal(def.type, "netfs");
	assert_string_equal(def.name, "nfs&1");
	assert_string_equal(def.uuid, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0");
	assert_string_equal(def.source_host, "h.example");
	assert_int_equal(def.source_port, 2049);
	assert_string_equal(def.source_path, "/export");
	assert_string_equal(def.source_format, "nfs");
	assert_string_equal(def.target, "/mnt/a<b");
	assert_string_equal(def.perm_mode, "0755");
	assert_string_equal(def.perm_owner, "");

	assert_int_equal(parse(logical, &err), 0);
	assert_int_equal(def.nb_source_devs, 2);
	assert_string_equal(def.source_devs[1], "/dev/loop1");
	assert_string_equal(def.source_name, "vg0");
	assert_string_equal(def.source_format, "lvm2");

	assert_int_equal(parse(iscsi, &err), 0);
	assert_string_equal(def.source_devs[0], "iqn.2026-01.x:t");
	assert_string_equal(def.initiator_iqn, "iqn.2026-01.x:i");
	assert_string_equal(def.auth_type, "chap");
	assert_string_equal(def.auth_username, "u");
	assert_string_equal(def.auth_secret_file, "/etc/s");
}

/* <permissions> values: octal modes up to 07777, numeric ids, -1 for "not given". */
static void test_perms_parse(void **state)
{
	uint32_t v = 0;
	bool given = true;

	assert_int_equal(vs_pool_parse_mode("0640", &v), 0);
	assert_int_equal(v, 0640);
	assert_int_equal(vs_pool_parse_mode("7777", &v), 0);
	assert_int_equal(v, 07777);
	assert_int_equal(vs_pool_parse_mode("10000", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode("0689", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode("", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode("-1", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode("rwx", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode(" 640", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_mode("+640", &v), -EINVAL);
	assert_int_equal(vs_pool_parse_id("107", &v, &given), 0);
	assert_true(given);
	assert_int_equal(v, 107);
	assert_int_equal(vs_pool_parse_id("-1", &v, &given), 0);
	assert_false(given);
	assert_int_equal(vs_pool_parse_id("", &v, &given), 0);
	assert_false(given);
	assert_int_equal(vs_pool_parse_id("4294967295", &v, &given), -EINVAL);
	assert_int_equal(vs_pool_parse_id("-2", &v, &given), -EINVAL);
	assert_int_equal(vs_pool_parse_id("1x", &v, &given), -EINVAL);
	assert_int_equal(vs_pool_parse_id("+1", &v, &given), -EINVAL);
	assert_int_equal(vs_pool_parse_id(" 1", &v, &given), -EINVAL);
}

static void test_xml_errors(void **state)
{
	struct vs_error err;

	assert_int_equal(parse("<pool type='dir'><name>a</name>\n</poo>", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 2"));
	assert_int_equal(parse("<volume><name>a</name></volume>", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "expected <pool>"));
	assert_int_equal(parse("<pool><name>a</name></pool>", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "type"));
	assert_int_equal(parse("<pool type='dir'></pool>", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "<name>"));
	assert_int_equal(parse("<pool type='dir'><name>&bogus;</name></pool>", &err), -EINVAL);
	assert_int_equal(parse("<pool type='dir'><name>&#0;</name></pool>", &err), -EINVAL);
	assert_int_equal(parse("<pool type='dir><name>a</name></pool>", &err), -EINVAL);
	assert_int_equal(parse("<!DOCTYPE x [<!ENTITY a 'b'>]><pool/>", &err), -EINVAL);
	assert_int_equal(parse("<pool type='dir'><name>a</name></pool><x/>", &err), -EINVAL);
	assert_int_equal(parse("<pool type='dir'><source><host port='x'/></source>"
			       "<name>a</name></pool>",
			       &err),
			 -EINVAL);
	assert_int_equal(parse("<pool type='dir'><name>&#x41;&#66;&lt;</name></pool>", &err), 0);
	assert_string_equal(def.name, "AB<");
}

/* A @n-fold repetition of @unit between @head and @tail, in a new string. */
static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
	char *s = malloc(hl + ul * n + tl + 1), *p = s;

	assert_non_null(s);
	memcpy(p, head, hl);
	p += hl;
	for (size_t i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	memcpy(p, tail, tl + 1);
	return s;
}

/* Definitions come from users: entities, DTDs, depth and encodings never reach further. */
static void test_xml_hostile(void **state)
{
	static const char laughs[] =
		"<?xml version='1.0'?>\n<!DOCTYPE pool [\n <!ENTITY a 'aaaaaaaaaa'>\n"
		" <!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>\n"
		" <!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>\n"
		" <!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>\n"
		" <!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'>\n"
		" <!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>\n"
		" <!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'>\n"
		" <!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'>\n"
		" <!ENTITY i '&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;'>\n]>\n"
		"<pool type='dir'><name>&i;</name></pool>";
	static const char xxe[] = "<!DOCTYPE pool [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
				  "<pool type='dir'><name>&x;</name></pool>";
	static const char xxe_attr[] = "<!DOCTYPE pool [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
				       "<pool type='&x;'><name>n</name></pool>";
	static const char param[] =
		"<!DOCTYPE pool [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>"
		"<pool type='dir'><name>n</name></pool>";
	struct vs_error err;
	char *deep;

	(void)state;
	assert_int_equal(parse(laughs, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 3: DOCTYPE"));
	assert_int_equal(parse(xxe, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "DOCTYPE"));
	assert_null(strstr(err.msg, "root:"));
	assert_int_equal(parse(xxe_attr, &err), -EINVAL);
	assert_int_equal(parse(param, &err), -EINVAL);
	assert_null(strstr(err.msg, "root:"));
	/* An external DTD is named, never read. */
	assert_int_equal(parse("<!DOCTYPE pool SYSTEM 'file:///etc/passwd'>"
			       "<pool type='dir'><name>n</name></pool>",
			       &err),
			 0);
	assert_string_equal(def.name, "n");
	/* 100k-deep nesting: refused, with no deep recursion. */
	deep = repeat("<pool type='dir'><name>n</name>", "<a>", 100000, "");
	assert_int_equal(parse(deep, &err), -EINVAL);
	free(deep);
	deep = repeat("<pool type='dir'><name>n</name><source>", "<a>", 40, "");
	assert_int_equal(parse(deep, &err), -EINVAL);
	free(deep);
	/* Not UTF-8 and not declared otherwise: refused; declared Latin-1: converted. */
	assert_int_equal(parse("<pool type='dir'><name>a\xff</name></pool>", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 1"));
	assert_int_equal(parse("<?xml version='1.0' encoding='ISO-8859-1'?>\n"
			       "<pool type='dir'><name>a\xe9</name></pool>",
			       &err),
			 0);
	assert_string_equal(def.name, "a\xc3\xa9");
}

static void test_json_hostile(void **state)
{
	static const char *const huge[] = {
		"{\"version\": 99999999999999999999}",
		"{\"version\": -99999999999999999999}",
		"{\"version\": 1e400}",
		"{\"version\": 1, \"name\": \"n\", \"type\": \"dir\", \"source\": {\"port\": 18446744073709551616}}",
	};
	struct vs_error err;
	char *deep;

	(void)state;
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++)
		assert_int_equal(parse(huge[i], &err), -EINVAL);
	assert_int_equal(parse("{\"version\": 99999999999999999999}", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "out of range"));
	deep = repeat("{\"version\": 1, \"extra\": ", "[", 100000, "");
	assert_int_equal(parse(deep, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "nested too deeply"));
	free(deep);
	deep = repeat("", "{\"a\":", 100000, "");
	assert_int_equal(parse(deep, &err), -EINVAL);
	free(deep);
}

static void test_names(void **state)
{
	static const char *const bad[] = { "", ".", "..", "a/b", "../x", "-x", "a\nb", "a\x7f" };
	char longname[VS_POOL_NAME_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(vs_pool_check_name(bad[i], "Volume", NULL), -EINVAL);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(vs_pool_check_name(longname, "Volume", NULL), -EINVAL);
	longname[VS_POOL_NAME_MAX] = '\0';
	assert_int_equal(vs_pool_check_name(longname, "Volume", NULL), 0);
	assert_int_equal(vs_pool_check_name("disk-1.qcow2", "Volume", NULL), 0);
	assert_int_equal(vs_pool_check_name("a..b", "Volume", NULL), 0);
}

/* Leases: a holder makes the in-use check fail, in this process as in any other. */
static void test_leases(void **state)
{
	char dir[] = "/tmp/vstor-test-lease.XXXXXX";
	struct vs_pool_state *st = NULL;
	struct vs_vol_lease *l = NULL, *l2 = NULL;
	struct vs_pool *p = calloc(1, sizeof(*p));
	struct vs_vol_info vol = { .type = VS_VOL_NETWORK };
	struct vs_error err = { 0 };
	char cmd[128];

	assert_non_null(p);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(vs_pool_state_open(&st, dir, true, &err), 0);
	p->state = st;
	strcpy(p->def.name, "p");
	strcpy(vol.name, "lun1");
	/* Never leased: unused. */
	assert_int_equal(vs_pool_vol_check_unused(p, &vol, &err), 0);
	/* A reader that shares everything holds no write and refuses nothing: unused. */
	assert_int_equal(vs_vol_lease_acquire(st, "p", "lun1", VS_PERM_CONSISTENT_READ, VS_PERM_ALL,
					      &l, &err),
			 0);
	assert_int_equal(vs_pool_vol_check_unused(p, &vol, &err), 0);
	vs_vol_lease_release(l);
	/* A writer: in use, and a second writer is refused. */
	assert_int_equal(
		vs_vol_lease_acquire(st, "p", "lun1",
				     VS_PERM_CONSISTENT_READ | VS_PERM_WRITE | VS_PERM_RESIZE,
				     VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED, &l, &err),
		0);
	vs_error_clear(&err);
	assert_int_equal(vs_pool_vol_check_unused(p, &vol, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "in use"));
	vs_error_clear(&err);
	assert_int_equal(vs_vol_lease_acquire(st, "p", "lun1", VS_PERM_WRITE,
					      VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED,
					      &l2, &err),
			 -EAGAIN);
	vs_vol_lease_release(l);
	assert_int_equal(vs_pool_vol_check_unused(p, &vol, &err), 0);
	vs_vol_lease_remove(st, "p", "lun1");
	vs_pool_state_close(st);
	free(p);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_secret(void **state)
{
	char path[] = "/tmp/vstor-test-secret.XXXXXX";
	char buf[64];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "s3cret\n", 7), 7);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), 0);
	assert_string_equal(buf, "s3cret");
	assert_int_equal(vs_pool_read_secret(path, buf, 4, NULL), -E2BIG);
	assert_int_equal(fchmod(fd, 0644), 0);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), -EPERM);
	assert_int_equal(fchmod(fd, 0666), 0);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), -EPERM);
	assert_int_equal(fchmod(fd, 0600), 0);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), -EINVAL);
	assert_int_equal(pwrite(fd, "a\nb\n", 4, 0), 4);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), -EINVAL);
	close(fd);
	unlink(path);
	assert_int_equal(vs_pool_read_secret(path, buf, sizeof(buf), NULL), -ENOENT);
}

/*
 * The secret store: definitions from libvirt's XML (bad ones refused with a
 * message), values in 0600 files, refused when others may read them, and
 * the volume links.
 */
static void test_secret_store(void **state)
{
	char dir[] = "/tmp/vstor-test-secrets.XXXXXX";
	static const char *const bad[] = {
		"<volume/>",
		"<secret><uuid>not-a-uuid</uuid></secret>",
		"<secret><usage type='nope'><name>x</name></usage></secret>",
		"<secret><usage type='volume'/></secret>",
		"<secret ephemeral='yes'/>",
		"<secret><description>",
	};
	struct vs_pool_state *st = NULL;
	struct vs_pool_secret_def d, d2, *list = NULL;
	struct vs_pool *p = calloc(1, sizeof(*p));
	struct vs_vol_info vol = { .type = VS_VOL_FILE };
	struct vs_error err = { 0 };
	char path[512], uuid[37], cmd[128];
	struct stat sb;
	uint8_t *val = NULL;
	size_t len = 0, n = 0;

	assert_non_null(p);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(vs_pool_state_open(&st, dir, true, &err), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vs_error_clear(&err);
		assert_true(vs_pool_secret_define(st, bad[i], "t", NULL, &err) < 0);
		assert_true(err.msg[0] != '\0');
	}
	assert_int_equal(vs_pool_secret_define(st,
					       "<secret><usage type='volume'><volume>/v/a</volume>"
					       "</usage></secret>",
					       "t", &d, &err),
			 0);
	assert_int_equal(strlen(d.uuid), 36);
	/* One secret per usage. */
	assert_int_equal(vs_pool_secret_define(st,
					       "<secret><usage type='volume'><volume>/v/a</volume>"
					       "</usage></secret>",
					       "t", NULL, &err),
			 -EEXIST);
	assert_int_equal(vs_pool_secret_load(st, d.uuid, &d2, &err), 0);
	assert_string_equal(d2.usage_type, "volume");
	assert_string_equal(d2.usage_id, "/v/a");
	/* No value yet. */
	assert_int_equal(vs_pool_secret_get_value(st, d.uuid, &val, &len, &err), -ENOENT);
	assert_int_equal(vs_pool_secret_set_value(st, d.uuid, "pw", 0, &err), -EINVAL);
	assert_int_equal(vs_pool_secret_set_value(st, d.uuid, "pass\nword", 9, &err), 0);
	assert_int_equal(vs_pool_secret_get_value(st, d.uuid, &val, &len, &err), 0);
	assert_int_equal(len, 9);
	assert_memory_equal(val, "pass\nword", 9);
	free(val);
	snprintf(path, sizeof(path), "%s/secrets/%s.value", dir, d.uuid);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/secrets", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	/* A value file others may read is refused. */
	snprintf(path, sizeof(path), "%s/secrets/%s.value", dir, d.uuid);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(vs_pool_secret_get_value(st, d.uuid, &val, &len, &err), -EPERM);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(vs_pool_secret_list(st, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	free(list);
	/* The volume of the usage path finds it; a link wins. */
	p->state = st;
	strcpy(p->def.name, "p");
	strcpy(vol.name, "a");
	strcpy(vol.path, "/v/a");
	assert_int_equal(vs_pool_vol_secret(p, &vol, uuid, &err), 0);
	assert_string_equal(uuid, d.uuid);
	strcpy(vol.path, "/v/b");
	assert_int_equal(vs_pool_vol_secret(p, &vol, uuid, NULL), -ENOENT);
	assert_int_equal(vs_pool_vol_link_secret(p, "a", d.uuid, &err), 0);
	assert_int_equal(vs_pool_vol_secret(p, &vol, uuid, &err), 0);
	vs_pool_vol_rename_secret(p, "a", "b");
	assert_int_equal(vs_pool_vol_secret(p, &vol, uuid, NULL), -ENOENT);
	assert_int_equal(vs_pool_vol_link_secret(p, "b", NULL, &err), 0);
	/* Undefine removes both files. */
	assert_int_equal(vs_pool_secret_undefine(st, d.uuid, &err), 0);
	assert_int_equal(stat(path, &sb), -1);
	assert_int_equal(vs_pool_secret_load(st, d.uuid, &d2, NULL), -ENOENT);
	assert_int_equal(vs_pool_secret_undefine(st, "nope", NULL), -ENOENT);
	vs_pool_state_close(st);
	free(p);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* This host's id for sanlock leases: VSTOR_HOST_ID, 1-2000, nothing else. */
static void test_sanlock_host_id(void **state)
{
	static const char *const bad[] = { "0", "2001", "7x", "-1", "99999999999999999999" };
	uint64_t id = 0;

	(void)state;
	setenv("VSTOR_HOST_ID", "7", 1);
	assert_int_equal(vs_sanlock_host_id(&id, NULL), 0);
	assert_int_equal(id, 7);
	setenv("VSTOR_HOST_ID", "2000", 1);
	assert_int_equal(vs_sanlock_host_id(&id, NULL), 0);
	assert_int_equal(id, 2000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("VSTOR_HOST_ID", bad[i], 1);
		assert_int_equal(vs_sanlock_host_id(&id, NULL), -EINVAL);
	}
	unsetenv("VSTOR_HOST_ID");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_round_trip), cmocka_unit_test(test_json_old_format),
		cmocka_unit_test(test_json_errors),	cmocka_unit_test(test_xml_libvirt),
		cmocka_unit_test(test_xml_errors),	cmocka_unit_test(test_names),
		cmocka_unit_test(test_leases),		cmocka_unit_test(test_secret),
		cmocka_unit_test(test_perms_parse),	cmocka_unit_test(test_secret_store),
		cmocka_unit_test(test_sanlock_host_id), cmocka_unit_test(test_xml_hostile),
		cmocka_unit_test(test_json_hostile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
