"""Redis failover on deployed hosts (Molecule scenario failover-redis).

A publisher on the controller publishes through `agenda.messaging` (the primary found through the DB
record, checked with ROLE, re-located on failure) every 50 ms, bounded in count and time. Then, one
case after the other: the Redis primary is SIGKILLed and kept down (a replica is promoted and recorded
with epoch + 1), started again (it rejoins as a replica), the acting supervisor is SIGKILLed (another
acts within the lock's ttl and still fails over), and the primary's host is cut off the network and
healed (afterwards exactly one Redis answers as primary, the recorded one). Gaps are printed, not
asserted against a figure; every bound below only keeps a broken system from hanging the run.

Meanwhile users live on it: an organizer invites one of three users through the VIP every half
second, and each invitee holds a notification stream open at the VIP. At the end every stored
notification must have reached its invitee's stream, live, or replayed by Last-Event-ID on a stream
reopened after the first one ended (the network cut can end it); how they arrived is printed.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agenda.messaging import Publisher, RedisLocator
from deployment.support import (
    PKI_DIR,
    SPECS,
    db_client,
    group_hosts,
    host_vars,
    public_tls,
    tls_settings,
    vip_url,
)
from deployment.test_services import Client, new_account
from failover.reporting import print_through
from sse_client import SseStream

testinfra_hosts = SPECS[:1]  # the checks drive every host themselves; run them once

REDIS_HOSTS = group_hosts("redis")
PORT = 6379
PRIMARY_KEY = "/system/redis/primary"
CA, CERT, KEY = "/etc/agenda/pki/ca.crt", "/etc/agenda/pki/host.crt", "/etc/agenda/pki/host.key"
SUPERVISOR = (
    "/opt/agenda/venv/bin/agenda-redis-supervisor --config /etc/agenda/redis-supervisor/supervisor.yml"
)
FAILOVER_BOUND = 30.0  # seconds; down_after is 1 s, the lock's ttl 3 s
CUT_TABLE = "agenda_redis_cut"


def report(case: str, message: str) -> None:
    print_through(f"failover-redis: {case}: {message}")


def on(name: str, *argv: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", "exec", "-i", name, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{name}: {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s (roles now: {roles()})")


def ip(name: str) -> str:
    return host_vars(name)["agenda_host_ip"]


def name_of(address: str) -> str:
    return next(name for name in REDIS_HOSTS if ip(name) == address)


def secret(name: str) -> str:
    return (PKI_DIR / name).read_text().strip()


def role(name: str) -> str | None:
    """The first word of ROLE on a host's Redis (as the supervisor's ACL user), None if it does not answer."""
    proc = subprocess.run(
        [
            "docker",
            "exec",
            name,
            "timeout",
            "3",
            "redis-cli",
            "--tls",
            "--cacert",
            CA,
            "--cert",
            CERT,
            "--key",
            KEY,
            "--user",
            "supervisor",
            "--pass",
            secret("redis-supervisor-password"),
            "--no-auth-warning",
            "-h",
            ip(name),
            "-p",
            str(PORT),
            "ROLE",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines and lines[0] in ("master", "slave") else None


def roles() -> dict[str, str | None]:
    return {name: role(name) for name in REDIS_HOSTS}


def record() -> dict[str, Any] | None:
    try:
        with db_client(retries=1) as db:
            kv = db.get(PRIMARY_KEY)
    except Exception:
        return None
    return None if kv is None else kv["value"]


def supervisor(name: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        ["docker", "exec", name, *SUPERVISOR.split(), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def acting() -> str | None:
    for name in REDIS_HOSTS:
        status = supervisor(name)
        if status and status["acting"]:
            return name
    return None


def steady() -> dict[str, Any]:
    """One recorded primary answering as primary, every other Redis its replica, one supervisor acting."""

    def check() -> dict[str, Any] | None:
        current = record()
        if current is None or acting() is None:
            return None
        now = roles()
        primary = name_of(current["host"])
        if now[primary] != "master" or any(now[n] != "slave" for n in REDIS_HOSTS if n != primary):
            return None
        return current

    return wait_for(check, timeout=FAILOVER_BOUND * 2, what="the steady state", interval=0.2)


# --------------------------------------------------------------------------------- the publisher


@dataclass
class Sent:
    at: float
    ok: bool
    took: float  # the publish call, its retries included


class Publishing(threading.Thread):
    """Publishes every `period` through agenda.messaging, as a service would; records every outcome."""

    def __init__(self, *, period: float = 0.05, max_count: int = 40_000, max_seconds: float = 900.0) -> None:
        super().__init__(name="redis-publisher", daemon=True)
        self.period, self.max_count, self.max_seconds = period, max_count, max_seconds
        self.sent: list[Sent] = []
        self._stop_event = threading.Event()
        settings = tls_settings()
        self.db = db_client()
        self.locator = RedisLocator(
            self.db,
            username=host_vars(REDIS_HOSTS[0]).get("redis_acl_services_user", "agenda"),
            password=secret("redis-services-password"),
            ssl_ca_certs=settings["verify"],
            ssl_certfile=settings["cert"][0],
            ssl_keyfile=settings["cert"][1],
        )
        self.publisher = Publisher(self.locator, deadline=1.0)

    def run(self) -> None:
        started = time.monotonic()
        while (
            not self._stop_event.is_set()
            and len(self.sent) < self.max_count
            and time.monotonic() - started < self.max_seconds
        ):
            at = time.monotonic()
            try:
                self.publisher.publish("notifications:failover-probe", {"n": len(self.sent)})
                ok = True
            except Exception:
                ok = False
            self.sent.append(Sent(at, ok, time.monotonic() - at))
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        self.locator.close()
        self.db.close()

    def gap_since(self, since: float) -> tuple[float, int]:
        """The longest time without a completed publish from the last one before `since` (seconds:
        failed publishes and publishes held up by their retries both count), and the failed ones."""
        done = sorted(s.at + s.took for s in self.sent if s.ok)
        before = [t for t in done if t < since]
        marks = before[-1:] + [t for t in done if t >= since]
        longest = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
        return longest, sum(1 for s in self.sent if s.at >= since and not s.ok)

    def window(self, since: float) -> str:
        """What the publisher did since `since`: for reading the gap figures."""
        sent = [s for s in self.sent if s.at >= since]
        slowest = max((s.took for s in sent), default=0.0)
        return f"{len(sent)} publishes since, {sum(s.ok for s in sent)} ok, the slowest call {slowest:.2f}s"


@pytest.fixture(scope="module")
def publishing() -> Iterator[Publishing]:
    steady()
    thread = Publishing()
    thread.start()
    wait_for(lambda: sum(s.ok for s in thread.sent) >= 20, timeout=60, what="the publisher under way")
    yield thread
    thread.stop()


def fail_over(case: str, publishing: Publishing, before: dict[str, Any], t0: float) -> dict[str, Any]:
    """Wait for the record's next epoch and its primary answering as primary; report the gaps."""
    after = wait_for(
        lambda: (r := record()) is not None and r["epoch"] > before["epoch"] and r,
        timeout=FAILOVER_BOUND,
        what=f"{case}: a new primary recorded",
    )
    recorded_at = time.monotonic()
    new = name_of(after["host"])
    wait_for(
        lambda: role(new) == "master", timeout=FAILOVER_BOUND, what=f"{case}: {new} answering as primary"
    )
    report(
        case,
        f"{new} recorded with epoch {after['epoch']} {recorded_at - t0:.2f}s after the failure; "
        + publishing_resumed(case, publishing, recorded_at, t0),
    )
    return after


