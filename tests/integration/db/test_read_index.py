"""ReadIndex on in-process members over loopback: confirmed by heartbeats, and the fallback to the log
when followers do not echo the stamps (members of an older version during a rolling upgrade)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agenda.db.node import Node
from agenda.db.peers import Peer
from agenda.db.txn import put_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def trio(tmp_path, wait) -> Iterator[list[Node]]:
    peers = [
        Peer(name, f"127.0.0.1:{free_port()}", f"127.0.0.1:{index + 1}") for index, name in enumerate("abc")
    ]
    nodes = [
        Node(
            peer,
            [p for p in peers if p is not peer],
            tmp_path / peer.node_id,
            cluster_secret="s",
            fsync=False,
        )
        for peer in peers
    ]
    for node in nodes:
        node.start()
    try:
        wait(lambda: sum(n.is_leader() for n in nodes) == 1, 15, message="a leader")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def roles(nodes: list[Node]) -> tuple[Node, list[Node]]:
    leader = next(n for n in nodes if n.is_leader())
    return leader, [n for n in nodes if n is not leader]


def as_older_version(follower: Node) -> None:
    """The follower's transport hands every message to pysyncobj without echoing a stamp."""
    transport = follower._transport
    assert transport is not None
    transport.message_received = transport.deliver  # type: ignore[method-assign]


def fresh_reads(leader: Node, count: int) -> None:
    for number in range(count):
        leader.propose(put_command("/ri", number))
        leader.read_barrier()
        assert leader.read(lambda kv: kv.get("/ri"))["value"] == number


def test_reads_are_confirmed_by_heartbeats_without_a_log_entry(trio, wait) -> None:
    leader, _ = roles(trio)
    wait(lambda: len(leader._transport.acked) == 2, 10, message="both followers to echo a stamp")
    fresh_reads(leader, 1)
    rounds, proposals = leader.counters["read_index_rounds"], leader.counters["proposals"]
    commit = leader.status.commit_index
    for _ in range(10):
        leader.read_barrier()
    assert leader.counters["read_index_rounds"] - rounds == 10
    assert leader.counters["proposals"] == proposals
    assert leader.status.commit_index == commit


def test_one_echoing_follower_of_two_is_a_majority(trio, wait) -> None:
    leader, (older, _) = roles(trio)
    as_older_version(older)
    wait(lambda: len(leader._transport.acked) == 1, 10, message="the older follower to stop counting")
    rounds, fallbacks = leader.counters["read_index_rounds"], leader.counters["read_index_fallbacks"]
    fresh_reads(leader, 5)
    assert leader.counters["read_index_rounds"] - rounds == 5
    assert leader.counters["read_index_fallbacks"] == fallbacks


def test_followers_that_stop_echoing_are_noticed_at_their_next_answer(trio, wait) -> None:
    leader, followers = roles(trio)
    wait(lambda: len(leader._transport.acked) == 2, 10, message="both followers to echo a stamp")
    for follower in followers:
        as_older_version(follower)
    wait(lambda: not leader._transport.acked, 5, message="the leader to notice answers without a stamp")
    rounds, fallbacks = leader.counters["read_index_rounds"], leader.counters["read_index_fallbacks"]
    fresh_reads(leader, 3)
    assert leader.counters["read_index_rounds"] == rounds  # straight to the log, without the wait
    assert leader.counters["read_index_fallbacks"] == fallbacks
