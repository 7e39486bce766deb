"""TLS mode as `make dev` runs it: `python -m agenda.devstack` with its own five DB members, all TLS.

A throwaway CA issues the stack's certificate. The gateway serves HTTPS; every backend (User and Group
Service, DB members) refuses a TLS client without a certificate from that CA before any HTTP happens;
the curl lines the command prints work; SIGINT stops every process it started and exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from agenda.devstack import DevStack, DevStackError
from agenda.devstack.pki import issue_ca, issue_certificate, write_certificate, write_private_key

from ..conftest import wait_until
from .conftest import plain_session

READY_TIMEOUT = 180.0  # the launcher's own bound is 120 s; this one only catches a hung launcher
STOP_TIMEOUT = 60.0
BACKENDS = ("users1", "groups1", "db1")


@dataclass(frozen=True)
class Launched:
    """A running `agenda-dev` and what it printed."""

    popen: subprocess.Popen[bytes]
    directory: Path
    output: str
    gateway_url: str
    ca_file: str
    urls: dict[str, str]
    client_cert: tuple[str, str]


def _env_without_proxies() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env["no_proxy"] = "*"  # curl and requests alike: loopback only
    return env


def _processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line contains `text` (every stack process names its dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue  # exited while we looked
    return pids


def _parse(output: str, popen: subprocess.Popen[bytes], directory: Path) -> Launched:
    def field(pattern: str) -> re.Match[str]:
        found = re.search(pattern, output, re.MULTILINE)
        assert found, f"no match for {pattern!r} in:\n{output}"
        return found

    cert = field(r"--cert (\S+) --key (\S+)\)")
    return Launched(
        popen=popen,
        directory=directory,
        output=output,
        gateway_url=field(r"^  gateway\s+(https://\S+)$")[1],
        ca_file=field(r"^  CA file\s+(\S+)$")[1],
        urls=dict(re.findall(r"^  ((?:db|users|groups)\d+)\s+(https://\S+)$", output, re.MULTILINE)),
        client_cert=(cert[1], cert[2]),
    )


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    root = tmp_path_factory.mktemp("devstack-tls")
    directory, output_path = root / "stack", root / "agenda-dev.out"
    with output_path.open("wb") as output:
        popen = subprocess.Popen(
            [sys.executable, "-m", "agenda.devstack", "--dir", str(directory), "--port", "0"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_env_without_proxies(),
            start_new_session=True,
        )

    def ready() -> bool:
        text = output_path.read_text()
        assert popen.poll() is None, f"agenda-dev exited with status {popen.returncode}:\n{text}"
        return "Ctrl-C to stop." in text

    try:
        wait_until(ready, READY_TIMEOUT, 0.2, "agenda-dev to say the stack is ready")
        yield _parse(output_path.read_text(), popen, directory)
    finally:
        popen.send_signal(signal.SIGINT)
        try:
            status = popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            status = popen.wait(timeout=STOP_TIMEOUT)
        left = _processes_mentioning(str(directory))
        for pid in left:  # only ever processes started for this directory
            os.kill(pid, signal.SIGKILL)
    text = output_path.read_text()
    assert status == 0, text
    assert text.rstrip().endswith("agenda-dev: stopped"), text
    assert not left, f"processes left after SIGINT: {left}"


@pytest.fixture
def rogue_cert(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 that is perfect except that another CA signed it."""
    issued = issue_certificate(issue_ca("rogue-ca"), "mallory")
    write_certificate(tmp_path / "rogue.crt", issued.cert)
    write_private_key(tmp_path / "rogue.key", issued.key)
    return str(tmp_path / "rogue.crt"), str(tmp_path / "rogue.key")


def test_every_process_serves_tls_and_the_db_members_agree_on_a_leader(launched: Launched) -> None:
    assert sorted(launched.urls) == ["db1", "db2", "db3", "db4", "db5", "groups1", "users1", "users2"]
    with plain_session() as session:
        session.verify, session.cert = launched.ca_file, launched.client_cert
        health = {
            name: session.get(url + "/v1/health", timeout=10).json() for name, url in launched.urls.items()
        }
    assert {body["status"] for body in health.values()} == {"ok"}
    assert len({body["leader"] for name, body in health.items() if name.startswith("db")}) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_refuse_tls_clients_without_a_certificate_from_the_stack_ca(
    launched: Launched, rogue_cert: tuple[str, str], backend: str
) -> None:
    health = launched.urls[backend] + "/v1/health"
    with plain_session() as session:
        session.verify = launched.ca_file
        assert session.get(health, cert=launched.client_cert, timeout=10).status_code == 200  # the control
        # requests reports a refused handshake as SSLError or, once TLS 1.3 let it finish, a reset.
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(health, timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(health, cert=rogue_cert, timeout=10)
        with pytest.raises(requests.exceptions.SSLError):  # its certificate is from no public CA
            session.get(health, cert=launched.client_cert, verify=True, timeout=10)


def test_round_trip_through_the_https_gateway(launched: Launched) -> None:
    base = launched.gateway_url
    name = f"tls{uuid.uuid4().hex[:8]}"
    credentials = {"username": name, "password": "correct horse battery"}
    with plain_session() as session:
        session.verify = launched.ca_file
        assert session.post(base + "/v1/auth/register", json=credentials, timeout=30).status_code == 201
        token = session.post(base + "/v1/auth/login", json=credentials, timeout=30).json()["access_token"]
        me = session.get(base + "/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert me.status_code == 200
    assert me.json()["username"] == name


def test_the_printed_curl_lines_work(launched: Launched) -> None:
    try_it = launched.output.split("Try it:\n", 1)[1].split("\n\n", 1)[0]
    script = "set -euo pipefail\n" + try_it.replace("curl ", "curl -sS --fail-with-body ")
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=_env_without_proxies(), timeout=120
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    health, registered, me = done.stdout.splitlines()
    assert '"status":"ok"' in health.replace(" ", "")
    assert '"username":"ada"' in registered.replace(" ", "")
    assert '"username":"ada"' in me.replace(" ", "")


def test_a_process_that_cannot_start_fails_the_stack_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    stack = DevStack(
        tmp_path / "stack",
        db_urls=["https://127.0.0.1:9"],  # never reached: the services start without their DB
        settings={"gateway": {"login_limit": 0}},  # below the minimum: the gateway exits at start
    )
    with pytest.raises(DevStackError) as failed, stack:
        pytest.fail("the stack started with an invalid gateway setting")
    assert "gateway exited (2)" in str(failed.value)
    assert "login_limit: must be >= 1" in str(failed.value)
    assert not _processes_mentioning(str(tmp_path / "stack"))
