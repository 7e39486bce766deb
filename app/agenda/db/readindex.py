"""Linearizable reads without a log entry: Raft's ReadIndex, decided on the tick thread.

A read barrier used to commit a no-op through the log, which every member appends, fsyncs and
applies. ReadIndex (Raft dissertation, section 6.4; what etcd does) gets the same guarantee from one
heartbeat round instead:

1. The leader records its commit index as the read's index. This is only sound once the leader has
   committed an entry of its own term (its term's first entry, the no-op pysyncobj appends on
   election): before that its commit index may lag behind what earlier leaders committed.
2. It sends AppendEntries to every follower and waits until a majority of the voters (itself
   included) answered one sent *after* the read began. A follower answers AppendEntries only while
   its term is not above the leader's, so such a majority proves that no newer leader had been
   elected when the read began: every write acknowledged before then is at or below the read's index.
3. Once the leader still leads in the same term and has applied up to the read's index, the read is
   served from its local state.

Pairing an answer with the request it answers: the leader's transport stamps every AppendEntries it
sends with a sequence number that only grows, and a follower's transport copies the stamp of the
AppendEntries it is handling onto the answer it sends (`agenda.db.transport`). A read begun when the
next stamp was ``seq`` is confirmed by each voter whose highest echoed stamp is at least ``seq``.

When ReadIndex cannot be used - the term's first entry is not committed yet, fewer than a majority of
the voters have ever echoed a stamp (members of an older version during a rolling upgrade), or no
majority confirmed within `fallback_after` seconds - the read falls back to a no-op through the log,
which is always correct. Nothing here touches pysyncobj; :class:`~agenda.db.node.Node` feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PendingRead", "ReadIndex", "majority_echoed"]

Done = Callable[[Any, Any], None]  # a proposal's callback: (result, FAIL_REASON code)


@dataclass(slots=True)
class PendingRead:
    """One read round waiting for its confirmation and its index to be applied."""

    term: int
    index: int  # the leader's commit index when the round began
    seq: int  # the stamp of the first AppendEntries sent after the round began
    fallback_at: float  # unconfirmed by then: fall back to a no-op through the log
    done: Done
    confirmed: bool = False


def _is_majority(count: int, voters: int) -> bool:
    """`count` of the `voters` + 1 members (the leader counts itself) are a majority."""
    return count > (voters + 1) / 2


def majority_echoed(voters: Collection[Any], acked: Mapping[Any, int], seq: int = 0) -> bool:
    """The leader and the voters whose highest echoed stamp is at least `seq` are a majority (stamps
    start at 0: by default, the voters that ever echoed one)."""
    echoed = sum(1 for node in voters if node in acked and acked[node] >= seq)
    return _is_majority(1 + echoed, len(voters))


class ReadIndex:
    """The read rounds in flight on one member; every method runs on the tick thread."""

    def __init__(self, success: Any, not_leader: Any, fallback_after: float) -> None:
        self._success = success  # what `done` gets as the error of a served read
        self._not_leader = not_leader  # ... and of a read whose leader lost its term
        self.fallback_after = fallback_after
        self.pending: list[PendingRead] = []

    def begin(self, *, term: int, commit_index: int, seq: int, now: float, done: Done) -> None:
        self.pending.append(PendingRead(term, commit_index, seq, now + self.fallback_after, done))

    def settle(
        self,
        *,
        now: float,
        leading: bool,
        term: int,
        applied: int,
        voters: Collection[Any],
        acked: Mapping[Any, int],
    ) -> list[PendingRead]:
        """Serve or fail every round that can be decided; return the ones to redo as a no-op (removed)."""
        if not self.pending:
            return []
        still: list[PendingRead] = []
        fallbacks: list[PendingRead] = []
        for read in self.pending:
            if not leading or term != read.term:
                read.done(None, self._not_leader)
                continue
            if not read.confirmed:
                read.confirmed = majority_echoed(voters, acked, read.seq)
            if read.confirmed:
                if applied >= read.index:
                    read.done(None, self._success)
                else:
                    still.append(read)
            elif now >= read.fallback_at:
                fallbacks.append(read)
            else:
                still.append(read)
        self.pending = still
        return fallbacks