def publishing_resumed(case: str, publishing: Publishing, after: float, since: float) -> str:
    """Once a publish started after `after` succeeded: the publishing gap since `since`, as words."""
    wait_for(
        lambda: any(s.ok and s.at > after for s in publishing.sent),
        timeout=FAILOVER_BOUND,
        what=f"{case}: publishing to resume",
    )
    gap, failed = publishing.gap_since(since)
    return f"no publish completed for {gap:.2f}s ({failed} failed); {publishing.window(since)}"


# ------------------------------------------------------------------------- users and their streams


def open_stream(client: Client, last_event_id: str | None = None) -> SseStream:
    headers = {"Authorization": client.session.headers["Authorization"]}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    stream = SseStream(f"{vip_url()}/v1/notifications/stream", headers, verify=public_tls()["verify"]).start()
    assert stream.status == 200, f"the stream answered {stream.status}"
    wait_for(lambda: stream.retry is not None, timeout=15, what="a stream's first line")
    return stream


def created_at(note: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(note["created"].replace("Z", "+00:00")).timestamp()


class Notifying(threading.Thread):
    """An organizer inviting one of three users (round robin) every `period`, bounded in count and
    time; each invitee holds a notification stream open at the VIP."""

    def __init__(self, *, period: float = 0.5, max_count: int = 2_000, max_seconds: float = 900.0) -> None:
        super().__init__(name="inviter", daemon=True)
        self.period, self.max_count, self.max_seconds = period, max_count, max_seconds
        self._stop_event = threading.Event()
        base = vip_url()
        self.organizer = Client(base)
        self.organizer.login(*new_account(self.organizer))
        self.invitees: dict[str, Client] = {}
        for _ in range(3):
            client = Client(base)
            name, password = new_account(client)
            client.login(name, password)
            self.invitees[name] = client
        self.streams = {name: open_stream(client) for name, client in self.invitees.items()}
        self.created = 0
        self.refused: list[str] = []

    def run(self) -> None:
        from datetime import UTC, datetime, timedelta

        started = time.monotonic()
        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=400)
        names = list(self.invitees)
        for n in itertools.count():
            if (
                self._stop_event.is_set()
                or n >= self.max_count
                or time.monotonic() - started > self.max_seconds
            ):
                return
            start = first + timedelta(hours=n)  # one slot each: the organizer never double-books
            body = {
                "title": f"failover-redis {n}",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                "participants": [names[n % len(names)]],
            }
            try:
                response = self.organizer.call("POST", "/v1/events", json=body)
                if response.status_code == 201:
                    self.created += 1
                else:
                    self.refused.append(f"{response.status_code} {response.text[:120]}")
            except Exception as exc:  # the VIP moving, a host cut off: counted, not fatal
                self.refused.append(f"{type(exc).__name__}: {exc}")
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=60)

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


