/*
 * Hyperscan bound on first use (include/custos/lazylib.h): the hs_* functions custos calls,
 * with the prototypes of Hyperscan's headers, forwarded to libhs.so.5, which is loaded only
 * when content inspection is first compiled. libhs brings libstdc++ with it, ~0.5 ms of every
 * custos process start otherwise. Without it, compiling fails with an hs_compile_error_t whose
 * message names the file; inspect_engine_new asks lazylib_hyperscan() first.
 */
#include <stdint.h>
#include <stdlib.h>

#include <hs/hs.h>

#include "custos/lazylib.h"

/* Every Hyperscan function custos calls (policy/inspect_*.c, tests/unit/test_inspect.c). */
#define HS_FUNCS(X)                                                                                \
	X(hs_valid_platform)                                                                       \
	X(hs_version)                                                                              \
	X(hs_compile)                                                                              \
	X(hs_compile_multi)                                                                        \
	X(hs_expression_info)                                                                      \
	X(hs_free_compile_error)                                                                   \
	X(hs_free_database)                                                                        \
	X(hs_database_size)                                                                        \
	X(hs_alloc_scratch)                                                                        \
	X(hs_free_scratch)                                                                         \
	X(hs_open_stream)                                                                          \
	X(hs_scan_stream)                                                                          \
	X(hs_close_stream)                                                                         \
	X(hs_stream_size)                                                                          \
	X(hs_scan)

enum {
#define X(f) SYM_##f,
	HS_FUNCS(X)
#undef X
	        SYM__COUNT
};
static const char *const hs_names[] = {
#define X(f) #f,
	HS_FUNCS(X)
#undef X
};
static void *hs_slots[SYM__COUNT];
static lazylib hs_lib =
        LAZYLIB_INIT("libhs.so.5", "content inspection", "libhyperscan5", hs_names, hs_slots);

#define CALL(f)           ((__typeof__(&f))hs_slots[SYM_##f])
#define FWD(f, fail, ...) (lazylib_ready(&hs_lib) ? CALL(f)(__VA_ARGS__) : (fail))

custos_err lazylib_hyperscan(void)
{
	return lazylib_load(&hs_lib);
}

/* What a compile call reports without the library: the load failure, as a compile error. */
static hs_compile_error_t load_error = { .expression = -1 };

static hs_error_t compile_unavailable(hs_compile_error_t **error)
{
	load_error.message = (char *)lazylib_error(&hs_lib);
	if (error)
		*error = &load_error;
	return HS_COMPILER_ERROR;
}

hs_error_t hs_valid_platform(void)
{
	return FWD(hs_valid_platform, HS_ARCH_ERROR);
}

const char *hs_version(void)
{
	return FWD(hs_version, "unavailable");
}

hs_error_t hs_compile(const char *expression, unsigned int flags, unsigned int mode,
                      const hs_platform_info_t *platform, hs_database_t **db,
                      hs_compile_error_t **error)
{
	if (!lazylib_ready(&hs_lib))
		return compile_unavailable(error);
	return CALL(hs_compile)(expression, flags, mode, platform, db, error);
}

hs_error_t hs_compile_multi(const char *const *expressions, const unsigned int *flags,
                            const unsigned int *ids, unsigned int elements, unsigned int mode,
                            const hs_platform_info_t *platform, hs_database_t **db,
                            hs_compile_error_t **error)
{
	if (!lazylib_ready(&hs_lib))
		return compile_unavailable(error);
	return CALL(hs_compile_multi)(expressions, flags, ids, elements, mode, platform, db, error);
}

hs_error_t hs_expression_info(const char *expression, unsigned int flags, hs_expr_info_t **info,
                              hs_compile_error_t **error)
{
	if (!lazylib_ready(&hs_lib))
		return compile_unavailable(error);
	return CALL(hs_expression_info)(expression, flags, info, error);
}

hs_error_t hs_free_compile_error(hs_compile_error_t *error)
{
	if (error == NULL || error == &load_error)
		return HS_SUCCESS;
	return FWD(hs_free_compile_error, HS_INVALID, error);
}

hs_error_t hs_free_database(hs_database_t *db)
{
	if (db == NULL)
		return HS_SUCCESS;
	return FWD(hs_free_database, HS_INVALID, db);
}

hs_error_t hs_database_size(const hs_database_t *database, size_t *database_size)
{
	return FWD(hs_database_size, HS_INVALID, database, database_size);
}

hs_error_t hs_alloc_scratch(const hs_database_t *db, hs_scratch_t **scratch)
{
	return FWD(hs_alloc_scratch, HS_INVALID, db, scratch);
}

hs_error_t hs_free_scratch(hs_scratch_t *scratch)
{
	if (scratch == NULL)
		return HS_SUCCESS;
	return FWD(hs_free_scratch, HS_INVALID, scratch);
}

hs_error_t hs_open_stream(const hs_database_t *db, unsigned int flags, hs_stream_t **stream)
{
	return FWD(hs_open_stream, HS_INVALID, db, flags, stream);
}

hs_error_t hs_scan_stream(hs_stream_t *id, const char *data, unsigned int length,
                          unsigned int flags, hs_scratch_t *scratch, match_event_handler onEvent,
                          void *ctxt)
{
	return FWD(hs_scan_stream, HS_INVALID, id, data, length, flags, scratch, onEvent, ctxt);
}

hs_error_t hs_close_stream(hs_stream_t *id, hs_scratch_t *scratch, match_event_handler onEvent,
                           void *ctxt)
{
	return FWD(hs_close_stream, HS_INVALID, id, scratch, onEvent, ctxt);
}

hs_error_t hs_stream_size(const hs_database_t *database, size_t *stream_size)
{
	return FWD(hs_stream_size, HS_INVALID, database, stream_size);
}

hs_error_t hs_scan(const hs_database_t *db, const char *data, unsigned int length,
                   unsigned int flags, hs_scratch_t *scratch, match_event_handler onEvent,
                   void *context)
{
	return FWD(hs_scan, HS_INVALID, db, data, length, flags, scratch, onEvent, context);
}
