/*
 * spawn_loop: spawn-to-exit latency of a command through the sandbox library, as `custos up`
 * pays it (no custos process start per sandbox). Prints JSON with mean/median/p90 in ms.
 * usage: spawn_loop N [--cgroup off] [-- CMD ARGS...]   (default command /bin/true)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "custos/sandbox.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 100;
	sandbox_profile p;
	static const char *const def[] = { "/bin/true", NULL };
	const char *const *cmd = def;

	if (n <= 0 || n > 100000 || sandbox_profile_builtin("default", &p) != CUSTOS_OK)
		return 2;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc &&
		    strcmp(argv[++i], "off") == 0)
			p.cgroup = SANDBOX_CGROUP_OFF;
		else if (strcmp(argv[i], "--") == 0 && i + 1 < argc) {
			cmd = (const char *const *)(argv + i + 1);
			break;
		}
	}
	double *t = calloc((size_t)n, sizeof(double));
	if (t == NULL)
		return 1;
	for (long i = 0; i < n; i++) {
		uint64_t a = tm_mono_ns();
		sandbox *sb = NULL;
		int st = 0;
		if (sandbox_spawn(&p, cmd, NULL, &sb) != CUSTOS_OK) {
			fprintf(stderr, "spawn_loop: %s\n", err_msg());
			return 1;
		}
		if (sandbox_wait(sb, &st) != CUSTOS_OK || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "spawn_loop: command failed (%d)\n", st);
			return 1;
		}
		sandbox_free(sb);
		t[i] = (double)(tm_mono_ns() - a) / 1e6;
	}
	double sum = 0;
	for (long i = 0; i < n; i++)
		sum += t[i];
	qsort(t, (size_t)n, sizeof(double), cmp);
	printf("{\"runs\":%ld,\"mean_ms\":%.3f,\"median_ms\":%.3f,\"p90_ms\":%.3f,\"min_ms\":%.3f}"
	       "\n",
	       n, sum / (double)n, t[n / 2], t[(n * 9) / 10], t[0]);
	free(t);
	return 0;
}
