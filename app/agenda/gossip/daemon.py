"""The agenda-gossip daemon: one service instance's member of the cluster, on real sockets.

It starts a :class:`~agenda.gossip.protocol.Node` under an :class:`~agenda.gossip.agent.Agent` and

* writes the view it holds to ``view_file`` (the format is :mod:`agenda.common.discovery`'s) on every
  change and every ``view_refresh_ms``, so the host's routers (the gateway's workers) read a fresh list
  without talking to the daemon, and can tell a stale file from a live one;
* checks the service's health URL and announces ``state: unhealthy`` after ``health_failures`` failed
  checks in a row, ``serving`` again after one success, so routers stop sending to an instance whose
  process is up but whose service is not (a crashed or hung service behind a live daemon);
* on SIGTERM announces its leave (LEFT in every view within a gossip round or two), then exits: systemd
  stops it before the service it is bound to, so routers stop choosing the instance before it stops;
* on SIGHUP re-reads the key file, the rotation path of :mod:`agenda.gossip.keyring`.

The incarnation starts at the wall clock in seconds, as Cassandra's generation: a restarted member
outbids every record of its previous life at once, tombstones included.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType

import requests

from agenda.common.config import Config, ConfigError
from agenda.common.discovery import ViewMember, write_view
from agenda.gossip import settings
from agenda.gossip.agent import Agent
from agenda.gossip.keyring import Keyring
from agenda.gossip.member import Member, Meta
from agenda.gossip.protocol import Node, NodeStatus

__all__ = ["GossipDaemon", "view_members"]

log = logging.getLogger(__name__)

SERVING = "serving"
UNHEALTHY = "unhealthy"


def view_members(members: Mapping[str, Member]) -> list[ViewMember]:
    return [
        ViewMember(
            name=m.name,
            addr=m.addr,
            incarnation=m.incarnation,
            status=m.status.value,
            service=m.meta.service,
            api_url=m.meta.api_url,
            version=m.meta.version,
            state=m.meta.state,
        )
        for m in sorted(members.values(), key=lambda m: m.name)
    ]


class GossipDaemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.name = settings.member_name(cfg)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._view_lock = threading.Lock()
        self.agent = Agent(cfg.bind)
        self.node = Node(
            self.name,
            settings.advertised(cfg),
            Keyring(settings.read_keys(cfg.keys_file), label=cfg.label),
            wall=lambda _now: time.time(),
            meta=Meta(service=cfg.service, api_url=cfg.api_url, version=settings.version(cfg), state=SERVING),
            config=settings.timers(cfg),
            incarnation=int(time.time()),
        )
        self._session = requests.Session()
        self._session.trust_env = False
        if cfg.health_url.startswith("https://") and cfg["health_tls.enabled"]:
            self._session.verify = cfg["health_tls.ca"]
            self._session.cert = (cfg["health_tls.cert"], cfg["health_tls.key"])
        self._failures = 0
        self._state = SERVING
        self._seen: dict[str, Member] = {}
        self._status: NodeStatus | None = None

    # Signals ----------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # Running ----------------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        self.agent.start(self.node, list(cfg.seeds), on_change=self._on_change)
        log.info(
            "gossip member %s at %s (bind %s), service %s, seeds %s",
            self.name,
            self.node.addr,
            self.agent.address,
            cfg.service,
            ", ".join(cfg.seeds) or "none",
        )
        next_view = next_health = time.monotonic()
        try:
            while not self._stop.is_set():
                if not self.agent.running:
                    # Its view would go on being rewritten, fresh-looking and frozen: exit instead.
                    raise RuntimeError("the gossip loop is not running")
                now = time.monotonic()
                if self._reload.is_set():
                    self._reload.clear()
                    self._rotate_keys()
                if cfg.health_url and now >= next_health:
                    next_health = now + cfg.health_interval_ms / 1000
                    self._check_health()
                if now >= next_view:
                    next_view = now + cfg.view_refresh_ms / 1000
                    self._write_view(self.agent.members)
                    self._note_status()
                wait = min(next_view, next_health if cfg.health_url else next_view) - time.monotonic()
                self._wake.wait(max(0.01, wait))
                self._wake.clear()
        finally:
            self.shutdown()

    def _note_status(self) -> None:
        """Say when the member is alone (no seed answers: it keeps trying them) and when it joins."""
        status = self.agent.call(lambda node, _now: node.status)
        if status is self._status:
            return
        if status is NodeStatus.ALONE:
            seeds = ", ".join(self.cfg.seeds) or "none configured"
            log.warning("alone: no other member answers; retrying the seeds (%s)", seeds)
        elif status is NodeStatus.JOINED:
            log.info(
                "joined: %d live member(s) in the view",
                len([m for m in self.agent.members.values() if m.live]),
            )
        self._status = status

    def shutdown(self) -> None:
        left = False
        with contextlib.suppress(RuntimeError):  # the agent is stopped already
            left = self.agent.leave(timeout=self.cfg.leave_timeout_s)
        log.info("gossip member %s %s", self.name, "left" if left else "stopped without confirming its leave")
        self.agent.stop()

    def _rotate_keys(self) -> None:
        try:
            keys = settings.read_keys(self.cfg.keys_file)
        except ConfigError as exc:
            log.error("key ring not reloaded, the old one stays: %s", exc)
            return

        def rotate(node: Node, _now: float) -> None:
            node.keyring = node.keyring.rotated(keys)

        self.agent.call(rotate)
        log.info("key ring reloaded: %d key(s)", len(keys))

    def _check_health(self) -> None:
        timeout = self.cfg.health_timeout_ms / 1000
        try:
            response = self._session.get(self.cfg.health_url, timeout=timeout)
            healthy = response.status_code == 200
            response.close()
        except requests.RequestException:
            healthy = False
        self._failures = 0 if healthy else self._failures + 1
        state = self._state
        if healthy:
            state = SERVING
        elif self._failures >= self.cfg.health_failures:
            state = UNHEALTHY
        if state != self._state:
            log.warning("%s is now %s", self.cfg.health_url, state)
            self._state = state
            self.agent.update(state=state)

    def _on_change(self, members: Mapping[str, Member]) -> None:
        """In the loop thread: log what changed (an operator's history of the cluster), write the view."""
        for name, member in members.items():
            before = self._seen.get(name)
            if before is None or (before.status, before.meta.state) != (member.status, member.meta.state):
                was = "new" if before is None else f"{before.status.value}/{before.meta.state}"
                log.info(
                    "member %s at %s: %s -> %s/%s (incarnation %d)",
                    name,
                    member.addr,
                    was,
                    member.status.value,
                    member.meta.state,
                    member.incarnation,
                )
        self._seen = dict(members)
        self._write_view(members)

    def _write_view(self, members: Mapping[str, Member]) -> None:
        if not self.cfg.view_file:
            return
        # Called from the loop thread (changes) and the main thread (refresh): one writer at a time.
        with self._view_lock:
            try:
                write_view(self.cfg.view_file, self.name, view_members(members))
            except OSError as exc:
                log.error("view not written to %s: %s", self.cfg.view_file, exc)
