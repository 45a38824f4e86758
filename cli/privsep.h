/*
 * Privilege separation of `custos up` (docs/SANDBOX.md, "Privilege separation"): the messages
 * between the privileged supervisor and the unprivileged proxy over one SOCK_SEQPACKET
 * socketpair, and the proxy's side of it (socket pools per sandboxed model, the mirror of
 * each sandbox's state for the admin API, forwarded audit events).
 */
#ifndef CUSTOS_CLI_PRIVSEP_H
#define CUSTOS_CLI_PRIVSEP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "custos/admin.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/core.h"

#define PSX_MAX_FDS           16             /* fds in one message */
#define PSX_PAYLOAD_MAX       8448           /* an audit event body (AUDIT_MAX_EVENT) and some */
#define PSX_RELOAD_SHA256_LEN 64u            /* RELOAD's payload: a SHA-256 in hex */
#define PSX_MAX_MODELS        CFG_MAX_MODELS /* = PROXY_MAX_UPSTREAMS */
#define PSX_POOL_MAX          32             /* unconnected sockets kept per process sandbox */
#define PSX_POOL_LOW          8              /* below this many a refill is asked for */
#define PSX_WAIT_MS           2000           /* a connect waits this long for a socket */
#define PSX_SETUP_EVENTS      1024 /* supervisor audit events held until the writer runs */

/* Message types. S: supervisor -> proxy, P: proxy -> supervisor. */
enum psx_type {
	PSX_STATE = 1, /* S: psx_state of model; after every lifecycle event */
	PSX_SOCKS,     /* S: sockets of instance gen (arg: errno when none could be made) */
	PSX_EGRESS_FD, /* S: the egress listener inside instance gen */
	PSX_AUDIT,     /* S: one audit event body */
	PSX_EVENT,     /* S: sandbox_event_kind in arg, count in gen (for /metrics) */
	PSX_READY,     /* S: every sandbox is up; the proxy may serve */
	PSX_FAIL,      /* S: startup failed (payload: why); the proxy exits */
	PSX_BYE,       /* S: sandboxes stopped after DRAINED; the proxy may exit */
	PSX_RESTARTED, /* S: answer to RESTART: arg 0 or an errno, gen the pid killed */
	PSX_VM_INFO,   /* S: psx_vm_info of a VM model, when it changed (admin API) */
	PSX_ADDED,     /* S: reload gen's new sandbox takes slot model (payload: its id; arg:
	                * PSX_ADDED_PROCESS or PSX_ADDED_VM) */
	PSX_REMOVED,   /* S: the sandbox of slot model is stopped; its slot is reused once the
	                * proxy let go of it (FREED) */
	PSX_RELOADED,  /* S: answer to RELOAD gen: arg 0, or 1 and the reason (payload) */
	PSX_WANT = 32, /* P: arg more sockets for model */
	PSX_RESTART,   /* P: end the instance whose host pid is arg (admin API) */
	PSX_DRAINED,   /* P: the proxy stopped serving: stop the sandboxes, then BYE */
	PSX_PROXY_UP,  /* P: the proxy is confined and serving */
	PSX_SECCOMP,   /* P: the listener of the proxy's seccomp filter (one fd), once */
	PSX_RELOAD,    /* P: custos.yaml adds or removes sandboxes (gen: this reload's number;
	                * payload: the SHA-256 in hex of the bytes the proxy read): the supervisor
	                * reads the file itself and refuses the reload if it read other bytes */
	PSX_COMMIT,    /* P: reload gen was applied (arg 1) or refused (0); refused, the proxy
	                * routes to none of its new sandboxes from then on */
	PSX_IDLE,      /* P: slot model, removed by an applied reload, has no request in flight
	                * any more (once): its sandbox may be stopped now */
	PSX_FREED,     /* P: after REMOVED, nothing in the proxy refers to slot model any more
	                * (once): the supervisor may give it to a sandbox a later reload adds */
};

/* ADDED's arg: the sandbox's kind. A VM's streams come connected over its channel, one at a
 * time; a process sandbox's sockets are pooled and connected to its port by the proxy. */
enum { PSX_ADDED_PROCESS = 0, PSX_ADDED_VM = 1 };

typedef struct psx_hdr {
	uint16_t type;
	/* The sandbox's slot: the sandboxed models of the starting custos.yaml in order, then one
	 * per sandbox a reload added: a free one (REMOVED, then FREED), else the next. */
	uint16_t model;
	uint32_t gen;
	uint32_t arg;
	uint32_t len; /* payload bytes */
} psx_hdr;

/* What the admin API reports of one sandbox, any kind ("process", "vm"). */
typedef struct psx_state {
	char kind[8];
	int32_t pid; /* host pid of the instance (process), -1 when none */
	uint32_t generation;
	uint32_t restarts;
	uint8_t running;
	char profile_hash[65];
	char cgroup[8];
	uint64_t memory_bytes, pids, nofile;
	uint32_t cpu_millis;
	uint16_t port; /* the model server's port inside */
} psx_state;

/* What GET /v1/sandboxes shows of a VM (admin_vm), flattened: strings in place of the static
 * pointers, so that it can cross the socket. */
typedef struct psx_vm_info {
	char name[ADMIN_VM_NAME_MAX + 1];
	char domain[ADMIN_VM_NAME_MAX + 1];
	char uuid[37];
	char profile_hash[65];
	char state[16];
	char channel[16];
	char seccomp[16];
	uint32_t vsock_cid, restarts;
	uint64_t started_wall_ns;
	int64_t qemu_pid;
	uint8_t routable;
} psx_vm_info;

