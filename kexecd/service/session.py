# SPDX-License-Identifier: GPL-2.0-or-later
"""What the daemon keeps of the crash image between two refreshes, beyond its Refresher.

The open snapshot and whether it was hashed are the
:class:`~kexecd.image.refresher.Refresher`'s (``snapshot``, ``verified``,
``forget()``); whether kexecd stands aside is the verdict's
(:class:`kexecd.service.verdict.Verdict`). :class:`ImageSession` holds the
rest: what the daemon itself saw happen to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from kexecd.service.runtime import SnapshotWatch
from kexecd.system.kmsg import Drop, worst

__all__ = ["ImageSession"]


@dataclass
class ImageSession:
    """The daemon's own knowledge of the loaded image, between refreshes.

    :ivar watch: the inotify watch on the snapshot's files, while the daemon
        runs its loop (``None`` before, and where inotify is not there).
    :ivar lost_image: kexecd's own failed load left no crash kernel loaded:
        the next refresh loads one even though none is loaded (an unload by
        the admin is respected; this is not one).
    :ivar kernel_missed: the kernel logged that it dropped an update of the
        header it keeps, and why: the next refresh loads the image itself once.

    Invariants:

    * The Refresher keeps the snapshot open (and trusts an earlier hash of
      it) only while ``watch`` runs: without the watch nothing would undo
      it when a file changes, and a stat signature is no proof (a file can
      be rewritten with its mtime restored). The watch seeing a change, or
      an adoption, makes it forget.
    * ``kernel_missed`` is cleared by the first refresh that succeeds after
      it was set (it carried the load out, or the kernel no longer keeps the
      header).
    * ``lost_image`` is set only by a failed load that left no image
      (``LoadError.image_lost``), and cleared by the first refresh that loads.
    """

    watch: SnapshotWatch | None = None
    lost_image: bool = False
    kernel_missed: Drop | None = None

    def dropped(self, drops: set[Drop]) -> bool:
        """The kernel logged these dropped updates; whether any is new since
        the last refresh (several before one refresh: the most demanding)."""
        new = self.kernel_missed is None
        self.kernel_missed = worst({*drops, *filter(None, [self.kernel_missed])})
        return new

    def refreshed(self, *, loaded: bool) -> None:
        """A refresh succeeded; ``loaded``: it loaded an image."""
        self.kernel_missed = None
        if loaded:
            self.lost_image = False

    def changed(self) -> bool:
        """The watch said something happened in the state directory: whether
        the snapshot's files changed."""
        return self.watch is not None and self.watch.changed()
