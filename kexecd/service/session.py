# SPDX-License-Identifier: GPL-2.0-or-later
"""What the daemon keeps of the crash image between two refreshes.

:class:`ImageSession` groups it, so that one object (later the image
layer's ``Refresher``) owns the open snapshot and what is known of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kexecd.image.snapshot import Snapshot
from kexecd.service.runtime import SnapshotWatch

__all__ = ["ImageSession"]


@dataclass
class ImageSession:
    """The open image, as the daemon knows it between refreshes.

    :ivar watch: the inotify watch on the snapshot's files, while the daemon
        runs its loop (``None`` before, and where inotify is not there).
    :ivar snapshot: the snapshot as the last refresh opened it, handed to the
        next one, which opens it again if it changed on disk.
    :ivar verified: the snapshot's segments were hashed and matched since the
        watch last saw a change: the next load need not hash them again.
    :ivar lost_image: kexecd's own failed load left no crash kernel loaded:
        the next refresh loads one even though none is loaded (an unload by
        the admin is respected; this is not one).
    :ivar kernel_missed: the kernel logged that it dropped an update of the
        header it keeps: the next refresh loads the image itself once.

    Invariants:

    * ``verified`` only with ``watch``: without the watch nothing would undo
      it when a file changes, and a stat signature is no proof (a file can
      be rewritten with its mtime restored); the watch seeing a change or
      an adoption clears it (:meth:`forget`).
    * ``snapshot`` is handed to a refresh only with ``watch`` running
      (:meth:`kept`); it is dropped with ``verified``, and after a failed
      refresh (:meth:`failed`).
    * ``kernel_missed`` is cleared by the first refresh that succeeds after
      it was set (it carried the load out, or the kernel no longer keeps the
      header).
    * ``lost_image`` is cleared by the first refresh that loads.

    Whether kexecd stands aside (the kernel keeps the header) is not kept
    here: it is the verdict's (:class:`kexecd.service.verdict.Verdict`).
    """

    watch: SnapshotWatch | None = None
    snapshot: Snapshot | None = None
    verified: bool = False
    lost_image: bool = False
    kernel_missed: bool = False

    def kept(self) -> Snapshot | None:
        """The snapshot to hand the next refresh, if it may be reused."""
        return self.snapshot if self.watch is not None else None

    def forget(self) -> None:
        """The snapshot changed, or was replaced: open and hash it again."""
        self.snapshot, self.verified = None, False

    def refreshed(self, snapshot: Snapshot, *, verified: bool, loaded: bool) -> None:
        """A refresh succeeded with ``snapshot``; ``verified``: it hashed the
        segments; ``loaded``: it loaded an image."""
        self.snapshot = snapshot
        self.kernel_missed = False
        if verified and self.watch is not None:
            self.verified = True
        if loaded:
            self.lost_image = False

    def failed(self) -> None:
        """A refresh failed: open the snapshot again next time."""
        self.snapshot = None

    def verified_ahead(self, snapshot: Snapshot) -> None:
        """``snapshot`` was hashed while idle, the watch running."""
        if self.watch is not None:
            self.snapshot, self.verified = snapshot, True

    def changed(self) -> None:
        """The watch said something happened in the state directory."""
        if self.watch is not None and self.watch.changed():
            self.forget()
