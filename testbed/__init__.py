# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU test bed, shared by the VM tests (tests/vm) and the benchmarks (bench/).

Boots Debian's kernel under TCG with the host's root shared read-only, drives
hotplug over QMP, crashes the guest and reads the dump back; also reads the
ground-truth captures under tests/data. Nothing here is installed with kexecd.
"""
