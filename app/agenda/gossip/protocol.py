"""One member's SWIM node with Lifeguard, pure: every method takes ``now`` and returns what to do.

No sockets, threads or clock of its own. The I/O layer calls :meth:`Node.start` once, :meth:`Node.tick`
when :meth:`Node.next_deadline` passes, :meth:`Node.receive` with every datagram (and every push/pull
that arrives on a stream), :meth:`Node.update` when the service's metadata changes and
:meth:`Node.leave` before it stops; each returns :class:`Send` (bytes, already sealed, for an address:
a datagram, or a stream, TCP in the real I/O, for push/pull) and :class:`Changed` (a member's record
changed in this node's view), in order. ``now`` is monotonic seconds; the replay window needs wall-clock
time, which ``wall(now)`` gives (the simulation injects a skewed clock through it).

Failure detection (SWIM, memberlist's timings). Every ``probe_interval`` the node pings the next member
of a shuffled round-robin list (so each member is probed within one round, not just on average). No ack
within ``probe_timeout``: it asks ``indirect_checks`` random alive members to ping the target for it;
each relays the ack, or answers with a nack when the target did not answer it either. No ack, direct or
relayed, by the end of the (awareness-scaled) probe interval: the target is suspected. The suspicion is
gossiped; the suspected member, hearing of it, refutes it by raising its incarnation and gossiping that
it is alive, which beats the accusation everywhere. Unrefuted, the suspicion times out and the member
is declared dead. A probe of a member already suspect carries the suspicion, so it can refute at once.

Precedence of claims about a member (as memberlist's):

* alive(i) beats alive(j < i), suspect(j < i) and dead/left(j < i); an alive at the same incarnation
  changes nothing (only the member itself can raise its incarnation, so it must, to refute or update).
* suspect(i) applies to a member alive at incarnation ``<= i``; of a member already suspect it is a
  confirmation (Lifeguard: it shortens the timeout if it comes from a new accuser).
* dead(i) applies to a member alive or suspect at incarnation ``<= i``; with accuser == member, the
  member announced that it is leaving: LEFT rather than DEAD. A dead member stays dead until it comes
  back with a higher incarnation.
* about ourselves: a suspect or dead at an incarnation not below ours, or an alive at ours or above that
  is not exactly ours, is refuted with a higher incarnation; except while leaving, when we let it stand.

Dissemination: every update applied is queued (:mod:`agenda.gossip.broadcast`) and piggybacked on the
node's packets (pings, acks, nacks, relays) as room allows; every ``gossip_interval`` the node also sends
what is queued to ``gossip_nodes`` random members (recently dead ones included, so that a member wrongly
declared dead learns it and refutes). Nothing queued, nothing sent. Anti-entropy: every
``push_pull_interval`` (scaled with the cluster) a full-state exchange with one random member, merged as
memberlist does (a remote DEAD only makes us suspect, so the member gets its chance to refute); and, as
Serf does, now and then one with a member we hold dead, so that the two sides of a healed partition find
each other again.

Joining: :meth:`Node.start` sends a join push/pull to each seed address. A node with no other live member
in its view is ``alone`` (:attr:`Node.status`) and retries its seeds every ``seed_retry_interval``, so a
seed list that names nothing reachable yet leaves the node running, alone, until a seed appears (or until
another member joins through it). A node restarted with a lower incarnation than the cluster remembers
learns its own tombstone from the seed's state and refutes it, which is how it comes back. The I/O layer
may also start from the wall clock in seconds (as Cassandra's generation): then its first alive message
already outbids every tombstone, including those the seed does not hold.

Leaving: :meth:`Node.leave` gossips "dead, accused by itself" (LEFT everywhere) at once and keeps
gossiping until that update has been sent its retransmit limit, or ``leave_timeout``; then the node is
``left`` and inert. A draining service first calls :meth:`Node.update` with ``state="draining"``, which
every view shows while the member is still alive.

Packets that fail authentication, the replay window or decoding are dropped and counted in
:attr:`Node.counters`; they never reach the membership.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from agenda.gossip.broadcast import BroadcastQueue
from agenda.gossip.config import Config, push_pull_scale, retransmit_limit, suspicion_timeout
from agenda.gossip.keyring import OVERHEAD, AuthError, Keyring, ReplayGuard
from agenda.gossip.lifeguard import Awareness, Suspicion
from agenda.gossip.member import LIVE, MAX_INCARNATION, Member, Meta, Status
from agenda.gossip.messages import (
    MAX_DATAGRAM,
    MAX_STREAM,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    check_meta,
    decode_packet,
    encode_message,
    join_packet,
    packet_overhead,
)

__all__ = ["Changed", "Counters", "Node", "NodeStatus", "Output", "Send"]

_NACK_AFTER: Final = 0.8  # of the probe timeout: see Node._on_indirect_ping


@dataclass(frozen=True)
class Send:
    """Send ``data`` to ``addr``: a datagram, or on a stream (TCP) when ``stream``.

    A push/pull answer is addressed to the ``src`` the request came from; over TCP the I/O layer answers
    on the request's own connection."""

    addr: str
    data: bytes
    stream: bool = False


