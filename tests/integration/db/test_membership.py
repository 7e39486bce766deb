"""Runtime membership change (issue 3) on real clusters of their own (the session `db_cluster` is untouched).

Processes: three members, a fourth is started and added, the leader is removed, then every member is
restarted with its original --peer flags. In process: a lone member shows the one-change-at-a-time and
last-member rules, and a three-member cluster shows a change surviving log compaction, a snapshot sent to
the newcomer and a restart of every member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from agenda.db.client import DBClient, DBError, DBUnavailable
from agenda.db.dump import decode_dump
from agenda.db.errors import (
    LastMember,
    MemberExists,
    MemberNotFound,
    NodeError,
    OutcomeUnknown,
    ProposalFailed,
)
from agenda.db.node import DUMP_FILE, Node, RaftTimers
from agenda.db.peers import Peer
from agenda.db.pysyncobj_adapter import FAIL_REASON, TCPNode
from agenda.db.state import KVStateMachine
from agenda.db.txn import put_command

PROBLEM = "application/problem+json"
SECRET = "membership-test-secret"


@pytest.fixture
def trio(make_cluster: Callable[[int], Any]) -> Any:
    return make_cluster(3)


def member_ids(cluster: Any, node_id: str) -> list[str]:
    return [
        m["id"] for m in cluster.request(node_id, "GET", "/v1/cluster", client_timeout=2.0).json()["members"]
    ]


def served(
    cluster: Any, wait: Callable[..., Any], node_id: str, method: str, path: str, **kwargs: Any
) -> Any:
    """The member's first answer that is not a 503: an election (a busy machine can cause one) is waited out.

    Only for requests that are safe to send again, or whose repetition the caller recognises.
    """

    def attempt() -> tuple[Any] | None:
        response = cluster.request(node_id, method, path, client_timeout=15.0, **kwargs)
        return None if response.status_code == 503 else (response,)  # a Response is falsy from 400 on

    return wait(attempt, 60, 0.2, f"{method} {path} via {node_id} to be served")[0]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    return response.json()


def test_add_remove_and_restart_every_member(trio: Any, wait: Callable[..., Any]) -> None:
    cluster = trio
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    for i in range(5):
        response = served(cluster, wait, follower, "PUT", f"/v1/kv/before/{i}", json={"value": i})
        assert response.status_code == 200, response.text

    # A newcomer started with --peer for every current member answers, but knows no leader yet.
    newcomer = cluster.add_member("db4")
    cluster.start("db4")
    alone = wait(lambda: cluster.request("db4", "GET", "/v1/cluster", client_timeout=1.0).json(), 30)
    assert alone["leader"] is None

    body = {"id": "db4", "raft": newcomer.raft_addr, "api": newcomer.api_addr}
    added = served(cluster, wait, follower, "POST", "/v1/cluster/members", json=body)
    if added.status_code == 409:  # an earlier try went through but its answer was lost (503, outcome unknown)
        assert added.json()["field"] == "id"
    else:
        assert added.status_code == 201, added.text
        assert {m["id"] for m in added.json()["members"]} == {"db1", "db2", "db3", "db4"}

    everyone = ["db1", "db2", "db3", "db4"]
    for node_id in everyone:
        wait(lambda n=node_id: "db4" in member_ids(cluster, n), 30, message=f"{node_id} to list db4")
    # It received the data written before it joined, and serves linearizable reads.
    wait(
        lambda: (
            cluster.request("db4", "GET", "/v1/kv/before/4", params={"consistency": "stale"}).status_code
            == 200
        ),
        30,
        message="db4 to catch up",
    )
    read = served(cluster, wait, "db4", "GET", "/v1/kv/before/3")
    assert read.status_code == 200
    assert read.json()["value"] == 3
    again = served(cluster, wait, leader, "POST", "/v1/cluster/members", json=body)
    assert problem(again, 409)["field"] == "id"

    # Removing the leader: it hands leadership over, the new leader removes it; then it is stopped.
    leader = cluster.leader(everyone)
    survivors = [n for n in everyone if n != leader]
    with DBClient([cluster.url(n) for n in survivors], timeout=(1.0, 15.0)) as client:

        def remove_leader() -> list[dict[str, Any]] | None:
            try:
                return client.remove_member(leader)
            except DBUnavailable:  # an election meanwhile: nothing was removed, or it shows in cluster()
                return None
            except DBError as exc:
                if exc.status != 404:  # 404: an earlier try went through, its answer was lost
                    raise
                return list(client.cluster()["members"])

        members = wait(remove_leader, 60, 0.2, "the leader's removal")
    assert leader not in {m["id"] for m in members}
    cluster.kill(leader)
    write = served(cluster, wait, "db4", "PUT", "/v1/kv/after-removal", json={"value": True})
    assert write.status_code == 200, write.text
    for node_id in survivors:
        wait(lambda n=node_id: sorted(member_ids(cluster, n)) == survivors, 30, message=f"{node_id} to drop")

    # Every member restarts with its original --peer flags (which still name the removed member, and
    # for db1-db3 not db4): the replicated membership wins.
    for node_id in survivors:
        cluster.kill(node_id)
    for node_id in survivors:
        cluster.start(node_id)
    cluster.wait_healthy(survivors, timeout=60)
    cluster.leader(survivors)
    for node_id in survivors:
        assert sorted(member_ids(cluster, node_id)) == survivors
        read = served(cluster, wait, node_id, "GET", "/v1/kv/after-removal")
        assert read.status_code == 200
        assert read.json()["value"] is True
    write = served(cluster, wait, survivors[0], "PUT", "/v1/kv/after-restart", json={"value": 1})
    assert write.status_code == 200, write.text


def test_leadership_is_handed_over_before_a_restart(trio: Any, wait: Callable[..., Any]) -> None:
    """What a rolling deploy does before restarting the leader: asked at a follower to move leadership
    off the leader, the cluster elects a caught-up follower and answers once it leads; asked again, it
    changes nothing. The old leader, killed and restarted, rejoins as a follower."""
    cluster = trio
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    before = served(cluster, wait, follower, "PUT", "/v1/kv/handover/before", json={"value": 1})
    assert before.status_code == 200

    moved = served(cluster, wait, follower, "POST", "/v1/cluster/transfer-leadership", json={"from": leader})
    assert moved.status_code == 200, moved.text
    if moved.json()["transferred"] is False:  # an election meanwhile already moved it: still not the leader
        assert moved.json()["leader"] != leader
    successor = moved.json()["leader"]
    assert successor != leader
    for node_id in cluster.members:
        wait(
            lambda n=node_id: (
                cluster.request(n, "GET", "/v1/cluster", client_timeout=2.0).json()["leader"] == successor
            ),
            30,
            message=f"{node_id} to follow {successor}",
        )
    again = served(cluster, wait, leader, "POST", "/v1/cluster/transfer-leadership", json={"from": leader})
    assert again.json() == {"leader": successor, "transferred": False}

    # Restarting the old leader now is a follower's restart: writes go on through the others.
    cluster.kill(leader)
    with DBClient([cluster.url(n) for n in cluster.members if n != leader], timeout=(1.0, 15.0)) as client:
        assert client.put("handover/during", 2) > 0
    cluster.start(leader)
    cluster.wait_healthy(list(cluster.members), timeout=60)
    assert served(cluster, wait, leader, "GET", "/v1/kv/handover/during").json()["value"] == 2


def test_bad_membership_requests_are_problems(trio: Any, wait: Callable[..., Any]) -> None:
    cluster = trio
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    db2 = cluster.members["db2"]
    spare = cluster.add_member("db9")  # defined, never started: nothing answers at its addresses
    spare_raft, spare_api = spare.raft_addr, spare.api_addr
    cases = [
        ({"id": "db9", "raft": spare_raft, "api": spare_api, "extra": 1}, 400, "extra"),
        ({"id": "db9", "raft": spare_raft}, 400, "api"),
        ({"id": "bad id", "raft": spare_raft, "api": spare_api}, 400, "id"),
        ({"id": "db9", "raft": "nohost", "api": spare_api}, 400, "raft"),
        ({"id": "db9", "raft": spare_raft, "api": spare_raft}, 400, "api"),
        ({"id": "db2", "raft": spare_raft, "api": spare_api}, 409, "id"),
        ({"id": "db9", "raft": db2.raft_addr, "api": spare_api}, 409, "raft"),
        ({"id": "db9", "raft": spare_raft, "api": db2.api_addr}, 409, "api"),
        # Nothing runs there: adding it would count a voter that never answers.
        ({"id": "db9", "raft": spare_raft, "api": spare_api}, 409, "api"),
    ]
    for body, status, field in cases:
        for node_id in (follower, leader):
            response = served(cluster, wait, node_id, "POST", "/v1/cluster/members", json=body)
            assert problem(response, status)["field"] == field, (body, response.text)
    missing = problem(served(cluster, wait, follower, "DELETE", "/v1/cluster/members/db9"), 404)
    assert missing["member"] == "db9"
    bad = problem(cluster.request(follower, "DELETE", "/v1/cluster/members/" + quote("bad id!")), 400)
    assert bad["field"] == "id"
    redirected = requests.delete(
        cluster.url(follower) + "/v1/cluster/members/db9",
        params={"redirect": "true"},
        allow_redirects=False,
        timeout=8,
    )
    assert redirected.status_code == 307
    assert redirected.headers["Location"] == f"{cluster.url(leader)}/v1/cluster/members/db9"
    with DBClient([cluster.url(follower)]) as client:
        with pytest.raises(DBError) as info:
            client.remove_member("db9")
        assert info.value.status == 404
    assert sorted(member_ids(cluster, leader)) == ["db1", "db2", "db3"]


# ------------------------------------------------------------------------------------------ in process


class InProcess:
    """Nodes of one cluster inside the test process; every node started is stopped at teardown."""

    def __init__(self, root: Path, ports: Callable[[int], list[int]]) -> None:
        self.root = root
        self.ports = ports
        self.peers: dict[str, Peer] = {}
        self.nodes: dict[str, Node] = {}

    def define(self, *node_ids: str) -> None:
        """Give each id free addresses; Raft addresses ascend (as strings) in the order given."""
        numbers = self.ports(2 * len(node_ids))
        # pysyncobj dials only members whose address sorts below its own: the last id dials all the others.
        rafts = sorted(f"127.0.0.1:{port}" for port in numbers[::2])
        for node_id, raft, api_port in zip(node_ids, rafts, numbers[1::2], strict=True):
            self.peers[node_id] = Peer(node_id, raft, f"127.0.0.1:{api_port}")

    def start(self, node_id: str, peer_ids: list[str], timers: RaftTimers | None = None) -> Node:
        node = Node(
            self.peers[node_id],
            [self.peers[p] for p in peer_ids],
            self.root / node_id,
            cluster_secret=SECRET,
            fsync=False,
            timers=timers,
        )
        node.start()
        self.nodes[node_id] = node
        return node

    def stop(self, node_id: str) -> None:
        self.nodes.pop(node_id).stop()

    def on_leader(self, wait: Callable[..., Any], action: Callable[[Node], Any]) -> Any:
        """``action(leader)``, tried again on whoever leads after an election (a busy machine can cause one).

        ``action`` must be safe to repeat: an attempt whose answer was lost may have taken effect.
        """

        def attempt() -> tuple[Any] | None:
            leader = next((n for n in self.nodes.values() if n.is_leader()), None)
            if leader is None:
                return None
            try:
                return (action(leader),)
            except (NodeError, MemberExists, MemberNotFound):  # the last two: a lost answer, look again
                return None

        return wait(attempt, 60, 0.05, "the leader to do it")[0]

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.stop(node_id)


@pytest.fixture
def in_process(tmp_path: Path, ports: Callable[[int], list[int]]) -> Iterator[InProcess]:
    cluster = InProcess(tmp_path, ports)
    try:
        yield cluster
    finally:
        cluster.close()


def test_one_change_at_a_time_and_the_last_member(in_process: InProcess, wait: Callable[..., Any]) -> None:
    in_process.define("solo", "ghost", "other")
    # A leader normally steps down a second after losing its majority; this one must stay to be asked twice.
    solo = in_process.start("solo", [], RaftTimers(leader_fallback_timeout=60.0))
    wait(solo.is_leader, 30, message="the lone member to lead")
    with pytest.raises(LastMember):
        solo.remove_member("solo")
    with pytest.raises(LastMember):
        solo.transfer_leadership()
    # "ghost" never runs: with two voters the change needs its acknowledgement, so it stays pending...
    with pytest.raises(OutcomeUnknown):
        solo.add_member(in_process.peers["ghost"], timeout=1.0)
    # ...so nothing commits, not even the no-op add_member starts with: nothing else is changed...
    with pytest.raises(ProposalFailed):
        solo.add_member(in_process.peers["other"], timeout=1.0)
    # ...and pysyncobj itself, which would append a second change meanwhile, is made to refuse it.
    refused = []
    other = in_process.peers["other"]
    entry = TCPNode(
        other.raft_addr, node_id=other.node_id, api_addr=other.api_addr
    )  # as add_member builds it
    solo._raft.addNodeToCluster(entry, callback=lambda _result, error: refused.append(error))
    assert wait(lambda: refused, 10, message="pysyncobj's answer") == [FAIL_REASON.REQUEST_DENIED]
    assert [p.node_id for p in solo.members] == ["solo"]


def test_change_survives_compaction_snapshot_and_restart(
    in_process: InProcess, wait: Callable[..., Any]
) -> None:
    in_process.define("a", "b", "c", "d")
    original = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    for node_id, peers in original.items():
        in_process.start(node_id, peers)
    for i in range(20):
        assert in_process.on_leader(wait, lambda n, i=i: n.propose(put_command(f"/k/{i}", i)))["ok"]
    compact_all(in_process, wait)

    # The newcomer (it dials the others, see define) is hung up on until it is added, and never campaigns
    # meanwhile (its term stays 0; pysyncobj alone would count each short-lived link as a connection)...
    newcomer = in_process.start("d", ["a", "b", "c"])
    wait(lambda: newcomer.counters["raft_links_refused"] >= 12, 30, message="members to hang up on d")
    assert newcomer.status.term == 0
    assert newcomer.leader() is None

    # ...and, the leader's log being compacted, catches up from a snapshot.
    def add_d(leader: Node) -> tuple[Peer, ...]:
        if any(p.node_id == "d" for p in leader.members):
            return leader.members
        return leader.add_member(in_process.peers["d"])

    assert [p.node_id for p in in_process.on_leader(wait, add_d)] == ["a", "b", "c", "d"]
    wait(lambda: newcomer.read(lambda kv: kv.get("/k/19")), 30, message="d to receive the data")
    assert (in_process.root / "d" / DUMP_FILE).exists()  # installing the leader's snapshot wrote it
    wait(lambda: [p.node_id for p in newcomer.members] == ["a", "b", "c", "d"], 30, message="d's directory")

    victim = next(n for n in ("a", "b", "c") if not in_process.nodes[n].is_leader())

    def remove_victim(leader: Node) -> tuple[Peer, ...]:
        if all(p.node_id != victim for p in leader.members):
            return leader.members
        if leader.self_peer.node_id == victim:  # it was elected meanwhile
            leader.transfer_leadership()
        return leader.remove_member(victim)  # NotLeader after a transfer: tried again on the new leader

    in_process.on_leader(wait, remove_victim)
    in_process.stop(victim)
    survivors = sorted(set("abcd") - {victim})
    assert in_process.on_leader(wait, lambda n: n.propose(put_command("/after", True)))["ok"]
    for node_id in survivors:
        node = in_process.nodes[node_id]
        wait(lambda n=node: [p.node_id for p in n.members] == survivors, 30, message=f"{node_id} to drop")
        wait(lambda n=node: n.read(lambda kv: kv.get("/after")), 30, message=f"{node_id} to apply /after")
    compact_all(in_process, wait, expect_cluster={in_process.peers[n].raft_addr for n in survivors})

    for node_id in survivors:
        in_process.stop(node_id)
    for node_id in survivors:
        in_process.start(node_id, original.get(node_id, ["a", "b", "c"]))

    def read_after(leader: Node) -> dict[str, Any] | None:
        leader.read_barrier()
        return leader.read(lambda kv: kv.get("/after"))

    assert in_process.on_leader(wait, read_after)["value"] is True
    expected = {in_process.peers[n].raft_addr for n in survivors}
    for node_id in survivors:
        node = in_process.nodes[node_id]
        assert [p.node_id for p in node.members] == survivors
        wait(lambda n=node: n.healthy(), 30, message=f"{node_id} to be healthy")
        voters = {getattr(other, "address", None) for other in node._raft.otherNodes}
        assert voters == expected - {node.self_peer.raft_addr}


def compact_all(
    in_process: InProcess, wait: Callable[..., Any], expect_cluster: set[str] | None = None
) -> None:
    """Force log compaction on every running node and wait until its dump holds its current directory."""
    for node_id, node in in_process.nodes.items():
        dump = in_process.root / node_id / DUMP_FILE
        before = dump.stat().st_mtime_ns if dump.exists() else None
        wanted = node.read(lambda kv: kv.members())
        node._raft.forceLogCompaction()

        def written(dump: Path = dump, before: int | None = before, wanted: list[Any] = wanted) -> bool:
            if not dump.exists() or dump.stat().st_mtime_ns == before:
                return False
            (_last, _prev, cluster), snapshot = decode_dump(dump.read_bytes())
            members = KVStateMachine.from_snapshot(snapshot).members()
            return members == wanted and (expect_cluster is None or cluster == expect_cluster)

        wait(written, 30, 0.05, f"{node_id}'s dump")
