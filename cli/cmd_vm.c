/*
 * custos vm run: starts one model-server VM through libvirt, refuses to route anything until
 * its QEMU process is seen under a seccomp filter, then bridges host TCP connections to the
 * guest's model port over the multiplexed channel, and the guest's egress streams to a host
 * address (custos' egress listener). The wiring `custos up` does for isolation: vm routes,
 * usable on its own for tests, benchmarks and operators checking a guest image.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "custos/vm.h"

static volatile sig_atomic_t vm_quit;
static void vm_on_signal(int sig)
{
	(void)sig;
	vm_quit = 1;
}

static void bridge(int a, int b)
{
	int *fds = malloc(2 * sizeof(int));
	pthread_t t;
	if (!fds) {
		close(a);
		close(b);
		return;
	}
	fds[0] = a;
	fds[1] = b;
	if (pthread_create(&t, NULL, file_bridge_thread, fds) != 0) {
		free(fds);
		close(a);
		close(b);
		return;
	}
	pthread_detach(t);
}

static custos_err parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	ENSURE(colon && colon != s, CUSTOS_ERR_INVAL, "expected HOST:PORT, not %s", s);
	char host[256];
	size_t hl = (size_t)(colon - s);
	if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	ENSURE(hl < sizeof(host), CUSTOS_ERR_LIMIT, "host too long in %s", s);
	memcpy(host, s, hl);
	host[hl] = '\0';
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	ENSURE(rc == 0, CUSTOS_ERR_INVAL, "bad address %s: %s", s, gai_strerror(rc));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return CUSTOS_OK;
}

struct egress_ctx {
	struct sockaddr_storage to;
	socklen_t to_len;
	bool set;
};

/* Warnings a guest can cause (one per stream it opens) go through a token bucket, the limits
 * of a sandboxed model server's output under `custos up`: 100 a second, burst 1000; the rest
 * is counted, and the count logged once under the limit again (the main loop checks every
 * 200 ms), at the latest every 10 s. */
#define VM_RUN_WARN_RATE     100u
#define VM_RUN_WARN_BURST    1000u
#define VM_RUN_WARN_REPORT_S 10u
/* The egress connect's bound: --egress-to is local (custos' egress listener). */
#define VM_RUN_EGRESS_CONNECT_S 5u

static pthread_mutex_t guest_warn_lock = PTHREAD_MUTEX_INITIALIZER;
static log_rate guest_warn_rate;

static bool guest_warn_ok(void)
{
	pthread_mutex_lock(&guest_warn_lock);
	bool ok = log_rate_take(&guest_warn_rate, tm_mono_ns());
	pthread_mutex_unlock(&guest_warn_lock);
	return ok;
}

static void guest_warn_report(void)
{
	pthread_mutex_lock(&guest_warn_lock);
	uint64_t n = log_rate_report(&guest_warn_rate, tm_mono_ns());
	pthread_mutex_unlock(&guest_warn_lock);
	if (n)
		log_warn("vm: %llu warnings about the guest's streams dropped: more than %u a "
		         "second (burst %u)",
		         (unsigned long long)n, VM_RUN_WARN_RATE, VM_RUN_WARN_BURST);
}

struct egress_job {
	int fd; /* the guest's stream */
	const struct egress_ctx *e;
};

/* Connects to --egress-to (bounded by VM_RUN_EGRESS_CONNECT_S) and bridges the stream to it,
 * on a thread of its own: the channel thread, which serves every stream of the VM, never
 * waits for a connect. */
static void *egress_thread(void *arg)
{
	struct egress_job *j = arg;
	int fd = j->fd;
	const struct egress_ctx *e = j->e;
	free(j);
	int s = socket(e->to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s == -1 || file_connect_timeout(s, &e->to, e->to_len,
	                                    VM_RUN_EGRESS_CONNECT_S * 1000000000ull) != CUSTOS_OK) {
		if (s == -1)
			err_sys("socket");
		if (guest_warn_ok())
			log_warn("vm: egress listener unreachable: %s", err_msg());
		if (s != -1)
			close(s);
		close(fd);
		return NULL;
	}
	int *fds = malloc(2 * sizeof(int));
	if (!fds) {
		close(fd);
		close(s);
		return NULL;
	}
	fds[0] = fd;
	fds[1] = s;
	return file_bridge_thread(fds);
}

