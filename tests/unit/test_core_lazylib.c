/* Unit tests for core/lazylib.c: binding a shared library on first use, all or nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "custos/lazylib.h"

static void test_binds_every_symbol(void **state)
{
	(void)state;
	static const char *const names[] = { "strlen", "getpid" };
	static void *slots[2];
	static lazylib lib = LAZYLIB_INIT("libc.so.6", "this test", NULL, names, slots);

	assert_int_equal(lib.state, 0); /* nothing happens before the first use */
	assert_int_equal(lazylib_load(&lib), CUSTOS_OK);
	assert_true(lazylib_ready(&lib));
	assert_non_null(slots[0]);
	assert_non_null(slots[1]);
	assert_int_equal(((size_t(*)(const char *))slots[0])("four"), 4);
	assert_string_equal(lazylib_error(&lib), "");
}

static void test_missing_file_is_named(void **state)
{
	(void)state;
	static const char *const names[] = { "anything" };
	static void *slots[1];
	static lazylib lib = LAZYLIB_INIT("libcustos-no-such-library.so.7", "the test backend",
	                                  "libcustos-test7", names, slots);

	assert_int_equal(lazylib_load(&lib), CUSTOS_ERR_UNSUPPORTED);
	assert_non_null(strstr(err_msg(), "the test backend needs libcustos-no-such-library.so.7"));
	assert_non_null(strstr(err_msg(), "(package libcustos-test7)"));
	assert_false(lazylib_ready(&lib));
	assert_null(slots[0]);
	/* Final for the process: the same answer, the same message, no second attempt. */
	err_clear();
	assert_int_equal(lazylib_load(&lib), CUSTOS_ERR_UNSUPPORTED);
	assert_non_null(strstr(err_msg(), "libcustos-no-such-library.so.7"));
	assert_non_null(strstr(lazylib_error(&lib), "libcustos-no-such-library.so.7"));
}

static void test_missing_symbol_refuses_the_whole_library(void **state)
{
	(void)state;
	/* An older or foreign build of a library: one absent symbol and nothing is bound. */
	static const char *const names[] = { "strlen", "custos_no_such_symbol" };
	static void *slots[2];
	static lazylib lib = LAZYLIB_INIT("libc.so.6", "the test backend", NULL, names, slots);

	assert_int_equal(lazylib_load(&lib), CUSTOS_ERR_UNSUPPORTED);
	assert_non_null(strstr(err_msg(), "libc.so.6, which lacks custos_no_such_symbol"));
	assert_null(slots[0]); /* the symbol found first is not left bound either */
	assert_null(slots[1]);
	assert_false(lazylib_ready(&lib));
}

static void test_not_a_library(void **state)
{
	(void)state;
	static const char *const names[] = { "x" };
	static void *slots[1];
	static lazylib lib = LAZYLIB_INIT("/dev/null", "the test backend", NULL, names, slots);

	assert_int_equal(lazylib_load(&lib), CUSTOS_ERR_UNSUPPORTED);
	assert_non_null(strstr(err_msg(), "needs /dev/null, which cannot be loaded"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_binds_every_symbol),
		cmocka_unit_test(test_missing_file_is_named),
		cmocka_unit_test(test_missing_symbol_refuses_the_whole_library),
		cmocka_unit_test(test_not_a_library),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
