/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CO_TEST(name) { ... }: a cmocka test whose body runs as a coroutine
 * (vs_run_in_coroutine), for the libstore unit tests. Include after
 * <cmocka.h>; the body gets `void *arg` (unused).
 */
#ifndef VSTOR_TEST_CO_TEST_H
#define VSTOR_TEST_CO_TEST_H

#include "vstor/reactor.h"

#define CO_TEST(name)                                                      \
	static void name##_co(void *arg);                                  \
	static void name(void **state)                                     \
	{                                                                  \
		(void)state;                                               \
		assert_int_equal(vs_run_in_coroutine(name##_co, NULL), 0); \
	}                                                                  \
	static void name##_co(void *arg)

#endif
