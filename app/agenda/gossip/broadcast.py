"""The queue of updates waiting to be piggybacked, each sent a bounded number of times.

As memberlist's TransmitLimitedQueue: an update is about one member and replaces any queued update about
the same member (the newer claim is the one worth spreading); the updates sent least often go first; an
update is dropped once it has been sent ``limit`` times, the limit following the cluster size
(:func:`agenda.gossip.config.retransmit_limit`). Within the same count memberlist sends the larger
first, then the newest; here the most recently queued (or moved up a count) goes first, which keeps
:meth:`BroadcastQueue.take` free of sorting: it is called for every datagram, and a node that just
learnt of hundreds of members holds hundreds of updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["BroadcastQueue"]

# take() stops looking for an update small enough for the room left after this many that were not.
_MISSES: Final = 32


@dataclass
class _Item:
    key: str
    data: bytes
    transmits: int = 0


class BroadcastQueue:
    def __init__(self) -> None:
        # _tiers[t]: the updates sent t times so far, in the order they got there.
        self._tiers: list[dict[str, _Item]] = []
        self._items: dict[str, _Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def transmits(self, key: str) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits

    def queue(self, key: str, data: bytes) -> None:
        """Queue ``data`` (an encoded message about member ``key``), replacing any older one about it."""
        old = self._items.pop(key, None)
        if old is not None:
            del self._tiers[old.transmits][key]
        item = _Item(key, data)
        self._items[key] = item
        self._tier(0)[key] = item

    def take(self, free: int, limit: int, separator: int = 1) -> list[bytes]:
        """Updates whose sizes (plus ``separator`` each) fit in ``free`` bytes; each counts as sent once."""
        if not self._items:
            return []
        chosen: list[_Item] = []
        misses = 0
        for tier in self._tiers:
            for key in reversed(tier):
                item = tier[key]
                cost = len(item.data) + separator
                if cost > free:
                    misses += 1
                    if misses >= _MISSES:
                        break
                    continue
                free -= cost
                chosen.append(item)
            if misses >= _MISSES or free <= separator:
                break
        for item in chosen:
            del self._tiers[item.transmits][item.key]
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
            else:
                self._tier(item.transmits)[item.key] = item
        return [item.data for item in chosen]

    def _tier(self, transmits: int) -> dict[str, _Item]:
        while len(self._tiers) <= transmits:
            self._tiers.append({})
        return self._tiers[transmits]
