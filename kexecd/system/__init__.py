# SPDX-License-Identifier: GPL-2.0-or-later
"""The system as read: /proc and /sys under a root (CPUs, memory, the kernel's kexec state)."""
