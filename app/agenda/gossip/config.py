"""The protocol's timers and sizes, with HashiCorp memberlist's ``DefaultLANConfig`` as defaults.

The formulas are memberlist's (util.go), so a simulation can be compared with what memberlist would do
with the same timers:

* suspicion timeout: ``suspicion_mult * max(1, log10(n)) * probe_interval``, the minimum; Lifeguard
  starts the timer at ``suspicion_max_timeout_mult`` times that and shrinks it towards the minimum as
  independent confirmations arrive (:mod:`agenda.gossip.lifeguard`).
* retransmit limit: each update is piggybacked ``retransmit_mult * ceil(log10(n + 1))`` times, enough
  for an epidemic to reach every member with high probability, few enough that the queue drains.
* push/pull interval: scaled up past 32 members, since each exchange carries the whole state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PUSH_PULL_SCALE_THRESHOLD",
    "Config",
    "push_pull_scale",
    "retransmit_limit",
    "suspicion_timeout",
]

PUSH_PULL_SCALE_THRESHOLD: Final = 32


def suspicion_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """The minimum suspicion timeout for a cluster of ``n`` members (memberlist's, to the millisecond)."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) * probe_interval / 1000


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is piggybacked before it is dropped from the queue."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """The push/pull interval for ``n`` members: unchanged up to 32, then one more interval per doubling."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return (math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1) * interval


@dataclass(frozen=True)
class Config:
    """Times in seconds. The defaults are memberlist's LAN defaults unless a comment says otherwise."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5  # the direct ping's wait before asking others; not scaled by awareness
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval: float = 30.0
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead: float = 30.0  # dead members still get gossip this long, so they can refute
    awareness_max_multiplier: int = 8  # 1 disables Lifeguard's local-health scaling
    udp_buffer_size: int = 1400  # the largest datagram, sealed: piggybacking fills up to this
    # Not memberlist's: memberlist's Leave takes a timeout from its caller, and retries seeds only
    # when its caller does. These make the core self-contained.
    leave_timeout: float = 5.0  # leave() waits this long at most for its announcement to go out
    seed_retry_interval: float = 5.0  # a member alone retries its seeds this often
    reconnect_interval: float = 30.0  # Serf's: a push/pull with a dead member, to heal partitions
    # memberlist forgets dead members after gossip_to_the_dead; keeping the tombstone longer makes an
    # old alive message about the member (still in some queue, or replayed) unable to resurrect it.
    reap_after: float = 3600.0
    replay_window: float = 30.0  # see agenda.gossip.keyring.ReplayGuard

    def __post_init__(self) -> None:
        positive = {
            "probe_interval": self.probe_interval,
            "probe_timeout": self.probe_timeout,
            "push_pull_interval": self.push_pull_interval,
            "gossip_interval": self.gossip_interval,
            "seed_retry_interval": self.seed_retry_interval,
            "reconnect_interval": self.reconnect_interval,
            "replay_window": self.replay_window,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.probe_timeout >= self.probe_interval:
            # The indirect probes need the rest of the interval to come back.
            raise ValueError("probe_timeout must be shorter than probe_interval")
        if self.awareness_max_multiplier < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("awareness_max_multiplier and suspicion_max_timeout_mult are at least 1")
        if self.suspicion_mult < 1 or self.retransmit_mult < 1:
            raise ValueError("suspicion_mult and retransmit_mult are at least 1")
        if self.indirect_checks < 0 or self.gossip_nodes < 1:
            raise ValueError("indirect_checks >= 0 and gossip_nodes >= 1")
        if self.udp_buffer_size < 512:
            raise ValueError("udp_buffer_size below 512 bytes cannot carry a full alive message")
