// SPDX-License-Identifier: GPL-2.0-or-later
// kexecd_elfcore_size() and kexecd_elfcore_build() on a spec decoded from the
// input (CPU notes, vmcoreinfo, kernel text, ranges of every type, backup,
// alignment, up to e_phnum's limit), into a buffer of fuzzed capacity
// allocated to the byte. The build must never write past the capacity
// (-ENOSPC instead), must refuse only the specs its contract names, and what
// it builds must parse back to the spec.
#include <elf.h>
#include <errno.h>

#include "fuzz.h"

// The biggest buffer a spec can ask for is ~7 MiB (e_phnum below 0xffff).
#define MAX_CAP (8u << 20)

static const int types[] = { KEXECD_RANGE_RAM,	   KEXECD_RANGE_RESERVED, KEXECD_RANGE_ACPI,
			     KEXECD_RANGE_ACPI_NVS, KEXECD_RANGE_PMEM,	   KEXECD_RANGE_PRAM };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct kexecd_header_spec spec = { 0 };
	struct kexecd_note *notes;
	struct kexecd_range *ranges;
	struct kexecd_phdr *phdrs;
	uint64_t want, len = 0, cap;
	uint32_t nr = 0, expect_phnum = 0, nr_ram = 0;
	uint16_t machine;
	uint8_t *buf;
	int r, rs, flags;

	flags = take8(&in);
	spec.machine = take16(&in);
	// Mostly few CPUs (the ranges then get the bytes), rarely up to 65535:
	// a big header costs a big memset and check.
	spec.nr_cpus_conf = (flags & 0x81) == 0x81 ? take16(&in) : take8(&in) & 0x1f;
	spec.nr_cpu_notes = take16(&in) % (spec.nr_cpus_conf + 2); // one too many: -EINVAL
	notes = exact_alloc(spec.nr_cpu_notes * sizeof(*notes));
	for (uint32_t i = 0; i < spec.nr_cpu_notes; i++) // zeros once the input is used up
		notes[i] = (struct kexecd_note){ take_addr(&in), take_addr(&in) };
	spec.cpu_notes = (flags & 2) ? NULL : notes;
	spec.has_vmcoreinfo = flags & 4 ? (flags & 8 ? 1 : -1) : 0; // any non-zero is true
	spec.vmcoreinfo = (struct kexecd_note){ take_addr(&in), take_addr(&in) };
	spec.has_kernel = !!(flags & 0x10);
	spec.kernel_paddr = take_addr(&in);
	spec.kernel_vaddr = take_addr(&in);
	spec.kernel_size = take_addr(&in);
	spec.page_offset = take_addr(&in);
	spec.backup_src_start = take_addr(&in);
	spec.backup_src_size = take_addr(&in);
	spec.backup_start = take_addr(&in);
	switch (take8(&in) & 3) {
	case 0:
		spec.align = 1024;
		break;
	case 1:
		spec.align = 4096;
		break;
	case 2: // a multiple of 1024 up to 255 KiB, or zero
		spec.align = 1024u * take8(&in);
		break;
	default: // anything: rarely a multiple of 1024, sometimes past MAX_CAP
		spec.align = take32(&in);
		break;
	}
	spec.nr_ranges = (flags & 0xa0) == 0xa0 ? take16(&in) : take8(&in);
	ranges = exact_alloc(spec.nr_ranges * sizeof(*ranges));
	for (uint32_t i = 0; i < spec.nr_ranges; i++) {
		uint8_t t = take8(&in);

		ranges[i].start = take_addr(&in);
		ranges[i].end = take_addr(&in);
		ranges[i].type = t < 0xf0 ? types[t % 6] : (int)(t & 0xf);
		if (ranges[i].type == KEXECD_RANGE_RAM &&
		    !(ranges[i].start == 0 && ranges[i].end == 0))
			nr_ram++;
	}
	spec.ranges = (flags & 0x40) ? NULL : ranges;

	rs = kexecd_elfcore_size(&spec, &want);
	CHECK(rs == 0 || rs == -EINVAL);
	CHECK((rs == -EINVAL) == (spec.align == 0 || spec.align % 1024 != 0));
	if (rs == 0) {
		uint64_t used = 64 + 56 * ((uint64_t)spec.nr_cpus_conf + !!spec.has_vmcoreinfo +
					   spec.nr_ranges + !!spec.has_kernel);

		CHECK(want >= used && want % spec.align == 0 && want - used < spec.align);
	}

	// The capacity: exact, a little short or over, or anything.
	switch (take8(&in) & 3) {
	case 0:
		cap = rs == 0 ? want : 0;
		break;
	case 1:
		cap = rs == 0 && want ? want - 1 - take8(&in) % want : 0;
		break;
	case 2:
		cap = rs == 0 ? want + take8(&in) : take16(&in);
		break;
	default: // not far past what is needed: a big malloc under ASan is slow
		cap = take32(&in) % ((rs == 0 ? want : 0) + 65536);
		break;
	}
	if (cap > MAX_CAP)
		cap = MAX_CAP;
	buf = exact_alloc(cap);
	r = kexecd_elfcore_build(&spec, buf, cap, &len);
	if (rs) {
		CHECK(r == rs && len == 0);
		goto out;
	}
	if ((spec.nr_cpu_notes > spec.nr_cpus_conf) || (spec.nr_cpu_notes && !spec.cpu_notes) ||
	    (spec.nr_ranges && !spec.ranges)) {
		CHECK(r == -EINVAL && len == 0);
		goto out;
	}
	if ((uint64_t)spec.nr_cpus_conf + 2 + spec.nr_ranges >= PN_XNUM) {
		CHECK(r == -E2BIG && len == 0);
		goto out;
	}
	if (want > cap) {
		CHECK(r == -ENOSPC && len == 0);
		goto out;
	}
	CHECK(r == 0 && len == want);

	// It reads back as the spec: the notes, vmcoreinfo, kernel, RAM.
	expect_phnum = spec.nr_cpu_notes + !!spec.has_vmcoreinfo + !!spec.has_kernel + nr_ram;
	phdrs = exact_alloc(expect_phnum * sizeof(*phdrs));
	CHECK(kexecd_elfcore_parse(buf, len, phdrs, expect_phnum, &nr, &machine) == 0);
	CHECK(nr == expect_phnum && machine == spec.machine);
	for (uint32_t i = 0; i < spec.nr_cpu_notes; i++)
		CHECK(phdrs[i].type == PT_NOTE && phdrs[i].paddr == notes[i].addr &&
		      phdrs[i].memsz == notes[i].size);
	nr = spec.nr_cpu_notes;
	if (spec.has_vmcoreinfo) {
		CHECK(phdrs[nr].type == PT_NOTE && phdrs[nr].paddr == spec.vmcoreinfo.addr &&
		      phdrs[nr].memsz == spec.vmcoreinfo.size);
		nr++;
	}
	if (spec.has_kernel) {
		CHECK(phdrs[nr].type == PT_LOAD && phdrs[nr].paddr == spec.kernel_paddr &&
		      phdrs[nr].vaddr == spec.kernel_vaddr && phdrs[nr].memsz == spec.kernel_size);
		nr++;
	}
	for (uint32_t i = 0; i < spec.nr_ranges; i++) {
		const struct kexecd_range *m = &ranges[i];

		if (m->type != KEXECD_RANGE_RAM || (m->start == 0 && m->end == 0))
			continue;
		CHECK(phdrs[nr].type == PT_LOAD && phdrs[nr].paddr == m->start &&
		      phdrs[nr].vaddr == m->start + spec.page_offset &&
		      phdrs[nr].memsz == m->end - m->start + 1);
		nr++;
	}
	// The rest of the buffer is zero padding: its first byte is zero, and
	// each is the same as the next.
	want = 64 + 56 * (uint64_t)expect_phnum;
	CHECK(want <= len);
	if (want < len)
		CHECK(buf[want] == 0 && !memcmp(buf + want, buf + want + 1, len - want - 1));
	free(phdrs);
out:
	free(buf);
	free(ranges);
	free(notes);
	return 0;
}
