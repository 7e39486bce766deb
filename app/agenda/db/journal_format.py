"""The journal file's format and the decision, on start, of what a damaged journal means. Pure: bytes in.

Layout (little-endian)::

    header   "AGENDA-DB-JOURNAL\\n" (18 bytes) | format version u32 (= 2) | CRC-32 of the previous 22 bytes
    record   length u32 | CRC-32 u32 | index u64 | term u64 | synced_end u64 | command (length - 24 bytes)
    ...      zeros up to the end of the file (it grows in steps; the log ends where the zeros start)

``length`` counts from ``index`` to the end of the command; the record's CRC covers ``length`` and those
bytes. ``synced_end`` is the file offset up to which the journal was known to be on disk (synced) when the
record was appended; it never exceeds the record's own offset. It is what tells a torn write from damage:

* every record valid, then zeros: the journal is whole.
* a bad record at offset X (short, impossible length, checksum mismatch, garbage or a torn write) and no
  valid record after X claims ``synced_end > X``: X was never known to be on disk, so it is the tail a
  crash tore (a power loss may also write the pages of the last group commit out of order, leaving
  valid records after a hole). Everything from X on is cut: :class:`TailCut`.
* a bad record at X followed by a valid record claiming ``synced_end > X``: X had been synced, and then
  changed. That is damage in the middle, not a torn write; nothing can be cut without losing entries
  this member may have acknowledged: :class:`JournalCorrupted`, and the member refuses to start.

CRC-32 (zlib's, the IEEE polynomial) rather than CRC-32C: it is what the standard library has, runs in C
(well under a microsecond for a typical command, next to the pickling that built it), detects every
burst of up to 32 bits and every error of up to 3 bits in records below about 11 KiB, and lets any other
damage through with probability 2^-32. The threat is torn writes and media errors, not an adversary.

pysyncobj's own journal (format 1, header ``PYSYNCOBJ``, no checksums) is read by :func:`parse_legacy`,
so an existing member converts its journal once, at its first start with this code.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "RECORD_OVERHEAD",
    "RECOVERY",
    "Entry",
    "JournalCorrupted",
    "JournalRecord",
    "ScanResult",
    "TailCut",
    "encode_header",
    "encode_journal",
    "encode_record",
    "is_legacy",
    "parse_legacy",
    "scan_journal",
]

Entry = tuple[bytes, int, int]
"""One log entry as pysyncobj hands it around: (command, index, term)."""

MAGIC: Final = b"AGENDA-DB-JOURNAL\n"
FORMAT_VERSION: Final = 2  # pysyncobj's journal calls its own layout format 1
_HEADER_BODY: Final = struct.Struct(f"<{len(MAGIC)}sI")
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER_BODY.size + _CRC.size

_LENGTH: Final = struct.Struct("<I")
_RECORD_HEAD: Final = struct.Struct("<II")  # length, CRC
_FIELDS: Final = struct.Struct("<QQQ")  # index, term, synced_end
RECORD_OVERHEAD: Final = _RECORD_HEAD.size + _FIELDS.size  # length, CRC, index, term, synced_end
_NONZERO: Final = re.compile(rb"[^\x00]")

RECOVERY: Final = (
    "To recover, stop this member, remove its data directory {data_dir} and start it again with the same "
    "settings: the cluster still lists it, so it rejoins with an empty log and catches up from the leader "
    "(a snapshot, then the log)."
)


class JournalCorrupted(Exception):  # noqa: N818 - reads as the condition, like the DB's other errors
    """The journal cannot be trusted, so the member must not start; the message names the file, the offset
    and the recovery. ``proof`` is the later record that shows the damaged part had been on disk."""

    def __init__(
        self, offset: int, reason: str, *, path: str | None = None, proof: JournalRecord | None = None
    ) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason
        self.path = path
        self.proof = proof

    def at(self, path: str) -> JournalCorrupted:
        """The same error, naming the journal file."""
        return JournalCorrupted(self.offset, self.reason, path=path, proof=self.proof)

    def __str__(self) -> str:
        where = f"journal {self.path}" if self.path is not None else "journal"
        text = f"{where} is corrupted at offset {self.offset}: {self.reason}"
        if self.proof is not None:
            text += (
                f"; the record at offset {self.proof.offset} (index {self.proof.idx}) was written after "
                f"everything up to offset {self.proof.synced_end} was on disk, so this is damage to synced "
                "records, not a torn write at the tail"
            )
        data_dir = "(its --data-dir)" if self.path is None else os.path.dirname(self.path) or "."
        return f"{text}. {RECOVERY.format(data_dir=data_dir)}"


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """A record that passed its checksum, where it sits in the file, and what it holds."""

    offset: int
    end: int
    idx: int
    term: int
    synced_end: int
    command: bytes

    @property
    def entry(self) -> Entry:
        return self.command, self.idx, self.term


@dataclass(frozen=True, slots=True)
class TailCut:
    """What start-up cut off: ``length`` bytes from ``offset`` (up to the last non-zero byte), holding the
    damaged record and ``whole_records`` valid records after it (never synced, so never acknowledged)."""

    offset: int
    length: int
    whole_records: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The journal's good records, where the log ends (appends go there) and what was cut, if anything."""

    records: tuple[JournalRecord, ...]
    end: int
    cut: TailCut | None


