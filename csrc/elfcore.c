// SPDX-License-Identifier: GPL-2.0-or-later
// ELF64 core headers, byte for byte as kexec-tools' crash_create_elf64_headers()
// (kexec/crashdump-elf.c) writes them, and read back.
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "kexecd_core.h"

#define EHDR_SIZE sizeof(Elf64_Ehdr)
#define PHDR_SIZE sizeof(Elf64_Phdr)

int kexecd_elfcore_size(const struct kexecd_header_spec *spec, uint64_t *size_ret)
{
	uint64_t sz;

	// kexec-tools refuses alignments that are not a multiple of 1024.
	if (spec->align == 0 || spec->align % 1024)
		return -EINVAL;
	sz = EHDR_SIZE + PHDR_SIZE * ((uint64_t)spec->nr_cpus_conf + !!spec->has_vmcoreinfo +
				      spec->nr_ranges + !!spec->has_kernel);
	*size_ret = (sz + spec->align - 1) / spec->align * spec->align;
	return 0;
}

static void put_phdr(uint8_t *buf, uint16_t *phnum, uint32_t type, uint32_t flags,
		     uint64_t offset, uint64_t vaddr, uint64_t paddr, uint64_t size)
{
	Elf64_Phdr ph = {
		.p_type = type,
		.p_flags = flags,
		.p_offset = offset,
		.p_vaddr = vaddr,
		.p_paddr = paddr,
		.p_filesz = size,
		.p_memsz = size,
		.p_align = 0,
	};

	memcpy(buf + EHDR_SIZE + (uint64_t)*phnum * PHDR_SIZE, &ph, sizeof(ph));
	(*phnum)++;
}

int kexecd_elfcore_build(const struct kexecd_header_spec *spec, uint8_t *buf, uint64_t cap,
			 uint64_t *len_ret)
{
	uint64_t size;
	uint16_t phnum = 0;
	Elf64_Ehdr eh;
	int r;

	*len_ret = 0;
	r = kexecd_elfcore_size(spec, &size);
	if (r < 0)
		return r;
	// kexec-tools probes CPU ids below nr_cpus_conf only: never more notes.
	if (spec->nr_cpu_notes > spec->nr_cpus_conf)
		return -EINVAL;
	if ((spec->nr_cpu_notes && !spec->cpu_notes) || (spec->nr_ranges && !spec->ranges))
		return -EINVAL;
	// e_phnum is 16 bits; PN_XNUM extended numbering is not kexec-tools'.
	if ((uint64_t)spec->nr_cpus_conf + 2 + spec->nr_ranges >= PN_XNUM)
		return -E2BIG;
	if (size > cap)
		return -ENOSPC;

	memset(buf, 0, size);
	for (uint32_t i = 0; i < spec->nr_cpu_notes; i++) {
		const struct kexecd_note *n = &spec->cpu_notes[i];

		put_phdr(buf, &phnum, PT_NOTE, 0, n->addr, 0, n->addr, n->size);
	}
	if (spec->has_vmcoreinfo)
		put_phdr(buf, &phnum, PT_NOTE, 0, spec->vmcoreinfo.addr, 0, spec->vmcoreinfo.addr,
			 spec->vmcoreinfo.size);
	if (spec->has_kernel)
		put_phdr(buf, &phnum, PT_LOAD, PF_R | PF_W | PF_X, spec->kernel_paddr,
			 spec->kernel_vaddr, spec->kernel_paddr, spec->kernel_size);
	for (uint32_t i = 0; i < spec->nr_ranges; i++) {
		const struct kexecd_range *m = &spec->ranges[i];
		uint64_t len = m->end - m->start + 1, offset = m->start;

		if (m->type != KEXECD_RANGE_RAM)
			continue;
		if (m->start == 0 && m->end == 0)
			continue;
		// Purgatory copies the backup source here before the crash
		// kernel runs, so the dump reads it from the copy.
		if (m->start == spec->backup_src_start && len == spec->backup_src_size)
			offset = spec->backup_start;
		put_phdr(buf, &phnum, PT_LOAD, PF_R | PF_W | PF_X, offset,
			 m->start + spec->page_offset, m->start, len);
	}

	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_ident[EI_OSABI] = ELFOSABI_NONE;
	eh.e_type = ET_CORE;
	eh.e_machine = spec->machine;
	eh.e_version = EV_CURRENT;
	eh.e_phoff = EHDR_SIZE;
	eh.e_ehsize = EHDR_SIZE;
	eh.e_phentsize = PHDR_SIZE;
	eh.e_phnum = phnum;
	memcpy(buf, &eh, sizeof(eh));
	*len_ret = size;
	return 0;
}

