/*
 * Sandbox profiles: the built-in ones, validation against the named limits, the canonical JSON
 * form and its SHA-256 (every audit event carries it), and the event record.
 */
#include <openssl/evp.h>
#include <string.h>

#include "sb_int.h"

static const char *const env_allow_default[] = { "LANG", "LC_ALL", "TZ", "TERM" };
static const char *const env_set_default[] = { "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp" };

static const char *const builtin_names[] = { "default", "gpu-nvidia", "gpu-amd", NULL };

const char *const *sandbox_profile_builtin_names(void)
{
	return builtin_names;
}

custos_err sandbox_profile_builtin(const char *name, sandbox_profile *p)
{
	memset(p, 0, sizeof(*p));
	p->name = "default";
	p->namespaces = SANDBOX_NS_ALL;
	p->usr_merged = true;
	p->scratch_target = "/tmp";
	p->uid = 1000;
	p->gid = 1000;
	p->outside_uid = 65534;
	p->outside_gid = 65534;
	p->seccomp = SANDBOX_SECCOMP_DEFAULT;
	p->landlock = true;
	p->limits = (sandbox_limits){
		.memory_bytes = 1ull << 30,
		.swap_bytes = 0,
		.pids = 256,
		.cpu_millis = 1000,
		.nofile = 1024,
		.fsize_bytes = 0,
		.scratch_bytes = 256ull << 20,
	};
	p->cgroup = SANDBOX_CGROUP_AUTO;
	p->env_allow = env_allow_default;
	p->n_env_allow = CUSTOS_ARRAY_LEN(env_allow_default);
	p->env_set = env_set_default;
	p->n_env_set = CUSTOS_ARRAY_LEN(env_set_default);
	if (name == NULL || strcmp(name, "default") == 0)
		return CUSTOS_OK;
	if (strcmp(name, "gpu-nvidia") == 0 || strcmp(name, "gpu-amd") == 0) {
		p->name = strcmp(name, "gpu-nvidia") == 0 ? "gpu-nvidia" : "gpu-amd";
		p->gpu = strcmp(name, "gpu-nvidia") == 0 ? SANDBOX_GPU_NVIDIA : SANDBOX_GPU_AMD;
		p->seccomp = SANDBOX_SECCOMP_GPU;
		p->limits.memory_bytes = 16ull << 30;
		p->limits.pids = 1024;
		p->limits.cpu_millis = 4000;
		p->limits.nofile = 65536;
		return CUSTOS_OK;
	}
	return err_set(CUSTOS_ERR_NOTFOUND, "no built-in sandbox profile '%s'", name);
}

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > SANDBOX_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static custos_err check_abs(const char *what, const char *path, bool may_be_null)
{
	if (path == NULL) {
		ENSURE(may_be_null, CUSTOS_ERR_INVAL, "sandbox profile: %s is missing", what);
		return CUSTOS_OK;
	}
	size_t n = strlen(path);
	ENSURE(n > 0 && n < SANDBOX_PATH_MAX, CUSTOS_ERR_LIMIT,
	       "sandbox profile: %s is empty or longer than %d bytes", what, SANDBOX_PATH_MAX);
	ENSURE(path[0] == '/', CUSTOS_ERR_INVAL, "sandbox profile: %s '%s' is not absolute", what,
	       path);
	/* ".." would let a bind target climb out of the new root while it is being built. */
	for (const char *s = path; (s = strstr(s, "..")) != NULL; s += 2) {
		bool start = s == path || s[-1] == '/';
		bool end = s[2] == '\0' || s[2] == '/';
		ENSURE(!(start && end), CUSTOS_ERR_INVAL, "sandbox profile: %s '%s' contains '..'",
		       what, path);
	}
	return CUSTOS_OK;
}

static custos_err check_rel(const char *what, const char *path)
{
	ENSURE(path && path[0] && path[0] != '/' && strlen(path) < SANDBOX_PATH_MAX,
	       CUSTOS_ERR_INVAL, "sandbox profile: %s must be a relative name", what);
	for (const char *s = path; (s = strstr(s, "..")) != NULL; s += 2)
		ENSURE(!((s == path || s[-1] == '/') && (s[2] == '\0' || s[2] == '/')),
		       CUSTOS_ERR_INVAL, "sandbox profile: %s '%s' contains '..'", what, path);
	return CUSTOS_OK;
}

