# SPDX-License-Identifier: GPL-2.0-or-later
"""What the test bed boots: Debian's kernel package and a busybox initramfs;
and promtool, which checks kexecd's metrics and alert rules.

Downloads are cached outside the repository, in ``$KEXECD_VM_CACHE``
(default ``~/.cache/kexecd-vm``). ``python -m testbed.assets`` fetches them
ahead of time, ``python -m testbed.assets promtool`` fetches promtool (the
setup script does both).
"""

from __future__ import annotations

import functools
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from kexecd.system.kexectools import version_in

# The kernels the test bed boots: the host suite's own (Debian 12, 6.1),
# bookworm-backports' 6.12 and bullseye's 5.10 (FIELD-NOTES section 10),
# fetched from apt lists of their own in the cache without touching the host's
# sources.
KERNELS: dict[str, str | None] = {"6.1": None, "6.12": "bookworm-backports", "5.10": "bullseye"}
MIRROR = "http://deb.debian.org/debian"

# The kernel modules the guest needs to mount the host root over 9p and to talk
# to the host over virtio-serial. Their dependencies come from each module's
# own .modinfo ``depends=`` (the packages ship no modules.dep), so the set
# follows the kernel: 5.10 has no virtio_pci_modern_dev (split out in 5.14)
# nor netfs (5.13), 6.12 builds virtio and virtio_pci in.
#
# virtio_mem drives a Machine.virtio_mem_mib device. It is always loaded: it
# binds to a virtio-mem device only, so without one it does nothing, and one
# initramfs (one digest) serves every machine shape. The crash kernel never
# loads it: guest_init.sh reads /proc/vmcore first.
GUEST_MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "virtio_mem")

# The kexec-tools builds the guest can load its crash kernel with: the host's
# own (bookworm, 2.0.25), bullseye's binary (2.0.20, runs on bookworm's libc),
# and trixie's, built from its Debian source package (2.0.29's binary needs
# trixie's newer glibc). The value is (suite, how), how being "binary" or
# "source"; None is the host's /usr/sbin/kexec.
KEXEC_TOOLS: dict[str, tuple[str, str] | None] = {
    "2.0.25": None,
    "2.0.20": ("bullseye", "binary"),
    "2.0.29": ("trixie", "source"),
}
HOST_KEXEC = Path("/usr/sbin/kexec")

BUSYBOX = Path("/bin/busybox")
INIT_SCRIPT = Path(__file__).with_name("guest_init.sh")


class AssetError(RuntimeError):
    """A test-bed asset is missing and could not be fetched."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package."""

    package: str
    vmlinuz: Path
    modules: Path  # lib/modules/<release>

    def _index(self) -> dict[str, Path]:
        # Module name (dashes read as underscores, as modprobe does) -> file.
        index = {}
        for path in (self.modules / "kernel").rglob("*.ko*"):
            name = path.name.split(".ko", 1)[0].replace("-", "_")
            index[name] = path
        return index

    def _builtin(self) -> set[str]:
        path = self.modules / "modules.builtin"
        if not path.exists():
            return set()
        return {
            Path(line).name.split(".ko", 1)[0].replace("-", "_")
            for line in path.read_text().split()
        }

    def module(self, name: str) -> bytes | None:
        """A module's bytes, decompressed (``.ko`` or ``.ko.xz``); ``None``
        when the kernel has it built in.

        :raises AssetError: neither a module nor built in.
        """
        path = self._index().get(name)
        if path is not None:
            data = path.read_bytes()
            return lzma.decompress(data) if path.name.endswith(".xz") else data
        if name in self._builtin():
            return None
        raise AssetError(f"{self.package}: no module {name} and not built in")

    def load_order(self, names: Sequence[str]) -> list[tuple[str, bytes]]:
        """``names`` and the modules they depend on (each module's .modinfo
        ``depends=``), dependencies first; built-in ones left out."""
        order: list[tuple[str, bytes]] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            data = self.module(name)
            if data is None:
                return
            for dep in modinfo_depends(data):
                visit(dep)
            order.append((name, data))

        for name in names:
            visit(name)
        return order


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a kernel module's .modinfo section (may be empty)."""
    section = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    if section is None:
        return []
    for field in section.data().split(b"\0"):
        if field.startswith(b"depends="):
            value = field.removeprefix(b"depends=").decode()
            return [d.replace("-", "_") for d in value.split(",") if d]
    return []


