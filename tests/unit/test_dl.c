/* Unit tests for dl/: the stubs of the libraries custos binds on first use forward to them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <hs/hs.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <microhttpd.h>

#include "custos/lazylib.h"

static void test_hyperscan_forwards(void **state)
{
	(void)state;
	assert_int_equal(lazylib_hyperscan(), CUSTOS_OK);
	assert_int_equal(hs_valid_platform(), HS_SUCCESS);
	assert_string_not_equal(hs_version(), "unavailable");
	hs_database_t *db = NULL;
	hs_compile_error_t *cerr = NULL;
	assert_int_equal(hs_compile("ab+c", 0, HS_MODE_BLOCK, NULL, &db, &cerr), HS_SUCCESS);
	assert_int_equal(hs_free_database(db), HS_SUCCESS);
	/* The library's own errors come through unchanged. */
	assert_int_equal(hs_compile("(", 0, HS_MODE_BLOCK, NULL, &db, &cerr), HS_COMPILER_ERROR);
	assert_non_null(cerr);
	assert_non_null(cerr->message);
	assert_int_equal(hs_free_compile_error(cerr), HS_SUCCESS);
}

static void test_microhttpd_forwards(void **state)
{
	(void)state;
	assert_int_equal(lazylib_microhttpd(), CUSTOS_OK);
	assert_string_not_equal(MHD_get_version(), "unavailable");
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
	assert_non_null(r);
	assert_int_equal(MHD_add_response_header(r, "X-Test", "1"), MHD_YES);
	assert_int_equal(MHD_add_response_header(r, "Bad\nName", "1"), MHD_NO);
	MHD_destroy_response(r);
}

static void test_libvirt_forwards(void **state)
{
	(void)state;
	unsigned long v = 0;
	assert_int_equal(lazylib_libvirt(), CUSTOS_OK);
	assert_int_equal(virGetVersion(&v, NULL, NULL), 0);
	assert_true(v >= 1000000); /* >= 1.0.0 */
	virConnectPtr c = virConnectOpen("test:///default");
	assert_non_null(c);
	assert_null(virDomainLookupByName(c, "custos-no-such-domain"));
	virErrorPtr e = virGetLastError();
	assert_non_null(e);
	assert_int_equal(e->code, VIR_ERR_NO_DOMAIN);
	assert_int_equal(virConnectClose(c), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hyperscan_forwards),
		cmocka_unit_test(test_microhttpd_forwards),
		cmocka_unit_test(test_libvirt_forwards),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
