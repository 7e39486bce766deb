"""A whole Agenda stack on loopback for the tests: `agenda.devstack.DevStack` (what `make dev` runs) on
top of the session's 5-member DB cluster (from ../conftest.py), so the suite runs five DB members, not
ten: two User Service instances, one Group Service and one API gateway, each a real process.

Plain HTTP (``tls=False``): these tests are about the API and the services' behaviour, and several call a
backend directly to prove what it refuses; test_tls_mode.py runs the TLS stack, DB members included.
Tests talk to the gateway only (except where a test proves what a backend did or did not see). Every
wait is a bounded poll; teardown stops exactly the processes the DevStack started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.tokens import load_private_key
from agenda.devstack import DevStack

GATEWAY_SECRET = "integration-gateway-secret-0123456789"
LOGIN_LIMIT = 5
# Longer than any test: a test counting login attempts must not see the window roll over.
LOGIN_WINDOW = 300
STREAM_MAX_AGE = 1.0


def plain_session() -> requests.Session:
    """A session that goes straight to loopback: no proxy or CA bundle from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


@dataclass
class Stack:
    """The test client's view of a DevStack: calls through the gateway, plus its failure helpers."""

    dev: DevStack
    session: requests.Session = field(default_factory=plain_session)

    @property
    def gateway_url(self) -> str:
        return self.dev.gateway_url

    @property
    def users_urls(self) -> list[str]:
        return self.dev.users_urls

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        return load_private_key(str(self.dev.signing_key_path))

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
            response = self.session.get(
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
        return self.dev.logs()

    def kill(self, name: str) -> None:
        """SIGKILL one process (``users1``, ``groups1``, ``gateway``) and reap it."""
        self.dev.kill(name)

    def restart(self, name: str) -> None:
        """Start a killed process again and wait (bounded) until it answers /v1/health."""
        self.dev.restart(name)


@pytest.fixture(scope="session")
def stack(db_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db_cluster.wait_healthy()
    dev = DevStack(
        tmp_path_factory.mktemp("agenda-stack"),
        tls=False,
        db_urls=[member.url for member in db_cluster.members.values()],
        gateway_secret=GATEWAY_SECRET,
        settings={
            "gateway": {
                "login_limit": LOGIN_LIMIT,
                "login_window": LOGIN_WINDOW,
                # Schemathesis opens notification streams too: each must end for its request to finish.
                "streams": {"max_age": STREAM_MAX_AGE},
            }
        },
    )
    with dev:
        stack = Stack(dev)
        try:
            yield stack
        finally:
            stack.session.close()