def content_key(*parts: str | bytes) -> str:
    """A short key of what a cached asset is built from (each part length-prefixed)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Where downloads and test-bed runs live (outside the repository)."""
    path = Path(os.environ.get("KEXECD_VM_CACHE", Path.home() / ".cache" / "kexecd-vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _apt_options(name: str, kind: str = "deb") -> list[str]:
    # A sources list and lists of the suite's own, in the cache: the host's
    # apt configuration is not touched. ``name`` is the suite, with "-src"
    # for its deb-src list (kind "deb-src").
    suite = name.removesuffix("-src")
    d = cache_dir() / "apt" / name
    if not (d / "lists" / "ok").exists():
        (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "sources.list").write_text(f"{kind} {MIRROR} {suite} main\n")
    opts = [
        f"-oDir::Etc::SourceList={d / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={d / 'lists'}",
        f"-oDir::Cache={d / 'cache'}",
    ]
    if not (d / "lists" / "ok").exists():
        r = subprocess.run(
            ["apt-get", *opts, "update", "-qq"], capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            raise AssetError(f"apt-get update of {suite} failed: {r.stderr.strip()}")
        (d / "lists" / "ok").write_text("")
    return opts


def kernel_package(which: str = "6.1") -> str:
    """The exact kernel package that ``linux-image-amd64`` depends on, in the
    host's suite (``6.1``) or in the suite :data:`KERNELS` names."""
    suite = KERNELS.get(which, "?")
    if suite == "?":
        raise AssetError(f"no kernel {which!r} in the test bed; known: {', '.join(KERNELS)}")
    name = os.environ.get("KEXECD_VM_KERNEL_PACKAGE")
    if name and suite is None:
        return name
    opts = [] if suite is None else _apt_options(suite)
    out = subprocess.run(
        ["apt-cache", *opts, "depends", "linux-image-amd64"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise AssetError(
        "apt-cache does not know linux-image-amd64: run 'apt-get update' "
        "(or set KEXECD_VM_KERNEL_PACKAGE to a linux-image-6.1.0-*-amd64 package)"
    )


def ensure_kernel(which: str = "6.1") -> Kernel:
    """Download and unpack a guest kernel (:data:`KERNELS`) once; return where it is."""
    package = kernel_package(which)
    root = cache_dir() / package
    if not (root / "boot").is_dir():
        suite = KERNELS[which]
        deb = _download(package, f"download-{which}", [] if suite is None else _apt_options(suite))
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
        shutil.rmtree(deb.parent)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(package, vmlinuz, root / "lib" / "modules" / release)


def ensure_kexec_tools(version: str = "2.0.25") -> Path:
    """The ``kexec`` binary of a kexec-tools build in :data:`KEXEC_TOOLS`,
    fetched or built once into ``cache_dir()/kexec-tools/VERSION``.

    The version is checked in the binary's own text
    (:func:`kexecd.system.kexectools.version_in`): nothing here runs kexec.
    """
    how = KEXEC_TOOLS.get(version, ())
    if how == ():
        raise AssetError(
            f"no kexec-tools {version} in the test bed; known: {', '.join(KEXEC_TOOLS)}"
        )
    if how is None:
        path = HOST_KEXEC
        if not path.exists():
            raise AssetError(f"{path} is missing: apt-get install kexec-tools")
    else:
        path = cache_dir() / "kexec-tools" / version / "kexec"
        if not path.exists():
            suite, kind = how
            built = _fetch_kexec_binary(suite) if kind == "binary" else build_kexec(suite)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            shutil.copyfile(built, tmp)
            tmp.chmod(0o755)
            tmp.rename(path)
            shutil.rmtree(cache_dir() / f"kexec-tools-{suite}", ignore_errors=True)
    found = version_in(path.read_bytes())
    if found != version:
        raise AssetError(
            f"{path} says kexec-tools {found}, not {version}: remove it to fetch again"
        )
    return path


def _fetch_kexec_binary(suite: str) -> Path:
    # The suite's own version, named: without it apt takes the candidate of the
    # host's dpkg status, the installed (newer) kexec-tools.
    opts = _apt_options(suite)
    out = subprocess.run(
        ["apt-cache", *opts, "madison", "kexec-tools"], capture_output=True, text=True, check=False
    ).stdout
    versions = [line.split("|")[1].strip() for line in out.splitlines() if f" {suite}/" in line]
    if not versions:
        raise AssetError(f"{suite} has no kexec-tools in its apt lists ({cache_dir() / 'apt'})")
    deb = _download(f"kexec-tools={versions[0]}", f"kexec-tools-{suite}", opts)
    unpacked = deb.parent / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return unpacked / "sbin" / "kexec"


def build_kexec(suite: str, host: str | None = None) -> Path:
    """Build Debian's kexec-tools source package of ``suite`` (from a deb-src
    list of the suite's own) in ``cache_dir()/kexec-tools-SUITE[-HOST]``; return
    its ``kexec``.

    Built with the host's compiler and libc, or cross-built for ``host`` (a GNU
    triplet: ``aarch64-linux-gnu``, with gcc-aarch64-linux-gnu), without the
    optional libraries the host may lack (the test bed's kernels and initrds
    are not compressed by kexec-tools).

    :raises AssetError: fetching or building failed.
    """
    work = cache_dir() / (f"kexec-tools-{suite}" + (f"-{host}" if host else ""))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    r = subprocess.run(
        [
            "apt-get",
            *_apt_options(f"{suite}-src", "deb-src"),
            "source",
            "-qq",
            "--download-only",
            "kexec-tools",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    dsc = list(work.glob("*.dsc"))
    if r.returncode != 0 or len(dsc) != 1:
        raise AssetError(f"apt-get source kexec-tools ({suite}) failed: {r.stderr.strip()}")
    run = functools.partial(subprocess.run, capture_output=True, text=True, check=False)
    r = run(["dpkg-source", "-x", dsc[0].name, "src"], cwd=work)
    if r.returncode != 0:
        raise AssetError(f"dpkg-source -x {dsc[0]} failed: {r.stderr.strip()}")
    src = work / "src"
    for step in (
        [
            "./configure",
            *([f"--host={host}"] if host else []),
            "--without-zlib",
            "--without-lzma",
            "--without-xen",
        ],
        ["make", f"-j{os.cpu_count() or 1}"],
    ):
        r = run(step, cwd=src)
        if r.returncode != 0:
            raise AssetError(
                f"building kexec-tools ({suite}): {' '.join(step)} failed:\n"
                f"{r.stdout[-2000:]}{r.stderr[-2000:]}"
            )
    return src / "build" / "sbin" / "kexec"


def _download(package: str, name: str, apt_options: list[str] | None = None) -> Path:
    """``apt-get download package`` into a fresh ``cache_dir()/name``; the .deb's path.

    One directory per asset: a test run fetching another asset at the same
    time removes only its own.
    """
    download = cache_dir() / name
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir()
    r = subprocess.run(
        ["apt-get", *(apt_options or []), "download", package],
        cwd=download,
        capture_output=True,
        text=True,
        check=False,
    )
    debs = list(download.glob("*.deb"))
    if r.returncode != 0 or len(debs) != 1:
        raise AssetError(f"apt-get download {package} failed: {r.stderr.strip()}")
    return debs[0]


def promtool_path() -> Path:
    """Where :func:`ensure_promtool` keeps promtool (which may not be there yet)."""
    return cache_dir() / "prometheus" / "promtool"


def ensure_promtool() -> Path:
    """Fetch promtool from Debian's ``prometheus`` package once; return its path.

    The package is downloaded and unpacked, never installed: its postinst
    would create a user and start a Prometheus server on this machine. Only
    ``usr/bin/promtool`` is kept.
    """
    path = promtool_path()
    if path.exists():
        return path
    deb = _download("prometheus", "download-prometheus")
    unpacked = deb.parent / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    shutil.move(unpacked / "usr" / "bin" / "promtool", tmp)
    tmp.rename(path)
    shutil.rmtree(deb.parent)
    return path


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    # The "newc" format of the kernel's initramfs unpacker (init/initramfs.c).
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(kernel: Kernel) -> Path:
    """Write (once per content) the initramfs both the guest and its crash kernel boot.

    Its ``/init`` mounts the host root over 9p and starts the agent; in a crash
    kernel (``/proc/vmcore`` exists) it sends the head of the vmcore to ttyS1
    and powers off.
    """
    if not BUSYBOX.exists():
        raise AssetError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o40755, b""),
        ("dev", 0o40755, b""),
        ("proc", 0o40755, b""),
        ("sys", 0o40755, b""),
        ("newroot", 0o40755, b""),
        ("modules", 0o40755, b""),
        ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        ("init", 0o100755, INIT_SCRIPT.read_bytes()),
    ]
    order = []
    for name, data in kernel.load_order(GUEST_MODULES):
        order.append(name)
        files.append((f"modules/{name}.ko", 0o100644, data))
    files.append(("modules/order", 0o100644, "".join(f"{n}\n" for n in order).encode()))
    blob = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(files))
    blob += _cpio_entry("TRAILER!!!", 0)
    blob += b"\0" * (-len(blob) % 512)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    path = cache_dir() / f"initramfs-{digest}.cpio"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.rename(path)
    return path


def main(argv: list[str]) -> int:
    if argv == ["promtool"]:
        print(f"promtool  {ensure_promtool()}")
        return 0
    if argv[:1] == ["kexec-tools"]:
        for version in argv[1:] or list(KEXEC_TOOLS):
            print(f"kexec-tools {version}  {ensure_kexec_tools(version)}")
        return 0
    for which in argv or ["6.1"]:
        kernel = ensure_kernel(which)
        initramfs = build_initramfs(kernel)
        print(f"kernel    {kernel.vmlinuz}")
        print(f"initramfs {initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
