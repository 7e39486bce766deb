"""Benchmark: Redis failover time, agenda-redis-supervisor vs Redis Sentinel, side by side in one run.

    python bench/redis_failover.py [--kills 5] [--only sentinel|ours] [--json FILE] [--limit 30]

Each system gets its own fresh pair of redis-server processes (a primary and its replica) on 127.0.0.1
and the same failure detection delay (1000 ms); the primary is SIGKILLed ``--kills`` times and the time
from the kill to "the replica accepts a write AND the system says so" is measured. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cli import command_output, positive_float, positive_int, say
from bench._cluster import (
    HOST,
    AgendaCluster,
    BenchError,
    Reaper,
    agenda_importable,
    clean_env,
    free_ports,
    http_json,
    log_tail,
    report_missing_tools,
    run_under_reaper,
    wait_until,
)
from bench._stats import format_ratio, median_or_none, ratio

REQUIRED_TOOLS = {"redis-server": "redis-server", "redis-sentinel": "redis-sentinel"}
INSTALL_LINE = "apt-get install -y redis-server redis-sentinel"
SYSTEMS = ("sentinel", "ours")
MASTER_NAME = "m"
SENTINELS = 3
QUORUM = 2
SUPERVISORS = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
POLL_S = 0.010  # the replica's SET and the system's answer are each polled this often
MARKER_KEY = "bench:marker"
PROBE_KEY = "bench:probe"
PRIMARY_KEY = "/system/redis/primary"
LOCK_KEY = "/system/redis/supervisor"
SUPERVISOR_TIMERS = {"interval_ms": 100, "down_after_ms": DOWN_AFTER_MS, "timeout_ms": 250, "lock_ttl": 3}


# ================================================================================= pure helpers


def redis_conf(port: int, data_dir: Path, replicaof: int | None = None) -> str:
    """A redis-server configuration file (CONFIG REWRITE needs one): no persistence, loopback only."""
    lines = [
        f"port {port}",
        f"bind {HOST}",
        f'dir "{data_dir}"',
        'save ""',
        "appendonly no",
        "protected-mode no",
        "daemonize no",
        'logfile ""',
        # No 5 s wait before a full sync (the default diskless delay): a restarted server re-links at once.
        "repl-diskless-sync-delay 0",
    ]
    if replicaof is not None:
        lines.append(f"replicaof {HOST} {replicaof}")
    return "\n".join(lines) + "\n"


def sentinel_conf(port: int, data_dir: Path, primary_port: int) -> str:
    """One redis-sentinel's configuration file (Sentinel rewrites it: it must be a file of its own)."""
    return (
        "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                f'dir "{data_dir}"',
                "protected-mode no",
                "daemonize no",
                'logfile ""',
                f"sentinel monitor {MASTER_NAME} {HOST} {primary_port} {QUORUM}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
            ]
        )
        + "\n"
    )


def supervisor_config(
    name: str, server_ports: Sequence[int], bootstrap_port: int, db_urls: Sequence[str], status_port: int
) -> dict[str, Any]:
    """One agenda-redis-supervisor's YAML configuration (as a dict), TLS off, the benchmark's timers."""
    return {
        "name": name,
        "servers": [{"host": HOST, "port": port} for port in server_ports],
        "bootstrap": f"{HOST}:{bootstrap_port}",
        "db_urls": list(db_urls),
        "primary_key": PRIMARY_KEY,
        "lock_key": LOCK_KEY,
        **SUPERVISOR_TIMERS,
        "redis_tls": {"enabled": False},
        "db_tls": {"enabled": False},
        "status_addr": f"{HOST}:{status_port}",
        "log_format": "plain",
    }


def flat_pairs(reply: Any) -> dict[str, str]:
    """A SENTINEL REPLICAS/SENTINELS entry as a dict of strings: a RESP3 map, or RESP2's flat
    ``[k1, v1, k2, v2, ...]``; ValueError otherwise."""
    if isinstance(reply, Mapping):
        return {str(k): str(v) for k, v in reply.items()}
    if not isinstance(reply, list | tuple) or len(reply) % 2:
        raise ValueError(f"not a flat list of pairs: {reply!r:.80}")
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}


