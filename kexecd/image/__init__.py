# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash image: the ELF core header, purgatory's digest, the snapshot, the plan, the load."""
