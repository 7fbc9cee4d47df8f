# SPDX-License-Identifier: GPL-2.0-or-later
"""The arm64 test bed: Debian's cloud-arm64 kernel in qemu-system-aarch64 under TCG.

FIELD-NOTES section 13, as proven on this machine: the ``virt`` machine with
GICv3 and EDK2's UEFI firmware (memory hotplug needs its ACPI GED device),
a Cortex-A57 pair, 1 GiB of 3 GiB, ``crashkernel=256M``, ``nokaslr``. The
guest's root is an arm64 bookworm on a read-only virtio-blk disk
(:mod:`testbed.arm64_assets`), reached from a busybox initramfs that is also
the crash kernel's; the test bed's agent answers on a virtio-serial port as
on x86, so a booted guest is a :class:`~testbed.guest.Guest` whose hotplug
and panic work unchanged. The virt machine has one serial port: the crash
kernel sends the head of its /proc/vmcore to the console, between the
markers :func:`testbed.dumps.read_vmcore` reads.

Guests boot under the test bed's guest lock (:func:`testbed.boot.launch`),
one at a time with the x86 ones.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.arm64_disk import Arm64Image, disk_image, guest_image, guest_kexec
from testbed.boot import launch, new_run_dir
from testbed.capture import Capture
from testbed.guest import Guest
from testbed.qemu import BootSpec, Machine, control, reset_log, virtio_mem_options
from testbed.transport import TestbedError

__all__ = [
    "CRASH_APPEND",
    "DEFAULT",
    "EFI_FIRMWARE",
    "MACHINE",
    "TRIXIE",
    "Arm64Load",
    "Combo",
    "boot",
    "capture_load",
    "kexec_argv",
    "load_crash_kernel",
    "qemu_argv",
    "text_symbol",
    "traced_load",
]

EFI_FIRMWARE = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
# No vCPU hotplug on arm64 in QEMU 7.2: maxcpus is smp.
# A virtio-mem device of 512 MiB, nothing plugged at boot (FIELD-NOTES 13: it
# works on virt in QEMU 7.2); 128 MiB blocks, arm64's memory block size with
# 4 KiB pages.
MACHINE = Machine(smp=2, maxcpus=2, mem_mib=1024, slots=4, maxmem_mib=3072, virtio_mem_mib=512)
APPEND = ("console=ttyAMA0", "memhp_default_state=online_movable", "nokaslr", "rdinit=/init")
# FIELD-NOTES 13's crash kernel command line.
CRASH_APPEND = "console=ttyAMA0 nr_cpus=1 reset_devices rdinit=/init"


@dataclass(frozen=True)
class Combo:
    """A kernel the guest boots and the kexec-tools it loads its crash kernel
    with: bookworm's 6.1 with 2.0.25 (:data:`DEFAULT`), trixie's 6.12 with
    2.0.29 and ``-c`` (``kexec_load``, as trixie's kdump-tools loads with
    ``KDUMP_KEXEC_ARGS="-c"``)."""

    kernel: str = "6.1"
    kexec_tools: str = "2.0.25"
    options: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "-".join([self.kernel, self.kexec_tools, *(o.lstrip("-") for o in self.options)])

    @property
    def kexec(self) -> str:
        """The guest's ``kexec`` of this kexec-tools."""
        return guest_kexec(self.kexec_tools)


DEFAULT = Combo()
TRIXIE = Combo("6.12", "2.0.29", ("-c",))
# trixie's kexec -p without -c: kexec-tools 2.0.29 tries kexec_file_load
# first and falls back to kexec_load on ENOSYS (kexec/kexec.c, main() and
# do_kexec_file_load()). No Debian arm64 kernel has kexec_file_load:
# CONFIG_KEXEC_FILE is unset in the arm64 and cloud-arm64 flavours of 6.1
# (bookworm), 6.12 (trixie), 7.3 (trixie-backports) and 7.2 (sid).
TRIXIE_AUTO = Combo("6.12", "2.0.29")
_TEXT_LINES = 'awk \'$3 == "_text" || $3 == "_stext"\' /proc/kallsyms'
# Where the guest's /proc/kallsyms with _text is bind-mounted from.
KALLSYMS = "/run/kallsyms"
# arch/arm64/kernel/vmlinux.lds.S (Linux 6.1, 4 KiB pages).
SEGMENT_ALIGN = 0x10000
# Segments up to this size come back from a traced load whole (the DTB, the
# header, purgatory); the kernel and initrd by size only.
SMALL_SEGMENT = 1 << 20


