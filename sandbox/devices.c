/*
 * Devices: the profile's device nodes and the GPU wiring. Nodes are bind-mounted from
 * device_root (mknod fails in a user namespace), each at /dev/<name>. `gpu: nvidia` adds
 * nvidia[0-9]*, nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset, nvidia-caps/ and
 * dri/; `gpu: amd` adds kfd and dri/. Both get the read-only /sys parts the user-space stacks
 * read (bus, class, dev, devices, module) from sys_root. /proc/driver is in the fresh /proc.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sb_int.h"

static custos_err add_node(sb_mounts *m, const char *root, const char *name, bool must)
{
	char src[SANDBOX_PATH_MAX + 64], dst[SANDBOX_PATH_MAX + 64];

	snprintf(src, sizeof(src), "%s/%s", root, name);
	snprintf(dst, sizeof(dst), "/dev/%s", name);
	GUARD(sb_plan_add(m, SB_OP_BIND, src, dst, 0));
	sb_op *op = sb_plan_last(m);
	op->ro = false;
	op->dev = true;
	op->must = must;
	return CUSTOS_OK;
}

static bool is_nvidia_node(const char *n)
{
	if (strncmp(n, "nvidia", 6) != 0)
		return false;
	const char *r = n + 6;
	if (*r >= '0' && *r <= '9') {
		while (*r >= '0' && *r <= '9')
			r++;
		return *r == '\0';
	}
	return strcmp(r, "ctl") == 0 || strcmp(r, "-uvm") == 0 || strcmp(r, "-uvm-tools") == 0 ||
	       strcmp(r, "-modeset") == 0 || strcmp(r, "-caps") == 0;
}

custos_err sb_devices_plan(const sandbox_profile *p, sb_mounts *m)
{
	const char *root = p->device_root ? p->device_root : "/dev";
	const char *sys = p->sys_root ? p->sys_root : "/sys";

	for (size_t i = 0; i < p->n_devices; i++)
		GUARD(add_node(m, root, p->devices[i], true));
	if (p->gpu == SANDBOX_GPU_NONE)
		return CUSTOS_OK;

	DIR *d = opendir(root);
	if (d == NULL)
		return err_sys("sandbox: gpu: opening device root %s", root);
	struct dirent *de;
	unsigned found = 0;
	custos_err e = CUSTOS_OK;
	while ((de = readdir(d)) != NULL && e == CUSTOS_OK) {
		bool want = false;
		if (p->gpu == SANDBOX_GPU_NVIDIA)
			want = is_nvidia_node(de->d_name);
		else
			want = strcmp(de->d_name, "kfd") == 0;
		if (strcmp(de->d_name, "dri") == 0)
			want = true;
		if (!want)
			continue;
		ENSURE(++found <= SANDBOX_MAX_DEVICES, CUSTOS_ERR_LIMIT,
		       "sandbox: gpu: more than %d device nodes", SANDBOX_MAX_DEVICES);
		e = add_node(m, root, de->d_name, true);
	}
	closedir(d);
	GUARD(e);
	if (found == 0)
		return err_set(CUSTOS_ERR_NOTFOUND, "sandbox: gpu %s: no device nodes in %s",
		               p->gpu == SANDBOX_GPU_NVIDIA ? "nvidia" : "amd", root);

	static const char *const sys_parts[] = { "bus", "class", "dev", "devices", "module" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sys_parts); i++) {
		char src[SANDBOX_PATH_MAX + 16], dst[32];
		snprintf(src, sizeof(src), "%s/%s", sys, sys_parts[i]);
		snprintf(dst, sizeof(dst), "/sys/%s", sys_parts[i]);
		GUARD(sb_plan_add(m, SB_OP_BIND, src, dst, 0));
		sb_plan_last(m)->must = false;
	}
	return CUSTOS_OK;
}