def addr(reply: Any) -> str | None:
    """``[host, port]`` (SENTINEL GET-MASTER-ADDR-BY-NAME) as ``"host:port"``; None for a nil reply."""
    if reply is None:
        return None
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        raise ValueError(f"not an address reply: {reply!r:.80}")
    return f"{reply[0]}:{int(reply[1])}"


@dataclass(frozen=True)
class RoleView:
    """A ROLE reply: ``role`` "master"/"slave", a replica's primary ("host:port") and whether it is linked."""

    role: str
    master: str | None = None
    link_up: bool = False


def parse_role(reply: Any) -> RoleView:
    if not isinstance(reply, list | tuple) or not reply:
        raise ValueError(f"not a ROLE reply: {reply!r:.80}")
    if reply[0] == "master":
        return RoleView("master")
    if reply[0] == "slave" and len(reply) >= 4:
        return RoleView("slave", f"{reply[1]}:{int(reply[2])}", reply[3] == "connected")
    if reply[0] == "sentinel":
        return RoleView("sentinel")
    raise ValueError(f"not a ROLE reply: {reply!r:.80}")


def pair_not_steady(primary: str, replica: str, roles: Mapping[str, RoleView | None]) -> str | None:
    """Why the two servers are not (primary, replica-linked-to-it); None when they are."""
    p, r = roles.get(primary), roles.get(replica)
    if p is None or p.role != "master":
        return f"{primary} is not acting as primary ({p.role if p else 'unreachable'})"
    if r is None or r.role != "slave" or r.master != primary:
        where = "unreachable" if r is None else f"{r.role} of {r.master}" if r.master else r.role
        return f"{replica} is not a replica of {primary} ({where})"
    if not r.link_up:
        return f"{replica}'s link to {primary} is down"
    return None


@dataclass(frozen=True)
class SentinelView:
    """One sentinel's answers: the primary's address, its replicas, how many other sentinels it knows."""

    master: str | None
    replicas: tuple[Mapping[str, str], ...] = ()
    others: int = 0


_BAD_FLAGS = {"s_down", "o_down", "disconnected"}


def sentinels_not_steady(views: Sequence[SentinelView | None], replica: str) -> str | None:
    """Why the sentinels are not steady about ``replica``'s primary; None when every one agrees on the
    primary (which is not ``replica``), knows all the others, and lists ``replica`` as a healthy,
    linked replica of that primary."""
    if not views or any(v is None for v in views):
        return "a sentinel does not answer"
    masters = {v.master for v in views if v is not None}
    if len(masters) != 1:
        return f"the sentinels disagree on the primary: {sorted(str(m) for m in masters)}"
    primary = masters.pop()
    if primary is None or primary == replica:
        return f"the sentinels name {primary} as the primary"
    for index, view in enumerate(views, start=1):
        if view is None:  # checked above; for the type checker
            return "a sentinel does not answer"
        if view.others < len(views) - 1:
            return f"sentinel {index} knows {view.others} other sentinel(s), not {len(views) - 1}"
        entry = next((e for e in view.replicas if f"{e.get('ip')}:{e.get('port')}" == replica), None)
        if entry is None:
            return f"sentinel {index} does not list {replica} as a replica"
        flags = set(entry.get("flags", "").split(","))
        if flags & _BAD_FLAGS or "slave" not in flags:
            return f"sentinel {index} flags {replica} {entry.get('flags')}"
        if entry.get("role-reported") != "slave" or entry.get("master-link-status") != "ok":
            return (
                f"sentinel {index} sees {replica} as {entry.get('role-reported')} with link "
                f"{entry.get('master-link-status')}"
            )
        if f"{entry.get('master-host')}:{entry.get('master-port')}" != primary:
            return f"sentinel {index} sees {replica} replicating {entry.get('master-host')}"
    return None


