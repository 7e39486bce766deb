"""The fsyncs of the Raft journal (group commit, meta file, dump before compaction), and the dump format."""

from __future__ import annotations

import os
import select
from typing import Any

import pytest

from agenda.db.dump import DUMP_MAGIC, decode_dump, encode_dump
from agenda.db.durability import DurableFileJournal


@pytest.fixture
def fsyncs(monkeypatch):
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_sync_is_one_fsync_per_batch_and_free_when_clean(tmp_path, fsyncs):
    journal = DurableFileJournal(str(tmp_path / "j"), fsync=True)
    fsyncs.clear()
    journal.sync()
    assert fsyncs == []  # nothing appended: no fsync
    for idx in range(1, 6):
        journal.add(b"cmd%d" % idx, idx, 1)
    assert journal.dirty
    journal.sync()
    assert len(fsyncs) == 1  # group commit: five entries, one fsync
    assert journal.syncs == 1
    assert not journal.dirty
    journal.sync()
    assert len(fsyncs) == 1


def test_commit_index_update_syncs_first(tmp_path, fsyncs):
    journal = DurableFileJournal(str(tmp_path / "j"), fsync=True)
    journal.add(b"x", 1, 1)
    fsyncs.clear()
    journal.setRaftCommitIndex(1)
    assert fsyncs  # the leader's own copy is durable before the commit index moves
    assert not journal.dirty


def test_no_fsync_mode_never_fsyncs(tmp_path, fsyncs):
    journal = DurableFileJournal(str(tmp_path / "j"), fsync=False)
    journal.add(b"x", 1, 1)
    journal.setCurrentTerm(3, "node")
    journal.sync()
    assert fsyncs == []


def test_term_and_vote_are_stored_durably_and_reload(tmp_path, fsyncs):
    path = str(tmp_path / "j")
    journal = DurableFileJournal(path, fsync=True)
    fsyncs.clear()
    journal.setCurrentTerm(7, "127.0.0.1:1")
    assert len(fsyncs) >= 2  # the file and its directory
    journal.add(b"a", 1, 7)
    journal.add(b"b", 2, 7)
    journal.deleteEntriesFrom(1)
    journal.add(b"c", 2, 7)
    journal.sync()
    journal.close()
    reopened = DurableFileJournal(path, fsync=False)
    assert reopened.getCurrentTerm() == 7
    assert reopened.getVotedForNodeId() == "127.0.0.1:1"
    assert [(bytes(c), i, t) for c, i, t in (reopened[0], reopened[1])] == [(b"a", 1, 7), (b"c", 2, 7)]
    assert not os.path.exists(path + ".meta.tmp")


def test_clear_fsyncs_the_dump_before_dropping_entries(tmp_path, monkeypatch):
    synced: list[str] = []  # what each fsync was of, in order
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    dump = tmp_path / "raft.dump"
    dump.write_bytes(b"snapshot")
    journal = DurableFileJournal(str(tmp_path / "j"), fsync=True, dump_path=str(dump))
    journal.add(b"x", 1, 1)
    monkeypatch.setattr(os, "fsync", recording)
    journal.clear()
    # The dump and its directory, then the emptied journal written beside the old one, then the directory
    # holding the rename: the entries are only gone once the dump that replaces them is on disk.
    assert synced[:4] == [str(dump), str(tmp_path), str(tmp_path / "j.tmp"), str(tmp_path)]


def test_dump_round_trip():
    class FakeNode:
        address = "127.0.0.1:7001"

    data = ((b"\x00last", 10, 3), (b"\x01prev", 9, 3), {FakeNode()})
    blob = encode_dump(data, b'{"kv":1}')
    assert blob.startswith(DUMP_MAGIC)
    meta, snapshot = decode_dump(blob)
    assert meta == ((b"\x00last", 10, 3), (b"\x01prev", 9, 3), {"127.0.0.1:7001"})
    assert snapshot == b'{"kv":1}'
    with pytest.raises(ValueError, match="magic"):
        decode_dump(b"garbage")


# ----------------------------------------------------------------------------------------------------------
# The proposal wake-up pipe (batched mode: pysyncobj does not wake its tick thread by itself)
# ----------------------------------------------------------------------------------------------------------


class _FakePoller:
    def __init__(self) -> None:
        self.callbacks: dict[int, Any] = {}

    def subscribe(self, descr: int, callback: Any, _mask: int) -> None:
        self.callbacks[descr] = callback


def _pipe_has_byte(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_wakeup_writes_at_most_one_byte_and_never_sticks(monkeypatch):
    from agenda.db import tick as tick_module

    poller = _FakePoller()
    wakeup = tick_module.Wakeup(poller)
    ((read_fd, on_readable),) = poller.callbacks.items()
    wakeup.notify()
    wakeup.notify()  # coalesced
    assert os.read(read_fd, 10) == b"w"
    os.write(wakeup._write_fd, b"w")  # put it back

    # A proposer notifying while the tick thread drains the pipe must not leave the flag set with an
    # empty pipe (that would silence every later notify: proposals would wait for the poll timeout).
    real_read = os.read
    calls = []

    def read_and_race(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if not calls:
            calls.append(1)
            wakeup.notify()
        return data

    monkeypatch.setattr(tick_module.os, "read", read_and_race)
    on_readable(read_fd, 0)
    monkeypatch.setattr(tick_module.os, "read", real_read)
    assert not wakeup._pending or _pipe_has_byte(read_fd)
    on_readable(read_fd, 0)
    assert not wakeup._pending
    wakeup.notify()
    assert _pipe_has_byte(read_fd)
