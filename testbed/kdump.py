# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading the test bed's crash kernel in a guest: with kexec-tools (plain,
traced, or the way Debian's kdump-config does), with ``kexecd load``, and
kexecd's daemon (``kexecd run``)."""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

from testbed.capture import Capture
from testbed.qemu import BootSpec
from testbed.transport import Agent, Result

__all__ = ["CRASH_APPEND", "Kdump"]

# The crash kernel's command line. acpi_no_memhotplug keeps the crash kernel
# from onlining the hot-added DIMMs it is meant to dump (Fedora's default too).
CRASH_APPEND = (
    "console=ttyS0 irqpoll nr_cpus=1 reset_devices acpi_no_memhotplug panic=1 kexecd.crash=1"
)
# Run in the guest by Kdump.fresh_header: trace kexec-tools in skip mode and
# keep the segment that is an ELF core file (e_type ET_CORE).
_FRESH_HEADER = """
import sys
from kexecd.core import trace_kexec
cap = trace_kexec(sys.argv[2:], skip=True)
if cap.exit_code != 0:
    sys.exit(f"{sys.argv[2]} exited {cap.exit_code}")
(hdr,) = [s.buf for s in cap.segments if s.buf[:4] == b"\\x7fELF" and s.buf[16] == 4]
open(sys.argv[1], "wb").write(hdr)
"""


class Kdump:
    """The crash loads of one guest: the test bed's crash kernel (the guest's
    own kernel) with the guest's initrd, loaded by ``spec.kexec``."""

    def __init__(self, agent: Agent, spec: BootSpec) -> None:
        self.agent = agent
        self.kexec = spec.kexec
        self.kernel = spec.kernel
        self.initramfs = spec.initrd

    def kexec_argv(self, append: str = "", options: Sequence[str] = ()) -> list[str]:
        """The ``kexec -p`` command that loads the test bed's crash kernel.

        :param options: more kexec options, before the kernel (``-c``, ``-s``,
            ``--hotplug``).
        """
        return [
            self.kexec,
            "-p",
            *options,
            str(self.kernel.vmlinuz),
            f"--initrd={self.initramfs}",
            f"--append={CRASH_APPEND} {append}".strip(),
        ]

    def capture_load(self, name: str, append: str = "", options: Sequence[str] = ()) -> Capture:
        """``kexec -p`` under kexecd's tracer, with the files it read (a capture).

        Written to the share as ``name``; see :mod:`testbed.guest_capture`.
        """
        out = self.agent.run_dir / "share" / name
        argv = self.kexec_argv(append, options)
        self.agent.python("-m", "testbed.guest_capture", str(out), "--", *argv)
        return Capture(out)

    def fresh_header(self, append: str = "", options: Sequence[str] = ()) -> bytes:
        """The ELF core header ``kexec -p`` would load now, from a traced run whose
        kexec calls are answered without reaching the kernel (nothing loaded)."""
        out = self.agent.run_dir / "share" / "fresh-header.bin"
        self.agent.python("-c", _FRESH_HEADER, str(out), *self.kexec_argv(append, options))
        return out.read_bytes()

    def kexecd_load(
        self,
        state_dir: str,
        append: str = "",
        options: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> str:
        """``kexecd load -- kexec -p ...`` in the guest; return what it printed.

        :param options: more kexec options (:meth:`kexec_argv`).
        """
        argv = self.kexec_argv(append, options)
        out = self.agent.run(
            ["kexecd", "load", "--state-dir", state_dir, "--", *argv], timeout=timeout
        )
        if self.agent.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.agent.fail("kexecd load succeeded but no crash kernel is loaded")
        return out.stdout

    def start_daemon(
        self,
        state_dir: str,
        runtime_dir: str = "/run/kexecd",
        timeout: float = 60.0,
        config: str | None = None,
        wrapper: str = "",
    ) -> int:
        """Start ``kexecd run`` (kernel uevents: the guest has no udevd); wait for its
        first reconcile; return its pid. Its log is ``RUNTIME_DIR.log``.

        :param wrapper: a command the daemon runs under (``setpriv ...``).
        """
        self.agent.sh(f"rm -f {runtime_dir}/state.json")
        conf = f"--config {config} " if config else ""
        self.agent.sh(
            f"setsid {wrapper} kexecd run {conf}--source kernel --state-dir {state_dir} "
            f"--runtime-dir {runtime_dir} -v >{runtime_dir}.log 2>&1 </dev/null & echo $! "
            f">{runtime_dir}.pid"
        )
        deadline = time.monotonic() + timeout
        while self.agent.run(["test", "-e", f"{runtime_dir}/state.json"], check=False).rc != 0:
            if time.monotonic() > deadline:
                log = self.agent.run(["cat", f"{runtime_dir}.log"], check=False).stdout
                raise self.agent.fail(f"kexecd run did not reconcile within {timeout} s:\n{log}")
            time.sleep(0.2)
        return int(self.agent.read(f"{runtime_dir}.pid"))

    def daemon_state(self, runtime_dir: str = "/run/kexecd") -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.agent.read(f"{runtime_dir}/state.json"))
        return state

    def kdump_tools_load(self, kexec_cmd: str, append: str = "") -> str:
        """Load the crash kernel as Debian's kdump-config does: ``eval $KEXEC_CMD``,
        then the command written to ``kexec_cmd``. Returns the command line."""
        cmdline = f"{CRASH_APPEND} {append}".strip()
        line = (
            f'{self.kexec} -p --command-line="{cmdline}" '
            f"--initrd={self.initramfs} {self.kernel.vmlinuz}"
        )
        self.agent.sh(
            f"mkdir -p {shlex.quote(os.path.dirname(kexec_cmd))} && "
            f"KEXEC_CMD={shlex.quote(line)} && eval $KEXEC_CMD && "
            f'echo "$KEXEC_CMD" >{shlex.quote(kexec_cmd)}'
        )
        if self.agent.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.agent.fail(
                "the kdump-tools-style load succeeded but no crash kernel is loaded"
            )
        return line

    def load_crash_kernel(self, append: str = "") -> Result:
        """Load the crash kernel with kexec-tools in the guest."""
        res = self.agent.run(self.kexec_argv(append), timeout=120)
        if self.agent.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.agent.fail("kexec -p succeeded but no crash kernel is loaded")
        return res
