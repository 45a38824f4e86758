/*
 * Operational logging to stderr: human text on a terminal, JSON lines otherwise so journald
 * and log shippers get structured records. Audit events never go through here.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "custos/core.h"

#define LOG_LINE_MAX 4096

static log_level cur_level = LOG_LVL_INFO;
static log_format cur_format = LOG_FMT_AUTO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO; /* stderr, or the file opened by log_open_file */
static char *log_path;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_setup(log_level level, log_format format)
{
	cur_level = level;
	cur_format = format;
}

static custos_err open_log(const char *path, int *out)
{
	int fd;

	do
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	while (fd == -1 && errno == EINTR);
	if (fd == -1)
		return err_sys("log file %s", path);
	*out = fd;
	return CUSTOS_OK;
}

custos_err log_open_file(const char *path)
{
	int fd = STDERR_FILENO;

	if (path != NULL)
		GUARD(open_log(path, &fd));
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	free(log_path);
	log_path = path ? xstrdup(path) : NULL;
	pthread_mutex_unlock(&log_lock);
	return CUSTOS_OK;
}

custos_err log_reopen(void)
{
	custos_err e = CUSTOS_OK;
	int fd = -1; /* gcc 12 -O2 saw it maybe-uninitialized: the Release build failed */

	pthread_mutex_lock(&log_lock);
	if (log_path != NULL) {
		e = open_log(log_path, &fd);
		if (e == CUSTOS_OK) {
			close(log_fd);
			log_fd = fd;
		}
	}
	pthread_mutex_unlock(&log_lock);
	return e;
}

log_level log_get_level(void)
{
	return cur_level;
}

bool log_is_json(void)
{
	pthread_mutex_lock(&log_lock);
	bool json = cur_format == LOG_FMT_JSON || (cur_format == LOG_FMT_AUTO && !isatty(log_fd));
	pthread_mutex_unlock(&log_lock);
	return json;
}

void log_out_of_memory(void)
{
	static const char text[] = "custos: out of memory\n";
	static const char json[] = "{\"level\":\"error\",\"msg\":\"custos: out of memory\"}\n";
	int fd = log_fd;
	bool j = cur_format == LOG_FMT_JSON || (cur_format == LOG_FMT_AUTO && !isatty(fd));

	if (file_write_all(fd, j ? json : text, j ? sizeof(json) - 1 : sizeof(text) - 1) !=
	    CUSTOS_OK) {
		/* nothing is left to report it with */
	}
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

	tm_rfc3339(tm_wall_ns(), ts);

	pthread_mutex_lock(&log_lock);
	log_format f = cur_format;
	if (f == LOG_FMT_AUTO)
		f = isatty(log_fd) ? LOG_FMT_TEXT : LOG_FMT_JSON;
	/* One write(2) per line: lines from several processes appending never interleave. */
	char line[LOG_LINE_MAX * 2 + 512];
	int n;
	if (f == LOG_FMT_TEXT) {
		n = snprintf(line, sizeof(line), "%s custos[%d] %s: %s\n", ts, (int)getpid(),
		             level_names[level], msg);
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
			n = snprintf(line, sizeof(line), "%.*s\n", (int)buf_used(&b),
			             (const char *)buf_ptr(&b));
		else
			n = snprintf(line, sizeof(line),
			             "{\"level\":\"error\",\"msg\":\"log line too long\"}\n");
	}
	if (n > 0) {
		size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
		if (file_write_all(log_fd, line, len) != CUSTOS_OK) {
			/* Nowhere better to say it; losing an operational log line is not fatal. */
		}
	}
	pthread_mutex_unlock(&log_lock);
}

static void log_rate_refill(log_rate *r, uint64_t now)
{
	if (now <= r->t_fill)
		return;
	uint64_t add = (now - r->t_fill) * r->rate / 1000000000ull;
	if (add == 0)
		return;
	if (r->tokens + add >= r->burst) {
		r->tokens = r->burst;
		r->t_fill = now;
	} else { /* keep the fraction of a token already earned */
		r->tokens += add;
		r->t_fill += add * 1000000000ull / r->rate;
	}
}

void log_rate_init(log_rate *r, uint32_t rate, uint32_t burst, uint64_t report_ns, uint64_t now)
{
	*r = (log_rate){ .rate = rate,
		         .burst = burst,
		         .report_ns = report_ns,
		         .tokens = burst,
		         .t_fill = now,
		         .t_report = now };
}

bool log_rate_take(log_rate *r, uint64_t now)
{
	log_rate_refill(r, now);
	if (r->tokens == 0) {
		r->dropped++;
		return false;
	}
	r->tokens--;
	return true;
}

uint64_t log_rate_report(log_rate *r, uint64_t now)
{
	if (r->dropped == 0)
		return 0;
	log_rate_refill(r, now);
	if (r->tokens == 0 && now - r->t_report < r->report_ns)
		return 0;
	uint64_t n = r->dropped;
	r->dropped = 0;
	r->t_report = now;
	return n;
}