/* A guest-opened stream: egress goes to custos' egress listener; anything else is refused. */
static void on_guest_stream(void *arg, uint16_t port, int fd)
{
	struct egress_ctx *e = arg;
	if (port != 0 || !e->set) {
		if (guest_warn_ok())
			log_warn("vm: guest opened a stream to service %u: refused", port);
		close(fd);
		return;
	}
	struct egress_job *j = malloc(sizeof(*j));
	pthread_t t;
	if (!j) {
		close(fd);
		return;
	}
	j->fd = fd;
	j->e = e;
	if (pthread_create(&t, NULL, egress_thread, j) != 0) {
		free(j);
		close(fd);
		return;
	}
	pthread_detach(t);
}

static FILE *events_file;
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static void on_vm_event(void *arg, const char *domain, vm_event_kind kind, const char *detail)
{
	(void)arg;
	if (!events_file)
		return;
	buf b;
	buf_init(&b, 4096);
	json_writer w;
	json_init(&w, &b);
	char ts[TM_RFC3339_LEN];
	json_obj_begin(&w);
	json_kv_cstr(&w, "time", tm_rfc3339(tm_wall_ns(), ts));
	json_kv_cstr(&w, "event", "vm.lifecycle");
	json_kv_cstr(&w, "vm", domain);
	json_kv_cstr(&w, "action", vm_event_name(kind));
	json_kv_cstr(&w, "detail", detail);
	json_obj_end(&w);
	if (json_finish(&w) == CUSTOS_OK) {
		pthread_mutex_lock(&events_lock);
		fprintf(events_file, "%.*s\n", (int)buf_used(&b), (const char *)buf_ptr(&b));
		fflush(events_file);
		pthread_mutex_unlock(&events_lock);
	}
	buf_free(&b);
}

static int vm_usage_error(const char *msg)
{
	return cli_usage_error("vm", "run", "%s", msg);
}

/* A number option out of its range or not a number: its name, the value and why. */
static int vm_bad_number(const char *opt, const char *v)
{
	char why[300];
	snprintf(why, sizeof(why), "%s %s: %s", opt, v, err_msg());
	return vm_usage_error(why);
}

/* Waits for the pidfile and the seccomp filter; QEMU installs it before running the guest,
 * so a short wait covers libvirt writing the pidfile. */
