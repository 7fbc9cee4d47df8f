# SPDX-License-Identifier: GPL-2.0-or-later
"""The kexec files of sysfs: whether a crash kernel is loaded, what the kernel supports.

Apart from :mod:`kexecd.system.kernel` (which re-exports all of it) because
``kexecd status`` reads it at start: this module imports no C core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kexecd.errors import SystemStateError
from kexecd.system.root import Root

__all__ = [
    "U64_MAX",
    "KexecState",
    "int_file",
    "parse_u64",
    "read_kexec_state",
    "read_uevent_seqnum",
]

U64_MAX = (1 << 64) - 1
_DIGITS = {10: re.compile(r"[0-9]+"), 16: re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")}


@dataclass(frozen=True)
class KexecState:
    """The kexec and crash-hotplug files of sysfs; ``None`` where absent."""

    crash_loaded: bool
    cpu_crash_hotplug: bool | None  # Linux 6.6+
    memory_crash_hotplug: bool | None  # Linux 6.6+
    elfcorehdr_size: int | None  # Linux 6.6+
    uevent_seqnum: int

    @property
    def kernel_updates(self) -> bool:
        """The kernel rewrites the loaded image's header itself on hotplug.

        Linux 6.6+ kernel/crash_core.c: ``crash_hotplug`` reads 1 for an image
        the kernel will update (kexec_file_load, or kexec_load with
        ``KEXEC_UPDATE_ELFCOREHDR``).
        """
        return bool(self.cpu_crash_hotplug or self.memory_crash_hotplug)

    @property
    def crash_hotplug(self) -> bool:
        """The kernel has crash hotplug (Linux 6.6+: a ``crash_hotplug`` file),
        active for this image or not: it may keep a header, and drop an update."""
        return self.cpu_crash_hotplug is not None or self.memory_crash_hotplug is not None

    def kernel_updating(self) -> KexecState:
        """This state with ``crash_hotplug`` read as 1 wherever the kernel has
        it: for an image that asked the kernel to update its header.

        Linux 6.12 kernel/crash_core.c crash_check_hotplug_support(), behind
        the ``crash_hotplug`` files, answers 0 (and logs "kexec_trylock()
        failed") while another task holds the kexec lock, whatever the image;
        the image's own load flags do not change while it is loaded.
        """
        return replace(
            self,
            cpu_crash_hotplug=None if self.cpu_crash_hotplug is None else True,
            memory_crash_hotplug=None if self.memory_crash_hotplug is None else True,
        )


def parse_u64(
    text: str,
    path: object,
    *,
    base: int = 10,
    what: str = "a number",
    fix: str = "pass the file the kernel wrote",
) -> int:
    """A number as the kernel writes it in a file: ASCII digits (hex ones may
    start with 0x, as sscanf takes them), no sign, below 2**64.

    :param path: the file (and line), for the message.
    :param what: what the file should hold; ``fix``: what to do. Both for the message.
    :raises SystemStateError: the text is not such a number.
    """
    text = text.strip()
    m = _DIGITS[base].fullmatch(text)
    if not m:
        raise SystemStateError(f"{path}: cannot parse {text[:80]!r}: expected {what}; {fix}")
    # Past 20 decimal or 16 hex digits it cannot fit: said before int() works on it.
    digits = (m.group(1) if base == 16 else text).lstrip("0") or "0"
    if len(digits) > (16 if base == 16 else 20) or int(digits, base) > U64_MAX:
        raise SystemStateError(f"{path}: {text[:80]!r} is past 64 bits: expected {what}; {fix}")
    return int(digits, base)


def int_file(root: Root, rel: str, base: int = 10) -> int | None:
    """The number in a file under ``root``; ``None`` if it is absent.

    :raises SystemStateError: the file does not hold one (:func:`parse_u64`).
    """
    text = root.read_optional(rel)
    if text is None:
        return None
    return parse_u64(text, root.path(rel), base=base, what="a number")


def read_kexec_state(root: Root) -> KexecState:
    """Whether a crash kernel is loaded, and what the kernel supports."""

    def flag(rel: str) -> bool | None:
        value = int_file(root, rel)
        return None if value is None else value == 1

    return KexecState(
        crash_loaded=bool(flag("sys/kernel/kexec_crash_loaded")),
        cpu_crash_hotplug=flag("sys/devices/system/cpu/crash_hotplug"),
        memory_crash_hotplug=flag("sys/devices/system/memory/crash_hotplug"),
        elfcorehdr_size=int_file(root, "sys/kernel/crash_elfcorehdr_size"),
        uevent_seqnum=int_file(root, "sys/kernel/uevent_seqnum") or 0,
    )


def read_uevent_seqnum(root: Root) -> int:
    """The kernel's uevent counter: it moves with every hotplug event sent."""
    return int_file(root, "sys/kernel/uevent_seqnum") or 0
