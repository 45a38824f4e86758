/*
 * Unit tests of the VM sandbox backend: domain XML from a profile (escaping, no network
 * interface, every optional device), profile checks, PCI address parsing, the lifecycle on
 * libvirt's test driver (test:///default: transient domains, events, crash -> restart with
 * backoff -> give up) and the QEMU seccomp check (pidfile, /proc status, a real filtered child).
 * vsock: the domain XML through the test driver, guest CID reservation without collisions,
 * `channel: auto`, and a vsock channel that cannot connect (this machine has no vhost-vsock).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "custos/vm.h"

static vm_profile base_profile(void)
{
	vm_profile p = {
		.name = "model-a",
		.vcpus = 2,
		.memory_mib = 256,
		.boot = VM_BOOT_KERNEL,
		.kernel = "/var/lib/custos/vm/vmlinuz",
		.initrd = "/var/lib/custos/vm/initrd.img",
		.cmdline = "console=ttyS0 quiet",
		.console_log = "/var/log/custos/vm-model-a.log",
		.n_channels = 1,
	};
	p.channel_paths[0] = "/run/custos/vm-model-a.sock";
	p.channel_names[0] = "org.custos.mux.0";
	return p;
}

static char *xml_of(const vm_profile *p)
{
	buf b;
	buf_init(&b, VM_XML_MAX);
	custos_err e = vm_domain_xml(p, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return NULL;
	}
	/* buf_cstr + xstrdup, not span_dup: span_dup's strndup over an unterminated buffer trips
	 * ASan's strict_string_checks (the ctest setting). */
	const char *cs = NULL;
	char *s = buf_cstr(&b, &cs) == CUSTOS_OK ? xstrdup(cs) : NULL;
	buf_free(&b);
	return s;
}

static void test_xml_kernel_boot(void **state)
{
	(void)state;
	vm_profile p = base_profile();
	char *x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<domain type='qemu'>"));
	assert_non_null(strstr(x, "<name>model-a</name>"));
	assert_non_null(strstr(x, "<memory unit='MiB'>256</memory>"));
	assert_non_null(strstr(x, "<vcpu placement='static'>2</vcpu>"));
	assert_non_null(strstr(x, "<kernel>/var/lib/custos/vm/vmlinuz</kernel>"));
	assert_non_null(strstr(x, "<cmdline>console=ttyS0 quiet</cmdline>"));
	assert_non_null(strstr(x, "<serial type='file'>"));
	assert_non_null(strstr(x, "<source path='/var/log/custos/vm-model-a.log'/>"));
	assert_non_null(strstr(x, "<channel type='unix'>"));
	assert_non_null(strstr(x, "name='org.custos.mux.0'"));
	assert_non_null(strstr(x, "<on_crash>destroy</on_crash>"));
	assert_non_null(strstr(x, "<controller type='usb' model='none'/>"));
	assert_non_null(strstr(x, "<memballoon model='none'/>"));
	assert_null(strstr(x, "<interface"));
	assert_null(strstr(x, "<disk"));
	assert_null(strstr(x, "<hostdev"));
	assert_null(strstr(x, "hugepages"));
	free(x);
}

static void test_xml_all_options(void **state)
{
	(void)state;
	vm_profile p = base_profile();
	static const int pins[2] = { 4, 5 };
	p.domain_type = "kvm";
	p.emulator = "/usr/bin/qemu-system-x86_64";
	p.hugepages = true;
	p.cpu_pin = pins;
	p.boot = VM_BOOT_DISK;
	p.disk_overlay = "/var/lib/custos/vm/model-a.overlay.qcow2";
	p.vsock_cid = 42;
	p.n_hostdevs = 1;
	assert_int_equal(vm_pci_parse(SPAN_LIT("0000:65:00.0"), &p.hostdevs[0]), CUSTOS_OK);
	p.seclabel_user = "+64055:+64055";
	char *x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<domain type='kvm'>"));
	assert_non_null(strstr(x, "<memoryBacking><hugepages/></memoryBacking>"));
	assert_non_null(strstr(x, "<vcpupin vcpu='0' cpuset='4'/>"));
	assert_non_null(strstr(x, "<vcpupin vcpu='1' cpuset='5'/>"));
	assert_non_null(strstr(x, "<boot dev='hd'/>"));
	assert_null(strstr(x, "<kernel>"));
	assert_non_null(strstr(x, "<driver name='qemu' type='qcow2'/>"));
	assert_non_null(strstr(x, "<source file='/var/lib/custos/vm/model-a.overlay.qcow2'/>"));
	assert_non_null(strstr(x, "<cid auto='no' address='42'/>"));
	assert_non_null(strstr(x, "<hostdev mode='subsystem' type='pci' managed='yes'>"));
	assert_non_null(
	        strstr(x, "<address domain='0x0000' bus='0x65' slot='0x00' function='0x0'/>"));
	assert_non_null(strstr(x, "<label>+64055:+64055</label>"));
	assert_non_null(strstr(x, "<emulator>/usr/bin/qemu-system-x86_64</emulator>"));
	assert_null(strstr(x, "<interface"));
	assert_null(strstr(x, "<transient/>"));
	free(x);

	/* Base image only: libvirt's own throwaway overlay. */
	p.disk_overlay = NULL;
	p.disk_base = "/var/lib/custos/vm/base.qcow2";
	x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<source file='/var/lib/custos/vm/base.qcow2'/>"));
	assert_non_null(strstr(x, "<transient/>"));
	free(x);
}

