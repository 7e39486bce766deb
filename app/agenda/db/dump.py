"""The log-compaction dump file: pysyncobj's boundary entries and member set, then the KV snapshot.

pysyncobj hands its serializer a tuple (last entry, previous entry, cluster) to store beside the
application's state and expects it back at load. The file is ``DUMP_MAGIC``, one JSON header line
holding that tuple (the entries base64-encoded, the cluster as its sorted Raft addresses), then the
state machine's snapshot bytes (:mod:`agenda.db.snapshot`). Pure: the node does the
file I/O and the fsyncs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["DEFAULT_LOG_COMPACTION_ENTRIES", "DUMP_MAGIC", "decode_dump", "encode_dump"]

DUMP_MAGIC: Final = b"AGENDA-DB-DUMP 1\n"
# Raft log entries past which a dump is written (`log_compaction_entries`). pysyncobj's default, 5000, made
# every member serialize its whole state (watch history included) about once a second under a 5,000
# writes/s load, which set the p99 write latency; etcd's snapshot-count is 100,000. 50,000 entries replay
# in a couple of seconds at start and stay in a few tens of MB.
DEFAULT_LOG_COMPACTION_ENTRIES: Final = 50_000


def _entry_to_json(entry: Sequence[Any]) -> list[Any]:
    command, idx, term = entry
    return [base64.b64encode(bytes(command)).decode("ascii"), int(idx), int(term)]


def _entry_from_json(item: Any) -> tuple[bytes, int, int]:
    command, idx, term = item
    return base64.b64decode(command), int(idx), int(term)


def encode_dump(pysyncobj_data: Sequence[Any], kv_snapshot: bytes) -> bytes:
    """Dump file bytes: magic, a JSON header line (pysyncobj's two boundary entries + members), the KV."""
    last_entry, prev_entry, cluster = pysyncobj_data
    header = {
        "last": _entry_to_json(last_entry),
        "prev": _entry_to_json(prev_entry),
        "cluster": sorted(getattr(node, "address", str(node)) for node in cluster),
    }
    return DUMP_MAGIC + json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + kv_snapshot


def decode_dump(data: bytes) -> tuple[tuple[Any, Any, set[str]], bytes]:
    """Inverse of :func:`encode_dump`; ValueError on anything unexpected."""
    if not data.startswith(DUMP_MAGIC):
        raise ValueError("not an agenda-db dump (bad magic)")
    header_line, sep, kv_snapshot = data[len(DUMP_MAGIC) :].partition(b"\n")
    if not sep:
        raise ValueError("truncated dump header")
    header = json.loads(header_line)
    last = _entry_from_json(header["last"])
    prev = _entry_from_json(header["prev"])
    return (last, prev, set(header["cluster"])), kv_snapshot
