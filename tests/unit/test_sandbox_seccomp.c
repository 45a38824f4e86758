/* Unit tests for the seccomp programs compiled at build time (sandbox/gen/seccomp_gen.c): each
 * equals what libseccomp compiles now for the same profile, and only equal inputs use one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <seccomp.h>

#include "custos/sandbox.h"
#include "sandbox/sb_int.h"

static const sb_seccomp_builtin *find_builtin(const char *key)
{
	for (size_t i = 0; i < sb_seccomp_n_builtins; i++)
		if (strcmp(sb_seccomp_builtins[i].key, key) == 0)
			return &sb_seccomp_builtins[i];
	return NULL;
}

static void test_builtins_equal_a_fresh_compile(void **state)
{
	(void)state;
	const char *const *names = sandbox_profile_builtin_names();
	assert_true(sb_seccomp_n_builtins >= 2); /* default, gpu */
	for (size_t i = 0; names[i]; i++) {
		sandbox_profile p;
		assert_int_equal(sandbox_profile_builtin(names[i], &p), CUSTOS_OK);
		char *key = sb_seccomp_key(&p);
		assert_non_null(key);
		const sb_seccomp_builtin *b = find_builtin(key);
		assert_non_null(b);
		assert_int_equal(b->arch, seccomp_arch_native());
		sb_filter fresh, built;
		assert_int_equal(sb_seccomp_compile(&p, &fresh), CUSTOS_OK);
		assert_int_equal(b->len, fresh.len);
		assert_memory_equal(b->insns, fresh.insns, fresh.len * sizeof(fresh.insns[0]));
		/* ... and it is what a spawn gets. */
		assert_int_equal(sb_seccomp_build(&p, &built), CUSTOS_OK);
		assert_int_equal(built.len, fresh.len);
		assert_memory_equal(built.insns, fresh.insns, fresh.len * sizeof(fresh.insns[0]));
		sb_filter_free(&fresh);
		sb_filter_free(&built);
		free(key);
	}
}

static void test_other_inputs_compile_at_run_time(void **state)
{
	(void)state;
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	static const char *const deny[] = { "ioctl" };
	p.deny_syscalls = deny;
	p.n_deny_syscalls = 1;
	char *key = sb_seccomp_key(&p);
	assert_non_null(key);
	assert_null(find_builtin(key)); /* a deny list is part of the key */
	sandbox_profile d;
	assert_int_equal(sandbox_profile_builtin("default", &d), CUSTOS_OK);
	char *dkey = sb_seccomp_key(&d);
	const sb_seccomp_builtin *b = find_builtin(dkey);
	assert_non_null(b);
	sb_filter f;
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_OK);
	assert_true(f.len != b->len || memcmp(f.insns, b->insns, f.len * sizeof(f.insns[0])) != 0);
	sb_filter_free(&f);
	/* Custom lists too, and an unknown name in one still fails. */
	static const char *const custom[] = { "custos_no_such_call" };
	d.seccomp = SANDBOX_SECCOMP_CUSTOM;
	d.syscalls = custom;
	d.n_syscalls = 1;
	assert_int_not_equal(sb_seccomp_build(&d, &f), CUSTOS_OK);
	free(key);
	free(dkey);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builtins_equal_a_fresh_compile),
		cmocka_unit_test(test_other_inputs_compile_at_run_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