def ours_not_steady(record: Any, acting: Sequence[bool], names: Sequence[str]) -> str | None:
    """Why the supervisors are not steady: no valid record naming one of ``names``, or nobody acts."""
    if not isinstance(record, Mapping):
        return f"no primary recorded ({record!r:.60})"
    name = f"{record.get('host')}:{record.get('port')}"
    if name not in names or not isinstance(record.get("epoch"), int):
        return f"the record {dict(record)} names no server of the pair"
    if not any(acting):
        return "no supervisor acts"
    return None


@dataclass
class KillSample:
    """One SIGKILL of the primary. Times in seconds from the kill; None = not within the limit."""

    system: str
    number: int
    killed: str
    promoted: str
    writable_s: float | None  # the replica's first successful SET
    reported_s: float | None  # the system's first answer naming the replica (any sentinel / the DB)
    reported_all_s: float | None = None  # every sentinel names it (ours: the same as reported_s)
    marker: str = ""  # written on the primary (and acknowledged by the replica) just before the kill
    marker_kept: bool | None = None  # on the promoted replica right after the failover
    marker_survived: bool | None = None  # still on the primary before the next kill (None: last kill)
    extra_failover_before: bool = False  # the primary had moved again before this kill, unasked
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def marker_lost(self) -> bool:
        return self.marker_kept is False or self.marker_survived is False

    @property
    def failover_s(self) -> float | None:
        if self.writable_s is None or self.reported_s is None:
            return None
        return max(self.writable_s, self.reported_s)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failover_s": self.failover_s}


@dataclass(frozen=True)
class Summary:
    kills: int
    measured: int
    median_s: float | None
    min_s: float | None
    max_s: float | None
    writable_median_s: float | None
    reported_median_s: float | None
    extra_failovers: int = 0
    markers_lost: int = 0


def summarize(samples: Sequence[KillSample]) -> Summary:
    values = [s.failover_s for s in samples if s.failover_s is not None]
    return Summary(
        kills=len(samples),
        measured=len(values),
        median_s=median_or_none(values),
        min_s=min(values) if values else None,
        max_s=max(values) if values else None,
        writable_median_s=median_or_none(s.writable_s for s in samples),
        reported_median_s=median_or_none(s.reported_s for s in samples),
        extra_failovers=sum(s.extra_failover_before for s in samples),
        markers_lost=sum(s.marker_lost for s in samples),
    )