# ---------------------------------------------------------------------------------------------- writing


def encode_header() -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION)
    return body + _CRC.pack(zlib.crc32(body))


def encode_record(command: bytes, idx: int, term: int, synced_end: int) -> bytes:
    """One record; ``synced_end`` is where the journal was known to be on disk when it was appended."""
    payload = _FIELDS.pack(idx, term, synced_end) + command
    length = _LENGTH.pack(len(payload))
    return length + _CRC.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def encode_journal(entries: Iterable[Entry]) -> bytes:
    """A whole journal file holding ``entries``, as written before it replaces the live one (a compaction,
    a conversion): it is synced before it is renamed into place, so each record claims everything before
    it."""
    parts = [encode_header()]
    offset = HEADER_SIZE
    for command, idx, term in entries:
        record = encode_record(bytes(command), idx, term, offset)
        parts.append(record)
        offset += len(record)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------- reading


def _check_header(data: bytes) -> None:
    if len(data) < HEADER_SIZE:
        raise JournalCorrupted(
            0, f"the file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version = _HEADER_BODY.unpack_from(data)
    if magic != MAGIC:
        raise JournalCorrupted(0, "the header does not start with the agenda-db journal magic")
    if _CRC.unpack_from(data, _HEADER_BODY.size)[0] != zlib.crc32(data[: _HEADER_BODY.size]):
        raise JournalCorrupted(0, "the header's checksum does not match")
    if version != FORMAT_VERSION:
        raise JournalCorrupted(
            0, f"format version {version} is not the {FORMAT_VERSION} this agenda-db reads"
        )


def _record_at(data: memoryview, offset: int) -> JournalRecord | str:
    """The valid record at ``offset``, or why there is none."""
    size = len(data)
    if offset + RECORD_OVERHEAD > size:
        return f"{size - offset} bytes left, fewer than a record's {RECORD_OVERHEAD}-byte head"
    length, crc = _RECORD_HEAD.unpack_from(data, offset)
    if length < _FIELDS.size:
        return f"impossible record length {length}"
    end = offset + _RECORD_HEAD.size + length
    if end > size:
        return f"a record of {length} bytes runs past the end of the file ({size} bytes)"
    payload = data[offset + _RECORD_HEAD.size : end]
    if zlib.crc32(payload, zlib.crc32(data[offset : offset + _LENGTH.size])) != crc:
        return "checksum mismatch"
    idx, term, synced_end = _FIELDS.unpack_from(payload)
    if synced_end > offset:
        return f"the record claims offset {synced_end} was on disk before it, past its own offset"
    return JournalRecord(offset, end, idx, term, synced_end, bytes(payload[_FIELDS.size :]))


def _valid_records_after(data: memoryview, raw: bytes, start: int, stop: int) -> Iterator[JournalRecord]:
    """Every valid record starting in ``[start, stop)``, found without trusting any length field before
    it: offsets are tried one by one (runs of zeros are skipped: no record starts with a zero length)."""
    offset = start
    while offset < stop:
        found = _NONZERO.search(raw, offset, stop)
        if found is None:
            return
        offset = found.start()
        record = _record_at(data, offset)
        if isinstance(record, JournalRecord):
            yield record
            offset = record.end
        else:
            offset += 1


def scan_journal(raw: bytes) -> ScanResult:
    """Decide what the journal file ``raw`` holds (see the module docstring for the rules).

    Raises :class:`JournalCorrupted` (without a path) for a damaged header or damage in the middle.
    """
    _check_header(raw)
    data = memoryview(raw)
    records: list[JournalRecord] = []
    offset = HEADER_SIZE
    while True:
        record = _record_at(data, offset)
        if not isinstance(record, JournalRecord):
            reason = record
            break
        records.append(record)
        offset = record.end
    used = len(raw.rstrip(b"\x00"))
    if used <= offset:
        return ScanResult(tuple(records), offset, None)
    after = list(_valid_records_after(data, raw, offset + 1, used))
    for later in after:
        if later.synced_end > offset:
            raise JournalCorrupted(offset, reason, proof=later)
    return ScanResult(tuple(records), offset, TailCut(offset, used - offset, len(after), reason))


# ------------------------------------------------------------------------------------- pysyncobj's format

_LEGACY_NAME: Final = b"PYSYNCOBJ"
_LEGACY_HEADER: Final = struct.Struct("<24s8sII")  # app name, app version, format (1), end of the last record
_LEGACY_FIELDS: Final = struct.Struct("<QQ")  # index, term


def is_legacy(raw: bytes) -> bool:
    """Whether ``raw`` is a journal pysyncobj's own FileJournal wrote (format 1, no checksums)."""
    return raw.startswith(_LEGACY_NAME)


def parse_legacy(raw: bytes) -> list[Entry]:
    """The entries of a pysyncobj FileJournal (0.3.x): header, then ``size | index | term | command | size``
    records up to the offset the header names, read as pysyncobj reads them, but refusing what it would
    misread (it has no checksums: only the layout itself can be checked)."""
    if len(raw) < _LEGACY_HEADER.size:
        raise JournalCorrupted(0, "pysyncobj journal shorter than its header")
    _name, _version, fmt, end = _LEGACY_HEADER.unpack_from(raw)
    if fmt != 1:
        raise JournalCorrupted(_LEGACY_HEADER.size - 8, f"pysyncobj journal format {fmt} is not 1")
    if not _LEGACY_HEADER.size <= end <= len(raw):
        raise JournalCorrupted(_LEGACY_HEADER.size - 4, f"pysyncobj journal ends at {end}, outside the file")
    entries: list[Entry] = []
    offset = _LEGACY_HEADER.size
    while offset < end:
        if offset + _LENGTH.size > end:
            raise JournalCorrupted(offset, "pysyncobj record head runs past the journal's end")
        (size,) = _LENGTH.unpack_from(raw, offset)
        stop = offset + _LENGTH.size + size
        if size < _LEGACY_FIELDS.size or stop + _LENGTH.size > end:
            raise JournalCorrupted(offset, f"pysyncobj record of impossible size {size}")
        if _LENGTH.unpack_from(raw, stop)[0] != size:
            raise JournalCorrupted(offset, "pysyncobj record's leading and trailing sizes differ")
        idx, term = _LEGACY_FIELDS.unpack_from(raw, offset + _LENGTH.size)
        entries.append((raw[offset + _LENGTH.size + _LEGACY_FIELDS.size : stop], idx, term))
        offset = stop + _LENGTH.size
    return entries