static void test_xml_escaping(void **state)
{
	(void)state;
	vm_profile p = base_profile();
	p.cmdline = "a<b>&'\"</cmdline><interface type='network'/>";
	p.console_log = "/tmp/it's <here>.log";
	char *x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x,
	                       "<cmdline>a&lt;b&gt;&amp;&apos;&quot;&lt;/cmdline&gt;&lt;interface "
	                       "type=&apos;network&apos;/&gt;</cmdline>"));
	assert_non_null(strstr(x, "<source path='/tmp/it&apos;s &lt;here&gt;.log'/>"));
	assert_null(strstr(x, "<interface"));
	free(x);

	/* Control characters cannot be carried by XML 1.0: refused, not passed through. */
	p = base_profile();
	p.cmdline = "console=ttyS0\x01";
	buf b;
	buf_init(&b, VM_XML_MAX);
	assert_int_equal(vm_domain_xml(&p, &b), CUSTOS_ERR_INVAL);
	buf_free(&b);
}

static void expect_invalid(vm_profile p, const char *what)
{
	custos_err e = vm_profile_check(&p);
	if (e == CUSTOS_OK)
		fail_msg("profile accepted: %s", what);
}

static void test_profile_negative(void **state)
{
	(void)state;
	vm_profile p = base_profile();
	assert_int_equal(vm_profile_check(&p), CUSTOS_OK);
	p.name = "";
	expect_invalid(p, "empty name");
	p = base_profile();
	p.name = "a b";
	expect_invalid(p, "space in name");
	p.name = "../x";
	expect_invalid(p, "path in name");
	p.name = "-x";
	expect_invalid(p, "leading dash");
	p = base_profile();
	p.vcpus = 0;
	expect_invalid(p, "0 vcpus");
	p.vcpus = VM_MAX_VCPUS + 1;
	expect_invalid(p, "too many vcpus");
	p = base_profile();
	p.memory_mib = 8;
	expect_invalid(p, "tiny memory");
	p.memory_mib = (uint64_t)VM_MAX_MEM_MIB + 1;
	expect_invalid(p, "huge memory");
	p = base_profile();
	p.kernel = "vmlinuz";
	expect_invalid(p, "relative kernel");
	p = base_profile();
	p.boot = VM_BOOT_DISK;
	expect_invalid(p, "disk boot without overlay or base");
	p.disk_base = "base.qcow2";
	expect_invalid(p, "relative base");
	p = base_profile();
	p.n_channels = 0;
	expect_invalid(p, "no channel, no vsock");
	p.vsock_cid = 2;
	expect_invalid(p, "host CID");
	p = base_profile();
	p.channel_names[0] = "bad'name";
	expect_invalid(p, "quote in port name");
	p = base_profile();
	p.domain_type = "xen";
	expect_invalid(p, "xen");
	p = base_profile();
	static const int bad_pins[2] = { 0, -1 };
	p.cpu_pin = bad_pins;
	expect_invalid(p, "negative pin");
	p = base_profile();
	p.n_hostdevs = 1;
	p.hostdevs[0] = (vm_pci_addr){ 0, 0x65, 0x20, 0 };
	expect_invalid(p, "slot 0x20");
	p = base_profile();
	p.n_channels = VM_MAX_CHANNELS + 1;
	expect_invalid(p, "too many channels");
}

static void test_pci_parse(void **state)
{
	(void)state;
	vm_pci_addr a;
	assert_int_equal(vm_pci_parse(SPAN_LIT("0000:65:00.0"), &a), CUSTOS_OK);
	assert_int_equal(a.bus, 0x65);
	assert_int_equal(vm_pci_parse(SPAN_LIT("3b:1f.7"), &a), CUSTOS_OK);
	assert_int_equal(a.domain, 0);
	assert_int_equal(a.bus, 0x3b);
	assert_int_equal(a.slot, 0x1f);
	assert_int_equal(a.function, 7);
	const char *bad[] = { "",        "65:00",     "65:00.8",  "65:20.0",       "0000:100:00.0",
		              "x5:00.0", "0:0:0:0.0", "65:00.00", "10000:65:00.0", ":00.0" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		if (vm_pci_parse(span_cstr(bad[i]), &a) == CUSTOS_OK)
			fail_msg("accepted PCI address '%s'", bad[i]);
	}
}

/* ---- lifecycle on test:///default ------------------------------------------------------- */

#define MAX_EVENTS 64
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	vm_event_kind kinds[MAX_EVENTS];
	size_t n;
} events = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0 };

