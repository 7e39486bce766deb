"""The replicated state machine of the DB Service: an etcd-v3-style key-value store, pure and deterministic.

Every node of the Raft cluster owns one :class:`KVStateMachine` and calls :meth:`KVStateMachine.apply` on
each committed log entry, in log order. Raft only guarantees that every node sees the *same commands in
the same order*; it is this module's job to turn that into *the same state on every node*. Hence the rules
this file follows everywhere:

* no I/O, no threads, no clock reads, no randomness: time arrives inside commands (``now``), chosen by the
  proposer, and lease ids are chosen by the proposer too;
* commands and results are plain JSON-serialisable dicts, because commands travel through the Raft log
  and results travel back to HTTP handlers;
* every output that could depend on dict/set iteration order is sorted (keys, lease ids);
* values are stored as their canonical JSON text (``sort_keys``, compact separators), so they are
  immutable (a caller mutating a returned value cannot corrupt the store) and the snapshot encoding is
  byte-identical on every node;
* a command that raises changes nothing: everything that can fail - input validation and the few checks
  that depend on state (unknown lease, duplicate lease) - runs before the first mutation.

Semantics follow etcd v3 (revisions, ``create_revision``/``mod_revision``/``version``, leases, txn), with
the differences documented where they occur (missing-key ``value`` compares, the ``exists`` target).

Beside the keys the state holds the cluster's member directory (id -> Raft and API addresses), edited only
by ``member_add``/``member_remove``, which the Raft wrapper derives from Raft membership entries. It is part
of snapshots but of no key, revision or watch event, so the KV API can neither show nor overwrite it.
The class is not thread-safe: the Raft wrapper applies commands from a single thread and takes a lock
around local reads.

What a well-formed command is lives in :mod:`agenda.db.commands` (callers build them with
:mod:`agenda.db.txn`), the errors in :mod:`agenda.db.errors`, and the snapshot encoding in
:mod:`agenda.db.snapshot`.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agenda.db.commands import (
    Compare,
    Delete,
    Get,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepalive,
    LeaseRevoke,
    MemberAdd,
    MemberRemove,
    Put,
    Txn,
    check_int,
    check_lease_id,
    check_range_limit,
    check_range_prefix,
    check_range_start,
    check_time,
    parse_command,
    parse_member_add,
    validate_key,
    validate_node_id,
)
from agenda.db.errors import (
    Compacted,
    LeaseExists,
    LeaseNotFound,
    MemberExists,
    MemberNotFound,
    StateMachineError,
)
from agenda.db.records import Event, Lease, Member, Record, trim_history
from agenda.db.snapshot import SnapshotState, decode_snapshot, encode_snapshot

__all__ = ["DEFAULT_HISTORY_LIMIT", "KVStateMachine"]

DEFAULT_HISTORY_LIMIT: Final = 10_000
"""Default number of watch events retained for ``events_since``."""


# ----------------------------------------------------------------------------------------------------------
# JSON comparison (txn compares on values)
# ----------------------------------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    """JSON type of a decoded value; bool is not a number here, unlike in Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare numerically (1 == 1.0), ``true`` != 1, object key order ignored."""
    kind = _json_kind(a)
    if kind != _json_kind(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _compare_ordered(actual: Any, op: str, expected: Any) -> bool:
    """eq/ne/lt/gt for totally ordered operands (ints, or same-kind JSON scalars)."""
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "lt":
        return bool(actual < expected)
    return bool(actual > expected)


class KVStateMachine:
    """The deterministic key-value state machine every DB node applies the Raft log to.

    Mutations only happen through :meth:`apply`; reads (:meth:`get`, :meth:`range`, :meth:`events_since`,
    :meth:`lease`, ...) are local and must be preceded by a read barrier (a committed ``noop``) by callers
    that need linearizable answers.
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        """Create an empty store at revision 0; ``history_limit`` bounds the retained watch events."""
        self._history_limit = check_int(history_limit, "history_limit", minimum=1)
        self._revision = 0
        self._kvs: dict[str, Record] = {}
        self._keys: list[str] = []  # sorted; code-point order == UTF-8 byte order, as in etcd
        self._leases: dict[int, Lease] = {}
        self._history: deque[Event] = deque()
        self._compact_revision = 0  # every event with revision <= this has been dropped
        # The member directory (see the module docstring): invisible to the KV API.
        self._members: dict[str, Member] = {}

    # ------------------------------------------------------------------------------------------ apply

    def apply(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one committed command and return its JSON-serialisable result.

        Raises :class:`InvalidArgument` for malformed commands and :class:`LeaseNotFound` /
        :class:`LeaseExists` for state-dependent refusals; in every such case the state is untouched, and
        since all nodes hold the same state they all raise the same error. Failed CAS is *not* an
        exception: it is an ordinary outcome ``{"ok": False, "error": "conflict", ...}``.
        """
        parsed = parse_command(command)
        match parsed:
            case Put():
                return self._apply_put(parsed)
            case Delete():
                return self._apply_delete(parsed)
            case Txn():
                return self._apply_txn(parsed)
            case LeaseGrant():
                return self._apply_lease_grant(parsed)
            case LeaseKeepalive():
                return self._apply_lease_keepalive(parsed)
            case LeaseRevoke():
                return self._apply_lease_revoke(parsed)
            case LeaseExpire():
                return self._apply_lease_expire(parsed)
            case MemberAdd():
                return self._apply_member_add(parsed)
            case MemberRemove():
                return self._apply_member_remove(parsed)
            case _:
                return {"ok": True, "revision": self._revision}

    def apply_or_error(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Like :meth:`apply` but turns refusals into ``{"ok": False, "error": code, ..., "revision": R}``.

        This is what the Raft wrapper should call: an exception escaping the Raft apply thread would take
        the node down, while a refusal is a normal, replicated answer for the client.
        """
        try:
            return self.apply(command)
        except StateMachineError as exc:
            return {**exc.to_result(), "revision": self._revision}

    def _conflict(self, key: str, actual: int) -> dict[str, Any]:
        return {
            "ok": False,
            "error": "conflict",
            "key": key,
            "mod_revision": actual,
            "revision": self._revision,
        }

    def _require_lease(self, lease_id: int) -> None:
        if lease_id and lease_id not in self._leases:
            raise LeaseNotFound(lease_id)

    def _apply_put(self, cmd: Put) -> dict[str, Any]:
        self._require_lease(cmd.lease)
        current = self._kvs.get(cmd.key)
        actual = current.mod_revision if current is not None else 0
        if cmd.prev_revision is not None and actual != cmd.prev_revision:
            return self._conflict(cmd.key, actual)
        revision = self._revision + 1
        record = self._write(cmd.key, cmd.value_json, cmd.lease, revision)
        self._commit(revision)
        return {
            "ok": True,
            "revision": revision,
            "create_revision": record.create_revision,
            "version": record.version,
        }

    def _apply_delete(self, cmd: Delete) -> dict[str, Any]:
        current = self._kvs.get(cmd.key)
        actual = current.mod_revision if current is not None else 0
        if cmd.prev_revision is not None and actual != cmd.prev_revision:
            return self._conflict(cmd.key, actual)
        if current is None:
            return {"ok": True, "deleted": 0, "revision": self._revision}
        revision = self._revision + 1
        self._remove(cmd.key, revision)
        self._commit(revision)
        return {"ok": True, "deleted": 1, "revision": revision}

    def _apply_txn(self, cmd: Txn) -> dict[str, Any]:
        succeeded = all(self._holds(c) for c in cmd.compare)
        ops = cmd.success if succeeded else cmd.failure
        # The only state-dependent failure of a txn op; checked for the taken branch (as etcd does) before
        # anything is written, which together with parse-time validation makes the txn all-or-nothing.
        for op in ops:
            if isinstance(op, Put):
                self._require_lease(op.lease)
        revision = self._revision + 1
        mutated = False
        results: list[dict[str, Any]] = []
        for op in ops:
            if isinstance(op, Put):
                record = self._write(op.key, op.value_json, op.lease, revision)
                mutated = True
                results.append(
                    {
                        "put": {
                            "key": op.key,
                            "revision": revision,
                            "create_revision": record.create_revision,
                            "version": record.version,
                        }
                    }
                )
            elif isinstance(op, Delete):
                deleted = self._remove(op.key, revision)
                mutated = mutated or deleted
                results.append({"delete": {"key": op.key, "deleted": int(deleted)}})
            elif isinstance(op, Get):
                record_or_none = self._kvs.get(op.key)
                kv = record_or_none.as_kv(op.key) if record_or_none is not None else None
                results.append({"get": {"kv": kv}})
            else:
                kvs, more = self._range(op.prefix, op.start, op.limit)
                results.append({"range": {"kvs": kvs, "more": more}})
        if mutated:
            self._commit(revision)
        return {"ok": True, "succeeded": succeeded, "results": results, "revision": self._revision}

    def _holds(self, cmp: Compare) -> bool:
        """Evaluate one compare against the current state; the semantics are documented on ``txn_compare``."""
        record = self._kvs.get(cmp.key)
        if cmp.target == "exists":
            exists = record is not None
            return exists == cmp.value if cmp.op == "eq" else exists != cmp.value
        if cmp.target == "value":
            if record is None:
                # A missing key has no value: it equals nothing, so only "ne" holds.
                return cmp.op == "ne"
            actual = json.loads(record.value_json)
            if cmp.op in ("eq", "ne"):
                return _json_equal(actual, cmp.value) == (cmp.op == "eq")
            kind = _json_kind(actual)
            if kind not in ("number", "string") or kind != _json_kind(cmp.value):
                return False  # ordering is only defined between two numbers or two strings
            return _compare_ordered(actual, cmp.op, cmp.value)
        # Integer targets: a missing key reads as 0 for all of them (etcd's zero-valued KeyValue).
        actual_int = getattr(record, cmp.target) if record is not None else 0
        return _compare_ordered(actual_int, cmp.op, cmp.value)

    def _apply_lease_grant(self, cmd: LeaseGrant) -> dict[str, Any]:
        if cmd.lease_id in self._leases:
            raise LeaseExists(cmd.lease_id)
        lease = Lease(ttl=cmd.ttl, deadline=cmd.now + cmd.ttl)
        self._leases[cmd.lease_id] = lease
        return {
            "ok": True,
            "id": cmd.lease_id,
            "ttl": lease.ttl,
            "deadline": lease.deadline,
            "revision": self._revision,
        }

    def _apply_lease_keepalive(self, cmd: LeaseKeepalive) -> dict[str, Any]:
        lease = self._leases.get(cmd.lease_id)
        # Past its deadline the lease is dead even if no lease_expire has been committed yet: a keepalive
        # must not resurrect it, or expiry would depend on how promptly the leader proposed lease_expire.
        if lease is None or lease.deadline <= cmd.now:
            raise LeaseNotFound(cmd.lease_id)
        # Never shorten: a new leader whose clock lags the old one must not expire leases early.
        lease.deadline = max(lease.deadline, cmd.now + lease.ttl)
        return {
            "ok": True,
            "id": cmd.lease_id,
            "ttl": lease.ttl,
            "deadline": lease.deadline,
            "revision": self._revision,
        }

    def _apply_lease_revoke(self, cmd: LeaseRevoke) -> dict[str, Any]:
        if cmd.lease_id not in self._leases:
            raise LeaseNotFound(cmd.lease_id)
        deleted = self._revoke([cmd.lease_id])
        return {"ok": True, "id": cmd.lease_id, "deleted": deleted, "revision": self._revision}

    def _apply_lease_expire(self, cmd: LeaseExpire) -> dict[str, Any]:
        expired = self.expired_leases(cmd.now)
        deleted = self._revoke(expired)
        return {"ok": True, "expired": expired, "deleted": deleted, "revision": self._revision}

    def _apply_member_add(self, cmd: MemberAdd) -> dict[str, Any]:
        # pysyncobj has already changed its configuration when this applies, so refusing would leave the
        # directory out of step with Raft: an entry sharing the id or an address is replaced instead. The
        # leader refuses such clashes before proposing (check_member_free); replacement only matters when a
        # member replays its log from a static seed that predates later changes.
        replaced = sorted(
            node_id
            for node_id, member in self._members.items()
            if node_id == cmd.node_id or {member.raft, member.api} & {cmd.raft, cmd.api}
        )
        for node_id in replaced:
            del self._members[node_id]
        self._members[cmd.node_id] = Member(cmd.raft, cmd.api)
        return {"ok": True, "replaced": replaced, "members": self.members(), "revision": self._revision}

    def _apply_member_remove(self, cmd: MemberRemove) -> dict[str, Any]:
        removed = next((node_id for node_id, m in self._members.items() if m.raft == cmd.raft), None)
        if removed is not None:
            del self._members[removed]
        return {"ok": True, "removed": removed, "members": self.members(), "revision": self._revision}

    def _revoke(self, lease_ids: Sequence[int]) -> int:
        """Drop leases and delete all their keys, in key order, as a single revision (if any key)."""
        keys: list[str] = []
        for lease_id in lease_ids:
            keys.extend(self._leases.pop(lease_id).keys)
        keys.sort()
        if not keys:
            return 0
        revision = self._revision + 1
        for key in keys:
            self._remove(key, revision)
        self._commit(revision)
        return len(keys)

    # --------------------------------------------------------------------------------- primitives

    def _write(self, key: str, value_json: str, lease_id: int, revision: int) -> Record:
        old = self._kvs.get(key)
        if old is None:
            record = Record(value_json, revision, revision, 1, lease_id)
            bisect.insort(self._keys, key)
        else:
            record = Record(value_json, old.create_revision, revision, old.version + 1, lease_id)
            if old.lease and old.lease != lease_id:
                self._leases[old.lease].keys.discard(key)
        if lease_id:
            self._leases[lease_id].keys.add(key)
        self._kvs[key] = record
        self._history.append(Event("put", revision, key, record))
        return record

    def _remove(self, key: str, revision: int) -> bool:
        old = self._kvs.pop(key, None)
        if old is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, key)]
        lease = self._leases.get(old.lease) if old.lease else None
        if lease is not None:  # None while the lease itself is being revoked
            lease.keys.discard(key)
        self._history.append(Event("delete", revision, key, old))
        return True

    def _commit(self, revision: int) -> None:
        self._revision = revision
        self._compact_revision = trim_history(
            self._history, self._history_limit, revision, self._compact_revision
        )

    # ------------------------------------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        """Revision of the last mutation (0 for an empty, never-written store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """Smallest ``since`` accepted by :meth:`events_since` (events <= it have been dropped)."""
        return self._compact_revision

    @property
    def history_limit(self) -> int:
        """Configured bound on retained watch events (node configuration, not replicated state)."""
        return self._history_limit

    def __len__(self) -> int:
        """Number of live keys."""
        return len(self._keys)

    def record(self, key: str) -> Record | None:
        """The stored record of ``key`` (immutable: usable after the lock is released), or None."""
        return self._kvs.get(validate_key(key))

    def get(self, key: str) -> dict[str, Any] | None:
        """The kv dict of ``key`` (key, value, create_revision, mod_revision, version, lease) or None."""
        record = self.record(key)
        return record.as_kv(key) if record is not None else None

    def range(
        self, prefix: str = "", start: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Keys starting with ``prefix`` and >= ``start``, in key order, at most ``limit`` (None/0 = all).

        Returns ``(kvs, more)`` where ``more`` says further matching keys exist beyond the page. To fetch
        the next page pass ``start=last_key + "\\0"`` (NUL cannot occur in keys, so that is the successor).
        """
        return self._range(check_range_prefix(prefix), check_range_start(start), check_range_limit(limit))

    def _range(self, prefix: str, start: str | None, limit: int | None) -> tuple[list[dict[str, Any]], bool]:
        records, more = self._range_records(prefix, start, limit)
        return [record.as_kv(key) for key, record in records], more

    def range_records(
        self, prefix: str = "", start: str | None = None, limit: int | None = None
    ) -> tuple[list[tuple[str, Record]], bool]:
        """:meth:`range` as ``(key, record)`` pairs, values left as their stored JSON text.

        For a caller that writes the page out as JSON itself (the API's range fast path): decoding
        every value only to encode it again was most of a range read's cost. Records are immutable
        (a write replaces them), so they may be used after the lock is released.
        """
        return self._range_records(
            check_range_prefix(prefix), check_range_start(start), check_range_limit(limit)
        )

    def _range_records(
        self, prefix: str, start: str | None, limit: int | None
    ) -> tuple[list[tuple[str, Record]], bool]:
        lower = prefix if start is None or start < prefix else start
        index = bisect.bisect_left(self._keys, lower)
        out: list[tuple[str, Record]] = []
        keys = self._keys
        while index < len(keys) and keys[index].startswith(prefix):
            if limit is not None and len(out) == limit:
                return out, True
            key = keys[index]
            out.append((key, self._kvs[key]))
            index += 1
        return out, False

    def events_since(self, revision: int) -> list[dict[str, Any]]:
        """Watch events with revision > ``revision``, oldest first: ``{type, revision, kv}``.

        ``kv`` is the key after the write for ``put`` and the key as it was before for ``delete``.
        Raises :class:`Compacted` when events the caller needs were dropped, i.e. when
        ``revision < compact_revision``. Asking about the future returns ``[]``.
        """
        since = check_int(revision, "revision", minimum=0)
        if since < self._compact_revision:
            raise Compacted(self._compact_revision + 1)
        newer: list[Event] = []
        for event in reversed(self._history):  # watchers mostly ask for recent events: scan from the end
            if event.revision <= since:
                break
            newer.append(event)
        return [event.as_dict() for event in reversed(newer)]

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        """``{id, ttl, deadline, keys}`` for a live lease (keys sorted), or None."""
        lease = self._leases.get(check_lease_id(lease_id))
        if lease is None:
            return None
        return {"id": lease_id, "ttl": lease.ttl, "deadline": lease.deadline, "keys": sorted(lease.keys)}

    def leases(self) -> list[dict[str, Any]]:
        """All live leases as ``{id, ttl, deadline}``, sorted by id."""
        return [
            {"id": lease_id, "ttl": self._leases[lease_id].ttl, "deadline": self._leases[lease_id].deadline}
            for lease_id in sorted(self._leases)
        ]

    def expired_leases(self, now: float) -> list[int]:
        """Ids (sorted) a ``lease_expire`` at ``now`` would revoke; lets the leader skip useless proposals."""
        moment = check_time(now)
        return sorted(lease_id for lease_id, lease in self._leases.items() if lease.deadline <= moment)

    def next_deadline(self) -> int | float | None:
        """Earliest lease deadline, or None without leases; tells the leader when to propose expiry."""
        return min((lease.deadline for lease in self._leases.values()), default=None)

    def members(self) -> list[dict[str, str]]:
        """The member directory as ``{id, raft, api}`` dicts, sorted by id."""
        return [self._members[node_id].as_dict(node_id) for node_id in sorted(self._members)]

    def member(self, node_id: str) -> dict[str, str] | None:
        """The directory entry of ``node_id``, or None."""
        member = self._members.get(validate_node_id(node_id))
        return member.as_dict(node_id) if member is not None else None

    def require_member(self, node_id: str) -> dict[str, str]:
        """The directory entry of ``node_id``; :class:`MemberNotFound` if there is none."""
        found = self.member(node_id)
        if found is None:
            raise MemberNotFound(node_id)
        return found

    def check_member_free(self, node_id: str, raft: str, api: str) -> None:
        """Raise :class:`MemberExists` naming the first of id, raft, api that a current member already uses.

        Raft and API addresses share one namespace: a member's API port is as taken as its Raft port.
        """
        parse_member_add({"op": "member_add", "id": node_id, "raft": raft, "api": api})
        if node_id in self._members:
            raise MemberExists("id", f"{node_id!r} is already a member", node_id)
        for field_name, address in (("raft", raft), ("api", api)):
            for other, member in sorted(self._members.items()):
                if address in (member.raft, member.api):
                    raise MemberExists(field_name, f"{address} is already used by member {other!r}", other)

    # -------------------------------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Serialise the whole replicated state - keys, leases, revision, watch history, member directory.

        Byte-identical on every node in the same state (see :mod:`agenda.db.snapshot`); the watch history
        is included so a node that catches up from a snapshot answers ``events_since`` like the others.
        """
        return encode_snapshot(
            SnapshotState(
                self._revision,
                self._compact_revision,
                self._kvs,
                self._keys,
                self._leases,
                self._history,
                self._members,
            )
        )

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; a bad snapshot raises and leaves the state as it was.

        ``history_limit`` is node configuration and is kept; if it is smaller than the snapshot's history,
        the oldest revisions are dropped (raising ``compact_revision``) exactly as if they had aged out.
        """
        loaded = decode_snapshot(data)
        compacted = trim_history(
            loaded.history, self._history_limit, loaded.revision, loaded.compact_revision
        )
        # Nothing below can fail, so the swap is all-or-nothing.
        self._revision = loaded.revision
        self._compact_revision = compacted
        self._kvs = loaded.kvs
        self._keys = loaded.keys
        self._leases = loaded.leases
        self._history = loaded.history
        if loaded.members is not None:  # None: a format 1 snapshot, which predates the directory
            self._members = loaded.members

    @classmethod
    def from_snapshot(cls, data: bytes, history_limit: int = DEFAULT_HISTORY_LIMIT) -> KVStateMachine:
        """A new state machine restored from ``data``."""
        machine = cls(history_limit=history_limit)
        machine.restore(data)
        return machine