int kexecd_elfcore_parse(const uint8_t *buf, uint64_t len, struct kexecd_phdr *phdrs,
			 uint32_t cap, uint32_t *nr_ret, uint16_t *machine_ret)
{
	Elf64_Ehdr eh;

	*nr_ret = 0;
	if (len < sizeof(eh))
		return -EBADMSG;
	memcpy(&eh, buf, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_type != ET_CORE ||
	    eh.e_phentsize != PHDR_SIZE)
		return -EBADMSG;
	if (eh.e_phoff > len || (len - eh.e_phoff) / PHDR_SIZE < eh.e_phnum)
		return -EBADMSG;
	*nr_ret = eh.e_phnum;
	*machine_ret = eh.e_machine;
	if (eh.e_phnum > cap)
		return -ENOSPC;
	for (uint32_t i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, buf + eh.e_phoff + (uint64_t)i * PHDR_SIZE, sizeof(ph));
		phdrs[i] = (struct kexecd_phdr){
			.type = ph.p_type,
			.flags = ph.p_flags,
			.offset = ph.p_offset,
			.vaddr = ph.p_vaddr,
			.paddr = ph.p_paddr,
			.filesz = ph.p_filesz,
			.memsz = ph.p_memsz,
			.align = ph.p_align,
		};
	}
	return 0;
}

// kexec-tools lays the kernel text PT_LOAD above the direct map's: RAM is a
// PT_LOAD below where the architecture maps the kernel text.
static int is_ram(const struct kexecd_phdr *p, uint64_t text_map)
{
	return p->type == PT_LOAD && p->vaddr < text_map;
}

int kexecd_elfcore_summary(const struct kexecd_phdr *phdrs, uint32_t nr, uint64_t text_map,
			   struct kexecd_header_summary *ret)
{
	unsigned __int128 bytes = 0;

	*ret = (struct kexecd_header_summary){ .first_ram = -1, .backup = -1, .kernel_text = -1 };
	for (uint32_t i = 0; i < nr; i++) {
		const struct kexecd_phdr *p = &phdrs[i];

		if (p->type == PT_NOTE)
			ret->nr_notes++;
		if (p->type != PT_LOAD)
			continue;
		ret->nr_loads++;
		if (!is_ram(p, text_map)) {
			if (ret->kernel_text < 0)
				ret->kernel_text = i;
			continue;
		}
		ret->nr_ram++;
		bytes += p->memsz;
		if (ret->first_ram < 0)
			ret->first_ram = i;
		if (ret->backup < 0 && p->offset != p->paddr)
			ret->backup = i;
	}
	ret->ram_bytes_lo = (uint64_t)bytes;
	ret->ram_bytes_hi = (uint64_t)(bytes >> 64);
	return 0;
}

int kexecd_elfcore_pick(const struct kexecd_phdr *phdrs, uint32_t nr,
			const struct kexecd_phdr_filter *filter, uint32_t *ret, uint32_t cap,
			uint32_t *nr_ret)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < nr; i++) {
		const struct kexecd_phdr *p = &phdrs[i];
		int picked = filter->pick == KEXECD_PICK_NOTES	 ? p->type == PT_NOTE
			     : filter->pick == KEXECD_PICK_LOADS ? p->type == PT_LOAD
								 : is_ram(p, filter->text_map);

		if (!picked)
			continue;
		if (n < cap)
			ret[n] = i;
		n++;
	}
	*nr_ret = n;
	return n > cap ? -ENOSPC : 0;
}

int kexecd_elfcore_ram(const struct kexecd_phdr *phdrs, uint32_t nr, uint64_t text_map,
		       struct kexecd_range *ret, uint32_t cap, uint32_t *nr_ret)
{
	uint32_t n = 0;

	*nr_ret = 0;
	for (uint32_t i = 0; i < nr; i++) {
		const struct kexecd_phdr *p = &phdrs[i];
		uint64_t end;

		if (!is_ram(p, text_map) || !p->memsz)
			continue;
		if (n >= cap)
			return -ENOSPC;
		if (__builtin_add_overflow(p->paddr, p->memsz - 1, &end))
			end = UINT64_MAX;
		ret[n++] = (struct kexecd_range){ p->paddr, end, KEXECD_RANGE_RAM };
	}
	*nr_ret = n;
	return 0;
}
