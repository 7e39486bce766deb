"""DB Service failover on deployed hosts (Molecule scenario failover-db).

The scenario's side_effect stopped the members on the last host (two of five). These checks then:
keep writing through the survivors; bring the two back; stop the leader and measure how long
writes fail; restart every member at once and read back every acknowledged write. They run in
file order and share the list of acknowledged writes.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from agenda.db.client import DBError, DBUnavailable
from deployment.support import SPECS, db_client, db_members, host, tls_settings

testinfra_hosts = SPECS[:1]  # the checks drive every host themselves; run them once
ACKNOWLEDGED: dict[str, int] = {}
RUN = uuid.uuid4().hex[:8]


def poll(predicate, *, timeout: float, interval: float = 0.2, what: str):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        # OSError covers requests' connection errors; ValueError, a half-started member's reply.
        except (DBError, DBUnavailable, OSError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout}s (last error: {last_error})")


def stopped_members() -> list[dict[str, str]]:
    last_host = db_members()[-1]["host"]
    return [m for m in db_members() if m["host"] == last_host]


def systemctl(member: dict[str, str], action: str) -> None:
    host(member["host"]).run_expect([0], f"systemctl {action} agenda-db@{member['id']}")


def write(client, index: int) -> None:
    key = f"failover/{RUN}/{index}"
    client.put(key, index)
    ACKNOWLEDGED[key] = index


def test_two_members_down_and_the_survivors_keep_accepting_writes():
    down = stopped_members()
    assert len(down) == 2
    for member in down:
        assert not host(member["host"]).service(f"agenda-db@{member['id']}").is_running
    survivors = [m["url"] for m in db_members() if m not in down]
    with db_client(survivors, retries=5) as client:
        poll(lambda: client.cluster().get("leader"), timeout=30, what="a leader among the survivors")
        for index in range(50):
            write(client, index)
    assert len(ACKNOWLEDGED) == 50


def test_stopped_members_rejoin_and_catch_up():
    down = stopped_members()
    for member in down:
        systemctl(member, "start")
    last_key = max(ACKNOWLEDGED, key=ACKNOWLEDGED.__getitem__)
    for member in down:
        with db_client([member["url"]], retries=0) as client:
            poll(
                lambda c=client: c.get(last_key, linearizable=False),
                timeout=30,
                what=f"{member['id']} catching up",
            )


def test_leader_stop_costs_a_bounded_write_gap(capsys):
    members = db_members()
    with db_client(retries=0) as client:
        leader_id = poll(lambda: client.cluster().get("leader"), timeout=30, what="a leader")
        leader = next(m for m in members if m["id"] == leader_id)
        stopped_at = time.monotonic()
        systemctl(leader, "stop")
        poll(
            lambda: write(client, 1000) is None,
            timeout=30,
            interval=0.02,
            what="a write after the leader stopped",
        )
        gap = time.monotonic() - stopped_at
    systemctl(leader, "start")
    with capsys.disabled():
        print(f"\nfailover-db: leader {leader_id} stopped; next acknowledged write after {gap:.2f}s")


def settled(members: list[dict[str, str]]) -> bool:
    """Every member healthy and naming the same leader: right after a full restart some still name
    a leader that is itself restarting, and forward to it (a correct 503, not data loss)."""
    settings = tls_settings()
    leaders = set()
    for member in members:
        if requests.get(f"{member['url']}/v1/health", timeout=3, **settings).status_code != 200:
            return False
        leaders.add(requests.get(f"{member['url']}/v1/cluster", timeout=3, **settings).json()["leader"])
    return len(leaders) == 1 and None not in leaders


def test_restart_of_every_member_loses_no_acknowledged_write():
    members = db_members()
    for name in sorted({m["host"] for m in members}):
        host(name).run_expect([0], "systemctl restart 'agenda-db@*'")
    poll(lambda: settled(members), timeout=60, what="every member naming one leader after the full restart")
    with db_client(retries=5) as client:
        values = {
            key: poll(lambda k=key: client.get(k) or {"value": None}, timeout=30, what=f"reading {key}")
            for key in ACKNOWLEDGED
        }
    missing = {key: value for key, value in ACKNOWLEDGED.items() if values[key]["value"] != value}
    assert len(ACKNOWLEDGED) >= 50  # the writes of the first check, at least
    assert missing == {}
