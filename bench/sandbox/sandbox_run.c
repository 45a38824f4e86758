/*
 * sandbox_run: a self-contained (statically linked) runner of one command in a custos process
 * sandbox, for machines that cannot build custos, such as the GPU check machine. Exit status
 * passes through; events go to --events FILE as JSON lines.
 * usage: sandbox_run [--profile NAME] [--gpu none|nvidia|amd] [--ro-bind SRC[:DST]]...
 *                    [--bind SRC[:DST]]... [--setenv N=V]... [--events FILE] -- CMD ARGS...
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "custos/sandbox.h"

static void on_event(const sandbox_event *ev, void *arg)
{
	int fd = *(int *)arg;
	buf b;
	buf_init(&b, 1 << 16);
	if (fd >= 0 && sandbox_event_json(ev, &b) == CUSTOS_OK &&
	    buf_append_byte(&b, '\n') == CUSTOS_OK &&
	    file_write_all(fd, buf_ptr(&b), buf_used(&b)) != CUSTOS_OK)
		fprintf(stderr, "sandbox_run: event: %s\n", err_msg());
	buf_free(&b);
	if (ev->kind == SANDBOX_EV_VIOLATION)
		fprintf(stderr, "sandbox_run: denied %s\n", ev->syscall);
}

int main(int argc, char **argv)
{
	sandbox_profile p;
	sandbox_bind binds[SANDBOX_MAX_BINDS];
	const char *env[SANDBOX_MAX_ENV];
	size_t nb = 0, ne = 0;
	const char *profile = "default", *events = NULL;
	int gpu = -1, i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (i + 1 >= argc)
			return 2;
		if (strcmp(argv[i], "--profile") == 0)
			profile = argv[++i];
		else if (strcmp(argv[i], "--gpu") == 0) {
			const char *g = argv[++i];
			gpu = strcmp(g, "nvidia") == 0 ? SANDBOX_GPU_NVIDIA
			      : strcmp(g, "amd") == 0  ? SANDBOX_GPU_AMD
			                               : SANDBOX_GPU_NONE;
		} else if ((strcmp(argv[i], "--ro-bind") == 0 || strcmp(argv[i], "--bind") == 0) &&
		           nb < SANDBOX_MAX_BINDS) {
			bool rw = strcmp(argv[i], "--bind") == 0;
			char *s = argv[++i], *colon = strchr(s, ':');
			if (colon)
				*colon = '\0';
			binds[nb++] = (sandbox_bind){ .src = s,
				                      .dst = colon ? colon + 1 : NULL,
				                      .writable = rw,
				                      .optional = true };
		} else if (strcmp(argv[i], "--setenv") == 0 && ne < SANDBOX_MAX_ENV)
			env[ne++] = argv[++i];
		else if (strcmp(argv[i], "--events") == 0)
			events = argv[++i];
		else {
			fprintf(stderr, "sandbox_run: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (i >= argc || sandbox_profile_builtin(profile, &p) != CUSTOS_OK) {
		fprintf(stderr, "sandbox_run: no command or unknown profile\n");
		return 2;
	}
	if (gpu >= 0) {
		p.gpu = (sandbox_gpu)gpu;
		if (p.gpu != SANDBOX_GPU_NONE)
			p.seccomp = SANDBOX_SECCOMP_GPU;
	}
	p.binds = binds;
	p.n_binds = nb;
	if (ne) {
		p.env_set = env;
		p.n_env_set = ne;
	}
	int efd = events ? open(events, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
	sandbox_opts o;
	sandbox_opts_init(&o);
	o.on_event = on_event;
	o.arg = &efd;
	sandbox *sb = NULL;
	int st = 0;
	if (sandbox_spawn(&p, (const char *const *)(argv + i), &o, &sb) != CUSTOS_OK) {
		fprintf(stderr, "sandbox_run: %s\n", err_msg());
		return 1;
	}
	if (sandbox_wait(sb, &st) != CUSTOS_OK)
		st = 1 << 8;
	sandbox_free(sb);
	if (efd >= 0)
		close(efd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
