/*
 * libmicrohttpd bound on first use (include/custos/lazylib.h): the MHD_* functions the admin API
 * (proxy/admin.c) calls, with the prototypes of microhttpd.h, forwarded to libmicrohttpd.so.12,
 * which is loaded when the admin API starts. It brings gnutls and its dependency tree, ~1 ms of
 * every custos process start otherwise. Without it, MHD_start_daemon returns NULL after logging
 * which file could not be loaded, and the admin API (and with it `custos up`) does not start.
 */
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <microhttpd.h>

#include "custos/lazylib.h"

#define MHD_FUNCS(X)                                                                               \
	X(MHD_start_daemon_va)                                                                     \
	X(MHD_stop_daemon)                                                                         \
	X(MHD_create_response_from_buffer)                                                         \
	X(MHD_add_response_header)                                                                 \
	X(MHD_destroy_response)                                                                    \
	X(MHD_queue_response)                                                                      \
	X(MHD_get_connection_info)                                                                 \
	X(MHD_lookup_connection_value)                                                             \
	X(MHD_get_connection_values)                                                               \
	X(MHD_add_connection)                                                                      \
	X(MHD_get_version)

enum {
#define X(f) SYM_##f,
	MHD_FUNCS(X)
#undef X
	        SYM__COUNT
};
static const char *const mhd_names[] = {
#define X(f) #f,
	MHD_FUNCS(X)
#undef X
};
static void *mhd_slots[SYM__COUNT];
static lazylib mhd_lib = LAZYLIB_INIT("libmicrohttpd.so.12", "the admin API", "libmicrohttpd12",
                                      mhd_names, mhd_slots);

#define CALL(f)           ((__typeof__(&f))mhd_slots[SYM_##f])
#define FWD(f, fail, ...) (lazylib_ready(&mhd_lib) ? CALL(f)(__VA_ARGS__) : (fail))

custos_err lazylib_microhttpd(void)
{
	return lazylib_load(&mhd_lib);
}

/* Variadic: forwarded as a va_list through the library's own MHD_start_daemon_va. */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
	if (!lazylib_ready(&mhd_lib)) {
		log_error("%s", lazylib_error(&mhd_lib));
		return NULL;
	}
	va_list ap;
	va_start(ap, dh_cls);
	struct MHD_Daemon *d = CALL(MHD_start_daemon_va)(flags, port, apc, apc_cls, dh, dh_cls, ap);
	va_end(ap);
	return d;
}

struct MHD_Daemon *MHD_start_daemon_va(unsigned int flags, uint16_t port,
                                       MHD_AcceptPolicyCallback apc, void *apc_cls,
                                       MHD_AccessHandlerCallback dh, void *dh_cls, va_list ap)
{
	if (!lazylib_ready(&mhd_lib)) {
		log_error("%s", lazylib_error(&mhd_lib));
		return NULL;
	}
	return CALL(MHD_start_daemon_va)(flags, port, apc, apc_cls, dh, dh_cls, ap);
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
	if (lazylib_ready(&mhd_lib))
		CALL(MHD_stop_daemon)(daemon);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
	return FWD(MHD_create_response_from_buffer, NULL, size, buffer, mode);
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header,
                                        const char *content)
{
	return FWD(MHD_add_response_header, MHD_NO, response, header, content);
}

void MHD_destroy_response(struct MHD_Response *response)
{
	if (lazylib_ready(&mhd_lib))
		CALL(MHD_destroy_response)(response);
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
	return FWD(MHD_queue_response, MHD_NO, connection, status_code, response);
}

/* Variadic only for info types custos never asks for (the legacy ones that took an argument):
 * the kinds it uses (CONNECTION_FD, CLIENT_ADDRESS, SOCKET_CONTEXT) read no further argument. */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
	return FWD(MHD_get_connection_info, NULL, connection, info_type);
}

const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                                        const char *key)
{
	return FWD(MHD_lookup_connection_value, NULL, connection, kind, key);
}

int MHD_get_connection_values(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                              MHD_KeyValueIterator iterator, void *iterator_cls)
{
	return FWD(MHD_get_connection_values, -1, connection, kind, iterator, iterator_cls);
}

/* The admin TLS gate's hand-over (proxy/admin_tls.c); the library closes the socket when it
 * refuses it, and so does this without the library. */
enum MHD_Result MHD_add_connection(struct MHD_Daemon *daemon, MHD_socket client_socket,
                                   const struct sockaddr *addr, socklen_t addrlen)
{
	if (!lazylib_ready(&mhd_lib)) {
		close(client_socket);
		return MHD_NO;
	}
	return CALL(MHD_add_connection)(daemon, client_socket, addr, addrlen);
}

const char *MHD_get_version(void)
{
	return FWD(MHD_get_version, "unavailable");
}