static void on_event(void *arg, const char *domain, vm_event_kind kind, const char *detail)
{
	(void)arg;
	(void)domain;
	(void)detail;
	pthread_mutex_lock(&events.lock);
	if (events.n < MAX_EVENTS)
		events.kinds[events.n++] = kind;
	pthread_cond_broadcast(&events.cond);
	pthread_mutex_unlock(&events.lock);
}

static void events_reset(void)
{
	pthread_mutex_lock(&events.lock);
	events.n = 0;
	pthread_mutex_unlock(&events.lock);
}

static size_t count_kind(vm_event_kind k)
{
	size_t c = 0;
	for (size_t i = 0; i < events.n; i++)
		c += events.kinds[i] == k;
	return c;
}

/* Waits (at most 10 s: a deadline for a hung event loop, not a timing assertion) until at
 * least `want` events of kind k arrived. */
static bool wait_kind(vm_event_kind k, size_t want)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&events.lock);
	while (count_kind(k) < want) {
		if (pthread_cond_timedwait(&events.cond, &events.lock, &dl) == ETIMEDOUT)
			break;
	}
	bool ok = count_kind(k) >= want;
	pthread_mutex_unlock(&events.lock);
	return ok;
}

static vm_host *open_test_host(unsigned max_restarts)
{
	vm_host_opts o = {
		.uri = "test:///default",
		.on_event = on_event,
		.backoff_min_ns = 10 * 1000 * 1000,
		.backoff_max_ns = 40 * 1000 * 1000,
		.max_restarts = max_restarts,
	};
	vm_host *h = NULL;
	custos_err e = vm_host_open(&o, &h);
	if (e != CUSTOS_OK)
		fail_msg("vm_host_open: %s", err_msg());
	return h;
}

static void test_lifecycle_no_interface(void **state)
{
	(void)state;
	events_reset();
	vm_host *h = open_test_host(3);
	vm_profile p = base_profile();
	p.name = "lc-xml";
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
	assert_true(vm_running(h, v));
	assert_true(wait_kind(VM_EV_STARTED, 1));
	/* What libvirt made of it: still no network interface, no USB, no balloon. */
	virConnectPtr c = virConnectOpen("test:///default");
	assert_non_null(c);
	virDomainPtr d = virDomainLookupByName(c, "lc-xml");
	assert_non_null(d);
	char *x = virDomainGetXMLDesc(d, 0);
	assert_non_null(x);
	assert_null(strstr(x, "<interface"));
	assert_non_null(strstr(x, "<channel type='unix'>"));
	assert_int_equal(virDomainIsPersistent(d), 0); /* transient */
	free(x);
	virDomainFree(d);
	virConnectClose(c);

	/* The same name twice is refused. */
	vm *v2 = NULL;
	assert_int_equal(vm_start(h, &p, &v2), CUSTOS_ERR_EXISTS);

	assert_int_equal(vm_stop(h, v), CUSTOS_OK);
	assert_true(wait_kind(VM_EV_STOPPED, 1));
	assert_int_equal(count_kind(VM_EV_CRASHED), 0);
	assert_int_equal(count_kind(VM_EV_RESTARTING), 0);
	/* Transient: gone from libvirt once destroyed. */
	c = virConnectOpen("test:///default");
	assert_null(virDomainLookupByName(c, "lc-xml"));
	virConnectClose(c);
	vm_host_close(h);
}

static void test_lifecycle_crash_restart(void **state)
{
	(void)state;
	events_reset();
	vm_host *h = open_test_host(2);
	vm_profile p = base_profile();
	p.name = "lc-crash";
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
	assert_true(wait_kind(VM_EV_STARTED, 1));

	vm_inject_crash(h, v);
	assert_true(wait_kind(VM_EV_CRASHED, 1));
	assert_true(wait_kind(VM_EV_RESTARTING, 1));
	assert_true(wait_kind(VM_EV_RESTARTED, 1));
	assert_true(wait_kind(VM_EV_STARTED, 2));
	assert_int_equal(vm_restarts(h, v), 1);
	assert_true(vm_running(h, v));

	vm_inject_crash(h, v);
	assert_true(wait_kind(VM_EV_RESTARTED, 2));
	assert_int_equal(vm_restarts(h, v), 2);

	/* The third crash is over max_restarts: custos gives up and says so. */
	vm_inject_crash(h, v);
	assert_true(wait_kind(VM_EV_GAVE_UP, 1));
	assert_false(vm_running(h, v));
	assert_int_equal(vm_restarts(h, v), 2);
	assert_int_equal(vm_stop(h, v), CUSTOS_OK);
	vm_host_close(h);
}

/* A stop asked for while a restart is due or in progress (the restart thread starts the domain
 * without the host's lock): the domain is gone once vm_stop returns, and no restart follows. */
