"""A rolling upgrade on deployed hosts (Molecule scenario rolling-upgrade).

While a client on the controller loops through the VIP as a user would (log in, create an event,
list the agenda; a new connection for every request, 5 s timeouts; bounded in count and time),
a new version of the `agenda` package is built (a copy of app/ whose version is a post-release
of the committed one, nothing committed) and `ansible-playbook site.yml` deploys it to Molecule's hosts. Every
service and DB member restarts onto it one host (one member) at a time, health-gated: services on
the socket systemd holds (connections wait, none is refused), DB members after leadership is moved
off them, agenda-vrrpd by a reload that re-executes it without moving the VIP. Then: not one client
request failed, every host has the new version installed, and every process was started after it
was (agenda-vrrpd: reloaded after it was).

The hosts are Molecule's containers (named as the inventory's hosts); the verifier's environment
carries Molecule's Ansible configuration, so the playbook run here is the one `molecule converge`
runs, with the new source as extra variables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from deployment.support import HOSTS, INVENTORY, SPECS, db_members, group_hosts, public_tls, vip_url
from failover.reporting import print_through

testinfra_hosts = SPECS[:1]  # the check drives every host itself; run it once

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[2])
VENV = "/opt/agenda/venv"
# connect (the TLS handshake included: while a gateway restarts, its socket's queue holds the
# connection until the new process takes it, a few seconds) and read. Latencies are reported.
TIMEOUT = (15.0, 15.0)
PLAYBOOK_TIMEOUT = 1_800


# ------------------------------------------------------------------------ the hosts, through docker


def on(name: str, *argv: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", "exec", name, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{name}: {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def installed_version(name: str) -> str:
    return on(name, f"{VENV}/bin/agenda-version").strip()


# ------------------------------------------------------------------------------------ the client


@dataclass
class Outcome:
    at: float  # monotonic, when sent
    what: str
    ok: bool
    detail: str
    took: float = 0.0  # seconds until the answer (or the error)


class Client(threading.Thread):
    """Loops log in, create an event, list the agenda at the VIP, each request on a new connection."""

    def __init__(self, base: str, *, max_requests: int = 30_000, max_seconds: float = 1_500.0) -> None:
        super().__init__(name="rolling-client", daemon=True)
        self.base, self.max_requests, self.max_seconds = base, max_requests, max_seconds
        self.outcomes: list[Outcome] = []
        self.username = f"rolling-{uuid.uuid4().hex[:12]}"
        self.password = "rolling upgrade pass"
        self._stop_event = threading.Event()
        self._slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)

    def call(
        self,
        what: str,
        method: str,
        path: str,
        expect: int,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response | None:
        sent = time.monotonic()
        try:
            reply = requests.request(
                method,
                f"{self.base}{path}",
                timeout=TIMEOUT,
                verify=public_tls()["verify"],
                headers={"Connection": "close", **(headers or {})},
                **kwargs,
            )
        except requests.RequestException as exc:
            self.outcomes.append(
                Outcome(sent, what, False, f"{type(exc).__name__}: {exc}", time.monotonic() - sent)
            )
            self._stop_event.wait(0.2)
            return None
        ok = reply.status_code == expect
        detail = "" if ok else f"{reply.status_code} {reply.text[:200]}"
        self.outcomes.append(Outcome(sent, what, ok, detail, time.monotonic() - sent))
        if not ok:
            self._stop_event.wait(0.2)
        return reply if ok else None

    def run(self) -> None:
        started = time.monotonic()
        self.call(
            "register",
            "POST",
            "/v1/auth/register",
            201,
            json={"username": self.username, "password": self.password},
        )
        while (
            not self._stop_event.is_set()
            and len(self.outcomes) < self.max_requests
            and time.monotonic() - started < self.max_seconds
        ):
            grant = self.call(
                "login",
                "POST",
                "/v1/auth/login",
                200,
                json={"username": self.username, "password": self.password},
            )
            if grant is None:
                continue
            auth = {"Authorization": f"Bearer {grant.json()['access_token']}"}
            # A new hour for every event: the organizer never conflicts with himself.
            self._slot += timedelta(hours=1)
            event = {
                "title": "rolling",
                "start": self._slot.isoformat(),
                "end": (self._slot + timedelta(minutes=30)).isoformat(),
            }
            if self.call("create-event", "POST", "/v1/events", 201, json=event, headers=auth) is None:
                continue
            span = {
                "from": (self._slot - timedelta(hours=1)).isoformat(),
                "to": (self._slot + timedelta(hours=1)).isoformat(),
            }
            self.call("list-agenda", "GET", "/v1/events", 200, params=span, headers=auth)

    def wait_for_more(self, count: int, timeout: float = 120.0) -> None:
        """Return once `count` more requests were answered (bounded): the client is under way."""
        target = len(self.outcomes) + count
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target:
            assert self.is_alive(), "the client stopped"
            answered = len(self.outcomes)
            assert time.monotonic() < deadline, f"the client answered {answered} of {target} in {timeout}s"
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


# -------------------------------------------------------------------------------- the new version


def new_version_source(workdir: Path) -> tuple[Path, Path, str]:
    """A copy of app/ with a new version, and a copy of the controller's wheel cache (dependencies
    are not downloaded again) without the old agenda wheels. Returns (source, cache, version)."""
    source = workdir / "app"
    shutil.copytree(
        PROJECT / "app", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist")
    )
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    old = re.search(r'^version = "([^"]+)"$', text, flags=re.MULTILINE)
    assert old, "no version line in app/pyproject.toml"
    # A post-release, not a local version (+suffix): `agenda==0.1.0` would accept 0.1.0+suffix as
    # installed, and the next converge of the committed code would not go back to it.
    version = f"{old.group(1).split('+')[0]}.post{int(time.time())}"
    pyproject.write_text(text.replace(old.group(0), f'version = "{version}"', 1))
    cache = workdir / "wheelhouse"
    original = PROJECT / ".cache" / "wheelhouse"
    if original.is_dir():
        shutil.copytree(original, cache, ignore=shutil.ignore_patterns("agenda-*.whl"))
    return source, cache, version


def run_site(source: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        "ansible-playbook",
        "-i",
        INVENTORY,
        str(PROJECT / "site.yml"),
        "-e",
        f"agenda_app_source_dir={source}",
        "-e",
        f"agenda_app_controller_cache={cache}",
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False, cwd=PROJECT
    )


def units(name: str) -> list[str]:
    found = [f"agenda-db@{m['id']}" for m in db_members() if m["host"] == name]
    if name in group_hosts("services"):
        found += ["agenda-users", "agenda-groups", "agenda-users-gossip", "agenda-groups-gossip"]
    if name in group_hosts("gateways"):
        found += ["agenda-gateway", "agenda-vrrpd", "agenda-gateway-gossip"]
    return found


def started_at(name: str, unit: str) -> float:
    """When the unit's main process started (epoch seconds, the host's clock); for agenda-vrrpd, when
    its code was last executed (a reload re-executes it under the same pid)."""
    if unit == "agenda-vrrpd":
        status = json.loads(
            on(name, f"{VENV}/bin/agenda-vrrpd", "--config", "/etc/agenda/vrrp/vrrpd.yml", "status", "--json")
        )
        return float(status["started"])
    value = on(
        name,
        "systemctl",
        "show",
        "--timestamp=unix",
        "-p",
        "ExecMainStartTimestamp",
        "--value",
        f"{unit}.service",
    ).strip()
    assert value.startswith("@"), f"{name}: {unit}: no start time ({value!r})"
    return float(value[1:])


def installed_at(name: str, version: str) -> float:
    """When the new version's files were installed on the host (its RECORD's mtime)."""
    record = f"{VENV}/lib/python3*/site-packages/agenda-{version}.dist-info/RECORD"
    output = on(name, "sh", "-c", f"stat -c %Y {record}")
    return float(output.split()[0])


def report(message: str) -> None:
    print_through(f"rolling-upgrade: {message}")


# ------------------------------------------------------------------------------------------ check


def test_rolling_upgrade_under_load_fails_no_request_and_every_process_runs_the_new_version(tmp_path):
    for name in HOSTS:
        running = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        assert running == "true", f"no running container named {name}: this check needs Molecule's hosts"
    old_versions = {name: installed_version(name) for name in HOSTS}
    for name in HOSTS:
        # The hosts stop running the checked-out tree: a later scenario's converge must not skip
        # site.yml (molecule/shared/converge.yml).
        on(name, "rm", "-f", "/var/lib/agenda-molecule-converged")
    source, cache, version = new_version_source(tmp_path)
    assert version not in old_versions.values()

    client = Client(vip_url())
    client.start()
    try:
        client.wait_for_more(20)  # under way before anything restarts
        assert client.outcomes, "the client sent nothing"
        assert not client.failed, f"the client fails before the upgrade: {client.failed[:3]}"
        began = time.monotonic()
        began_utc = time.time()
        run = run_site(source, cache)
        took = time.monotonic() - began
        client.wait_for_more(20)  # and still served afterwards
    finally:
        client.stop()

    recap = run.stdout[run.stdout.rfind("PLAY RECAP") :] if "PLAY RECAP" in run.stdout else run.stdout[-3000:]
    report(f"ansible-playbook site.yml (new version {version}) exit {run.returncode} in {took:.0f}s\n{recap}")
    assert run.returncode == 0, f"site.yml failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"

    counts = {
        what: sum(1 for o in client.outcomes if o.what == what)
        for what in ("register", "login", "create-event", "list-agenda")
    }
    failed = client.failed
    span = client.outcomes[-1].at - client.outcomes[0].at
    latencies = sorted(o.took for o in client.outcomes)
    median, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    report(
        f"{len(client.outcomes)} requests, {len(failed)} failed "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())}; over {span:.0f}s); latency median "
        f"{median * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    for outcome in failed[:20]:
        report(f"failed {outcome.what} at +{outcome.at - began:.2f}s: {outcome.detail}")
    # The slowest, with the wall-clock time they were sent, to find them in the hosts' journals.
    for outcome in sorted(client.outcomes, key=lambda o: o.took)[-3:]:
        sent = time.strftime("%H:%M:%S", time.gmtime(began_utc + outcome.at - began))
        report(f"slow {outcome.what} sent at +{outcome.at - began:.2f}s ({sent} UTC): {outcome.took:.2f}s")
    assert client.is_alive() is False
    assert not failed, f"{len(failed)} client requests failed during the rolling upgrade"
    assert counts["list-agenda"] > 0

    for name in HOSTS:
        assert installed_version(name) == version, f"{name} has {installed_version(name)}, not {version}"
        since = installed_at(name, version)
        stale = [unit for unit in units(name) if started_at(name, unit) < since]
        assert not stale, f"{name}: still running code from before {version} was installed: {stale}"
        report(f"{name}: agenda-version {version}; restarted onto it: {', '.join(units(name))}")
