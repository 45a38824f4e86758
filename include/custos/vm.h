/*
 * custos VM sandbox backend: a model server in a libvirt domain with no network interface,
 * reached only through a multiplexed virtio-serial (or vsock) channel. Domain XML from a plain
 * profile, transient domains with lifecycle events (crash -> restart with backoff), the check
 * that QEMU really runs under a seccomp filter, and the host side of the channel.
 */
#ifndef CUSTOS_VM_H
#define CUSTOS_VM_H

#include "custos/config.h" /* the bounds custos.yaml shares with the VM code (CFG_MAX_*) */
#include "custos/core.h"

/* Limits on a profile (named so the config loader can refer to them). */
#define VM_NAME_MAX     CFG_MAX_VM_NAME
#define VM_MAX_VCPUS    CFG_MAX_VCPUS
#define VM_MAX_MEM_MIB  ((unsigned)(CFG_MAX_VM_MEMORY >> 20)) /* 4 TiB */
#define VM_MAX_HOSTDEVS CFG_MAX_HOSTDEVS
#define VM_MAX_CHANNELS 4
#define VM_XML_MAX      (64 * 1024)

typedef enum vm_boot {
	VM_BOOT_KERNEL = 0, /* direct kernel + initramfs + cmdline */
	VM_BOOT_DISK,       /* read-only base image behind a throwaway qcow2 overlay */
} vm_boot;

typedef struct vm_pci_addr {
	unsigned domain, bus, slot, function; /* 0000:BB:SS.F as in lspci -D */
} vm_pci_addr;

/* One VM profile, as custos.yaml describes it. Strings are borrowed from the caller. */
typedef struct vm_profile {
	const char *name;        /* domain name: [A-Za-z0-9_.-], at most VM_NAME_MAX */
	const char *domain_type; /* "kvm" or "qemu" (TCG); NULL = "qemu" */
	const char *emulator;    /* QEMU binary; NULL = libvirt's default */
	unsigned vcpus;
	uint64_t memory_mib;
	bool hugepages;     /* back guest memory with hugepages (<memoryBacking>) */
	const int *cpu_pin; /* host CPU for each vCPU (vcpus entries), or NULL */
	vm_boot boot;
	const char *kernel, *initrd, *cmdline; /* VM_BOOT_KERNEL */
	const char *disk_overlay; /* VM_BOOT_DISK: qcow2 overlay (over a read-only base) */
	const char *disk_base;    /* VM_BOOT_DISK without overlay: base image, <transient/> */
	const char *console_log;  /* serial console written to this file */
	const char *channel_paths[VM_MAX_CHANNELS]; /* virtio-serial unix sockets (QEMU binds) */
	const char *channel_names[VM_MAX_CHANNELS]; /* guest-visible port names */
	size_t n_channels;
	unsigned vsock_cid;                    /* 0 = no vsock device; else the guest CID (>= 3) */
	vm_pci_addr hostdevs[VM_MAX_HOSTDEVS]; /* GPUs by VFIO pass-through */
	size_t n_hostdevs;
	const char *seclabel_user; /* "user:group" for a static DAC seclabel, or NULL */
} vm_profile;

/* Checks a profile's values against the limits; CUSTOS_ERR_INVAL with the field named. */
custos_err vm_profile_check(const vm_profile *p) CUSTOS_WUR;
/* Appends the libvirt domain XML for p to out (escaped). No <interface> is ever written. */
custos_err vm_domain_xml(const vm_profile *p, buf *out) CUSTOS_WUR;
/* The SHA-256 (64 hex digits and a NUL into out) of the domain XML for p: the VM's profile
 * hash, as audited and shown by the admin API. */
custos_err vm_profile_hash(const vm_profile *p, char out[65]) CUSTOS_WUR;
/* Appends s to out with XML's five special characters escaped; control bytes refused. */
custos_err vm_xml_escape(buf *out, const char *s) CUSTOS_WUR;
/* Parses "0000:65:00.0" (or "65:00.0") into a PCI address. */
custos_err vm_pci_parse(span s, vm_pci_addr *out) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Lifecycle: one connection to libvirt, transient domains, events, restart with backoff.
 */
typedef struct vm_host vm_host;
typedef struct vm vm;

typedef enum vm_event_kind {
	VM_EV_STARTED = 0,
	VM_EV_STOPPED,    /* stopped by custos (destroy) or shut down cleanly */
	VM_EV_CRASHED,    /* QEMU died or the guest crashed/failed */
	VM_EV_RESTARTING, /* a restart is scheduled after a backoff */
	VM_EV_RESTARTED,
	VM_EV_GAVE_UP, /* too many restarts */
} vm_event_kind;

/* Returns a static name ("crashed"). */
const char *vm_event_name(vm_event_kind k);

