# SPDX-License-Identifier: GPL-2.0-or-later
"""The exceptions kexecd raises for domain failures.

Failures of the operating system come up as :class:`OSError` with the errno
the C core returned. Everything else is a :class:`KexecdError`, whose message
names the file or value at fault and what to do about it.
"""

__all__ = [
    "AdoptError",
    "CmdlineError",
    "ConfigError",
    "HeaderError",
    "KexecdError",
    "LoadError",
    "LockBusy",
    "OwnFileError",
    "ServiceError",
    "SnapshotError",
    "StateFileError",
    "StateFormatError",
    "SystemStateError",
    "TraceError",
]


class KexecdError(Exception):
    """Base of kexecd's own errors; never raised directly."""


class TraceError(KexecdError):
    """A kexec-tools command could not be run or captured as asked."""


class SystemStateError(KexecdError):
    """A procfs or sysfs file is missing, unreadable or malformed."""


class CmdlineError(KexecdError):
    """The crash kernel's command line cannot be found in its segment, or changed as asked."""


class HeaderError(KexecdError):
    """An ELF core header is malformed, or cannot be built as asked."""


class SnapshotError(KexecdError):
    """The snapshot in the state directory is missing, corrupt or tampered with."""


class LockBusy(SnapshotError):
    """Another kexecd held the state directory's lock longer than the caller waits."""


class StateFileError(KexecdError):
    """The daemon's ``state.json`` is unreadable, malformed or of another version."""


class StateFormatError(StateFileError):
    """The daemon's ``state.json`` is well formed but of another kexecd version's
    format: written by the daemon of the package being upgraded (or downgraded)
    from, until the new one restarts. Not this version's to read, and no fault:
    ``kexecd status`` says so and judges the crash kernel without it."""


class LoadError(KexecdError):
    """A load of the crash kernel failed (and what was done about it).

    :ivar image_lost: the failure left no crash kernel loaded (the kernel
        frees the old image before loading a new one).
    """

    def __init__(self, message: str, *, image_lost: bool = False) -> None:
        super().__init__(message)
        self.image_lost = image_lost


class ServiceError(KexecdError):
    """The daemon cannot run as asked (another instance holds its runtime directory)."""


class AdoptError(KexecdError):
    """A crash kernel loaded by the distro cannot be taken over as asked."""


class ConfigError(KexecdError):
    """The configuration file is unreadable or holds a bad value."""


class OwnFileError(KexecdError, OSError):
    """One of kexecd's own files cannot be written: a directory sits where it
    goes, or its directory is a symlink (:func:`kexecd.files.write_atomic`).

    An :class:`OSError` too, with no errno: whoever handles a failed write
    (the metrics, the udev mask) handles this one."""
