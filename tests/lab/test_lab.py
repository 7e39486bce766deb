"""The container lab, end to end: `make lab` from nothing, again (changed=0), the deployment checks
against it, a refused subnet, and `make lab-down` leaving nothing behind.

This is the docker-provider path of the Vagrantfile run for real on every CI run. It only talks to
the lab's own containers, which it creates and removes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBNET = os.environ.get("LAB_SUBNET", "192.168.56.0/24")
VIP = "192.168.56.100"
CA = "inventories/lab/.pki/ca.crt"
# Commands of the README's quickstart that are not requests to the system: the lab is already up
# (and goes down at the end), `vagrant ssh` is interactive, and the Ansible lines are an operator's.
NOT_REQUESTS = re.compile(r"^(make|vagrant|ansible|ansible-playbook)\s")


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 1500) -> Run:
    start = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    output = proc.stdout + proc.stderr
    return Run(proc.returncode, output, time.monotonic() - start)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def lab():
    down = run("make", "lab-down")
    assert down.returncode == 0, tail(down.output)
    first = run("make", "lab")
    second = run("make", "lab") if first.returncode == 0 else first
    print(
        f"\nmake lab from nothing: {first.seconds:.0f}s; make lab again: {second.seconds:.0f}s",
        file=sys.stderr,
    )
    yield first, second
    run("make", "lab-down")


def test_make_lab_from_nothing_converges(lab):
    first, _ = lab
    assert first.returncode == 0, tail(first.output)
    assert "Agenda Distribuida lab is up" in first.output
    # The gateway users are given is the VIP, and the suggested curl goes there.
    assert re.search(r"gateway:\s+https://\d+\.\d+\.\d+\.100/ ", first.output)
    assert re.search(r"curl --cacert \S+ https://\d+\.\d+\.\d+\.100/v1/health", first.output)
    assert "inventories/lab/.pki/ca.crt" in first.output


def test_make_lab_again_changes_nothing(lab):
    _, second = lab
    assert second.returncode == 0, tail(second.output)
    assert "MAKE_LAB_CHANGED=0" in second.output, tail(second.output)


def test_lab_hosts_answer_on_the_private_network(lab):
    for address in ("192.168.56.11", "192.168.56.12"):
        if not SUBNET.startswith("192.168.56."):
            pytest.fail("this test assumes the default LAB_SUBNET")
        with socket.create_connection((address, 22), timeout=5) as conn:
            assert conn.recv(64).startswith(b"SSH-2.0-")


def test_deployment_checks_pass_against_the_lab(lab):
    checks = run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/deployment",
        env={"AGENDA_INVENTORY": "inventories/lab"},
    )
    assert checks.returncode == 0, tail(checks.output, 80)
    assert re.search(r"\d+ passed", checks.output)


def test_the_vip_answers_with_the_deployment_ca(lab):
    if not SUBNET.startswith("192.168.56."):
        pytest.fail("this test assumes the default LAB_SUBNET")
    health = run(
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        "10",
        "--cacert",
        CA,
        f"https://{VIP}/v1/health",
    )
    assert health.returncode == 0, health.output
    assert re.search(r'"service":\s*"gateway"', health.output)


def quickstart() -> str:
    """The README's quickstart block, as users copy it."""
    section = (REPO / "README.md").read_text().split("## Quickstart against the lab", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_quickstart_runs_through_the_vip(lab):
    if not SUBNET.startswith("192.168.56."):
        pytest.fail("this test assumes the default LAB_SUBNET")
    block = quickstart()
    assert f"GW=https://{VIP}" in block.split(), "the quickstart's gateway must be the VIP"
    requests_only = [line for line in block.splitlines() if not NOT_REQUESTS.match(line)]
    # The user's name is made unique so that the test can run against a lab it ran before; every
    # curl fails the script on an HTTP error, and each answer ends with a newline.
    user = f"ana-{int(time.time())}"
    script = "\n".join(
        [
            "set -euo pipefail",
            'curl() { command curl --silent --show-error --fail-with-body --max-time 30 "$@"; echo; }',
            *(line.replace('"username": "ana"', f'"username": "{user}"') for line in requests_only),
        ]
    )
    result = run("bash", "-c", script, timeout=300)
    assert result.returncode == 0, result.output
    out = result.output
    assert re.search(r'"service":\s*"gateway"', out)
    assert re.search(rf'"username":\s*"{user}"', out)
    assert "Team sync" in out
    assert "BEGIN:VCALENDAR" in out
    assert re.search(r'"hello":\s*"lab"', out)


def test_lab_refuses_a_subnet_that_is_already_routed(lab):
    # docker0's subnet is routed through docker0, not through a lab bridge.
    refused = run("make", "lab", env={"LAB_SUBNET": "172.17.0.0/24"})
    assert refused.returncode != 0
    assert "refusing to start" in refused.output
    assert "172.17.0.0/16 dev docker0" in refused.output


def test_make_lab_down_leaves_no_container_network_or_route(lab):
    down = run("make", "lab-down")
    assert down.returncode == 0, tail(down.output)
    assert "lab-down: containers=0 networks=0 routes=0" in down.output
    leftovers = run("docker", "ps", "-aq", "--filter", "label=agenda-lab=1")
    assert leftovers.output.strip() == ""
    networks = run("docker", "network", "ls", "--format", "{{.Name}}")
    assert f"vagrant_network_{SUBNET}" not in networks.output


def test_vagrantfile_validates_for_every_provider():
    result = run("vagrant", "validate", "--ignore-provider")
    assert result.returncode == 0, result.output
    assert "validated successfully" in result.output
