"""Failover, durability and linearizability of the DB cluster under real process faults.

Every wait is a bounded poll; no assertion depends on how long anything took.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from urllib.parse import quote

import pytest

from agenda.common.http import Unavailable


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def try_put(cluster, node: str, key: str, value: object, **body: object) -> bool:
    """True only when the write was acknowledged (200)."""
    try:
        response = cluster.request(node, "PUT", kv_path(key), json={"value": value, **body}, client_timeout=6)
    except Unavailable:
        return False
    return response.status_code == 200


def assert_readable(cluster, nodes: Iterable[str], expected: dict[str, object]) -> None:
    """Every acknowledged key has (at least) its acknowledged value, read linearizably via each node."""
    for node in nodes:
        for key, value in expected.items():
            response = cluster.request(node, "GET", kv_path(key))
            assert response.status_code == 200, (node, key, response.text)
            assert response.json()["value"] == value, (node, key)


class Writer(threading.Thread):
    """Writes /prefix/N = N in a loop through the given members, remembering what was acknowledged."""

    def __init__(self, cluster, nodes: list[str], prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.nodes = nodes
        self.prefix = prefix
        self.acked: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"{self.prefix}/{i}"
            if try_put(self.cluster, self.nodes[i % len(self.nodes)], key, i):
                self.acked[key] = i
            i += 1


def test_kill_leader_fails_over_without_losing_acknowledged_writes(cluster, wait):
    leader = cluster.leader()
    survivors = cluster.followers(leader)
    writer = Writer(cluster, survivors, "/it/failover")
    writer.start()
    wait(lambda: len(writer.acked) >= 10, 20, message="writes before the crash")
    cluster.kill(leader, signal.SIGKILL)
    acked_before = len(writer.acked)
    wait(lambda: len(writer.acked) >= acked_before + 10, 20, message="writes to succeed after failover")
    writer.stop.set()
    writer.join(timeout=20)
    assert not writer.is_alive()

    new_leader = cluster.leader(survivors)
    assert new_leader != leader
    assert_readable(
        cluster, [new_leader, survivors[-1] if survivors[-1] != new_leader else survivors[0]], writer.acked
    )

    # The old leader comes back as a follower and catches up.
    cluster.restart(leader)
    cluster.wait_healthy()
    wait(
        lambda: all(
            cluster.request(leader, "GET", kv_path(k), params={"consistency": "stale"}).status_code == 200
            for k in writer.acked
        ),
        20,
        0.1,
        "the restarted member to catch up",
    )


def test_any_two_members_down_cluster_still_writable(cluster, wait):
    leader = cluster.leader()
    followers = cluster.followers(leader)
    # Two different pairs: two followers, then the leader and a follower.
    for victims in ([followers[0], followers[1]], [leader, followers[2]]):
        for victim in victims:
            cluster.kill(victim, signal.SIGKILL)
        alive = [n for n in cluster.members if n not in victims]
        key = f"/it/two-down/{'-'.join(victims)}"
        wait(
            lambda key=key, alive=alive: try_put(cluster, alive[0], key, "ok"), 20, 0.1, "a write with 3/5 up"
        )
        assert_readable(cluster, alive, {key: "ok"})
        for victim in victims:
            cluster.start(victim)
        cluster.wait_healthy()


def test_sigkill_all_members_and_restart_keeps_acknowledged_writes(cluster, wait):
    leader = cluster.leader()
    expected: dict[str, object] = {}
    for i in range(30):
        key = f"/it/restart/{i}"
        node = list(cluster.members)[i % len(cluster.members)]
        assert try_put(cluster, node, key, {"i": i}), key
        expected[key] = {"i": i}
    # One overwrite and one delete must survive too.
    assert try_put(cluster, leader, "/it/restart/0", "overwritten")
    expected["/it/restart/0"] = "overwritten"
    assert cluster.request(leader, "DELETE", kv_path("/it/restart/1")).status_code == 200
    del expected["/it/restart/1"]

    for node in cluster.members:
        cluster.kill(node, signal.SIGKILL)
    cluster.start_all()
    cluster.wait_healthy()
    nodes = list(cluster.members)
    assert_readable(cluster, [nodes[0], nodes[-1]], expected)
    assert cluster.request(nodes[2], "GET", kv_path("/it/restart/1")).status_code == 404
    page = cluster.request(nodes[1], "GET", "/v1/kv", params={"prefix": "/it/restart/"}).json()
    assert {item["key"] for item in page["items"]} == set(expected)


def test_stopped_leader_cannot_serve_linearizable_reads(cluster, wait):
    leader = cluster.leader()
    others = cluster.followers(leader)
    key = "/it/sigstop/x"
    assert try_put(cluster, leader, key, "before")
    cluster.kill(leader, signal.SIGSTOP)
    try:
        # While stopped it answers nothing: the request times out (bounded by the client timeout).
        with pytest.raises(Unavailable):
            cluster.request(leader, "GET", kv_path(key), client_timeout=1.5)
        new_leader = cluster.leader(others)
        assert new_leader != leader
        wait(lambda: try_put(cluster, others[0], key, "after"), 20, 0.1, "a write on the new leader")
    finally:
        cluster.kill(leader, signal.SIGCONT)

    # Resumed, the old leader must never return the stale value: it either refuses (503), times out,
    # or (once it has learnt about the new term) forwards to the new leader and returns the new value.
    def answer() -> str:
        try:
            response = cluster.request(leader, "GET", kv_path(key), client_timeout=6)
        except Unavailable:
            return "timeout"
        if response.status_code == 503:
            return "503"
        assert response.status_code == 200, response.text
        assert response.json()["value"] == "after", "a deposed leader served a stale linearizable read"
        return "fresh"

    first = answer()
    assert first in ("timeout", "503", "fresh")
    wait(lambda: answer() == "fresh", 20, 0.1, "the resumed member to rejoin as follower")
    cluster.wait_healthy()


def test_concurrent_cas_increments_are_exact(cluster):
    key = "/it/cas-counter"
    nodes = list(cluster.members)
    assert try_put(cluster, nodes[0], key, 0)
    successes = [0] * 8
    errors: list[str] = []

    def worker(index: int) -> None:
        node = nodes[index % len(nodes)]
        for _ in range(12):
            try:
                current = cluster.request(node, "GET", kv_path(key))
                if current.status_code != 200:
                    continue
                kv = current.json()
                response = cluster.request(
                    node,
                    "PUT",
                    kv_path(key),
                    json={"value": kv["value"] + 1, "prev_revision": kv["mod_revision"]},
                )
            except Unavailable as exc:  # nothing is being killed here: any such error is a failure
                errors.append(repr(exc))
                continue
            if response.status_code == 200:
                successes[index] += 1
            elif response.status_code != 409:
                errors.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    final = cluster.request(nodes[-1], "GET", kv_path(key)).json()
    assert final["value"] == sum(successes)
    assert sum(successes) > 0
