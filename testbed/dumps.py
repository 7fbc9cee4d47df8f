# SPDX-License-Identifier: GPL-2.0-or-later
"""Crashing a test-bed guest and reading what its crash kernel saw.

The crash kernel's initramfs (``testbed/guest_init.sh``, crash mode) sends its
command line, its /proc/iomem and the head of /proc/vmcore (base64) to the
guest's second serial port, then powers off; this module panics the guest,
waits for that and parses it.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import time
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment

from testbed.transport import Agent

__all__ = [
    "KERNEL_TEXT_MAP",
    "Phdr",
    "Vmcore",
    "crash",
    "crash_kernel_view",
    "panic",
    "panic_until",
    "parse_elf_core",
    "read_vmcore",
]

# arch/x86/include/asm/page_64_types.h: __START_KERNEL_map, where the kernel
# text is mapped; the direct map of RAM (PAGE_OFFSET) lies far below it.
KERNEL_TEXT_MAP = 0xFFFFFFFF80000000


@dataclass(frozen=True)
class Phdr:
    """One program header of a vmcore or ELF core header."""

    type: str
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Vmcore:
    """The program headers and notes at the head of the crash kernel's /proc/vmcore."""

    size: int
    phdrs: tuple[Phdr, ...]
    notes: tuple[tuple[str, str], ...]  # (name, type)

    @property
    def loads(self) -> list[tuple[int, int]]:
        """The PT_LOAD ranges as (physical start, end exclusive)."""
        return [(p.paddr, p.paddr + p.memsz) for p in self.phdrs if p.type == "PT_LOAD"]

    @property
    def ram_loads(self) -> list[tuple[int, int]]:
        """The PT_LOADs of the direct map (RAM), without the kernel text one."""
        return [
            (p.paddr, p.paddr + p.memsz)
            for p in self.phdrs
            if p.type == "PT_LOAD" and p.vaddr < KERNEL_TEXT_MAP
        ]

    @property
    def kernel_text(self) -> tuple[int, int] | None:
        """The kernel text PT_LOAD (physical start, end), if there is one."""
        for p in self.phdrs:
            if p.type == "PT_LOAD" and p.vaddr >= KERNEL_TEXT_MAP:
                return (p.paddr, p.paddr + p.memsz)
        return None

    @property
    def prstatus(self) -> int:
        """How many NT_PRSTATUS notes (one per CPU the dump knows) there are."""
        return sum(1 for _, t in self.notes if t == "NT_PRSTATUS")

    def covers(self, start: int, end: int) -> bool:
        """Whether the PT_LOADs cover [start, end) entirely."""
        pos = start
        for s, e in sorted(self.loads):
            if s <= pos < e:
                pos = e
        return pos >= end

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any PT_LOAD touches [start, end)."""
        return any(s < end and start < e for s, e in self.loads)


def parse_elf_core(data: bytes, size: int | None = None) -> Vmcore:
    """Parse the program headers and notes of an ELF core file's head."""
    elf = ELFFile(io.BytesIO(data))
    phdrs = []
    notes: list[tuple[str, str]] = []
    for seg in elf.iter_segments():
        h = seg.header
        phdrs.append(Phdr(h.p_type, h.p_offset, h.p_vaddr, h.p_paddr, h.p_filesz, h.p_memsz))
        if isinstance(seg, NoteSegment) and h.p_offset + h.p_filesz <= len(data):
            notes.extend((n["n_name"], n["n_type"]) for n in seg.iter_notes())
    return Vmcore(size if size is not None else len(data), tuple(phdrs), tuple(notes))


def crash(agent: Agent, timeout: float = 240.0) -> Vmcore:
    """Panic the guest; return the head of the vmcore its crash kernel saw.

    The watchdog is ``timeout``: a crash kernel that never boots (a stale
    purgatory digest spins forever) raises :class:`~testbed.transport.TestbedError`.
    """
    panic(agent, timeout, "no dump: the guest did not power off")
    return read_vmcore(agent)


def panic(agent: Agent, timeout: float, what: str) -> None:
    """sysrq-c in the guest; wait until QEMU exits (the crash kernel powered
    off or rebooted). After ``timeout`` s QEMU is killed and ``what`` raised."""
    agent.request({"op": "panic"}, 30)
    try:
        agent.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait()
        raise agent.fail(f"{what} within {timeout:.0f} s") from None


def panic_until(agent: Agent, marker: str, timeout: float) -> tuple[str, bool]:
    """sysrq-c in the guest; wait until ``marker`` shows in the crash kernel's
    serial log (``ttyS1.out``: purgatory's console with kexec's
    ``--console-serial --serial=ttyS1``) or QEMU exits. Then QEMU is killed.

    Return the log and whether QEMU was still running when the marker came
    (False when it exited by itself, or after ``timeout`` s without the marker).
    """
    agent.request({"op": "panic"}, 30)
    deadline = time.monotonic() + timeout
    running = False
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            break
        if marker in _crash_out(agent):
            running = agent.proc.poll() is None
            break
        time.sleep(0.2)
    agent.proc.kill()
    agent.proc.wait()
    return _crash_out(agent), running


def _crash_out(agent: Agent) -> str:
    log = agent.crash_log
    return log.read_text(errors="replace") if log.exists() else ""


def crash_kernel_view(agent: Agent) -> tuple[str, str]:
    """The crash kernel's /proc/cmdline and /proc/iomem, as it sent them
    before the vmcore (after :func:`crash`)."""
    text = _crash_out(agent)
    line = re.search(r"^KEXECD-CMDLINE (.*)$", text, re.M)
    iomem = re.search(r"KEXECD-IOMEM-BEGIN\s*\n(.*?)KEXECD-IOMEM-END", text, re.S)
    if not line or not iomem:
        raise agent.fail("the crash kernel sent no command line or /proc/iomem")
    return line.group(1).strip(), iomem.group(1).replace("\r", "")


def read_vmcore(agent: Agent) -> Vmcore:
    """The head of the vmcore the crash kernel sent (after :func:`panic`); also
    kept as ``RUN_DIR/vmcore-head.bin``."""
    text = _crash_out(agent)
    m = re.search(r"KEXECD-VMCORE-BEGIN size=(\d+)\s*\n(.*?)KEXECD-VMCORE-END", text, re.S)
    if not m:
        raise agent.fail("the crash kernel sent no vmcore")
    data = base64.b64decode(re.sub(r"[^A-Za-z0-9+/=]", "", m.group(2)))
    (agent.run_dir / "vmcore-head.bin").write_bytes(data)
    return parse_elf_core(data, int(m.group(1)))