custos_err sandbox_profile_validate(const sandbox_profile *p)
{
	ENSURE(p != NULL, CUSTOS_ERR_INVAL, "sandbox profile: NULL");
	ENSURE(name_ok(p->name), CUSTOS_ERR_INVAL,
	       "sandbox profile: name must be 1-%d of [A-Za-z0-9_.-]", SANDBOX_NAME_MAX);
	unsigned must = SANDBOX_NS_USER | SANDBOX_NS_PID | SANDBOX_NS_MNT;
	ENSURE((p->namespaces & must) == must && (p->namespaces & ~(unsigned)SANDBOX_NS_ALL) == 0,
	       CUSTOS_ERR_INVAL,
	       "sandbox profile '%s': user, pid and mount namespaces are required", p->name);
	ENSURE(p->n_binds <= SANDBOX_MAX_BINDS, CUSTOS_ERR_LIMIT,
	       "sandbox profile '%s': more than %d binds", p->name, SANDBOX_MAX_BINDS);
	ENSURE(p->n_binds == 0 || p->binds, CUSTOS_ERR_INVAL, "sandbox profile: binds is NULL");
	for (size_t i = 0; i < p->n_binds; i++) {
		GUARD(check_abs("bind source", p->binds[i].src, false));
		GUARD(check_abs("bind target", p->binds[i].dst, true));
		const char *d = p->binds[i].dst ? p->binds[i].dst : p->binds[i].src;
		ENSURE(strcmp(d, "/") != 0, CUSTOS_ERR_INVAL,
		       "sandbox profile '%s': a bind cannot replace the root", p->name);
	}
	GUARD(check_abs("scratch_dir", p->scratch_dir, true));
	GUARD(check_abs("scratch_target", p->scratch_target, true));
	GUARD(check_abs("workdir", p->workdir, true));
	GUARD(check_abs("device_root", p->device_root, true));
	GUARD(check_abs("sys_root", p->sys_root, true));
	ENSURE(p->n_devices <= SANDBOX_MAX_DEVICES, CUSTOS_ERR_LIMIT,
	       "sandbox profile '%s': more than %d devices", p->name, SANDBOX_MAX_DEVICES);
	for (size_t i = 0; i < p->n_devices; i++)
		GUARD(check_rel("device", p->devices[i]));
	ENSURE(p->gpu <= SANDBOX_GPU_AMD, CUSTOS_ERR_INVAL, "sandbox profile: bad gpu value");
	/* The cgroup backends limit swap beside memory only (v1: memsw = memory + swap): a swap
	 * limit alone would be no limit at all. */
	ENSURE(p->limits.swap_bytes == 0 || p->limits.memory_bytes != 0, CUSTOS_ERR_INVAL,
	       "sandbox profile '%s': limits.swap needs limits.memory (swap is limited only beside "
	       "a memory limit)",
	       p->name);
	ENSURE(p->seccomp <= SANDBOX_SECCOMP_CUSTOM, CUSTOS_ERR_INVAL,
	       "sandbox profile: bad seccomp value");
	ENSURE(p->cgroup <= SANDBOX_CGROUP_OFF, CUSTOS_ERR_INVAL,
	       "sandbox profile: bad cgroup value");
	ENSURE(p->n_syscalls <= SANDBOX_MAX_SYSCALLS, CUSTOS_ERR_LIMIT,
	       "sandbox profile '%s': more than %d syscalls", p->name, SANDBOX_MAX_SYSCALLS);
	ENSURE(p->n_syscalls == 0 || p->seccomp == SANDBOX_SECCOMP_CUSTOM, CUSTOS_ERR_INVAL,
	       "sandbox profile '%s': syscalls need seccomp: custom", p->name);
	for (size_t i = 0; i < p->n_syscalls; i++) {
		const char *s = p->syscalls[i];
		ENSURE(s && s[0], CUSTOS_ERR_INVAL, "sandbox profile: empty syscall name");
		ENSURE(!sb_seccomp_is_denied(s), CUSTOS_ERR_DENIED,
		       "sandbox profile '%s': syscall '%s' is always denied", p->name, s);
		ENSURE(sb_seccomp_resolve(s) >= 0, CUSTOS_ERR_INVAL,
		       "sandbox profile '%s': unknown syscall '%s'", p->name, s);
	}
	ENSURE(p->n_deny_syscalls <= SANDBOX_MAX_SYSCALLS, CUSTOS_ERR_LIMIT,
	       "sandbox profile '%s': more than %d denied syscalls", p->name, SANDBOX_MAX_SYSCALLS);
	for (size_t i = 0; i < p->n_deny_syscalls; i++)
		ENSURE(p->deny_syscalls[i] && sb_seccomp_resolve(p->deny_syscalls[i]) >= 0,
		       CUSTOS_ERR_INVAL, "sandbox profile '%s': unknown syscall '%s' in deny",
		       p->name, p->deny_syscalls[i] ? p->deny_syscalls[i] : "");
	ENSURE(p->n_tcp_bind <= SANDBOX_MAX_PORTS && p->n_tcp_connect <= SANDBOX_MAX_PORTS,
	       CUSTOS_ERR_LIMIT, "sandbox profile '%s': more than %d ports", p->name,
	       SANDBOX_MAX_PORTS);
	ENSURE(p->n_env_allow <= SANDBOX_MAX_ENV && p->n_env_set <= SANDBOX_MAX_ENV,
	       CUSTOS_ERR_LIMIT, "sandbox profile '%s': more than %d environment entries", p->name,
	       SANDBOX_MAX_ENV);
	for (size_t i = 0; i < p->n_env_set; i++) {
		const char *eq = p->env_set[i] ? strchr(p->env_set[i], '=') : NULL;
		ENSURE(eq && eq != p->env_set[i], CUSTOS_ERR_INVAL,
		       "sandbox profile '%s': env entry must be NAME=value", p->name);
	}
	for (size_t i = 0; i < p->n_env_allow; i++)
		ENSURE(p->env_allow[i] && p->env_allow[i][0] && !strchr(p->env_allow[i], '='),
		       CUSTOS_ERR_INVAL, "sandbox profile '%s': env allow entry must be a name",
		       p->name);
	ENSURE(p->uid != (uid_t)-1 && p->gid != (gid_t)-1, CUSTOS_ERR_INVAL,
	       "sandbox profile: bad uid/gid");
	ENSURE(p->limits.cpu_millis <= CFG_MAX_CPU_MILLI, CUSTOS_ERR_LIMIT,
	       "sandbox profile: cpu beyond 1024 CPUs");
	ENSURE(p->limits.nofile <= (1u << 20), CUSTOS_ERR_LIMIT,
	       "sandbox profile: nofile beyond 1048576");
	return CUSTOS_OK;
}

