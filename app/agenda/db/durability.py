"""Durability (``fsync=True``) and integrity of the Raft journal: our own journal file in pysyncobj's place.

pysyncobj's FileJournal writes through mmap, never fsyncs, has no checksums and rewrites itself in place
on log compaction. :class:`DurableFileJournal` keeps pysyncobj's interface and its mmap'ed append-only
file, but writes it in its own format (:mod:`agenda.db.journal_format`: every record carries a CRC-32
and the offset up to which the journal was on disk when it was appended). With
:class:`~agenda.db.transport.DurableTransport` it guarantees:

* follower side: every ``next_node_idx`` message (the follower's ack of appended entries) is held back and
  sent at the end of the tick, after one fsync of the journal covering everything appended during that
  tick (group commit). So a follower never acknowledges an entry that is not on its disk.
* leader side: before the leader advances its commit index (which it does counting itself), the journal is
  synced. Nothing that reveals the new commit index (applying, answering the client, telling followers)
  happens before that, so an acknowledged write is on the disks of a majority.
* currentTerm/votedFor (the ``.meta`` file) are written to a temp file, fsynced, renamed and the directory
  fsynced before the vote is sent (pysyncobj already stores them synchronously, but without fsync).
* log compaction and snapshot installs never rewrite the journal in place: the remaining entries are
  written to ``raft.journal.tmp``, fsynced and renamed over the journal, after the dump that replaces the
  dropped entries and the data directory are fsynced. A crash leaves the old journal or the new one.
* dropping a follower's conflicting entries zeroes them and syncs before anything is appended in their
  place, so no old record can reappear after a new one.

On start the journal is checked record by record (:func:`~agenda.db.journal_format.scan_journal`):

* a torn or damaged tail - a short record, a checksum mismatch, garbage - that no later record shows to
  have been on disk is cut off: the file is truncated there (and synced) and a WARNING names the file, the
  offset, the bytes and records cut. The entries cut were never acknowledged by this member (or the disk
  lost synced data in the very last group commit); the leader sends them again.
* damage before a record written once it was on disk, or a damaged header, refuses to start:
  :class:`~agenda.db.journal_format.JournalCorrupted`, whose message names the file and offset and says
  how to recover - stop the member, remove its data directory, start it again with the same settings:
  the cluster still lists it, so it rejoins empty and catches up from the leader (``agenda-db`` exits with
  status 3). A wiped member forgets its vote of the current term; the strict way, if elections are
  under way, is to remove it (``DELETE /v1/cluster/members/ID``) before wiping it and to add it back
  (``POST /v1/cluster/members``) once it runs.
* a journal in pysyncobj's own format (written before checksums existed) is converted once, in a new
  file renamed into place, and the conversion is logged.

See :func:`durability_notes` for what is *not* guaranteed.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

from agenda.db.journal_format import (
    FORMAT_VERSION,
    HEADER_SIZE,
    RECORD_OVERHEAD,
    Entry,
    JournalCorrupted,
    ScanResult,
    TailCut,
    encode_journal,
    encode_record,
    is_legacy,
    parse_legacy,
    scan_journal,
)
from agenda.db.pysyncobj_adapter import JournalBase, MetaStorer, encode_meta

__all__ = ["DurableFileJournal", "JournalCorrupted", "durability_notes", "fsync_path"]

log = logging.getLogger(__name__)

# See DurableFileJournal.sync: on Linux an fsync of the journal file covers its shared mmap.
_MSYNC_IS_FSYNC: Final = sys.platform.startswith("linux")
_TMP_SUFFIX: Final = ".tmp"
# Bytes a record takes besides its command (length, CRC, index, term, synced_end).


def fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """fsync a file, or a directory (which makes the names in it - a rename, a new file - durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, *, fsync: bool) -> None:
    """Make ``data`` the content of ``path`` atomically: written beside it, synced, renamed over it, and
    the directory synced (so the rename itself survives a crash). A crash leaves the old file or the new."""
    tmp = path + _TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_path(os.path.dirname(path) or ".", directory=True)


