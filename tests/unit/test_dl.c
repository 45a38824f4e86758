/* Unit tests for dl/: the stubs of the libraries custos binds on first use forward to them. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <hs/hs.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <microhttpd.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "custos/lazylib.h"

static bool crypto_loaded(void)
{
	void *h = dlopen("libcrypto.so.3", RTLD_NOLOAD | RTLD_LAZY);
	if (h)
		dlclose(h);
	return h != NULL;
}

/* OpenSSL through dl/openssl.c's trampolines (the first test: no OpenSSL call before it). On
 * x86-64 the library is loaded at the first call, not before; every call reaches the real
 * function with its arguments (a seven-argument one: six in registers, one on the stack) and
 * its result; and the slots the trampolines jump through are read-only once bound. */
static void test_openssl_trampolines(void **state)
{
	(void)state;
#ifdef CUSTOS_LAZY_OPENSSL
	assert_false(crypto_loaded());
#endif
	unsigned char md[SHA256_DIGEST_LENGTH];
	static const unsigned char abc_sha256[SHA256_DIGEST_LENGTH] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
		0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
		0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
	};
	assert_ptr_equal(SHA256((const unsigned char *)"abc", 3, md), md);
	assert_memory_equal(md, abc_sha256, sizeof(md));
	assert_true(crypto_loaded());
	assert_int_equal(lazylib_openssl(), CUSTOS_OK);

	X509 *x = X509_new();
	assert_non_null(x);
	X509_NAME *name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                            (const unsigned char *)"custos", -1, -1, 0),
	                 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "no-such-field", MBSTRING_ASC,
	                                            (const unsigned char *)"x", -1, -1, 0),
	                 0); /* the library's own error comes through */
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	assert_true(i >= 0);
	ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	assert_int_equal(ASN1_STRING_length(cn), 6);
	assert_memory_equal(ASN1_STRING_get0_data(cn), "custos", 6);
	X509_free(x);

#ifdef CUSTOS_LAZY_OPENSSL
	extern void *custos_ossl_slots[];
	uintptr_t at = (uintptr_t)custos_ossl_slots;
	FILE *maps = fopen("/proc/self/maps", "r");
	assert_non_null(maps);
	char line[512], perms[8] = "";
	while (fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		char p[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && at >= lo && at < hi) {
			snprintf(perms, sizeof(perms), "%s", p);
			break;
		}
	}
	fclose(maps);
	assert_string_equal(perms, "r--p");
#endif
}

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
		cmocka_unit_test(test_openssl_trampolines), /* first: no OpenSSL call before it */
		cmocka_unit_test(test_hyperscan_forwards),
		cmocka_unit_test(test_microhttpd_forwards),
		cmocka_unit_test(test_libvirt_forwards),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
