/*
 * custos.yaml, the platform team's file: loaded with libyaml into typed structs. Every
 * problem (unknown key, wrong type, missing key, value out of range) is reported with
 * file:line:col; a config with any error is never used.
 * (Part of core; kept apart from core.h because it is large and only the daemon needs it.)
 */
#ifndef CUSTOS_CONFIG_H
#define CUSTOS_CONFIG_H

#include "custos/core.h"

typedef struct custos_config custos_config;

/* Loads and validates path. On success *out is owned by the caller (config_free). On
 * failure every problem is in d and CUSTOS_ERR_PARSE or CUSTOS_ERR_INVAL is returned. */
custos_err config_load(const char *path, custos_config **out, diag_list *d) CUSTOS_WUR;
void config_free(custos_config *cfg);

#endif
