/*
 * alternate N CMD1 ARGS... ,, CMD2 ARGS... [,, ...]: runs the commands in turn, N rounds after
 * 5 warm-up rounds, each with stdout and stderr on /dev/null, and prints per command the median,
 * first and third quartile of its wall time (spawn to reaped) and the median's ratio to the
 * first command's. Alternating puts every command under the same load drift, which a shared
 * machine has plenty of; hyperfine runs one command's samples back to back.
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

#define MAX_CMDS 16

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: alternate N CMD ARGS... [,, CMD ARGS...]...\n");
		return 2;
	}
	char *end;
	long nl = strtol(argv[1], &end, 10);
	int n = *end == '\0' && nl >= 4 && nl <= 1000000 ? (int)nl : 0;
	if (n < 4) {
		fprintf(stderr, "alternate: N must be a number from 4 to 1000000\n");
		return 2;
	}
	char **cmds[MAX_CMDS];
	int nc = 0;
	cmds[nc++] = &argv[2];
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], ",,") == 0) {
			if (nc == MAX_CMDS || i + 1 >= argc) {
				fprintf(stderr, "alternate: too many commands or an empty one\n");
				return 2;
			}
			argv[i] = NULL;
			cmds[nc++] = &argv[i + 1];
		}
	double *t[MAX_CMDS];
	for (int i = 0; i < nc; i++)
		if ((t[i] = calloc((size_t)n, sizeof(double))) == NULL)
			return 1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	for (int r = -5; r < n; r++)
		for (int i = 0; i < nc; i++) {
			struct timespec a, b;
			pid_t pid;
			int st;
			clock_gettime(CLOCK_MONOTONIC, &a);
			if (posix_spawn(&pid, cmds[i][0], &fa, NULL, cmds[i], environ) != 0) {
				perror(cmds[i][0]);
				return 1;
			}
			waitpid(pid, &st, 0);
			clock_gettime(CLOCK_MONOTONIC, &b);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				fprintf(stderr, "alternate: %s failed (status %d)\n", cmds[i][0],
				        st);
				return 1;
			}
			if (r >= 0)
				t[i][r] = (double)(b.tv_sec - a.tv_sec) * 1e3 +
				          (double)(b.tv_nsec - a.tv_nsec) / 1e6;
		}
	double base = 0;
	for (int i = 0; i < nc; i++) {
		qsort(t[i], (size_t)n, sizeof(double), cmp_double);
		double med = t[i][n / 2];
		if (i == 0)
			base = med;
		printf("%.2f ms\tx%.2f\tp25 %.2f\tp75 %.2f\t", med, med / base, t[i][n / 4],
		       t[i][3 * n / 4]);
		for (char **a = cmds[i]; *a; a++)
			printf("%s%s", a == cmds[i] ? "" : " ", *a);
		printf("\n");
	}
	return 0;
}