/* admin_vm -> psx_vm_info (zeroed first, so equal states compare equal with memcmp). */
void psx_vm_info_from(const admin_vm *v, psx_vm_info *out);

typedef struct psx_msg {
	psx_hdr h;
	uint8_t payload[PSX_PAYLOAD_MAX];
	int fds[PSX_MAX_FDS];
	size_t nfds;
} psx_msg;

/* Sends one message (fds, if any, are duplicated into the peer; the caller keeps its own).
 * CUSTOS_ERR_TIMEOUT when the socket's SO_SNDTIMEO passed with the peer's buffer full. */
custos_err psx_send(int sock, const psx_hdr *h, const void *payload, const int *fds,
                    size_t nfds) CUSTOS_WUR;
/* Receives one message: 1; 0 at EOF or on an empty message (SOCK_SEQPACKET cannot tell them
 * apart: either ends the conversation); -1 on error or a malformed message (a short header,
 * len other than the payload's size, a truncated payload or control data, a control message
 * other than SCM_RIGHTS; errno EPROTO). Every fd received is closed unless 1 is returned
 * (then m holds at most PSX_MAX_FDS of them; more are closed). */
int psx_recv(int sock, psx_msg *m);
/* Closes the fds a message still holds. */
void psx_msg_close(psx_msg *m);
/* The supervisor's check of a message from the proxy, before it acts on it: NULL when its
 * header, payload and fds are what its type allows (a proxy type; model < n_slots for the
 * types naming a slot, 0 otherwise; arg in its type's range; gen 0 but for RELOAD and COMMIT;
 * no payload but RELOAD's 64 lowercase hex digits; one fd for SECCOMP, none otherwise), else why not. The order of messages
 * (COMMIT after RELOADED, IDLE for a removed slot...) is checked by the supervisor itself. */
const char *psx_sup_check(const psx_msg *m, size_t n_slots);

/* ------------------------------------------------------------------------- the proxy's side */
struct custos_config;
struct proxy_server;
struct egress_server;

/* Model table from the configuration (its sandboxed models); sock: the proxy's end. */
void psx_proxy_init(int sock, const struct custos_config *cfg);
/* Reads the supervisor's messages until READY. egress_fds[cfg model index] gets each
 * sandbox's first egress listener (-1 when none; the caller owns them). CUSTOS_ERR_CLOSED
 * when the supervisor failed or went away (message in err_msg). */
custos_err psx_proxy_setup(int *egress_fds, size_t n) CUSTOS_WUR;
/* custos.yaml adds, removes or changes sandboxed models: asks the supervisor to read it and
 * start the new sandboxes (it decides what from the file, never from this process); waits up
 * to wait_ms for them to be ready. sha256: the hex digest of the custos.yaml the proxy read
 * (custos_config.source_sha256); the supervisor refuses the reload when the file it reads has
 * another (it was replaced in between). On CUSTOS_OK they are in the mirror (psx_proxy_find).
 * Whatever the result, psx_proxy_commit must follow. */
custos_err psx_proxy_reload(uint64_t wait_ms, const char *sha256) CUSTOS_WUR;
/* The proxy stops: a reload waiting in psx_proxy_reload (the admin API's) gives up now. */
void psx_proxy_stopping(void);
/* Tells the supervisor whether the reload psx_proxy_reload prepared was applied: it then stops
 * the removed sandboxes (after limits.timeouts.shutdown), or else the added ones at once. */
void psx_proxy_commit(bool applied, const struct custos_config *next);
/* Index of the sandboxed model id in the mirror, or -1. */
int psx_proxy_find(const char *id);
/* proxy_upstream_opts.connect_fn; arg: psx_proxy_hold(i). */
custos_err psx_proxy_connect(void *arg, int *fd) CUSTOS_WUR;
/* proxy_upstream_opts.connect_arg for mirror index i: counts one more set of proxy options
 * that may connect to its sandbox, until psx_proxy_release(arg) (their release_fn). Once a
 * reload removed the sandbox and nothing holds it, the supervisor is told (PSX_IDLE). */
void *psx_proxy_hold(int i);
void psx_proxy_release(void *arg);
/* Where the receiver thread delivers: audit events held since setup are submitted now. */
void psx_proxy_attach(struct proxy_server *srv, struct egress_server *eg, audit_writer *aw);
/* Hands fd to the supervisor in a message of type (no payload); the caller keeps its copy. */
custos_err psx_proxy_send_fd(unsigned type, int fd) CUSTOS_WUR;
/* Starts the receiver thread. */
custos_err psx_proxy_start(void) CUSTOS_WUR;
/* After proxy_run: tells the supervisor, waits (bounded) until it stopped the sandboxes and
 * their events were submitted, then joins the thread. */
void psx_proxy_finish(void);
/* True when the supervisor went away (the proxy then exits with failure). */
bool psx_proxy_supervisor_lost(void);
/* admin_hooks.sandboxes_get: the process sandboxes of the configuration applied now (next of
 * the last applied psx_proxy_commit) with their states, read under one lock; returns how
 * many of out[0..max) were filled. */
size_t psx_proxy_admin_sandboxes(void *arg, admin_sandbox_info *out, size_t max);
/* admin_hooks.sandbox_restart: asks the supervisor to end the named sandbox's instance pid;
 * 0 or an errno (ENOENT: not configured now, ESRCH: pid is no longer its instance). */
int psx_proxy_admin_restart(void *arg, const char *name, int64_t pid);
/* The VM entries as the supervisor last sent them (taint -1: the caller fills it); returns
 * how many of out[0..max) were filled. */
size_t psx_proxy_admin_vms(admin_vm *out, size_t max);

#endif
