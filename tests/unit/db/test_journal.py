"""The checksummed journal: what start-up makes of a journal truncated, or a bit flipped, at every offset.

A small journal is written with the real journal class (a sync after each record, as a follower's group
commits do); then, for every byte offset, the file is truncated there, or one bit of it flipped, and
reopened. A torn or damaged tail is cut back to the last whole record; damage before a record that was
written after it was synced refuses to start, naming the file and the offset; never a crash, never an
entry with other content than was written.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agenda.db.durability import DurableFileJournal
from agenda.db.journal_format import (
    HEADER_SIZE,
    MAGIC,
    Entry,
    JournalCorrupted,
    encode_journal,
    encode_record,
    parse_legacy,
    scan_journal,
)
from agenda.db.pysyncobj_adapter import FileJournal
from agenda.devstack.stack import free_ports

ENTRIES: list[Entry] = [
    (b"\x00", 1, 1),
    (b"\x02put /a 1", 2, 1),
    (b"\x02put /bb " + bytes(range(40)), 3, 2),
    (b"\x02txn " + b"\xff" * 17, 4, 2),
]


def write_journal(path: Path, entries: list[Entry]) -> bytes:
    """Append ``entries`` with the real journal, synced after each one; the file's bytes."""
    # Little zero padding after the records: every offset of the file is tried, and past the first few
    # zeros one more offset in the padding tells nothing new.
    journal = DurableFileJournal(str(path), fsync=False, initial_size=256)
    for entry in entries:
        journal.add(*entry)
        journal.sync()
    journal.close()
    return path.read_bytes()


def reopen(path: Path, raw: bytes) -> DurableFileJournal:
    path.write_bytes(raw)
    return DurableFileJournal(str(path), fsync=False)


def contents(journal: DurableFileJournal) -> list[Entry]:
    return [(bytes(command), idx, term) for command, idx, term in (journal[i] for i in range(len(journal)))]


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """The journal's path, its bytes and each record's (offset, end)."""
    path = tmp_path / "raft.journal"
    raw = write_journal(path, ENTRIES)
    spans = [(record.offset, record.end) for record in scan_journal(raw).records]
    assert len(spans) == len(ENTRIES)
    assert len(raw) > spans[-1][1]  # zero padding follows, as in a live journal
    return path, raw, spans


def assert_refused(journal_path: Path, raw: bytes, offset: int) -> None:
    with pytest.raises(JournalCorrupted) as refused:
        reopen(journal_path, raw)
    assert refused.value.offset == offset
    message = str(refused.value)
    assert str(journal_path) in message
    assert f"offset {offset}" in message
    assert f"remove its data directory {journal_path.parent}" in message


def assert_appends_cleanly(journal: DurableFileJournal, path: Path, kept: list[Entry]) -> None:
    """After a cut, the bytes past the log are zeros and a new entry reads back after the kept ones."""
    end = sum(len(encode_record(c, i, t, 0)) for c, i, t in kept) + HEADER_SIZE
    assert path.read_bytes()[end:].strip(b"\x00") == b""
    new = (b"\x02after", len(kept) + 1, 9)
    journal.add(*new)
    journal.close()
    again = DurableFileJournal(str(path), fsync=False)
    assert again.cut is None
    assert contents(again) == [*kept, new]
    again.close()


def test_a_whole_journal_reads_back_what_was_written(small) -> None:
    path, raw, _spans = small
    journal = reopen(path, raw)
    assert journal.cut is None
    assert contents(journal) == ENTRIES
    assert raw.startswith(MAGIC)


def test_truncated_at_every_offset_the_tail_is_cut_back_to_the_last_whole_record(small) -> None:
    path, raw, spans = small
    for size in range(len(raw) + 1):
        if size < HEADER_SIZE:
            assert_refused(path, raw[:size], 0)
            continue
        kept = [entry for entry, (_start, end) in zip(ENTRIES, spans, strict=True) if end <= size]
        torn = [start for start, end in spans if start < size < end]
        journal = reopen(path, raw[:size])
        assert contents(journal) == kept, size
        if torn:
            assert journal.cut is not None
            assert journal.cut.offset == torn[0], size
            assert journal.cut.length == len(raw[torn[0] : size].rstrip(b"\x00"))  # up to its last byte set
            assert journal.cut.whole_records == 0
        else:
            assert journal.cut is None, size  # at a record boundary, or only the zero padding went
        assert_appends_cleanly(journal, path, kept)