static void json_strs(json_writer *w, const char *key, const char *const *v, size_t n)
{
	json_key(w, key);
	json_arr_begin(w);
	for (size_t i = 0; i < n; i++)
		json_cstr(w, v[i]);
	json_arr_end(w);
}

static void json_ports(json_writer *w, const char *key, const uint16_t *v, size_t n)
{
	json_key(w, key);
	json_arr_begin(w);
	for (size_t i = 0; i < n; i++)
		json_u64(w, v[i]);
	json_arr_end(w);
}

custos_err sandbox_profile_json(const sandbox_profile *p, buf *out)
{
	static const char *const gpu[] = { "none", "nvidia", "amd" };
	static const char *const sc[] = { "default", "gpu", "custom" };
	static const char *const cg[] = { "auto", "required", "off" };
	json_writer w;

	GUARD(sandbox_profile_validate(p));
	json_init(&w, out);
	json_obj_begin(&w);
	json_kv_cstr(&w, "name", p->name);
	json_kv_u64(&w, "namespaces", p->namespaces);
	json_kv_bool(&w, "usr_merged", p->usr_merged);
	json_key(&w, "binds");
	json_arr_begin(&w);
	for (size_t i = 0; i < p->n_binds; i++) {
		json_obj_begin(&w);
		json_kv_cstr(&w, "src", p->binds[i].src);
		json_kv_cstr(&w, "dst", p->binds[i].dst ? p->binds[i].dst : p->binds[i].src);
		json_kv_bool(&w, "writable", p->binds[i].writable);
		json_kv_bool(&w, "optional", p->binds[i].optional);
		json_obj_end(&w);
	}
	json_arr_end(&w);
	json_kv_cstr(&w, "scratch_dir", p->scratch_dir);
	json_kv_cstr(&w, "scratch_target", p->scratch_target ? p->scratch_target : "/tmp");
	json_kv_cstr(&w, "workdir", p->workdir);
	json_kv_bool(&w, "sys_ro", p->sys_ro);
	json_strs(&w, "devices", p->devices, p->n_devices);
	json_kv_cstr(&w, "gpu", gpu[p->gpu]);
	json_kv_cstr(&w, "device_root", p->device_root ? p->device_root : "/dev");
	json_kv_cstr(&w, "sys_root", p->sys_root ? p->sys_root : "/sys");
	json_kv_u64(&w, "uid", p->uid);
	json_kv_u64(&w, "gid", p->gid);
	json_kv_u64(&w, "outside_uid", p->outside_uid);
	json_kv_u64(&w, "outside_gid", p->outside_gid);
	json_kv_cstr(&w, "seccomp", sc[p->seccomp]);
	json_strs(&w, "syscalls", p->syscalls, p->n_syscalls);
	json_strs(&w, "deny_syscalls", p->deny_syscalls, p->n_deny_syscalls);
	json_kv_bool(&w, "seccomp_kill_on_violation", p->seccomp_kill_on_violation);
	json_kv_bool(&w, "landlock", p->landlock);
	json_kv_bool(&w, "landlock_required", p->landlock_required);
	json_kv_bool(&w, "restrict_tcp", p->restrict_tcp);
	json_ports(&w, "tcp_bind", p->tcp_bind, p->n_tcp_bind);
	json_ports(&w, "tcp_connect", p->tcp_connect, p->n_tcp_connect);
	json_key(&w, "limits");
	json_obj_begin(&w);
	json_kv_u64(&w, "memory", p->limits.memory_bytes);
	json_kv_u64(&w, "swap", p->limits.swap_bytes);
	json_kv_u64(&w, "pids", p->limits.pids);
	json_kv_u64(&w, "cpu_millis", p->limits.cpu_millis);
	json_kv_u64(&w, "nofile", p->limits.nofile);
	json_kv_u64(&w, "fsize", p->limits.fsize_bytes);
	json_kv_u64(&w, "scratch", p->limits.scratch_bytes);
	json_obj_end(&w);
	json_kv_cstr(&w, "cgroup", cg[p->cgroup]);
	json_strs(&w, "env_allow", p->env_allow, p->n_env_allow);
	json_strs(&w, "env_set", p->env_set, p->n_env_set);
	json_obj_end(&w);
	return json_finish(&w);
}

