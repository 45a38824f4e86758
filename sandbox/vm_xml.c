/*
 * VM sandbox: libvirt domain XML from a vm_profile. Every value is escaped; no network
 * interface is ever written and the devices libvirt would add by default that give the guest
 * a way out or an attack surface (USB, balloon, graphics) are switched off explicitly.
 */
#include <string.h>

#include <openssl/evp.h>

#include "custos/vm.h"

custos_err vm_xml_escape(buf *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '<':
			GUARD(buf_append_cstr(out, "&lt;"));
			break;
		case '>':
			GUARD(buf_append_cstr(out, "&gt;"));
			break;
		case '&':
			GUARD(buf_append_cstr(out, "&amp;"));
			break;
		case '\'':
			GUARD(buf_append_cstr(out, "&apos;"));
			break;
		case '"':
			GUARD(buf_append_cstr(out, "&quot;"));
			break;
		default:
			/* XML 1.0 cannot carry most control characters at all, even escaped. */
			ENSURE(*p >= 0x20 || *p == '\t', CUSTOS_ERR_INVAL,
			       "control character 0x%02x in a VM profile value", *p);
			GUARD(buf_append_byte(out, *p));
		}
	}
	return CUSTOS_OK;
}

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > VM_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static bool abs_path(const char *s)
{
	return s && s[0] == '/';
}

custos_err vm_profile_check(const vm_profile *p)
{
	ENSURE(name_ok(p->name), CUSTOS_ERR_INVAL,
	       "vm name must be 1..%d characters of [A-Za-z0-9_.-], not starting with . or -",
	       VM_NAME_MAX);
	ENSURE(!p->domain_type || strcmp(p->domain_type, "kvm") == 0 ||
	               strcmp(p->domain_type, "qemu") == 0,
	       CUSTOS_ERR_INVAL, "vm %s: domain type must be kvm or qemu", p->name);
	ENSURE(p->vcpus >= 1 && p->vcpus <= VM_MAX_VCPUS, CUSTOS_ERR_INVAL,
	       "vm %s: vcpus must be 1..%d", p->name, VM_MAX_VCPUS);
	ENSURE(p->memory_mib >= 16 && p->memory_mib <= VM_MAX_MEM_MIB, CUSTOS_ERR_INVAL,
	       "vm %s: memory must be 16 MiB..%u MiB", p->name, VM_MAX_MEM_MIB);
	if (p->cpu_pin) {
		for (unsigned i = 0; i < p->vcpus; i++)
			ENSURE(p->cpu_pin[i] >= 0 && p->cpu_pin[i] < 4096, CUSTOS_ERR_INVAL,
			       "vm %s: cpu pin for vcpu %u out of range", p->name, i);
	}
	if (p->boot == VM_BOOT_KERNEL) {
		ENSURE(abs_path(p->kernel), CUSTOS_ERR_INVAL,
		       "vm %s: kernel boot needs an absolute kernel path", p->name);
		ENSURE(!p->initrd || abs_path(p->initrd), CUSTOS_ERR_INVAL,
		       "vm %s: initrd must be an absolute path", p->name);
		/* A disk beside the kernel is optional (the kernel's root=/dev/vda). */
		ENSURE(!p->disk_overlay || abs_path(p->disk_overlay), CUSTOS_ERR_INVAL,
		       "vm %s: disk overlay must be an absolute path", p->name);
		ENSURE(!p->disk_base || abs_path(p->disk_base), CUSTOS_ERR_INVAL,
		       "vm %s: disk base image must be an absolute path", p->name);
	} else if (p->boot == VM_BOOT_DISK) {
		ENSURE(abs_path(p->disk_overlay) || (!p->disk_overlay && abs_path(p->disk_base)),
		       CUSTOS_ERR_INVAL,
		       "vm %s: disk boot needs an absolute overlay or base image path", p->name);
	} else {
		return err_set(CUSTOS_ERR_INVAL, "vm %s: unknown boot kind", p->name);
	}
	ENSURE(!p->console_log || abs_path(p->console_log), CUSTOS_ERR_INVAL,
	       "vm %s: console log must be an absolute path", p->name);
	ENSURE(p->n_channels <= VM_MAX_CHANNELS, CUSTOS_ERR_LIMIT, "vm %s: more than %d channels",
	       p->name, VM_MAX_CHANNELS);
	for (size_t i = 0; i < p->n_channels; i++) {
		ENSURE(abs_path(p->channel_paths[i]), CUSTOS_ERR_INVAL,
		       "vm %s: channel %zu needs an absolute socket path", p->name, i);
		ENSURE(name_ok(p->channel_names[i]), CUSTOS_ERR_INVAL,
		       "vm %s: channel %zu needs a port name of [A-Za-z0-9_.-]", p->name, i);
	}
	ENSURE(p->n_channels > 0 || p->vsock_cid != 0, CUSTOS_ERR_INVAL,
	       "vm %s: no channel and no vsock: custos could not reach the guest", p->name);
	ENSURE(p->vsock_cid == 0 || (p->vsock_cid >= 3 && p->vsock_cid < 0xffffffffu),
	       CUSTOS_ERR_INVAL, "vm %s: vsock CID must be >= 3", p->name);
	ENSURE(p->n_hostdevs <= VM_MAX_HOSTDEVS, CUSTOS_ERR_LIMIT, "vm %s: more than %d hostdevs",
	       p->name, VM_MAX_HOSTDEVS);
	for (size_t i = 0; i < p->n_hostdevs; i++) {
		const vm_pci_addr *a = &p->hostdevs[i];
		ENSURE(a->domain <= 0xffff && a->bus <= 0xff && a->slot <= 0x1f && a->function <= 7,
		       CUSTOS_ERR_INVAL, "vm %s: hostdev %zu: PCI address out of range", p->name,
		       i);
	}
	return CUSTOS_OK;
}

