"""The gateway routes by the gossip view: an instance that joins gets traffic, one that dies gets none.

A stack of its own (`DevStack(gossip=True)`, on the session's DB cluster): three User Service instances,
a Group Service and the gateway, each with an agenda-gossip member beside it; the gateway reads its
member's view file. Timers are memberlist's divided by five, so a test takes seconds. A client keeps
reading through the gateway the whole time, and not one of its requests may fail.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agenda.common.discovery import read_view
from agenda.devstack import DevStack

from ..conftest import wait_until
from .conftest import GATEWAY_SECRET, Stack, plain_session

OPERATOR = "gossip-test-operator-token"
FAST = {
    "probe_interval_ms": 200,
    "probe_timeout_ms": 100,
    "gossip_interval_ms": 40,
    "push_pull_interval_s": 2.0,
    "leave_timeout_s": 1.0,
    "view_refresh_ms": 200,
    "health_interval_ms": 100,
    "health_failures": 2,
}


@pytest.fixture(scope="module")
def gossip_stack(db_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db_cluster.wait_healthy()
    dev = DevStack(
        tmp_path_factory.mktemp("gossip-stack"),
        tls=False,
        db_urls=[member.url for member in db_cluster.members.values()],
        gateway_secret=GATEWAY_SECRET,
        users_instances=3,
        gossip=True,
        settings={
            "gossip": FAST,
            "gateway": {"admin_token_sha256": hashlib.sha256(OPERATOR.encode()).hexdigest()},
        },
    )
    with dev:
        stack = Stack(dev)
        wait_until(lambda: len(routable_users(dev)) == 3, 15, message="three users instances in the view")
        try:
            yield stack
        finally:
            stack.session.close()


def routable_users(dev: DevStack) -> list[str]:
    assert dev.gossip_view is not None
    _member, _written, members = read_view(dev.gossip_view)
    return [m.name for m in members if m.service == "users" and m.status == "alive" and m.state == "serving"]


def gateway_routes_to(stack: Stack, index: int) -> bool:
    """Whether the gateway process itself (not just the view file) routes users requests to instance `index`.

    The gateway re-reads the view file at most every `view_refresh_ms`, so the file changes first.
    """
    response = stack.session.get(
        stack.url("/v1/cluster/services"), headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=5
    )
    response.raise_for_status()
    return stack.users_urls[index].rstrip("/") in response.json()["routing"]["users"]


def served(stack: Stack, index: int) -> int:
    response = stack.session.get(
        stack.users_urls[index] + "/internal/stats",
        headers={"X-Agenda-Gateway-Secret": GATEWAY_SECRET},
        timeout=5,
    )
    return int(response.json()["requests"])


class Reader(threading.Thread):
    """GET /v1/me through the gateway in a loop; every answer that is not 200 is kept."""

    def __init__(self, stack: Stack, token: str) -> None:
        super().__init__(daemon=True)
        self.url = stack.url("/v1/me")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session = plain_session()
        self.done = threading.Event()
        self.count = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                response = self.session.get(self.url, headers=self.headers, timeout=30)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.count += 1

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


@pytest.fixture
def reader(gossip_stack: Stack) -> Iterator[Reader]:
    _name, token = gossip_stack.user("gossip")
    running = Reader(gossip_stack, token)
    running.start()
    yield running
    running.stop()


def test_a_killed_instance_stops_getting_requests_and_a_started_one_gets_them(
    gossip_stack: Stack, reader: Reader
) -> None:
    dev = gossip_stack.dev
    wait_until(lambda: reader.count > 20, 15, message="the reader under way")
    # Crash users3 and its gossip member together, as a machine's crash would.
    dev.kill("users3-gossip")
    dev.kill("users3")
    wait_until(lambda: "users3" not in routable_users(dev), 10, message="users3 out of the gateway's view")
    seen = reader.count
    wait_until(lambda: reader.count > seen + 50, 30, message="50 more reads with users3 gone")
    # Back: the instance first, then its member, which announces it once its health check passes.
    dev.restart("users3")
    before = served(gossip_stack, 2)
    dev.restart("users3-gossip")
    wait_until(lambda: "users3" in routable_users(dev), 10, message="users3 back in the gateway's view")
    wait_until(lambda: served(gossip_stack, 2) > before + 5, 15, message="users3 serving the gateway's reads")
    reader.stop()
    assert reader.failures == [], reader.failures[:5]
    print(f"{reader.count} reads through the gateway, none failed")


def test_an_instance_whose_member_leaves_is_drained_before_it_stops(
    gossip_stack: Stack, reader: Reader
) -> None:
    dev = gossip_stack.dev
    wait_until(lambda: "users2" in routable_users(dev), 10, message="users2 in the view")
    wait_until(lambda: reader.count > 20, 15, message="the reader under way")
    dev.kill("users2-gossip", sig=15)  # SIGTERM: the member announces its leave
    wait_until(lambda: "users2" not in routable_users(dev), 3, message="users2 left the gateway's view")
    wait_until(
        lambda: not gateway_routes_to(gossip_stack, 1), 3, message="the gateway no longer routes to users2"
    )
    # Once out of the gateway's list, the instance gets no new work: its count stands still while reads go on.
    settled = served(gossip_stack, 1)
    seen = reader.count
    wait_until(lambda: reader.count > seen + 50, 30, message="50 more reads")
    assert served(gossip_stack, 1) - settled <= 2  # at most the reads already in flight
    dev.restart("users2-gossip")
    wait_until(lambda: "users2" in routable_users(dev), 10, message="users2 back")
    reader.stop()
    assert reader.failures == [], reader.failures[:5]


def test_the_view_file_is_what_agenda_gossip_members_prints(gossip_stack: Stack) -> None:
    import subprocess
    import sys

    view = gossip_stack.dev.gossip_view
    assert isinstance(view, Path)
    shown = subprocess.run(
        [sys.executable, "-m", "agenda.gossip", "members", "--view", str(view)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    names = {line.split()[0] for line in shown.stdout.splitlines()[2:]}
    assert {"gateway", "users1", "users2", "users3", "groups1"} <= names
