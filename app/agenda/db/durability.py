"""Durability (``fsync=True``): fsync around pysyncobj's mmap journal.

pysyncobj writes its journal through mmap and never fsyncs. A write that is only in the page cache
survives the process being SIGKILLed (the kernel still owns the pages) but not a power loss or kernel
crash. :class:`DurableFileJournal` here and :class:`~agenda.db.transport.DurableTransport` add:

* follower side: every ``next_node_idx`` message (the follower's ack of appended entries) is held back and
  sent at the end of the tick, after one ``msync``+``fsync`` of the journal covering everything appended
  during that tick (group commit). So a follower never acknowledges an entry that is not on its disk.
* leader side: before the leader advances its commit index (which it does counting itself), the journal is
  synced. Nothing that reveals the new commit index (applying, answering the client, telling followers)
  happens before that, so an acknowledged write is on the disks of a majority.
* currentTerm/votedFor (the ``.meta`` file) are written to a temp file, fsynced, renamed and the directory
  fsynced before the vote is sent (pysyncobj already stores them synchronously, but without fsync).
* snapshots (log compaction dump) are written by the node's serializer with fsync, and the journal is
  truncated only after the dump and the data directory are fsynced.

See :func:`durability_notes` for what is *not* guaranteed.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final

from agenda.db.pysyncobj_adapter import JournalBase, MetaStorer, encode_meta

__all__ = ["DurableFileJournal", "durability_notes", "fsync_path"]

# See DurableFileJournal.sync: on Linux an fsync of the journal file covers its shared mmap.
_MSYNC_IS_FSYNC: Final = sys.platform.startswith("linux")


def fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """fsync a file, or a directory (which makes the names in it - a rename, a new file - durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DurableMetaStorer(MetaStorer):
    """pysyncobj's meta file (currentTerm, votedFor, commit index) written atomically *and* durably."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: dict[str, Any]) -> None:  # noqa: N802 - pysyncobj's name
        path = self.getPath()
        tmp = path + ".tmp"
        data = encode_meta(meta)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._fsync:
            fsync_path(os.path.dirname(path) or ".", directory=True)


class DurableFileJournal(JournalBase):
    """pysyncobj's FileJournal plus an explicit :meth:`sync` (msync + fsync) and a dirty flag.

    ``sync`` is a no-op when nothing changed since the last one, so calling it at every decision point
    costs nothing when idle; with ``fsync=False`` it only clears the flag.
    """

    def __init__(self, path: str, *, fsync: bool, dump_path: str | None = None) -> None:
        super().__init__(path)
        self._fsync = fsync
        self._dump_path = dump_path
        self._dirty = False
        self.syncs = 0  # number of real fsyncs (metrics)
        self.set_meta_storer(_DurableMetaStorer(path + ".meta", fsync))
        if fsync:
            fsync_path(os.path.dirname(path) or ".", directory=True)

    @property
    def fsync(self) -> bool:
        """Whether :meth:`sync` really fsyncs (``--no-fsync`` turns it off)."""
        return self._fsync

    @property
    def dirty(self) -> bool:
        return self._dirty

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def clear(self) -> None:
        # clear() precedes rewriting the journal after a snapshot (ours or one received from the leader):
        # the dump that replaces the dropped entries must be durable before those entries are gone.
        if self._fsync and self._dump_path is not None and os.path.exists(self._dump_path):
            fsync_path(self._dump_path)
            fsync_path(os.path.dirname(self._dump_path) or ".", directory=True)
        super().clear()
        self._dirty = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        # The leader calls this right after counting itself towards a new commit index and before
        # applying / answering clients / telling followers: its own copy must be on disk first.
        self.sync()
        super().setRaftCommitIndex(raftCommitIndex)

    def sync(self) -> None:
        """Make every appended entry durable (one msync + fsync for all changes since the last sync)."""
        if not self._dirty:
            return
        self._dirty = False
        if not self._fsync:
            return
        if not _MSYNC_IS_FSYNC:
            self.flush_mapping()  # msync(MS_SYNC) of the mapping
        # On Linux, msync(MS_SYNC) of a shared file mapping *is* vfs_fsync_range() on the mapped file
        # (mm/msync.c): the mapping's dirty pages are the file's page-cache pages, which fsync writes back.
        # fsync of the whole file (data and metadata, e.g. the size after a resize) is therefore a
        # superset, and unlike CPython's mmap.flush() it releases the GIL while the disk works, so HTTP
        # threads keep running during the group commit.
        os.fsync(self.journal_fileno())
        self.syncs += 1


def durability_notes() -> list[str]:
    """What ``--fsync`` does not guarantee (also rendered in the operator docs)."""
    return [
        "pysyncobj's journal has no checksums: a power loss in the middle of an fsync can leave a torn "
        "record at the tail (or, during log compaction, which rewrites the journal in place, in the "
        "middle); the member may then refuse to start and must be wiped and re-synced from the others.",
        "with --no-fsync, data survives the processes being killed (it is in the kernel page cache) but "
        "not a power loss or kernel crash of a majority of machines at the same time.",
    ]
