/*
 * Binding a shared library on first use: dlopen by soname (the same search the dynamic loader
 * makes for a DT_NEEDED entry, so no new place a library can come from), every symbol resolved
 * at once, and a failure that names the file and the package and is final for the process.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "custos/lazylib.h"

static void load_locked(lazylib *lib)
{
	void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (h == NULL) {
		const char *why = dlerror();
		snprintf(lib->msg, sizeof(lib->msg),
		         "%s needs %s, which cannot be loaded: %s%s%s%s", lib->what, lib->soname,
		         why ? why : "unknown error", lib->package ? " (package " : "",
		         lib->package ? lib->package : "", lib->package ? ")" : "");
		__atomic_store_n(&lib->state, -1, __ATOMIC_RELEASE);
		return;
	}
	for (size_t i = 0; i < lib->n; i++) {
		(void)dlerror();
		void *p = dlsym(h, lib->names[i]);
		if (p == NULL) {
			/* An older or foreign build: refuse it whole rather than fail later. */
			snprintf(lib->msg, sizeof(lib->msg), "%s needs %s, which lacks %s%s%s%s",
			         lib->what, lib->soname, lib->names[i],
			         lib->package ? " (package " : "", lib->package ? lib->package : "",
			         lib->package ? ")" : "");
			memset(lib->slots, 0, lib->n * sizeof(lib->slots[0]));
			/* RTLD_NODELETE: dlclose drops our reference but never unmaps code that
			 * a library constructor may have handed out (threads, atexit). */
			dlclose(h);
			__atomic_store_n(&lib->state, -1, __ATOMIC_RELEASE);
			return;
		}
		lib->slots[i] = p;
	}
	lib->msg[0] = '\0';
	__atomic_store_n(&lib->state, 1, __ATOMIC_RELEASE);
}

bool lazylib_ready(lazylib *lib)
{
	int s = __atomic_load_n(&lib->state, __ATOMIC_ACQUIRE);
	if (s == 0) {
		pthread_mutex_lock(&lib->mu);
		if (lib->state == 0)
			load_locked(lib);
		s = lib->state;
		pthread_mutex_unlock(&lib->mu);
	}
	return s == 1;
}

custos_err lazylib_load(lazylib *lib)
{
	if (lazylib_ready(lib))
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_UNSUPPORTED, "%s", lib->msg);
}

const char *lazylib_error(const lazylib *lib)
{
	return __atomic_load_n(&lib->state, __ATOMIC_ACQUIRE) == -1 ? lib->msg : "";
}

/* Weak: a program that links OpenSSL itself (the bench tools link core with -lcrypto) has no
 * trampolines, and nothing to bind. */
extern int custos_ossl_bind(char *msg, size_t msgsz) __attribute__((weak));

custos_err lazylib_openssl(void)
{
	char msg[LAZYLIB_MSG_MAX];
	if (custos_ossl_bind == NULL || custos_ossl_bind(msg, sizeof(msg)) == 0)
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_UNSUPPORTED, "%s", msg);
}