def _sec(value: float | None, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def format_table(results: Mapping[str, Sequence[KillSample]]) -> str:
    """Per system: failover median/min/max (s), both parts' medians, unasked failovers and lost
    markers; then the ratio ours/sentinel and every sample."""
    header = (
        f"{'system':>8} | {'kills':>5} | {'failover s median':>17} {'min':>7} {'max':>7} | "
        f"{'writable med':>12} | {'reported med':>12} | {'extra':>5} | {'lost':>4}"
    )
    lines = [header, "-" * len(header)]
    summaries = {system: summarize(samples) for system, samples in results.items()}
    for system, s in summaries.items():
        lines.append(
            f"{system:>8} | {f'{s.measured}/{s.kills}':>5} | {_sec(s.median_s, 17)} {_sec(s.min_s)} "
            f"{_sec(s.max_s)} | {_sec(s.writable_median_s, 12)} | {_sec(s.reported_median_s, 12)} | "
            f"{s.extra_failovers:>5} | {s.markers_lost:>4}"
        )
    ours, sentinel = summaries.get("ours"), summaries.get("sentinel")
    if ours is not None and sentinel is not None:
        lines.append("")
        lines.append(
            f"ours/sentinel (failover medians): {format_ratio(ratio(ours.median_s, sentinel.median_s))}"
        )
    lines.append("")
    lines.append("every failover (s, in kill order; writable/reported in brackets):")
    for system, samples in results.items():
        shown = ", ".join(
            f"{'timeout' if s.failover_s is None else f'{s.failover_s:.3f}'}"
            f" ({_short(s.writable_s)}/{_short(s.reported_s)})"
            for s in samples
        )
        lines.append(f"  {system:>8}: {shown or '-'}")
    return "\n".join(lines)


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def verdict(results: Mapping[str, Sequence[KillSample]]) -> tuple[str, float | None]:
    """``("MET"|"MISSED"|"n/a", ratio)`` for the target: ours' failover median <= Sentinel's."""
    if "ours" not in results or "sentinel" not in results:
        return "n/a", None
    value = ratio(summarize(results["ours"]).median_s, summarize(results["sentinel"]).median_s)
    if value is None:
        return "n/a", None
    return ("MET" if value <= 1.0 else "MISSED"), value


# ============================================================================ processes (impure)


def _client(port: int, timeout: float = 0.5) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        HOST,
        port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _pings(client: Any) -> bool:
    """PING answered (redis-py's errors are not OSErrors: wait_until would not take them as "not yet")."""
    with contextlib.suppress(Exception):
        return bool(client.ping())
    return False


@dataclass
class RedisNode:
    """One redis-server started from its own configuration file (restarted with the same file)."""

    label: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    client: Any = None

    @property
    def name(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "redis.conf"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    def write_conf(self, replicaof: int | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(redis_conf(self.port, self.root, replicaof))

    def start(self, reaper: Reaper, binary: str) -> None:
        self.proc = reaper.spawn([binary, str(self.conf)], self.log, clean_env())
        self.client = self.client or _client(self.port)
        if wait_until(self._pings, 10.0, 0.02) is None:
            raise BenchError(
                f"redis {self.label} ({self.name}) does not answer PING; log tail:\n    {log_tail(self.log)}"
            )

    def _pings(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"redis {self.label} ({self.name}) exited; log tail:\n    {log_tail(self.log)}")
        return _pings(self.client)

    def role(self) -> RoleView | None:
        with contextlib.suppress(Exception):
            return parse_role(self.client.execute_command("ROLE"))
        return None


def _spawn_pair(reaper: Reaper, root: Path, binary: str) -> list[RedisNode]:
    """r1 primary, r2 its replica, linked before returning."""
    ports = free_ports(2)
    nodes = [RedisNode(f"r{i + 1}", port, root / f"r{i + 1}") for i, port in enumerate(ports)]
    nodes[0].write_conf(None)
    nodes[1].write_conf(nodes[0].port)
    for node in nodes:
        node.start(reaper, binary)
    linked = wait_until(
        lambda: pair_not_steady(nodes[0].name, nodes[1].name, _roles(nodes)) is None, 20, 0.05
    )
    if linked is None:
        raise BenchError(f"redis: {pair_not_steady(nodes[0].name, nodes[1].name, _roles(nodes))}")
    return nodes


def _roles(nodes: Sequence[RedisNode]) -> dict[str, RoleView | None]:
    return {node.name: node.role() for node in nodes}


class System:
    """What both systems offer the measurement loop."""

    name = "?"

    def start(self) -> None: ...

    def not_steady(self, nodes: Sequence[RedisNode]) -> tuple[str | None, RedisNode | None]:
        """``(reason, primary)``: reason None when steady, primary the node the system names."""
        raise NotImplementedError

    def reported(self, new_primary: RedisNode) -> tuple[int, int]:
        """``(sources naming new_primary as the primary, sources)`` right now."""
        raise NotImplementedError

    def detail(self) -> dict[str, Any]:
        return {}

    def logs(self) -> list[Path]:
        return []


class SentinelSystem(System):
    name = "sentinel"

    def __init__(self, reaper: Reaper, root: Path, primary_port: int, binary: str) -> None:
        self.reaper = reaper
        self.root = root
        self.primary_port = primary_port
        self.binary = binary
        self.ports = free_ports(SENTINELS)
        self.clients = [_client(port, 0.2) for port in self.ports]
        self.procs: list[subprocess.Popen[bytes]] = []

    def logs(self) -> list[Path]:
        return [self.root / f"s{i + 1}" / "sentinel.log" for i in range(SENTINELS)]

    def start(self) -> None:
        for i, port in enumerate(self.ports):
            folder = self.root / f"s{i + 1}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"
            conf.write_text(sentinel_conf(port, folder, self.primary_port))
            self.procs.append(
                self.reaper.spawn([self.binary, str(conf)], folder / "sentinel.log", clean_env())
            )
        for i, client in enumerate(self.clients):
            if wait_until(lambda c=client: _pings(c), 10.0, 0.02) is None:
                raise BenchError(
                    f"sentinel s{i + 1} does not answer PING; log tail:\n    {log_tail(self.logs()[i])}"
                )

    def _view(self, client: Any) -> SentinelView | None:
        try:
            master = addr(client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME))
            replicas = tuple(
                flat_pairs(r) for r in client.execute_command("SENTINEL", "replicas", MASTER_NAME)
            )
            others = len(client.execute_command("SENTINEL", "sentinels", MASTER_NAME))
        except Exception:  # a sentinel that does not answer: "not steady"
            return None
        return SentinelView(master, replicas, others)

    def not_steady(self, nodes: Sequence[RedisNode]) -> tuple[str | None, RedisNode | None]:
        views = [self._view(client) for client in self.clients]
        named = views[0].master if views[0] is not None else None
        primary = next((n for n in nodes if n.name == named), None)
        if primary is None:
            return f"sentinel 1 names {named} as the primary", None
        replica = next(n for n in nodes if n is not primary)
        why = sentinels_not_steady(views, replica.name) or pair_not_steady(
            primary.name, replica.name, _roles(nodes)
        )
        return why, primary

    def reported(self, new_primary: RedisNode) -> tuple[int, int]:
        count = 0
        for client in self.clients:
            with contextlib.suppress(Exception):
                count += addr(client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)) == (
                    new_primary.name
                )
        return count, len(self.clients)


class OursSystem(System):
    name = "ours"

    def __init__(self, reaper: Reaper, root: Path, nodes: Sequence[RedisNode], python: str) -> None:
        from agenda.db.client import DBClient  # only this system needs the agenda package here

        self.reaper = reaper
        self.root = root
        self.nodes = nodes
        self.python = python
        self.cluster = AgendaCluster(reaper, root / "db", python=python)
        (root / "db").mkdir(parents=True, exist_ok=True)
        self.status_ports = free_ports(SUPERVISORS)
        self.db = DBClient([m.base_url for m in self.cluster.members], timeout=(0.5, 1.0), retries=1)
        self.epoch_before: int | None = None

    def logs(self) -> list[Path]:
        return [self.root / f"sup{i + 1}.log" for i in range(SUPERVISORS)]

    def start(self) -> None:
        started = time.monotonic()
        self.cluster.start()
        say(f"  ours: 5 DB members healthy after {time.monotonic() - started:.1f} s")
        urls = [m.base_url for m in self.cluster.members]
        ports = [n.port for n in self.nodes]
        env = clean_env({"PYTHONUNBUFFERED": "1"})
        for i, status_port in enumerate(self.status_ports):
            name = f"sup{i + 1}"
            path = self.root / f"{name}.yml"
            config = supervisor_config(name, ports, self.nodes[0].port, urls, status_port)
            path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
            argv = [self.python, "-m", "agenda.redis_supervisor", "--config", str(path), "run"]
            self.reaper.spawn(argv, self.logs()[i], env)
        for i, port in enumerate(self.status_ports):
            if wait_until(lambda p=port: self._status(p), 30.0, 0.05) is None:
                raise BenchError(
                    f"supervisor sup{i + 1} serves no status; log tail:\n    {log_tail(self.logs()[i])}"
                )

    @staticmethod
    def _status(port: int) -> dict[str, Any] | None:
        with contextlib.suppress(Exception):
            code, body = http_json("GET", f"http://{HOST}:{port}/status", timeout=1.0)
            return body if code == 200 and isinstance(body, dict) else None
        return None

    def record(self) -> Any:
        kv = self.db.get(PRIMARY_KEY)
        return None if kv is None else kv.get("value")

    def not_steady(self, nodes: Sequence[RedisNode]) -> tuple[str | None, RedisNode | None]:
        try:
            record = self.record()
        except Exception as exc:  # a DB that does not answer: "not steady"
            return f"the DB does not answer: {exc}", None
        statuses = [self._status(port) for port in self.status_ports]
        acting = [bool(s and s.get("acting")) for s in statuses]
        why = ours_not_steady(record, acting, [n.name for n in nodes])
        if why is not None:
            return why, None
        primary = next(n for n in nodes if n.name == f"{record['host']}:{record['port']}")
        replica = next(n for n in nodes if n is not primary)
        self.epoch_before = int(record["epoch"])
        return pair_not_steady(primary.name, replica.name, _roles(nodes)), primary

    def reported(self, new_primary: RedisNode) -> tuple[int, int]:
        with contextlib.suppress(Exception):
            record = self.record()
            if (
                isinstance(record, Mapping)
                and f"{record.get('host')}:{record.get('port')}" == new_primary.name
                and record.get("epoch") == (self.epoch_before or 0) + 1
            ):
                return 1, 1
        return 0, 1

    def detail(self) -> dict[str, Any]:
        for port in self.status_ports:
            status = self._status(port)
            if status and status.get("acting"):
                return {"acting": status.get("name"), "last_failover": status.get("last_failover")}
        return {}


class _Poller(threading.Thread):
    """Calls ``probe`` every POLL_S from ``kill_at`` until it says done (or ``limit``); keeps the times."""

    def __init__(self, name: str, probe: Callable[[], tuple[int, int]], kill_at: float, limit: float) -> None:
        super().__init__(name=name, daemon=True)
        self.probe = probe
        self.kill_at = kill_at
        self.limit = limit
        self.first: float | None = None  # at least one source says so
        self.all: float | None = None  # every source says so

    def run(self) -> None:
        tick = 0
        while time.monotonic() - self.kill_at < self.limit:
            try:
                agreeing, sources = self.probe()
            except Exception:  # a failed probe: "not yet"
                agreeing, sources = 0, 1
            now = time.monotonic() - self.kill_at
            if agreeing and self.first is None:
                self.first = now
            if agreeing >= sources:
                self.all = now
                return
            tick += 1
            time.sleep(max(0.0, self.kill_at + tick * POLL_S - time.monotonic()))


def _writable(client: Any) -> Callable[[], tuple[int, int]]:
    def probe() -> tuple[int, int]:
        try:
            return int(bool(client.set(PROBE_KEY, "x"))), 1
        except Exception:  # READONLY, refused, timeout: not yet
            return 0, 1

    return probe


def _wait_steady(system: System, nodes: Sequence[RedisNode], timeout: float) -> tuple[RedisNode, float]:
    started = time.monotonic()
    last: list[str | None] = [None]

    def steady() -> RedisNode | None:
        why, primary = system.not_steady(nodes)
        last[0] = why
        return primary if why is None else None

    primary = wait_until(steady, timeout, 0.05)
    if primary is None:
        tails = "".join(f"\n  {p.parent.name}/{p.name}:\n    {log_tail(p, 8)}" for p in system.logs())
        raise BenchError(f"{system.name}: not steady within {timeout:.0f} s: {last[0]}{tails}")
    return primary, time.monotonic() - started


def measure(
    system: System, nodes: list[RedisNode], reaper: Reaper, binary: str, args: argparse.Namespace
) -> list[KillSample]:
    samples: list[KillSample] = []
    for number in range(1, args.kills + 1):
        primary, waited = _wait_steady(system, nodes, args.steady_timeout)
        replica = next(n for n in nodes if n is not primary)
        extra = bool(samples) and primary.name != samples[-1].promoted
        if extra:
            say(
                f"  NOTE: {system.name} moved the primary back to {primary.name} while the killed server "
                f"rejoined (a failover nobody asked for)"
            )
        if samples:
            with contextlib.suppress(Exception):
                samples[-1].marker_survived = primary.client.get(MARKER_KEY) == samples[-1].marker
            if not samples[-1].marker_survived:
                say(f"  NOTE: the marker of kill {number - 1} is no longer on the primary {primary.name}")
        marker = f"{system.name}-{number}-{uuid.uuid4().hex[:8]}"
        marker_client = _client(primary.port, 5.0)  # WAIT blocks up to 2 s: more than the usual timeout
        try:
            marker_client.set(MARKER_KEY, marker)
            acked = int(marker_client.execute_command("WAIT", 1, 2000))
        except Exception as exc:
            raise BenchError(f"{system.name}: writing the marker on {primary.name} failed: {exc}") from exc
        finally:
            marker_client.close()
        if acked < 1:
            raise BenchError(f"{system.name}: the replica did not acknowledge the marker within 2 s")
        writer_client = _client(replica.port, 0.2)
        if primary.proc is None:
            raise BenchError(f"{system.name}: {primary.label} was never started")
        kill_at = time.monotonic()
        reaper.kill(primary.proc)  # SIGKILL to its process group, then reaped
        writer = _Poller("writable", _writable(writer_client), kill_at, args.limit)
        reporter = _Poller("reported", functools.partial(system.reported, replica), kill_at, args.limit)
        writer.start()
        reporter.start()
        writer.join()
        reporter.join()
        writer_client.close()
        kept = None
        with contextlib.suppress(Exception):
            kept = replica.client.get(MARKER_KEY) == marker
        sample = KillSample(
            system=system.name,
            number=number,
            killed=primary.name,
            promoted=replica.name,
            writable_s=writer.first,
            reported_s=reporter.first,
            reported_all_s=reporter.all,
            marker=marker,
            marker_kept=kept,
            extra_failover_before=extra,
            detail={"steady_wait_s": round(waited, 3), **system.detail()},
        )
        samples.append(sample)
        everyone = "" if system.name == "ours" else f", all {SENTINELS} sentinels {_short(reporter.all)} s"
        say(
            f"  {system.name} kill {number}/{args.kills}: SIGKILL primary {primary.label} ({primary.name})"
            f" -> failover {_short(sample.failover_s)} s (writable {_short(writer.first)} s, reported "
            f"{_short(reporter.first)} s{everyone}); marker kept: {kept}; steady after {waited:.1f} s"
        )
        if number < args.kills:
            primary.start(reaper, binary)  # the same file: Sentinel / the supervisor make it a replica
    return samples


def run_system(name: str, reaper: Reaper, workdir: Path, args: argparse.Namespace) -> list[KillSample]:
    root = workdir / name
    root.mkdir()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    nodes = _spawn_pair(reaper, root, binary)
    say(f"{name}: redis r1 {nodes[0].name} (primary), r2 {nodes[1].name} (replica) linked")
    system: System
    if name == "sentinel":
        sentinel_binary = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        system = SentinelSystem(reaper, root, nodes[0].port, sentinel_binary)
        say(f"  sentinel: 3 redis-sentinel on {', '.join(map(str, system.ports))}, quorum {QUORUM}")
    else:
        system = OursSystem(reaper, root, nodes, args.python)
        say(f"  ours: 5 DB members + {SUPERVISORS} supervisors (status on {system.status_ports})")
    try:
        system.start()
        return measure(system, nodes, reaper, binary, args)
    finally:
        for node in nodes:
            if node.client is not None:
                node.client.close()
            if node.proc is not None:
                reaper.kill(node.proc)
        if isinstance(system, OursSystem):
            system.db.close()
            system.cluster.stop()


# ===================================================================================== CLI / main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis_failover",
        description=(
            "Redis primary failover time on 127.0.0.1: 3 Redis Sentinels vs 2 agenda-redis-supervisors "
            "(with a 5-member DB cluster), one after the other, each on a fresh primary+replica pair."
        ),
    )
    parser.add_argument(
        "--kills", type=positive_int, default=5, help="primary SIGKILLs per system, default 5"
    )
    parser.add_argument("--only", choices=SYSTEMS, help="benchmark one system only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all results as JSON")
    parser.add_argument(
        "--limit",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up on one failover, default 30",
    )
    parser.add_argument(
        "--steady-timeout",
        type=positive_float,
        default=90.0,
        metavar="SECONDS",
        help="wait this long for a steady state before each kill, default 90",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter running the DB and the supervisors (default: this)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configurations and logs (path printed)")
    return parser


def missing_tools() -> list[str]:
    return [
        tool
        for tool in REQUIRED_TOOLS
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists()
    ]


def machine_facts() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    repo = Path(__file__).resolve().parent.parent
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": platform.release(),
        "python_version": platform.python_version(),
        "redis_server": command_output(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--version"]
        ),
        "redis_py": command_output([sys.executable, "-c", "import redis; print(redis.__version__)"]),
        "git_commit": command_output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "loadavg_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_tools()
    if missing:
        return report_missing_tools("redis_failover", missing, REQUIRED_TOOLS, INSTALL_LINE)
    return run_under_reaper("redis_failover", args.keep_tmp, lambda reaper: _main(args, reaper))


def _main(args: argparse.Namespace, reaper: Reaper) -> int:
    began = time.monotonic()
    systems = list(SYSTEMS) if args.only is None else [args.only]
    if "ours" in systems:
        ok, detail = agenda_importable(args.python, reaper)
        if not ok:
            print(
                f"redis_failover: agenda is not runnable with {args.python}: {detail[-300:]}", file=sys.stderr
            )
            return 2
    facts = machine_facts()
    say(
        f"machine: nproc={facts['nproc']} kernel={facts['kernel']} loadavg(1,5,15m) at start="
        f"{facts['loadavg_at_start']}; {facts['redis_server']}; repo {facts['git_commit']}"
    )
    say(
        f"{args.kills} SIGKILLs of the primary per system; down-after {DOWN_AFTER_MS} ms for both; "
        f"failover = kill -> max(replica accepts SET, system names it), each polled every "
        f"{POLL_S * 1000:.0f} ms"
    )
    workdir = reaper.mkdtemp("bench-redis-failover-")
    results: dict[str, list[KillSample]] = {}
    for name in systems:
        started = time.monotonic()
        results[name] = run_system(name, reaper, workdir, args)
        say(f"{name}: done in {time.monotonic() - started:.0f} s")
    load1, load5, load15 = os.getloadavg()
    facts["loadavg_at_end"] = [round(load1, 2), round(load5, 2), round(load15, 2)]
    elapsed = time.monotonic() - began
    say()
    say(
        f"Redis failover (primary SIGKILLed; primary + 1 replica on 127.0.0.1; down-after "
        f"{DOWN_AFTER_MS} ms; failover = max(writable, reported), seconds from the kill)"
    )
    say(format_table(results))
    outcome, value = verdict(results)
    say(f"target (ours <= Sentinel, failover medians): {outcome} ({format_ratio(value)})")
    lost = [f"{s.system} kill {s.number}" for r in results.values() for s in r if s.marker_lost]
    if lost:
        say(f"WARNING: acknowledged writes lost (the marker written before the kill): {', '.join(lost)}")
    extra = [
        f"{s.system} before kill {s.number}" for r in results.values() for s in r if s.extra_failover_before
    ]
    if extra:
        say(f"WARNING: failovers nobody asked for (while the killed server rejoined): {', '.join(extra)}")
    say(f"loadavg(1,5,15m) at end={facts['loadavg_at_end']}; run time {elapsed:.0f} s")
    if args.json:
        report = {
            "machine": facts,
            "run_time_s": round(elapsed, 1),
            "config": {
                "kills": args.kills,
                "limit_s": args.limit,
                "poll_ms": POLL_S * 1000,
                "down_after_ms": DOWN_AFTER_MS,
                "sentinel": {
                    "sentinels": SENTINELS,
                    "quorum": QUORUM,
                    "failover_timeout_ms": FAILOVER_TIMEOUT_MS,
                    "parallel_syncs": 1,
                },
                "ours": {"supervisors": SUPERVISORS, "db_members": 5, **SUPERVISOR_TIMERS, "tls": False},
            },
            "samples": {name: [s.as_dict() for s in samples] for name, samples in results.items()},
            "summary": {name: asdict(summarize(samples)) for name, samples in results.items()},
            "ratio_ours_over_sentinel": value,
            "target": outcome,
        }
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
