// SPDX-License-Identifier: GPL-2.0-or-later
// kexecd_elfcore_parse() on any bytes: a template header, a capture, the head
// of /proc/kcore or of a vmcore. It must read nothing past @len, write
// nothing past @cap, and give back exactly the program headers in the file.
#include <elf.h>
#include <errno.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kexecd_phdr *phdrs;
	uint32_t nr = 0, nr2 = 0, cap;
	uint16_t machine = 0;
	Elf64_Ehdr eh;
	int r;

	// First with no room at all, as kexecd's wrapper does before it grows.
	r = kexecd_elfcore_parse(data, size, NULL, 0, &nr, &machine);
	CHECK(r == 0 || r == -ENOSPC || r == -EBADMSG);
	if (r == -EBADMSG) {
		CHECK(nr == 0);
		return 0;
	}
	CHECK((r == 0) == (nr == 0));
	CHECK(size >= sizeof(eh));
	memcpy(&eh, data, sizeof(eh));
	CHECK(nr == eh.e_phnum && machine == eh.e_machine);
	CHECK(eh.e_phoff <= size && (size - eh.e_phoff) / sizeof(Elf64_Phdr) >= nr);

	// One short: -ENOSPC, and nothing written past the cap.
	if (nr) {
		cap = nr - 1;
		phdrs = exact_alloc(cap * sizeof(*phdrs));
		CHECK(kexecd_elfcore_parse(data, size, phdrs, cap, &nr2, &machine) == -ENOSPC);
		CHECK(nr2 == nr);
		free(phdrs);
	}

	// Room for all: each one as the file has it.
	phdrs = exact_alloc(nr * sizeof(*phdrs));
	CHECK(kexecd_elfcore_parse(data, size, phdrs, nr, &nr2, &machine) == 0 && nr2 == nr);
	for (uint32_t i = 0; i < nr; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, data + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		CHECK(phdrs[i].type == ph.p_type && phdrs[i].flags == ph.p_flags);
		CHECK(phdrs[i].offset == ph.p_offset && phdrs[i].vaddr == ph.p_vaddr);
		CHECK(phdrs[i].paddr == ph.p_paddr && phdrs[i].filesz == ph.p_filesz);
		CHECK(phdrs[i].memsz == ph.p_memsz && phdrs[i].align == ph.p_align);
	}
	free(phdrs);
	return 0;
}
