# SPDX-License-Identifier: GPL-2.0-or-later
"""Fixtures of the VM tier: guests that keep their logs when a test fails."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testbed import debian_host, debian_suites, debpkg
from testbed.debian_host import HostImage
from testbed.vm import Guest, Machine, boot
from tests.vm.captures import VMEM_APPEND, VMEM_MACHINE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item.stash.setdefault(_FAILED, True)


_FAILED = pytest.StashKey[bool]()


def _guest(
    request: pytest.FixtureRequest,
    name: str,
    start: Callable[..., Guest] = boot,
    **how: Any,
) -> Iterator[Guest]:
    """A guest booted by ``start`` (x86's :func:`boot`, or ``testbed.arm64.boot``),
    closed after the test; its logs kept if the test failed."""
    guest = start(name, **how)
    yield guest
    guest.close()
    failed = (
        request.node.stash.get(_FAILED, False)
        if isinstance(request.node, pytest.Item)
        else (request.session.testsfailed > 0)
    )
    if failed:
        print(f"\nkept the guest's logs: {guest.run_dir}")
    else:
        shutil.rmtree(guest.run_dir, ignore_errors=True)


@pytest.fixture
def guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A freshly booted guest for one test (one that crashes it, say)."""
    yield from _guest(request, request.node.name)


@pytest.fixture(scope="module")
def shared_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """One guest for a whole module of tests that leave it running."""
    yield from _guest(request, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def guest_612(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A guest on bookworm-backports' Linux 6.12, its hot-added memory left offline."""
    yield from _guest(
        request,
        request.node.name,
        kernel_version="6.12",
        machine=Machine(slots=8, maxmem_mib=1024 + 8 * 256),
        append=["memhp_default_state=offline"],
    )


def guest_for(
    request: pytest.FixtureRequest, kernel: str, kexec_tools: str, **how: Any
) -> Iterator[Guest]:
    """A fresh guest on ``kernel`` (:data:`testbed.assets.KERNELS`) whose crash
    loads run ``kexec_tools`` (:data:`testbed.assets.KEXEC_TOOLS`), hot-added
    memory left offline on every kernel (6.12 would online it itself)."""
    how.setdefault("append", ["memhp_default_state=offline"])
    yield from _guest(
        request, request.node.name, kernel_version=kernel, kexec_tools=kexec_tools, **how
    )


@pytest.fixture(params=["6.1"])
def vmem_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A guest with an empty 1 GiB virtio-mem device (128 MiB blocks), its
    hot-added memory onlined movable; the kernel is the parameter
    (``@pytest.mark.parametrize("vmem_guest", [...], indirect=True)``), and
    ``"6.1 offline"`` leaves the kernel's own policy (6.1: offline)."""
    version, *policy = request.param.split()
    yield from _guest(
        request,
        request.node.name,
        kernel_version=version,
        machine=VMEM_MACHINE,
        append=[] if policy == ["offline"] else VMEM_APPEND,
    )


@dataclass(frozen=True)
class Combo:
    """A kernel, a kexec-tools build and its load options."""

    kernel: str
    kexec_tools: str
    options: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "-".join([self.kernel, self.kexec_tools, *(o.strip("-") for o in self.options)])


@pytest.fixture
def combo_guest(request: pytest.FixtureRequest) -> Iterator[tuple[Combo, Guest]]:
    """A fresh guest for the :class:`Combo` that is the parameter
    (``@pytest.mark.parametrize("combo_guest", [...], indirect=True)``)."""
    combo: Combo = request.param
    for guest in guest_for(request, combo.kernel, combo.kexec_tools):
        yield combo, guest


# -- the real Debian 12 host (testbed.debian_host) ------------------------------


@pytest.fixture(scope="module")
def host_image() -> HostImage:
    """The Debian 12 host's disk with this tree's .deb installed (cached per package)."""
    return debian_host.host_image(debpkg.ensure_deb())


@pytest.fixture(scope="module")
def trixie_image() -> HostImage:
    """The Debian 13 host's disk with this tree's .deb installed (cached per package)."""
    return debian_host.host_image(debpkg.ensure_deb(), debian_suites.TRIXIE)


@pytest.fixture
def host_run(request: pytest.FixtureRequest) -> Iterator[dict[str, Guest]]:
    """The test's Debian host guests by name, closed after it (logs kept on failure)."""
    guests: dict[str, Guest] = {}
    yield guests
    for guest in guests.values():
        guest.close()
        if request.session.testsfailed:
            print(f"\nkept the guest's logs: {guest.run_dir}")
        else:
            shutil.rmtree(guest.run_dir, ignore_errors=True)
