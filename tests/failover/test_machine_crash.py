"""A whole machine's crash (Molecule scenario failover-crash): how long until a surviving gateway writes.

The last host (it holds the fewest DB members, so the rest keep a quorum even with two machines) is
crashed with `docker kill`: its addresses stop answering at once, nothing is refused. A writer on the
controller sends create-event through the first host's gateway at its own address (not the VIP, whose
move is failover-vip's business), one request after the other. Measured from the kill: when the first
request sent after it got its 201 (the issue's figure: 8.0 s before this work), and the longest wait of
any request in the 15 s after. The clock starts before `docker kill` runs, and only a request sent
after it has returned counts as the first write (one sent meanwhile could reach the host alive).
The DB leader is moved to a member on the crashed host first, so every trial also pays an election.
The host is started again and everything must be healthy before the next trial. Printed per trial
and as a median; the bounds only keep a broken system from hanging the run.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import requests

from deployment.support import SPECS, db_client, db_members, group_hosts, host_vars, public_tls
from deployment.test_services import Client, new_account
from failover.reporting import print_through
from failover.test_vip_failover import docker, wait_for_services

testinfra_hosts = SPECS[:1]  # the checks drive every host themselves; run them once

# Three in the test suite (each trial restarts a whole machine, about a minute); the figure,
# the median of five: AGENDA_CRASH_TRIALS=5 molecule verify -s failover-crash.
TRIALS = int(os.environ.get("AGENDA_CRASH_TRIALS", "3"))
WRITE_TIMEOUT = 30.0
WATCH = 15.0  # seconds after the kill over which the longest wait is taken


def report(message: str) -> None:
    print_through(f"failover-crash: {message}")


class Writer(threading.Thread):
    """create-event through one gateway, one after the other; (sent, done, ok) for each."""

    def __init__(self, base: str) -> None:
        super().__init__(name="crash-writer", daemon=True)
        self.base = base
        client = Client(base)
        client.login(*new_account(client))
        self.headers = {**client.session.headers}
        self.session = requests.Session()
        self.session.verify = public_tls()["verify"]
        self.session.trust_env = False
        self.done = threading.Event()
        self.outcomes: list[tuple[float, float, bool]] = []
        self._slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=30)

    def run(self) -> None:
        while not self.done.is_set():
            self._slot += timedelta(hours=1)
            event = {
                "title": "crash",
                "start": self._slot.isoformat(),
                "end": (self._slot + timedelta(minutes=30)).isoformat(),
            }
            sent = time.monotonic()
            try:
                reply = self.session.post(
                    f"{self.base}/v1/events",
                    json=event,
                    headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
                    timeout=WRITE_TIMEOUT,
                )
                ok = reply.status_code == 201
            except requests.RequestException:
                ok = False
            self.outcomes.append((sent, time.monotonic(), ok))
            if not ok:
                self.done.wait(0.05)

    def first_success_after(self, moment: float) -> float | None:
        done = [end for sent, end, ok in self.outcomes if ok and sent >= moment]
        return min(done) - moment if done else None

    def longest_wait(self, start: float, end: float) -> float:
        return max((finish - sent for sent, finish, _ in self.outcomes if start <= sent <= end), default=0.0)


def move_leader_to(host: str) -> str:
    """Hand DB leadership on (the leader picks a caught-up follower) until a member on `host` leads."""
    on_host = {m["id"] for m in db_members() if m["host"] == host}
    client = db_client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        leader = client.cluster().get("leader")
        if leader in on_host:
            return leader
        if leader is not None:
            client.http.post("/v1/cluster/transfer-leadership", json={"from": leader})
        time.sleep(1.0)
    raise AssertionError(f"no member on {host} came to lead within 60 s")


def test_machine_crash_a_surviving_gateway_writes_again_quickly() -> None:
    victim = group_hosts("gateways")[-1]
    survivor = next(name for name in group_hosts("gateways") if name != victim)
    writer = Writer(f"https://{host_vars(survivor)['agenda_host_ip']}")
    writer.start()
    firsts: list[float] = []
    try:
        for trial in range(1, TRIALS + 1):
            leader = move_leader_to(victim)
            time.sleep(2)  # the writer settles on the new leader
            # Counted from before `docker kill` runs, but only a write sent after it has returned
            # counts: one sent while the CLI was still on its way could reach a host still alive.
            began = time.monotonic()
            docker("kill", victim)
            killed = time.monotonic()
            deadline = killed + 60
            while writer.first_success_after(killed) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            first = writer.first_success_after(killed)
            assert first is not None, f"trial {trial}: no write succeeded within 60 s of the crash"
            first += killed - began
            time.sleep(max(0.0, began + WATCH - time.monotonic()))
            longest = writer.longest_wait(began, began + WATCH)
            firsts.append(first)
            report(
                f"trial {trial}: {victim} killed (DB leader {leader} on it): first write through {survivor} "
                f"{first:.2f} s after; longest wait of a write in the next {WATCH:.0f} s {longest:.2f} s"
            )
            docker("start", victim)
            wait_for_services(victim)
    finally:
        writer.done.set()
        writer.join(timeout=WRITE_TIMEOUT + 5)
    report(f"median of {len(firsts)}: first write {statistics.median(firsts):.2f} s after the crash")
