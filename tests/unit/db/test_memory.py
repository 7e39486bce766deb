"""The in-process DB client: DBClient's expectations over a state machine in this process, and its faults.

Every script below runs twice, once on `MemoryDBClient` and once on the real `DBClient` talking to a
DB member's real Flask app (the API's test client over `FakeNode`, which applies commands directly):
the two must answer alike, values, revisions, exceptions and problem bodies included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from agenda.calendar.cas import ATTEMPTS, Contention
from agenda.calendar.layout import booking_key, event_key, group_key, user_key
from agenda.calendar.store import Change, EventStore, UsernameTaken
from agenda.db.api import create_app
from agenda.db.client import Compacted, DBClient, DBError, DBUnavailable, LeaseNotFound, RevisionMismatch
from agenda.db.memory import KINDS, InProcessDB, MemoryDBClient
from agenda.db.state import KVStateMachine
from agenda.db.txn import txn_compare, txn_delete, txn_get, txn_put, txn_range
from agenda.domain.model import Event, Group, Membership
from agenda.groups.store import GroupStore

from .test_api_errors import FakeNode

HISTORY = 6  # small, so that a watch can be compacted


class ApiTransport:
    """DBClient's transport over a DB member's Flask app: what `requests` would send, minus the socket."""

    def __init__(self, node: FakeNode) -> None:
        self.client = create_app(node).test_client()

    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, **_ignored: Any
    ) -> requests.Response:
        body = None
        if json is not None:
            try:
                body = _dumps(json)
            except ValueError as exc:
                raise requests.exceptions.InvalidJSONError(exc) from None
        query = {name: str(value) for name, value in (params or {}).items() if value is not None}
        answer = self.client.open(
            path,
            method=method,
            data=body,
            query_string=query,
            content_type="application/json" if body is not None else None,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.get_data()
        response.headers.update(answer.headers)
        return response

    def close(self) -> None:
        pass


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def api_client() -> DBClient:
    node = FakeNode()
    node.kv = KVStateMachine(history_limit=HISTORY)
    node.next_id = 0  # lease ids 1, 2, ... like the in-process DB's
    return DBClient([], http=ApiTransport(node))  # type: ignore[arg-type]


def memory_client() -> MemoryDBClient:
    return MemoryDBClient(InProcessDB(KVStateMachine(history_limit=HISTORY)))


@pytest.fixture(params=["memory", "api"])
def db(request: pytest.FixtureRequest) -> DBClient:
    return memory_client() if request.param == "memory" else api_client()


def outcome(call: Callable[[DBClient], Any], db: DBClient) -> Any:
    """What `call(db)` did, comparable across clients: its result, or its exception with the problem body."""
    try:
        result = call(db)
    except DBError as exc:
        problem = {k: v for k, v in exc.problem.items() if k != "request_id"}
        return (type(exc).__name__, exc.status, getattr(exc, "outcome_unknown", None), problem)
    except (ValueError, requests.RequestException) as exc:
        return (type(exc).__name__, str(exc))
    return _without_deadlines(result)


def _without_deadlines(value: Any) -> Any:
    """Lease deadlines come from each side's clock: only their presence is compared."""
    if isinstance(value, dict):
        return {k: ("<time>" if k == "deadline" else _without_deadlines(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_deadlines(v) for v in value]
    return value


Script = list[Callable[[DBClient], Any]]

SCRIPTS: dict[str, Script] = {
    "kv": [
        lambda db: db.put("a", {"x": 1}),
        lambda db: db.get("a"),
        lambda db: db.get("missing"),
        lambda db: db.put("a", 2, prev_revision=0),
        lambda db: db.put("a", 2, prev_revision=1),
        lambda db: db.put("b/1", [1, 2.5, "s", None, True, {"k": []}]),
        lambda db: db.put("b/2", "two"),
        lambda db: db.put("/odd key?#%", "x"),
        lambda db: db.get("/odd key?#%"),
        lambda db: db.range("b/"),
        lambda db: db.range("b/", limit=1),
        lambda db: db.range("b/", start="b/1\0"),
        lambda db: list(db.iter_prefix("", page=2)),
        lambda db: db.delete("nope"),
        lambda db: db.delete("b/1", prev_revision=99),
        lambda db: db.delete("b/1", prev_revision=0),
        lambda db: db.delete("b/1"),
        lambda db: db.get("b/1"),
    ],
    "txn": [
        lambda db: db.put("t", 1),
        lambda db: db.txn(
            [txn_compare("t", "mod_revision", "eq", 1), txn_compare("u", "exists", "eq", False)],
            [txn_put("u", {"n": 1}), txn_delete("t"), txn_get("u"), txn_range("")],
        ),
        lambda db: db.txn([txn_compare("u", "value", "eq", {"n": 2})], [txn_put("v", 1)], [txn_get("u")]),
        lambda db: db.txn([], [txn_put("w", 1, lease=999)]),
        lambda db: db.txn([], [txn_put(f"k{i}", i) for i in range(129)]),
        lambda db: db.txn([{"key": "x", "target": "nope", "op": "eq", "value": 1}], []),
    ],
    "invalid": [
        lambda db: db.get(""),
        lambda db: db.get("k" * 1025),
        lambda db: db.get("nul\0key"),
        lambda db: db.range("", limit=-1),
        lambda db: db.range("\0"),
        lambda db: db.put("deep", _nested(70)),
        lambda db: db.put("nan", float("nan")),
        lambda db: db.put("lease", 1, lease=12345),
        lambda db: db.delete("k", prev_revision=-1),
    ],
    "leases": [
        lambda db: db.grant_lease(30),
        lambda db: db.keepalive(1),
        lambda db: db.put("held", 1, lease=1),
        lambda db: db.get("held"),
        lambda db: db.revoke(1),
        lambda db: db.get("held"),
        lambda db: db.keepalive(1),
        lambda db: db.revoke(1),
        lambda db: db.grant_lease(0),
        lambda db: db.keepalive(-1),
    ],
    "watch": [
        lambda db: [db.put(f"w/{i}", i) for i in range(3)],
        lambda db: db.watch("w/", 1, timeout=0),
        lambda db: db.watch("w/", 3, timeout=0),
        lambda db: db.watch("other/", 0, timeout=0),
        lambda db: db.watch("", -1, timeout=0),
        lambda db: db.watch("", 0, timeout=61),
        lambda db: [db.put("w/0", i) for i in range(HISTORY)],
        lambda db: db.watch("w/", 1, timeout=0),
    ],
}


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_memory_client_answers_as_dbclient_over_the_real_api(name: str) -> None:
    memory, api = memory_client(), api_client()
    for step, call in enumerate(SCRIPTS[name]):
        assert outcome(call, memory) == outcome(call, api), f"{name} step {step}"


def test_the_scripts_reach_the_errors_they_are_about(db: DBClient) -> None:
    """The comparison above would pass if both sides failed alike for a silly reason: pin the meaning."""
    db.put("a", 1)
    with pytest.raises(RevisionMismatch) as mismatch:
        db.put("a", 2, prev_revision=0)
    assert mismatch.value.mod_revision == 1
    assert db.delete("absent") is None
    with pytest.raises(LeaseNotFound) as in_body:
        db.put("b", 1, lease=77)
    assert in_body.value.status == 400
    with pytest.raises(LeaseNotFound) as by_url:
        db.keepalive(77)
    assert by_url.value.status == 404
    with pytest.raises(DBError) as invalid:
        db.get("k" * 1025)
    assert (invalid.value.status, invalid.value.problem["field"]) == (400, "key")
    with pytest.raises(ValueError, match="non-empty"):
        db.get("")
    with pytest.raises(requests.exceptions.InvalidJSONError):
        db.put("nan", float("nan"))
    for i in range(HISTORY + 1):
        db.put("c", i)
    with pytest.raises(Compacted) as compacted:
        db.watch("", 0, timeout=0)
    assert compacted.value.compact_revision is not None
    assert compacted.value.compact_revision > 0


def test_returned_values_are_fresh_json_never_the_callers_objects() -> None:
    db = MemoryDBClient()
    value = {"list": [1, 2], "tuple": (1, 2)}
    db.put("k", value)
    value["list"].append(3)
    got = db.get("k")
    assert got is not None
    assert got["value"] == {"list": [1, 2], "tuple": [1, 2]}
    got["value"]["list"].append(9)
    assert db.get("k")["value"]["list"] == [1, 2]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- faults


def test_an_outage_answers_503_without_applying_and_only_as_often_as_asked() -> None:
    db = MemoryDBClient()
    db.outage(2, kinds=["txn", "get"])
    with pytest.raises(DBUnavailable) as read:
        db.get("k")
    assert (read.value.status, read.value.outcome_unknown) == (503, False)
    with pytest.raises(DBUnavailable) as write:
        db.txn([], [txn_put("k", 1)])
    assert write.value.outcome_unknown is False  # "no leader": nothing was applied
    assert db.get("k") is None
    assert db.pending_faults() == 0


@pytest.mark.parametrize("applied", [True, False])
def test_an_unknown_outcome_is_dbclients_outcome_unknown(applied: bool) -> None:
    db = MemoryDBClient()
    db.unknown_outcome(applied=applied)
    db.put("plain", 1)  # an unconditional put is re-sent by DBClient: never "unknown", fault left pending
    assert db.pending_faults() == 1
    with pytest.raises(DBUnavailable) as unknown:
        db.put("k", 1, prev_revision=0)
    assert (unknown.value.status, unknown.value.outcome_unknown) == (503, True)
    assert (db.get("k") is not None) is applied
    db.unknown_outcome(applied=applied, kinds=["txn"])
    with pytest.raises(DBUnavailable):
        db.txn([], [txn_put("t", 1)])
    assert (db.get("t") is not None) is applied
    db.unknown_outcome(applied=applied)
    with pytest.raises(DBUnavailable):
        db.grant_lease(5)
    assert bool(db.machine.leases()) is applied


def test_contention_rewrites_the_guarded_keys_so_the_compare_fails_once() -> None:
    db = MemoryDBClient()
    db.put("g", {"v": 1})
    guard = db.txn([txn_compare("g", "mod_revision", "eq", 1)], [txn_put("h", 1)])
    assert guard["succeeded"]
    db.contend()
    lost = db.txn([txn_compare("g", "mod_revision", "eq", 1)], [txn_put("h", 2)])
    assert not lost["succeeded"]
    assert db.get("g") == {**db.get("g"), "value": {"v": 1}, "mod_revision": 3, "version": 2}  # type: ignore[dict-item]
    assert db.get("h")["value"] == 1  # type: ignore[index]
    db.contend()
    with pytest.raises(RevisionMismatch):
        db.put("g", 5, prev_revision=3)
    assert db.counts["txn"] == 2  # the concurrent writes are not counted as the caller's


def test_contention_with_a_write_of_the_callers_choice_and_its_guarded_keys() -> None:
    db = MemoryDBClient()
    seen: list[tuple[str, ...]] = []

    def squat(other: DBClient, keys: tuple[str, ...]) -> None:
        seen.append(keys)
        for key in keys:
            other.put(key, "squatter")

    db.contend(write=squat)
    with pytest.raises(RevisionMismatch):
        db.put("new", 1, prev_revision=0)
    assert seen == [("new",)]
    assert db.get("new")["value"] == "squatter"  # type: ignore[index]


def test_contention_that_would_change_nothing_is_refused_loudly() -> None:
    db = MemoryDBClient()
    db.contend()
    with pytest.raises(RuntimeError, match="pass write="):
        db.put("absent", 1, prev_revision=0)


def test_faults_name_what_they_can_affect() -> None:
    db = MemoryDBClient()
    with pytest.raises(ValueError, match="cannot affect"):
        db.contend(kinds=["get"])
    with pytest.raises(ValueError, match="cannot affect"):
        db.outage(kinds=["gte"])
    with pytest.raises(ValueError, match="at least 1"):
        db.outage(0)
    assert {"get", "put", "txn", "watch"} <= KINDS


# ------------------------------------------------------------------------------- leases, watch, cluster


def test_a_lease_expires_at_the_first_request_after_its_deadline() -> None:
    now = [1000.0]
    db = MemoryDBClient(InProcessDB(clock=lambda: now[0]))
    lease = db.grant_lease(10)
    db.put("held", 1, lease=lease)
    now[0] += 5
    assert db.keepalive(lease)["deadline"] == 1015.0
    now[0] += 15
    assert db.get("held") is None
    with pytest.raises(LeaseNotFound):
        db.keepalive(lease)


def test_a_watch_waits_for_a_matching_change() -> None:
    db = MemoryDBClient()
    db.put("other", 1)
    start = db.machine.revision
    writer = threading.Timer(0.05, lambda: (db.put("unrelated", 1), db.put("w/x", 2)))
    writer.start()
    began = time.monotonic()
    got = db.watch("w/", start, timeout=5)
    writer.join()
    assert [event["kv"]["key"] for event in got["events"]] == ["w/x"]
    assert got["revision"] == db.machine.revision
    assert time.monotonic() - began < 2
    assert db.watch("w/", got["revision"], timeout=0.01) == {"events": [], "revision": got["revision"]}


def test_a_burst_of_writes_overtakes_a_waiting_watch_with_a_short_history() -> None:
    db = MemoryDBClient(InProcessDB(KVStateMachine(history_limit=2)))
    db.put("w/seen", 0)
    since = db.machine.revision
    outcome: list[Any] = []

    def watcher() -> None:
        try:
            outcome.append(db.watch("w/", since, timeout=5))
        except Compacted as exc:
            outcome.append(exc)

    thread = threading.Thread(target=watcher)
    thread.start()
    deadline = time.monotonic() + 5
    while not db.counts["watch"]:  # counted under the lock, which the watch then only gives up to wait
        assert time.monotonic() < deadline, "the watch never arrived"
        time.sleep(0.005)
    with db.burst():
        for i in range(3):  # unrelated keys: a watch that saw them one by one would keep waiting
            db.put(f"other/{i}", i)
        assert db.machine.compact_revision > since
    thread.join(5)
    (answer,) = outcome
    assert isinstance(answer, Compacted)
    assert answer.compact_revision == since + 1


def test_cluster_is_one_member_and_membership_changes_are_refused() -> None:
    db = MemoryDBClient()
    db.put("k", 1)
    status = db.cluster()
    assert status["leader"] == status["id"]
    assert [member["id"] for member in status["members"]] == [status["id"]]
    with pytest.raises(DBError) as refused:
        db.add_member("db9", "127.0.0.1:7009", "127.0.0.1:8009")
    assert refused.value.status == 501


def test_importing_it_loads_neither_raft_nor_a_service() -> None:
    code = "import sys, agenda.db.memory; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "agenda.db.memory" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "pysyncobj"}
    assert not {"agenda.db.node", "agenda.users", "agenda.groups", "agenda.gateway"} & loaded


# ----------------------------------------------------------------------------- the stores over it


NOW = datetime(2031, 1, 1, 8, tzinfo=UTC)


def _event(organizer: str = "alice") -> Event:
    return Event(
        id="e" * 32,
        title="Plan",
        start=datetime(2031, 1, 2, 10, tzinfo=UTC),
        end=datetime(2031, 1, 2, 11, tzinfo=UTC),
        organizer=organizer,
        created=NOW,
        updated=NOW,
    )


@pytest.mark.parametrize("applied", [True, False])
def test_an_event_is_written_once_whatever_became_of_an_unknown_outcome(applied: bool) -> None:
    db = MemoryDBClient()
    db.unknown_outcome(applied=applied)
    stored = EventStore(db).create(lambda: Change(_event(), (), ("alice",)))
    assert stored == _event()
    assert db.counts["txn"] == (1 if applied else 2)
    assert [e.id for e in EventStore(db).agenda("alice")] == [stored.id]


def test_a_store_gives_up_after_losing_every_race() -> None:
    db = MemoryDBClient()
    db.put(booking_key("alice"), {"event": "x", "sequence": 0})
    db.contend(ATTEMPTS)
    with pytest.raises(Contention):
        EventStore(db).create(lambda: Change(_event(), (), ("alice",)))
    assert db.counts["txn"] == ATTEMPTS
    assert db.get(event_key("e" * 32)) is None


@pytest.mark.parametrize(("applied", "taken"), [(True, False), (False, None)])
def test_an_account_created_with_an_unknown_outcome_is_recognised_by_its_salt(
    applied: bool, taken: bool | None
) -> None:
    db = MemoryDBClient()
    record = {"username": "alice", "password": {"salt": "c2FsdA=="}}
    db.unknown_outcome(applied=applied)
    if taken is None:  # not applied: nothing to recognise, the outage stands
        with pytest.raises(DBUnavailable):
            EventStore(db).create_user(record)
        assert db.get(user_key("alice")) is None
    else:
        EventStore(db).create_user(record)
        assert db.get(user_key("alice"))["value"] == record  # type: ignore[index]
    db.put(user_key("bob"), {"username": "bob", "password": {"salt": "other"}})
    db.unknown_outcome(applied=True, kinds=["put"])
    with pytest.raises(UsernameTaken):  # bob's record is there, but not with our salt
        EventStore(db).create_user({"username": "bob", "password": {"salt": "mine"}})


def test_a_group_create_that_loses_to_its_own_repeat_returns_the_stored_group() -> None:
    # A group id derived from an Idempotency-Key exists only when a repeat of the same request
    # created it: the create that loses the race to it answers with that group, writing nothing.
    db = MemoryDBClient()
    group = Group(id="g" * 32, name="G", owner="alice", created=NOW, members={"alice": Membership(0)})
    first = Group(id=group.id, name="First", owner="alice", created=NOW, members={"alice": Membership(0)})
    db.contend(1, write=lambda other, keys: [other.put(k, first.to_dict()) for k in keys])
    assert GroupStore(db).create(group) == first
    stored = db.get(group_key(group.id))
    assert stored is not None
    assert stored["value"] == first.to_dict()
    assert GroupStore(db).create(group) == first  # and a later repeat finds it too
