/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the rbd driver's names (libstore/driver-rbd.c):
 * rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:KEY=VALUE...] as QEMU spells them,
 * '\' escapes, and what is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "driver-rbd.h"

static void test_plain(void **state)
{
	struct vs_rbd_spec s;
	struct vs_error err = { 0 };

	(void)state;
	assert_int_equal(vs_rbd_spec_parse("rbd:pool/img", &s, &err), 0);
	assert_string_equal(s.pool, "pool");
	assert_null(s.ns);
	assert_string_equal(s.image, "img");
	assert_null(s.snap);
	assert_int_equal(s.nopts, 0);
	vs_rbd_spec_free(&s);
}

static void test_full(void **state)
{
	struct vs_rbd_spec s;
	struct vs_error err = { 0 };

	(void)state;
	assert_int_equal(vs_rbd_spec_parse("rbd:p/ns/im\\:g@s1:id=vstor:conf=/etc/c\\:x.conf:"
					   "mon_host=127.0.0.1\\:3300",
					   &s, &err),
			 0);
	assert_string_equal(s.pool, "p");
	assert_string_equal(s.ns, "ns");
	assert_string_equal(s.image, "im:g");
	assert_string_equal(s.snap, "s1");
	assert_int_equal(s.nopts, 3);
	assert_string_equal(s.opts[0].key, "id");
	assert_string_equal(s.opts[0].value, "vstor");
	assert_string_equal(s.opts[1].value, "/etc/c:x.conf");
	assert_string_equal(s.opts[2].key, "mon_host");
	assert_string_equal(s.opts[2].value, "127.0.0.1:3300");
	vs_rbd_spec_free(&s);
}

static void test_bad(void **state)
{
	static const char *const bad[] = {
		"rbd:",		 "rbd:pool",	   "rbd:/img",	      "rbd:pool/",    "rbd:p/n/i/x",
		"rbd:pool/img@", "rbd:pool/img:x", "rbd:pool/img:=v", "nbd:pool/img",
	};
	struct vs_rbd_spec s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vs_error err = { 0 };

		if (vs_rbd_spec_parse(bad[i], &s, &err) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_true(err.msg[0] != '\0');
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_bad),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