class _DurableMetaStorer(MetaStorer):
    """pysyncobj's meta file (currentTerm, votedFor, commit index) written atomically *and* durably."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: dict[str, Any]) -> None:  # noqa: N802 - pysyncobj's name
        replace_file(self.getPath(), encode_meta(meta), fsync=self._fsync)


class DurableFileJournal(JournalBase):
    """pysyncobj's journal interface over a checksummed, mmap'ed, append-only file, plus an explicit
    :meth:`sync` (one fsync for everything appended since the last) and a dirty flag.

    ``sync`` is a no-op when nothing changed since the last one, so calling it at every decision point
    costs nothing when idle; with ``fsync=False`` it only clears the flag. Opening raises
    :class:`JournalCorrupted` when the file cannot be trusted; a cut tail is in :attr:`cut`.
    """

    def __init__(
        self, path: str, *, fsync: bool, dump_path: str | None = None, initial_size: int = 4096
    ) -> None:
        self._path = path
        self._fsync = fsync
        self._dump_path = dump_path
        self._initial_size = initial_size
        self._dirty = False
        self.syncs = 0  # number of real fsyncs (metrics)
        self._meta_storer = _DurableMetaStorer(path + ".meta", fsync)
        self._meta: dict[str, Any] = self._meta_storer.getMeta()
        self._meta_saved = True
        # A rewrite that crashed before its rename: the journal itself is still the old, whole one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + _TMP_SUFFIX)
        if not os.path.exists(path):
            self._install(encode_journal(()))
        with open(path, "rb") as f:
            raw = f.read()
        if is_legacy(raw):
            raw = self._convert_legacy(raw)
        try:
            scan = scan_journal(raw)
        except JournalCorrupted as exc:
            raise exc.at(path) from None
        self.cut: TailCut | None = scan.cut
        if scan.cut is not None:
            self._report_cut(scan, scan.cut)
        self._entries: list[Entry] = [record.entry for record in scan.records]
        self._offsets = [record.offset for record in scan.records]
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._open(scan.end, truncate=scan.cut is not None)

    # ---------------------------------------------------------------------------------- the file

    def _open(self, end: int, *, truncate: bool) -> None:
        """Map the journal, whose log ends at ``end``: cut what follows when ``truncate``, pad with zeros
        to the initial size, and sync, so that what was read back is on disk before anything claims it."""
        fd = os.open(self._path, os.O_RDWR)
        try:
            if truncate:
                os.ftruncate(fd, end)
            size = os.fstat(fd).st_size
            if size < self._initial_size:
                os.ftruncate(fd, self._initial_size)
                size = self._initial_size
            if self._fsync:
                os.fsync(fd)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._capacity, self._end, self._synced_end = fd, size, end, end

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _grow(self, needed: int) -> None:
        capacity = max(2 * self._capacity, needed)
        assert self._map is not None  # noqa: S101 - only called while open
        self._map.close()
        os.ftruncate(self._fd, capacity)
        self._map = mmap.mmap(self._fd, capacity)
        self._capacity = capacity

    def _install(self, raw: bytes) -> None:
        """Make ``raw`` the journal file (:func:`replace_file`)."""
        replace_file(self._path, raw, fsync=self._fsync)

    def _rewrite(self, entries: Sequence[Entry]) -> None:
        """Replace the journal by one holding ``entries`` (log compaction, snapshot install)."""
        # The dump that replaces the dropped entries must be durable before those entries are gone.
        if self._fsync and self._dump_path is not None and os.path.exists(self._dump_path):
            fsync_path(self._dump_path)
            fsync_path(os.path.dirname(self._dump_path) or ".", directory=True)
        raw = encode_journal(entries)
        self._install(raw)
        self._close()
        self._entries = list(entries)
        self._offsets = []
        offset = HEADER_SIZE
        for command, _idx, _term in self._entries:
            self._offsets.append(offset)
            offset += RECORD_OVERHEAD + len(command)
        self._open(len(raw), truncate=False)
        self._dirty = True

    def _convert_legacy(self, raw: bytes) -> bytes:
        try:
            entries = parse_legacy(raw)
        except JournalCorrupted as exc:
            raise exc.at(self._path) from None
        converted = encode_journal(entries)
        self._install(converted)
        log.warning(
            "journal %s: converted from pysyncobj's format (no checksums) to format %d, %d record(s)",
            self._path,
            FORMAT_VERSION,
            len(entries),
        )
        return converted

    def _report_cut(self, scan: ScanResult, cut: TailCut) -> None:
        last = f"the last is index {scan.records[-1].idx}" if scan.records else "none left"
        log.warning(
            "journal %s: cut off a torn or damaged tail at offset %d (%s): %d byte(s), the damaged record "
            "and %d whole record(s) after it, which no later record shows were synced; %d record(s) kept, "
            "%s. This member catches up from the leader.",
            self._path,
            cut.offset,
            cut.reason,
            cut.length,
            cut.whole_records,
            len(scan.records),
            last,
            extra={"journal": self._path, "offset": cut.offset, "cut_bytes": cut.length},
        )

    # ---------------------------------------------------------------------------- durability

    @property
    def fsync(self) -> bool:
        """Whether :meth:`sync` really fsyncs (``--no-fsync`` turns it off)."""
        return self._fsync

    @property
    def dirty(self) -> bool:
        return self._dirty

    def sync(self) -> None:
        """Make every appended entry durable (one fsync for all changes since the last sync)."""
        if not self._dirty:
            return
        self._dirty = False
        if self._fsync:
            if not _MSYNC_IS_FSYNC and self._map is not None:
                self._map.flush()  # msync(MS_SYNC) of the mapping
            # On Linux, msync(MS_SYNC) of a shared file mapping *is* vfs_fsync_range() on the mapped file
            # (mm/msync.c): the mapping's dirty pages are the file's page-cache pages, which fsync writes
            # back. fsync of the whole file (data and metadata, e.g. the size after a resize) is therefore a
            # superset, and unlike CPython's mmap.flush() it releases the GIL while the disk works, so HTTP
            # threads keep running during the group commit.
            os.fsync(self._fd)
            self.syncs += 1
        # Records appended from now on tell a later start that everything before this is on disk.
        self._synced_end = self._end

    # ------------------------------------------------------------------ pysyncobj's Journal interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        record = encode_record(command, idx, term, self._synced_end)
        start = self._end
        end = start + len(record)
        if end > self._capacity:
            self._grow(end)
        assert self._map is not None  # noqa: S101 - pysyncobj never appends after _destroy
        self._map[start:end] = record
        self._entries.append((command, idx, term))
        self._offsets.append(start)
        self._end = end
        self._dirty = True

    def clear(self) -> None:
        self._rewrite(())

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Drop the entries from position ``entryFrom`` on (a follower's conflicting, uncommitted tail)."""
        if entryFrom >= len(self._entries):
            return
        start = self._offsets[entryFrom]
        del self._entries[entryFrom:], self._offsets[entryFrom:]
        assert self._map is not None  # noqa: S101 - only called while open
        self._map[start : self._end] = bytes(self._end - start)
        self._end = start
        # The zeros must be on disk before new records land there: otherwise a power loss could leave an
        # old record right after a new one, where start-up would take it for the next entry.
        self._dirty = True
        self.sync()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Drop the entries before position ``entryTo`` (log compaction): the journal is rewritten."""
        self._rewrite(self._entries[entryTo:])

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Sync what is pending and release the file (pysyncobj's ``_destroy``); idempotent."""
        if self._map is not None:
            self.sync()
        self._close()

    # --------------------------------------------------------------- pysyncobj's persistent state

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        # The leader calls this right after counting itself towards a new commit index and before
        # applying / answering clients / telling followers: its own copy must be on disk first.
        self.sync()
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:  # noqa: N802 - pysyncobj's name
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803 - pysyncobj's names
        # Raft: currentTerm and votedFor are on disk before any message reflecting them is sent.
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._meta_storer.storeMeta(self._meta)
        self._meta_saved = True

    def getCurrentTerm(self) -> int:  # noqa: N802 - pysyncobj's name
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:  # noqa: N802 - pysyncobj's name
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:  # noqa: N802 - pysyncobj's name
        if not self._meta_saved:
            self._meta_storer.storeMeta(self._meta)
            self._meta_saved = True


def durability_notes() -> list[str]:
    """What ``--fsync`` and the journal's checksums do not guarantee (also rendered in the operator docs)."""
    return [
        "a record damaged on disk after it was synced, in the last group commit before a crash, looks like "
        "a torn write and is cut at start (logged); the member catches up from the leader, which is safe "
        "unless the same entries were lost on a majority of members at once.",
        "damage anywhere else stops the member at start; it must be wiped and rejoin (see "
        "JournalCorrupted's message), and a wiped member forgets the vote it cast in the current term.",
        "with --no-fsync, data survives the processes being killed (it is in the kernel page cache) but "
        "not a power loss or kernel crash of a majority of machines at the same time; after a power loss "
        "such a journal may look damaged in the middle and refuse to start.",
    ]
