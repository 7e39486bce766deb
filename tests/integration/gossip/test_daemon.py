"""agenda-gossip as real processes on loopback: the view files, `members`, crash, leave, health, key rotation.

Each daemon is `python -m agenda.gossip run` with its own YAML file and key file; the test reads what
every member's view file says, as the gateway's workers will. Timers are memberlist's divided by five.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from agenda.common.discovery import read_view
from agenda.devstack.stack import free_ports

from ..conftest import wait_until

FAST = {
    "probe_interval_ms": 200,
    "probe_timeout_ms": 100,
    "gossip_interval_ms": 40,
    "push_pull_interval_s": 2.0,
    "leave_timeout_s": 1.0,
    "seed_retry_interval_s": 0.5,
    "view_refresh_ms": 200,
    "health_interval_ms": 100,
    "health_failures": 2,
    "log_format": "plain",
}


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Daemon:
    name: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.workdir / f"{self.name}.yml"

    @property
    def keys(self) -> Path:
        return self.workdir / f"{self.name}.keys"

    @property
    def view(self) -> Path:
        return self.workdir / f"{self.name}.view.json"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def write(self, seeds: list[int], keys: list[str], **extra: object) -> None:
        self.keys.write_text("# test ring\n" + "\n".join(keys) + "\n")
        self.keys.chmod(0o600)
        settings = {
            "name": self.name,
            "bind": f"127.0.0.1:{self.port}",
            "seeds": [f"127.0.0.1:{port}" for port in seeds],
            "keys_file": str(self.keys),
            "service": "users",
            "api_url": f"https://127.0.0.1:{self.port + 1}",
            "version": "1.0",
            "view_file": str(self.view),
            **FAST,
            **extra,
        }
        self.config.write_text(yaml.safe_dump(settings))

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agenda.gossip", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def statuses(self) -> dict[str, str]:
        _member, written, members = read_view(self.view)
        assert time.time() - written < 5, "a stale view"
        return {m.name: m.status for m in members}

    def member(self, name: str) -> dict[str, str]:
        return {m.name: dataclasses.asdict(m) for m in read_view(self.view)[2]}[name]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    ports = free_ports(3)
    key = new_key()
    made = [Daemon(name, port, tmp_path) for name, port in zip(("a", "b", "c"), ports, strict=True)]
    for daemon in made:
        daemon.write([ports[0]] if daemon.name != "a" else [], [key])
        daemon.start()
    try:
        wait_until(
            lambda: all(d.statuses() == dict.fromkeys("abc", "alive") for d in made),
            15,
            message="every view file to list a, b and c alive",
        )
        yield made
    finally:
        for daemon in made:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=5)


def members_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenda.gossip", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_members_shows_every_member_with_status_and_incarnation(daemons: list[Daemon]) -> None:
    a = daemons[0]
    shown = members_command("--config", str(a.config), "members")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("view of a, written")
    assert lines[1].split()[:4] == ["NAME", "STATUS", "INCARNATION", "SERVICE"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"a", "b", "c"}
    # Incarnations start at the wall clock in seconds: a restart outbids the member's past.
    assert all(int(row[2]) >= int(time.time()) - 60 for row in rows.values())
    assert all(row[1] == "alive" and row[3] == "users" and row[4] == "serving" for row in rows.values())


def test_a_killed_member_is_dead_in_every_view_and_a_stopped_one_left(daemons: list[Daemon]) -> None:
    a, b, c = daemons
    killed = time.monotonic()
    c.signal(signal.SIGKILL)
    wait_until(
        lambda: a.statuses()["c"] == "dead" and b.statuses()["c"] == "dead", 15, message="c dead in a and b"
    )
    print(f"SIGKILL to dead in both views: {time.monotonic() - killed:.2f} s")
    stopped = time.monotonic()
    b.signal(signal.SIGTERM)
    wait_until(lambda: a.statuses()["b"] == "left", 3, message="b left in a's view")
    print(f"SIGTERM to left: {time.monotonic() - stopped:.2f} s")
    assert b.process is not None
    assert b.process.wait(timeout=10) == 0


def test_an_unhealthy_service_is_announced_and_its_recovery_too(tmp_path: Path) -> None:
    healthy = threading.Event()
    healthy.set()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if healthy.is_set() else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = free_ports(2)
    key = new_key()
    watched, watcher = (Daemon(name, port, tmp_path) for name, port in zip(("svc", "gw"), ports, strict=True))
    watched.write([], [key], health_url=f"http://127.0.0.1:{server.server_address[1]}/v1/health")
    watcher.write([ports[0]], [key])
    try:
        for daemon in (watched, watcher):
            daemon.start()
        wait_until(lambda: watcher.statuses().get("svc") == "alive", 15, message="svc in gw's view")
        assert watcher.member("svc")["state"] == "serving"
        healthy.clear()
        wait_until(
            lambda: watcher.member("svc")["state"] == "unhealthy", 5, message="svc unhealthy in gw's view"
        )
        assert (
            watcher.statuses()["svc"] == "alive"
        )  # the daemon answers: the member is up, its service is not
        healthy.set()
        wait_until(lambda: watcher.member("svc")["state"] == "serving", 5, message="svc serving again")
    finally:
        server.shutdown()
        for daemon in (watched, watcher):
            if daemon.process is not None:
                daemon.process.kill()
                daemon.process.wait(timeout=5)


def test_a_key_is_rotated_with_sighup_and_nobody_is_suspected(daemons: list[Daemon]) -> None:
    old = daemons[0].keys.read_text().split("\n")[1]
    new = new_key()
    # memberlist's three rounds, each on every member before the next: add, use, drop the old key.
    for done, ring in enumerate(([old, new], [new, old], [new]), start=1):
        for daemon in daemons:
            daemon.keys.write_text("\n".join(ring) + "\n")
            daemon.signal(signal.SIGHUP)
        wait_until(
            lambda done=done: all(d.log.read_text().count("key ring reloaded") == done for d in daemons),
            5,
            message=f"every daemon reloaded its ring {done} time(s)",
        )
    wait_until(
        lambda: all(d.statuses() == dict.fromkeys("abc", "alive") for d in daemons),
        5,
        message="everyone alive under the new key",
    )
    # The daemons log every status change they see: none was suspected during the rotation.
    for daemon in daemons:
        assert "-> suspect" not in daemon.log.read_text(), daemon.log.read_text()
    late = Daemon("d", free_ports(1)[0], daemons[0].workdir)
    late.write([daemons[0].port], [new])
    late.start()
    try:
        wait_until(lambda: daemons[0].statuses().get("d") == "alive", 15, message="d joins with the new key")
    finally:
        assert late.process is not None
        late.process.kill()
        late.process.wait(timeout=5)


def test_a_bad_configuration_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    daemon = Daemon("x", free_ports(1)[0], tmp_path)
    daemon.write([], [new_key()])
    daemon.keys.write_text("not base64!\n")
    result = members_command("--config", str(daemon.config), "check-config")
    assert result.returncode == 2
    assert "gossip: config: keys_file: line 1 is not base64" in result.stderr
    daemon.write([], [new_key()], probe_timeout_ms=300)
    result = members_command("--config", str(daemon.config), "run")
    assert result.returncode == 2
    assert "probe_timeout_ms" in result.stderr


def test_a_member_whose_seeds_answer_nothing_starts_alone_says_so_and_joins_when_one_appears(
    tmp_path: Path,
) -> None:
    early_port, seed_port = free_ports(2)
    key = new_key()
    early, seed = Daemon("early", early_port, tmp_path), Daemon("seed", seed_port, tmp_path)
    early.write([seed_port], [key])
    seed.write([], [key])
    try:
        early.start()
        wait_until(lambda: "alone: no other member answers" in early.log.read_text(), 10, message="alone")
        assert early.statuses() == {"early": "alive"}
        seed.start()
        wait_until(lambda: early.statuses() == {"early": "alive", "seed": "alive"}, 10, message="joined")
        wait_until(lambda: "joined: 2 live member(s)" in early.log.read_text(), 5, message="says it joined")
    finally:
        for daemon in (early, seed):
            if daemon.process is not None:
                daemon.process.kill()
                daemon.process.wait(timeout=5)
