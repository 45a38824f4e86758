/*
 * VM sandbox: the vm_profile of a model of custos.yaml (sandbox.type: vm). The one mapping from
 * a profile's vm: block (and the model's sandbox block) to the domain custos starts: `custos up`
 * (cli/vm_up.c) uses it for every VM it starts, at start and on a reload, and the unit tests
 * drive it without libvirt. A setting it cannot carry into the VM is refused, never dropped.
 */
#include <stdio.h>
#include <string.h>

#include "custos/vm.h"

custos_err vm_profile_from_config(const cfg_model *m, const cfg_profile *pr,
                                  const vm_config_vm *inst, int pin[], vm_profile *p)
{
	const char *id = m->id ? m->id : "?";

	ENSURE(pr && pr->vm.enabled, CUSTOS_ERR_INVAL, "model %s: its profile has no vm: block",
	       id);
	/* Nothing carries these into a guest: its image's init starts the model server. */
	ENSURE(m->sandbox.n_command == 0 && m->sandbox.n_env == 0 && m->sandbox.workdir == NULL,
	       CUSTOS_ERR_INVAL,
	       "model %s: sandbox.command, sandbox.env and sandbox.workdir are not passed into a "
	       "VM (its image's init starts the model server; give it arguments through "
	       "vm.cmdline): remove them",
	       id);
	memset(p, 0, sizeof(*p));
	p->name = inst->name;
	p->domain_type = pr->vm.domain_type == CFG_VM_QEMU ? "qemu" : "kvm";
	p->vcpus = (unsigned)pr->vm.vcpus;
	p->memory_mib = pr->vm.memory >> 20;
	p->hugepages = pr->vm.hugepages;
	if (pr->vm.n_cpu_pinning) {
		ENSURE(pr->vm.n_cpu_pinning == pr->vm.vcpus && pr->vm.n_cpu_pinning <= VM_MAX_VCPUS,
		       CUSTOS_ERR_INVAL, "model %s: cpu_pinning needs one host CPU per vCPU", id);
		for (size_t i = 0; i < pr->vm.n_cpu_pinning; i++)
			pin[i] = (int)pr->vm.cpu_pinning[i];
		p->cpu_pin = pin;
	}
	if (pr->vm.kernel) {
		p->boot = VM_BOOT_KERNEL;
		p->kernel = pr->vm.kernel;
		p->initrd = pr->vm.initrd;
		p->cmdline = pr->vm.cmdline;
	} else {
		p->boot = VM_BOOT_DISK;
	}
	p->disk_base = pr->vm.disk; /* with a kernel too: the guest's vda (root=/dev/vda) */
	p->console_log = inst->console_log;
	if (inst->chan == VM_CHAN_VIRTIO_SERIAL) {
		p->channel_paths[0] = inst->chan_path;
		p->channel_names[0] = VM_CHANNEL_NAME;
		p->n_channels = 1;
	} /* vsock: the caller reserves the CID once its libvirt connection is open */
	ENSURE(pr->vm.n_hostdev <= VM_MAX_HOSTDEVS, CUSTOS_ERR_LIMIT,
	       "model %s: more than %d hostdevs", id, VM_MAX_HOSTDEVS);
	for (size_t i = 0; i < pr->vm.n_hostdev; i++)
		GUARD(err_wrap(
		        vm_pci_parse(span_cstr(pr->vm.hostdev[i]), &p->hostdevs[p->n_hostdevs++]),
		        "model %s: hostdev %s", id, pr->vm.hostdev[i]));
	return CUSTOS_OK;
}

custos_err vm_config_chan_socket(const char *id, const cfg_profile *pr, char *out, size_t size)
{
	int r = pr && pr->vm.channel_socket ? snprintf(out, size, "%s", pr->vm.channel_socket)
	                                    : snprintf(out, size, "/run/custos/vm-%s.sock", id);
	ENSURE(r > 0 && (size_t)r < size, CUSTOS_ERR_LIMIT,
	       "model %s: channel socket path too long", id);
	return CUSTOS_OK;
}