def qemu_argv(run_dir: Path, spec: BootSpec) -> list[str]:
    """The qemu-system-aarch64 command line of an arm64 guest whose files are in
    ``run_dir``; ``spec.devices`` holds its disk."""
    qemu = shutil.which("qemu-system-aarch64")
    if not qemu:
        raise TestbedError("qemu-system-aarch64 is missing: apt-get install qemu-system-arm")
    if not EFI_FIRMWARE.exists():
        raise TestbedError(f"{EFI_FIRMWARE} is missing: apt-get install qemu-efi-aarch64")
    m = spec.machine
    return [
        qemu,
        "-bios",
        str(EFI_FIRMWARE),
        "-machine",
        "virt,gic-version=3",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "cortex-a57",
        "-smp",
        str(m.smp),
        "-m",
        f"{m.mem_mib}M,slots={m.slots},maxmem={m.maxmem_mib}M",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        *reset_log(run_dir),
        "-kernel",
        str(spec.kernel.vmlinuz),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.cmdline,
        "-serial",
        f"file:{run_dir / 'console.log'}",
        *control(run_dir, [*spec.devices, *virtio_mem_options(m)]),
    ]


@dataclass(frozen=True)
class MakedumpfileReport:
    """What the root's makedumpfile made of /proc/vmcore in the crash kernel.

    :ivar dmesg_rc: ``makedumpfile --dump-dmesg``'s exit code; ``dmesg`` the
        last lines of the log it read out of the dump, ``dmesg_log`` its own
        messages.
    :ivar d31_rc: the exit code of ``makedumpfile -F -l -d 31`` (flattened, to
        a pipe), ``d31_bytes`` the size of that dump, ``d31_log`` its messages.
    """

    dmesg_rc: int
    dmesg: str
    dmesg_log: str
    d31_rc: int
    d31_bytes: int
    d31_log: str


def makedumpfile_report(guest: Guest) -> MakedumpfileReport:
    """The crash kernel's makedumpfile runs (after a crash of a load made with
    ``append="kexecd.makedumpfile"``), from its console."""
    text = guest.console_log.read_text(errors="replace").replace("\r", "")
    m = re.search(
        r"KEXECD-MAKEDUMPFILE-DMESG rc=(\d+)\n(.*?)KEXECD-MAKEDUMPFILE-LOG\n(.*?)"
        r"KEXECD-MAKEDUMPFILE-D31 rc=(\d+) bytes=(\d*)\n(.*?)KEXECD-MAKEDUMPFILE-END",
        text,
        re.S,
    )
    if not m:
        raise TestbedError(f"the crash kernel sent no makedumpfile report ({guest.console_log})")

    def text_of(b64: str) -> str:
        return base64.b64decode(re.sub(r"[^A-Za-z0-9+/=]", "", b64)).decode(errors="replace")

    return MakedumpfileReport(
        int(m[1]), text_of(m[2]), text_of(m[3]), int(m[4]), int(m[5] or 0), text_of(m[6])
    )


def boot(
    name: str = "arm64",
    machine: Machine = MACHINE,
    timeout: float = 300.0,
    image: Arm64Image | None = None,
    combo: Combo = DEFAULT,
) -> Guest:
    """Boot an arm64 guest (after any other guest has closed) on ``combo``'s
    kernel and wait for its agent.

    The crash kernel's output is the console's: ``RUN_DIR/ttyS1.out`` (the
    x86 guests' second port, :attr:`Guest.crash_log`) links to ``console.log``.
    """
    image = image or disk_image()
    run_dir = new_run_dir(name)
    (run_dir / "ttyS1.out").symlink_to("console.log")
    kernel, initramfs = image.kernels[combo.kernel]
    spec = BootSpec(
        machine,
        kernel,
        initramfs,
        append=APPEND,
        devices=(
            "-drive",
            f"if=none,id=root,file={image.disk},format=raw,readonly=on",
            "-device",
            "virtio-blk-pci,drive=root",
        ),
        kexec=combo.kexec,
    )
    return launch(name, run_dir, spec, timeout, argv=qemu_argv(run_dir, spec))


def text_symbol(kallsyms: str) -> str:
    """The ``_text`` line Debian's arm64 /proc/kallsyms lacks, from its ``_stext``.

    Linux 6.1 arch/arm64/kernel/vmlinux.lds.S: ``_text`` starts ``.head.text``
    (the Image header, well under 64 KiB) and ``_stext`` the ``.text`` after
    it, aligned to SEGMENT_ALIGN (64 KiB). Debian's System.map is a stub that
    points at the -dbg package, so it cannot say.
    """
    for line in kallsyms.splitlines():
        words = line.split()
        if words[2:3] == ["_text"]:
            return line
        if words[2:] == ["_stext"]:
            return f"{int(words[0], 16) - SEGMENT_ALIGN:016x} T _text"
    raise TestbedError("the guest's /proc/kallsyms has no _stext")


def fix_kallsyms(guest: Guest) -> None:
    """Bind-mount a /proc/kallsyms with ``_text`` over the guest's (FIELD-NOTES 13:
    without it kexec-tools 2.0.25 writes a kernel PT_LOAD of 16 EiB); nothing
    when the kernel lists ``_text`` (6.12's cloud-arm64 has KALLSYMS_ALL)."""
    lines = guest.sh(_TEXT_LINES)
    if any(line.split()[2:3] == ["_text"] for line in lines.splitlines()):
        return
    guest.sh(
        f"cat /proc/kallsyms >{KALLSYMS} && "
        f"echo '{text_symbol(lines)}' >>{KALLSYMS} && "
        f"mount --bind {KALLSYMS} /proc/kallsyms"
    )


