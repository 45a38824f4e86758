/* The command's environment: host variables on the profile's allow-list, then its own. */
#include <stdlib.h>
#include <string.h>

#include "sb_int.h"

extern char **environ;

void sb_strv_free(char **v)
{
	if (v == NULL)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

char **sb_strv_dup(const char *const *v, size_t max, custos_err *e)
{
	size_t n = 0;
	while (v[n]) {
		if (++n > max) {
			*e = err_set(CUSTOS_ERR_LIMIT, "sandbox: more than %zu arguments", max);
			return NULL;
		}
	}
	char **out = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(v[i]);
	*e = CUSTOS_OK;
	return out;
}

static bool has_name(char **env, size_t n, const char *entry)
{
	size_t len = (size_t)(strchr(entry, '=') - entry);
	for (size_t i = 0; i < n; i++)
		if (strncmp(env[i], entry, len + 1) == 0)
			return true;
	return false;
}

static void set_entry(char **env, size_t *n, const char *entry)
{
	size_t len = (size_t)(strchr(entry, '=') - entry);
	for (size_t i = 0; i < *n; i++)
		if (strncmp(env[i], entry, len + 1) == 0) {
			free(env[i]);
			env[i] = xstrdup(entry);
			return;
		}
	env[(*n)++] = xstrdup(entry);
}

custos_err sb_env_build(const sandbox_profile *p, char ***out)
{
	size_t cap = p->n_env_allow + p->n_env_set + 4; /* + PATH, HOME, TMPDIR, NULL */
	char **env = xcalloc(cap, sizeof(char *));
	size_t n = 0;

	for (size_t i = 0; i < p->n_env_allow; i++) {
		const char *v = getenv(p->env_allow[i]);
		if (v == NULL)
			continue;
		size_t len = strlen(p->env_allow[i]) + 1 + strlen(v) + 1;
		char *s = xcalloc(1, len);
		memcpy(s, p->env_allow[i], strlen(p->env_allow[i]));
		s[strlen(p->env_allow[i])] = '=';
		memcpy(s + strlen(p->env_allow[i]) + 1, v, strlen(v));
		if (has_name(env, n, s)) {
			free(s);
			continue;
		}
		env[n++] = s;
	}
	for (size_t i = 0; i < p->n_env_set; i++)
		set_entry(env, &n, p->env_set[i]);
	if (!has_name(env, n, "PATH="))
		env[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	/* HOME and TMPDIR point at the scratch area unless the profile says otherwise. */
	const char *scratch = p->scratch_target ? p->scratch_target : "/tmp";
	static const char *const vars[] = { "HOME=", "TMPDIR=" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(vars); i++) {
		if (has_name(env, n, vars[i]))
			continue;
		size_t a = strlen(vars[i]), b = strlen(scratch);
		char *s = xcalloc(1, a + b + 1);
		memcpy(s, vars[i], a);
		memcpy(s + a, scratch, b);
		env[n++] = s;
	}
	env[n] = NULL;
	*out = env;
	return CUSTOS_OK;
}
