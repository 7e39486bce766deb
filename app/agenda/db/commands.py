"""The DB Service's command format: limits, validation, and parsing of commands into typed records.

Commands are plain JSON-serialisable dicts because they travel through the Raft log. This module is the
one definition of what a well-formed command is, shared by both sides: the builders in
:mod:`agenda.db.txn` run a parser on what they build (so a bad argument fails in the caller's frame), and
the state machine (:mod:`agenda.db.state`) parses every committed command again before applying it,
because a log written by another version must not corrupt the state. It is pure: no I/O, no clock.

Parsing produces the frozen records below (:class:`Put`, :class:`Txn`, ...), which ``apply`` consumes,
so nothing is parsed twice. Every failure is an :class:`~agenda.db.errors.InvalidArgument` naming the
offending field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agenda.common.config import ConfigError, parse_hostport
from agenda.db.errors import InvalidArgument

__all__ = [
    "COMPARE_OPS",
    "COMPARE_TARGETS",
    "MAX_KEY_BYTES",
    "MAX_LEASE_ID",
    "MAX_LEASE_TTL",
    "MAX_TXN_OPS",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "MEMBERSHIP_OPS",
    "NODE_ID_PATTERN",
    "CheckedCommand",
    "Command",
    "Compare",
    "Delete",
    "Get",
    "LeaseExpire",
    "LeaseGrant",
    "LeaseKeepalive",
    "LeaseRevoke",
    "MemberAdd",
    "MemberRemove",
    "Noop",
    "Put",
    "Range",
    "Txn",
    "TxnOp",
    "canonical_json",
    "check_fields",
    "check_int",
    "check_lease_id",
    "check_mapping",
    "check_range_limit",
    "check_range_prefix",
    "check_range_start",
    "check_time",
    "encode_value",
    "parse_command",
    "parse_compare",
    "parse_delete",
    "parse_lease_expire",
    "parse_lease_grant",
    "parse_lease_keepalive",
    "parse_lease_revoke",
    "parse_member_add",
    "parse_member_remove",
    "parse_noop",
    "parse_put",
    "parse_txn",
    "parse_txn_op",
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
# Validation helpers
# ----------------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
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
        kind = type(node)
        if kind is dict or kind is list:
            # The common case (what a JSON parser makes), walked without pushing the leaves: a str,
            # int, bool or None can only fail the depth check, and every child of a non-empty
            # container is one level deeper, so that check is made once for all of them. The
            # others are pushed in the order the general case below pushes them, so a value with
            # several faults is refused for the same one.
            child = depth + 1
            items = node.items() if kind is dict else enumerate(node)
            for name, item in items:
                if kind is dict and not isinstance(name, str):
                    raise InvalidArgument(field, "object keys must be strings")
                leaf = type(item)
                if leaf is str or leaf is int or leaf is bool or item is None:
                    continue
                stack.append((item, child))
            if node and child > MAX_VALUE_DEPTH:
                raise InvalidArgument(field, f"nested deeper than {MAX_VALUE_DEPTH} levels")
            continue
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
        text = canonical_json(value)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidArgument(field, f"not JSON-serialisable ({exc})") from None
    if size > MAX_VALUE_BYTES:
        raise InvalidArgument(field, f"encoded size {size} exceeds {MAX_VALUE_BYTES} bytes")
    return text


def check_int(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int that is not a bool (``True`` would otherwise pass as 1), optionally range-checked."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, "must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidArgument(field, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(field, f"must be <= {maximum}")
    return int(value)


def check_time(value: Any, field: str = "now") -> int | float:
    """A finite, non-negative timestamp in seconds (int or float) chosen by the proposer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(field, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(field, "must be finite")
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    return value


def check_lease_id(value: Any, field: str = "id", *, allow_zero: bool = False) -> int:
    """Lease ids are positive int64; 0 is accepted only where it means "no lease"."""
    return check_int(value, field, minimum=0 if allow_zero else 1, maximum=MAX_LEASE_ID)


def check_mapping(value: Any, field: str) -> Mapping[str, Any]:
    """Commands and their parts must be JSON objects."""
    if type(value) is not dict and not isinstance(value, Mapping):  # an exact dict: no ABC check
        raise InvalidArgument(field, "must be an object")
    return value


def check_fields(
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
    return check_int(value, "prev_revision", minimum=0)


def check_range_limit(value: Any, field: str = "limit") -> int | None:
    """None or 0 = unlimited (etcd convention); otherwise a positive page size."""
    if value is None:
        return None
    limit = check_int(value, field, minimum=0)
    return limit or None


def check_range_prefix(value: Any, field: str = "prefix") -> str:
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


def check_range_start(value: Any, field: str = "start") -> str | None:
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
class Put:
    key: str
    value_json: str
    lease: int
    prev_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prev_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class Range:
    prefix: str
    start: str | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class Compare:
    key: str
    target: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Txn:
    compare: tuple[Compare, ...]
    success: tuple[Put | Delete | Get | Range, ...]
    failure: tuple[Put | Delete | Get | Range, ...]


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    lease_id: int
    ttl: int
    now: int | float


@dataclass(frozen=True, slots=True)
class LeaseKeepalive:
    lease_id: int
    now: int | float


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    lease_id: int


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    now: int | float


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class MemberAdd:
    node_id: str
    raft: str
    api: str


@dataclass(frozen=True, slots=True)
class MemberRemove:
    raft: str


Command = (
    Put
    | Delete
    | Txn
    | LeaseGrant
    | LeaseKeepalive
    | LeaseRevoke
    | LeaseExpire
    | Noop
    | MemberAdd
    | MemberRemove
)
TxnOp = Put | Delete | Get | Range


def parse_put(cmd: Mapping[str, Any]) -> Put:
    check_fields(cmd, "put", ("op", "key", "value"), ("lease", "prev_revision"))
    return Put(
        key=validate_key(cmd["key"]),
        value_json=encode_value(cmd["value"]),
        lease=check_lease_id(cmd.get("lease", 0), "lease", allow_zero=True),
        prev_revision=_prev_revision(cmd.get("prev_revision")),
    )


def parse_delete(cmd: Mapping[str, Any]) -> Delete:
    check_fields(cmd, "delete", ("op", "key"), ("prev_revision",))
    return Delete(key=validate_key(cmd["key"]), prev_revision=_prev_revision(cmd.get("prev_revision")))


def parse_compare(raw: Any, index: int) -> Compare:
    where = f"compare[{index}]"
    item = check_mapping(raw, where)
    check_fields(item, where, ("key", "target", "op", "value"))
    key = validate_key(item["key"], f"{where}.key")
    target, op, value = item["target"], item["op"], item["value"]
    if target not in COMPARE_TARGETS:
        raise InvalidArgument(f"{where}.target", f"must be one of {', '.join(sorted(COMPARE_TARGETS))}")
    if op not in COMPARE_OPS:
        raise InvalidArgument(f"{where}.op", f"must be one of {', '.join(sorted(COMPARE_OPS))}")
    if target in _INT_TARGETS:
        value = check_int(value, f"{where}.value")
    elif target == "exists":
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}.value", "must be a boolean for target 'exists'")
        if op not in ("eq", "ne"):
            raise InvalidArgument(f"{where}.op", "target 'exists' supports only eq and ne")
    else:
        # Canonicalise through JSON so the comparison sees exactly what a stored value would look like.
        value = json.loads(encode_value(value, f"{where}.value"))
    return Compare(key=key, target=target, op=op, value=value)


def parse_txn_op(raw: Any, where: str) -> TxnOp:
    item = check_mapping(raw, where)
    if len(item) != 1 or next(iter(item)) not in _RESULT_OPS:
        raise InvalidArgument(where, "must be an object with exactly one of put, delete, get, range")
    kind = next(iter(item))
    body = check_mapping(item[kind], f"{where}.{kind}")
    at = f"{where}.{kind}"
    if kind == "put":
        check_fields(body, at, ("key", "value"), ("lease",))
        return Put(
            key=validate_key(body["key"], f"{at}.key"),
            value_json=encode_value(body["value"], f"{at}.value"),
            lease=check_lease_id(body.get("lease", 0), f"{at}.lease", allow_zero=True),
        )
    if kind == "delete":
        check_fields(body, at, ("key",))
        return Delete(key=validate_key(body["key"], f"{at}.key"))
    if kind == "get":
        check_fields(body, at, ("key",))
        return Get(key=validate_key(body["key"], f"{at}.key"))
    check_fields(body, at, ("prefix",), ("start", "limit"))
    return Range(
        prefix=check_range_prefix(body["prefix"], f"{at}.prefix"),
        start=check_range_start(body.get("start"), f"{at}.start"),
        limit=check_range_limit(body.get("limit"), f"{at}.limit"),
    )


def _parse_branch(raw: Any, name: str) -> tuple[TxnOp, ...]:
    if not isinstance(raw, (list, tuple)):
        raise InvalidArgument(name, "must be a list")
    if len(raw) > MAX_TXN_OPS:
        raise InvalidArgument(name, f"at most {MAX_TXN_OPS} ops")
    ops = tuple(parse_txn_op(item, f"{name}[{i}]") for i, item in enumerate(raw))
    # Like etcd, a branch may write each key at most once: this keeps "one event per key per revision",
    # which watchers rely on to reconstruct state, and makes the final value of a key unambiguous.
    written: set[str] = set()
    for i, op in enumerate(ops):
        if isinstance(op, (Put, Delete)):
            if op.key in written:
                raise InvalidArgument(f"{name}[{i}]", f"key {op.key!r} is written more than once in the txn")
            written.add(op.key)
    return ops


def parse_txn(cmd: Mapping[str, Any]) -> Txn:
    check_fields(cmd, "txn", ("op",), ("compare", "success", "failure"))
    raw_compare = cmd.get("compare", [])
    if not isinstance(raw_compare, (list, tuple)):
        raise InvalidArgument("compare", "must be a list")
    if len(raw_compare) > MAX_TXN_OPS:
        raise InvalidArgument("compare", f"at most {MAX_TXN_OPS} compares")
    return Txn(
        compare=tuple(parse_compare(item, i) for i, item in enumerate(raw_compare)),
        success=_parse_branch(cmd.get("success", []), "success"),
        failure=_parse_branch(cmd.get("failure", []), "failure"),
    )


def parse_lease_grant(cmd: Mapping[str, Any]) -> LeaseGrant:
    check_fields(cmd, "lease_grant", ("op", "id", "ttl", "now"))
    return LeaseGrant(
        lease_id=check_lease_id(cmd["id"]),
        ttl=check_int(cmd["ttl"], "ttl", minimum=1, maximum=MAX_LEASE_TTL),
        now=check_time(cmd["now"]),
    )


def parse_lease_keepalive(cmd: Mapping[str, Any]) -> LeaseKeepalive:
    check_fields(cmd, "lease_keepalive", ("op", "id", "now"))
    return LeaseKeepalive(lease_id=check_lease_id(cmd["id"]), now=check_time(cmd["now"]))


def parse_lease_revoke(cmd: Mapping[str, Any]) -> LeaseRevoke:
    check_fields(cmd, "lease_revoke", ("op", "id"))
    return LeaseRevoke(lease_id=check_lease_id(cmd["id"]))


def parse_lease_expire(cmd: Mapping[str, Any]) -> LeaseExpire:
    check_fields(cmd, "lease_expire", ("op", "now"))
    return LeaseExpire(now=check_time(cmd["now"]))


def parse_noop(cmd: Mapping[str, Any]) -> Noop:
    check_fields(cmd, "noop", ("op",))
    return Noop()


def parse_member_add(cmd: Mapping[str, Any]) -> MemberAdd:
    check_fields(cmd, "member_add", ("op", "id", "raft", "api"))
    parsed = MemberAdd(
        node_id=validate_node_id(cmd["id"]),
        raft=validate_address(cmd["raft"], "raft"),
        api=validate_address(cmd["api"], "api"),
    )
    if parsed.raft == parsed.api:
        raise InvalidArgument("api", "must differ from raft")
    return parsed


def parse_member_remove(cmd: Mapping[str, Any]) -> MemberRemove:
    check_fields(cmd, "member_remove", ("op", "raft"))
    return MemberRemove(raft=validate_address(cmd["raft"], "raft"))


_PARSERS: Final = {
    "put": parse_put,
    "delete": parse_delete,
    "txn": parse_txn,
    "lease_grant": parse_lease_grant,
    "lease_keepalive": parse_lease_keepalive,
    "lease_revoke": parse_lease_revoke,
    "lease_expire": parse_lease_expire,
    "noop": parse_noop,
    "member_add": parse_member_add,
    "member_remove": parse_member_remove,
}


def parse_command(command: Any) -> Command:
    cmd = check_mapping(command, "command")
    op = cmd.get("op")
    if not isinstance(op, str) or op not in _PARSERS:
        raise InvalidArgument("op", f"must be one of {', '.join(sorted(_PARSERS))}")
    return _PARSERS[op](cmd)


class CheckedCommand(dict[str, Any]):
    """A command that one of the builders (:mod:`agenda.db.txn`) has just parsed with the same parser.

    :func:`validate_command` does not parse it a second time: the API validates a request's command
    before routing it (so a follower answers 400 itself), and a large txn parsed again before it is
    proposed cost the leader as much as applying it. The node proposes a plain ``dict`` copy, so the
    log never holds this type.
    """


def validate_command(command: Any) -> None:
    """Run every state-independent check ``apply`` would run, without a state machine.

    The Raft wrapper calls this before proposing so malformed commands never enter the log; ``apply``
    repeats the checks anyway, because a log written by another version must not corrupt the state.
    A :class:`CheckedCommand` was checked when it was built.
    """
    if type(command) is CheckedCommand:
        return
    parse_command(command)
