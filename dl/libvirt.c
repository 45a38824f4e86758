/*
 * libvirt bound on first use (include/custos/lazylib.h): the libvirt functions custos calls,
 * defined here with the prototypes of libvirt's own headers and forwarded to libvirt.so.0, which
 * is loaded only when a command needs the VM backend. libvirt and its ~55 libraries (gnutls,
 * libxml2, glib, ...) used to cost every custos process ~7 ms of mapping and relocation before
 * main, `custos sandbox exec` included. Without libvirt the calls fail as libvirt's own failures
 * do (NULL / -1), and virGetLastError says which file could not be loaded.
 */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "custos/lazylib.h"

/* Every libvirt function custos calls (sandbox/vm_libvirt.c, cli/cmd_version.c, test_vm.c). A
 * call to one not listed here fails to link: nothing falls back to a DT_NEEDED entry; add it
 * here (X list and a stub with the header's prototype). */
#define VIRT_FUNCS(X)                                                                              \
	X(virConnectOpen)                                                                          \
	X(virConnectClose)                                                                         \
	X(virConnectDomainEventRegisterAny)                                                        \
	X(virConnectDomainEventDeregisterAny)                                                      \
	X(virConnectListAllDomains)                                                                \
	X(virDomainDefineXML)                                                                      \
	X(virDomainUndefine)                                                                       \
	X(virDomainGetUUIDString)                                                                  \
	X(virDomainCreateXML)                                                                      \
	X(virDomainDestroy)                                                                        \
	X(virDomainFree)                                                                           \
	X(virDomainRef)                                                                            \
	X(virDomainGetName)                                                                        \
	X(virDomainIsActive)                                                                       \
	X(virDomainIsPersistent)                                                                   \
	X(virDomainLookupByName)                                                                   \
	X(virDomainGetXMLDesc)                                                                     \
	X(virEventRegisterDefaultImpl)                                                             \
	X(virEventRunDefaultImpl)                                                                  \
	X(virEventAddTimeout)                                                                      \
	X(virEventRemoveTimeout)                                                                   \
	X(virGetLastError)                                                                         \
	X(virSetErrorFunc)                                                                         \
	X(virGetVersion)

enum {
#define X(f) SYM_##f,
	VIRT_FUNCS(X)
#undef X
	        SYM__COUNT
};
static const char *const virt_names[] = {
#define X(f) #f,
	VIRT_FUNCS(X)
#undef X
};
static void *virt_slots[SYM__COUNT];
static lazylib virt_lib =
        LAZYLIB_INIT("libvirt.so.0", "the VM backend", "libvirt0", virt_names, virt_slots);

/* The bound function, with its header's type (a mismatch with the definition below, or with
 * libvirt's header, is a compile error). */
#define CALL(f) ((__typeof__(&f))virt_slots[SYM_##f])

custos_err lazylib_libvirt(void)
{
	return lazylib_load(&virt_lib);
}

virConnectPtr virConnectOpen(const char *name)
{
	return lazylib_ready(&virt_lib) ? CALL(virConnectOpen)(name) : NULL;
}

int virConnectClose(virConnectPtr conn)
{
	return lazylib_ready(&virt_lib) ? CALL(virConnectClose)(conn) : -1;
}

int virConnectDomainEventRegisterAny(virConnectPtr conn, virDomainPtr dom, int eventID,
                                     virConnectDomainEventGenericCallback cb, void *opaque,
                                     virFreeCallback freecb)
{
	return lazylib_ready(&virt_lib) ? CALL(virConnectDomainEventRegisterAny)(conn, dom, eventID,
	                                                                         cb, opaque, freecb)
	                                : -1;
}

int virConnectDomainEventDeregisterAny(virConnectPtr conn, int callbackID)
{
	return lazylib_ready(&virt_lib) ? CALL(virConnectDomainEventDeregisterAny)(conn, callbackID)
	                                : -1;
}

int virConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains, unsigned int flags)
{
	return lazylib_ready(&virt_lib) ? CALL(virConnectListAllDomains)(conn, domains, flags) : -1;
}

virDomainPtr virDomainDefineXML(virConnectPtr conn, const char *xml)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainDefineXML)(conn, xml) : NULL;
}

int virDomainUndefine(virDomainPtr domain)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainUndefine)(domain) : -1;
}

int virDomainGetUUIDString(virDomainPtr domain, char *uuid)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainGetUUIDString)(domain, uuid) : -1;
}

virDomainPtr virDomainCreateXML(virConnectPtr conn, const char *xmlDesc, unsigned int flags)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainCreateXML)(conn, xmlDesc, flags) : NULL;
}

int virDomainDestroy(virDomainPtr domain)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainDestroy)(domain) : -1;
}

int virDomainFree(virDomainPtr domain)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainFree)(domain) : -1;
}

int virDomainRef(virDomainPtr domain)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainRef)(domain) : -1;
}

const char *virDomainGetName(virDomainPtr domain)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainGetName)(domain) : NULL;
}

int virDomainIsActive(virDomainPtr dom)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainIsActive)(dom) : -1;
}

int virDomainIsPersistent(virDomainPtr dom)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainIsPersistent)(dom) : -1;
}

virDomainPtr virDomainLookupByName(virConnectPtr conn, const char *name)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainLookupByName)(conn, name) : NULL;
}

char *virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags)
{
	return lazylib_ready(&virt_lib) ? CALL(virDomainGetXMLDesc)(domain, flags) : NULL;
}

int virEventRegisterDefaultImpl(void)
{
	return lazylib_ready(&virt_lib) ? CALL(virEventRegisterDefaultImpl)() : -1;
}

int virEventRunDefaultImpl(void)
{
	return lazylib_ready(&virt_lib) ? CALL(virEventRunDefaultImpl)() : -1;
}

int virEventAddTimeout(int frequency, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff)
{
	return lazylib_ready(&virt_lib) ? CALL(virEventAddTimeout)(frequency, cb, opaque, ff) : -1;
}

int virEventRemoveTimeout(int timer)
{
	return lazylib_ready(&virt_lib) ? CALL(virEventRemoveTimeout)(timer) : -1;
}

/* Without libvirt, the error every failed call above leaves: which file, and why. */
static virError load_error = { .code = VIR_ERR_NO_SUPPORT, .level = VIR_ERR_ERROR };

virErrorPtr virGetLastError(void)
{
	if (lazylib_ready(&virt_lib))
		return CALL(virGetLastError)();
	load_error.message = (char *)lazylib_error(&virt_lib);
	return &load_error;
}

void virSetErrorFunc(void *userData, virErrorFunc handler)
{
	if (lazylib_ready(&virt_lib))
		CALL(virSetErrorFunc)(userData, handler);
}

int virGetVersion(unsigned long *libVer, const char *type, unsigned long *typeVer)
{
	return lazylib_ready(&virt_lib) ? CALL(virGetVersion)(libVer, type, typeVer) : -1;
}
