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
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agenda.common.config import ConfigError, parse_hostport

__all__ = [
    "COMPARE_OPS",
    "COMPARE_TARGETS",
    "DEFAULT_HISTORY_LIMIT",
    "MAX_KEY_BYTES",
    "MAX_LEASE_ID",
    "MAX_LEASE_TTL",
    "MAX_TXN_OPS",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "MEMBERSHIP_OPS",
    "NODE_ID_PATTERN",
    "SNAPSHOT_FORMAT",
    "Compacted",
    "InvalidArgument",
    "KVStateMachine",
    "LeaseExists",
    "LeaseNotFound",
    "MemberExists",
    "MemberNotFound",
    "StateMachineError",
    "delete_command",
    "encode_value",
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
    "validate_address",
    "validate_command",
    "validate_key",
    "validate_node_id",
]

MAX_KEY_BYTES: Final = 1024
"""Keys are 1..1024 bytes of UTF-8: long enough for any path the services build, short enough to index."""

MAX_VALUE_BYTES: Final = 1024 * 1024
"""A value's canonical JSON encoding may not exceed 1 MiB, so one entry cannot clog the Raft log."""

MAX_VALUE_DEPTH: Final = 100
"""Nesting limit for values: keeps recursive encoders/decoders on every node far from Python's stack limit."""

MAX_TXN_OPS: Final = 128
"""Per-txn limit on compares and on ops per branch (etcd's default ``--max-txn-ops``)."""

MAX_LEASE_ID: Final = 2**63 - 1
"""Lease ids are positive int64 values, as in etcd; 0 means "no lease"."""

MAX_LEASE_TTL: Final = 9_000_000_000
"""etcd's maximum lease TTL in seconds."""

DEFAULT_HISTORY_LIMIT: Final = 10_000
"""Default number of watch events retained for ``events_since``."""

SNAPSHOT_FORMAT: Final = 2
"""Version tag of the snapshot encoding; bumped on any incompatible change (2 added the member directory).

Format 1 snapshots (written before the directory existed) are still read: they leave the directory as it
was, i.e. seeded from the member's static configuration."""

NODE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""Member ids are short tokens: they appear in URLs, metrics labels and logs."""

MEMBERSHIP_OPS: Final = frozenset({"member_add", "member_remove"})
"""Commands that edit the member directory. They are never proposed as ordinary commands: the Raft
wrapper derives them from pysyncobj's own membership log entries, so the directory changes in the same
log entry as the Raft configuration (see ``agenda.db.node``)."""

COMPARE_TARGETS: Final = frozenset({"mod_revision", "create_revision", "version", "value", "exists", "lease"})
COMPARE_OPS: Final = frozenset({"eq", "ne", "lt", "gt"})

_INT_TARGETS: Final = frozenset({"mod_revision", "create_revision", "version", "lease"})
_RESULT_OPS: Final = ("put", "delete", "get", "range")


# ----------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------


class StateMachineError(Exception):
    """Base of every error this module raises on purpose.

    Each carries a stable machine-readable ``code`` and can render itself as a result dict, so the Raft
    wrapper can hand the same answer to the client whichever node applied the command.
    """

    code: str = "error"

    def details(self) -> dict[str, Any]:
        """Extra JSON-serialisable fields describing the error (overridden by subclasses)."""
        return {}

    def to_result(self) -> dict[str, Any]:
        """Render as ``{"ok": False, "error": code, "message": str, ...details}``."""
        return {"ok": False, "error": self.code, "message": str(self), **self.details()}


class InvalidArgument(StateMachineError, ValueError):  # noqa: N818 - names fixed by the DB service contract
    """A command or read argument is malformed; raised before any state change (HTTP 400 later)."""

    code = "invalid_argument"

    def __init__(self, field: str, reason: str) -> None:
        """Remember which field was wrong and why, so the HTTP layer can tell the client precisely."""
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def details(self) -> dict[str, Any]:
        """Expose the offending field and reason."""
        return {"field": self.field, "reason": self.reason}


class LeaseNotFound(StateMachineError, LookupError):  # noqa: N818 - names fixed by the DB service contract
    """The lease does not exist (never granted, revoked, expired, or past its deadline on keepalive)."""

    code = "lease_not_found"

    def __init__(self, lease_id: int) -> None:
        """Keep the id so the client learns which lease is gone."""
        super().__init__(f"lease {lease_id} not found")
        self.lease_id = lease_id

    def details(self) -> dict[str, Any]:
        """Expose the lease id."""
        return {"lease": self.lease_id}


class LeaseExists(StateMachineError):  # noqa: N818 - names fixed by the DB service contract
    """A grant reused the id of a live lease; proposers must pick fresh ids."""

    code = "lease_exists"

    def __init__(self, lease_id: int) -> None:
        """Keep the id so the proposer can retry with another."""
        super().__init__(f"lease {lease_id} already exists")
        self.lease_id = lease_id

    def details(self) -> dict[str, Any]:
        """Expose the lease id."""
        return {"lease": self.lease_id}


class Compacted(StateMachineError):  # noqa: N818 - names fixed by the DB service contract
    """The watch history no longer reaches back to the requested revision (HTTP 410 later).

    ``oldest_available`` is the oldest revision whose events are still retained; the smallest revision
    ``events_since`` accepts is therefore ``compact_revision == oldest_available - 1``. A watcher that gets
    this error must re-read the keys it cares about and watch again from the current revision.
    """

    code = "compacted"

    def __init__(self, oldest_available: int) -> None:
        """Record the oldest retained revision."""
        super().__init__(
            f"revision {oldest_available - 1} and older are compacted; oldest available is {oldest_available}"
        )
        self.oldest_available = oldest_available

    @property
    def compact_revision(self) -> int:
        """The smallest ``since`` revision ``events_since`` still accepts."""
        return self.oldest_available - 1

    def details(self) -> dict[str, Any]:
        """Expose both boundaries."""
        return {"oldest_available": self.oldest_available, "compact_revision": self.compact_revision}


class MemberExists(StateMachineError):  # noqa: N818 - reads as the condition, like LeaseExists
    """A new member would reuse the id, Raft address or API address of a current member (HTTP 409)."""

    code = "member_exists"

    def __init__(self, field: str, reason: str, member: str) -> None:
        """Name the request field that clashes and the member it clashes with."""
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.member = member

    def details(self) -> dict[str, Any]:
        """Expose the clashing field and member id."""
        return {"field": self.field, "member": self.member}


class MemberNotFound(StateMachineError, LookupError):  # noqa: N818 - reads as the condition
    """No current member has this id (HTTP 404)."""

    code = "member_not_found"

    def __init__(self, node_id: str) -> None:
        """Keep the id so the client learns which member is unknown."""
        super().__init__(f"member {node_id!r} is not in the cluster")
        self.node_id = node_id

    def details(self) -> dict[str, Any]:
        """Expose the member id."""
        return {"member": self.node_id}


# ----------------------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    """Deterministic JSON text: same object -> same characters on every node and every Python run."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def validate_key(key: Any, field: str = "key") -> str:
    """Check that ``key`` is a legal key: str, 1..1024 bytes of UTF-8, no NUL; return it."""
    if not isinstance(key, str):
        raise InvalidArgument(field, "must be a string")
    if not key:
        raise InvalidArgument(field, "must not be empty")
    _check_text(key, field, MAX_KEY_BYTES)
    return key


