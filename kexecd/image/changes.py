# SPDX-License-Identifier: GPL-2.0-or-later
"""What differs between two ELF core headers: CPUs and RAM ranges."""

from __future__ import annotations

from dataclasses import dataclass

from kexecd.image.elfcore import CoreHeader
from kexecd.model import MemRange, human
from kexecd.system.cpus import Cpus

__all__ = ["HeaderDiff", "diff_headers"]


@dataclass(frozen=True)
class HeaderDiff:
    """CPUs (by crash_notes address, with the CPU id where sysfs knows it) and ranges."""

    cpus_added: tuple[tuple[int | None, int], ...]  # (cpu id, crash_notes address)
    cpus_removed: tuple[tuple[int | None, int], ...]
    ranges_added: tuple[MemRange, ...]
    ranges_removed: tuple[MemRange, ...]

    def __bool__(self) -> bool:
        return bool(
            self.cpus_added or self.cpus_removed or self.ranges_added or self.ranges_removed
        )

    def lines(self) -> list[str]:
        """One line per change, for people."""

        def cpu(c: tuple[int | None, int]) -> str:
            return f"CPU {c[0]}" if c[0] is not None else f"CPU with notes at {c[1]:#x}"

        out = [f"+ {cpu(c)}" for c in self.cpus_added]
        out += [f"- {cpu(c)}" for c in self.cpus_removed]
        out += [f"+ {r.start:#x}-{r.end:#x} ({human(r.size)})" for r in self.ranges_added]
        out += [f"- {r.start:#x}-{r.end:#x} ({human(r.size)})" for r in self.ranges_removed]
        return out


def diff_headers(old: CoreHeader, new: CoreHeader, cpus: Cpus | None = None) -> HeaderDiff:
    """What ``new`` adds to and drops from ``old``.

    The vmcoreinfo note is not a CPU: notes of the size of a CPU's crash_notes
    are compared, and named by CPU id through ``cpus`` (sysfs now).
    """
    by_addr = {n.note.addr: n.cpu for n in cpus.notes} if cpus else {}
    sizes = {n.note.size for n in cpus.notes} if cpus else set()

    def cpu_notes(h: CoreHeader) -> set[int]:
        if not sizes:
            return {p.paddr for p in h.split_notes()[0]}
        return {p.paddr for p in h.notes if p.memsz in sizes}

    a, b = cpu_notes(old), cpu_notes(new)
    # In C: at 32,768 ranges no Python object per range, but the changes.
    old_ram, new_ram = old.ram_ranges(), new.ram_ranges()
    return HeaderDiff(
        cpus_added=tuple((by_addr.get(x), x) for x in sorted(b - a)),
        cpus_removed=tuple((by_addr.get(x), x) for x in sorted(a - b)),
        ranges_added=tuple(new_ram.minus(old_ram)),
        ranges_removed=tuple(old_ram.minus(new_ram)),
    )
