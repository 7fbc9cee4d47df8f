# SPDX-License-Identifier: GPL-2.0-or-later
"""Which kexec-tools built a crash image, and the header rules of that version.

kexec-tools reads the system the same way from 2.0.20 to 2.0.29 but for three
rules in ``kexec/arch/i386/crashdump-x86.c``, all changed in 2.0.22:

* which ``/proc/iomem`` lines are RAM: 2.0.20 and 2.0.21 take a line named
  exactly ``System RAM`` (``memcmp(str, "System RAM\\n", 11)``), so
  ``System RAM (kmem)`` and ``System RAM (virtio_mem)`` are left out of the
  dump; 2.0.22 on take any name containing it (commit "crashdump/x86: dump
  any kind of "System RAM"");
* how many ranges it collects: ``CRASH_MAX_MEMORY_RANGES`` was
  ``MAX_MEMORY_RANGES + 2`` = 2,050 (``kexec/arch/i386/kexec-x86.h``), then
  32,768 ("crashdump/x86: increase CRASH_MAX_MEMORY_RANGES to 32k");
* where the direct map starts: 2.0.20 takes the lowest ``/proc/kcore``
  PT_LOAD only when ``/proc/kallsyms`` has ``page_offset_base`` (KASLR), and
  else the constant 0xffff880000000000 of kernels before 4.20; 2.0.22 always
  takes kcore's ("kexec: Remove the error prone kernel_version function").

``crashdump-elf.c``, ``purgatory.c`` and ``kexec-sha256.h`` are byte-identical
from 2.0.20 to 2.0.29, so nothing else in the header or in purgatory's digest
differs. The version is read from the program that made the load
(``kexec --version`` prints the same ``PACKAGE_STRING``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kexecd.arch import Arch, KexecToolsFacts, host

__all__ = ["HeaderRules", "is_version", "rules_for", "version_in"]

# kexec-tools configure.ac: AC_INIT(kexec-tools, X.Y.Z); PACKAGE_STRING is
# "kexec-tools X.Y.Z" (Debian's builds keep it).
_VERSION = re.compile(rb"kexec-tools (\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# The first version with today's rules (see the module docstring).
_NEW_RULES = (2, 0, 22)


@dataclass(frozen=True)
class HeaderRules:
    """How one kexec-tools version turns the system into a crash header.

    :ivar version: the version that built the image, ``"2.0.25"``; ``None``
        when unknown (then the rules are those of 2.0.22 and later).
    :ivar ram_exact: only ``/proc/iomem`` lines named exactly ``System RAM``
        are RAM.
    :ivar max_ranges: the most memory ranges it collects.
    :ivar page_offset_symbol: the direct map's base comes from /proc/kcore only
        when /proc/kallsyms has ``page_offset_base``; else it is the
        architecture's fallback.
    :ivar arch: the architecture whose kexec-tools code these are
        (:attr:`kexecd.arch.Arch.kexec_tools`: the names it collects, its
        limits, the kernel text mapping).
    """

    version: str | None
    ram_exact: bool
    max_ranges: int
    page_offset_symbol: bool
    arch: Arch

    @property
    def facts(self) -> KexecToolsFacts:
        """What the architecture's kexec-tools code reads, and how."""
        return self.arch.kexec_tools

    def is_ram(self, name: str) -> bool:
        """Whether kexec-tools takes an /proc/iomem line of this name as RAM."""
        return name == "System RAM" if self.ram_exact else "System RAM" in name

    def describe(self) -> str:
        """The rules in words, for status and logs."""
        who = f"kexec-tools {self.version}" if self.version else "kexec-tools (version unknown)"
        ram = "'System RAM' only" if self.ram_exact else "every 'System RAM ...' range"
        return f"{who}: {ram}, at most {self.max_ranges:,} ranges"


def _parse(version: str) -> tuple[int, int, int] | None:
    m = _VERSION.fullmatch(b"kexec-tools " + version.encode("ascii", "replace"))
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def is_version(text: str) -> bool:
    """Whether ``text`` is a kexec-tools version as kexecd records one (``2.0.25``)."""
    return _parse(text) is not None


def rules_for(version: str | None, arch: Arch | None = None) -> HeaderRules:
    """The header rules of a kexec-tools version (``None`` or an unparsable
    version: those of 2.0.22 and later, the rules of every kexec-tools since 2021)
    on an architecture (default: this machine's)."""
    arch = arch or host()
    parsed = None if version is None else _parse(version)
    facts = arch.kexec_tools
    old = parsed is not None and parsed < _NEW_RULES
    few = parsed is not None and parsed < facts.ranges_raised_in
    limit = facts.max_ranges[0 if few else 1]
    # Only an architecture with a fallback constant (x86) ever used it.
    symbol = old and bool(facts.page_offset_fallback)
    exact = old if facts.ram_exact is None else facts.ram_exact
    return HeaderRules(version if parsed else None, exact, limit, symbol, arch)


def version_in(program: bytes | None) -> str | None:
    """The kexec-tools version a program says it is (its ``PACKAGE_STRING``);
    ``None`` for no program, or one that is not kexec-tools."""
    if not program:
        return None
    m = _VERSION.search(program)
    return None if m is None else f"{int(m[1])}.{int(m[2])}.{int(m[3])}"