def test_a_bit_flipped_at_every_offset_cuts_the_last_record_or_refuses_to_start(small) -> None:
    path, raw, spans = small
    last_start, last_end = spans[-1]
    for offset in range(len(raw)):
        damaged = bytearray(raw)
        damaged[offset] ^= 1 << (offset % 8)
        if offset < HEADER_SIZE:
            assert_refused(path, bytes(damaged), 0)
        elif offset < last_start:
            # An earlier record: the next one was written after it was synced.
            (start,) = [start for start, end in spans if start <= offset < end]
            assert_refused(path, bytes(damaged), start)
        else:
            journal = reopen(path, bytes(damaged))
            cut_at = last_start if offset < last_end else last_end  # the last record, or the zero padding
            kept = ENTRIES[:-1] if offset < last_end else ENTRIES
            assert journal.cut is not None
            assert journal.cut.offset == cut_at, offset
            assert journal.cut.whole_records == 0
            assert contents(journal) == kept, offset
            assert_appends_cleanly(journal, path, kept)


def test_a_hole_in_the_last_group_commit_is_a_torn_tail_even_with_records_after_it(tmp_path: Path) -> None:
    # A power loss may write the pages of one fsync out of order: records 3 and 4 were appended together,
    # and only 4 reached the disk. Neither was acknowledged, so both are cut; nothing before them is.
    path = tmp_path / "raft.journal"
    journal = DurableFileJournal(str(path), fsync=False)
    journal.add(*ENTRIES[0])
    journal.add(*ENTRIES[1])
    journal.sync()
    journal.add(*ENTRIES[2])
    journal.add(*ENTRIES[3])
    journal.sync()
    journal.close()
    raw = path.read_bytes()
    third = scan_journal(raw).records[2]
    hole = raw[: third.offset] + bytes(third.end - third.offset) + raw[third.end :]
    reopened = reopen(path, hole)
    assert contents(reopened) == ENTRIES[:2]
    assert reopened.cut is not None
    assert reopened.cut.offset == third.offset
    assert reopened.cut.whole_records == 1
    # The same hole one group commit earlier is damage: record 3 was written after record 2 was synced.
    second = scan_journal(raw).records[1]
    assert second.offset < third.synced_end
    assert_refused(
        path, raw[: second.offset] + bytes(second.end - second.offset) + raw[second.end :], second.offset
    )


def test_the_cut_is_logged_with_file_offset_and_size(small, caplog: pytest.LogCaptureFixture) -> None:
    path, raw, spans = small
    last_start, last_end = spans[-1]
    with caplog.at_level(logging.WARNING, logger="agenda.db.durability"):
        reopen(path, raw[: last_end - 3]).close()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert str(path) in message
    assert f"offset {last_start}" in message
    assert f"{last_end - 3 - last_start} byte(s)" in message
    assert "0 whole record(s)" in message


def test_a_short_or_foreign_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    for raw in (b"", b"not a journal at all, but long enough", MAGIC + bytes(8)):
        assert_refused(path, raw, 0)


# ---------------------------------------------------------------------------------------- rewrites


def test_compaction_rewrites_the_journal_whole_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    dump = tmp_path / "raft.dump"
    dump.write_bytes(b"snapshot")
    journal = DurableFileJournal(str(path), fsync=True, dump_path=str(dump))
    for entry in ENTRIES:
        journal.add(*entry)
    journal.sync()
    journal.deleteEntriesTo(2)
    assert contents(journal) == ENTRIES[2:]
    journal.add(b"\x02later", 5, 3)
    journal.close()
    assert not (tmp_path / "raft.journal.tmp").exists()
    # Each record of a rewritten journal vouches for everything before it: damage anywhere but in the
    # last record is refused.
    raw = path.read_bytes()
    records = scan_journal(raw).records
    assert [r.synced_end for r in records[:2]] == [HEADER_SIZE, records[0].end]
    reopened = DurableFileJournal(str(path), fsync=False)
    assert contents(reopened) == [*ENTRIES[2:], (b"\x02later", 5, 3)]
    reopened.clear()
    assert len(reopened) == 0
    reopened.close()
    assert scan_journal(path.read_bytes()).records == ()


