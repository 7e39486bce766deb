"""Membership change (issue 3) without Raft or network: the replicated directory, the Node glue that
mirrors pysyncobj's membership entries into it, the HTTP endpoints against a fake member, the client."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests

from agenda.common.http import Unavailable
from agenda.db.api import create_app
from agenda.db.api.problems import problem_for_error
from agenda.db.client import DBClient, DBError, DBUnavailable
from agenda.db.errors import (
    InvalidArgument,
    LastMember,
    MemberExists,
    MemberNotFound,
    MembershipChangeInProgress,
    NotLeader,
    ProposalFailed,
)
from agenda.db.node import Node, Status
from agenda.db.peers import Peer
from agenda.db.pysyncobj_adapter import TCPNode
from agenda.db.state import KVStateMachine
from agenda.db.txn import member_add_command, member_remove_command, put_command

A = Peer("a", "10.0.0.1:7000", "10.0.0.1:8000")
B = Peer("b", "10.0.0.2:7000", "10.0.0.2:8000")
C = Peer("c", "10.0.0.3:7000", "10.0.0.3:8000")


def add(peer: Peer) -> dict[str, Any]:
    return member_add_command(peer.node_id, peer.raft_addr, peer.api_addr)


def directory(*peers: Peer) -> KVStateMachine:
    machine = KVStateMachine()
    for peer in peers:
        machine.apply(add(peer))
    return machine


# ------------------------------------------------------------------------------------ state machine


def test_directory_add_remove_and_reads():
    machine = directory(B, A)
    assert machine.members() == [
        {"id": "a", "raft": A.raft_addr, "api": A.api_addr},
        {"id": "b", "raft": B.raft_addr, "api": B.api_addr},
    ]
    assert machine.member("b") == {"id": "b", "raft": B.raft_addr, "api": B.api_addr}
    assert machine.member("zz") is None
    with pytest.raises(MemberNotFound):
        machine.require_member("zz")
    result = machine.apply(member_remove_command(B.raft_addr))
    assert result["removed"] == "b"
    assert [m["id"] for m in result["members"]] == ["a"]
    # Removing an address nobody has is a no-op (a replay may meet changes its seed already reflects).
    assert machine.apply(member_remove_command(B.raft_addr))["removed"] is None


def test_directory_is_invisible_to_the_keyspace():
    machine = KVStateMachine()
    machine.apply(put_command("/k", 1))
    machine.apply(add(A))
    assert machine.revision == 1
    assert [kv["key"] for kv in machine.range()[0]] == ["/k"]
    assert [event["kv"]["key"] for event in machine.events_since(0)] == ["/k"]


def test_an_add_replaces_entries_sharing_the_id_or_an_address():
    machine = directory(A, B)
    moved = machine.apply(member_add_command("a", "10.0.0.9:7000", "10.0.0.9:8000"))
    assert moved["replaced"] == ["a"]
    stolen = machine.apply(member_add_command("x", B.raft_addr, "10.0.0.8:8000"))
    assert stolen["replaced"] == ["b"]
    assert [m["id"] for m in machine.members()] == ["a", "x"]


@pytest.mark.parametrize(
    ("node_id", "raft", "api", "field"),
    [
        ("a", "10.0.0.9:7000", "10.0.0.9:8000", "id"),
        ("x", A.raft_addr, "10.0.0.9:8000", "raft"),
        ("x", A.api_addr, "10.0.0.9:8000", "raft"),  # one namespace for both kinds of address
        ("x", "10.0.0.9:7000", B.api_addr, "api"),
    ],
)
def test_check_member_free_names_the_clashing_field(node_id, raft, api, field):
    with pytest.raises(MemberExists) as info:
        directory(A, B).check_member_free(node_id, raft, api)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({"op": "member_add", "id": "bad id", "raft": "h:1", "api": "h:2"}, "id"),
        ({"op": "member_add", "id": 7, "raft": "h:1", "api": "h:2"}, "id"),
        ({"op": "member_add", "id": "x", "raft": "nohost", "api": "h:2"}, "raft"),
        ({"op": "member_add", "id": "x", "raft": "h:1", "api": "h:99999"}, "api"),
        ({"op": "member_add", "id": "x", "raft": " h:1", "api": "h:2"}, "raft"),
        ({"op": "member_add", "id": "x", "raft": "h:1", "api": "h:1"}, "api"),
        ({"op": "member_add", "id": "x", "raft": "h:1"}, "member_add"),
        ({"op": "member_remove", "raft": "h:1", "id": "x"}, "member_remove"),
    ],
)
def test_malformed_membership_commands(command, field):
    machine = directory(A)
    with pytest.raises(InvalidArgument) as info:
        machine.apply(command)
    assert info.value.field == field
    assert [m["id"] for m in machine.members()] == ["a"]


def test_snapshot_carries_the_directory_and_format_1_keeps_the_seed():
    source = directory(A, B)
    source.apply(put_command("/k", 1))
    restored = directory(C)
    restored.restore(source.snapshot())
    assert restored.members() == source.members()
    assert restored.snapshot() == source.snapshot()

    old = json.loads(source.snapshot())
    old["format"] = 1
    del old["members"]
    seeded = directory(C)
    seeded.restore(json.dumps(old).encode())
    assert seeded.get("/k")["value"] == 1
    assert [m["id"] for m in seeded.members()] == ["c"]


@pytest.mark.parametrize(
    "members",
    [
        [["b", B.raft_addr, B.api_addr], ["a", A.raft_addr, A.api_addr]],  # not sorted
        [["a", A.raft_addr, A.api_addr], ["b", A.raft_addr, B.api_addr]],  # shared address
        [["a", "nohost", A.api_addr]],
    ],
)
def test_bad_directory_in_a_snapshot_is_rejected(members):
    doc = json.loads(directory(A).snapshot())
    doc["members"] = members
    target = directory(C)
    with pytest.raises(InvalidArgument) as info:
        target.restore(json.dumps(doc).encode())
    assert info.value.field.startswith("snapshot")
    assert [m["id"] for m in target.members()] == ["c"]


# --------------------------------------------------------------------------------- the Node glue


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(A, [C, B], tmp_path)  # never started: only the directory side is exercised


def test_directory_is_seeded_from_the_static_configuration(node):
    assert [p.node_id for p in node.members] == ["a", "b", "c"]
    assert node.members[1] == B


def test_membership_commands_cannot_be_proposed(node):
    with pytest.raises(InvalidArgument) as info:
        node.propose(add(Peer("d", "10.0.0.4:7000", "10.0.0.4:8000")))
    assert info.value.field == "op"


def test_membership_entries_edit_the_directory(node):
    d = Peer("d", "10.0.0.4:7000", "10.0.0.4:8000")
    entry = TCPNode(d.raft_addr, node_id=d.node_id, api_addr=d.api_addr)
    assert node._membership_entry_allowed(["add", d.raft_addr, entry])
    result = node._apply_membership_entry(["add", d.raft_addr, entry])
    assert result is not None
    assert [m["id"] for m in result["members"]] == ["a", "b", "c", "d"]
    assert node.members[-1] == d
    # Once d is a member, the leader's last check refuses to add it (or its addresses) again.
    assert not node._membership_entry_allowed(["add", d.raft_addr, entry])
    node._apply_membership_entry(["rem", B.raft_addr, TCPNode(B.raft_addr)])
    assert [p.node_id for p in node.members] == ["a", "c", "d"]
    assert node._membership_entry_allowed(["rem", B.raft_addr, TCPNode(B.raft_addr)])


def test_foreign_membership_entries_leave_the_directory_alone(node):
    # An entry without our attributes (pysyncobj's own admin tool) changes Raft but not the directory.
    assert node._apply_membership_entry(["add", "10.0.0.5:7000", TCPNode("10.0.0.5:7000")]) is None
    assert not node._membership_entry_allowed(["add", "10.0.0.5:7000", TCPNode("10.0.0.5:7000")])
    assert [p.node_id for p in node.members] == ["a", "b", "c"]


def test_membership_errors_map_to_problems():
    exists = problem_for_error(MemberExists("raft", "taken", "b"))
    assert (exists.status, exists.field, exists.extras["member"]) == (409, "raft", "b")
    assert problem_for_error(MemberNotFound("x")).status == 404
    last = problem_for_error(LastMember("alone"))
    assert (last.status, last.field) == (409, "id")
    busy = problem_for_error(MembershipChangeInProgress("busy"))
    assert busy.status == 503
    assert busy.retry_after == 1
    assert busy.type.endswith("membership-change-in-progress")


# ------------------------------------------------------------------------------------ HTTP endpoints


class FakeMember:
    """A member whose membership calls edit a directory directly (leader "a" unless told otherwise)."""

    def __init__(self) -> None:
        self.self_peer = A
        self.proposal_timeout = 1.0
        self.counters: dict[str, int] = {}
        self.status = Status(is_leader=True, leader_raft_addr=A.raft_addr, has_quorum=True)
        self.journal_syncs = 0
        self.kv = directory(A, B)
        self.lock = threading.Lock()
        self.leading = A
        self.fail_with: Exception | None = None
        self.transfers = 0

    @property
    def members(self) -> tuple[Peer, ...]:
        return tuple(Peer(m["id"], m["raft"], m["api"]) for m in self.kv.members())

    def is_leader(self) -> bool:
        return self.leading == A

    def leader(self) -> Peer | None:
        return self.leading

    def healthy(self) -> bool:
        return True

    def read(self, fn: Any) -> Any:
        with self.lock:
            return fn(self.kv)

    def add_member(self, peer: Peer, timeout: float | None = None) -> tuple[Peer, ...]:
        if self.fail_with is not None:
            raise self.fail_with
        self.read(lambda kv: kv.check_member_free(peer.node_id, peer.raft_addr, peer.api_addr))
        self.kv.apply(add(peer))
        return self.members

    def remove_member(self, node_id: str, timeout: float | None = None) -> tuple[Peer, ...]:
        member = self.read(lambda kv: kv.require_member(node_id))
        if member["id"] == self.self_peer.node_id:
            raise NotLeader("leads")
        self.kv.apply(member_remove_command(member["raft"]))
        return self.members

    def transfer_leadership(self, timeout: float | None = None) -> Peer:
        self.transfers += 1
        if len(self.kv.members()) == 1:
            raise LastMember("alone")
        self.leading = B
        return B


def answer(status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


class FakeForwarder:
    """Answers a would-be member's GET /v1/cluster from ``running``; records forwarded requests."""

    scheme = "http"
    timeout = (1.0, 1.0)

    def __init__(self) -> None:
        self.running: dict[str, dict[str, Any]] = {}
        self.forwarded: list[tuple[str, str, str, dict[str, str]]] = []

    def base_url(self, peer: Peer) -> str:
        return f"http://{peer.api_addr}"

    def client(self, peer: Peer) -> Any:
        forwarder = self

        class Client:
            def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
                if method == "GET" and path == "/v1/cluster":
                    if peer.api_addr not in forwarder.running:
                        raise Unavailable("connection refused", attempts=1)
                    return answer(200, forwarder.running[peer.api_addr])
                forwarder.forwarded.append((peer.node_id, method, path, dict(kwargs.get("headers") or {})))
                return answer(200, {"members": []})

        return Client()

    def close(self) -> None:
        pass