def kexec_argv(options: Sequence[str] = (), append: str = "", combo: Combo = DEFAULT) -> list[str]:
    """The guest's ``kexec -p`` of the test bed's crash kernel (the kernel the
    guest runs, the kexec-tools and options of ``combo``); ``append``: more
    words for its command line (``kexecd.makedumpfile``: the crash kernel runs
    makedumpfile too, :func:`makedumpfile_report`)."""
    image, initrd = guest_image(combo.kernel)
    return [
        combo.kexec,
        "-p",
        *combo.options,
        *options,
        image,
        f"--initrd={initrd}",
        f"--append={CRASH_APPEND} {append}".rstrip(),
    ]


def load_crash_kernel(guest: Guest, options: Sequence[str] = (), combo: Combo = DEFAULT) -> float:
    """``kexec -p`` in the guest; return how long it took (s)."""
    res = guest.run(kexec_argv(options, combo=combo), timeout=120)
    if guest.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
        raise guest.fail("kexec -p succeeded but no crash kernel is loaded")
    return res.seconds


@dataclass(frozen=True)
class Arm64Load:
    """A crash load kexec-tools made (or would make) in an arm64 guest.

    :ivar segments: (mem, memsz, bufsz, buf): ``buf`` is empty for segments
        over :data:`SMALL_SEGMENT` (the kernel, the initrd).
    """

    entry: int
    flags: int
    segments: tuple[tuple[int, int, int, bytes], ...]
    stderr: str

    def segment(self, magic: bytes) -> tuple[int, int, int, bytes]:
        """The one segment whose buffer starts with ``magic``."""
        found = [s for s in self.segments if s[3][: len(magic)] == magic]
        if len(found) != 1:
            raise TestbedError(f"{len(found)} segments start with {magic!r}")
        return found[0]

    @property
    def header(self) -> bytes:
        """The ELF core header (e_type ET_CORE)."""
        hits = [
            s[3] for s in self.segments if s[3][:4] == b"\x7fELF" and s[3][16:18] == b"\x04\x00"
        ]
        if len(hits) != 1:
            raise TestbedError(f"{len(hits)} ELF core headers in the load")
        return hits[0]

    @property
    def dtb(self) -> bytes:
        return self.segment(b"\xd0\x0d\xfe\xed")[3]


# Run in the guest by traced_load(): kexecd's tracer, compiled for aarch64 on
# the guest's disk; the load as JSON on stdout.
_TRACE = """
import base64, json, sys
from kexecd.core import trace_kexec
cap = trace_kexec(sys.argv[3:], skip=sys.argv[1] == "skip")
small = int(sys.argv[2])
json.dump({"entry": cap.entry, "flags": cap.flags, "exit": cap.exit_code,
    "segments": [[s.mem, s.memsz, len(s.buf),
        base64.b64encode(bytes(s.buf) if len(s.buf) <= small else b"").decode()]
        for s in cap.segments]}, sys.stdout)
"""


def traced_load(
    guest: Guest, skip: bool, options: Sequence[str] = (), combo: Combo = DEFAULT
) -> Arm64Load:
    """``kexec -p`` under kexecd's tracer in the guest: what it loads
    (``skip``: answered without reaching the kernel, nothing loaded).

    ``--debug`` is passed: kexec-tools' account of the load is ``stderr``.
    """
    argv = kexec_argv(["--debug", *options], combo=combo)
    res = guest.run(
        ["python3", "-c", _TRACE, "skip" if skip else "pass", str(SMALL_SEGMENT), *argv],
        timeout=180,
    )
    out = json.loads(res.stdout)
    if out["exit"] != 0:
        raise guest.fail(f"traced kexec -p exited {out['exit']}: {res.stderr}")
    segments = tuple((m, ms, n, base64.b64decode(b)) for m, ms, n, b in out["segments"])
    return Arm64Load(out["entry"], out["flags"], segments, res.stderr)


def capture_load(
    guest: Guest,
    out: Path,
    options: Sequence[str] = (),
    *,
    skip: bool = False,
    combo: Combo = DEFAULT,
) -> Capture:
    """``kexec -p`` in the guest under :mod:`testbed.guest_capture` (kexecd's
    tracer; ``skip``: the call answered without reaching the kernel, nothing
    loaded): a ground-truth capture, brought back to ``out`` over the agent
    (the arm64 kernel has no 9p)."""
    remote = "/run/tmp/capture"
    flags = ["--skip"] if skip else []
    guest.run(
        [
            "python3",
            "-m",
            "testbed.guest_capture",
            *flags,
            remote,
            "--",
            *kexec_argv(options, combo=combo),
        ],
        timeout=180,
        # assets.cache_dir() is under $HOME, on the read-only root.
        env={"KEXECD_VM_CACHE": "/run/tmp/cache"},
    )
    data = guest.sh(f"tar -C {remote} -cz . | base64", timeout=60)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(out), "-xz"], input=base64.b64decode(data), check=True)
    return Capture(out)