@pytest.fixture(scope="module")
def notifying(publishing: Publishing) -> Iterator[Notifying]:
    thread = Notifying()
    thread.start()
    wait_for(lambda: thread.created >= 6, timeout=60, what="the inviter under way")
    yield thread
    thread.stop()
    thread.close()


# ----------------------------------------------------------------------------------------- cases


def test_primary_killed_a_replica_is_promoted_and_the_old_one_rejoins_as_a_replica(publishing, notifying):
    case = "primary-killed"
    before = steady()
    old = name_of(before["host"])
    t0 = time.monotonic()
    on(old, "systemctl", "kill", "--signal=KILL", "redis-server")
    on(old, "systemctl", "stop", "redis-server")  # kept down: systemd would start it again
    after = fail_over(case, publishing, before, t0)
    assert after["host"] != before["host"]
    on(old, "systemctl", "start", "redis-server")
    rejoined = wait_for(lambda: role(old) == "slave", timeout=FAILOVER_BOUND, what=f"{case}: {old} a replica")
    assert rejoined
    report(case, f"{old} started again and answers as a replica; roles {roles()}")
    assert steady()["epoch"] == after["epoch"]


def test_acting_supervisor_killed_another_acts_and_still_fails_over(publishing, notifying):
    case = "supervisor-killed"
    before = steady()
    holder = acting()
    assert holder is not None
    t0 = time.monotonic()
    on(holder, "systemctl", "kill", "--signal=KILL", "agenda-redis-supervisor")
    successor = wait_for(
        acting, timeout=FAILOVER_BOUND, what=f"{case}: a supervisor acting again", interval=0.1
    )
    report(case, f"{successor} acts {time.monotonic() - t0:.2f}s after {holder}'s supervisor was SIGKILLed")
    old = name_of(before["host"])
    t1 = time.monotonic()
    on(old, "systemctl", "kill", "--signal=KILL", "redis-server")
    on(old, "systemctl", "stop", "redis-server")
    fail_over(case, publishing, before, t1)
    on(old, "systemctl", "start", "redis-server")
    steady()


