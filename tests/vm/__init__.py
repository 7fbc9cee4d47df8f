# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU test bed: a real Debian kernel, real kexec-tools, real hotplug."""
