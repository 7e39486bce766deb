"""Command and transaction builders: how callers of the DB Service say what to write.

This is the client side of the command format. The stores build their ``/v1/txn`` bodies here
(``txn_compare``, ``txn_put``, ...), and the DB node builds the commands it proposes; neither hand-writes
command dicts. Each builder runs the same parser the state machine runs on apply
(:mod:`agenda.db.commands`), so a bad argument raises :class:`~agenda.db.errors.InvalidArgument` in the
caller's stack frame instead of after a network or Raft round trip. Importing it does not load the state
machine, Raft or Flask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agenda.db.commands import (
    CheckedCommand,
    parse_compare,
    parse_delete,
    parse_lease_expire,
    parse_lease_grant,
    parse_lease_keepalive,
    parse_lease_revoke,
    parse_member_add,
    parse_member_remove,
    parse_put,
    parse_txn,
    parse_txn_op,
)

__all__ = [
    "delete_command",
    "lease_expire_command",
    "lease_grant_command",
    "lease_keepalive_command",
    "lease_revoke_command",
    "member_add_command",
    "member_remove_command",
    "noop_command",
    "put_command",
    "txn_command",
    "txn_compare",
    "txn_delete",
    "txn_get",
    "txn_put",
    "txn_range",
]


def put_command(key: str, value: Any, *, lease: int = 0, prev_revision: int | None = None) -> dict[str, Any]:
    """``put``: set ``key`` to ``value`` (attached to ``lease`` unless 0), optionally CAS on mod_revision."""
    cmd = {"op": "put", "key": key, "value": value, "lease": lease, "prev_revision": prev_revision}
    parse_put(cmd)
    return CheckedCommand(cmd)


def delete_command(key: str, *, prev_revision: int | None = None) -> dict[str, Any]:
    """``delete``: remove ``key``, optionally only if its mod_revision equals ``prev_revision``."""
    cmd = {"op": "delete", "key": key, "prev_revision": prev_revision}
    parse_delete(cmd)
    return CheckedCommand(cmd)


def txn_compare(key: str, target: str, op: str, value: Any) -> dict[str, Any]:
    """One txn guard, e.g. ``txn_compare("/a", "mod_revision", "eq", 7)``.

    Semantics (etcd's where etcd defines them):

    * ``mod_revision``, ``create_revision``, ``version``, ``lease``: integer compare with eq/ne/lt/gt;
      a missing key reads as 0 for all four (etcd compares against a zero-valued KeyValue), so
      ``create_revision eq 0`` is the etcd idiom for "key absent".
    * ``exists``: bool, eq/ne only. Not in etcd; a readable spelling of the idiom above.
    * ``value``: JSON equality for eq/ne (numbers numerically so 1 == 1.0, booleans are not numbers,
      object key order is irrelevant). lt/gt hold only between two numbers or two strings (strings in
      code-point order, which is etcd's byte order); any other pair of types is unordered, so lt/gt are
      false. A missing key has *no value*: it equals nothing, so ``eq`` and ``lt``/``gt`` are false and
      ``ne`` is true. This deliberately differs from etcd, where every value compare on a missing key is
      false: with AND-only compares, "ne holds when absent" lets one guard express "absent or different"
      (e.g. take over ``/system/redis/primary`` unless it already names me), while "present and
      different" stays expressible by adding ``exists eq true``.
    """
    item = {"key": key, "target": target, "op": op, "value": value}
    parse_compare(item, 0)
    return item


def txn_put(key: str, value: Any, *, lease: int = 0) -> dict[str, Any]:
    """Txn op: put ``key``."""
    item = {"put": {"key": key, "value": value, "lease": lease}}
    parse_txn_op(item, "op")
    return item


def txn_delete(key: str) -> dict[str, Any]:
    """Txn op: delete ``key`` (a no-op if absent)."""
    item = {"delete": {"key": key}}
    parse_txn_op(item, "op")
    return item


def txn_get(key: str) -> dict[str, Any]:
    """Txn op: read ``key`` as it is at this point of the txn."""
    item = {"get": {"key": key}}
    parse_txn_op(item, "op")
    return item


def txn_range(prefix: str, *, start: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Txn op: list keys under ``prefix`` as they are at this point of the txn."""
    item = {"range": {"prefix": prefix, "start": start, "limit": limit}}
    parse_txn_op(item, "op")
    return item


def txn_command(
    compare: Sequence[Mapping[str, Any]],
    success: Sequence[Mapping[str, Any]],
    failure: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``txn``: if every compare holds run ``success`` else ``failure``, atomically, as one revision."""
    cmd = {
        "op": "txn",
        # Only objects are copied: anything else is left for parse_txn to refuse, naming it (dict()
        # would raise TypeError/ValueError on 5 or "ab", and turn [["key", "a"], ...] into an object).
        "compare": [dict(c) if isinstance(c, Mapping) else c for c in compare],
        "success": [dict(o) if isinstance(o, Mapping) else o for o in success],
        "failure": [dict(o) if isinstance(o, Mapping) else o for o in failure],
    }
    parse_txn(cmd)
    return CheckedCommand(cmd)


def lease_grant_command(lease_id: int, ttl: int, now: float) -> dict[str, Any]:
    """``lease_grant``: create lease ``lease_id`` (chosen by the proposer) expiring at ``now + ttl``."""
    cmd = {"op": "lease_grant", "id": lease_id, "ttl": ttl, "now": now}
    parse_lease_grant(cmd)
    return CheckedCommand(cmd)


def lease_keepalive_command(lease_id: int, now: float) -> dict[str, Any]:
    """``lease_keepalive``: push the lease's deadline to ``now + ttl``."""
    cmd = {"op": "lease_keepalive", "id": lease_id, "now": now}
    parse_lease_keepalive(cmd)
    return CheckedCommand(cmd)


def lease_revoke_command(lease_id: int) -> dict[str, Any]:
    """``lease_revoke``: drop the lease and delete its keys in one revision."""
    cmd = {"op": "lease_revoke", "id": lease_id}
    parse_lease_revoke(cmd)
    return CheckedCommand(cmd)


def lease_expire_command(now: float) -> dict[str, Any]:
    """``lease_expire``: revoke every lease whose deadline is <= ``now`` (the leader's clock)."""
    cmd = {"op": "lease_expire", "now": now}
    parse_lease_expire(cmd)
    return CheckedCommand(cmd)


def noop_command() -> dict[str, Any]:
    """``noop``: a read barrier; commits without changing anything."""
    return {"op": "noop"}


def member_add_command(node_id: str, raft: str, api: str) -> dict[str, Any]:
    """``member_add``: record member ``node_id`` at Raft address ``raft`` and API address ``api``.

    Applying it replaces any entry that shares the id or either address, so it never fails on a valid
    command: it mirrors a Raft configuration change pysyncobj has already made (see ``MEMBERSHIP_OPS``).
    """
    cmd = {"op": "member_add", "id": node_id, "raft": raft, "api": api}
    parse_member_add(cmd)
    return CheckedCommand(cmd)


def member_remove_command(raft: str) -> dict[str, Any]:
    """``member_remove``: forget the member whose Raft address is ``raft`` (a no-op if there is none).

    Keyed by Raft address because that is pysyncobj's identity of a member, which the log entry carries.
    """
    cmd = {"op": "member_remove", "raft": raft}
    parse_member_remove(cmd)
    return CheckedCommand(cmd)
