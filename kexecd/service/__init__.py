# SPDX-License-Identifier: GPL-2.0-or-later
"""The service: the daemon, its uevent monitor, settings, state file and systemd glue."""
