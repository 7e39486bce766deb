"""Lifeguard's two timers (Dadgar, Hashimoto et al., "Lifeguard: Local Health Awareness for More
Accurate Failure Detection", 2018), as memberlist implements them.

SWIM assumes that the member that probes is healthy. A member that is itself slow (CPU starved, its
receive queue late) misses acks that were sent in time, and its suspicions of healthy members are false
positives. Lifeguard makes the prober account for its own health:

* :class:`Awareness` (LHA-Probe): a score raised by signs that we are the slow one (a failed probe for
  which the relays' nacks did not arrive either, having to refute a suspicion of ourselves) and lowered by
  every successful probe. The probe interval is stretched by ``score + 1``, so a slow member waits longer
  for acks and probes less often, instead of accusing members that answered in time.
* :class:`Suspicion` (LHA-Suspicion): the suspicion timeout starts at a maximum and shrinks, on a log
  scale, towards the minimum as other members independently suspect the same member. One (perhaps slow)
  accuser alone needs the whole maximum; ``k`` independent accusers need only the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Awareness", "Suspicion", "suspicion_remaining"]


@dataclass
class Awareness:
    """The local-health score, ``0 <= score < max_multiplier``; 0 is healthy."""

    max_multiplier: int
    score: int = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)


def suspicion_remaining(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Time left on a suspicion with ``n`` of ``k`` wanted confirmations (memberlist's formula).

    The whole timeout is ``hi - (hi - lo) * log(n + 1) / log(k + 1)``, to the millisecond below and never
    under ``lo``; the result can be negative, meaning the timeout has passed.
    """
    if k < 1:
        return lo - elapsed
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    return max(lo, math.floor(1000.0 * raw) / 1000.0) - elapsed


@dataclass
class Suspicion:
    """A running suspicion of one member, started at ``started`` by ``accuser``.

    The accuser's own message may be gossiped back to us, so it never counts as a confirmation; neither
    does a second word from a member already counted, nor any past the ``k`` that reach the minimum.
    """

    accuser: str
    started: float
    k: int
    lo: float
    hi: float
    confirmations: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.confirmations.add(self.accuser)

    @property
    def count(self) -> int:
        """Independent confirmations so far (the first accuser excluded)."""
        return len(self.confirmations) - 1

    @property
    def deadline(self) -> float:
        return self.started + suspicion_remaining(self.count, self.k, 0.0, self.lo, self.hi)

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser``; True when this was new information, worth gossiping on."""
        if self.count >= self.k or accuser in self.confirmations:
            return False
        self.confirmations.add(accuser)
        return True
