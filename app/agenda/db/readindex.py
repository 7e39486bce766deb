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
sends with a number that only grows, and a follower's transport copies the stamp of the AppendEntries
it is handling onto the answer it sends (`agenda.db.transport`). A read begun when the next stamp was
``seq`` is confirmed by each voter whose highest echoed stamp is at least ``seq``. Stamps of term T
start at ``T << 40`` (`term_floor`): a leader restarted in a later term can never take an echo of a
stamp its previous process sent for confirmation.

When ReadIndex cannot be used the read goes through the log as a no-op, which is always correct:
before the term's first entry is committed; when fewer than a majority of the voters echoed a stamp
of this term lately (members of an older version in a rolling upgrade, a member down); when the
leader lost its term while the round was in flight (the no-op may still be served by the new
leader, as before). A round unconfirmed after `fallback_after` seconds proposes the no-op too, but
stays in flight: whichever of the two completes first serves the read. Nothing here touches
pysyncobj; :class:`~agenda.db.node.Node` feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Once", "PendingRead", "ReadIndex", "majority_echoed", "term_floor"]

_TERM_SHIFT: Final = 40  # 10^12 stamps per term before one term's stamps could reach the next's


def term_floor(term: int) -> int:
    """The lowest stamp of `term`: every stamp sent in a later term is above every one of this term."""
    return term << _TERM_SHIFT


class Once:
    """A read's outcome callback (result, FAIL_REASON code) that passes on only the first outcome: a
    round that fell back may be served by its confirmation and by its no-op, whichever comes first."""

    __slots__ = ("_done", "fired")

    def __init__(self, done: Callable[[Any, Any], None]) -> None:
        self._done = done
        self.fired = False

    def __call__(self, result: Any, error: Any) -> None:
        if not self.fired:
            self.fired = True
            self._done(result, error)


@dataclass(slots=True)
class PendingRead:
    """One read round waiting for its confirmation and its index to be applied."""

    term: int
    index: int  # the leader's commit index when the round began
    seq: int  # the stamp of the first AppendEntries sent after the round began
    fallback_at: float  # unconfirmed by then: a no-op through the log too
    forget_at: float  # fallen back and still unconfirmed by then: left to the no-op alone
    done: Once
    confirmed: bool = False
    fell_back: bool = False


def _is_majority(count: int, voters: int) -> bool:
    """`count` of the `voters` + 1 members (the leader counts itself) are a majority."""
    return count > (voters + 1) / 2


def majority_echoed(voters: Collection[Any], acked: Mapping[Any, int], seq: int) -> bool:
    """The leader and the voters whose highest echoed stamp is at least `seq` are a majority."""
    echoed = sum(1 for node in voters if node in acked and acked[node] >= seq)
    return _is_majority(1 + echoed, len(voters))


class ReadIndex:
    """The read rounds in flight on one member; every method runs on the tick thread."""

    def __init__(self, success: Any, fallback_after: float, forget_after: float) -> None:
        self._success = success  # what `done` gets as the error of a served read
        self.fallback_after = fallback_after
        self.forget_after = forget_after
        self.pending: list[PendingRead] = []

    def begin(self, *, term: int, commit_index: int, seq: int, now: float, done: Once) -> None:
        fallback_at = now + self.fallback_after
        self.pending.append(
            PendingRead(term, commit_index, seq, fallback_at, fallback_at + self.forget_after, done)
        )

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
        """Serve every round that can be; return the ones to redo as a no-op through the log.

        A round whose leader lost its term is returned (unless it already fell back) and dropped; one
        unconfirmed after its time is returned and kept, whichever of the two then serves it first.
        """
        if not self.pending:
            return []
        still: list[PendingRead] = []
        redo: list[PendingRead] = []
        for read in self.pending:
            if read.done.fired:
                continue
            if not leading or term != read.term:
                if not read.fell_back:
                    redo.append(read)
                continue
            if not read.confirmed:
                read.confirmed = majority_echoed(voters, acked, read.seq)
            if read.confirmed:
                if applied >= read.index:
                    read.done(None, self._success)
                    continue
            elif read.fell_back:
                if now >= read.forget_at:
                    continue
            elif now >= read.fallback_at:
                read.fell_back = True
                redo.append(read)
            still.append(read)
        self.pending = still
        return redo
