"""The in-memory records of the DB state machine: a key's current version, a lease, a member, a watch event.

They are shared by the state machine (:mod:`agenda.db.state`), which creates and replaces them, and the
snapshot codec (:mod:`agenda.db.snapshot`), which writes and reads them; keeping them here lets neither
of those import the other's internals.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Lease", "Member", "Record", "trim_history"]


@dataclass(frozen=True, slots=True)
class Record:
    """One key's current version. Frozen: a put replaces it, so history events can share it safely."""

    value_json: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def as_kv(self, key: str) -> dict[str, Any]:
        """The public kv dict; the value is decoded afresh, so callers get their own copy."""
        return {
            "key": key,
            "value": json.loads(self.value_json),
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }

    def as_row(self) -> list[Any]:
        """Compact positional form for snapshots."""
        return [self.value_json, self.create_revision, self.mod_revision, self.version, self.lease]


@dataclass(slots=True)
class Lease:
    ttl: int
    deadline: int | float
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Member:
    """A directory entry: where a cluster member speaks Raft and where it serves the HTTP API."""

    raft: str
    api: str

    def as_dict(self, node_id: str) -> dict[str, str]:
        return {"id": node_id, "raft": self.raft, "api": self.api}


@dataclass(frozen=True, slots=True)
class Event:
    """A watch event: for ``put`` the kv after the write, for ``delete`` the kv as it was just before."""

    type: str
    revision: int
    key: str
    record: Record

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "revision": self.revision, "kv": self.record.as_kv(self.key)}


def trim_history(history: deque[Event], limit: int, revision: int, compacted: int) -> int:
    """Drop the oldest *whole revisions* until at most ``limit`` events remain; return the new compacted rev.

    Whole revisions only, so ``events_since`` never returns half a txn. The newest revision is never
    dropped, even if it alone exceeds the limit (e.g. a lease revoke deleting many keys); the history is
    then temporarily larger than ``limit``.
    """
    while len(history) > limit and history[0].revision != revision:
        dropped = history[0].revision
        while history and history[0].revision == dropped:
            history.popleft()
        compacted = dropped
    return compacted
