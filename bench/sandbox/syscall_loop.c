/*
 * syscall_loop: a syscall-heavy loop for the seccomp cost benchmark. Prints ns per call of
 * getppid (a cheap real syscall), a 1-byte read of /dev/zero and a failing openat, as JSON.
 * usage: syscall_loop [N] [--denied M]   (--denied: also time M calls a sandbox denies, each
 *                                          answered EPERM by the supervisor)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
	char c;
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (fd == -1 || n <= 0)
		return 1;
	double t0 = now();
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	double t1 = now();
	for (long i = 0; i < n; i++)
		if (read(fd, &c, 1) != 1)
			return 1;
	double t2 = now();
	for (long i = 0; i < n / 4; i++)
		(void)!open("/nonexistent/x", O_RDONLY | O_CLOEXEC);
	double t3 = now();
	printf("{\"getppid_ns\":%.1f,\"read_ns\":%.1f,\"openat_enoent_ns\":%.1f", (t1 - t0) / n,
	       (t2 - t1) / n, (t3 - t2) / (n / 4));
	if (argc > 3) {
		long m = strtol(argv[3], NULL, 10);
		double t4 = now();
		for (long i = 0; i < m; i++)
			syscall(SYS_acct, NULL); /* always denied in a custos sandbox */
		double t5 = now();
		if (m > 0)
			printf(",\"denied_us\":%.1f", (t5 - t4) / m / 1e3);
	}
	printf("}\n");
	close(fd);
	return 0;
}
