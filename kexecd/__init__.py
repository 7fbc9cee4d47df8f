# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd: keep the kdump crash kernel's ELF core header current across hotplug."""

__version__ = "0.1.0"
