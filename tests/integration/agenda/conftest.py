"""A whole Agenda stack on loopback: the session's 5-member DB cluster (from ../conftest.py), two User
Service instances, one Group Service and one API gateway, each a real process started with its CLI in
--no-tls dev mode.

Tests talk to the gateway only (except where a test proves what a backend did or did not see). Every
wait is a bounded poll; teardown kills exactly the processes started here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GATEWAY_SECRET = "integration-gateway-secret-0123456789"
LOGIN_LIMIT = 5


def _ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Stack:
    root: Path
    signing_key: Ed25519PrivateKey
    gateway_url: str
    users_urls: list[str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    argvs: dict[str, list[str]] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return self.gateway_url + path

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.url(path), headers=headers, timeout=30, **kwargs)

    def backend_requests(self) -> int:
        """How many authenticated-or-public requests the User Service instances have served."""
        total = 0
        for base in self.users_urls:
            response = requests.get(
                base + "/internal/stats", headers={"X-Agenda-Gateway-Secret": GATEWAY_SECRET}, timeout=5
            )
            total += response.json()["requests"]
        return total

    def user(self, prefix: str = "u") -> tuple[str, str]:
        """A freshly registered user: (username, access token)."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = "correct horse battery"
        response = self.call("POST", "/v1/auth/register", json={"username": name, "password": password})
        assert response.status_code == 201, response.text
        response = self.call("POST", "/v1/auth/login", json={"username": name, "password": password})
        assert response.status_code == 200, response.text
        return name, response.json()["access_token"]

    def logs(self) -> str:
        out = []
        for name in self.procs:
            path = self.root / f"{name}.log"
            if path.exists():
                out.append(f"----- {name} -----")
                out.extend(path.read_text(errors="replace").splitlines()[-30:])
        return "\n".join(out)

    def kill(self, name: str) -> None:
        """SIGKILL one service process and reap it."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Start a killed service again and wait (bounded) until it answers /v1/health."""
        assert self.procs[name].poll() is not None, f"{name} is still running"
        _spawn(self, name, self.argvs[name])
        base = self.users_urls[int(name.removeprefix("users")) - 1]

        def healthy() -> bool:
            assert self.procs[name].poll() is None, f"{name} exited:\n{self.logs()}"
            return requests.get(base + "/v1/health", timeout=1).status_code == 200

        _poll(healthy, 20.0, f"{name} to answer /v1/health", (requests.RequestException,))

    def stop(self) -> None:
        self.session.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)


def _spawn(stack: Stack, name: str, argv: list[str]) -> None:
    stack.argvs[name] = argv
    log = (stack.root / f"{name}.log").open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stack.procs[name] = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()


@pytest.fixture(scope="session")
def stack(db_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from agenda.common.http import Unavailable

    root = tmp_path_factory.mktemp("agenda-stack")
    key = Ed25519PrivateKey.generate()
    private = root / "signing.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = root / "public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    users_ports = _ports(2)
    gateway_port, groups_port = _ports(2)
    users_urls = [f"http://127.0.0.1:{port}" for port in users_ports]
    stack = Stack(root, key, f"http://127.0.0.1:{gateway_port}", users_urls)
    try:
        for index, port in enumerate(users_ports):
            argv = ["agenda.users.cli", "--listen", f"127.0.0.1:{port}", "--signing-key", str(private)]
            argv += ["--gateway-secret", GATEWAY_SECRET, "--no-tls", "--log-format", "plain"]
            for member in db_cluster.members.values():
                argv += ["--db-url", member.url]
            _spawn(stack, f"users{index + 1}", argv)
        argv = [
            "agenda.groups.cli",
            "--listen",
            f"127.0.0.1:{groups_port}",
            "--gateway-secret",
            GATEWAY_SECRET,
        ]
        argv += ["--no-tls", "--log-format", "plain"]
        for member in db_cluster.members.values():
            argv += ["--db-url", member.url]
        _spawn(stack, "groups", argv)
        argv = ["agenda.gateway.cli", "--listen", f"127.0.0.1:{gateway_port}", "--public-key", f"k1={public}"]
        argv += ["--gateway-secret", GATEWAY_SECRET, "--no-tls", "--log-format", "plain"]
        argv += ["--login-limit", str(LOGIN_LIMIT), "--login-window", "300"]
        for url in users_urls:
            argv += ["--users-url", url]
        argv += ["--groups-url", f"http://127.0.0.1:{groups_port}"]
        _spawn(stack, "gateway", argv)

        def up() -> bool:
            for proc in stack.procs.values():
                assert proc.poll() is None, f"a service exited early:\n{stack.logs()}"
            for base in [*users_urls, f"http://127.0.0.1:{groups_port}", stack.gateway_url]:
                if requests.get(base + "/v1/health", timeout=1).status_code != 200:
                    return False
            return True

        db_cluster.wait_healthy()
        _poll(up, 30.0, "the agenda services to answer /v1/health", (requests.RequestException, Unavailable))
        yield stack
    finally:
        stack.stop()


def _poll(
    predicate: Callable[[], Any], timeout: float, what: str, errors: tuple[type[BaseException], ...]
) -> Any:
    import time

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
        except errors as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")
        time.sleep(0.05)
