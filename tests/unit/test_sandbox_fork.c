/* Regression test: a sandbox starts while other threads of the supervising process allocate.
 * The sandbox's init is a clone3 copy of a multi-threaded process; it once forked the command
 * with glibc's fork(), which takes malloc's locks, and hung forever whenever another thread
 * held one at the instant of the clone (seen: `custos sandbox exec` while the profile hash was
 * computed; possible in `custos up` whenever a proxy worker allocated during a restart). It
 * reproduces with glibc's allocator (a release build hung in the first few spawns); under
 * ASan the threads allocate from ASan's heap instead, so there it only checks that spawning
 * works. Needs user namespaces; skips without them. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "custos/sandbox.h"

#define SPAWNS 40

static volatile int stop_churn;

static void *churn(void *arg)
{
	(void)arg;
	unsigned seed = 1;
	while (!stop_churn) {
		void *p[16];
		for (int i = 0; i < 16; i++) {
			seed = seed * 1103515245u + 12345u;
			p[i] = malloc(16 + (seed >> 16) % 4096);
		}
		for (int i = 0; i < 16; i++)
			free(p[i]);
	}
	return NULL;
}

static void test_spawn_while_other_threads_allocate(void **state)
{
	(void)state;
	static const char *const argv[] = { "/bin/true", NULL };
	sandbox_profile p;
	sandbox *sb = NULL;

	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.cgroup = SANDBOX_CGROUP_OFF;
	if (sandbox_spawn(&p, argv, NULL, &sb) != CUSTOS_OK) {
		fprintf(stderr, "sandbox unavailable: %s\n", err_msg());
		skip();
	}
	sandbox_free(sb);

	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, churn, NULL), 0);
	/* A hang here is the failure (ctest's timeout ends it). */
	for (int i = 0; i < SPAWNS; i++) {
		int st = -1;
		assert_int_equal(sandbox_spawn(&p, argv, NULL, &sb), CUSTOS_OK);
		assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		sandbox_free(sb);
	}
	stop_churn = 1;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spawn_while_other_threads_allocate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
