"""An in-process DB: `DBClient` over one `KVStateMachine` in this process, with injectable faults.

For tests and development tools that need the DB Service's behaviour without a cluster: no Raft, no
sockets, no HTTP. :class:`MemoryDBClient` *is* a :class:`~agenda.db.client.DBClient`, so every method,
every exception and every ``outcome_unknown`` decision is DBClient's own code; only its transport is
replaced by :class:`InProcessDB`, which answers each request the way a DB member's API does (the
API's own argument checks and problem mapping, :mod:`agenda.db.api.args` and
:mod:`agenda.db.api.problems`) by applying commands to the state machine directly, in arrival order,
under one lock. A request body is encoded as ``requests`` encodes it and decoded by the strict parser
every service uses, so values come back as fresh JSON, never aliases of the caller's objects.

Faults, each affecting the next matching requests (``times`` of them):

* :meth:`InProcessDB.contend`: a concurrent write lands between a conditional write's reads and its
  commit (a txn, or a put or delete with ``prev_revision``), so its compare fails as when another
  service instance won the race.
* :meth:`InProcessDB.unknown_outcome`: a write DBClient cannot safely re-send (the same ones, plus
  lease grants) is applied, or not, and then answered with the DB's 503 "outcome unknown", as when the
  leader lost its leadership after appending the command.
* :meth:`InProcessDB.outage`: no leader: any request is answered 503 without being applied.

And :meth:`InProcessDB.burst`: the requests this thread makes inside it land together, as commits do
when a member's watching thread is not scheduled between them; with a short history (a
``KVStateMachine(history_limit=...)`` given to the `InProcessDB`) a watcher is then overtaken: 410.

Where it differs from a cluster, on purpose: lease ids are sequential; a lease expires at the first
request after its deadline (what the leader's tick does); ``linearizable`` changes nothing (there is
one copy); membership changes are refused with 501.

Like the state machine it holds, this is the DB's side: the services never import it (the import
contract), only tests and tools do. Importing it loads neither Raft nor a listener.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import unquote

import requests

from agenda.common.errors import Problem, bad_request, not_found, problem_type, unavailable
from agenda.common.http import DEFAULT_IDEMPOTENT, HttpClient
from agenda.common.jsonbody import JSONBodyError, loads
from agenda.db.api.args import check_args, lease_id_arg, parse_consistency, parse_float_arg, parse_int_arg
from agenda.db.api.context import DEFAULT_WATCH_TIMEOUT, MAX_WATCH_TIMEOUT, RETRY_AFTER
from agenda.db.api.problems import problem_for_error, raise_for_result
from agenda.db.client import DBClient
from agenda.db.commands import check_range_prefix, validate_key
from agenda.db.errors import StateMachineError
from agenda.db.state import KVStateMachine
from agenda.db.txn import (
    delete_command,
    lease_expire_command,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    put_command,
    txn_command,
)

__all__ = ["KINDS", "ConcurrentWrite", "InProcessDB", "MemoryDBClient"]

NODE_ID: Final = "memory"
ADDRESS: Final = "127.0.0.1:0"

KINDS: Final = frozenset(
    {
        "get",
        "range",
        "put",
        "delete",
        "txn",
        "lease_grant",
        "keepalive",
        "revoke",
        "watch",
        "cluster",
        "member_add",
        "member_remove",
    }
)
"""The requests a fault can be limited to, one per DBClient call (``iter_prefix`` is ``range``)."""

ConcurrentWrite = Callable[[DBClient, tuple[str, ...]], object]
"""What another writer does mid-race: called with a client of the same DB (faults off) and the keys the
conditional write compares on."""

# (pattern, {method: kind}); the key and the lease id are the groups, as in the API's URL rules.
_ROUTES: Final = (
    (re.compile(r"/v1/kv"), {"GET": "range"}),
    (re.compile(r"/v1/kv/(.+)", re.DOTALL), {"GET": "get", "PUT": "put", "DELETE": "delete"}),
    (re.compile(r"/v1/txn"), {"POST": "txn"}),
    (re.compile(r"/v1/leases"), {"POST": "lease_grant"}),
    (re.compile(r"/v1/leases/([^/]+)/keepalive"), {"POST": "keepalive"}),
    (re.compile(r"/v1/leases/([^/]+)"), {"DELETE": "revoke"}),
    (re.compile(r"/v1/watch"), {"GET": "watch"}),
    (re.compile(r"/v1/cluster"), {"GET": "cluster"}),
    (re.compile(r"/v1/cluster/members"), {"POST": "member_add"}),
    (re.compile(r"/v1/cluster/members/([^/]+)"), {"DELETE": "member_remove"}),
)


class _Answer:
    """What DBClient reads from a response: the status and the JSON body (decoded afresh each time)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.text = json.dumps(body)
        self.headers = {"Content-Type": "application/json"}

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class _Fault:
    effect: str  # "outage", "contend" or "unknown"
    kinds: frozenset[str]
    left: int
    applied: bool = False
    write: ConcurrentWrite | None = None