custos_err sandbox_profile_hash(const sandbox_profile *p, char out[65])
{
	buf b;
	unsigned char md[32];
	unsigned int mdlen = 0;
	custos_err e;

	buf_init(&b, 1u << 20);
	e = sandbox_profile_json(p, &b);
	if (e == CUSTOS_OK &&
	    EVP_Digest(buf_ptr(&b), buf_used(&b), md, &mdlen, EVP_sha256(), NULL) != 1)
		e = err_set(CUSTOS_ERR_CRYPTO, "sandbox profile: SHA-256 failed");
	buf_free(&b);
	GUARD(e);
	num_hex(md, 32, out);
	return CUSTOS_OK;
}

const char *sandbox_event_kind_name(sandbox_event_kind k)
{
	static const char *const names[] = { "start",   "exit", "stop",  "restart",
		                             "give_up", "oom",  "limit", "violation" };
	if ((unsigned)k < CUSTOS_ARRAY_LEN(names))
		return names[k];
	return "unknown";
}

custos_err sandbox_event_json(const sandbox_event *ev, buf *out)
{
	json_writer w;
	char ts[TM_RFC3339_LEN];

	json_init(&w, out);
	json_obj_begin(&w);
	json_kv_cstr(&w, "event", sandbox_event_kind_name(ev->kind));
	json_kv_cstr(&w, "time", tm_rfc3339(ev->wall_ns, ts));
	json_kv_cstr(&w, "sandbox", ev->name);
	json_kv_cstr(&w, "profile_sha256", ev->profile_hash);
	json_kv_u64(&w, "generation", ev->generation);
	json_kv_i64(&w, "pid", ev->pid);
	switch (ev->kind) {
	case SANDBOX_EV_EXIT:
		json_kv_i64(&w, "exit_code", ev->exit_code);
		json_kv_i64(&w, "signal", ev->signal);
		break;
	case SANDBOX_EV_VIOLATION:
		json_kv_cstr(&w, "syscall", ev->syscall);
		json_kv_i64(&w, "syscall_nr", ev->syscall_nr);
		json_kv_cstr(&w, "action", ev->killed ? "kill" : "eperm");
		json_kv_u64(&w, "count", ev->count ? ev->count : 1);
		break;
	case SANDBOX_EV_OOM:
	case SANDBOX_EV_LIMIT:
		json_kv_cstr(&w, "limit", ev->limit);
		json_kv_u64(&w, "count", ev->count);
		break;
	case SANDBOX_EV_RESTART:
		json_kv_u64(&w, "backoff_ms", ev->backoff_ms);
		break;
	default:
		break;
	}
	if (ev->detail)
		json_kv_cstr(&w, "detail", ev->detail);
	json_obj_end(&w);
	return json_finish(&w);
}