D = Peer("d", "10.0.0.4:7000", "10.0.0.4:8000")
D_BODY = {"id": D.node_id, "raft": D.raft_addr, "api": D.api_addr}


@pytest.fixture
def member() -> FakeMember:
    return FakeMember()


@pytest.fixture
def forwarder() -> FakeForwarder:
    fake = FakeForwarder()
    fake.running[D.api_addr] = {"id": "d", "members": [{"id": "d", "raft": D.raft_addr, "api": D.api_addr}]}
    return fake


@pytest.fixture
def client(member, forwarder):
    return create_app(member, forwarder).test_client()


def is_problem(response: Any, status: int) -> bool:
    return response.status_code == status and response.content_type.startswith("application/problem+json")


def test_add_member_answers_201_with_the_members(client):
    response = client.post("/v1/cluster/members", json=D_BODY)
    assert response.status_code == 201
    assert [m["id"] for m in response.json["members"]] == ["a", "b", "d"]
    assert set(response.json["members"][0]) == {"id", "raft", "api", "reachable"}
    assert [m["id"] for m in client.get("/v1/cluster").json["members"]] == ["a", "b", "d"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**D_BODY, "extra": 1}, 400, "extra"),
        ({"id": "d", "raft": D.raft_addr}, 400, "api"),
        ({**D_BODY, "id": "d d"}, 400, "id"),
        ({**D_BODY, "raft": 7000}, 400, "raft"),
        ({**D_BODY, "api": "[::1"}, 400, "api"),
        ({**D_BODY, "id": "b"}, 409, "id"),
        ({**D_BODY, "raft": B.raft_addr}, 409, "raft"),
        ({**D_BODY, "api": A.api_addr}, 409, "api"),
    ],
)
def test_bad_additions(client, body, status, field):
    response = client.post("/v1/cluster/members", json=body)
    assert is_problem(response, status), response.json
    assert response.json["field"] == field