static void test_lifecycle_stop_during_restart(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		events_reset();
		vm_host *h = open_test_host(5);
		vm_profile p = base_profile();
		p.name = "lc-stop";
		vm *v = NULL;
		assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
		assert_true(wait_kind(VM_EV_STARTED, 1));
		vm_inject_crash(h, v);
		assert_true(wait_kind(VM_EV_RESTARTING, 1));
		if (round % 2)
			(void)wait_kind(VM_EV_RESTARTED, 1); /* a stop after the restart, too */
		assert_int_equal(vm_stop(h, v), CUSTOS_OK);
		unsigned restarted = (unsigned)count_kind(VM_EV_RESTARTED);
		virConnectPtr c = virConnectOpen("test:///default");
		assert_non_null(c);
		virDomainPtr d = virDomainLookupByName(c, "lc-stop");
		if (d)
			virDomainFree(d);
		virConnectClose(c);
		assert_null(d);
		/* the backoff (10 ms) is long past: a restart left scheduled would show now */
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		assert_int_equal(count_kind(VM_EV_RESTARTED), restarted);
		vm_host_close(h);
	}
}

static void test_lifecycle_negative(void **state)
{
	(void)state;
	vm_host_opts o = { .uri = "bogus:///nowhere" };
	vm_host *h = NULL;
	assert_int_not_equal(vm_host_open(&o, &h), CUSTOS_OK);
	o.uri = NULL;
	assert_int_equal(vm_host_open(&o, &h), CUSTOS_ERR_INVAL);

	h = open_test_host(1);
	vm_profile p = base_profile();
	p.vcpus = 0;
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_ERR_INVAL);
	vm_host_close(h);
}

/* ---- seccomp check ------------------------------------------------------------------------ */

