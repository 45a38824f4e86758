/*
 * Shared libraries bound on first use (dl/). A heavy dependency that only some commands need
 * (libvirt for the VM backend, libmicrohttpd for the admin API, Hyperscan for content
 * inspection) is not a DT_NEEDED entry of the custos binary: a stub file in dl/ defines the
 * functions custos calls, with the prototypes of the library's own header, and forwards them
 * through pointers resolved the first time one is called. Commands that never touch the library
 * (`custos sandbox exec`, `config check`, `audit verify`) do not pay for mapping and relocating
 * it and its dependency tree before main (docs/ARCHITECTURE.md, "Startup cost").
 */
#ifndef CUSTOS_LAZYLIB_H
#define CUSTOS_LAZYLIB_H

#include <pthread.h>

#include "custos/core.h"

#define LAZYLIB_MSG_MAX 512

/* One library. Static storage, set up with LAZYLIB_INIT; the state fields are private. */
typedef struct lazylib {
	const char *soname;       /* "libvirt.so.0": found by the loader's ordinary search */
	const char *what;         /* what needs it, for the message: "the VM backend" */
	const char *package;      /* where it comes from, for the message: "libvirt0" */
	const char *const *names; /* symbols to resolve, all or nothing */
	void **slots;             /* receives their addresses, in the order of names */
	size_t n;
	pthread_mutex_t mu;
	int state; /* 0 not tried, 1 bound, -1 failed (never retried: one answer per process) */
	char msg[LAZYLIB_MSG_MAX];
} lazylib;

#define LAZYLIB_INIT(soname_, what_, package_, names_, slots_)                                     \
	{                                                                                          \
		.soname = (soname_), .what = (what_), .package = (package_), .names = (names_),    \
		.slots = (slots_), .n = CUSTOS_ARRAY_LEN(slots_), .mu = PTHREAD_MUTEX_INITIALIZER  \
	}

/* Loads lib (RTLD_NOW | RTLD_LOCAL, never unloaded) and resolves every name once; thread-safe.
 * CUSTOS_OK when bound; otherwise CUSTOS_ERR_UNSUPPORTED with a message naming the file (or the
 * missing symbol) and the package, set again on every later call. */
custos_err lazylib_load(lazylib *lib) CUSTOS_WUR;
/* Whether lib is bound, loading it on first call (the stubs' fast path). */
bool lazylib_ready(lazylib *lib);
/* The failure message of the last load attempt ("" when bound or not tried). */
const char *lazylib_error(const lazylib *lib);

/* The libraries bound this way. Each loads its library now if it is not yet bound: CUSTOS_OK,
 * or CUSTOS_ERR_UNSUPPORTED with a message naming the file (and the package). A caller that
 * needs the library calls this first, so the failure is reported as what it is; without it the
 * stubs fail as the library's own calls fail (NULL, -1, an error code). */
custos_err lazylib_libvirt(void) CUSTOS_WUR;    /* libvirt.so.0: the VM backend */
custos_err lazylib_microhttpd(void) CUSTOS_WUR; /* libmicrohttpd.so.12: the admin API */
custos_err lazylib_hyperscan(void) CUSTOS_WUR;  /* libhs.so.5: content inspection */
/* libssl.so.3 and libcrypto.so.3 (dl/openssl.c): bound by trampolines at the first OpenSSL call,
 * which stops the process with a message if they cannot be loaded. A process that confines
 * itself (the proxy under privilege separation) calls this first, so the library is opened
 * before seccomp and Landlock; CUSTOS_OK always where OpenSSL is linked as usual. */
custos_err lazylib_openssl(void) CUSTOS_WUR;

#endif /* CUSTOS_LAZYLIB_H */
