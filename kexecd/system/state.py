# SPDX-License-Identifier: GPL-2.0-or-later
"""The system as the ELF core header must describe it, read under a root."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kexecd.model import Note
from kexecd.system.cpus import Cpus, read_cpus
from kexecd.system.iomem import (
    CrashRanges,
    Resource,
    crash_ranges,
    kernel_code_start,
    parse_iomem,
    read_iomem_text,
)
from kexecd.system.kernel import KernelMap, read_kernel_map, read_vmcoreinfo
from kexecd.system.kexectools import HeaderRules, rules_for
from kexecd.system.kimage import read_arm64_kernel_map
from kexecd.system.root import Root
from kexecd.timing import Spans

__all__ = ["SystemState", "kernel_map", "read_system"]


@dataclass(frozen=True)
class SystemState:
    """CPUs, memory and vmcoreinfo now: what changes with hotplug.

    :ivar iomem_text: /proc/iomem as read; :attr:`memory` is what the C core
        collected from it, :attr:`iomem` its lines, parsed when first asked
        (a fresh header's kernel map needs them, a refresh does not).
    """

    root: Root
    cpus: Cpus
    iomem_text: bytes
    memory: CrashRanges
    vmcoreinfo: Note | None
    rules: HeaderRules

    @cached_property
    def iomem(self) -> tuple[Resource, ...]:
        """Every line of /proc/iomem."""
        return tuple(parse_iomem(self.iomem_text, str(self.root.path("proc/iomem"))))


def read_system(
    root: Root | None = None,
    spans: Spans | None = None,
    rules: HeaderRules | None = None,
    previous: SystemState | None = None,
) -> SystemState:
    """Read CPUs, /proc/iomem and vmcoreinfo under ``root`` (default ``/``), as
    the kexec-tools version of ``rules`` reads them.

    :param previous: an earlier reading; what cannot have changed since is
        taken from it (the CPUs' notes: :func:`~kexecd.system.cpus.read_cpus`).

    :raises SystemStateError: a file is missing, unreadable or malformed; the
        message names it.
    """
    root = root or Root()
    spans = spans or Spans()
    rules = rules or rules_for(None)
    text = read_iomem_text(root)
    spans.mark("iomem")
    memory = crash_ranges(text, str(root.path("proc/iomem")), rules)
    spans.mark("ranges")
    known = previous.cpus if previous is not None and previous.root.base == root.base else None
    cpus = read_cpus(root, known)
    spans.mark("cpus")
    vmcoreinfo = read_vmcoreinfo(root)
    spans.mark("vmcoreinfo")
    return SystemState(
        root=root,
        cpus=cpus,
        iomem_text=text,
        memory=memory,
        vmcoreinfo=vmcoreinfo,
        rules=rules,
    )


def kernel_map(state: SystemState, *, derive_text: bool = False) -> KernelMap:
    """The direct map and kernel text PT_LOAD a fresh ``kexec -p`` would write,
    read the way the architecture's kexec-tools reads them
    (:attr:`kexecd.arch.KexecToolsFacts.kernel_from_iomem`).

    :param derive_text: arm64: where /proc/kallsyms has no ``_text``, take it
        from VMCOREINFO (:func:`kexecd.system.kimage.kimage_text`) instead of
        writing the header kexec-tools writes then, whose kernel PT_LOAD sits
        at ``UINT64_MAX``. x86 kexec-tools needs only ``_stext``.
    :raises SystemStateError: a file it needs is missing or malformed.
    """
    if state.rules.facts.kernel_from_iomem:
        lines = [(r.start, r.end, r.name) for r in state.iomem]
        return read_arm64_kernel_map(state.root, lines, derive_text=derive_text).map
    paddr = kernel_code_start(state.iomem, str(state.root.path("proc/iomem")))
    return read_kernel_map(state.root, paddr, state.rules)