def _check_text(text: str, field: str, max_bytes: int, *, allow_nul: bool = False) -> None:
    """Shared checks for keys, prefixes and range starts (NUL is reserved as a pagination sentinel)."""
    if not allow_nul and "\x00" in text:
        raise InvalidArgument(field, "must not contain NUL")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid UTF-8 (no lone surrogates)") from None
    if size > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes of UTF-8, got {size}")


def _check_json_tree(value: Any, field: str) -> None:
    """Reject anything that would not survive a JSON round trip unchanged.

    ``json.dumps`` alone is too lenient: it turns int/None/bool dict keys into strings (possibly colliding)
    and accepts tuples. Walking the tree iteratively also bounds the depth, which catches cycles.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise InvalidArgument(field, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, str)):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidArgument(field, "NaN and infinities are not JSON")
            continue
        if isinstance(node, (list, tuple)):
            stack.extend((item, depth + 1) for item in node)
            continue
        if isinstance(node, dict):
            for name, item in node.items():
                if not isinstance(name, str):
                    raise InvalidArgument(field, "object keys must be strings")
                stack.append((item, depth + 1))
            continue
        raise InvalidArgument(field, f"{type(node).__name__} is not a JSON type")


def encode_value(value: Any, field: str = "value") -> str:
    """Validate a JSON value and return its canonical text (what the store keeps); size-limited to 1 MiB."""
    _check_json_tree(value, field)
    try:
        text = _canonical(value)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidArgument(field, f"not JSON-serialisable ({exc})") from None
    if size > MAX_VALUE_BYTES:
        raise InvalidArgument(field, f"encoded size {size} exceeds {MAX_VALUE_BYTES} bytes")
    return text


def _int(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int that is not a bool (``True`` would otherwise pass as 1), optionally range-checked."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, "must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidArgument(field, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(field, f"must be <= {maximum}")
    return int(value)


def _time(value: Any, field: str = "now") -> int | float:
    """A finite, non-negative timestamp in seconds (int or float) chosen by the proposer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(field, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(field, "must be finite")
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    return value


def _lease_id(value: Any, field: str = "id", *, allow_zero: bool = False) -> int:
    """Lease ids are positive int64; 0 is accepted only where it means "no lease"."""
    return _int(value, field, minimum=0 if allow_zero else 1, maximum=MAX_LEASE_ID)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    """Commands and their parts must be JSON objects."""
    if not isinstance(value, Mapping):
        raise InvalidArgument(field, "must be an object")
    return value


def _fields(
    obj: Mapping[str, Any], where: str, required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    """Reject missing and unknown fields: a typo must fail loudly instead of being silently ignored."""
    names = set(obj)
    required_set = set(required)
    missing = sorted(required_set - names)
    if missing:
        raise InvalidArgument(where, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(str(name) for name in names - required_set - set(optional))
    if unknown:
        raise InvalidArgument(where, f"unknown field(s) {', '.join(unknown)}")


def _prev_revision(value: Any) -> int | None:
    """CAS guard: None = unconditional, 0 = key must not exist, N = key's mod_revision must be N."""
    if value is None:
        return None
    return _int(value, "prev_revision", minimum=0)


def _range_limit(value: Any, field: str = "limit") -> int | None:
    """None or 0 = unlimited (etcd convention); otherwise a positive page size."""
    if value is None:
        return None
    limit = _int(value, field, minimum=0)
    return limit or None


def _range_prefix(value: Any, field: str = "prefix") -> str:
    """A prefix is a possibly empty key fragment ("" selects the whole keyspace)."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    _check_text(value, field, MAX_KEY_BYTES)
    return value


def validate_node_id(value: Any, field: str = "id") -> str:
    """A member id: a string matching :data:`NODE_ID_PATTERN`; return it."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    if not NODE_ID_PATTERN.match(value):
        raise InvalidArgument(field, f"must match {NODE_ID_PATTERN.pattern}, got {value!r}")
    return value


def validate_address(value: Any, field: str) -> str:
    """A member address, ``HOST:PORT`` or ``[IPV6]:PORT`` (the rules of ``--peer``); return it."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    try:
        parse_hostport(value, field)
    except ConfigError as exc:
        raise InvalidArgument(field, exc.reason) from None
    if value != value.strip():
        # pysyncobj identifies a member by the exact address string: " h:1" and "h:1" would be two members.
        raise InvalidArgument(field, "must not have leading or trailing spaces")
    return value


def _range_start(value: Any, field: str = "start") -> str | None:
    """Inclusive lower bound; may contain NUL so ``last_key + "\\0"`` works as the next page's start."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    _check_text(value, field, MAX_KEY_BYTES + 1, allow_nul=True)
    return value


# ----------------------------------------------------------------------------------------------------------
# Parsed commands: validation produces these, apply consumes them, so nothing is parsed twice.
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Put:
    key: str
    value_json: str
    lease: int
    prev_revision: int | None = None


@dataclass(frozen=True, slots=True)
class _Delete:
    key: str
    prev_revision: int | None = None


@dataclass(frozen=True, slots=True)
class _Get:
    key: str


@dataclass(frozen=True, slots=True)
class _Range:
    prefix: str
    start: str | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class _Compare:
    key: str
    target: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class _Txn:
    compare: tuple[_Compare, ...]
    success: tuple[_Put | _Delete | _Get | _Range, ...]
    failure: tuple[_Put | _Delete | _Get | _Range, ...]


@dataclass(frozen=True, slots=True)
class _LeaseGrant:
    lease_id: int
    ttl: int
    now: int | float


@dataclass(frozen=True, slots=True)
class _LeaseKeepalive:
    lease_id: int
    now: int | float


@dataclass(frozen=True, slots=True)
class _LeaseRevoke:
    lease_id: int


@dataclass(frozen=True, slots=True)
class _LeaseExpire:
    now: int | float


@dataclass(frozen=True, slots=True)
class _Noop:
    pass


@dataclass(frozen=True, slots=True)
class _MemberAdd:
    node_id: str
    raft: str
    api: str


@dataclass(frozen=True, slots=True)
class _MemberRemove:
    raft: str


_Command = (
    _Put
    | _Delete
    | _Txn
    | _LeaseGrant
    | _LeaseKeepalive
    | _LeaseRevoke
    | _LeaseExpire
    | _Noop
    | _MemberAdd
    | _MemberRemove
)
_TxnOp = _Put | _Delete | _Get | _Range


def _parse_put(cmd: Mapping[str, Any]) -> _Put:
    _fields(cmd, "put", ("op", "key", "value"), ("lease", "prev_revision"))
    return _Put(
        key=validate_key(cmd["key"]),
        value_json=encode_value(cmd["value"]),
        lease=_lease_id(cmd.get("lease", 0), "lease", allow_zero=True),
        prev_revision=_prev_revision(cmd.get("prev_revision")),
    )


def _parse_delete(cmd: Mapping[str, Any]) -> _Delete:
    _fields(cmd, "delete", ("op", "key"), ("prev_revision",))
    return _Delete(key=validate_key(cmd["key"]), prev_revision=_prev_revision(cmd.get("prev_revision")))


def _parse_compare(raw: Any, index: int) -> _Compare:
    where = f"compare[{index}]"
    item = _mapping(raw, where)
    _fields(item, where, ("key", "target", "op", "value"))
    key = validate_key(item["key"], f"{where}.key")
    target, op, value = item["target"], item["op"], item["value"]
    if target not in COMPARE_TARGETS:
        raise InvalidArgument(f"{where}.target", f"must be one of {', '.join(sorted(COMPARE_TARGETS))}")
    if op not in COMPARE_OPS:
        raise InvalidArgument(f"{where}.op", f"must be one of {', '.join(sorted(COMPARE_OPS))}")
    if target in _INT_TARGETS:
        value = _int(value, f"{where}.value")
    elif target == "exists":
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}.value", "must be a boolean for target 'exists'")
        if op not in ("eq", "ne"):
            raise InvalidArgument(f"{where}.op", "target 'exists' supports only eq and ne")
    else:
        # Canonicalise through JSON so the comparison sees exactly what a stored value would look like.
        value = json.loads(encode_value(value, f"{where}.value"))
    return _Compare(key=key, target=target, op=op, value=value)


def _parse_txn_op(raw: Any, where: str) -> _TxnOp:
    item = _mapping(raw, where)
    if len(item) != 1 or next(iter(item)) not in _RESULT_OPS:
        raise InvalidArgument(where, "must be an object with exactly one of put, delete, get, range")
    kind = next(iter(item))
    body = _mapping(item[kind], f"{where}.{kind}")
    at = f"{where}.{kind}"
    if kind == "put":
        _fields(body, at, ("key", "value"), ("lease",))
        return _Put(
            key=validate_key(body["key"], f"{at}.key"),
            value_json=encode_value(body["value"], f"{at}.value"),
            lease=_lease_id(body.get("lease", 0), f"{at}.lease", allow_zero=True),
        )
    if kind == "delete":
        _fields(body, at, ("key",))
        return _Delete(key=validate_key(body["key"], f"{at}.key"))
    if kind == "get":
        _fields(body, at, ("key",))
        return _Get(key=validate_key(body["key"], f"{at}.key"))
    _fields(body, at, ("prefix",), ("start", "limit"))
    return _Range(
        prefix=_range_prefix(body["prefix"], f"{at}.prefix"),
        start=_range_start(body.get("start"), f"{at}.start"),
        limit=_range_limit(body.get("limit"), f"{at}.limit"),
    )


def _parse_branch(raw: Any, name: str) -> tuple[_TxnOp, ...]:
    if not isinstance(raw, (list, tuple)):
        raise InvalidArgument(name, "must be a list")
    if len(raw) > MAX_TXN_OPS:
        raise InvalidArgument(name, f"at most {MAX_TXN_OPS} ops")
    ops = tuple(_parse_txn_op(item, f"{name}[{i}]") for i, item in enumerate(raw))
    # Like etcd, a branch may write each key at most once: this keeps "one event per key per revision",
    # which watchers rely on to reconstruct state, and makes the final value of a key unambiguous.
    written: set[str] = set()
    for i, op in enumerate(ops):
        if isinstance(op, (_Put, _Delete)):
            if op.key in written:
                raise InvalidArgument(f"{name}[{i}]", f"key {op.key!r} is written more than once in the txn")
            written.add(op.key)
    return ops


def _parse_txn(cmd: Mapping[str, Any]) -> _Txn:
    _fields(cmd, "txn", ("op",), ("compare", "success", "failure"))
    raw_compare = cmd.get("compare", [])
    if not isinstance(raw_compare, (list, tuple)):
        raise InvalidArgument("compare", "must be a list")
    if len(raw_compare) > MAX_TXN_OPS:
        raise InvalidArgument("compare", f"at most {MAX_TXN_OPS} compares")
    return _Txn(
        compare=tuple(_parse_compare(item, i) for i, item in enumerate(raw_compare)),
        success=_parse_branch(cmd.get("success", []), "success"),
        failure=_parse_branch(cmd.get("failure", []), "failure"),
    )


def _parse_lease_grant(cmd: Mapping[str, Any]) -> _LeaseGrant:
    _fields(cmd, "lease_grant", ("op", "id", "ttl", "now"))
    return _LeaseGrant(
        lease_id=_lease_id(cmd["id"]),
        ttl=_int(cmd["ttl"], "ttl", minimum=1, maximum=MAX_LEASE_TTL),
        now=_time(cmd["now"]),
    )


def _parse_lease_keepalive(cmd: Mapping[str, Any]) -> _LeaseKeepalive:
    _fields(cmd, "lease_keepalive", ("op", "id", "now"))
    return _LeaseKeepalive(lease_id=_lease_id(cmd["id"]), now=_time(cmd["now"]))


def _parse_lease_revoke(cmd: Mapping[str, Any]) -> _LeaseRevoke:
    _fields(cmd, "lease_revoke", ("op", "id"))
    return _LeaseRevoke(lease_id=_lease_id(cmd["id"]))


def _parse_lease_expire(cmd: Mapping[str, Any]) -> _LeaseExpire:
    _fields(cmd, "lease_expire", ("op", "now"))
    return _LeaseExpire(now=_time(cmd["now"]))


def _parse_noop(cmd: Mapping[str, Any]) -> _Noop:
    _fields(cmd, "noop", ("op",))
    return _Noop()


def _parse_member_add(cmd: Mapping[str, Any]) -> _MemberAdd:
    _fields(cmd, "member_add", ("op", "id", "raft", "api"))
    parsed = _MemberAdd(
        node_id=validate_node_id(cmd["id"]),
        raft=validate_address(cmd["raft"], "raft"),
        api=validate_address(cmd["api"], "api"),
    )
    if parsed.raft == parsed.api:
        raise InvalidArgument("api", "must differ from raft")
    return parsed


def _parse_member_remove(cmd: Mapping[str, Any]) -> _MemberRemove:
    _fields(cmd, "member_remove", ("op", "raft"))
    return _MemberRemove(raft=validate_address(cmd["raft"], "raft"))


_PARSERS: Final = {
    "put": _parse_put,
    "delete": _parse_delete,
    "txn": _parse_txn,
    "lease_grant": _parse_lease_grant,
    "lease_keepalive": _parse_lease_keepalive,
    "lease_revoke": _parse_lease_revoke,
    "lease_expire": _parse_lease_expire,
    "noop": _parse_noop,
    "member_add": _parse_member_add,
    "member_remove": _parse_member_remove,
}


def _parse_command(command: Any) -> _Command:
    cmd = _mapping(command, "command")
    op = cmd.get("op")
    if not isinstance(op, str) or op not in _PARSERS:
        raise InvalidArgument("op", f"must be one of {', '.join(sorted(_PARSERS))}")
    return _PARSERS[op](cmd)


def validate_command(command: Any) -> None:
    """Run every state-independent check ``apply`` would run, without a state machine.

    The Raft wrapper calls this before proposing so malformed commands never enter the log; ``apply``
    repeats the checks anyway, because a log written by another version must not corrupt the state.
    """
    _parse_command(command)


# ----------------------------------------------------------------------------------------------------------
# Command builders: callers never hand-write command dicts. Each builder validates eagerly, so a bad
# argument fails in the caller's stack frame instead of after a Raft round trip.
# ----------------------------------------------------------------------------------------------------------


def put_command(key: str, value: Any, *, lease: int = 0, prev_revision: int | None = None) -> dict[str, Any]:
    """``put``: set ``key`` to ``value`` (attached to ``lease`` unless 0), optionally CAS on mod_revision."""
    cmd = {"op": "put", "key": key, "value": value, "lease": lease, "prev_revision": prev_revision}
    _parse_put(cmd)
    return cmd


def delete_command(key: str, *, prev_revision: int | None = None) -> dict[str, Any]:
    """``delete``: remove ``key``, optionally only if its mod_revision equals ``prev_revision``."""
    cmd = {"op": "delete", "key": key, "prev_revision": prev_revision}
    _parse_delete(cmd)
    return cmd


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
    _parse_compare(item, 0)
    return item


def txn_put(key: str, value: Any, *, lease: int = 0) -> dict[str, Any]:
    """Txn op: put ``key``."""
    item = {"put": {"key": key, "value": value, "lease": lease}}
    _parse_txn_op(item, "op")
    return item


def txn_delete(key: str) -> dict[str, Any]:
    """Txn op: delete ``key`` (a no-op if absent)."""
    item = {"delete": {"key": key}}
    _parse_txn_op(item, "op")
    return item


def txn_get(key: str) -> dict[str, Any]:
    """Txn op: read ``key`` as it is at this point of the txn."""
    item = {"get": {"key": key}}
    _parse_txn_op(item, "op")
    return item


def txn_range(prefix: str, *, start: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Txn op: list keys under ``prefix`` as they are at this point of the txn."""
    item = {"range": {"prefix": prefix, "start": start, "limit": limit}}
    _parse_txn_op(item, "op")
    return item


def txn_command(
    compare: Sequence[Mapping[str, Any]],
    success: Sequence[Mapping[str, Any]],
    failure: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``txn``: if every compare holds run ``success`` else ``failure``, atomically, as one revision."""
    cmd = {
        "op": "txn",
        "compare": [dict(c) for c in compare],
        "success": [dict(o) for o in success],
        "failure": [dict(o) for o in failure],
    }
    _parse_txn(cmd)
    return cmd


def lease_grant_command(lease_id: int, ttl: int, now: float) -> dict[str, Any]:
    """``lease_grant``: create lease ``lease_id`` (chosen by the proposer) expiring at ``now + ttl``."""
    cmd = {"op": "lease_grant", "id": lease_id, "ttl": ttl, "now": now}
    _parse_lease_grant(cmd)
    return cmd


def lease_keepalive_command(lease_id: int, now: float) -> dict[str, Any]:
    """``lease_keepalive``: push the lease's deadline to ``now + ttl``."""
    cmd = {"op": "lease_keepalive", "id": lease_id, "now": now}
    _parse_lease_keepalive(cmd)
    return cmd


def lease_revoke_command(lease_id: int) -> dict[str, Any]:
    """``lease_revoke``: drop the lease and delete its keys in one revision."""
    cmd = {"op": "lease_revoke", "id": lease_id}
    _parse_lease_revoke(cmd)
    return cmd


def lease_expire_command(now: float) -> dict[str, Any]:
    """``lease_expire``: revoke every lease whose deadline is <= ``now`` (the leader's clock)."""
    cmd = {"op": "lease_expire", "now": now}
    _parse_lease_expire(cmd)
    return cmd


def noop_command() -> dict[str, Any]:
    """``noop``: a read barrier; commits without changing anything."""
    return {"op": "noop"}


def member_add_command(node_id: str, raft: str, api: str) -> dict[str, Any]:
    """``member_add``: record member ``node_id`` at Raft address ``raft`` and API address ``api``.

    Applying it replaces any entry that shares the id or either address, so it never fails on a valid
    command: it mirrors a Raft configuration change pysyncobj has already made (see ``MEMBERSHIP_OPS``).
    """
    cmd = {"op": "member_add", "id": node_id, "raft": raft, "api": api}
    _parse_member_add(cmd)
    return cmd


def member_remove_command(raft: str) -> dict[str, Any]:
    """``member_remove``: forget the member whose Raft address is ``raft`` (a no-op if there is none).

    Keyed by Raft address because that is pysyncobj's identity of a member, which the log entry carries.
    """
    cmd = {"op": "member_remove", "raft": raft}
    _parse_member_remove(cmd)
    return cmd


# ----------------------------------------------------------------------------------------------------------
# Internal state
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
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
class _Lease:
    ttl: int
    deadline: int | float
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Member:
    """A directory entry: where a cluster member speaks Raft and where it serves the HTTP API."""

    raft: str
    api: str

    def as_dict(self, node_id: str) -> dict[str, str]:
        return {"id": node_id, "raft": self.raft, "api": self.api}


@dataclass(frozen=True, slots=True)
class _Event:
    """A watch event: for ``put`` the kv after the write, for ``delete`` the kv as it was just before."""

    type: str
    revision: int
    key: str
    record: _Record

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "revision": self.revision, "kv": self.record.as_kv(self.key)}


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


def _trim(history: deque[_Event], limit: int, revision: int, compacted: int) -> int:
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


class KVStateMachine:
    """The deterministic key-value state machine every DB node applies the Raft log to.

    Mutations only happen through :meth:`apply`; reads (:meth:`get`, :meth:`range`, :meth:`events_since`,
    :meth:`lease`, ...) are local and must be preceded by a read barrier (a committed ``noop``) by callers
    that need linearizable answers.
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        """Create an empty store at revision 0; ``history_limit`` bounds the retained watch events."""
        self._history_limit = _int(history_limit, "history_limit", minimum=1)
        self._revision = 0
        self._kvs: dict[str, _Record] = {}
        self._keys: list[str] = []  # sorted; code-point order == UTF-8 byte order, as in etcd
        self._leases: dict[int, _Lease] = {}
        self._history: deque[_Event] = deque()
        self._compact_revision = 0  # every event with revision <= this has been dropped
        # The member directory (see the module docstring): invisible to the KV API.
        self._members: dict[str, _Member] = {}

    # ------------------------------------------------------------------------------------------ apply

    def apply(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one committed command and return its JSON-serialisable result.

        Raises :class:`InvalidArgument` for malformed commands and :class:`LeaseNotFound` /
        :class:`LeaseExists` for state-dependent refusals; in every such case the state is untouched, and
        since all nodes hold the same state they all raise the same error. Failed CAS is *not* an
        exception: it is an ordinary outcome ``{"ok": False, "error": "conflict", ...}``.
        """
        parsed = _parse_command(command)
        match parsed:
            case _Put():
                return self._apply_put(parsed)
            case _Delete():
                return self._apply_delete(parsed)
            case _Txn():
                return self._apply_txn(parsed)
            case _LeaseGrant():
                return self._apply_lease_grant(parsed)
            case _LeaseKeepalive():
                return self._apply_lease_keepalive(parsed)
            case _LeaseRevoke():
                return self._apply_lease_revoke(parsed)
            case _LeaseExpire():
                return self._apply_lease_expire(parsed)
            case _MemberAdd():
                return self._apply_member_add(parsed)
            case _MemberRemove():
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

    def _apply_put(self, cmd: _Put) -> dict[str, Any]:
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

    def _apply_delete(self, cmd: _Delete) -> dict[str, Any]:
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

    def _apply_txn(self, cmd: _Txn) -> dict[str, Any]:
        succeeded = all(self._holds(c) for c in cmd.compare)
        ops = cmd.success if succeeded else cmd.failure
        # The only state-dependent failure of a txn op; checked for the taken branch (as etcd does) before
        # anything is written, which together with parse-time validation makes the txn all-or-nothing.
        for op in ops:
            if isinstance(op, _Put):
                self._require_lease(op.lease)
        revision = self._revision + 1
        mutated = False
        results: list[dict[str, Any]] = []
        for op in ops:
            if isinstance(op, _Put):
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
            elif isinstance(op, _Delete):
                deleted = self._remove(op.key, revision)
                mutated = mutated or deleted
                results.append({"delete": {"key": op.key, "deleted": int(deleted)}})
            elif isinstance(op, _Get):
                record_or_none = self._kvs.get(op.key)
                kv = record_or_none.as_kv(op.key) if record_or_none is not None else None
                results.append({"get": {"kv": kv}})
            else:
                kvs, more = self._range(op.prefix, op.start, op.limit)
                results.append({"range": {"kvs": kvs, "more": more}})
        if mutated:
            self._commit(revision)
        return {"ok": True, "succeeded": succeeded, "results": results, "revision": self._revision}

    def _holds(self, cmp: _Compare) -> bool:
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

    def _apply_lease_grant(self, cmd: _LeaseGrant) -> dict[str, Any]:
        if cmd.lease_id in self._leases:
            raise LeaseExists(cmd.lease_id)
        lease = _Lease(ttl=cmd.ttl, deadline=cmd.now + cmd.ttl)
        self._leases[cmd.lease_id] = lease
        return {
            "ok": True,
            "id": cmd.lease_id,
            "ttl": lease.ttl,
            "deadline": lease.deadline,
            "revision": self._revision,
        }

    def _apply_lease_keepalive(self, cmd: _LeaseKeepalive) -> dict[str, Any]:
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

    def _apply_lease_revoke(self, cmd: _LeaseRevoke) -> dict[str, Any]:
        if cmd.lease_id not in self._leases:
            raise LeaseNotFound(cmd.lease_id)
        deleted = self._revoke([cmd.lease_id])
        return {"ok": True, "id": cmd.lease_id, "deleted": deleted, "revision": self._revision}

    def _apply_lease_expire(self, cmd: _LeaseExpire) -> dict[str, Any]:
        expired = self.expired_leases(cmd.now)
        deleted = self._revoke(expired)
        return {"ok": True, "expired": expired, "deleted": deleted, "revision": self._revision}

    def _apply_member_add(self, cmd: _MemberAdd) -> dict[str, Any]:
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
        self._members[cmd.node_id] = _Member(cmd.raft, cmd.api)
        return {"ok": True, "replaced": replaced, "members": self.members(), "revision": self._revision}

    def _apply_member_remove(self, cmd: _MemberRemove) -> dict[str, Any]:
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

    def _write(self, key: str, value_json: str, lease_id: int, revision: int) -> _Record:
        old = self._kvs.get(key)
        if old is None:
            record = _Record(value_json, revision, revision, 1, lease_id)
            bisect.insort(self._keys, key)
        else:
            record = _Record(value_json, old.create_revision, revision, old.version + 1, lease_id)
            if old.lease and old.lease != lease_id:
                self._leases[old.lease].keys.discard(key)
        if lease_id:
            self._leases[lease_id].keys.add(key)
        self._kvs[key] = record
        self._history.append(_Event("put", revision, key, record))
        return record

    def _remove(self, key: str, revision: int) -> bool:
        old = self._kvs.pop(key, None)
        if old is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, key)]
        lease = self._leases.get(old.lease) if old.lease else None
        if lease is not None:  # None while the lease itself is being revoked
            lease.keys.discard(key)
        self._history.append(_Event("delete", revision, key, old))
        return True

    def _commit(self, revision: int) -> None:
        self._revision = revision
        self._compact_revision = _trim(self._history, self._history_limit, revision, self._compact_revision)

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

    def get(self, key: str) -> dict[str, Any] | None:
        """The kv dict of ``key`` (key, value, create_revision, mod_revision, version, lease) or None."""
        record = self._kvs.get(validate_key(key))
        return record.as_kv(key) if record is not None else None

    def range(
        self, prefix: str = "", start: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Keys starting with ``prefix`` and >= ``start``, in key order, at most ``limit`` (None/0 = all).

        Returns ``(kvs, more)`` where ``more`` says further matching keys exist beyond the page. To fetch
        the next page pass ``start=last_key + "\\0"`` (NUL cannot occur in keys, so that is the successor).
        """
        return self._range(_range_prefix(prefix), _range_start(start), _range_limit(limit))

    def _range(self, prefix: str, start: str | None, limit: int | None) -> tuple[list[dict[str, Any]], bool]:
        lower = prefix if start is None or start < prefix else start
        index = bisect.bisect_left(self._keys, lower)
        out: list[dict[str, Any]] = []
        keys = self._keys
        while index < len(keys) and keys[index].startswith(prefix):
            if limit is not None and len(out) == limit:
                return out, True
            key = keys[index]
            out.append(self._kvs[key].as_kv(key))
            index += 1
        return out, False

    def events_since(self, revision: int) -> list[dict[str, Any]]:
        """Watch events with revision > ``revision``, oldest first: ``{type, revision, kv}``.

        ``kv`` is the key after the write for ``put`` and the key as it was before for ``delete``.
        Raises :class:`Compacted` when events the caller needs were dropped, i.e. when
        ``revision < compact_revision``. Asking about the future returns ``[]``.
        """
        since = _int(revision, "revision", minimum=0)
        if since < self._compact_revision:
            raise Compacted(self._compact_revision + 1)
        newer: list[_Event] = []
        for event in reversed(self._history):  # watchers mostly ask for recent events: scan from the end
            if event.revision <= since:
                break
            newer.append(event)
        return [event.as_dict() for event in reversed(newer)]

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        """``{id, ttl, deadline, keys}`` for a live lease (keys sorted), or None."""
        lease = self._leases.get(_lease_id(lease_id))
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
        moment = _time(now)
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
        _parse_member_add({"op": "member_add", "id": node_id, "raft": raft, "api": api})
        if node_id in self._members:
            raise MemberExists("id", f"{node_id!r} is already a member", node_id)
        for field_name, address in (("raft", raft), ("api", api)):
            for other, member in sorted(self._members.items()):
                if address in (member.raft, member.api):
                    raise MemberExists(field_name, f"{address} is already used by member {other!r}", other)

    # -------------------------------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Serialise the whole replicated state - keys, leases, revision, watch history, member directory.

        The encoding is canonical JSON (sorted object keys, keys and leases in sorted order), so two nodes
        in the same state produce byte-identical snapshots. The watch history is included so a node that
        catches up from a snapshot answers ``events_since`` exactly like the others.
        """
        doc = {
            "format": SNAPSHOT_FORMAT,
            "revision": self._revision,
            "compact_revision": self._compact_revision,
            "kvs": [[key, *self._kvs[key].as_row()] for key in self._keys],
            "leases": [
                [lease_id, self._leases[lease_id].ttl, self._leases[lease_id].deadline]
                for lease_id in sorted(self._leases)
            ],
            "history": [[e.type, e.revision, e.key, *e.record.as_row()] for e in self._history],
            "members": [[node_id, m.raft, m.api] for node_id, m in sorted(self._members.items())],
        }
        return _canonical(doc).encode("utf-8")

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; a bad snapshot raises and leaves the state as it was.

        ``history_limit`` is node configuration and is kept; if it is smaller than the snapshot's history,
        the oldest revisions are dropped (raising ``compact_revision``) exactly as if they had aged out.
        """
        try:
            loaded = _load_snapshot(data)
        except StateMachineError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            raise InvalidArgument("snapshot", f"malformed ({exc.__class__.__name__}: {exc})") from None
        revision, compacted, kvs, keys, leases, history, members = loaded
        compacted = _trim(history, self._history_limit, revision, compacted)
        # Nothing below can fail, so the swap is all-or-nothing.
        self._revision = revision
        self._compact_revision = compacted
        self._kvs = kvs
        self._keys = keys
        self._leases = leases
        self._history = history
        if members is not None:  # None: a format 1 snapshot, which predates the directory
            self._members = members

    @classmethod
    def from_snapshot(cls, data: bytes, history_limit: int = DEFAULT_HISTORY_LIMIT) -> KVStateMachine:
        """A new state machine restored from ``data``."""
        machine = cls(history_limit=history_limit)
        machine.restore(data)
        return machine


def _snapshot_error(reason: str) -> InvalidArgument:
    return InvalidArgument("snapshot", reason)


def _load_row(row: Any, revision: int) -> _Record:
    value_json, create_revision, mod_revision, version, lease_id = row
    if not isinstance(value_json, str):
        raise _snapshot_error("value must be JSON text")
    json.loads(value_json)  # must at least be valid JSON
    record = _Record(
        value_json,
        _int(create_revision, "snapshot.create_revision", minimum=1),
        _int(mod_revision, "snapshot.mod_revision", minimum=1),
        _int(version, "snapshot.version", minimum=1),
        _lease_id(lease_id, "snapshot.lease", allow_zero=True),
    )
    if not record.create_revision <= record.mod_revision <= revision:
        raise _snapshot_error("inconsistent revisions in a kv")
    return record


_SNAPSHOT_FIELDS: Final = ("format", "revision", "compact_revision", "kvs", "leases", "history")


def _load_members(rows: Any) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    addresses: set[str] = set()
    previous = ""
    for node_id, raft, api in rows:
        try:
            parsed = _parse_member_add({"op": "member_add", "id": node_id, "raft": raft, "api": api})
        except InvalidArgument as exc:
            raise _snapshot_error(f"member {exc}") from None
        if parsed.node_id <= previous:
            raise _snapshot_error("members must be unique and sorted by id")
        previous = parsed.node_id
        if {parsed.raft, parsed.api} & addresses:
            raise _snapshot_error(f"member {parsed.node_id!r} reuses an address")
        addresses.update((parsed.raft, parsed.api))
        members[parsed.node_id] = _Member(parsed.raft, parsed.api)
    return members


def _load_snapshot(
    data: bytes,
) -> tuple[
    int, int, dict[str, _Record], list[str], dict[int, _Lease], deque[_Event], dict[str, _Member] | None
]:
    """Decode and sanity-check a snapshot into fresh structures (never touching a live machine)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _snapshot_error("must be bytes")
    doc = _mapping(json.loads(bytes(data).decode("utf-8")), "snapshot")
    snapshot_format = doc.get("format")
    if snapshot_format == 1:
        _fields(doc, "snapshot", _SNAPSHOT_FIELDS)
    elif snapshot_format == SNAPSHOT_FORMAT:
        _fields(doc, "snapshot", (*_SNAPSHOT_FIELDS, "members"))
    else:
        raise _snapshot_error(f"unsupported format {snapshot_format!r}")
    revision = _int(doc["revision"], "snapshot.revision", minimum=0)
    compacted = _int(doc["compact_revision"], "snapshot.compact_revision", minimum=0, maximum=revision)

    leases: dict[int, _Lease] = {}
    for lease_id, ttl, deadline in doc["leases"]:
        lid = _lease_id(lease_id, "snapshot.lease")
        if lid in leases:
            raise _snapshot_error(f"duplicate lease {lid}")
        leases[lid] = _Lease(
            ttl=_int(ttl, "snapshot.ttl", minimum=1), deadline=_time(deadline, "snapshot.deadline")
        )

    kvs: dict[str, _Record] = {}
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

    history: deque[_Event] = deque()
    previous = compacted
    for kind, event_revision, key, *row in doc["history"]:
        if kind not in ("put", "delete"):
            raise _snapshot_error(f"unknown event type {kind!r}")
        event_rev = _int(event_revision, "snapshot.event.revision")
        if not (compacted < event_rev <= revision and event_rev >= previous):
            raise _snapshot_error("event revisions out of order or outside (compact_revision, revision]")
        previous = event_rev
        history.append(
            _Event(kind, event_rev, validate_key(key, "snapshot.event.key"), _load_row(row, revision))
        )
    members = _load_members(doc["members"]) if snapshot_format == SNAPSHOT_FORMAT else None
    return revision, compacted, kvs, keys, leases, history, members