def _kinds(kinds: Sequence[str] | None, allowed: frozenset[str]) -> frozenset[str]:
    chosen = allowed if not kinds else frozenset(kinds)
    unknown = sorted(chosen - allowed)
    if unknown:
        raise ValueError(f"this fault cannot affect {unknown}; it can affect {sorted(allowed)}")
    return chosen


def _query(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Query parameters as the server sees them: ``requests`` drops None and sends str() of the rest."""
    return {name: str(value) for name, value in (params or {}).items() if value is not None}


class InProcessDB:
    """A DB member's API answers computed in this process over one state machine; thread-safe.

    It stands where DBClient's `HttpClient` stands (`request` and `close`), so a `DBClient` over it
    behaves as over a one-member cluster. `machine` is the state; `counts` counts the requests by kind
    (those made by a `ConcurrentWrite` excepted), so a test can tell how often a store tried a write.
    """

    def __init__(
        self, machine: KVStateMachine | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.machine = machine if machine is not None else KVStateMachine()
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._changed = threading.Condition(threading.RLock())
        self._faults: list[_Fault] = []
        self._suspended = 0
        self._applied = 0
        self._lease_ids = itertools.count(1)
        self._bystander = DBClient((), http=cast(HttpClient, self))

    def close(self) -> None:
        """Nothing to release (DBClient.close calls it)."""

    # -------------------------------------------------------------------------------------- faults

    def contend(
        self, times: int = 1, *, write: ConcurrentWrite | None = None, kinds: Sequence[str] = ()
    ) -> None:
        """Let another writer win the race against the next `times` conditional writes.

        Just before each is applied, `write(client, keys)` runs (faults off), or by default every key
        the write compares on that exists is rewritten with its own value (a new ``mod_revision``). A
        write guarded only by absent keys needs `write` (the default would change nothing, which
        raises RuntimeError rather than let a test pass without the race it meant).
        """
        self._add(_Fault("contend", _kinds(kinds, frozenset({"txn", "put", "delete"})), times, write=write))

    def unknown_outcome(self, times: int = 1, *, applied: bool, kinds: Sequence[str] = ()) -> None:
        """Answer the next `times` writes DBClient will not re-send with 503 "outcome unknown".

        `applied` says whether each was applied first. The writes are those DBClient sends as not
        idempotent: txns, puts and deletes with ``prev_revision``, and lease grants.
        """
        allowed = frozenset({"txn", "put", "delete", "lease_grant"})
        self._add(_Fault("unknown", _kinds(kinds, allowed), times, applied=applied))

    def outage(self, times: int = 1, *, kinds: Sequence[str] = ()) -> None:
        """Answer the next `times` requests (of `kinds`, default any) 503 "no leader", applying nothing."""
        self._add(_Fault("outage", _kinds(kinds, KINDS), times))

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Serve no other thread's request and let no waiting watch look again until the block ends."""
        with self._changed:
            yield

    def pending_faults(self) -> int:
        """How many injected fault occurrences have not happened yet."""
        with self._changed:
            return sum(fault.left for fault in self._faults)

    def clear_faults(self) -> None:
        with self._changed:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        if fault.left < 1:
            raise ValueError("times must be at least 1")
        with self._changed:
            self._faults.append(fault)

    def _take(self, effect: str, kind: str) -> _Fault | None:
        if self._suspended:
            return None
        for fault in self._faults:
            if fault.effect == effect and kind in fault.kinds:
                fault.left -= 1
                if not fault.left:
                    self._faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        **_ignored: Any,  # headers, timeout, raise_for_status: nothing to do in process
    ) -> _Answer:
        """Answer `method path` as a DB member would; the signature of `HttpClient.request`."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in DEFAULT_IDEMPOTENT
        # Encoded before anything is "sent", as requests does: NaN or an unserialisable value fails here.
        try:
            text = None if json is None else _dumps(json)
        except ValueError as exc:
            raise requests.exceptions.InvalidJSONError(exc) from None
        with self._changed:
            try:
                status, payload = self._serve(method, path, text, _query(params), idempotent)
            except Problem as problem:
                return _Answer(problem.status, problem.to_dict())
            except StateMachineError as exc:
                problem = problem_for_error(exc)
                return _Answer(problem.status, problem.to_dict())
            return _Answer(status, payload)

    def _serve(
        self, method: str, path: str, text: str | None, args: dict[str, str], idempotent: bool
    ) -> tuple[int, Any]:
        kind, param = self._route(method, path)
        if not self._suspended:
            self.counts[kind] += 1
        self._expire_leases()
        if self._take("outage", kind) is not None:
            raise unavailable(RETRY_AFTER, "no leader (injected outage)", type=problem_type("no-leader"))
        call = _Call(self, kind, param, text, args, idempotent)
        handler: Callable[[], tuple[int, Any]] = getattr(call, kind)
        return handler()

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, str | None]:
        allowed: set[str] = set()
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method in methods:
                return methods[method], unquote(match[1]) if match.groups() else None
            allowed |= set(methods)
        if allowed:
            raise Problem(
                405, detail=f"{method} is not allowed here", headers={"Allow": ", ".join(sorted(allowed))}
            )
        raise not_found(f"no route {path}")

    # --------------------------------------------------------------------------------- proposals

    def propose(
        self,
        kind: str,
        command: dict[str, Any],
        *,
        idempotent: bool,
        guarded: Sequence[str] | None = None,
        lease_in_body: bool = True,
    ) -> dict[str, Any]:
        """Apply `command` (after any injected race or lost answer) and raise the API's problem if refused.

        `guarded` are the keys a conditional write compares on (None: not conditional).
        """
        if not idempotent:
            if guarded is not None:
                fault = self._take("contend", kind)
                if fault is not None:
                    self._interfere(fault, tuple(guarded))
            fault = self._take("unknown", kind)
            if fault is not None:
                if fault.applied:
                    self._apply(command)
                raise unavailable(
                    RETRY_AFTER,
                    "the command may or may not have been committed (injected)",
                    type=problem_type("outcome-unknown"),
                    outcome="unknown",
                )
        result = self._apply(command)
        raise_for_result(result, lease_in_body=lease_in_body)
        return result

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        result = self.machine.apply_or_error(command)
        self._applied += 1
        self._changed.notify_all()
        return result

    def _interfere(self, fault: _Fault, guarded: tuple[str, ...]) -> None:
        self._suspended += 1
        try:
            if fault.write is not None:
                fault.write(self._bystander, guarded)
                return
            present = [kv for kv in map(self.machine.get, dict.fromkeys(guarded)) if kv is not None]
            if not present:
                raise RuntimeError(
                    f"contend(): none of {list(guarded)} exists; pass write= to race this write"
                )
            for kv in present:
                self._apply(put_command(kv["key"], kv["value"], lease=kv["lease"]))
        finally:
            self._suspended -= 1

    def _expire_leases(self) -> None:
        """What the leader's tick does: expire the leases whose deadline has passed."""
        deadline = self.machine.next_deadline()
        now = self.clock()
        if deadline is not None and deadline <= now:
            self._apply(lease_expire_command(now))

    def new_lease_id(self) -> int:
        return next(self._lease_ids)

    def wait_for(self, probe: Callable[[], Any], timeout: float) -> Any:
        """`probe()`'s first truthy answer, re-probing after every change until `timeout` (None then)."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            self._changed.wait(remaining)

    @property
    def applied_index(self) -> int:
        return self._applied


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


class _Call:
    """One request being answered: each method is one route of the DB's API (`agenda.db.api`)."""

    def __init__(
        self,
        db: InProcessDB,
        kind: str,
        param: str | None,
        text: str | None,
        args: dict[str, str],
        idem: bool,
    ) -> None:
        self.db = db
        self.sm = db.machine
        self.kind = kind
        self.param = param or ""
        self.text = text
        self.args = args
        self.idempotent = idem

    def _body(self) -> dict[str, Any]:
        """The body as the API's `json_object` reads it (strict JSON, an object)."""
        try:
            body = loads(self.text if self.text is not None else b"")
        except JSONBodyError as exc:
            raise bad_request(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad_request("body must be a JSON object")
        return body

    def _propose(self, command: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.db.propose(self.kind, command, idempotent=self.idempotent, **kwargs)

    # kv --------------------------------------------------------------------------------------------

    def get(self) -> tuple[int, Any]:
        check_args(self.args, {"consistency"})
        parse_consistency(self.args)
        record = self.sm.get(validate_key(self.param))
        if record is None:
            raise not_found(
                f"key {self.param!r} does not exist",
                type=problem_type("key-not-found"),
                revision=self.sm.revision,
            )
        return 200, record

    def range(self) -> tuple[int, Any]:
        check_args(self.args, {"consistency", "prefix", "start", "limit"})
        parse_consistency(self.args)
        limit = parse_int_arg(self.args, "limit")
        items, more = self.sm.range(self.args.get("prefix", ""), self.args.get("start"), limit)
        return 200, {"items": items, "revision": self.sm.revision, "more": more}

    def put(self) -> tuple[int, Any]:
        check_args(self.args, set())
        body = self._body()
        if "value" not in body:
            raise bad_request("missing required field(s): 'value'", field="value")
        prev = body.get("prev_revision")
        command = put_command(self.param, body["value"], lease=body.get("lease", 0), prev_revision=prev)
        result = self._propose(command, guarded=None if prev is None else [self.param])
        return 200, {key: result[key] for key in ("revision", "create_revision", "version")}

    def delete(self) -> tuple[int, Any]:
        check_args(self.args, {"prev_revision"})
        prev = parse_int_arg(self.args, "prev_revision")
        command = delete_command(self.param, prev_revision=prev)
        result = self._propose(command, guarded=None if prev is None else [self.param])
        if not result.get("deleted"):
            raise not_found(
                f"key {self.param!r} does not exist",
                type=problem_type("key-not-found"),
                revision=result["revision"],
            )
        return 200, {"revision": result["revision"], "deleted": 1}

    def txn(self) -> tuple[int, Any]:
        check_args(self.args, set())
        body = self._body()
        command = txn_command(body.get("compare", []), body.get("success", []), body.get("failure", []))
        result = self._propose(command, guarded=[compare["key"] for compare in command["compare"]])
        return 200, {key: result[key] for key in ("succeeded", "results", "revision")}

    # leases ----------------------------------------------------------------------------------------

    def lease_grant(self) -> tuple[int, Any]:
        check_args(self.args, set())
        body = self._body()
        chosen, ttl = body.get("id"), body.get("ttl")
        lease_grant_command(chosen if chosen is not None else 1, ttl, 0)  # type: ignore[arg-type]
        for _ in range(3):
            lease_id = chosen if chosen is not None else self.db.new_lease_id()
            command = lease_grant_command(lease_id, ttl, self.db.clock())  # type: ignore[arg-type]
            try:
                result = self._propose(command)
            except Problem as problem:
                if chosen is None and problem.type == problem_type("lease-exists"):
                    continue  # our id was taken: pick the next
                raise
            return 201, {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}
        raise Problem(500, detail="could not find a free lease id")

    def keepalive(self) -> tuple[int, Any]:
        check_args(self.args, set())
        command = lease_keepalive_command(lease_id_arg(self.param), self.db.clock())
        result = self._propose(command, lease_in_body=False)
        return 200, {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}

    def revoke(self) -> tuple[int, Any]:
        check_args(self.args, set())
        result = self._propose(lease_revoke_command(lease_id_arg(self.param)), lease_in_body=False)
        return 200, {"id": result["id"], "deleted": result["deleted"], "revision": result["revision"]}

    # watch and cluster -----------------------------------------------------------------------------

    def watch(self) -> tuple[int, Any]:
        check_args(self.args, {"prefix", "since", "timeout"})
        prefix = check_range_prefix(self.args.get("prefix", ""))
        since = parse_int_arg(self.args, "since")
        timeout = parse_float_arg(
            self.args, "timeout", default=DEFAULT_WATCH_TIMEOUT, maximum=MAX_WATCH_TIMEOUT
        )
        start = since if since is not None else self.sm.revision
        cursor = [start]

        def probe() -> tuple[list[dict[str, Any]], int] | None:
            events = self.sm.events_since(cursor[0])  # Compacted -> 410, as in the API's watch
            cursor[0] = max(cursor[0], self.sm.revision)
            matching = [event for event in events if event["kv"]["key"].startswith(prefix)]
            return (matching, self.sm.revision) if matching else None

        found = self.db.wait_for(probe, timeout)
        if found is None:
            return 200, {"events": [], "revision": cursor[0]}  # checked up to there, as in the API
        events, revision = found
        return 200, {"events": events, "revision": revision}

    def cluster(self) -> tuple[int, Any]:
        applied = self.db.applied_index
        member = {"id": NODE_ID, "raft": ADDRESS, "api": ADDRESS, "reachable": True}
        status = {
            "id": NODE_ID,
            "leader": NODE_ID,
            "term": 1,
            "commit_index": applied,
            "applied_index": applied,
        }
        return 200, {**status, "members": [member]}

    def member_add(self) -> tuple[int, Any]:
        raise Problem(501, detail="an in-process DB has one member; membership changes need a cluster")

    member_remove = member_add


class MemoryDBClient(DBClient):
    """A `DBClient` over an `InProcessDB` (a new, empty one unless given); faults are injected on it.

    Several clients may share one `db`, as service instances share a cluster.
    """

    def __init__(self, db: InProcessDB | None = None) -> None:
        self.db = db if db is not None else InProcessDB()
        super().__init__((), http=cast(HttpClient, self.db))

    @property
    def machine(self) -> KVStateMachine:
        return self.db.machine

    @property
    def counts(self) -> Counter[str]:
        return self.db.counts

    def contend(
        self, times: int = 1, *, write: ConcurrentWrite | None = None, kinds: Sequence[str] = ()
    ) -> None:
        self.db.contend(times, write=write, kinds=kinds)

    def unknown_outcome(self, times: int = 1, *, applied: bool, kinds: Sequence[str] = ()) -> None:
        self.db.unknown_outcome(times, applied=applied, kinds=kinds)

    def outage(self, times: int = 1, *, kinds: Sequence[str] = ()) -> None:
        self.db.outage(times, kinds=kinds)

    def burst(self) -> contextlib.AbstractContextManager[None]:
        return self.db.burst()

    def pending_faults(self) -> int:
        return self.db.pending_faults()

    def clear_faults(self) -> None:
        self.db.clear_faults()
