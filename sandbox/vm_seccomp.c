/*
 * VM sandbox: the check that the QEMU process behind a domain really runs under a seccomp
 * filter before custos routes traffic to it. The pid comes from the pidfile libvirt's QEMU
 * driver writes (run_dir/NAME.pid); the mode from the Seccomp: line of /proc/PID/status.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "custos/vm.h"

#define VM_PIDFILE_MAX 64
#define VM_STATUS_MAX  (64 * 1024)
#define VM_CMDLINE_MAX (256 * 1024)

custos_err vm_qemu_pid(const char *run_dir, const char *name, pid_t *out)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%s.pid", run_dir ? run_dir : "/run/libvirt/qemu",
	                 name);
	ENSURE(n > 0 && (size_t)n < sizeof(path), CUSTOS_ERR_LIMIT, "vm %s: pidfile path too long",
	       name);
	buf b;
	buf_init(&b, VM_PIDFILE_MAX);
	custos_err e = file_load(path, FILE_ANY, VM_PIDFILE_MAX, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "vm %s: QEMU pidfile", name);
	}
	span s = span_trim(buf_span(&b));
	while (s.len && (s.ptr[s.len - 1] == '\n' || s.ptr[s.len - 1] == '\r'))
		s.len--;
	uint64_t pid = 0;
	e = num_parse_u64(s, 1, 0x3fffffff, &pid);
	buf_free(&b);
	if (e != CUSTOS_OK)
		return err_wrap(e, "vm %s: QEMU pidfile %s", name, path);
	if (kill((pid_t)pid, 0) == -1 && errno == ESRCH)
		return err_set(CUSTOS_ERR_NOTFOUND, "vm %s: QEMU pid %llu is not running", name,
		               (unsigned long long)pid);
	*out = (pid_t)pid;
	return CUSTOS_OK;
}

custos_err vm_seccomp_check(const char *proc_root, pid_t pid)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%d/status", proc_root ? proc_root : "/proc",
	                 (int)pid);
	ENSURE(n > 0 && (size_t)n < sizeof(path), CUSTOS_ERR_LIMIT, "vm: proc path too long");
	buf b;
	buf_init(&b, VM_STATUS_MAX);
	custos_err e = file_load(path, FILE_ANY, VM_STATUS_MAX, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "vm: QEMU pid %d status", (int)pid);
	}
	span s = buf_span(&b);
	const span key = SPAN_LIT("Seccomp:");
	e = err_set(CUSTOS_ERR_DENIED, "vm: QEMU pid %d: no Seccomp line in %s (fail closed)",
	            (int)pid, path);
	size_t i = 0;
	while (i < s.len) {
		const char *nl = memchr(s.ptr + i, '\n', s.len - i);
		size_t end = nl ? (size_t)(nl - s.ptr) : s.len;
		span line = span_of(s.ptr + i, end - i);
		if (span_starts_with(line, key)) {
			span v = span_trim(span_of(line.ptr + key.len, line.len - key.len));
			if (span_eq_cstr(v, "2"))
				e = CUSTOS_OK;
			else
				e = err_set(
				        CUSTOS_ERR_DENIED,
				        "vm: QEMU pid %d runs without a seccomp filter (Seccomp: "
				        "%.*s); traffic is not routed to it",
				        (int)pid, (int)v.len, v.ptr);
			break;
		}
		i = end + 1;
	}
	buf_free(&b);
	return e;
}

custos_err vm_qemu_verify(const char *proc_root, pid_t pid, const char *name)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%d/cmdline", proc_root ? proc_root : "/proc",
	                 (int)pid);
	ENSURE(n > 0 && (size_t)n < sizeof(path), CUSTOS_ERR_LIMIT, "vm: proc path too long");
	buf b;
	buf_init(&b, VM_CMDLINE_MAX);
	custos_err e = file_load(path, FILE_ANY, VM_CMDLINE_MAX, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "vm %s: QEMU pid %d cmdline", name, (int)pid);
	}
	/* libvirt passes "-name" "guest=NAME,debug-threads=on": arguments are NUL-separated. */
	buf want;
	buf_init(&want, VM_NAME_MAX + 32);
	e = buf_printf(&want, "-name%cguest=%s,", '\0', name);
	if (e == CUSTOS_OK) {
		span have = buf_span(&b), w = buf_span(&want);
		e = memmem(have.ptr, have.len, w.ptr, w.len)
		            ? CUSTOS_OK
		            : err_set(CUSTOS_ERR_DENIED,
		                      "vm %s: pid %d is not the QEMU of this domain (stale "
		                      "pidfile?)",
		                      name, (int)pid);
	}
	buf_free(&want);
	buf_free(&b);
	return e;
}
