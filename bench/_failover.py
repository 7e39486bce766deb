"""Leader-failover write gap: a sequential writer, SIGKILL the leader, time to the next acknowledged write."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench._cluster import HOST, BenchError, Cluster, Member, WriteSpec

__all__ = ["FailoverResult", "Writer", "measure_failover"]

_BACKOFF_MIN = 0.005
_BACKOFF_MAX = 0.05


class Writer(threading.Thread):
    """Sequential writes (one at a time) to the members, in turn from ``first``; on any error (transport
    error, timeout, non-2xx) it closes that connection, moves to the next member and sleeps a tiny
    bounded backoff (5 ms doubling up to 50 ms, reset by a success). Records (sent, acked) of every 2xx."""

    def __init__(self, members: list[Member], first: int, spec: WriteSpec, timeout: float) -> None:
        super().__init__(name="failover-writer", daemon=True)
        self.ports = [m.client_port for m in members]
        self.index = first
        self.spec = spec
        self.timeout = timeout
        self.acks: list[tuple[float, float]] = []
        self.failures = 0
        self.stop_event = threading.Event()
        self.acked = threading.Condition()
        self._conns: dict[int, http.client.HTTPConnection] = {}

    def _conn(self, port: int) -> http.client.HTTPConnection:
        conn = self._conns.get(port)
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=self.timeout)
            self._conns[port] = conn
        return conn

    def _drop(self, port: int) -> None:
        conn = self._conns.pop(port, None)
        if conn is not None:
            conn.close()

    def write_once(self) -> bool:
        port = self.ports[self.index]
        try:
            conn = self._conn(port)
            conn.request(
                self.spec.method,
                self.spec.path,
                body=self.spec.body,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
            if response.will_close:
                self._drop(port)
        except (OSError, http.client.HTTPException):
            ok = False
            self._drop(port)
        return ok

    def run(self) -> None:
        backoff = _BACKOFF_MIN
        try:
            while not self.stop_event.is_set():
                sent = time.monotonic()
                if self.write_once():
                    acked = time.monotonic()
                    with self.acked:
                        self.acks.append((sent, acked))
                        self.acked.notify_all()
                    backoff = _BACKOFF_MIN
                else:
                    self.failures += 1
                    self.index = (self.index + 1) % len(self.ports)
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            for port in list(self._conns):
                self._drop(port)

    def first_ack_sent_after(self, instant: float, timeout: float) -> tuple[float, float] | None:
        deadline = time.monotonic() + timeout
        with self.acked:
            while True:
                found = next((a for a in self.acks if a[0] >= instant), None)
                if found is not None or time.monotonic() >= deadline:
                    return found
                self.acked.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def wait_acks(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.acked:
            start = len(self.acks)
            while len(self.acks) - start < count:
                if time.monotonic() >= deadline:
                    return False
                self.acked.wait(0.05)
            return True

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=self.timeout + 5)


@dataclass
class FailoverResult:
    system: str
    gaps_ms: list[float | None] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    new_leaders: list[str | None] = field(default_factory=list)
    writer_failures: list[int] = field(default_factory=list)


def measure_failover(
    cluster: Cluster,
    kills: int,
    spec: WriteSpec,
    *,
    request_timeout: float,
    limit: float,
    start_on: str,
    log: Callable[[str], None] = print,
) -> FailoverResult:
    """``kills`` times: healthy cluster -> writer running -> SIGKILL the leader -> gap -> restart it.

    The gap counts from the kill to the acknowledgement of the first write *sent* after the kill (a
    write already in flight at the kill is not counted, even if it is acknowledged later), so it can
    only overestimate by one write latency. ``None`` = no write acknowledged within ``limit`` seconds.
    """
    result = FailoverResult(cluster.system)
    members = cluster.members
    for attempt in range(1, kills + 1):
        leader = cluster.wait_healthy()
        leader_index = members.index(leader)
        first = leader_index if start_on == "leader" else (leader_index + 1) % len(members)
        writer = Writer(members, first, spec, request_timeout)
        writer.start()
        try:
            if not writer.wait_acks(20, timeout=15):
                raise BenchError(
                    f"{cluster.system}: the writer could not get 20 writes acknowledged in 15 s before kill "
                    f"{attempt} ({writer.failures} failures)"
                )
            kill_at = time.monotonic()
            cluster.kill(leader)
            ack = writer.first_ack_sent_after(kill_at, timeout=limit)
            gap = None if ack is None else (ack[1] - kill_at) * 1000.0
        finally:
            writer.stop()
        new_leader = None
        with contextlib.suppress(BenchError, OSError, ValueError):
            found = cluster.find_leader()
            new_leader = found.name if found else None
        result.gaps_ms.append(gap)
        result.killed.append(leader.name)
        result.new_leaders.append(new_leader)
        result.writer_failures.append(writer.failures)
        shown = f"no write within {limit:.0f} s" if gap is None else f"{gap:.0f} ms"
        log(
            f"  {cluster.system} kill {attempt}/{kills}: SIGKILL leader {leader.name} -> gap {shown} "
            f"(new leader {new_leader}, {writer.failures} failed attempts)"
        )
        cluster.spawn(leader)  # same data dir and ports: it rejoins as a follower
    cluster.wait_healthy()
    return result