def test_the_newcomer_must_answer_as_described(client, forwarder):
    del forwarder.running[D.api_addr]
    unreachable = client.post("/v1/cluster/members", json=D_BODY)
    assert is_problem(unreachable, 409)
    assert unreachable.json["field"] == "api"
    assert "start it first" in unreachable.json["detail"]
    forwarder.running[D.api_addr] = {"id": "e", "members": []}
    assert client.post("/v1/cluster/members", json=D_BODY).json["field"] == "id"
    forwarder.running[D.api_addr] = {"id": "d", "members": [{"id": "d", "raft": "10.0.0.4:7999"}]}
    assert client.post("/v1/cluster/members", json=D_BODY).json["field"] == "raft"


def test_a_pending_change_is_503_with_retry_after(client, member):
    member.fail_with = MembershipChangeInProgress("busy")
    response = client.post("/v1/cluster/members", json=D_BODY)
    assert is_problem(response, 503)
    assert response.headers["Retry-After"] == "1"
    member.fail_with = ProposalFailed("nothing committed")
    assert is_problem(client.post("/v1/cluster/members", json=D_BODY), 503)


def test_remove_member(client):
    removed = client.delete("/v1/cluster/members/b")
    assert removed.status_code == 200
    assert [m["id"] for m in removed.json["members"]] == ["a"]
    missing = client.delete("/v1/cluster/members/b")
    assert is_problem(missing, 404)
    assert missing.json["member"] == "b"
    assert client.delete("/v1/cluster/members/b%20b").json["field"] == "id"