/* <tag>escaped text</tag> */
static custos_err elem(buf *out, const char *indent, const char *tag, const char *text)
{
	GUARD(buf_printf(out, "%s<%s>", indent, tag));
	GUARD(vm_xml_escape(out, text));
	return buf_printf(out, "</%s>\n", tag);
}

custos_err vm_domain_xml(const vm_profile *p, buf *out)
{
	GUARD(vm_profile_check(p));
	const char *type = p->domain_type ? p->domain_type : "qemu";
	GUARD(buf_printf(out, "<domain type='%s'>\n", type));
	GUARD(elem(out, "  ", "name", p->name));
	GUARD(buf_printf(out, "  <memory unit='MiB'>%llu</memory>\n",
	                 (unsigned long long)p->memory_mib));
	if (p->hugepages)
		GUARD(buf_append_cstr(out, "  <memoryBacking><hugepages/></memoryBacking>\n"));
	GUARD(buf_printf(out, "  <vcpu placement='static'>%u</vcpu>\n", p->vcpus));
	if (p->cpu_pin) {
		GUARD(buf_append_cstr(out, "  <cputune>\n"));
		for (unsigned i = 0; i < p->vcpus; i++)
			GUARD(buf_printf(out, "    <vcpupin vcpu='%u' cpuset='%d'/>\n", i,
			                 p->cpu_pin[i]));
		GUARD(buf_append_cstr(out, "  </cputune>\n"));
	}
	GUARD(buf_append_cstr(out, "  <os>\n    <type arch='x86_64'>hvm</type>\n"));
	if (p->boot == VM_BOOT_KERNEL) {
		GUARD(elem(out, "    ", "kernel", p->kernel));
		if (p->initrd)
			GUARD(elem(out, "    ", "initrd", p->initrd));
		if (p->cmdline)
			GUARD(elem(out, "    ", "cmdline", p->cmdline));
	} else {
		GUARD(buf_append_cstr(out, "    <boot dev='hd'/>\n"));
	}
	GUARD(buf_append_cstr(out, "  </os>\n"));
	/* A guest that powers off, reboots or crashes is destroyed; custos decides on restarts. */
	GUARD(buf_append_cstr(out, "  <on_poweroff>destroy</on_poweroff>\n"
	                           "  <on_reboot>destroy</on_reboot>\n"
	                           "  <on_crash>destroy</on_crash>\n"
	                           "  <devices>\n"));
	if (p->emulator)
		GUARD(elem(out, "    ", "emulator", p->emulator));
	if (p->disk_overlay || p->disk_base) {
		/* The boot disk, or (kernel boot) the disk the kernel mounts as its root.
		 * Either custos made a qcow2 overlay over the read-only base (the overlay is the
		 * only writable layer), or libvirt makes a throwaway one itself (<transient/>: the
		 * base is never written and the overlay is deleted when the domain stops). */
		GUARD(buf_append_cstr(out, "    <disk type='file' device='disk'>\n"
		                           "      <driver name='qemu' type='qcow2'/>\n"
		                           "      <source file='"));
		GUARD(vm_xml_escape(out, p->disk_overlay ? p->disk_overlay : p->disk_base));
		GUARD(buf_append_cstr(out, "'/>\n      <target dev='vda' bus='virtio'/>\n"));
		if (!p->disk_overlay)
			GUARD(buf_append_cstr(out, "      <transient/>\n"));
		GUARD(buf_append_cstr(out, "    </disk>\n"));
	}
	if (p->console_log) {
		GUARD(buf_append_cstr(out, "    <serial type='file'>\n      <source path='"));
		GUARD(vm_xml_escape(out, p->console_log));
		GUARD(buf_append_cstr(out, "'/>\n      <target port='0'/>\n    </serial>\n"));
	}
	for (size_t i = 0; i < p->n_channels; i++) {
		GUARD(buf_append_cstr(out, "    <channel type='unix'>\n      <source mode='bind' "
		                           "path='"));
		GUARD(vm_xml_escape(out, p->channel_paths[i]));
		GUARD(buf_append_cstr(out, "'/>\n      <target type='virtio' name='"));
		GUARD(vm_xml_escape(out, p->channel_names[i]));
		GUARD(buf_append_cstr(out, "'/>\n    </channel>\n"));
	}
	if (p->vsock_cid)
		GUARD(buf_printf(out,
		                 "    <vsock model='virtio'>\n"
		                 "      <cid auto='no' address='%u'/>\n    </vsock>\n",
		                 p->vsock_cid));
	for (size_t i = 0; i < p->n_hostdevs; i++) {
		const vm_pci_addr *a = &p->hostdevs[i];
		GUARD(buf_printf(out,
		                 "    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
		                 "      <source>\n"
		                 "        <address domain='0x%04x' bus='0x%02x' slot='0x%02x' "
		                 "function='0x%x'/>\n"
		                 "      </source>\n    </hostdev>\n",
		                 a->domain, a->bus, a->slot, a->function));
	}
	GUARD(buf_append_cstr(out, "    <controller type='usb' model='none'/>\n"
	                           "    <memballoon model='none'/>\n"
	                           "  </devices>\n"));
	if (p->seclabel_user) {
		GUARD(buf_append_cstr(out, "  <seclabel type='static' model='dac' relabel='yes'>\n"
		                           "    <label>"));
		GUARD(vm_xml_escape(out, p->seclabel_user));
		GUARD(buf_append_cstr(out, "</label>\n  </seclabel>\n"));
	}
	GUARD(buf_append_cstr(out, "</domain>\n"));
	ENSURE(buf_used(out) <= VM_XML_MAX, CUSTOS_ERR_LIMIT, "vm %s: domain XML over %d bytes",
	       p->name, VM_XML_MAX);
	return CUSTOS_OK;
}