@dataclass(frozen=True)
class Changed:
    """A member's status, address or metadata changed in this node's view (``previous`` None: new)."""

    member: Member
    previous: Member | None


Output = Send | Changed


class NodeStatus(enum.Enum):
    ALONE = "alone"  # no other live member known: retrying the seeds
    JOINED = "joined"
    LEAVING = "leaving"  # announcing the leave
    LEFT = "left"  # inert


class _Phase(enum.Enum):
    RUNNING = 1
    LEAVING = 2
    LEFT = 3


@dataclass
class Counters:
    """What the node did and dropped, for metrics and tests."""

    received: int = 0
    sent: int = 0
    dropped_auth: int = 0  # no key opened it
    dropped_stale: int = 0  # sent outside the replay window
    dropped_replay: int = 0  # a nonce already accepted
    dropped_decode: int = 0  # authenticated, but not a well-formed packet
    dropped_misdirected: int = 0  # a ping meant for another name (a reused address)
    probes: int = 0
    probe_failures: int = 0  # probes that ended in a suspicion
    refutations: int = 0
    conflicts: int = 0  # an alive message moving a live member to another address, ignored


@dataclass
class _Probe:
    target: str
    incarnation: int  # the target's, when the probe started: a suspicion is about that incarnation
    seq: int
    relay_at: float  # the direct ping's wait ends: ask the relays
    deadline: float  # no ack by then: suspect
    asked: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass
class _Relay:
    """A ping we sent on another member's behalf (an indirect probe)."""

    requester: str  # address
    seq: int  # the requester's
    nack_at: float


