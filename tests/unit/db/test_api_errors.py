"""DB API error mapping and routing decisions, against an in-memory fake member (no Raft, no network)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from agenda.common.errors import Problem
from agenda.db.api import create_app
from agenda.db.api.args import parse_consistency, parse_float_arg, parse_int_arg
from agenda.db.api.problems import problem_for_error, problem_for_result
from agenda.db.errors import (
    Compacted,
    InvalidArgument,
    LeaderUnknown,
    LeaseExists,
    LeaseNotFound,
    OutcomeUnknown,
    ProposalFailed,
)
from agenda.db.node import Status
from agenda.db.peers import Peer
from agenda.db.state import KVStateMachine
from agenda.db.txn import put_command

SELF = Peer("db1", "127.0.0.1:7001", "127.0.0.1:8001")
OTHER = Peer("db2", "127.0.0.1:7002", "127.0.0.1:8002")


class FakeNode:
    """A single always-leader member applying commands directly (or a follower of OTHER / of nobody)."""

    def __init__(self) -> None:
        self.self_peer = SELF
        self.members = (SELF, OTHER)
        self.proposal_timeout = 1.0
        self.counters: dict[str, int] = {"proposals": 0}
        self.status = Status(is_leader=True, leader_raft_addr=SELF.raft_addr, has_quorum=True)
        self.journal_syncs = 0
        self.role = "leader"
        self.fail_with: Exception | None = None
        self.kv = KVStateMachine()
        self.lock = threading.Lock()
        self.next_id = 41

    def is_leader(self) -> bool:
        return self.role == "leader"

    def leader(self) -> Peer | None:
        return {"leader": SELF, "follower": OTHER, "orphan": None}[self.role]

    def healthy(self) -> bool:
        return self.role != "orphan"

    def read(self, fn: Any) -> Any:
        with self.lock:
            return fn(self.kv)

    def wait_changed(self, predicate: Any, timeout: float) -> Any:
        return self.read(predicate)

    def propose(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if self.fail_with is not None:
            raise self.fail_with
        self.counters["proposals"] += 1
        with self.lock:
            return self.kv.apply_or_error(command)

    def read_barrier(self, timeout: float | None = None) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def new_lease_id(self) -> int:
        self.next_id += 1
        return self.next_id


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def client(node):
    return create_app(node).test_client()


def is_problem(response, status: int) -> bool:
    return response.status_code == status and response.content_type.startswith("application/problem+json")


def test_happy_path(client):
    assert client.put("/v1/kv//a", json={"value": {"x": 1}}).status_code == 200
    got = client.get("/v1/kv//a")
    assert got.json["key"] == "/a"
    assert got.headers["X-Agenda-Node"] == "db1"
    assert client.get("/v1/kv", query_string={"prefix": "/"}).json["items"][0]["value"] == {"x": 1}
    lease = client.post("/v1/leases", json={"ttl": 5})
    assert lease.status_code == 201
    assert lease.json["id"] == 42


def test_conflict_and_missing(client):
    assert client.put("/v1/kv/a", json={"value": 1, "prev_revision": 0}).status_code == 200
    conflict = client.put("/v1/kv/a", json={"value": 1, "prev_revision": 0})
    assert is_problem(conflict, 409)
    assert conflict.json["mod_revision"] == 1
    assert is_problem(client.get("/v1/kv/nope"), 404)
    assert is_problem(client.delete("/v1/kv/nope"), 404)
    assert is_problem(client.post("/v1/leases/5/keepalive"), 404)
    bad_lease = client.put("/v1/kv/b", json={"value": 1, "lease": 5})
    assert is_problem(bad_lease, 400)
    assert bad_lease.json["field"] == "lease"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("put", "/v1/kv/a", {"data": "{", "content_type": "application/json"}, None),
        ("put", "/v1/kv/a", {"json": {"value": 1, "x": 2}}, "x"),
        ("put", "/v1/kv/a", {"json": {"value": 1, "lease": 1.5}}, "lease"),
        ("put", "/v1/kv/a\x00", {"json": {"value": 1}}, "key"),
        ("get", "/v1/kv/a", {"query_string": {"consistency": "x"}}, "consistency"),
        ("get", "/v1/kv", {"query_string": {"limit": "1e3"}}, "limit"),
        ("get", "/v1/kv", {"query_string": {"pfx": "a"}}, "pfx"),
        ("post", "/v1/txn", {"json": {"compare": [{"key": "a"}]}}, "compare[0]"),
        ("post", "/v1/leases", {"json": {"ttl": -1}}, "ttl"),
        ("post", "/v1/leases/x1/keepalive", {}, "id"),
        ("get", "/v1/watch", {"query_string": {"timeout": "-1"}}, "timeout"),
    ],
)
def test_bad_requests(client, method, path, kwargs, field):
    response = getattr(client, method)(path, **kwargs)
    assert is_problem(response, 400), response.data
    assert response.json.get("field") == field


def test_follower_redirects_and_orphan_is_503(client, node):
    node.role = "follower"
    redirected = client.put("/v1/kv//a?redirect=true", json={"value": 1})
    assert redirected.status_code == 307
    assert redirected.headers["Location"] == "http://127.0.0.1:8002/v1/kv//a"
    # Malformed requests are answered locally, before any routing.
    assert is_problem(client.put("/v1/kv/a?redirect=true", json={"nope": 1}), 400)
    # Stale reads never leave the member.
    assert client.get("/v1/kv/a?consistency=stale&redirect=true").status_code == 404
    # A forwarded request is never forwarded again.
    again = client.put("/v1/kv/a", json={"value": 1}, headers={"X-Agenda-Forwarded": "db3"})
    assert is_problem(again, 503)
    node.role = "orphan"
    orphan = client.put("/v1/kv/a", json={"value": 1})
    assert is_problem(orphan, 503)
    assert orphan.headers["Retry-After"] == "1"
    assert is_problem(client.get("/v1/health"), 503)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LeaderUnknown("x"), 503),
        (OutcomeUnknown("x"), 503),
        (ProposalFailed("x"), 503),
    ],
)
def test_node_errors_become_503_with_retry_after(client, node, error, status):
    node.fail_with = error
    response = client.put("/v1/kv/a", json={"value": 1})
    assert is_problem(response, status)
    assert response.headers["Retry-After"] == "1"
    read = client.get("/v1/kv/a")
    assert is_problem(read, status)


def test_outcome_unknown_is_flagged():
    problem = problem_for_error(OutcomeUnknown("t"))
    assert problem.status == 503
    assert problem.extras["outcome"] == "unknown"


def test_problem_for_error_mapping():
    assert problem_for_error(InvalidArgument("key", "bad")).field == "key"
    assert problem_for_error(Compacted(5)).status == 410
    assert problem_for_error(Compacted(5)).extras["compact_revision"] == 4
    assert problem_for_error(LeaseNotFound(3)).status == 404
    assert problem_for_error(LeaseExists(3)).status == 409
    with pytest.raises(TypeError):
        problem_for_error(RuntimeError("x"))


def test_problem_for_result_mapping():
    assert problem_for_result({"ok": True}) is None
    assert problem_for_result({"ok": False, "error": "conflict", "key": "a", "mod_revision": 2}).status == 409
    assert problem_for_result({"ok": False, "error": "lease_not_found", "lease": 1}).status == 400
    assert problem_for_result({"ok": False, "error": "lease_not_found"}, lease_in_body=False).status == 404
    assert problem_for_result({"ok": False, "error": "weird"}).status == 500


def test_arg_parsers():
    assert parse_consistency({}) == "linearizable"
    assert parse_consistency({"consistency": "stale"}) == "stale"
    assert parse_int_arg({}, "limit") is None
    assert parse_int_arg({"limit": "7"}, "limit") == 7
    for bad in ("-1", "x", "1.5", "", "٣", "9" * 30):
        with pytest.raises(Problem):
            parse_int_arg({"limit": bad}, "limit")
    assert parse_float_arg({}, "timeout", default=3.0, maximum=10) == 3.0
    assert parse_float_arg({"timeout": "0.5"}, "timeout", default=3.0, maximum=10) == 0.5
    for bad in ("nan", "inf", "-1", "11", "soon"):
        with pytest.raises(Problem):
            parse_float_arg({"timeout": bad}, "timeout", default=3.0, maximum=10)


def test_watch_and_compaction(node, client):
    small = KVStateMachine(history_limit=2)
    node.kv = small
    for i in range(5):
        client.put(f"/v1/kv/w{i}", json={"value": i})
    gone = client.get("/v1/watch", query_string={"since": 0, "timeout": 0})
    assert is_problem(gone, 410)
    assert gone.json["compact_revision"] == 3
    recent = client.get("/v1/watch", query_string={"since": 3, "timeout": 0, "prefix": "w"})
    assert [e["kv"]["key"] for e in recent.json["events"]] == ["w3", "w4"]
    assert recent.json["revision"] == 5


def test_a_watch_that_times_out_answers_the_revision_it_looked_at(node, client):
    """A commit landing after the watch's last look but before its answer must not be skipped over.

    The empty answer's revision is where the watcher continues from: it must be the revision the
    events were checked up to, not whatever the member has reached by the time it answers.
    """
    client.put("/v1/kv/w/a", json={"value": 1})
    looked_at = node.kv.revision

    def wait_changed(predicate: Any, timeout: float) -> Any:
        value = node.read(predicate)
        node.propose(put_command("w/late", 2))  # committed between the last probe and the answer
        return value

    node.wait_changed = wait_changed
    empty = client.get("/v1/watch", query_string={"prefix": "w/", "since": looked_at, "timeout": 0})
    assert empty.json == {"events": [], "revision": looked_at}
    assert empty.headers["X-Agenda-Revision"] == str(looked_at)
    del node.wait_changed
    resumed = client.get(
        "/v1/watch", query_string={"prefix": "w/", "since": empty.json["revision"], "timeout": 0}
    )
    assert [(e["kv"]["key"], e["revision"]) for e in resumed.json["events"]] == [("w/late", looked_at + 1)]


def test_a_watch_overtaken_by_the_history_while_waiting_is_410(node, client):
    """History trimmed past the watch's position between two looks (a burst of commits before its thread
    runs again, or a snapshot installed) cannot be answered with events: 410, and the client re-reads."""
    node.kv = KVStateMachine(history_limit=2)
    client.put("/v1/kv/w/a", json={"value": 1})
    since = node.kv.revision
    probes = []

    def wait_changed(predicate: Any, timeout: float) -> Any:
        probes.append(node.read(predicate))  # nothing under the prefix yet
        for i in range(3):
            node.propose(put_command(f"other/{i}", i))
        return node.read(predicate)

    node.wait_changed = wait_changed
    gone = client.get("/v1/watch", query_string={"prefix": "w/", "since": since, "timeout": 5})
    assert probes == [None]
    assert is_problem(gone, 410)
    assert gone.json["compact_revision"] == since + 1
    assert gone.json["oldest_available"] == since + 2


def test_metrics_and_cluster(client):
    client.get("/v1/kv/zz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'agenda_db_is_leader{node="db1"} 1' in text
    assert 'code="404"' in text
    cluster = client.get("/v1/cluster").json
    assert cluster["leader"] == "db1"
    assert [m["id"] for m in cluster["members"]] == ["db1", "db2"]


class _Upstream:
    status_code = 200
    content = b'{"id": 1}'
    headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}


class RecordingForwarder:
    """Stands in for the HTTP clients towards the leader: records what a follower sends on."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def base_url(self, peer: Peer) -> str:
        return f"http://{peer.api_addr}"

    def client(self, _peer: Peer) -> RecordingForwarder:
        return self

    def request(self, method: str, path: str, *, json: Any = None, **_kwargs: Any) -> _Upstream:
        self.sent.append((method, path, json))
        return _Upstream()


@pytest.mark.parametrize(
    ("data", "forwarded"),
    [
        (b"[" * 200_000, None),  # nested far deeper than any parser's recursion: not a 500
        (b'{"a": NaN}', None),  # not JSON, and requests would refuse to encode it again
        (b"{not json", None),
        (b'{"a": 1}', {"a": 1}),
    ],
)
def test_follower_forwards_only_a_parseable_json_body(node, data, forwarded):
    node.role = "follower"
    forwarder = RecordingForwarder()
    client = create_app(node, forwarder).test_client()  # type: ignore[arg-type]
    response = client.post("/v1/leases/7/keepalive", data=data, content_type="application/json")
    assert response.status_code == 200  # the leader's answer, relayed: it ignores a keepalive's body
    assert forwarder.sent == [("POST", "/v1/leases/7/keepalive", forwarded)]
