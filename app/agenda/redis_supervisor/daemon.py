"""agenda-redis-supervisor's loop: observe, decide (pure, :mod:`.decide`), carry out, report.

Every ``interval_ms`` the supervisor asks every configured Redis server for its ROLE (in parallel,
each bounded by ``timeout_ms``). Only the one holding the DB lock (:mod:`.lock`) acts: it reads the
recorded primary (``primary_key``) when it acquires the lock and once a second after, decides, and
carries out the actions in order. The record is written in one DB transaction that compares the lock
key's revision (the fence) and the record's own revision (nobody else changed it), so a supervisor
that lost its lock, or raced another, records nothing and therefore promotes nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from http.server import ThreadingHTTPServer
from typing import Any

import redis

from agenda.common.config import Config
from agenda.common.service import client_tls
from agenda.common.status_http import start_status_server
from agenda.db.client import DBClient, DBError
from agenda.db.txn import txn_compare, txn_put
from agenda.messaging import record as messaging_record
from agenda.messaging.errors import MalformedRecord
from agenda.redis_supervisor.config import supervisor_name
from agenda.redis_supervisor.decide import (
    Follow,
    Memory,
    Observation,
    Promote,
    Record,
    Recorded,
    Verdict,
    decide,
)
from agenda.redis_supervisor.lock import DBLock
from agenda.redis_supervisor.redis_io import RedisFleet

log = logging.getLogger("agenda.redis_supervisor")

RECORD_REFRESH = 1.0  # seconds between two reads of the record while acting (we are its only writer)


def parse_record(value: Any) -> Recorded:
    """The record as the locators read it (agenda.messaging, one parser for writer and readers)."""
    record = messaging_record.parse_record(value)
    return Recorded(record.name, record.host, record.port, record.epoch)


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        *,
        db: DBClient | None = None,
        fleet: RedisFleet | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.name = supervisor_name(cfg)
        verify, cert = client_tls(cfg.db_tls)
        # Short timeouts and one retry: the loop must keep its rhythm while a DB member is down.
        self.db = db or DBClient(list(cfg.db_urls), timeout=(0.5, 1.5), retries=1, verify=verify, cert=cert)
        self.lock = DBLock(self.db, cfg.lock_key, self.name, cfg.lock_ttl, clock=clock)
        self.fleet = fleet or RedisFleet(cfg)
        self.memory = Memory()
        self.recorded: Recorded | None = None
        self.recorded_revision = 0  # the record's mod_revision (0: absent)
        self.record_read_at: float | None = None
        self.record_error: str | None = None
        self.verdict: Verdict | None = None
        self.acting = False
        self.failovers = 0
        self.last_failover: dict[str, Any] | None = None
        self.actions_done: dict[str, int] = {"record": 0, "promote": 0, "follow": 0}
        self.action_failures: dict[str, int] = {"record": 0, "promote": 0, "follow": 0}
        self.rounds = 0
        self.started_at = clock()
        self._stop = threading.Event()
        self._status_lock = threading.Lock()
        self.status_server: ThreadingHTTPServer | None = None
        self._last_situation: tuple[Any, ...] = ()

    # -------------------------------------------------------------------------------- the record

    def _read_record(self) -> None:
        sent_at = self.clock()
        try:
            kv = self.db.get(self.cfg.primary_key)
        except DBError as exc:
            log.warning("redis-supervisor: cannot read the recorded primary: %s", exc)
            self.record_read_at = None  # read again next round
            return
        self.lock.note_db_ok(sent_at)
        self.record_read_at = sent_at
        if kv is None:
            self.recorded, self.recorded_revision, self.record_error = None, 0, None
            return
        self.recorded_revision = int(kv["mod_revision"])
        try:
            self.recorded, self.record_error = parse_record(kv["value"]), None
        except MalformedRecord as exc:
            # Overwritten at the next decision (compared on its revision), never trusted.
            self.recorded, self.record_error = None, str(exc)
            log.error("redis-supervisor: the value under %s is not a record: %s", self.cfg.primary_key, exc)

    def _write_record(self, action: Record) -> bool:
        value = {"name": action.name, "host": action.host, "port": action.port, "epoch": action.epoch}
        try:
            result = self.db.txn(
                compare=[
                    self.lock.fence(),
                    txn_compare(self.cfg.primary_key, "mod_revision", "eq", self.recorded_revision),
                ],
                success=[txn_put(self.cfg.primary_key, value)],
            )
        except (DBError, RuntimeError) as exc:
            log.error("redis-supervisor: recording %s failed: %s", action.name, exc)
            self.record_read_at = None
            return False
        if not result.get("succeeded"):
            log.error(
                "redis-supervisor: recording %s refused: the lock or the record changed meanwhile",
                action.name,
            )
            self.record_read_at = None
            return False
        self.recorded = Recorded(action.name, action.host, action.port, action.epoch)
        self.recorded_revision = int(result["revision"])
        return True

    # ---------------------------------------------------------------------------------- the loop

    def round(self) -> Verdict:
        now = self.clock()
        lock = self.lock.state()
        if lock.held and not self.acting:
            self.record_read_at = None  # a new term of acting: read the record afresh
        self.acting = lock.held
        if lock.held and (self.record_read_at is None or now - self.record_read_at >= RECORD_REFRESH):
            self._read_record()
        servers = self.fleet.observe()
        db_ok_at = self.lock.state().db_ok_at  # fresh: the lock's thread kept the lease meanwhile
        db_quorum = db_ok_at is not None and self.clock() - db_ok_at < self.cfg.lock_ttl
        observation = Observation(
            now=self.clock(),
            servers=servers,
            recorded=self.recorded if lock.held else None,
            holds_lock=lock.held and self.record_read_at is not None,
            db_quorum=db_quorum,
            down_after=self.cfg.down_after_ms / 1000,
            bootstrap=self.cfg.bootstrap or None,
        )
        failing_since = self.memory.failing_since
        verdict = decide(observation, self.memory)
        self.memory = verdict.memory
        if not lock.held and not db_quorum and now - self.started_at > self.cfg.lock_ttl:
            verdict = Verdict([], self.memory, "the DB answers nothing: cannot act", waiting="no DB quorum")
        self._carry_out(verdict, failing_since)
        with self._status_lock:
            self.verdict = verdict
            self.servers = servers
            self.rounds += 1
        # One line per change of situation, not per round (the summary carries a running duration).
        situation = (verdict.waiting, verdict.primary_ok, self.recorded, lock.held)
        if situation != self._last_situation:
            log.info(
                "redis-supervisor: %s", verdict.summary, extra={"event": "state", "waiting": verdict.waiting}
            )
            self._last_situation = situation
        return verdict

    def _carry_out(self, verdict: Verdict, failing_since: float | None) -> None:
        for action in verdict.actions:
            kind = type(action).__name__.lower()
            ok = self._write_record(action) if isinstance(action, Record) else self._redis_action(action)
            self.actions_done[kind] += ok
            self.action_failures[kind] += not ok
            log.info(
                "redis-supervisor: %s %s: %s (%s)",
                kind,
                action.name,
                "done" if ok else "FAILED",
                action.reason,
                extra={"event": kind, "server": action.name, "ok": ok},
            )
            if isinstance(action, Promote) and ok and self.recorded is not None and self.recorded.epoch > 1:
                self._note_failover(action, failing_since)
            if not ok and isinstance(action, Record | Promote):
                return  # never point the others at a primary that is not recorded or not promoted

    def _redis_action(self, action: Promote | Follow) -> bool:
        try:
            if isinstance(action, Promote):
                self.fleet.promote(action.name)
            else:
                self.fleet.follow(action.name, action.host, action.port)
        except redis.exceptions.RedisError as exc:
            log.warning("redis-supervisor: %s: %s", action.name, exc)
            return False
        return True

    def _note_failover(self, action: Promote, failing_since: float | None) -> None:
        self.failovers += 1
        done = self.clock()
        self.last_failover = {
            "to": action.name,
            "epoch": self.recorded.epoch if self.recorded else None,
            "seconds_since_first_failure": round(done - failing_since, 3)
            if failing_since is not None
            else None,
            "at": time.time(),
        }

    def run(self) -> None:
        self.lock.start()
        if self.cfg.status_addr:
            self.status_server = start_status_server(self.cfg.status_addr, self.status, self.metrics)
        interval = self.cfg.interval_ms / 1000
        try:
            while not self._stop.is_set():
                started = self.clock()
                try:
                    self.round()
                except Exception:  # the loop must outlive any one round's surprise; it is logged whole
                    log.exception("redis-supervisor: round failed")
                self._stop.wait(max(0.0, interval - (self.clock() - started)))
        finally:
            self.lock.stop(release=True)
            self.fleet.close()
            if self.status_server is not None:
                self.status_server.shutdown()

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    # ------------------------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        lock = self.lock.state()
        with self._status_lock:
            verdict = self.verdict
            servers = list(getattr(self, "servers", []))
            return {
                "name": self.name,
                "acting": lock.held,
                "lock_holder": lock.holder,
                "recorded": asdict(self.recorded) if self.recorded and lock.held else None,
                "record_error": self.record_error,
                "summary": verdict.summary if verdict else "starting",
                "waiting": verdict.waiting if verdict else None,
                "primary_ok": verdict.primary_ok if verdict else False,
                "servers": [asdict(s) for s in servers],
                "failovers": self.failovers,
                "last_failover": self.last_failover,
                "actions": dict(self.actions_done),
                "action_failures": dict(self.action_failures),
                "redis_failures": {
                    f"{name} {reason}": n for (name, reason), n in self.fleet.failures.items()
                },
                "lock": {"acquisitions": self.lock.acquisitions, "losses": self.lock.losses},
                "rounds": self.rounds,
            }

    def metrics(self) -> str:
        status = self.status()
        lines = [
            "# HELP agenda_redis_supervisor_acting 1 while this supervisor holds the lock and acts",
            "# TYPE agenda_redis_supervisor_acting gauge",
            f"agenda_redis_supervisor_acting {int(status['acting'])}",
            "# HELP agenda_redis_supervisor_primary_ok 1 while the recorded primary answers as primary",
            "# TYPE agenda_redis_supervisor_primary_ok gauge",
            f"agenda_redis_supervisor_primary_ok {int(status['primary_ok'])}",
            "# HELP agenda_redis_supervisor_failovers_total failovers this supervisor carried out",
            "# TYPE agenda_redis_supervisor_failovers_total counter",
            f"agenda_redis_supervisor_failovers_total {status['failovers']}",
            "# HELP agenda_redis_supervisor_actions_total actions carried out, by kind and outcome",
            "# TYPE agenda_redis_supervisor_actions_total counter",
        ]
        for kind in ("record", "promote", "follow"):
            for ok, counts in (("true", status["actions"]), ("false", status["action_failures"])):
                labels = f'kind="{kind}",ok="{ok}"'
                lines.append(f"agenda_redis_supervisor_actions_total{{{labels}}} {counts[kind]}")
        lines += [
            "# HELP agenda_redis_supervisor_redis_failures_total failed observations, by server and reason",
            "# TYPE agenda_redis_supervisor_redis_failures_total counter",
        ]
        for (name, reason), count in sorted(self.fleet.failures.items()):
            lines.append(
                f'agenda_redis_supervisor_redis_failures_total{{server="{name}",reason="{reason}"}} {count}'
            )
        return "\n".join(lines) + "\n"


def install_signal_handlers(supervisor: Supervisor) -> None:
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