static custos_err hex_field(span s, unsigned max, unsigned *out)
{
	uint64_t v = 0;
	ENSURE(s.len >= 1 && s.len <= 4, CUSTOS_ERR_PARSE, "bad PCI address field");
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return err_set(CUSTOS_ERR_PARSE, "bad hex digit in PCI address");
		v = v * 16 + d;
	}
	ENSURE(v <= max, CUSTOS_ERR_PARSE, "PCI address field out of range");
	*out = (unsigned)v;
	return CUSTOS_OK;
}

custos_err vm_pci_parse(span s, vm_pci_addr *out)
{
	/* [DDDD:]BB:SS.F */
	const char *dot = memchr(s.ptr, '.', s.len);
	ENSURE(dot && (size_t)(dot - s.ptr) + 2 == s.len, CUSTOS_ERR_PARSE,
	       "PCI address must look like 0000:65:00.0");
	span head = span_of(s.ptr, (size_t)(dot - s.ptr));
	span fields[3];
	size_t n = 0;
	size_t start = 0;
	for (size_t i = 0; i <= head.len; i++) {
		if (i == head.len || head.ptr[i] == ':') {
			ENSURE(n < 3, CUSTOS_ERR_PARSE, "PCI address has too many fields");
			fields[n++] = span_of(head.ptr + start, i - start);
			start = i + 1;
		}
	}
	ENSURE(n == 2 || n == 3, CUSTOS_ERR_PARSE, "PCI address must look like 0000:65:00.0");
	vm_pci_addr a = { 0 };
	if (n == 3)
		GUARD(hex_field(fields[0], 0xffff, &a.domain));
	GUARD(hex_field(fields[n - 2], 0xff, &a.bus));
	GUARD(hex_field(fields[n - 1], 0x1f, &a.slot));
	GUARD(hex_field(span_of(dot + 1, 1), 7, &a.function));
	*out = a;
	return CUSTOS_OK;
}

custos_err vm_profile_hash(const vm_profile *p, char out[65])
{
	buf b;
	unsigned char md[32];
	unsigned int mdlen = 0;

	buf_init(&b, VM_XML_MAX);
	custos_err e = vm_domain_xml(p, &b);
	if (e == CUSTOS_OK &&
	    EVP_Digest(buf_ptr(&b), buf_used(&b), md, &mdlen, EVP_sha256(), NULL) != 1)
		e = err_set(CUSTOS_ERR_CRYPTO, "vm profile: SHA-256 failed");
	buf_free(&b);
	GUARD(e);
	num_hex(md, 32, out);
	return CUSTOS_OK;
}
