/*
 * Operational logging to stderr: human text on a terminal, JSON lines otherwise so journald
 * and log shippers get structured records. Audit events never go through here.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "custos/core.h"

#define LOG_LINE_MAX 4096

static log_level cur_level = LOG_LVL_INFO;
static log_format cur_format = LOG_FMT_AUTO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_setup(log_level level, log_format format)
{
	cur_level = level;
	cur_format = format;
}

log_level log_get_level(void)
{
	return cur_level;
}

custos_err log_level_parse(span s, log_level *out)
{
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(level_names); i++) {
		if (span_eq_cstr(s, level_names[i])) {
			*out = (log_level)i;
			return CUSTOS_OK;
		}
	}
	return err_set(CUSTOS_ERR_INVAL, "unknown log level '%.*s' (error, warn, info, debug)",
	               (int)s.len, s.ptr);
}

void log_msg(log_level level, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	char ts[TM_RFC3339_LEN];
	va_list ap;

	if (level > cur_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	log_format f = cur_format;
	if (f == LOG_FMT_AUTO)
		f = isatty(STDERR_FILENO) ? LOG_FMT_TEXT : LOG_FMT_JSON;
	tm_rfc3339(tm_wall_ns(), ts);

	pthread_mutex_lock(&log_lock);
	if (f == LOG_FMT_TEXT) {
		fprintf(stderr, "%s custos[%d] %s: %s\n", ts, (int)getpid(), level_names[level],
		        msg);
	} else {
		uint8_t storage[LOG_LINE_MAX * 2 + 256];
		buf b = { .data = storage, .cap = sizeof(storage), .max = sizeof(storage) };
		json_writer w;
		json_init(&w, &b);
		json_obj_begin(&w);
		json_kv_cstr(&w, "ts", ts);
		json_kv_cstr(&w, "level", level_names[level]);
		json_kv_i64(&w, "pid", (int64_t)getpid());
		json_kv_cstr(&w, "msg", msg);
		json_obj_end(&w);
		if (json_finish(&w) == CUSTOS_OK)
			fprintf(stderr, "%.*s\n", (int)buf_used(&b), (const char *)buf_ptr(&b));
		else
			fprintf(stderr, "{\"level\":\"error\",\"msg\":\"log line too long\"}\n");
	}
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
}
