"""Gossip on deployed hosts (Molecule scenario failover-gossip): the gateways stop routing to a User
Service instance that stops or hangs, and route to it again once it is back, with no client error.

A reader on the controller GETs /v1/me through the VIP (a new connection each time) the whole time.
Two cases on one host that runs the User Service:

* stopped (`systemctl stop`): its gossip member is PartOf the service, stops first and announces its
  leave, so every other gateway's view drops the instance within a gossip round or two;
* hung (SIGSTOP to the service and its member): nothing answers, nothing is refused; the member is
  suspected, then declared dead after the suspicion timeout (4 x max(1, log10 n) x 1 s), and the
  gateways stop choosing it. Requests it had already been handed wait out the gateway's read timeout
  and are retried on another instance (a GET is idempotent): slower, never failed.

Then the instance comes back (start, SIGCONT) and must be alive and serving in every view again. The
times from the action to every other gateway's view agreeing are printed, not asserted against a
figure; every bound below only keeps a broken system from hanging the run.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests

from deployment.support import SPECS, group_hosts, public_tls, vip_url
from deployment.test_services import Client, new_account
from failover.reporting import print_through
from failover.test_redis_failover import on

testinfra_hosts = SPECS[:1]  # the checks drive every host themselves; run them once

GOSSIP = "/opt/agenda/venv/bin/agenda-gossip"
READ_TIMEOUT = 60.0  # the client's: a GET handed to a hung instance waits out the gateway's 10 s


def report(message: str) -> None:
    print_through(f"failover-gossip: {message}")


def gateway_view(name: str) -> dict[str, dict[str, Any]]:
    shown = on(name, GOSSIP, "--config", "/etc/agenda/gateway/gossip.yml", "members", "--json")
    return {m["name"]: m for m in json.loads(shown)["members"]}


def routed(name: str, member: str) -> bool:
    """Whether the gateway on `name` would choose `member` (alive and serving in its view)."""
    record = gateway_view(name).get(member)
    return record is not None and record["status"] == "alive" and record["state"] == "serving"


def wait_for(predicate: Any, *, timeout: float, what: str) -> float:
    """Seconds until `predicate()` held (polled), or the test fails naming `what`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


class Reader(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="gossip-reader", daemon=True)
        client = Client(vip_url())
        client.login(*new_account(client))
        self.headers = dict(client.session.headers)
        self.done = threading.Event()
        self.count = 0
        self.slowest = 0.0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            try:
                reply = requests.get(
                    f"{vip_url()}/v1/me",
                    headers={**self.headers, "Connection": "close"},
                    verify=public_tls()["verify"],
                    timeout=READ_TIMEOUT,
                )
                if reply.status_code != 200:
                    self.failures.append(f"{reply.status_code} {reply.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.count += 1
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.done.wait(0.05)


def test_gossip_failover_stop_and_hang_of_a_user_service_instance_fail_no_client_request() -> None:
    target = group_hosts("services")[-1]
    member = f"{target}-users"
    watchers = [name for name in group_hosts("gateways") if name != target] or group_hosts("gateways")
    for name in watchers:
        assert routed(name, member), f"{member} is not routable in {name}'s view before the test"
    reader = Reader()
    reader.start()
    try:
        # Stopped: the member leaves before the service stops.
        on(target, "systemctl", "stop", "agenda-users.socket", "agenda-users.service")
        took = wait_for(lambda: not any(routed(n, member) for n in watchers), timeout=30, what="stop noticed")
        report(
            f"systemctl stop of agenda-users on {target}: out of every other gateway's view in {took:.2f} s"
        )
        states = {n: gateway_view(n)[member]["status"] for n in watchers}
        assert set(states.values()) == {"left"}, states
        on(target, "systemctl", "start", "agenda-users.socket", "agenda-users.service")
        took = wait_for(lambda: all(routed(n, member) for n in watchers), timeout=60, what="back after start")
        report(f"started again: routable in every view in {took:.2f} s")

        # Hung: SIGSTOP to every process of the service and of its member; nothing answers.
        on(
            target,
            "systemctl",
            "kill",
            "--signal=SIGSTOP",
            "agenda-users.service",
            "agenda-users-gossip.service",
        )
        try:
            took = wait_for(
                lambda: not any(routed(n, member) for n in watchers), timeout=60, what="hang noticed"
            )
            report(f"SIGSTOP of agenda-users and its member on {target}: out of every view in {took:.2f} s")
            wait_for(
                lambda: all(gateway_view(n)[member]["status"] == "dead" for n in watchers),
                timeout=60,
                what="declared dead",
            )
            served = reader.count
            wait_for(
                lambda: reader.count > served + 20, timeout=60, what="20 more reads with the instance out"
            )
        finally:
            on(
                target,
                "systemctl",
                "kill",
                "--signal=SIGCONT",
                "agenda-users.service",
                "agenda-users-gossip.service",
            )
        took = wait_for(
            lambda: all(routed(n, member) for n in watchers), timeout=60, what="back after SIGCONT"
        )
        report(f"SIGCONT: alive and serving in every view again in {took:.2f} s (it refuted its death)")
    finally:
        reader.done.set()
        reader.join(timeout=READ_TIMEOUT + 5)
    report(
        f"{reader.count} reads through the VIP, {len(reader.failures)} failed, slowest {reader.slowest:.2f} s"
    )
    assert reader.failures == [], reader.failures[:5]
