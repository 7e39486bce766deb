"""What the acting Redis supervisor does next: a pure function of what it observed.

Inputs are one round's observations (every configured Redis server's answer to PING, ROLE and INFO
replication, the primary recorded in the DB Service, whether this supervisor holds the lock and the
DB has a quorum) and the little memory carried between rounds (since when the recorded primary has
failed). The output is the memory for the next round and an ordered list of actions that the I/O layer
(:mod:`agenda.redis_supervisor.daemon`) carries out in order, stopping at the first that fails:

* :class:`Record` first, always: the DB is the source of truth for where the primary is, and the
  write is fenced by the lock, so a supervisor that lost its lock changes nothing, not even Redis.
* :class:`Promote` (``REPLICAOF NO ONE``) only for the server just recorded, or already recorded.
* :class:`Follow` (``REPLICAOF host port``) for every other reachable server that is not already a
  replica of the recorded primary: a former primary that comes back is made a replica before any
  client can write to it (clients only write where the DB says, after checking ROLE).

Failure detection follows Sentinel's ``down-after-milliseconds``: the recorded primary is failed once
it has answered neither PING nor ROLE-as-master for ``down_after`` seconds. The replacement is the
best reachable replica: highest replication offset, then lowest ``priority`` (Redis's
``replica-priority`` convention: lower is preferred, 0 never promoted), then name for determinism.
Without the lock nothing is done; without a DB quorum nothing can be recorded, so nothing fails over
(the status says why) while servers already in line with the record are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "Action",
    "Follow",
    "Memory",
    "Observation",
    "Promote",
    "Record",
    "Recorded",
    "ServerView",
    "Verdict",
    "decide",
]

Role = Literal["master", "slave"]

# Why no failover happened although the primary is down: shown in status and logged once per change.
WAIT_LOCK: Final = "not acting: another supervisor holds the lock"
WAIT_QUORUM: Final = "the DB has no quorum: a failover could not be recorded, so none is made"
WAIT_DOWN_AFTER: Final = "the recorded primary is failing; waiting out down_after"
NO_CANDIDATE: Final = "the recorded primary is down and no replica can replace it"


@dataclass(frozen=True)
class ServerView:
    """One Redis server as observed this round; ``reachable`` False when PING or ROLE failed."""

    name: str  # "host:port", the identity used in the record
    host: str
    port: int
    reachable: bool
    role: Role | None = None
    master: str | None = None  # a replica's configured primary, "host:port"
    link_up: bool = False  # a replica's master_link_status
    offset: int = 0  # master_repl_offset (a replica's processed offset)
    priority: int = 100  # replica-priority: lower preferred, 0 never promoted


@dataclass(frozen=True)
class Recorded:
    """The primary recorded in the DB (``/system/redis/primary``)."""

    name: str
    host: str
    port: int
    epoch: int


@dataclass(frozen=True)
class Observation:
    now: float  # monotonic seconds
    servers: Sequence[ServerView]
    recorded: Recorded | None
    holds_lock: bool
    db_quorum: bool
    down_after: float = 1.0
    bootstrap: str | None = None  # the configured first primary, for an empty record


@dataclass(frozen=True)
class Memory:
    """Carried from one round to the next."""

    failing_since: float | None = None


@dataclass(frozen=True)
class Record:
    """Write the new primary with ``epoch`` (fenced by the lock; create-only when ``epoch`` is 1)."""

    name: str
    host: str
    port: int
    epoch: int
    reason: str


@dataclass(frozen=True)
class Promote:
    """``REPLICAOF NO ONE`` on ``name``."""

    name: str
    reason: str


@dataclass(frozen=True)
class Follow:
    """``REPLICAOF primary`` on ``name``."""

    name: str
    primary: str
    host: str
    port: int
    reason: str


Action = Record | Promote | Follow


@dataclass(frozen=True)
class Verdict:
    actions: list[Action]
    memory: Memory
    # One line for status and logs: what the supervisor sees and why it does (or does not) act.
    summary: str
    primary_ok: bool = False
    waiting: str | None = None


def _healthy_primary(server: ServerView | None) -> bool:
    return server is not None and server.reachable and server.role == "master"


def best_candidate(servers: Sequence[ServerView], exclude: str | None = None) -> ServerView | None:
    """The server to promote: reachable, promotable, highest offset, then lowest priority, then name."""
    candidates = [s for s in servers if s.reachable and s.priority > 0 and s.name != exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-s.offset, s.priority, s.name))


def _converge(servers: Sequence[ServerView], primary: ServerView, reason: str) -> list[Action]:
    """Follow actions for every reachable server not already replicating ``primary``."""
    actions: list[Action] = []
    for server in servers:
        if server.name == primary.name or not server.reachable:
            continue
        if server.role == "slave" and server.master == primary.name:
            continue
        actions.append(Follow(server.name, primary.name, primary.host, primary.port, reason))
    return actions


def _bootstrap(obs: Observation, by_name: dict[str, ServerView]) -> Verdict:
    """No primary recorded yet: record the one that already acts as primary, or the configured first."""
    masters = [s for s in obs.servers if s.reachable and s.role == "master"]
    configured = by_name.get(obs.bootstrap) if obs.bootstrap is not None else None
    chosen: ServerView | None
    if len(masters) == 1:
        chosen, why = masters[0], "the only server acting as primary"
    elif configured and configured.reachable and (configured.role == "master" or configured.priority > 0):
        # A replica with priority 0 is never promoted, not even when configured as the first primary.
        chosen, why = configured, "the configured first primary"
    else:
        chosen, why = best_candidate(masters) or best_candidate(obs.servers), "the best reachable server"
    if chosen is None:
        return Verdict([], Memory(), "no primary recorded and no server reachable", waiting=NO_CANDIDATE)
    if not obs.db_quorum:
        return Verdict([], Memory(), f"no primary recorded; would record {chosen.name}", waiting=WAIT_QUORUM)
    reason = f"first primary: {why}"
    actions: list[Action] = [Record(chosen.name, chosen.host, chosen.port, 1, reason)]
    if chosen.role != "master":
        actions.append(Promote(chosen.name, reason))
    actions += _converge(obs.servers, chosen, f"replica of the first primary {chosen.name}")
    return Verdict(actions, Memory(), f"recording {chosen.name} as the first primary (epoch 1)")


def decide(obs: Observation, memory: Memory) -> Verdict:
    """The actions for this round and the memory for the next (see the module's rules)."""
    by_name = {s.name: s for s in obs.servers}
    if not obs.holds_lock:
        return Verdict([], Memory(), WAIT_LOCK, waiting=WAIT_LOCK)
    recorded = obs.recorded
    if recorded is None:
        return _bootstrap(obs, by_name)

    primary = by_name.get(recorded.name) or ServerView(
        recorded.name, recorded.host, recorded.port, reachable=False
    )
    if _healthy_primary(primary):
        actions = _converge(obs.servers, primary, f"replica of the recorded primary {primary.name}")
        summary = f"primary {primary.name} (epoch {recorded.epoch}) is healthy"
        return Verdict(actions, Memory(), summary, primary_ok=True)

    failing_since = memory.failing_since if memory.failing_since is not None else obs.now
    kept = Memory(failing_since)
    state = "unreachable" if not primary.reachable else f"a {primary.role or 'server'} not acting as primary"
    failing_for = obs.now - failing_since
    summary = f"primary {primary.name} (epoch {recorded.epoch}) is {state} for {failing_for:.2f}s"
    if failing_for < obs.down_after:
        return Verdict([], kept, summary, waiting=WAIT_DOWN_AFTER)
    if not obs.db_quorum:
        return Verdict([], kept, summary, waiting=WAIT_QUORUM)

    # A recorded primary that answers as a replica (it restarted with an old configuration, say) is
    # one candidate among the others: it may well hold the most data.
    exclude = None if primary.reachable else primary.name
    chosen = best_candidate(obs.servers, exclude=exclude)
    if chosen is None:
        return Verdict([], kept, summary, waiting=NO_CANDIDATE)
    epoch = recorded.epoch + 1
    reason = f"failover from {primary.name} ({state} for {failing_for:.2f}s, down_after {obs.down_after:g}s)"
    actions: list[Action] = [Record(chosen.name, chosen.host, chosen.port, epoch, reason)]
    actions.append(Promote(chosen.name, reason))
    actions += _converge(obs.servers, chosen, f"replica of the new primary {chosen.name} (epoch {epoch})")
    return Verdict(actions, Memory(), f"{summary}: promoting {chosen.name} with epoch {epoch}")