class Node:
    """One member of the cluster. Construct, optionally :meth:`preload`, then :meth:`start`.

    ``wall(now)`` is the wall-clock time (seconds since the epoch) at monotonic ``now``: packets are
    stamped with it and the replay window judges by it (the daemon passes ``lambda _: time.time()``).
    ``rng`` makes every protocol choice (the simulation seeds it); nonces come from the key ring.
    Keys are rotated by assigning ``node.keyring = node.keyring.rotated([...])`` between calls.
    """

    def __init__(
        self,
        name: str,
        addr: str,
        keyring: Keyring,
        *,
        wall: Callable[[float], float],
        meta: Meta | None = None,
        config: Config | None = None,
        rng: random.Random | None = None,
        incarnation: int = 0,
    ) -> None:
        if not name or not addr:
            raise ValueError("a node needs a name and an address")
        self.name = name
        self.addr = addr
        self.keyring = keyring
        self.config = config or Config()
        self.rng = rng or random.Random()  # noqa: S311 - protocol choices, not secrets (nonces: keyring)
        self._wall = wall
        meta = meta or Meta()
        check_meta(meta)
        self.counters = Counters()
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self._guard = ReplayGuard(self.config.replay_window)
        self._members: dict[str, Member] = {name: Member(name, addr, incarnation, Status.ALIVE, meta, 0.0)}
        self._live_count = 1
        self._others: list[str] | None = None  # cache: every other member's name
        self._suspicions: dict[str, Suspicion] = {}
        self._broadcasts = BroadcastQueue()
        self._budget = self.config.udp_buffer_size - OVERHEAD - packet_overhead(name)
        self._check_fits(self._alive_message(self.me))
        self._phase = _Phase.RUNNING
        self._started = False
        self._seeds: tuple[str, ...] = ()
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._relays: dict[int, _Relay] = {}
        self._next_probe = 0.0
        self._next_gossip = 0.0
        self._next_push_pull = 0.0
        self._next_seed_retry = 0.0
        self._next_reconnect = 0.0
        self._leave_deadline = 0.0

    # Views -------------------------------------------------------------------------------------------

    @property
    def me(self) -> Member:
        return self._members[self.name]

    @property
    def members(self) -> Mapping[str, Member]:
        """Every member this node knows, itself and tombstones included (read-only)."""
        return self._members.copy()

    def view(self) -> dict[str, Status]:
        return {name: m.status for name, m in self._members.items()}

    def live_members(self) -> list[Member]:
        return [m for m in self._members.values() if m.live and m.name != self.name]

    @property
    def cluster_size(self) -> int:
        """Live members including ourselves: the ``n`` of the timeout and retransmit formulas."""
        return self._live_count

    @property
    def status(self) -> NodeStatus:
        if self._phase is _Phase.LEFT:
            return NodeStatus.LEFT
        if self._phase is _Phase.LEAVING:
            return NodeStatus.LEAVING
        return NodeStatus.JOINED if self._live_count > 1 else NodeStatus.ALONE

    def suspicion(self, name: str) -> Suspicion | None:
        return self._suspicions.get(name)

    def queued(self) -> int:
        """Updates waiting to be piggybacked."""
        return len(self._broadcasts)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do, at the earliest (None: nothing, ever, on its own)."""
        if self._phase is _Phase.LEFT or not self._started:
            return None
        times = [t.nack_at for t in self._relays.values()]
        times += [s.deadline for s in self._suspicions.values()]
        if len(self._broadcasts):
            times.append(self._next_gossip)
        if self._phase is _Phase.LEAVING:
            times.append(self._leave_deadline)
        else:
            times += [self._next_push_pull, self._next_reconnect]
            if self._probe is None:
                times.append(self._next_probe)
            if self._seeds and self._live_count == 1:
                times.append(self._next_seed_retry)
        if self._probe is not None:
            times.append(self._probe.deadline if self._probe.asked else self._probe.relay_at)
        return min(times) if times else None

    # Events ------------------------------------------------------------------------------------------

    def preload(self, members: Iterable[Member]) -> None:
        """Take ``members`` as known, silently: no gossip, no :class:`Changed`.

        Simulations start a converged cluster this way instead of paying for n joins' worth of gossip;
        a member restored from a snapshot could do the same before :meth:`start`."""
        for member in members:
            if member.name == self.name:
                continue
            previous = self._members.get(member.name)
            self._members[member.name] = member
            self._count(previous, member)
            self._others = None
        self._probe_order = [m.name for m in self._members.values() if m.live and m.name != self.name]
        self.rng.shuffle(self._probe_order)
        self._probe_index = 0

    def start(self, now: float, seeds: Sequence[str] = ()) -> list[Output]:
        """Start the timers (each staggered by a random fraction, as memberlist) and contact the seeds."""
        if self._started:
            raise RuntimeError("start() twice")
        self._started = True
        cfg = self.config
        self._members[self.name] = replace(self.me, since=now)
        self._seeds = tuple(dict.fromkeys(s for s in seeds if s != self.addr))
        self._next_probe = now + self.rng.uniform(0, cfg.probe_interval)
        self._next_gossip = now + self.rng.uniform(0, cfg.gossip_interval)
        self._next_push_pull = now + push_pull_scale(cfg.push_pull_interval, self._live_count) * (
            0.5 + self.rng.random() / 2
        )
        self._next_reconnect = now + cfg.reconnect_interval * self.rng.uniform(0.5, 1.0)
        out: list[Output] = []
        self._join_seeds(now, out)
        return out

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        if self._phase is _Phase.LEFT or not self._started:
            return out
        if self._probe is not None:
            self._advance_probe(self._probe, now, out)
        if self._phase is _Phase.RUNNING and self._probe is None and now >= self._next_probe:
            self._start_probe(now, out)
        # After the probe: its failure may confirm a suspicion, bringing its deadline to now or before.
        self._expire_suspicions(now, out)
        self._expire_relays(now, out)
        if self._phase is _Phase.RUNNING:
            if now >= self._next_push_pull:
                self._push_pull(now, out)
            if now >= self._next_reconnect:
                self._reconnect(now, out)
            if self._seeds and self._live_count == 1 and now >= self._next_seed_retry:
                self._join_seeds(now, out)
        if now >= self._next_gossip:
            self._gossip(now, out)
        self._align_gossip(now)
        if self._phase is _Phase.LEAVING and (
            self.name not in self._broadcasts or now >= self._leave_deadline or not self._live_peers()
        ):
            self._phase = _Phase.LEFT
        return out

    def receive(self, now: float, src: str, data: bytes, *, stream: bool = False) -> list[Output]:
        """A datagram (or a stream's message) from ``src``: opened, checked, decoded, acted on."""
        out: list[Output] = []
        if self._phase is _Phase.LEFT or not self._started:
            return out
        self.counters.received += 1
        try:
            nonce, sent_at, plain = self.keyring.open(data)
        except AuthError:
            self.counters.dropped_auth += 1
            return out
        rejection = self._guard.admit(nonce, sent_at, self._wall(now))
        if rejection == "stale":
            self.counters.dropped_stale += 1
            return out
        if rejection == "replay":
            self.counters.dropped_replay += 1
            return out
        try:
            packet = decode_packet(plain, limit=MAX_STREAM if stream else MAX_DATAGRAM)
        except DecodeError:
            self.counters.dropped_decode += 1
            return out
        for message in packet.messages:
            self._handle(now, src, packet.sender, message, out)
        self._align_gossip(now)
        return out

    def update(self, now: float, meta: Meta | None = None, *, state: str | None = None) -> list[Output]:
        """Announce new metadata (or only a new ``state``, e.g. "draining") at a new incarnation."""
        if self._phase is not _Phase.RUNNING:
            raise RuntimeError("update() after leave()")
        new = meta or self.me.meta
        if state is not None:
            new = replace(new, state=state)
        check_meta(new)
        me = replace(self.me, meta=new, incarnation=min(self.me.incarnation + 1, MAX_INCARNATION))
        self._check_fits(self._alive_message(me))
        out: list[Output] = []
        self._store(me, out)
        self._broadcast(self.name, self._alive_message(me))
        if self._started:
            self._gossip(now, out)  # at once: a draining member wants to be heard before it stops
            self._align_gossip(now)
        return out

    def leave(self, now: float) -> list[Output]:
        """Announce that we leave (LEFT in every view); the node is ``left`` once it has been heard."""
        out: list[Output] = []
        if self._phase is not _Phase.RUNNING:
            return out
        self._phase = _Phase.LEAVING
        self._probe = None
        self._leave_deadline = now + self.config.leave_timeout
        me = self.me
        self._store(replace(me, status=Status.LEFT, since=now), out)
        self._broadcast(self.name, encode_message(Dead(self.name, me.incarnation, self.name)))
        if not self._live_peers():
            self._phase = _Phase.LEFT  # nobody to tell
            return out
        self._gossip(now, out)
        self._align_gossip(now)
        return out

    # Probing -----------------------------------------------------------------------------------------

    def _next_target(self, now: float) -> Member | None:
        for _ in range(len(self._probe_order) + 2):
            if self._probe_index >= len(self._probe_order):
                self._reset_probe_order(now)
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            member = self._members.get(name)
            if member is not None and member.live:
                return member
        return None

    def _reset_probe_order(self, now: float) -> None:
        """A new round: reap old tombstones, shuffle the live members."""
        reap = [
            m.name
            for m in self._members.values()
            if not m.live and m.name != self.name and now - m.since > self.config.reap_after
        ]
        for name in reap:
            del self._members[name]
            self._others = None
        self._probe_order = [m.name for m in self._members.values() if m.live and m.name != self.name]
        self.rng.shuffle(self._probe_order)
        self._probe_index = 0

    def _start_probe(self, now: float, out: list[Output]) -> None:
        # On the interval's grid; after a probe that ran late (awareness), from now, as a Go ticker does.
        self._next_probe += self.config.probe_interval
        if self._next_probe <= now:
            self._next_probe = now + self.config.probe_interval
        target = self._next_target(now)
        if target is None:
            return
        self.counters.probes += 1
        seq = self._next_seq()
        interval = self.awareness.scale(self.config.probe_interval)
        self._probe = _Probe(
            target.name, target.incarnation, seq, now + self.config.probe_timeout, now + interval
        )
        messages: list[Message] = [Ping(seq, target.name)]
        if target.status is Status.SUSPECT:
            messages.append(Suspect(target.name, target.incarnation, self.name))
        self._send(now, target.addr, messages, out)

    def _advance_probe(self, probe: _Probe, now: float, out: list[Output]) -> None:
        target = self._members.get(probe.target)
        if not probe.asked and now >= probe.relay_at:
            probe.asked = True
            if target is not None:
                helpers = self._pick(
                    self.config.indirect_checks,
                    lambda m: m.status is Status.ALIVE and m.name != probe.target,
                )
                request = IndirectPing(probe.seq, probe.target, target.addr)
                for helper in helpers:
                    self._send(now, helper.addr, [request], out)
                probe.expected_nacks = len(helpers)
        if now >= probe.deadline:
            self._probe = None
            # Lifeguard: relays that did not even nack suggest that we are the slow one.
            missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
            self.awareness.apply(max(missed, 0))
            self.counters.probe_failures += 1
            self._on_suspect(now, Suspect(probe.target, probe.incarnation, self.name), out)

    def _on_ack(self, now: float, seq: int, out: list[Output]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            self.awareness.apply(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(now, relay.requester, [Ack(relay.seq)], out)

    def _on_indirect_ping(self, now: float, src: str, request: IndirectPing, out: list[Output]) -> None:
        seq = self._next_seq()
        # Not memberlist's full probe timeout: the request left the prober a probe timeout into its
        # probe, so a nack sent a whole timeout later lands just after the prober's deadline (1 s with
        # the LAN defaults) and counts as missing, making a healthy prober of a dead member doubt
        # itself. At 80% the nack has a fifth of the timeout to come back.
        self._relays[seq] = _Relay(src, request.seq, now + _NACK_AFTER * self.config.probe_timeout)
        self._send(now, request.target_addr, [Ping(seq, request.target)], out)

    def _expire_relays(self, now: float, out: list[Output]) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                self._send(now, relay.requester, [Nack(relay.seq)], out)

    def _expire_suspicions(self, now: float, out: list[Output]) -> None:
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline:
                del self._suspicions[name]
                member = self._members.get(name)
                if member is not None and member.status is Status.SUSPECT:
                    self._on_dead(now, Dead(name, member.incarnation, self.name), out)

    # Dissemination and anti-entropy ------------------------------------------------------------------

    def _gossip(self, now: float, out: list[Output]) -> None:
        if not len(self._broadcasts):
            return
        dead_since = now - self.config.gossip_to_the_dead
        targets = self._pick(
            self.config.gossip_nodes,
            lambda m: m.live or (m.status is Status.DEAD and m.since >= dead_since),
        )
        for target in targets:
            if not self._send(now, target.addr, [], out):
                return

    def _align_gossip(self, now: float) -> None:
        """Keep the gossip timer on its grid, past ``now`` (it is not woken while nothing is queued)."""
        interval = self.config.gossip_interval
        if self._next_gossip <= now:
            self._next_gossip += (int((now - self._next_gossip) / interval) + 1) * interval
        if self._next_gossip <= now:  # float rounding
            self._next_gossip += interval

    def _push_pull(self, now: float, out: list[Output]) -> None:
        self._next_push_pull = now + push_pull_scale(self.config.push_pull_interval, self._live_count)
        peers = self._pick(1, lambda m: m.status is Status.ALIVE)
        if peers:
            request = PushPull(join=False, reply=False, members=self._state())
            self._send_stream(now, peers[0].addr, request, out)

    def _reconnect(self, now: float, out: list[Output]) -> None:
        """Serf's reconnect: a push/pull with a random DEAD member, at a rate making about one attempt
        per interval in the whole cluster. Without it the two sides of a partition that lasted longer
        than the suspicion timeout would stay apart for good: each holds the other dead, and nobody
        probes, gossips to (after gossip_to_the_dead) or pushes/pulls with a dead member."""
        self._next_reconnect = now + self.config.reconnect_interval
        failed = [m for m in self._members.values() if m.status is Status.DEAD]
        if failed and self.rng.random() <= len(failed) / self._live_count:
            request = PushPull(join=False, reply=False, members=self._state())
            self._send_stream(now, self.rng.choice(failed).addr, request, out)

    def _join_seeds(self, now: float, out: list[Output]) -> None:
        self._next_seed_retry = now + self.config.seed_retry_interval
        if not self._seeds:
            return
        request = PushPull(join=True, reply=False, members=self._state())
        for seed in self._seeds:
            self._send_stream(now, seed, request, out)

    def _state(self) -> tuple[MemberState, ...]:
        members = self._members.values()
        return tuple(MemberState(m.name, m.addr, m.incarnation, m.status, m.meta) for m in members)

    def _merge(self, now: float, states: Sequence[MemberState], out: list[Output]) -> None:
        for s in states:
            if s.status is Status.ALIVE:
                self._on_alive(now, Alive(s.name, s.addr, s.incarnation, s.meta), out)
            elif s.status is Status.LEFT:
                self._on_dead(now, Dead(s.name, s.incarnation, s.name), out)
            else:  # a remote DEAD only makes us suspect: the member gets its chance to refute
                self._on_suspect(now, Suspect(s.name, s.incarnation, self.name), out)

    # Incoming ----------------------------------------------------------------------------------------

    def _handle(self, now: float, src: str, sender: str, message: Message, out: list[Output]) -> None:
        match message:
            case Ping(seq, target):
                if target != self.name:
                    self.counters.dropped_misdirected += 1
                else:  # leaving included: a member announcing its leave is still there
                    self._send(now, src, [Ack(seq)], out)
            case IndirectPing():
                self._on_indirect_ping(now, src, message, out)
            case Ack(seq):
                self._on_ack(now, seq, out)
            case Nack(seq):
                if self._probe is not None and self._probe.seq == seq:
                    self._probe.nacks += 1
            case Alive():
                self._on_alive(now, message, out)
            case Suspect():
                self._on_suspect(now, message, out)
            case Dead():
                self._on_dead(now, message, out)
            case PushPull(join, reply, members):
                # Merged before answering (memberlist answers first): a member that finds itself
                # declared dead in the request answers with its refutation, not with the stale record.
                self._merge(now, members, out)
                if not reply:
                    answer = PushPull(join=join, reply=True, members=self._state())
                    self._send_stream(now, src, answer, out)

    def _on_alive(self, now: float, alive: Alive, out: list[Output]) -> None:
        current = self._members.get(alive.name)
        if alive.name == self.name:
            me = self.me
            if self._phase is not _Phase.RUNNING or alive.incarnation < me.incarnation:
                return
            if alive.incarnation == me.incarnation and alive.addr == me.addr and alive.meta == me.meta:
                return  # our own update, come back to us
            self._refute(alive.incarnation, out)  # a former life of ours, or an impostor: outbid it
            return
        if current is not None:
            if alive.incarnation <= current.incarnation:
                return
            if alive.addr != current.addr and current.live:
                # As memberlist: a live member does not move; it must be declared dead first.
                self.counters.conflicts += 1
                return
        self._suspicions.pop(alive.name, None)
        since = current.since if current is not None and current.status is Status.ALIVE else now
        member = Member(alive.name, alive.addr, alive.incarnation, Status.ALIVE, alive.meta, since)
        if current is None or not current.live:
            # A random place in the current round: appending would probe newcomers last, every round.
            self._probe_order.insert(self.rng.randint(self._probe_index, len(self._probe_order)), alive.name)
        self._store(member, out)
        self._broadcast(alive.name, encode_message(alive))

    def _on_suspect(self, now: float, suspect: Suspect, out: list[Output]) -> None:
        current = self._members.get(suspect.name)
        if current is None or suspect.incarnation < current.incarnation:
            return
        suspicion = self._suspicions.get(suspect.name)
        if suspicion is not None:
            if suspicion.confirm(suspect.accuser):
                self._broadcast(suspect.name, encode_message(suspect))
            return
        if current.status is not Status.ALIVE:
            return
        if suspect.name == self.name:
            if self._phase is _Phase.RUNNING:
                self._refute(suspect.incarnation, out)
            return
        self._broadcast(suspect.name, encode_message(suspect))
        self._store(replace(current, incarnation=suspect.incarnation, status=Status.SUSPECT, since=now), out)
        cfg = self.config
        n = self._live_count
        # Confirmations wanted: two probe intervals short of the nominal timeout (memberlist's k), none
        # when the cluster is too small to give them (n less ourselves and the suspect).
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        self._suspicions[suspect.name] = Suspicion(
            suspect.accuser, now, k, lo, cfg.suspicion_max_timeout_mult * lo
        )

    def _on_dead(self, now: float, dead: Dead, out: list[Output]) -> None:
        current = self._members.get(dead.name)
        if current is None or dead.incarnation < current.incarnation:
            return
        self._suspicions.pop(dead.name, None)
        if not current.live:
            return
        if dead.name == self.name:
            if self._phase is _Phase.RUNNING:
                self._refute(dead.incarnation, out)
            return
        self._broadcast(dead.name, encode_message(dead))
        status = Status.LEFT if dead.accuser == dead.name else Status.DEAD
        self._store(replace(current, incarnation=dead.incarnation, status=status, since=now), out)

    def _refute(self, accused: int, out: list[Output]) -> None:
        """Outbid a claim about ourselves at incarnation ``accused``; being accused hints we are slow."""
        me = self.me
        incarnation = min(max(me.incarnation, accused) + 1, MAX_INCARNATION)
        if incarnation <= accused:
            return  # accused at the largest incarnation: nothing can outbid it (only a keyholder can)
        me = replace(me, incarnation=incarnation)
        self.counters.refutations += 1
        self.awareness.apply(1)
        self._store(me, out)
        self._broadcast(self.name, self._alive_message(me))

    # Records -----------------------------------------------------------------------------------------

    def _store(self, member: Member, out: list[Output]) -> None:
        previous = self._members.get(member.name)
        self._members[member.name] = member
        self._count(previous, member)
        if previous is None:
            self._others = None
        if (
            previous is None
            or previous.status is not member.status
            or previous.meta != member.meta
            or previous.addr != member.addr
        ):
            out.append(Changed(member, previous))

    def _live_peers(self) -> int:
        return self._live_count - (1 if self.me.live else 0)

    def _count(self, previous: Member | None, member: Member) -> None:
        was = previous is not None and previous.status in LIVE
        self._live_count += (member.status in LIVE) - was

    def _pick(self, k: int, accept: Callable[[Member], bool]) -> list[Member]:
        """Up to ``k`` distinct random other members that ``accept`` (memberlist's kRandomNodes)."""
        if self._others is None:
            self._others = [name for name in self._members if name != self.name]
        names = self._others
        picked: list[Member] = []
        seen: set[str] = set()
        for _ in range(3 * len(names)):
            if len(picked) >= k:
                break
            name = names[self.rng.randrange(len(names))]
            if name in seen:
                continue
            seen.add(name)
            member = self._members.get(name)
            if member is not None and accept(member):
                picked.append(member)
        return picked

    def _alive_message(self, member: Member) -> bytes:
        return encode_message(Alive(member.name, member.addr, member.incarnation, member.meta))

    def _check_fits(self, encoded: bytes) -> None:
        if len(encoded) + 1 > self._budget:
            raise ValueError(f"an alive message of {len(encoded)} bytes does not fit a datagram")

    def _broadcast(self, key: str, encoded: bytes) -> None:
        self._broadcasts.queue(key, encoded)

    # Outgoing ----------------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_INCARNATION else 1
        return self._seq

    def _send(self, now: float, addr: str, messages: list[Message], out: list[Output]) -> bool:
        """A datagram of ``messages`` filled up with queued updates; False when there was nothing to send."""
        encoded = [encode_message(m) for m in messages]
        free = self._budget - sum(len(e) + 1 for e in encoded)
        limit = retransmit_limit(self.config.retransmit_mult, self._live_count)
        encoded += self._broadcasts.take(free, limit)
        if not encoded:
            return False
        self._emit(now, addr, join_packet(self.name, encoded), False, out)
        return True

    def _send_stream(self, now: float, addr: str, message: PushPull, out: list[Output]) -> None:
        self._emit(now, addr, join_packet(self.name, [encode_message(message)]), True, out)

    def _emit(self, now: float, addr: str, packet: bytes, stream: bool, out: list[Output]) -> None:
        self.counters.sent += 1
        out.append(Send(addr, self.keyring.seal(packet, self._wall(now)), stream))
