"""A deterministic in-memory network and a simulated clock, driving many gossip nodes.

Discrete events on one heap: packet deliveries and node timers (each node is ticked exactly at its
:meth:`~agenda.gossip.protocol.Node.next_deadline`). Every random choice (latency, loss, the nodes'
own choices, even the nonces) comes from one seed, so a run is reproducible to the packet.

The network: each datagram takes ``latency`` (uniform in a range) and is lost with probability ``loss``;
a stream (push/pull) is never lost, only refused by a member that is down. Faults a test can inject:

* :meth:`Simulation.crash`: the member stops at once (no leave), packets to it vanish.
* :meth:`Simulation.restart`: a new process under the same name and address (incarnation 0 by default).
* :meth:`Simulation.set_slow`: every packet to the member waits ``delay`` more in its receive queue,
  as for a CPU-starved process: it answers late and hears answers late (Lifeguard's slow member).
* :attr:`Host.skew`: the member's wall clock is off by this much (the replay window sees it).
* :meth:`Simulation.partition`: datagrams and streams between two groups are dropped.

Every :class:`~agenda.gossip.protocol.Changed` a node reports is logged with the time and observer;
:meth:`Simulation.detection` and :attr:`Simulation.false_dead` read detection times and false positives
(a member declared DEAD in some view while it is up) from that log.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from agenda.gossip.config import Config
from agenda.gossip.keyring import Keyring
from agenda.gossip.member import Member, Meta, Status
from agenda.gossip.protocol import Changed, Node, Output, Send

__all__ = ["EPOCH", "SIM_KEY", "Event", "Host", "Simulation", "address", "default_meta"]

EPOCH: Final = 1_700_000_000.0  # the simulated wall clock at simulated time 0
SIM_KEY: Final = bytes(range(32))
_DELIVER: Final = 0
_TIMER: Final = 1


def address(index: int) -> str:
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}:7946"


def default_meta(addr: str) -> Meta:
    return Meta(service="agenda", api_url=f"http://{addr.rsplit(':', 1)[0]}:8000", version="1.0")


@dataclass(frozen=True)
class Event:
    """One change in one view: at ``time``, ``observer`` saw ``member`` become ``status``."""

    time: float
    observer: str
    member: str
    status: Status
    incarnation: int
    meta: Meta


@dataclass
class Host:
    name: str
    addr: str
    node: Node
    up: bool = True
    slow: float = 0.0
    skew: float = 0.0
    group: int = 0  # partitions: hosts in different groups cannot talk


@dataclass
class Simulation:
    seed: int = 0
    config: Config = field(default_factory=Config)
    loss: float = 0.0
    latency: tuple[float, float] = (0.0005, 0.002)
    key: bytes = SIM_KEY
    label: str = "sim"
    now: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - a simulation
        self.hosts: dict[str, Host] = {}
        self.by_addr: dict[str, Host] = {}
        self.events: list[Event] = []
        self.false_dead: list[Event] = []  # DEAD in a view while the member was up
        self.false_suspect: list[Event] = []
        self.datagrams = 0
        self.lost = 0
        self._heap: list[tuple[float, int, int, str, str, bytes, bool]] = []
        self._seq = 0
        self._scheduled: dict[str, float | None] = {}
        self._partitioned = False

    # Building ----------------------------------------------------------------------------------------

    def make_node(
        self,
        name: str,
        addr: str,
        *,
        meta: Meta | None = None,
        incarnation: int = 0,
        config: Config | None = None,
    ) -> Node:
        node_rng = random.Random(self.rng.getrandbits(64))  # noqa: S311 - a simulation
        nonce_rng = random.Random(self.rng.getrandbits(64))  # noqa: S311 - a simulation
        keyring = Keyring([self.key], label=self.label, nonces=nonce_rng.randbytes)

        def wall(now: float) -> float:
            return EPOCH + now + (self.hosts[name].skew if name in self.hosts else 0.0)

        meta = meta or default_meta(addr)
        return Node(
            name,
            addr,
            keyring,
            meta=meta,
            config=config or self.config,
            rng=node_rng,
            incarnation=incarnation,
            wall=wall,
        )

    def add(
        self,
        name: str,
        *,
        seeds: Sequence[str] = (),
        meta: Meta | None = None,
        incarnation: int = 0,
        addr: str | None = None,
        config: Config | None = None,
        preload: Iterable[Member] = (),
    ) -> Node:
        """A new member, started now with ``seeds`` (addresses)."""
        if name in self.hosts:
            raise ValueError(f"{name} already exists")
        addr = addr or address(len(self.hosts) + 1)
        node = self.make_node(name, addr, meta=meta, incarnation=incarnation, config=config)
        node.preload(preload)
        host = Host(name, addr, node)
        self.hosts[name] = host
        self.by_addr[addr] = host
        self._apply(host, node.start(self.now, seeds))
        return node

    def add_cluster(self, n: int, *, prefix: str = "n", converged: bool = True) -> list[str]:
        """``n`` members; ``converged``: every one preloaded with all the others, else each joins the
        first through its seed list (which costs n joins' worth of gossip)."""
        names = [f"{prefix}{i}" for i in range(1, n + 1)]
        base = len(self.hosts)
        addrs = [address(base + i) for i in range(1, n + 1)]
        if converged:
            records = [
                Member(
                    name,
                    addr,
                    0,
                    Status.ALIVE,
                    default_meta(addr),
                    self.now,
                )
                for name, addr in zip(names, addrs, strict=True)
            ]
            for name, addr in zip(names, addrs, strict=True):
                self.add(name, addr=addr, preload=records)
        else:
            for name, addr in zip(names, addrs, strict=True):
                self.add(name, addr=addr, seeds=[addrs[0]])
        return names

    # Faults ------------------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        host = self.hosts[name]
        host.up = False
        self._scheduled[name] = None

    def restart(
        self, name: str, *, seeds: Sequence[str], incarnation: int = 0, meta: Meta | None = None
    ) -> Node:
        host = self.hosts[name]
        host.node = self.make_node(name, host.addr, meta=meta or host.node.me.meta, incarnation=incarnation)
        host.up = True
        self._apply(host, host.node.start(self.now, seeds))
        return host.node

    def set_slow(self, name: str, delay: float) -> None:
        self.hosts[name].slow = delay

    def partition(self, *groups: Iterable[str]) -> None:
        """Each group apart from the others (and from any member named in none); no args: heal."""
        for host in self.hosts.values():
            host.group = 0
        for index, group in enumerate(groups, start=1):
            for name in group:
                self.hosts[name].group = index
        self._partitioned = bool(groups)

    # Driving -----------------------------------------------------------------------------------------

    def call(self, name: str, outputs: list[Output]) -> None:
        """Feed what a test called on a node directly (``update``, ``leave``) into the network."""
        self._apply(self.hosts[name], outputs)

    def run_until(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _, kind, name, src, data, stream = heapq.heappop(heap)
            self.now = time
            host = self.hosts[name]
            if kind == _TIMER:
                if self._scheduled.get(name) != time or not host.up:
                    continue
                self._scheduled[name] = None
                self._apply(host, host.node.tick(time))
                deadline = host.node.next_deadline()
                if deadline is not None and deadline <= time:
                    raise RuntimeError(f"{name} asks to be ticked again at {deadline} after a tick at {time}")
            elif host.up:
                self._apply(host, host.node.receive(time, src, data, stream=stream))
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _apply(self, host: Host, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self._transmit(host, output)
            else:
                self._log(host.name, output)
        self._schedule(host)

    def _schedule(self, host: Host) -> None:
        if not host.up:
            return
        deadline = host.node.next_deadline()
        if deadline is None:
            self._scheduled[host.name] = None
            return
        deadline = max(deadline, self.now)
        if self._scheduled.get(host.name) != deadline:
            self._scheduled[host.name] = deadline
            self._push(deadline, _TIMER, host.name, "", b"", False)

    def _transmit(self, host: Host, send: Send) -> None:
        target = self.by_addr.get(send.addr)
        if not send.stream:
            self.datagrams += 1
            if self.loss and self.rng.random() < self.loss:
                self.lost += 1
                return
        if target is None or not target.up:
            return  # nobody there: a datagram vanishes, a stream is refused
        if self._partitioned and target.group != host.group:
            return
        delay = self.rng.uniform(*self.latency) + target.slow
        self._push(self.now + delay, _DELIVER, target.name, host.addr, send.data, send.stream)

    def _push(self, time: float, kind: int, name: str, src: str, data: bytes, stream: bool) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, name, src, data, stream))

    def _log(self, observer: str, change: Changed) -> None:
        m = change.member
        event = Event(self.now, observer, m.name, m.status, m.incarnation, m.meta)
        self.events.append(event)
        subject = self.hosts.get(m.name)
        if subject is not None and subject.up and m.name != observer:
            if m.status is Status.DEAD:
                self.false_dead.append(event)
            elif m.status is Status.SUSPECT:
                self.false_suspect.append(event)

    # Reading -----------------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.hosts[name].node

    def up(self) -> list[str]:
        return [name for name, host in self.hosts.items() if host.up]

    def views(self) -> dict[str, dict[str, Status]]:
        return {name: self.hosts[name].node.view() for name in self.up()}

    def converged(self, expected: dict[str, Status] | None = None) -> bool:
        """Every member up holds the same view (``expected``, if given, for the members it names)."""
        views = [self.hosts[name].node.view() for name in self.up()]
        if not views:
            return True
        if expected is not None:
            return all(all(v.get(k) is s for k, s in expected.items()) for v in views)
        return all(v == views[0] for v in views)

    def run_until_converged(
        self, expected: dict[str, Status] | None, limit: float, step: float = 0.1
    ) -> float:
        """Run until :meth:`converged`; the time it took (``inf`` if not within ``limit`` seconds)."""
        start = self.now
        while not self.converged(expected):
            if self.now - start >= limit:
                return float("inf")
            self.run_for(step)
        return self.now - start

    def detection(self, member: str, status: Status, since: float) -> tuple[float | None, float | None]:
        """When the first, and when the last, member up saw ``member`` become ``status`` after ``since``."""
        first_seen: dict[str, float] = {}
        for event in self.events:
            if event.member == member and event.status is status and event.time >= since:
                first_seen.setdefault(event.observer, event.time)
        observers = [name for name in self.up() if name != member]
        if not first_seen:
            return None, None
        first = min(first_seen.values()) - since
        if any(name not in first_seen for name in observers):
            return first, None
        return first, max(first_seen[name] for name in observers) - since
