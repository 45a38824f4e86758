/*
 * Capabilities: in the child, raw system calls (capset, prctl) clear the bounding set, the
 * ambient set and every capability set, and lock the securebits so uid 0 semantics cannot
 * bring them back across execve. The proxy's self-restriction uses libcap.
 */
#include <errno.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

static int last_cap(void)
{
	/* CAP_LAST_CAP of the headers may be older than the kernel: probe upward. */
	int c = CAP_LAST_CAP;
	while (c < 63 && prctl(PR_CAPBSET_READ, c + 1, 0, 0, 0) >= 0)
		c++;
	return c;
}

int sb_caps_raise_effective(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) == -1)
		return errno;
	d[0].effective = d[0].permitted;
	d[1].effective = d[1].permitted;
	if (syscall(SYS_capset, &h, d) == -1)
		return errno;
	return 0;
}

int sb_caps_drop_all(const char **step)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	int last = last_cap();

	*step = "drop bounding set";
	for (int c = 0; c <= last; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == -1 && errno != EINVAL)
			return errno;
	*step = "clear ambient set";
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL)
		return errno;
	*step = "lock securebits";
	if (prctl(PR_SET_SECUREBITS,
	          SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
	                  SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
	                  SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
	          0, 0, 0) == -1)
		return errno;
	*step = "capset (clear)";
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &h, d) == -1)
		return errno;
	return 0;
}

custos_err sb_caps_drop_bounding(void)
{
	int last = last_cap();

	for (int c = 0; c <= last; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == -1 && errno != EINVAL)
			return err_sys("caps: dropping %d from the bounding set", c);
	return CUSTOS_OK;
}

custos_err sb_caps_drop_self(void)
{
	int last = last_cap();
	/* Without CAP_SETPCAP the bounding set cannot shrink (EPERM); such a caller has no
	 * capabilities to lose and NO_NEW_PRIVS keeps execve from granting any. With it, every
	 * failure is an error: the bounding set must end empty. */
	cap_flag_value_t setpcap = CAP_CLEAR;
	cap_t cur = cap_get_proc();
	ENSURE(cur != NULL, CUSTOS_ERR_NOMEM, "caps: cap_get_proc failed");
	int grc = cap_get_flag(cur, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap);
	cap_free(cur);
	ENSURE(grc == 0, CUSTOS_ERR_INTERNAL, "caps: reading CAP_SETPCAP failed");

	for (int c = 0; c <= last; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == -1 && errno != EINVAL &&
		    !(errno == EPERM && setpcap == CAP_CLEAR))
			return err_sys("caps: dropping %d from the bounding set", c);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL)
		return err_sys("caps: clearing the ambient set");
	cap_t caps = cap_init(); /* all sets empty */
	ENSURE(caps != NULL, CUSTOS_ERR_NOMEM, "caps: cap_init failed");
	int rc = cap_set_proc(caps);
	int saved = errno;
	cap_free(caps);
	if (rc == -1) {
		errno = saved;
		return err_sys("caps: cap_set_proc");
	}
	/* Verify: a failure here means the process still holds something. */
	caps = cap_get_proc();
	ENSURE(caps != NULL, CUSTOS_ERR_NOMEM, "caps: cap_get_proc failed");
	cap_t none = cap_init();
	int diff = none ? cap_compare(caps, none) : 1;
	cap_free(none);
	cap_free(caps);
	ENSURE(diff == 0, CUSTOS_ERR_INTERNAL, "caps: capabilities remain after clearing");
	return CUSTOS_OK;
}