def test_a_rewrite_that_crashed_before_its_rename_leaves_the_old_journal(small) -> None:
    path, raw, _spans = small
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_journal(ENTRIES[2:])[:-5])  # half-written replacement
    journal = reopen(path, raw)
    assert contents(journal) == ENTRIES
    assert not tmp.exists()


def test_dropping_a_conflicting_tail_zeroes_it_and_syncs_before_new_entries(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "raft.journal"
    journal = DurableFileJournal(str(path), fsync=True)
    for entry in ENTRIES:
        journal.add(*entry)
    journal.sync()
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    journal.deleteEntriesFrom(1)
    assert fsyncs  # the zeros are on disk before anything new lands on them
    assert path.read_bytes()[scan_journal(path.read_bytes()).end :].strip(b"\x00") == b""
    replacement = [(b"\x02other", 2, 3), (b"\x02x", 3, 3)]
    for entry in replacement:
        journal.add(*entry)
    journal.close()
    assert contents(DurableFileJournal(str(path), fsync=False)) == [ENTRIES[0], *replacement]


def test_the_file_grows_past_its_initial_size(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = DurableFileJournal(str(path), fsync=False, initial_size=64)
    entries = [(b"\x02" + bytes([i]) * i, i + 1, 1) for i in range(60)]
    for entry in entries:
        journal.add(*entry)
    journal.close()
    assert contents(DurableFileJournal(str(path), fsync=False)) == entries


# ------------------------------------------------------------------------------ pysyncobj's format


def test_a_pysyncobj_journal_is_converted_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "raft.journal"
    old = FileJournal(str(path))
    for entry in ENTRIES:
        old.add(*entry)
    old.deleteEntriesFrom(3)  # pysyncobj leaves the dropped record's bytes behind its end offset
    old._destroy()
    with caplog.at_level(logging.WARNING, logger="agenda.db.durability"):
        journal = DurableFileJournal(str(path), fsync=True)
    assert contents(journal) == ENTRIES[:3]
    assert any("converted from pysyncobj's format" in r.getMessage() for r in caplog.records)
    journal.close()
    assert path.read_bytes().startswith(MAGIC)
    assert contents(DurableFileJournal(str(path), fsync=False)) == ENTRIES[:3]


def test_a_pysyncobj_journal_whose_layout_is_broken_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    old = FileJournal(str(path))
    for entry in ENTRIES:
        old.add(*entry)
    old._destroy()
    raw = bytearray(path.read_bytes())
    first = 40  # pysyncobj's header size: the first record's leading size field
    raw[first] ^= 0x10
    with pytest.raises(JournalCorrupted, match="pysyncobj record") as refused:
        reopen(path, bytes(raw))
    assert refused.value.offset == first
    assert str(path) in str(refused.value)
    with pytest.raises(JournalCorrupted, match="outside the file"):
        parse_legacy(path.read_bytes()[:first])  # the header's end offset is past the file's end


# ------------------------------------------------------------------------------------------ the CLI


def test_agenda_db_refuses_a_journal_damaged_in_the_middle_with_the_recovery(small, tmp_path: Path) -> None:
    path, raw, spans = small
    damaged = bytearray(raw)
    damaged[spans[1][0] + 12] ^= 0x01
    path.write_bytes(bytes(damaged))
    raft_port, api_port = free_ports(2)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agenda.db.cli",
            "--node-id",
            "db1",
            "--raft-addr",
            f"127.0.0.1:{raft_port}",
            "--api-addr",
            f"127.0.0.1:{api_port}",
            "--data-dir",
            str(path.parent),
            "--no-tls",
            "--log-format",
            "plain",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"journal {path} is corrupted at offset {spans[1][0]}" in output
    assert f"remove its data directory {tmp_path}" in output
