"""agenda-redis-supervisor as processes, against real redis-server processes and the real DB cluster.

Two supervisors compete for the lock; the acting one records the first primary, fails over when the
primary is SIGKILLed or hangs (SIGSTOP), makes a former primary that comes back a replica, hands over
when it dies itself, does nothing without a DB quorum, and cannot record anything once its lease is
gone (the fence). Figures are printed, never asserted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agenda.db.client import DBClient
from agenda.db.txn import txn_compare, txn_put
from agenda.messaging import Publisher, RedisLocator
from agenda.redis_supervisor.lock import DBLock

DOWN_AFTER_MS = 1000
LOCK_TTL = 2


@dataclass
class SupervisorProcess:
    name: str
    config: Path
    status_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agenda.redis_supervisor", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


@dataclass
class Setup:
    servers: list[Any]
    supervisors: list[SupervisorProcess]
    db: DBClient
    primary_key: str
    lock_key: str

    def record(self) -> dict[str, Any] | None:
        kv = self.db.get(self.primary_key)
        return None if kv is None else kv["value"]

    def server(self, record: dict[str, Any]) -> Any:
        return next(s for s in self.servers if s.port == record["port"])

    def acting(self) -> SupervisorProcess | None:
        for supervisor in self.supervisors:
            if supervisor.proc is not None and supervisor.proc.poll() is None:
                try:
                    if supervisor.status()["acting"]:
                        return supervisor
                except OSError:
                    continue
        return None


def role(server: Any) -> list[Any] | None:
    try:
        return [x.decode() if isinstance(x, bytes) else x for x in server.client().execute_command("ROLE")]
    except redis.RedisError:
        return None


def masters(setup: Setup) -> list[str]:
    return [s.name for s in setup.servers if s.running and (role(s) or [""])[0] == "master"]


@pytest.fixture
def setup(
    cluster: Any,
    wait: Callable[..., Any],
    redis_servers: Callable[..., list[Any]],
    ports: Callable[[int], list[int]],
    tmp_path: Path,
) -> Iterator[Setup]:
    servers = redis_servers(3)
    prefix = f"/system/redis-test-{uuid.uuid4().hex[:8]}"
    db_urls = [cluster.url(n) for n in cluster.members]
    status_ports = ports(2)
    supervisors = []
    for i, status_port in enumerate(status_ports):
        config = {
            "name": f"sup{i + 1}",
            "servers": [{"host": s.host, "port": s.port} for s in servers],
            "bootstrap": servers[0].name,
            "db_urls": db_urls,
            "primary_key": f"{prefix}/primary",
            "lock_key": f"{prefix}/supervisor",
            "lock_ttl": LOCK_TTL,
            "interval_ms": 100,
            "down_after_ms": DOWN_AFTER_MS,
            "timeout_ms": 250,
            "redis_tls": {"enabled": False},
            "db_tls": {"enabled": False},
            "status_addr": f"127.0.0.1:{status_port}",
            "log_format": "plain",
        }
        path = tmp_path / f"sup{i + 1}.yml"
        path.write_text(yaml.safe_dump(config))
        supervisors.append(SupervisorProcess(f"sup{i + 1}", path, status_port, tmp_path / f"sup{i + 1}.log"))
    for supervisor in supervisors:
        supervisor.start()
    for supervisor in supervisors:
        wait(supervisor.status, 30, 0.05, f"{supervisor.name} to serve its status")
    db = DBClient(db_urls, timeout=(1.0, 5.0))
    made = Setup(servers, supervisors, db, f"{prefix}/primary", f"{prefix}/supervisor")
    try:
        yield made
    finally:
        for supervisor in supervisors:
            supervisor.close()
            print(f"----- {supervisor.name} -----\n{supervisor.tail()}")  # shown by pytest on failure
        db.close()


def wait_recorded(
    setup: Setup, wait: Callable[..., Any], epoch: int, timeout: float = 30.0
) -> dict[str, Any]:
    return wait(
        lambda: (r := setup.record()) is not None and r["epoch"] == epoch and r,
        timeout,
        0.02,
        f"a primary recorded with epoch {epoch}",
    )


def accepts_writes(server: Any) -> bool:
    try:
        return bool(server.client().set("supervisor-test", "x"))
    except redis.RedisError:
        return False


def test_bootstrap_failover_and_the_old_primary_rejoins_as_a_replica(setup: Setup, wait: Callable[..., Any]):
    first = wait_recorded(setup, wait, 1)
    assert first["port"] == setup.servers[0].port, "the configured first primary is recorded"
    wait(lambda: setup.acting() is not None, 15, 0.1, "one supervisor to act")
    acting = [s for s in setup.supervisors if s.status()["acting"]]
    assert len(acting) == 1, "exactly one supervisor acts"

    old = setup.servers[0]
    old.client().set("before-failover", "kept")
    wait(lambda: all(s.client().get("before-failover") == b"kept" for s in setup.servers[1:]), 10)

    killed_at = time.monotonic()
    old.kill()
    second = wait_recorded(setup, wait, 2)
    new = setup.server(second)
    assert new is not old
    wait(lambda: accepts_writes(new), 10, 0.01, f"{new.name} to accept writes")
    took = time.monotonic() - killed_at
    print(f"\nredis-supervisor: SIGKILL of the primary to {new.name} epoch 2, writable: {took:.2f}s")
    assert new.client().get("before-failover") == b"kept"
    # What the services do: find the primary through the record the supervisor wrote, and publish.
    locator = RedisLocator(setup.db, key=setup.primary_key, watch=False)
    try:
        listener = new.client().pubsub()
        listener.subscribe("notifications:after-failover")
        wait(lambda: listener.get_message(timeout=0.1), 5, 0.01, "the subscription")
        assert Publisher(locator).publish("notifications:after-failover", {"epoch": 2}) == 1
        listener.close()
    finally:
        locator.close()
    other = next(s for s in setup.servers[1:] if s is not new)
    wait(lambda: role(other)[:3] == ["slave", new.host, new.port], 10, 0.05, "the other replica to follow")

    # The old primary comes back as a primary (its command line says so): it is made a replica.
    old.start()
    wait(lambda: role(old)[:3] == ["slave", new.host, new.port], 10, 0.05, "the old primary to follow")
    assert masters(setup) == [new.name]
    status = next(s for s in setup.supervisors if s.status()["acting"]).status()
    assert status["failovers"] == 1
    assert status["recorded"]["epoch"] == 2


def test_a_hung_primary_is_replaced_and_the_supervisor_never_blocks(setup: Setup, wait: Callable[..., Any]):
    wait_recorded(setup, wait, 1)
    acting = wait(setup.acting, 15, 0.1, "one supervisor to act")
    old = setup.servers[0]
    old.kill(signal.SIGSTOP)
    try:
        rounds_before = acting.status()["rounds"]
        second = wait_recorded(setup, wait, 2)
        assert second["port"] != old.port
        status = acting.status()
        assert status["rounds"] > rounds_before + 2, "the loop kept its rhythm while a server hung"
        assert status["redis_failures"].get(f"{old.name} timeout", 0) > 0, "the hang was counted as a timeout"
    finally:
        old.kill(signal.SIGCONT)
    new = setup.server(setup.record())
    wait(lambda: role(old)[:3] == ["slave", new.host, new.port], 10, 0.05, "the thawed old primary to follow")
    assert masters(setup) == [new.name]


def test_the_other_supervisor_takes_over_and_still_fails_over(setup: Setup, wait: Callable[..., Any]):
    wait_recorded(setup, wait, 1)
    acting = wait(setup.acting, 15, 0.1, "one supervisor to act")
    killed_at = time.monotonic()
    acting.kill()
    successor = wait(
        lambda: (s := setup.acting()) is not None and s is not acting and s, LOCK_TTL * 5, 0.05, "a successor"
    )
    took = time.monotonic() - killed_at
    print(f"\nredis-supervisor: acting supervisor SIGKILLed; {successor.name} acts after {took:.2f}s")
    setup.servers[0].kill()
    assert wait_recorded(setup, wait, 2)["port"] != setup.servers[0].port


def test_without_a_db_quorum_nothing_fails_over(setup: Setup, cluster: Any, wait: Callable[..., Any]):
    wait_recorded(setup, wait, 1)
    acting = wait(setup.acting, 15, 0.1, "one supervisor to act")
    stopped = list(cluster.members)[:3]
    for node_id in stopped:
        cluster.kill(node_id, signal.SIGSTOP)
    try:
        old = setup.servers[0]
        old.kill()
        # Well past down_after and the lock's ttl: nobody may promote what cannot be recorded.
        wait(lambda: not acting.status()["acting"], LOCK_TTL * 5, 0.1, "the acting supervisor to stop acting")
        deadline = time.monotonic() + DOWN_AFTER_MS / 1000 * 3
        while time.monotonic() < deadline:
            assert masters(setup) == [], "a replica was promoted without a DB quorum"
            time.sleep(0.1)
        waiting = [s.status()["waiting"] for s in setup.supervisors]
        assert all(waiting), f"every supervisor says why it does nothing: {waiting}"
    finally:
        for node_id in stopped:
            cluster.kill(node_id, signal.SIGCONT)
    assert wait_recorded(setup, wait, 2, timeout=60)["port"] != setup.servers[0].port


def test_a_supervisor_whose_lease_is_gone_records_nothing(cluster: Any, wait: Callable[..., Any]):
    db = DBClient([cluster.url(n) for n in cluster.members], timeout=(1.0, 5.0))
    key = f"/system/redis-test-{uuid.uuid4().hex[:8]}"
    lock = DBLock(db, f"{key}/supervisor", "sup-a", ttl=5)
    wait(lambda: (lock.step(), lock.state().held)[1], 15, 0.1, "the lock")
    fence = lock.fence()
    assert db.txn(compare=[fence], success=[txn_put(f"{key}/primary", {"epoch": 1})])["succeeded"]

    # Its lease ends (revoked here, as an expiry would): the key goes with it, and another takes it.
    db.revoke(int(db.get(f"{key}/supervisor")["lease"]))
    other = DBLock(db, f"{key}/supervisor", "sup-b", ttl=5)
    wait(lambda: (other.step(), other.state().held)[1], 15, 0.1, "the lock for another supervisor")
    late = db.txn(
        compare=[fence, txn_compare(f"{key}/primary", "exists", "eq", True)],
        success=[txn_put(f"{key}/primary", {"epoch": 99})],
    )
    assert late["succeeded"] is False, "a write fenced by a lost lock went through"
    assert db.get(f"{key}/primary")["value"] == {"epoch": 1}
    lock.step()
    assert lock.state().held is False, "the old holder notices it lost the lock"
    db.close()