static char tmpdir[] = "/tmp/test_vm.XXXXXX";

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_seccomp_fake_proc(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	char path[512];
	snprintf(path, sizeof(path), "%s/100", tmpdir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/100/status", tmpdir);
	write_file(path,
	           "Name:\tqemu-system-x86\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n");
	assert_int_equal(vm_seccomp_check(tmpdir, 100), CUSTOS_OK);
	write_file(path, "Name:\tqemu-system-x86\nSeccomp:\t0\n");
	assert_int_equal(vm_seccomp_check(tmpdir, 100), CUSTOS_ERR_DENIED);
	write_file(path, "Name:\tqemu-system-x86\nSeccomp:\t1\n");
	assert_int_equal(vm_seccomp_check(tmpdir, 100), CUSTOS_ERR_DENIED);
	write_file(path, "Name:\tqemu-system-x86\n"); /* kernel without the line: fail closed */
	assert_int_equal(vm_seccomp_check(tmpdir, 100), CUSTOS_ERR_DENIED);
	write_file(path, "Seccomp:\t22\n");
	assert_int_equal(vm_seccomp_check(tmpdir, 100), CUSTOS_ERR_DENIED);
	assert_int_not_equal(vm_seccomp_check(tmpdir, 101), CUSTOS_OK); /* no such pid */

	/* The pid must be libvirt's QEMU for this domain, not whatever reused a stale pid. */
	snprintf(path, sizeof(path), "%s/100/cmdline", tmpdir);
	static const char qemu_cmd[] =
	        "/usr/bin/qemu-system-x86_64\0-name\0guest=vm1,debug-threads="
	        "on\0-S\0";
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fwrite(qemu_cmd, 1, sizeof(qemu_cmd) - 1, f);
	fclose(f);
	assert_int_equal(vm_qemu_verify(tmpdir, 100, "vm1"), CUSTOS_OK);
	assert_int_equal(vm_qemu_verify(tmpdir, 100, "vm"), CUSTOS_ERR_DENIED); /* prefix */
	assert_int_equal(vm_qemu_verify(tmpdir, 100, "vm2"), CUSTOS_ERR_DENIED);
	write_file(path, "/usr/bin/sleep -name guest=vm1,"); /* not NUL-separated */
	assert_int_equal(vm_qemu_verify(tmpdir, 100, "vm1"), CUSTOS_ERR_DENIED);
	assert_int_not_equal(vm_qemu_verify(tmpdir, 101, "vm1"), CUSTOS_OK);
	unlink(path);

	/* pidfile */
	pid_t pid = 0;
	snprintf(path, sizeof(path), "%s/vm1.pid", tmpdir);
	char txt[32];
	snprintf(txt, sizeof(txt), "%d\n", (int)getpid());
	write_file(path, txt);
	assert_int_equal(vm_qemu_pid(tmpdir, "vm1", &pid), CUSTOS_OK);
	assert_int_equal(pid, getpid());
	write_file(path, "12x\n");
	assert_int_not_equal(vm_qemu_pid(tmpdir, "vm1", &pid), CUSTOS_OK);
	write_file(path, "");
	assert_int_not_equal(vm_qemu_pid(tmpdir, "vm1", &pid), CUSTOS_OK);
	write_file(path, "1073741823\n"); /* no such process */
	assert_int_equal(vm_qemu_pid(tmpdir, "vm1", &pid), CUSTOS_ERR_NOTFOUND);
	assert_int_not_equal(vm_qemu_pid(tmpdir, "missing", &pid), CUSTOS_OK);
	unlink(path);
	snprintf(path, sizeof(path), "%s/100/status", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/100", tmpdir);
	rmdir(path);
	rmdir(tmpdir);
}

static void test_seccomp_real_process(void **state)
{
	(void)state;
	/* This test process has no filter: refused. */
	assert_int_equal(vm_seccomp_check(NULL, getpid()), CUSTOS_ERR_DENIED);
	/* A child under a (permissive) seccomp filter: accepted. */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		close(pfd[0]);
		scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
		if (!ctx || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(swapon), 0) != 0 ||
		    seccomp_load(ctx) != 0)
			_exit(1);
		if (write(pfd[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	char c;
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	assert_int_equal(vm_seccomp_check(NULL, child), CUSTOS_OK);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

/* ---- vsock -------------------------------------------------------------------------------- */

/* A vsock-only profile (what `custos up` makes for channel: vsock). */
static vm_profile vsock_profile(const char *name, unsigned cid)
{
	vm_profile p = base_profile();
	p.name = name;
	p.n_channels = 0;
	p.channel_paths[0] = p.channel_names[0] = NULL;
	p.vsock_cid = cid;
	return p;
}

static char *live_xml(const char *name)
{
	virConnectPtr c = virConnectOpen("test:///default");
	assert_non_null(c);
	virDomainPtr d = virDomainLookupByName(c, name);
	char *x = d ? virDomainGetXMLDesc(d, 0) : NULL;
	if (d)
		virDomainFree(d);
	virConnectClose(c);
	return x;
}

static void test_vsock_xml_test_driver(void **state)
{
	(void)state;
	vm_profile p = vsock_profile("vs-xml", 7);
	char *x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<vsock model='virtio'>\n      <cid auto='no' address='7'/>\n"
	                          "    </vsock>"));
	assert_null(strstr(x, "<channel"));
	assert_null(strstr(x, "<interface"));
	free(x);

	/* libvirt parses it, keeps the fixed CID and adds no network interface. */
	events_reset();
	vm_host *h = open_test_host(1);
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
	x = live_xml("vs-xml");
	assert_non_null(x);
	assert_non_null(strstr(x, "<vsock model='virtio'>"));
	assert_non_null(strstr(x, "<cid auto='no' address='7'/>"));
	assert_null(strstr(x, "<interface"));
	assert_null(strstr(x, "<channel"));
	free(x);
	char uuid[37];
	vm_uuid(h, v, uuid);
	assert_int_equal(strlen(uuid), 36);
	assert_int_equal(vm_stop(h, v), CUSTOS_OK);
	vm_host_close(h);

	/* Profile hash: SHA-256 of the XML; the CID is part of it. */
	char h1[65], h2[65], h3[65];
	assert_int_equal(vm_profile_hash(&p, h1), CUSTOS_OK);
	assert_int_equal(vm_profile_hash(&p, h2), CUSTOS_OK);
	assert_int_equal(strlen(h1), 64);
	assert_string_equal(h1, h2);
	p.vsock_cid = 8;
	assert_int_equal(vm_profile_hash(&p, h3), CUSTOS_OK);
	assert_string_not_equal(h1, h3);
	p.vcpus = 0;
	assert_int_not_equal(vm_profile_hash(&p, h3), CUSTOS_OK);

	/* Neither a channel nor a CID, or a reserved CID: refused. */
	p = vsock_profile("vs-xml", 0);
	assert_int_equal(vm_profile_check(&p), CUSTOS_ERR_INVAL);
	p.vsock_cid = 2;
	assert_int_equal(vm_profile_check(&p), CUSTOS_ERR_INVAL);
}

static void test_vsock_cid_reserve(void **state)
{
	(void)state;
	static const char *const nodev = "/nonexistent/vhost-vsock";
	vm_host *h = open_test_host(1);
	unsigned a = 0, b = 0, c = 0, d = 0, e = 0;

	/* The test driver's domains have no vsock: the lowest CID first, then the next. */
	assert_int_equal(vm_vsock_cid_reserve(h, 0, nodev, &a), CUSTOS_OK);
	assert_int_equal(a, VM_VSOCK_CID_MIN);
	assert_int_equal(vm_vsock_cid_reserve(h, 0, nodev, &b), CUSTOS_OK);
	assert_int_equal(b, VM_VSOCK_CID_MIN + 1);
	/* A CID this process reserved is refused when asked for by number. */
	assert_int_equal(vm_vsock_cid_reserve(h, a, nodev, &c), CUSTOS_ERR_EXISTS);
	assert_non_null(strstr(err_msg(), "reserved"));

	/* A domain custos did not reserve for (another tool's, running) holds CID 5: skipped by
	 * the automatic pick and refused by number. */
	vm_profile p = vsock_profile("vs-other", VM_VSOCK_CID_MIN + 2);
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
	assert_int_equal(vm_vsock_cid_reserve(h, VM_VSOCK_CID_MIN + 2, nodev, &c),
	                 CUSTOS_ERR_EXISTS);
	assert_non_null(strstr(err_msg(), "libvirt domain"));
	/* A defined, inactive domain's fixed CID counts too (it would clash when started). */
	virConnectPtr conn = virConnectOpen("test:///default");
	assert_non_null(conn);
	vm_profile q = vsock_profile("vs-defined", VM_VSOCK_CID_MIN + 3);
	char *qx = xml_of(&q);
	assert_non_null(qx);
	virDomainPtr qd = virDomainDefineXML(conn, qx);
	free(qx);
	assert_non_null(qd);
	assert_int_equal(vm_vsock_cid_reserve(h, 0, nodev, &c), CUSTOS_OK);
	assert_int_equal(c, VM_VSOCK_CID_MIN + 4);

	/* Released CIDs are picked again; a fixed free one is given as asked. */
	vm_vsock_cid_release(a);
	assert_int_equal(vm_vsock_cid_reserve(h, 0, nodev, &d), CUSTOS_OK);
	assert_int_equal(d, a);
	assert_int_equal(vm_vsock_cid_reserve(h, 1000, nodev, &e), CUSTOS_OK);
	assert_int_equal(e, 1000);

	/* Not guest CIDs. A device path that is no vhost-vsock device (the probe cannot tell)
	 * does not block the pick. */
	unsigned x = 0;
	assert_int_equal(vm_vsock_cid_reserve(h, 2, nodev, &x), CUSTOS_ERR_INVAL);
	assert_int_equal(vm_vsock_cid_reserve(h, 0xffffffffu, nodev, &x), CUSTOS_ERR_INVAL);
	assert_int_equal(vm_vsock_cid_reserve(h, 0, "/dev/null", &x), CUSTOS_OK);
	assert_int_equal(x, VM_VSOCK_CID_MIN + 5);
	vm_vsock_cid_release(0);     /* ignored */
	vm_vsock_cid_release(77777); /* unknown: ignored */

	for (unsigned i = 0; i < 5; i++) {
		unsigned r[] = { b, c, d, e, x };
		vm_vsock_cid_release(r[i]);
	}
	assert_int_equal(virDomainUndefine(qd), 0);
	virDomainFree(qd);
	virConnectClose(conn);
	assert_int_equal(vm_stop(h, v), CUSTOS_OK);
	/* Everything released and the other domains gone: the lowest CID is free again. */
	assert_int_equal(vm_vsock_cid_reserve(h, 0, nodev, &a), CUSTOS_OK);
	assert_int_equal(a, VM_VSOCK_CID_MIN);
	vm_vsock_cid_release(a);
	vm_host_close(h);
}

static void test_channel_auto(void **state)
{
	(void)state;
	/* A character device at the path: vsock. */
	assert_int_equal(vm_channel_auto("/dev/null"), VM_CHAN_VSOCK);
	/* Missing, or not a character device: virtio-serial. */
	assert_int_equal(vm_channel_auto("/nonexistent/vhost-vsock"), VM_CHAN_VIRTIO_SERIAL);
	assert_int_equal(vm_channel_auto("/tmp"), VM_CHAN_VIRTIO_SERIAL);
	char reg[] = "/tmp/test_vm_auto.XXXXXX";
	int fd = mkstemp(reg);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(vm_channel_auto(reg), VM_CHAN_VIRTIO_SERIAL);
	unlink(reg);
	/* The default path is this host's /dev/vhost-vsock. */
	struct stat st;
	bool chr = stat(VM_VHOST_VSOCK_DEV, &st) == 0 && S_ISCHR(st.st_mode);
	assert_int_equal(vm_channel_auto(NULL), chr ? VM_CHAN_VSOCK : VM_CHAN_VIRTIO_SERIAL);
	assert_string_equal(vm_chan_kind_name(VM_CHAN_VSOCK), "vsock");
	assert_string_equal(vm_chan_kind_name(VM_CHAN_VIRTIO_SERIAL), "virtio-serial");
}

static void test_vsock_channel_negative(void **state)
{
	(void)state;
	vm_channel *ch = NULL;
	vm_channel_opts o = { .vsock_cid = 2, .connect_timeout_ns = 200 * 1000 * 1000 };
	assert_int_equal(vm_channel_open(&o, &ch), CUSTOS_ERR_INVAL); /* the host's CID */
	o.vsock_cid = 0;
	o.fd = -1;
	assert_int_equal(vm_channel_open(&o, &ch), CUSTOS_ERR_INVAL); /* nothing to connect */
	/* No guest with this CID (no vhost-vsock here at all): an error once the short
	 * deadline passes, never a channel. */
	o.vsock_cid = 0xfffffff0u;
	o.vsock_port = 1024;
	assert_int_not_equal(vm_channel_open(&o, &ch), CUSTOS_OK);
	assert_non_null(strstr(err_msg(), "vsock"));
	assert_null(ch);
}

/* custos.yaml -> vm_profile_from_config -> domain XML: every key of a profile's vm: block
 * reaches the domain (the mapping `custos up` uses at start and on a reload). */
static const char cfg_head[] =
        "version: 1\n"
        "sandbox_profiles:\n"
        "  g:\n"
        "    vm:\n"
        "      type: kvm\n"
        "      vcpus: 2\n"
        "      memory: 2GiB\n"
        "      hugepages: true\n"
        "      cpu_pinning: [6, 7]\n"
        "      kernel: /img/vmlinuz\n"
        "      initrd: /img/initrd.img\n"
        "      cmdline: \"console=ttyS0 root=/dev/vda ro\"\n"
        "      disk: /img/root.qcow2\n"
        "      hostdev: [\"0000:65:00.0\", \"0000:66:00.1\"]\n"
        "      channel: virtio-serial\n"
        "      console_log: /log/vm.log\n"
        "  d:\n"
        "    vm: { type: qemu, disk: /img/base.qcow2, channel: vsock, vsock_cid: 9 }\n"
        "models:\n";

static custos_config *cfg_of(const char *models)
{
	char text[4096];
	snprintf(text, sizeof(text), "%s%s", cfg_head, models);
	diag_list d;
	diag_init(&d);
	custos_config *cfg = NULL;
	custos_err e = config_parse("t.yaml", text, strlen(text), &cfg, &d);
	if (e != CUSTOS_OK)
		fail_msg("config: %s: %s", err_msg(), d.n ? d.items[0].message : "");
	diag_free(&d);
	return cfg;
}

static custos_err map_cfg(const custos_config *cfg, vm_chan_kind chan, int *pin, vm_profile *p)
{
	const cfg_model *m = &cfg->models[0];
	const vm_config_vm inst = { .name = "custos-m",
		                    .chan = chan,
		                    .chan_path = "/run/custos/vm-m.sock",
		                    .console_log = "/log/vm.log" };
	return vm_profile_from_config(m, &cfg->profiles[m->sandbox.profile_index], &inst, pin, p);
}

static void test_config_mapping(void **state)
{
	(void)state;
	int pin[VM_MAX_VCPUS];
	vm_profile p;
	custos_config *cfg = cfg_of("  - {id: m, sandbox: {type: vm, profile: g}}\n");
	assert_int_equal(map_cfg(cfg, VM_CHAN_VIRTIO_SERIAL, pin, &p), CUSTOS_OK);
	char *x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<domain type='kvm'>"));
	assert_non_null(strstr(x, "<name>custos-m</name>"));
	assert_non_null(strstr(x, "<vcpu placement='static'>2</vcpu>"));
	assert_non_null(strstr(x, "<memory unit='MiB'>2048</memory>"));
	assert_non_null(strstr(x, "<memoryBacking><hugepages/></memoryBacking>"));
	assert_non_null(strstr(x, "<vcpupin vcpu='0' cpuset='6'/>"));
	assert_non_null(strstr(x, "<vcpupin vcpu='1' cpuset='7'/>"));
	assert_non_null(strstr(x, "<kernel>/img/vmlinuz</kernel>"));
	assert_non_null(strstr(x, "<initrd>/img/initrd.img</initrd>"));
	assert_non_null(strstr(x, "<cmdline>console=ttyS0 root=/dev/vda ro</cmdline>"));
	/* disk beside kernel: the kernel's root, behind libvirt's throwaway overlay. */
	assert_non_null(strstr(x, "<source file='/img/root.qcow2'/>"));
	assert_non_null(strstr(x, "<transient/>"));
	assert_null(strstr(x, "<boot dev='hd'/>"));
	assert_non_null(
	        strstr(x, "<address domain='0x0000' bus='0x65' slot='0x00' function='0x0'/>"));
	assert_non_null(
	        strstr(x, "<address domain='0x0000' bus='0x66' slot='0x00' function='0x1'/>"));
	assert_non_null(strstr(x, "<source mode='bind' path='/run/custos/vm-m.sock'/>"));
	assert_non_null(strstr(x, "name='" VM_CHANNEL_NAME "'"));
	assert_non_null(strstr(x, "<source path='/log/vm.log'/>"));
	assert_null(strstr(x, "<vsock"));
	assert_null(strstr(x, "<interface"));
	free(x);

	/* The kernel + disk domain as libvirt defines it (test driver): the disk is there. */
	vm_host *h = open_test_host(0);
	p.n_hostdevs = 0; /* the test driver has no PCI devices to give */
	vm *v = NULL;
	assert_int_equal(vm_start(h, &p, &v), CUSTOS_OK);
	virConnectPtr c = virConnectOpen("test:///default");
	assert_non_null(c);
	virDomainPtr d = virDomainLookupByName(c, "custos-m");
	assert_non_null(d);
	x = virDomainGetXMLDesc(d, 0);
	assert_non_null(x);
	assert_non_null(strstr(x, "/img/root.qcow2"));
	assert_non_null(strstr(x, "/img/vmlinuz"));
	free(x);
	virDomainFree(d);
	virConnectClose(c);
	assert_int_equal(vm_stop(h, v), CUSTOS_OK);
	vm_host_close(h);
	config_free(cfg);

	/* Disk boot, TCG, vsock (the CID is the caller's, once libvirt is open); the defaults:
	 * 1 vCPU, 1 GiB. */
	cfg = cfg_of("  - {id: m, sandbox: {type: vm, profile: d}}\n");
	assert_int_equal(map_cfg(cfg, VM_CHAN_VSOCK, pin, &p), CUSTOS_OK);
	assert_int_equal(p.n_channels, 0);
	assert_int_equal(p.vsock_cid, 0);
	p.vsock_cid = 9;
	x = xml_of(&p);
	assert_non_null(x);
	assert_non_null(strstr(x, "<domain type='qemu'>"));
	assert_non_null(strstr(x, "<vcpu placement='static'>1</vcpu>"));
	assert_non_null(strstr(x, "<memory unit='MiB'>1024</memory>"));
	assert_non_null(strstr(x, "<boot dev='hd'/>"));
	assert_non_null(strstr(x, "<source file='/img/base.qcow2'/>"));
	assert_null(strstr(x, "<kernel>"));
	assert_null(strstr(x, "<channel"));
	assert_null(strstr(x, "<hostdev"));
	free(x);
	config_free(cfg);
}

/* What a VM cannot carry is refused, not dropped: the model server in a guest is started by
 * the image's init, so sandbox.command, env and workdir would never reach it. config check
 * refuses them at their key; the mapping refuses them too (a configuration built otherwise). */
static void test_config_mapping_refused(void **state)
{
	(void)state;
	static const struct {
		const char *model, *key;
		unsigned col;
	} cases[] = {
		{ "  - {id: m, sandbox: {type: vm, profile: g, command: [/srv/llama-server]}}\n",
		  "command", 54 },
		{ "  - {id: m, sandbox: {type: vm, profile: g, env: {CUDA_VISIBLE_DEVICES: "
		  "\"0\"}}}\n",
		  "env", 50 },
		{ "  - {id: m, sandbox: {type: vm, profile: g, workdir: /srv}}\n", "workdir", 54 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[4096], want[64];
		snprintf(text, sizeof(text), "%s%s", cfg_head, cases[i].model);
		snprintf(want, sizeof(want), "sandbox.%s is not passed into a VM", cases[i].key);
		diag_list d;
		diag_init(&d);
		custos_config *cfg = NULL;
		assert_int_not_equal(config_parse("t.yaml", text, strlen(text), &cfg, &d),
		                     CUSTOS_OK);
		bool found = false;
		for (size_t k = 0; k < d.n; k++)
			if (d.items[k].severity == DIAG_ERROR && strstr(d.items[k].message, want)) {
				found = true;
				assert_int_equal(d.items[k].col, cases[i].col);
			}
		if (!found)
			fail_msg("case %zu: no error '%s'", i, want);
		diag_free(&d);
	}
	for (int i = 0; i < 3; i++) {
		int pin[VM_MAX_VCPUS];
		vm_profile p;
		custos_config *cfg = cfg_of("  - {id: m, sandbox: {type: vm, profile: g}}\n");
		cfg_model_sandbox *sb = &cfg->models[0].sandbox;
		if (i == 0)
			sb->n_command = 1;
		else if (i == 1)
			sb->n_env = 1;
		else
			sb->workdir = "/srv";
		assert_int_equal(map_cfg(cfg, VM_CHAN_VIRTIO_SERIAL, pin, &p), CUSTOS_ERR_INVAL);
		assert_non_null(strstr(err_msg(), "not passed into a VM"));
		sb->n_command = 0;
		sb->n_env = 0;
		sb->workdir = NULL;
		config_free(cfg);
	}
}

int main(void)
{
	log_setup(LOG_LVL_WARN, LOG_FMT_TEXT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xml_kernel_boot),
		cmocka_unit_test(test_xml_all_options),
		cmocka_unit_test(test_xml_escaping),
		cmocka_unit_test(test_profile_negative),
		cmocka_unit_test(test_pci_parse),
		cmocka_unit_test(test_lifecycle_no_interface),
		cmocka_unit_test(test_lifecycle_crash_restart),
		cmocka_unit_test(test_lifecycle_stop_during_restart),
		cmocka_unit_test(test_lifecycle_negative),
		cmocka_unit_test(test_seccomp_fake_proc),
		cmocka_unit_test(test_seccomp_real_process),
		cmocka_unit_test(test_vsock_xml_test_driver),
		cmocka_unit_test(test_vsock_cid_reserve),
		cmocka_unit_test(test_channel_auto),
		cmocka_unit_test(test_vsock_channel_negative),
		cmocka_unit_test(test_config_mapping),
		cmocka_unit_test(test_config_mapping_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
