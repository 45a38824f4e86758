/*
 * The raw limit of the disk for bench/audit: 200-byte appends with fdatasync after every
 * record, or after every N records. Prints records per second.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	char rec[200];
	if (argc != 4) {
		fprintf(stderr, "usage: rawdisk FILE RECORDS SYNC_EVERY\n");
		return 2;
	}
	long n = strtol(argv[2], NULL, 10), every = strtol(argv[3], NULL, 10);
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1 || n <= 0 || every <= 0) {
		perror("rawdisk");
		return 1;
	}
	memset(rec, 'x', sizeof(rec));
	rec[sizeof(rec) - 1] = '\n';
	double t0 = now();
	for (long i = 1; i <= n; i++) {
		if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec)) {
			perror("write");
			return 1;
		}
		if (i % every == 0 && fdatasync(fd) == -1) {
			perror("fdatasync");
			return 1;
		}
	}
	fdatasync(fd);
	double s = now() - t0;
	printf("raw fdatasync every %ld: %ld records in %.3f s = %.0f records/s\n", every, n, s,
	       (double)n / s);
	close(fd);
	unlink(argv[1]);
	return 0;
}