custos_err cli_vm_check_seccomp(const char *run_dir, const char *name, uint64_t timeout_ns)
{
	uint64_t deadline = tm_mono_ns() + timeout_ns;
	custos_err e;
	for (;;) {
		pid_t pid = 0;
		e = vm_qemu_pid(run_dir, name, &pid);
		if (e == CUSTOS_OK)
			e = vm_qemu_verify(NULL, pid, name);
		if (e == CUSTOS_OK) {
			e = vm_seccomp_check(NULL, pid);
			if (e == CUSTOS_OK) {
				log_info("vm %s: QEMU pid %d runs under a seccomp filter", name,
				         (int)pid);
				return CUSTOS_OK;
			}
		}
		if (tm_mono_ns() >= deadline)
			return e;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* --config FILE --model ID: the VM `custos up` starts first for that model (domain
 * custos-<id>, its channel socket and console log), mapped by vm_profile_from_config, the
 * mapping `up` uses. p's strings point into *cfg and chan (the caller keeps both). */
struct vm_from_cfg {
	custos_config *cfg;
	const cfg_model *m;
	char name[VM_NAME_MAX + 1];
	char chan[108];
	int pin[VM_MAX_VCPUS];
	vm_chan_kind kind;
};

static custos_err vm_run_from_config(const char *path, const char *id, struct vm_from_cfg *c,
                                     vm_profile *p)
{
	diag_list d;
	diag_init(&d);
	custos_err e = config_load(path, &c->cfg, &d);
	cli_diag_print(&d);
	diag_free(&d);
	ENSURE(e == CUSTOS_OK, e, "%s: not a valid configuration", path);
	c->m = config_find_model(c->cfg, id);
	ENSURE(c->m && c->m->sandbox.type == CFG_SANDBOX_VM, CUSTOS_ERR_INVAL,
	       "%s: no model '%s' with sandbox.type: vm", path, id);
	const cfg_profile *pr = &c->cfg->profiles[c->m->sandbox.profile_index];
	int r = snprintf(c->name, sizeof(c->name), CFG_VM_DOMAIN_PREFIX "%s", c->m->id);
	ENSURE(r > 0 && (size_t)r < sizeof(c->name), CUSTOS_ERR_LIMIT,
	       "model %s: id too long for a domain name", c->m->id);
	GUARD(vm_config_chan_socket(c->m->id, pr, c->chan, sizeof(c->chan)));
	if (pr->vm.channel == CFG_VM_AUTO) {
		c->kind = vm_channel_auto(NULL);
		log_info("vm: model %s: channel auto -> %s", c->m->id, vm_chan_kind_name(c->kind));
	} else {
		c->kind = pr->vm.channel == CFG_VM_VSOCK ? VM_CHAN_VSOCK : VM_CHAN_VIRTIO_SERIAL;
	}
	vm_config_vm inst = { .name = c->name,
		              .chan = c->kind,
		              .chan_path = c->chan,
		              .console_log = pr->vm.console_log };
	return vm_profile_from_config(c->m, pr, &inst, c->pin, p);
}

static int vm_run_usage_cfg(struct vm_from_cfg *fc, const char *msg)
{
	int rc = vm_usage_error(msg);
	config_free(fc->cfg);
	fc->cfg = NULL;
	return rc;
}

int cmd_vm_run(int argc, char **argv)
{
	vm_profile p = { .vcpus = 1, .memory_mib = 256, .boot = VM_BOOT_KERNEL };
	const char *uri = "qemu:///system", *run_dir = NULL, *forward = NULL, *egress = NULL;
	const char *ready_file = NULL, *events_path = NULL;
	const char *config = NULL, *model_id = NULL, *profile_flag = NULL;
	uint64_t timeout_s = 60;
	bool timeout_set = false, print_xml = false;
	bool use_vsock = false;
	unsigned vsock_want = 0;
	static const struct option opts[] = {
		{ "uri", required_argument, NULL, 'u' },
		{ "name", required_argument, NULL, 'n' },
		{ "type", required_argument, NULL, 't' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "memory-mib", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, 'v' },
		{ "channel", required_argument, NULL, 'C' },
		{ "vsock-cid", required_argument, NULL, 'V' },
		{ "console-log", required_argument, NULL, 'l' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "forward", required_argument, NULL, 'f' },
		{ "egress-to", required_argument, NULL, 'e' },
		{ "ready-file", required_argument, NULL, 'R' },
		{ "events", required_argument, NULL, 'E' },
		{ "timeout-s", required_argument, NULL, 'T' },
		{ "config", required_argument, NULL, 'F' },
		{ "model", required_argument, NULL, 'M' },
		{ "print-xml", no_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	int c, li = 0;
	uint64_t v;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":", opts, &li)) != -1) {
		/* The VM's own settings: from the command line, or all from --config. */
		if (c > 0 && strchr("untkicmvCVl", c))
			profile_flag = opts[li].name;
		switch (c) {
		case 'u':
			uri = optarg;
			break;
		case 'n':
			p.name = optarg;
			break;
		case 't':
			p.domain_type = optarg;
			break;
		case 'k':
			p.kernel = optarg;
			break;
		case 'i':
			p.initrd = optarg;
			break;
		case 'c':
			p.cmdline = optarg;
			break;
		case 'm':
			if (num_parse_u64(span_cstr(optarg), 16, VM_MAX_MEM_MIB, &v) != CUSTOS_OK)
				return vm_bad_number("--memory-mib", optarg);
			p.memory_mib = v;
			break;
		case 'v':
			if (num_parse_u64(span_cstr(optarg), 1, VM_MAX_VCPUS, &v) != CUSTOS_OK)
				return vm_bad_number("--vcpus", optarg);
			p.vcpus = (unsigned)v;
			break;
		case 'C':
			p.channel_paths[0] = optarg;
			p.channel_names[0] = VM_CHANNEL_NAME;
			p.n_channels = 1;
			break;
		case 'V': /* N, or auto: the lowest free CID (vm_vsock_cid_reserve) */
			use_vsock = true;
			if (strcmp(optarg, "auto") == 0)
				vsock_want = 0;
			else if (num_parse_u64(span_cstr(optarg), VM_VSOCK_CID_MIN,
			                       VM_VSOCK_CID_MAX, &v) == CUSTOS_OK)
				vsock_want = (unsigned)v;
			else
				return vm_usage_error("bad --vsock-cid (3-4294967294 or auto)");
			break;
		case 'l':
			p.console_log = optarg;
			break;
		case 'r':
			run_dir = optarg;
			break;
		case 'f':
			forward = optarg;
			break;
		case 'e':
			egress = optarg;
			break;
		case 'R':
			ready_file = optarg;
			break;
		case 'E':
			events_path = optarg;
			break;
		case 'T':
			if (num_parse_u64(span_cstr(optarg), 1, 3600, &timeout_s) != CUSTOS_OK)
				return vm_bad_number("--timeout-s", optarg);
			timeout_set = true;
			break;
		case 'F':
			config = optarg;
			break;
		case 'M':
			model_id = optarg;
			break;
		case 'P':
			print_xml = true;
			break;
		default: {
			char why[256];
			cli_getopt_problem(c, argv, why, sizeof(why));
			return vm_usage_error(why);
		}
		}
	}
	if (optind < argc) { /* vm run takes options only: a stray word is a mistake */
		char why[300];
		snprintf(why, sizeof(why), "unexpected argument '%s'", argv[optind]);
		return vm_usage_error(why);
	}
	static struct vm_from_cfg fc; /* p's strings point into it until the end */
	uint64_t backoff_min_ns = 0, backoff_max_ns = 0;
	unsigned max_restarts = 0; /* vm_host's default */
	uint16_t cfg_port = 0;
	if (config || model_id) {
		if (!config || !model_id)
			return vm_usage_error("--config and --model go together");
		if (profile_flag) {
			char msg[160];
			snprintf(msg, sizeof(msg),
			         "--%s: with --config the VM's settings are the model's profile's",
			         profile_flag);
			return vm_usage_error(msg);
		}
		if (vm_run_from_config(config, model_id, &fc, &p) != CUSTOS_OK) {
			cli_say("custos vm run: %s", err_msg());
			config_free(fc.cfg);
			return CLI_FAIL;
		}
		const cfg_profile *pr = &fc.cfg->profiles[fc.m->sandbox.profile_index];
		uri = pr->vm.libvirt_uri ? pr->vm.libvirt_uri : uri;
		use_vsock = fc.kind == VM_CHAN_VSOCK;
		vsock_want = pr->vm.vsock_cid;
		/* As `custos up`: its restart backoff without a limit, its start timeout. */
		backoff_min_ns = fc.m->sandbox.restart_initial_ns;
		backoff_max_ns = fc.m->sandbox.restart_max_ns;
		max_restarts = UINT32_MAX;
		if (!timeout_set)
			timeout_s = (fc.m->sandbox.health.start_timeout_ns + 999999999ull) /
			            1000000000ull;
		cfg_port = fc.m->sandbox.port;
	} else if (!p.name || !p.kernel || (p.n_channels == 0) == !use_vsock) {
		return vm_usage_error("--name, --kernel and one of --channel or --vsock-cid (or "
		                      "--config and --model) are required");
	}

	/* --forward HOST:PORT=GUESTPORT (with --config, =GUESTPORT defaults to sandbox.port) */
	struct sockaddr_storage fwd_addr;
	socklen_t fwd_len = 0;
	uint64_t guest_port = cfg_port;
	if (forward) {
		const char *eq = strrchr(forward, '=');
		if (eq ? num_parse_u64(span_cstr(eq + 1), 1, 65535, &guest_port) != CUSTOS_OK
		       : cfg_port == 0)
			return vm_run_usage_cfg(&fc, "--forward wants HOST:PORT=GUESTPORT");
		if (!eq)
			eq = forward + strlen(forward);
		char *hp = xstrndup(forward, (size_t)(eq - forward));
		custos_err e = parse_hostport(hp, &fwd_addr, &fwd_len);
		free(hp);
		if (e != CUSTOS_OK)
			return vm_run_usage_cfg(&fc, err_msg());
	}
	static struct egress_ctx ectx;
	if (egress) {
		if (parse_hostport(egress, &ectx.to, &ectx.to_len) != CUSTOS_OK)
			return vm_run_usage_cfg(&fc, err_msg());
		ectx.set = true;
	}
	if (events_path) {
		events_file = fopen(events_path, "ae");
		if (!events_file) {
			cli_say("custos vm run: %s: %s", events_path, strerror(errno));
			config_free(fc.cfg);
			return CLI_FAIL;
		}
	}

	log_rate_init(&guest_warn_rate, VM_RUN_WARN_RATE, VM_RUN_WARN_BURST,
	              VM_RUN_WARN_REPORT_S * 1000000000ull, tm_mono_ns());
	struct sigaction sa = { .sa_handler = vm_on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int rc = CLI_FAIL;
	int lfd = -1;
	vm_host *h = NULL;
	vm *m = NULL;
	vm_channel *ch = NULL;
	vm_host_opts ho = { .uri = uri,
		            .on_event = on_vm_event,
		            .backoff_min_ns = backoff_min_ns,
		            .backoff_max_ns = backoff_max_ns,
		            .max_restarts = max_restarts };
	uint64_t t0 = tm_mono_ns();
	if (vm_host_open(&ho, &h) != CUSTOS_OK ||
	    (use_vsock && vm_vsock_cid_reserve(h, vsock_want, NULL, &p.vsock_cid) != CUSTOS_OK)) {
		cli_say("custos vm run: %s", err_msg());
		goto out;
	}
	if (print_xml) { /* the domain it would start, then nothing started */
		buf b;
		buf_init(&b, VM_XML_MAX);
		custos_err xe = vm_domain_xml(&p, &b);
		if (xe == CUSTOS_OK)
			fwrite(buf_ptr(&b), 1, buf_used(&b), stdout);
		else
			cli_say("custos vm run: %s", err_msg());
		buf_free(&b);
		rc = xe == CUSTOS_OK ? CLI_OK : CLI_FAIL;
		goto out;
	}
	if (vm_start(h, &p, &m) != CUSTOS_OK) {
		cli_say("custos vm run: %s", err_msg());
		goto out;
	}
	char hash[65];
	if (vm_profile_hash(&p, hash) == CUSTOS_OK) /* as `custos up` audits it */
		log_info("vm %s: profile_sha256 %s", p.name, hash);
	/* Fail closed: no traffic to a QEMU that is not under seccomp. */
	if (cli_vm_check_seccomp(run_dir, p.name, (config ? timeout_s : 10) * 1000000000ull) !=
	    CUSTOS_OK) {
		cli_say("custos vm run: refusing to route to %s: %s", p.name, err_msg());
		goto out;
	}
	if (use_vsock)
		log_info("vm %s: vsock guest CID %u", p.name, p.vsock_cid);
	vm_channel_opts co = { .path = p.channel_paths[0],
		               .vsock_cid = p.n_channels ? 0 : p.vsock_cid,
		               .connect_timeout_ns = timeout_s * 1000000000ull,
		               .on_accept = on_guest_stream,
		               .accept_arg = &ectx };
	if (vm_channel_open(&co, &ch) != CUSTOS_OK) {
		cli_say("custos vm run: %s", err_msg());
		goto out;
	}
	if (forward) {
		lfd = socket(fwd_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1;
		if (lfd == -1 ||
		    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
		    bind(lfd, (struct sockaddr *)&fwd_addr, fwd_len) == -1 ||
		    listen(lfd, 512) == -1) {
			cli_say("custos vm run: --forward %s: %s", forward, strerror(errno));
			goto out;
		}
	}
	log_info("vm %s: started, channel up, seccomp checked (%.1f s)", p.name,
	         (double)(tm_mono_ns() - t0) / 1e9);
	if (ready_file) {
		char txt[64];
		int n = snprintf(txt, sizeof(txt), "%d\n", (int)getpid());
		if (file_write_atomic(ready_file, txt, (size_t)n, 0644) != CUSTOS_OK) {
			cli_say("custos vm run: %s", err_msg());
			goto out;
		}
	}
	while (!vm_quit) {
		if (!vm_channel_alive(ch)) {
			/* The guest went away (QEMU crashed; libvirt events drive the restart).
			 * Nothing is routed until the new QEMU passes the seccomp check again. */
			vm_channel_close(ch);
			ch = NULL;
			log_warn("vm %s: channel down; waiting for the VM to come back", p.name);
			if (cli_vm_check_seccomp(run_dir, p.name, timeout_s * 1000000000ull) !=
			            CUSTOS_OK ||
			    vm_channel_open(&co, &ch) != CUSTOS_OK) {
				cli_say("custos vm run: %s did not come back: %s", p.name,
				        err_msg());
				break;
			}
			log_info("vm %s: channel up again, seccomp checked", p.name);
		}
		guest_warn_report();
		struct pollfd pf = { .fd = lfd, .events = POLLIN };
		int pr = poll(&pf, 1, 200);
		if (pr <= 0 || lfd < 0)
			continue;
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd == -1)
			continue;
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		int sfd = -1;
		if (vm_channel_open_stream(ch, (uint16_t)guest_port, &sfd) != CUSTOS_OK) {
			log_warn("vm %s: %s", p.name, err_msg());
			close(cfd);
			continue;
		}
		bridge(cfd, sfd);
	}
	rc = vm_quit ? CLI_OK : CLI_FAIL;
out:
	if (lfd >= 0)
		close(lfd);
	vm_channel_close(ch);
	if (m && vm_stop(h, m) != CUSTOS_OK)
		cli_say("custos vm run: %s", err_msg());
	vm_host_close(h);
	vm_vsock_cid_release(p.vsock_cid);
	if (events_file)
		fclose(events_file);
	config_free(fc.cfg);
	fc.cfg = NULL;
	return rc;
}