def cut_ruleset(interface: str) -> str:
    return f"""
table netdev {CUT_TABLE} {{
    chain in {{ type filter hook ingress device "{interface}" priority -500; policy drop; }}
    chain out {{ type filter hook egress device "{interface}" priority -500; policy drop; }}
}}
"""


def test_primary_host_cut_off_and_healed_one_primary_remains(publishing, notifying):
    case = "network-cut"
    before = steady()
    old = name_of(before["host"])
    interface = on(old, "sh", "-c", f"ip -o -4 addr show | awk '$4 ~ /^{ip(old)}\\// {{print $2}}'").strip()
    assert interface, f"no interface of {old} carries {ip(old)}"
    t0 = time.monotonic()
    on(old, "nft", "-f", "-", stdin=cut_ruleset(interface))
    try:
        # With the DB's majority on the other side, a replica there is promoted; with the majority on
        # the cut host, nothing can be recorded, so nothing fails over (and nothing may).
        deadline = time.monotonic() + FAILOVER_BOUND / 2
        while time.monotonic() < deadline and ((r := record()) is None or r["epoch"] == before["epoch"]):
            time.sleep(0.2)
        during = record()
        report(case, f"during the cut: record {during}; roles seen from the controller {roles()}")
    finally:
        on(old, "nft", "delete", "table", "netdev", CUT_TABLE)
    healed_at = time.monotonic()
    after = steady()
    masters = [name for name, r in roles().items() if r == "master"]
    assert masters == [name_of(after["host"])], f"after the heal: {roles()}"
    settled = time.monotonic() - healed_at
    report(
        case,
        f"healed: one primary, {masters[0]} (epoch {after['epoch']}), {settled:.2f}s after, "
        + publishing_resumed(case, publishing, healed_at, t0),
    )


def test_the_publisher_ran_throughout(publishing):
    assert publishing.is_alive(), "the publisher stopped early (its bounds are too tight)"
    failed = sum(1 for s in publishing.sent if not s.ok)
    report("all cases", f"{len(publishing.sent)} publishes, {failed} failed")


def test_every_stored_notification_reached_its_invitees_stream(notifying):
    assert notifying.is_alive(), "the inviter stopped early (its bounds are too tight)"
    notifying.stop()
    lines, latencies = [], []
    for name, client in notifying.invitees.items():
        stored = client.call("GET", "/v1/notifications", params={"limit": "500"}).json()["notifications"]
        stored_ids = [note["id"] for note in stored]
        first = notifying.streams[name]
        live = list(first.events)
        latencies += [event.at - created_at(event.data) for event in live]
        seen = [event.data["id"] for event in live]
        replayed: list[str] = []
        if set(seen) != set(stored_ids):
            # The first stream missed some (or ended): reopen it where it stopped, as EventSource does.
            resumed = open_stream(client, live[-1].id if live else None)
            try:
                wanted = set(stored_ids)
                wait_for(
                    lambda resumed=resumed, seen=seen, wanted=wanted: set(seen) | set(resumed.ids) >= wanted,
                    timeout=30,
                    what=f"{name}'s missed notifications replayed by Last-Event-ID",
                )
                replayed = [i for i in resumed.ids if i not in seen]
            finally:
                resumed.close()
        assert set(seen) | set(replayed) == set(stored_ids)
        assert len(seen) == len(set(seen)), f"{name}'s stream sent a notification twice"
        ended = f" (it ended: {first.error})" if first.ended.is_set() else ""
        lines.append(
            f"{name}: {len(stored_ids)} stored, {len(seen)} live on the first stream{ended}, "
            f"{len(replayed)} replayed"
        )
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    report(
        "streams",
        f"{notifying.created} invitations created, {len(notifying.refused)} refused or failed "
        f"{notifying.refused[:3]}; created-to-stream latency p50 {pick(0.5):.3f}s p99 {pick(0.99):.3f}s "
        f"max {latencies[-1]:.3f}s; " + "; ".join(lines),
    )
