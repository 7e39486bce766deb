"""Gossip agents on real UDP and TCP sockets on loopback: join, crash detection, leave, rejoin, bad packets.

The timers are memberlist's scaled down five times (probe every 200 ms), so a test takes seconds; the
protocol's timing at the real timers is the simulation's and the benchmark's business, not a test's.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agenda.gossip.agent import Agent, parse_addr
from agenda.gossip.config import Config
from agenda.gossip.keyring import Keyring
from agenda.gossip.member import Meta, Status
from agenda.gossip.protocol import Node

from ..conftest import wait_until

FAST = Config(
    probe_interval=0.2,
    probe_timeout=0.1,
    gossip_interval=0.04,
    push_pull_interval=2.0,
    seed_retry_interval=0.5,
    leave_timeout=1.0,
)
KEY = os.urandom(32)


@dataclass
class Running:
    name: str
    agent: Agent
    node: Node

    def statuses(self) -> dict[str, Status]:
        return {name: m.status for name, m in self.agent.members.items()}


def start(
    name: str, seeds: list[str], *, key: bytes = KEY, incarnation: int = 0, bind: str = "127.0.0.1:0"
) -> Running:
    agent = Agent(bind)
    node = Node(
        name,
        agent.address,
        Keyring([key], label="test"),
        wall=lambda _now: time.time(),
        meta=Meta(service="users", api_url=f"https://{name}.test:7200", version="1"),
        config=FAST,
        incarnation=incarnation,
    )
    agent.start(node, seeds)
    return Running(name, agent, node)


@pytest.fixture
def cluster() -> Iterator[list[Running]]:
    first = start("a", [])
    members = [first, start("b", [first.agent.address]), start("c", [first.agent.address])]
    try:
        wait_until(
            lambda: all(m.statuses() == dict.fromkeys("abc", Status.ALIVE) for m in members),
            10,
            message="every view to hold a, b and c alive",
        )
        yield members
    finally:
        for member in members:
            member.agent.stop()


def test_a_crashed_member_is_declared_dead_by_every_other_view(cluster: list[Running]) -> None:
    a, b, c = cluster
    crashed = time.monotonic()
    c.agent.stop()  # no leave: its sockets close, probes go unanswered
    wait_until(
        lambda: a.statuses()["c"] is Status.DEAD and b.statuses()["c"] is Status.DEAD,
        15,
        message="c dead in a's and b's views",
    )
    print(f"crash detected by both views in {time.monotonic() - crashed:.2f} s")
    assert a.statuses()["b"] is Status.ALIVE
    assert b.statuses()["a"] is Status.ALIVE


def test_a_member_that_leaves_is_left_everywhere_at_once_and_can_come_back(cluster: list[Running]) -> None:
    a, b, c = cluster
    address = c.agent.address
    assert c.agent.leave(timeout=2.0)
    c.agent.stop()
    wait_until(
        lambda: a.statuses()["c"] is Status.LEFT and b.statuses()["c"] is Status.LEFT,
        2.0,  # well inside a probe round and a suspicion: the leave is gossiped, not detected
        message="c left in a's and b's views",
    )
    # Back at the same address, as after a restart: a higher incarnation outbids its tombstone.
    again = start("c", [a.agent.address], incarnation=int(time.time()), bind=address)
    cluster[2] = again
    wait_until(
        lambda: a.statuses()["c"] is Status.ALIVE and b.statuses()["c"] is Status.ALIVE,
        10,
        message="c alive again",
    )


def test_a_draining_state_reaches_every_view_while_the_member_stays_alive(cluster: list[Running]) -> None:
    a, b, c = cluster
    c.agent.update(state="draining")
    wait_until(
        lambda: all(m.agent.members["c"].meta.state == "draining" for m in (a, b)),
        2.0,
        message="c draining in a's and b's views",
    )
    assert a.statuses()["c"] is Status.ALIVE


def test_garbage_and_a_foreign_key_are_dropped_and_counted(cluster: list[Running]) -> None:
    a, _b, _c = cluster
    before = a.node.counters.dropped_auth
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"\x01" + os.urandom(80), parse_addr(a.agent.address))
        sender.sendto(b"short", parse_addr(a.agent.address))
    # A member under another key can neither join nor be seen.
    intruder = start("mallory", [a.agent.address], key=os.urandom(32))
    try:
        wait_until(lambda: a.node.counters.dropped_auth >= before + 3, 5, message="three packets dropped")
        assert "mallory" not in a.agent.members
        assert set(intruder.agent.members) == {"mallory"}
    finally:
        intruder.agent.stop()
    # A truncated push/pull over TCP is counted too, and changes nothing.
    with socket.create_connection(parse_addr(a.agent.address), timeout=2) as conn:
        conn.sendall(b"\x00\x00\x10\x00partial")
    wait_until(lambda: a.agent.io.stream_errors >= 1, 8, message="the truncated stream counted")
    assert set(a.statuses()) == {"a", "b", "c"}


def test_a_loop_that_dies_of_an_error_says_so_instead_of_freezing_the_view() -> None:
    class Broken(Node):
        def tick(self, now: float) -> list:  # type: ignore[type-arg]
            raise ValueError("a bug in the core")

    agent = Agent("127.0.0.1:0")
    node = Broken(
        "x", agent.address, Keyring([KEY], label="test"), wall=lambda _now: time.time(), config=FAST
    )
    try:
        agent.start(node, [])
        wait_until(lambda: not agent.running, 5, message="the loop to end")
        with pytest.raises(RuntimeError, match="stopped"):
            agent.update(state="draining")
    finally:
        agent.stop()


def test_a_replayed_packet_and_a_stale_one_are_dropped_and_counted_and_change_nothing(
    cluster: list[Running],
) -> None:
    from agenda.gossip.messages import Ping, encode_message, join_packet

    a, _b, _c = cluster
    ring = Keyring([KEY], label="test")
    # A well-formed ping "from c", sealed under the cluster's key: what an eavesdropper could capture.
    sealed = ring.seal(join_packet("c", [encode_message(Ping(999_999, "a"))]), time.time())
    stale = ring.seal(join_packet("c", [encode_message(Ping(999_998, "a"))]), time.time() - 3600)
    counters = a.node.counters
    replays, stales = counters.dropped_replay, counters.dropped_stale
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for packet in (sealed, sealed, sealed, stale):
            sender.sendto(packet, parse_addr(a.agent.address))
    wait_until(
        lambda: counters.dropped_replay >= replays + 2 and counters.dropped_stale >= stales + 1,
        5,
        message="two replays and a stale packet counted",
    )
    assert set(a.statuses()) == {"a", "b", "c"}
    assert a.agent.running
