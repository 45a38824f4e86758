/*
 * The event builder: a producer fills an audit_event on its own stack through json_writer
 * into an inline buffer of AUDIT_MAX_EVENT bytes, so building an event never allocates.
 */
#include <string.h>

#include "audit_int.h"

void audit_event_begin_at(audit_event *ev, const char *type, uint64_t wall_ns)
{
	char ts[TM_RFC3339_LEN];

	memset(&ev->b, 0, sizeof(ev->b));
	ev->b.data = ev->storage;
	ev->b.cap = sizeof(ev->storage);
	ev->b.max = sizeof(ev->storage);
	ev->ended = false;
	json_init(&ev->w, &ev->b);
	json_obj_begin(&ev->w);
	json_kv_cstr(&ev->w, "time", tm_rfc3339(wall_ns, ts));
	json_kv_cstr(&ev->w, "type", type ? type : "unknown");
}

void audit_event_begin(audit_event *ev, const char *type)
{
	audit_event_begin_at(ev, type, tm_wall_ns());
}

void audit_event_str(audit_event *ev, const char *key, span v)
{
	json_kv_str(&ev->w, key, v);
}

void audit_event_cstr(audit_event *ev, const char *key, const char *v)
{
	if (v != NULL)
		json_kv_cstr(&ev->w, key, v);
}

void audit_event_u64(audit_event *ev, const char *key, uint64_t v)
{
	json_kv_u64(&ev->w, key, v);
}

void audit_event_bool(audit_event *ev, const char *key, bool v)
{
	json_kv_bool(&ev->w, key, v);
}

void audit_event_strs(audit_event *ev, const char *key, const char *const *v, size_t n)
{
	json_key(&ev->w, key);
	json_arr_begin(&ev->w);
	for (size_t i = 0; i < n; i++)
		json_cstr(&ev->w, v[i]);
	json_arr_end(&ev->w);
}

void audit_event_findings(audit_event *ev, const audit_finding *f, size_t n)
{
	if (n > AUDIT_MAX_FINDINGS && ev->w.err == CUSTOS_OK)
		ev->w.err =
		        err_set(CUSTOS_ERR_LIMIT, "more than %d finding types", AUDIT_MAX_FINDINGS);
	json_key(&ev->w, "findings");
	json_arr_begin(&ev->w);
	for (size_t i = 0; i < n && i < AUDIT_MAX_FINDINGS; i++) {
		json_obj_begin(&ev->w);
		json_kv_cstr(&ev->w, "type", f[i].type);
		json_kv_u64(&ev->w, "count", f[i].count);
		json_obj_end(&ev->w);
	}
	json_arr_end(&ev->w);
}

void audit_event_durations(audit_event *ev, const audit_duration *d, size_t n)
{
	json_key(&ev->w, "duration_ns");
	json_obj_begin(&ev->w);
	for (size_t i = 0; i < n; i++)
		json_kv_u64(&ev->w, d[i].phase, d[i].ns);
	json_obj_end(&ev->w);
}

custos_err audit_event_end(audit_event *ev)
{
	if (!ev->ended) {
		json_obj_end(&ev->w);
		ev->ended = true;
	}
	GUARD(json_finish(&ev->w));
	ENSURE(buf_used(&ev->b) >= 2, CUSTOS_ERR_INTERNAL, "empty event");
	return CUSTOS_OK;
}

span audit_event_body(const audit_event *ev)
{
	span s = buf_span(&ev->b);
	if (s.len < 2)
		return span_of("", 0);
	return span_of(s.ptr + 1, s.len - 2);
}

custos_err audit_event_from_body(audit_event *ev, span body)
{
	ENSURE(body.len > 0, CUSTOS_ERR_INVAL, "audit: empty event body");
	ENSURE(body.len <= AUDIT_MAX_EVENT, CUSTOS_ERR_LIMIT, "audit: event of %zu bytes",
	       body.len);
	memset(&ev->b, 0, sizeof(ev->b));
	ev->b.data = ev->storage;
	ev->b.cap = sizeof(ev->storage);
	ev->b.max = sizeof(ev->storage);
	json_init(&ev->w, &ev->b);
	ev->storage[0] = '{';
	memcpy(ev->storage + 1, body.ptr, body.len);
	ev->storage[body.len + 1] = '}';
	ev->b.len = body.len + 2;
	ev->ended = true;
	return CUSTOS_OK;
}
