/*
 * Diagnostics with positions: every problem in a config or policy file is collected as
 * file:line:col with an optional hint, so one check run reports all of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/core.h"

#define DIAG_MAX_ITEMS 1000

void diag_init(diag_list *d)
{
	memset(d, 0, sizeof(*d));
}

void diag_free(diag_list *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->items[i].file);
		free(d->items[i].message);
		free(d->items[i].hint);
	}
	free(d->items);
	memset(d, 0, sizeof(*d));
}

void diag_add(diag_list *d, diag_severity sev, const char *file, unsigned line, unsigned col,
              const char *hint, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (sev == DIAG_ERROR)
		d->errors++;
	else
		d->warnings++;
	if (d->n >= DIAG_MAX_ITEMS)
		return; /* counted, not stored: the first thousand say enough */
	if (d->n == d->cap) {
		size_t ncap = d->cap ? d->cap * 2 : 8;
		diag_item *p = realloc(d->items, ncap * sizeof(*p));
		if (p == NULL)
			return;
		d->items = p;
		d->cap = ncap;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	d->items[d->n++] = (diag_item){ .severity = sev,
		                        .file = xstrdup(file ? file : "<input>"),
		                        .line = line,
		                        .col = col,
		                        .message = xstrdup(msg),
		                        .hint = hint ? xstrdup(hint) : NULL };
}

void diag_print(const diag_list *d, void *fp)
{
	FILE *f = fp;

	for (size_t i = 0; i < d->n; i++) {
		const diag_item *it = &d->items[i];
		const char *sev = it->severity == DIAG_ERROR ? "error" : "warning";
		if (it->line > 0)
			fprintf(f, "%s:%u:%u: %s: %s", it->file, it->line, it->col, sev,
			        it->message);
		else
			fprintf(f, "%s: %s: %s", it->file, sev, it->message);
		if (it->hint)
			fprintf(f, " (hint: %s)", it->hint);
		fputc('\n', f);
	}
	if (d->n < d->errors + d->warnings)
		fprintf(f, "... and %zu more\n", d->errors + d->warnings - d->n);
}

/* One item as diag_print writes it, without the newline. */
static void diag_format(const diag_item *it, char *out, size_t size)
{
	const char *sev = it->severity == DIAG_ERROR ? "error" : "warning";
	int n = it->line > 0 ? snprintf(out, size, "%s:%u:%u: %s: %s", it->file, it->line, it->col,
	                                sev, it->message)
	                     : snprintf(out, size, "%s: %s: %s", it->file, sev, it->message);
	if (it->hint && n > 0 && (size_t)n < size)
		snprintf(out + n, size - (size_t)n, " (hint: %s)", it->hint);
}

void diag_log(const diag_list *d)
{
	char line[2048];

	for (size_t i = 0; i < d->n; i++) {
		diag_format(&d->items[i], line, sizeof(line));
		log_msg(d->items[i].severity == DIAG_ERROR ? LOG_LVL_ERROR : LOG_LVL_WARN, "%s",
		        line);
	}
	if (d->n < d->errors + d->warnings)
		log_error("... and %zu more", d->errors + d->warnings - d->n);
}

custos_err diag_err(custos_err e, const diag_list *d, const char *what)
{
	const diag_item *it = NULL;

	for (size_t i = 0; i < d->n && it == NULL; i++)
		if (d->items[i].severity == DIAG_ERROR)
			it = &d->items[i];
	if (it == NULL)
		return err_set(e, "%s has errors", what);
	char more[64] = "";
	if (d->errors > 1)
		snprintf(more, sizeof(more), " (and %zu more error(s))", d->errors - 1);
	if (it->line > 0)
		return err_set(e, "%s: %s:%u:%u: %s%s", what, it->file, it->line, it->col,
		               it->message, more);
	return err_set(e, "%s: %s: %s%s", what, it->file, it->message, more);
}

static size_t edit_distance(span a, const char *b, size_t limit)
{
	size_t bl = strlen(b);
	size_t prev[64], cur[64];

	if (a.len >= 63 || bl >= 63)
		return limit + 1;
	for (size_t j = 0; j <= bl; j++)
		prev[j] = j;
	for (size_t i = 1; i <= a.len; i++) {
		cur[0] = i;
		size_t rowmin = cur[0];
		for (size_t j = 1; j <= bl; j++) {
			size_t cost = a.ptr[i - 1] == b[j - 1] ? 0 : 1;
			size_t v = prev[j - 1] + cost;
			if (prev[j] + 1 < v)
				v = prev[j] + 1;
			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			cur[j] = v;
			if (v < rowmin)
				rowmin = v;
		}
		if (rowmin > limit)
			return limit + 1;
		memcpy(prev, cur, (bl + 1) * sizeof(size_t));
	}
	return prev[bl];
}

const char *diag_suggest(span word, const char *const *candidates, size_t n)
{
	const char *best = NULL;
	size_t best_d = 3;

	for (size_t i = 0; i < n; i++) {
		size_t dist = edit_distance(word, candidates[i], 2);
		if (dist < best_d) {
			best_d = dist;
			best = candidates[i];
		}
	}
	return best;
}