/* Called from the event thread for every lifecycle event, so the caller can audit it. */
typedef void (*vm_event_fn)(void *arg, const char *domain, vm_event_kind kind, const char *detail);

typedef struct vm_host_opts {
	const char *uri; /* "qemu:///system", "qemu+unix:///system?socket=...", "test:///default" */
	vm_event_fn on_event;
	void *event_arg;
	uint64_t backoff_min_ns; /* first restart delay (default 1 s), doubled each time */
	uint64_t backoff_max_ns; /* cap (default 60 s) */
	unsigned max_restarts;   /* restarts within one run before giving up (default 5) */
} vm_host_opts;

/* Opens the connection and starts the event loop thread. Owner: caller, vm_host_close. */
custos_err vm_host_open(const vm_host_opts *o, vm_host **out) CUSTOS_WUR;
/* Destroys every domain still running from this host, stops the event thread, closes. */
void vm_host_close(vm_host *h);
/* Creates and starts a transient domain from p (p's strings are copied). Owner: the host. */
custos_err vm_start(vm_host *h, const vm_profile *p, vm **out) CUSTOS_WUR;
/* Destroys the domain (no restart follows) and frees v. */
custos_err vm_stop(vm_host *h, vm *v) CUSTOS_WUR;
/* Whether libvirt reports the domain running. */
bool vm_running(vm_host *h, vm *v);
/* Number of restarts done so far for v. */
unsigned vm_restarts(vm_host *h, vm *v);
/* The domain name. */
const char *vm_name(const vm *v);
/* Test hook: handles a lifecycle event as if libvirt had sent it (used with test:///default,
 * whose domains cannot crash). Same path as the real callback. */
void vm_inject_crash(vm_host *h, vm *v);

/* ---------------------------------------------------------------------------------------------
 * vsock guest CIDs. A CID is host-wide: two VMs with one CID cannot both start (vhost-vsock
 * refuses the second). custos reserves one per VM before it starts the domain.
 */
#define VM_VSOCK_CID_MIN  3          /* 0-2 are reserved (hypervisor, local, host) */
#define VM_VSOCK_CID_MAX  0xfffffffe /* 0xffffffff is VMADDR_CID_ANY */
#define VM_VSOCK_CID_SCAN 4096       /* CIDs tried by an automatic pick before giving up */

/* Reserves a guest CID for a VM of this process. want = 0 picks the lowest free CID >=
 * VM_VSOCK_CID_MIN; want != 0 reserves exactly that one. Free means: not reserved by this
 * process (every vm_host shares one registry), not in the XML of any domain h's libvirt knows
 * (running or defined, <vsock><cid address='N'/>), and, where vhost_dev (NULL =
 * "/dev/vhost-vsock") can be opened, not in use by any VM of the host kernel (a probe with
 * VHOST_VSOCK_SET_GUEST_CID). CUSTOS_ERR_EXISTS when want is taken; CUSTOS_ERR_LIMIT when no
 * CID is free in the scan. Release with vm_vsock_cid_release. */
custos_err vm_vsock_cid_reserve(vm_host *h, unsigned want, const char *vhost_dev,
                                unsigned *out) CUSTOS_WUR;
/* Returns a CID reserved by vm_vsock_cid_reserve (0 and unknown CIDs are ignored). */
void vm_vsock_cid_release(unsigned cid);
/* The libvirt UUID of v's current domain into out (37 bytes with the NUL); "" when it has
 * none (down between a crash and its restart). */
void vm_uuid(vm_host *h, vm *v, char out[37]);

/* ---------------------------------------------------------------------------------------------
 * The QEMU process behind a domain must run under a seccomp filter before traffic is routed.
 */
/* Reads the QEMU pid from libvirt's pidfile (run_dir/NAME.pid; run_dir NULL =
 * /run/libvirt/qemu) and checks that the process exists. */
custos_err vm_qemu_pid(const char *run_dir, const char *name, pid_t *out) CUSTOS_WUR;
/* CUSTOS_OK when /proc/PID/cmdline is libvirt's QEMU for domain `name` ("-name
 * guest=NAME,..."); CUSTOS_ERR_DENIED otherwise (a stale pidfile whose pid was reused). */
custos_err vm_qemu_verify(const char *proc_root, pid_t pid, const char *name) CUSTOS_WUR;
/* CUSTOS_OK when /proc/PID/status says "Seccomp: 2" (filter mode); CUSTOS_ERR_DENIED when it
 * has no filter; proc_root NULL = "/proc" (tests pass a fake tree). */
custos_err vm_seccomp_check(const char *proc_root, pid_t pid) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Host side of the multiplexed channel (protocol: sandbox/vm_mux.h, docs/VM.md).
 */
typedef struct vm_channel vm_channel;

