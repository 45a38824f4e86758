/*
 * Process and thread names: each of custos' processes and long-lived threads names itself, so
 * that ps, top -H, perf and /proc/PID/task/TID/comm tell the supervisor, the proxy, its
 * workers, the audit writer and the shipper apart (they would all be "custos").
 */
#include <string.h>
#include <sys/prctl.h>

#include "custos/core.h"

void proc_name_self(const char *name)
{
	char n[16]; /* the kernel's TASK_COMM_LEN */
	size_t l = strlen(name);

	if (l >= sizeof(n))
		l = sizeof(n) - 1;
	memcpy(n, name, l);
	n[l] = '\0';
	(void)prctl(PR_SET_NAME, n, 0, 0, 0); /* best effort: a name is for people */
}