def test_removing_the_leader_hands_over_then_forwards(client, member, forwarder):
    response = client.delete("/v1/cluster/members/a")
    assert response.status_code == 200
    assert member.transfers == 1
    ((target, method, path, headers),) = forwarder.forwarded
    assert (target, method, path) == ("b", "DELETE", "/v1/cluster/members/a")
    assert headers["X-Agenda-Forwarded"] == "a"


def test_transfer_leadership_moves_it_off_the_named_leader_once(client, member):
    moved = client.post("/v1/cluster/transfer-leadership", json={"from": "a"})
    assert moved.status_code == 200
    assert moved.json == {"leader": "b", "transferred": True}
    assert member.transfers == 1


def test_transfer_leadership_from_a_member_that_does_not_lead_changes_nothing(client, member, forwarder):
    # "a" leads; asking to move leadership off "b" (a follower) is a no-op, so the call can be repeated.
    assert client.post("/v1/cluster/transfer-leadership", json={"from": "b"}).json == {
        "leader": "a",
        "transferred": False,
    }
    assert member.transfers == 0
    # Asked at a follower, the request goes to the leader.
    member.leading = B
    assert client.post("/v1/cluster/transfer-leadership", json={"from": "b"}).status_code == 200
    assert forwarder.forwarded[-1][:3] == ("b", "POST", "/v1/cluster/transfer-leadership")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "from"),
        ({"from": 7}, 400, "from"),
        ({"from": "b b"}, 400, "from"),
        ({"from": "zz"}, 404, None),
    ],
)
def test_bad_transfer_requests(client, member, body, status, field):
    response = client.post("/v1/cluster/transfer-leadership", json=body)
    assert is_problem(response, status)
    if field:
        assert response.json["field"] == field
    else:
        assert response.json["member"] == "zz"
    assert member.transfers == 0