/* The transport under the mux. */
typedef enum vm_chan_kind {
	VM_CHAN_VIRTIO_SERIAL = 0, /* <channel type='unix'>: custos connects to QEMU's socket */
	VM_CHAN_VSOCK,             /* <vsock>: custos connects to the guest's CID and port */
} vm_chan_kind;
#define VM_VHOST_VSOCK_DEV    "/dev/vhost-vsock"
#define VM_VSOCK_PORT_DEFAULT 1024 /* custos-guest --vsock-port */

/* The virtio-serial port name custos-guest looks for (--port-name). */
#define VM_CHANNEL_NAME "org.custos.mux.0"

/* One VM of a custos.yaml model: what differs between VMs of the same model (cli/vm_up.c picks
 * them) and the channel kind (`channel: auto` resolved by the caller). Strings borrowed. */
typedef struct vm_config_vm {
	const char *name; /* domain name */
	vm_chan_kind chan;
	const char *chan_path;   /* virtio-serial: the socket QEMU binds */
	const char *console_log; /* NULL: no console log */
} vm_config_vm;

/* The one mapping from a model's sandbox block and its profile's vm: block to the VM custos
 * starts (`custos up`, at start and on a reload). pin (VM_MAX_VCPUS entries) holds the CPU
 * pinning p points to. A vsock CID is not set (reserved once libvirt is open). Refuses what
 * a VM cannot carry (sandbox.command, env, workdir) rather than drop it. p's strings are
 * borrowed from m, pr and inst. */
custos_err vm_profile_from_config(const cfg_model *m, const cfg_profile *pr,
                                  const vm_config_vm *inst, int pin[], vm_profile *p) CUSTOS_WUR;
/* The virtio-serial socket of model id's first VM: the profile's vm.channel_socket, else
 * /run/custos/vm-<id>.sock. CUSTOS_ERR_LIMIT when it does not fit size (108: sun_path). */
custos_err vm_config_chan_socket(const char *id, const cfg_profile *pr, char *out,
                                 size_t size) CUSTOS_WUR;

/* `channel: auto`: VM_CHAN_VSOCK when vhost_dev (NULL = VM_VHOST_VSOCK_DEV) exists and is a
 * character device, VM_CHAN_VIRTIO_SERIAL otherwise. */
vm_chan_kind vm_channel_auto(const char *vhost_dev);
/* Static name: "virtio-serial" or "vsock". */
const char *vm_chan_kind_name(vm_chan_kind k);

/* Called on the channel thread when the guest opens a stream (egress): fd is the host end of
 * a socketpair (blocking, caller owns it). port is the guest's requested service (0 = egress
 * HTTP proxy). Must not block for long. */
typedef void (*vm_channel_accept_fn)(void *arg, uint16_t port, int fd);

typedef struct vm_channel_opts {
	const char *path; /* unix socket QEMU listens on (<channel type='unix' mode='bind'>) */
	int fd; /* when path is NULL and vsock_cid 0: an already connected fd (taken over) */
	unsigned vsock_cid;  /* when path is NULL: connect over AF_VSOCK to this guest CID */
	unsigned vsock_port; /* ... and port (0 = VM_VSOCK_PORT_DEFAULT) */
	uint64_t connect_timeout_ns; /* wait this long for the socket/guest agent (default 30 s) */
	vm_channel_accept_fn on_accept; /* NULL: guest-opened streams are refused */
	void *accept_arg;
	uint32_t window; /* per-stream window in bytes (default VM_MUX_DEFAULT_WINDOW) */
} vm_channel_opts;

/* Connects and starts the mux thread. Owner: caller, vm_channel_close. */
custos_err vm_channel_open(const vm_channel_opts *o, vm_channel **out) CUSTOS_WUR;
/* Opens a stream to the guest's TCP port (the counterpart of sandbox_connect_inside); *fd is
 * one end of a socketpair (blocking) that behaves like a connected socket to it. The caller
 * owns *fd. */
custos_err vm_channel_open_stream(vm_channel *c, uint16_t port, int *fd) CUSTOS_WUR;
/* The VM counterpart of sandbox_listen_inside: a listening AF_UNIX socket (abstract,
 * autobound) from which the caller accepts one connection per egress stream the guest opens
 * (its HTTP proxy port). Once set, it takes precedence over on_accept for port 0. The caller
 * owns *lfd. */
custos_err vm_channel_listen_egress(vm_channel *c, int backlog, int *lfd) CUSTOS_WUR;
/* Whether the mux still runs (false after the guest side went away or a protocol error). */
bool vm_channel_alive(vm_channel *c);
/* Stops the mux thread, closes every stream and the channel. */
void vm_channel_close(vm_channel *c);

#endif /* CUSTOS_VM_H */
