/*
 * sd_notify, spoken directly: one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET
 * (a path, or an abstract name starting with '@'). Used for Type=notify readiness, STATUS=
 * lines, reload and stop notices, and the watchdog.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "custos/core.h"

custos_err notify_send(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen;

	if (path == NULL || path[0] == '\0')
		return CUSTOS_OK;
	plen = strlen(path);
	ENSURE((path[0] == '/' || path[0] == '@') && plen < sizeof(sa.sun_path), CUSTOS_ERR_INVAL,
	       "NOTIFY_SOCKET is not a usable socket address");
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return err_sys("notify: socket");
	ssize_t n;
	do
		n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
	while (n == -1 && errno == EINTR);
	custos_err e = n == -1 ? err_sys("notify: send to %s", path) : CUSTOS_OK;
	close(fd);
	return e;
}

uint64_t notify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	uint64_t v, p;

	if (usec == NULL || num_parse_u64(span_cstr(usec), 1, UINT64_MAX, &v) != CUSTOS_OK)
		return 0;
	/* systemd names its main pid, `custos up`'s supervisor, which hands the watchdog over to
	 * the proxy it forks (WATCHDOG_PID set to the proxy's pid, cli/cmd_up.c): only the process
	 * named pings. */
	if (pid != NULL) {
		if (num_parse_u64(span_cstr(pid), 1, UINT64_MAX, &p) != CUSTOS_OK ||
		    p != (uint64_t)getpid())
			return 0;
	}
	return v;
}
