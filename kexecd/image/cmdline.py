# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash kernel's command line: what kexecd appends to it, and why.

Where the line is and how it is rewritten is the architecture's
(:meth:`kexecd.arch.Arch.find_cmdline`, :meth:`~kexecd.arch.Arch.with_cmdline`;
x86: :mod:`kexecd.arch.x86_64.bootparams`). Here is what is arch-neutral: the
word kexecd appends and the :class:`Amendment`, what is loaded and wanted of
the line (the plan decides: :mod:`kexecd.image.plan`). The kernel's word
rules are :mod:`kexecd.kparams`'.
"""

from __future__ import annotations

from dataclasses import dataclass

from kexecd.arch import CommandLine
from kexecd.kparams import appended, check_word, has, words

__all__ = [
    "NO_MEMHOTPLUG",
    "Amendment",
    "CommandLine",
    "appended",
    "check_word",
    "has",
    "words",
]

# drivers/acpi/acpi_memhotplug.c: __setup("acpi_no_memhotplug", ...) keeps the
# ACPI memory device handler from attaching, so a crash kernel leaves the
# DIMMs that the first kernel hot-added (the dump covers them) alone.
NO_MEMHOTPLUG = "acpi_no_memhotplug"
ADD_IT = (
    "add it to the distro's crash command line (KDUMP_CMDLINE_APPEND in /etc/default/kdump-tools)"
)


@dataclass(frozen=True)
class Amendment:
    """The crash kernel's command line as kexec-tools built it, and what kexecd
    appends to it (the plan decides what: :mod:`kexecd.image.plan`).

    :ivar found: the line in the snapshot's boot parameters segment; ``None``
        when it cannot be read (``problem`` says why).
    :ivar given: the line passed to ``kexec_file_load``, which builds the
        boot parameters in the kernel (so kexecd cannot amend them).
    :ivar loaded: the words kexecd appended to the line loaded now.
    :ivar wanted: the words it appends now.
    :ivar hotplug: this host can hot-add memory (ACPI memory hotplug is there).
    :ivar enabled: ``crash_acpi_no_memhotplug`` is on.
    :ivar problem: why ``acpi_no_memhotplug`` is not appended where it is missing.
    """

    found: CommandLine | None
    loaded: tuple[str, ...]
    wanted: tuple[str, ...]
    hotplug: bool
    enabled: bool
    problem: str | None = None
    given: str | None = None

    @property
    def built(self) -> str | None:
        """The line as kexec-tools built it (or the kernel, from the one given)."""
        return self.found.text if self.found is not None else self.given

    @property
    def text(self) -> str | None:
        """The line loaded now."""
        if self.built is None:
            return None
        return " ".join([self.built, *self.loaded])

    @property
    def no_memhotplug(self) -> str:
        """Where ``acpi_no_memhotplug`` stands, one of: ``present`` (kexec-tools'
        line has it), ``appended`` (kexecd appended it), ``to-append`` (the next
        reload appends it), ``not-needed`` (this host cannot hot-add memory),
        ``off`` (missing: ``crash_acpi_no_memhotplug`` is off), ``cannot``
        (missing: ``problem`` says why), ``unknown`` (the line cannot be read:
        ``problem`` says why)."""
        if self.built is None:
            return "unknown"
        if has(self.built, NO_MEMHOTPLUG):
            return "present"
        if NO_MEMHOTPLUG in self.wanted:
            return "appended" if NO_MEMHOTPLUG in self.loaded else "to-append"
        if not self.hotplug:
            return "not-needed"
        return "off" if not self.enabled else "cannot"

    @property
    def hazard(self) -> str | None:
        """The crash kernel may boot without ``acpi_no_memhotplug`` on a host that
        can hot-add memory: why, in words; ``None`` when it will not."""
        state = self.no_memhotplug
        lacks = (
            "the crash kernel's command line (as kexec-tools built it) lacks "
            "acpi_no_memhotplug and this host can hot-add memory: the crash kernel may "
            'take hot-added memory as its own RAM and makedumpfile fail ("Bad address")'
        )
        if state == "off":
            return f"{lacks}; kexecd does not append it (crash_acpi_no_memhotplug = false)"
        if state == "cannot":
            return f"{lacks}; kexecd cannot append it: {self.problem}; {ADD_IT}"
        if state == "unknown" and self.hotplug:
            return (
                f"the crash kernel's command line cannot be read ({self.problem}), and this "
                f"host can hot-add memory: make sure it has acpi_no_memhotplug; {ADD_IT}"
            )
        return None

    @property
    def change(self) -> str:
        """What a reload does to the line, in words ("" for nothing)."""
        return self._change(("append", "drop"))

    @property
    def done(self) -> str:
        """What a reload did to the line, in words ("" for nothing)."""
        return self._change(("appended", "dropped"))

    def _change(self, verbs: tuple[str, str]) -> str:
        added = [w for w in self.wanted if w not in self.loaded]
        dropped = [w for w in self.loaded if w not in self.wanted]
        parts = []
        if added:
            why = " (this host can hot-add memory)" if NO_MEMHOTPLUG in added else ""
            parts.append(f"{verbs[0]} {' '.join(added)} to the crash kernel's command line{why}")
        if dropped:
            parts.append(
                f"{verbs[1]} {' '.join(dropped)} from the crash kernel's command line (kexecd "
                "no longer appends it)"
            )
        return " and ".join(parts)
