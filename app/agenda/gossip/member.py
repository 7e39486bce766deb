"""Member records: who a member is, what it announces about itself, and what we believe of it.

A member is named (the name is its identity: unique in the cluster, stable across restarts) and
reachable at ``addr`` ("host:port" of its gossip socket). Its ``incarnation`` is a counter only the
member itself raises: to refute a suspicion, to announce new metadata, or to come back after a restart.
Every claim about a member carries the incarnation it is about, and the precedence rules in
:mod:`agenda.gossip.protocol` compare claims by incarnation first, so that a member's own word at a
higher incarnation always beats an older accusation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["LIVE", "MAX_INCARNATION", "Member", "Meta", "Status"]

# Incarnations and sequence numbers travel as JSON integers; 2**63 - 1 keeps them exact in any decoder.
MAX_INCARNATION: Final = 2**63 - 1


class Status(enum.Enum):
    """What a node believes of a member. ``LEFT`` is a death the member announced itself."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# The statuses of a member that is probed, gossiped to, and counted in the cluster size.
LIVE: Final = frozenset({Status.ALIVE, Status.SUSPECT})


@dataclass(frozen=True)
class Meta:
    """What a member announces about itself, gossiped with every alive message.

    ``state`` is the service's own word on its readiness ("serving", "draining", ...): the protocol
    carries it without interpreting it, so a draining member stays ALIVE (it still answers probes) while
    every view learns that it should no longer receive new work.
    """

    service: str = ""
    api_url: str = ""
    version: str = ""
    state: str = "serving"


@dataclass(frozen=True)
class Member:
    """One node's record of a member; replaced, never mutated, so it can be handed out as a snapshot."""

    name: str
    addr: str
    incarnation: int
    status: Status
    meta: Meta
    since: float  # monotonic time (of the node holding the record) of the last status change

    @property
    def live(self) -> bool:
        return self.status in LIVE