def test_the_only_member_cannot_hand_over_leadership(client, member):
    member.kv.apply(member_remove_command(B.raft_addr))
    assert is_problem(client.post("/v1/cluster/transfer-leadership", json={"from": "a"}), 409)


def test_the_last_member_cannot_be_removed(client, member):
    member.kv.apply(member_remove_command(B.raft_addr))
    response = client.delete("/v1/cluster/members/a")
    assert is_problem(response, 409)
    assert response.json["field"] == "id"


def test_followers_route_membership_changes(client, member, forwarder):
    member.leading = B
    redirected = client.post("/v1/cluster/members?redirect=true", json=D_BODY)
    assert redirected.status_code == 307
    assert redirected.headers["Location"] == f"http://{B.api_addr}/v1/cluster/members"
    # Malformed requests are answered where they arrive.
    assert is_problem(client.post("/v1/cluster/members", json={"id": "d"}), 400)
    assert client.delete("/v1/cluster/members/a").status_code == 200
    assert forwarder.forwarded[-1][:3] == ("b", "DELETE", "/v1/cluster/members/a")


# -------------------------------------------------------------------------------------------- client


class ScriptedHttp:
    """HttpClient stand-in: answers (or raises) in order and records the calls."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, bool | None]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.calls.append((method, path, kwargs.get("idempotent")))
        item = self.answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        pass


LISTED = {"members": [{"id": "d", "raft": D.raft_addr, "api": D.api_addr, "reachable": False}]}
LOST = Unavailable("read timeout", attempts=1)


def test_add_member_checks_membership_instead_of_resending():
    http = ScriptedHttp(LOST, answer(200, LISTED))
    members = DBClient(["http://x"], http=http).add_member("d", D.raft_addr, D.api_addr)
    assert [m["id"] for m in members] == ["d"]
    assert http.calls == [("POST", "/v1/cluster/members", False), ("GET", "/v1/cluster", None)]

    http = ScriptedHttp(LOST, answer(200, {"members": []}))
    with pytest.raises(DBUnavailable) as info:
        DBClient(["http://x"], http=http).add_member("d", D.raft_addr, D.api_addr)
    assert info.value.outcome_unknown


def test_remove_member_checks_membership_instead_of_resending():
    http = ScriptedHttp(LOST, answer(200, {"members": []}))
    assert DBClient(["http://x"], http=http).remove_member("d") == []
    assert http.calls[0] == ("DELETE", "/v1/cluster/members/d", False)

    http = ScriptedHttp(LOST, answer(200, LISTED))
    with pytest.raises(DBUnavailable):
        DBClient(["http://x"], http=http).remove_member("d")
    http = ScriptedHttp(answer(404, {"status": 404, "member": "d"}))
    with pytest.raises(DBError) as info:
        DBClient(["http://x"], http=http).remove_member("d")
    assert info.value.status == 404
