"""The DB state machine's snapshot encoding: canonical JSON, byte-identical on every node in the same state.

A snapshot carries the whole replicated state - keys, leases, revision, watch history and the member
directory - so a node that catches up from one answers every read, ``events_since`` included, exactly
like the others. Decoding never touches a live state machine: it builds fresh records and checks every
invariant the state machine relies on, so a bad snapshot raises
:class:`~agenda.db.errors.InvalidArgument` and the caller's state is left as it was.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from agenda.db.commands import (
    canonical_json,
    check_fields,
    check_int,
    check_lease_id,
    check_mapping,
    check_time,
    parse_member_add,
    validate_key,
)
from agenda.db.errors import InvalidArgument, StateMachineError
from agenda.db.records import Event, Lease, Member, Record

__all__ = ["SNAPSHOT_FORMAT", "SnapshotState", "decode_snapshot", "encode_snapshot"]

SNAPSHOT_FORMAT: Final = 2
"""Version tag of the snapshot encoding; bumped on any incompatible change (2 added the member directory).

Format 1 snapshots (written before the directory existed) are still read: they leave the directory as it
was, i.e. seeded from the member's static configuration."""

_SNAPSHOT_FIELDS: Final = ("format", "revision", "compact_revision", "kvs", "leases", "history")


@dataclass(slots=True)
class SnapshotState:
    """The replicated state in the state machine's own structures (``keys`` sorted, ``history`` oldest first).

    ``members`` is None only when decoding a format 1 snapshot, which predates the member directory.
    """

    revision: int
    compact_revision: int
    kvs: dict[str, Record]
    keys: list[str]
    leases: dict[int, Lease]
    history: deque[Event]
    members: dict[str, Member] | None


def encode_snapshot(state: SnapshotState) -> bytes:
    """Serialise ``state`` (which must carry a member directory) as canonical JSON bytes.

    Sorted object keys, keys and leases in sorted order: two nodes in the same state produce
    byte-identical snapshots.
    """
    members = state.members or {}
    doc = {
        "format": SNAPSHOT_FORMAT,
        "revision": state.revision,
        "compact_revision": state.compact_revision,
        "kvs": [[key, *state.kvs[key].as_row()] for key in state.keys],
        "leases": [
            [lease_id, state.leases[lease_id].ttl, state.leases[lease_id].deadline]
            for lease_id in sorted(state.leases)
        ],
        "history": [[e.type, e.revision, e.key, *e.record.as_row()] for e in state.history],
        "members": [[node_id, m.raft, m.api] for node_id, m in sorted(members.items())],
    }
    return canonical_json(doc).encode("utf-8")


def decode_snapshot(data: bytes) -> SnapshotState:
    """Decode and sanity-check a snapshot into fresh structures; :class:`InvalidArgument` if it is bad.

    Whatever way the bytes are malformed - wrong shapes, wrong types, broken JSON - the caller sees one
    error type, so a restore either succeeds completely or changes nothing.
    """
    try:
        return _load_snapshot(data)
    except StateMachineError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise InvalidArgument("snapshot", f"malformed ({exc.__class__.__name__}: {exc})") from None


def _snapshot_error(reason: str) -> InvalidArgument:
    return InvalidArgument("snapshot", reason)


def _load_row(row: Any, revision: int) -> Record:
    value_json, create_revision, mod_revision, version, lease_id = row
    if not isinstance(value_json, str):
        raise _snapshot_error("value must be JSON text")
    json.loads(value_json)  # must at least be valid JSON
    record = Record(
        value_json,
        check_int(create_revision, "snapshot.create_revision", minimum=1),
        check_int(mod_revision, "snapshot.mod_revision", minimum=1),
        check_int(version, "snapshot.version", minimum=1),
        check_lease_id(lease_id, "snapshot.lease", allow_zero=True),
    )
    if not record.create_revision <= record.mod_revision <= revision:
        raise _snapshot_error("inconsistent revisions in a kv")
    return record


def _load_members(rows: Any) -> dict[str, Member]:
    members: dict[str, Member] = {}
    addresses: set[str] = set()
    previous = ""
    for node_id, raft, api in rows:
        try:
            parsed = parse_member_add({"op": "member_add", "id": node_id, "raft": raft, "api": api})
        except InvalidArgument as exc:
            raise _snapshot_error(f"member {exc}") from None
        if parsed.node_id <= previous:
            raise _snapshot_error("members must be unique and sorted by id")
        previous = parsed.node_id
        if {parsed.raft, parsed.api} & addresses:
            raise _snapshot_error(f"member {parsed.node_id!r} reuses an address")
        addresses.update((parsed.raft, parsed.api))
        members[parsed.node_id] = Member(parsed.raft, parsed.api)
    return members


def _load_snapshot(data: bytes) -> SnapshotState:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _snapshot_error("must be bytes")
    doc = check_mapping(json.loads(bytes(data).decode("utf-8")), "snapshot")
    snapshot_format = doc.get("format")
    if snapshot_format == 1:
        check_fields(doc, "snapshot", _SNAPSHOT_FIELDS)
    elif snapshot_format == SNAPSHOT_FORMAT:
        check_fields(doc, "snapshot", (*_SNAPSHOT_FIELDS, "members"))
    else:
        raise _snapshot_error(f"unsupported format {snapshot_format!r}")
    revision = check_int(doc["revision"], "snapshot.revision", minimum=0)
    compacted = check_int(doc["compact_revision"], "snapshot.compact_revision", minimum=0, maximum=revision)

    leases: dict[int, Lease] = {}
    for lease_id, ttl, deadline in doc["leases"]:
        lid = check_lease_id(lease_id, "snapshot.lease")
        if lid in leases:
            raise _snapshot_error(f"duplicate lease {lid}")
        leases[lid] = Lease(
            ttl=check_int(ttl, "snapshot.ttl", minimum=1), deadline=check_time(deadline, "snapshot.deadline")
        )

    kvs: dict[str, Record] = {}
    keys: list[str] = []
    for key, *row in doc["kvs"]:
        validate_key(key, "snapshot.key")
        if keys and key <= keys[-1]:
            raise _snapshot_error("keys must be unique and sorted")
        record = _load_row(row, revision)
        if record.lease:
            if record.lease not in leases:
                raise _snapshot_error(f"key {key!r} refers to unknown lease {record.lease}")
            leases[record.lease].keys.add(key)
        kvs[key] = record
        keys.append(key)

    history: deque[Event] = deque()
    previous = compacted
    for kind, event_revision, key, *row in doc["history"]:
        if kind not in ("put", "delete"):
            raise _snapshot_error(f"unknown event type {kind!r}")
        event_rev = check_int(event_revision, "snapshot.event.revision")
        if not (compacted < event_rev <= revision and event_rev >= previous):
            raise _snapshot_error("event revisions out of order or outside (compact_revision, revision]")
        previous = event_rev
        history.append(
            Event(kind, event_rev, validate_key(key, "snapshot.event.key"), _load_row(row, revision))
        )
    members = _load_members(doc["members"]) if snapshot_format == SNAPSHOT_FORMAT else None
    return SnapshotState(revision, compacted, kvs, keys, leases, history, members)
