"""Read barriers shared by concurrent readers: one round serves every reader that arrived before it began.

A linearizable read on the leader first passes a barrier: a ReadIndex round (a heartbeat round that a
majority confirms, :mod:`agenda.db.readindex`) or, where that cannot be used, a no-op committed
through the log. Either succeeds only while this member still leads, and afterwards the local state
follows every write acknowledged before the round *began*. Any round begun after a reader arrived
gives that reader the same guarantee, so readers need not each run their own: under load that would
cost the cluster more than the reads themselves.

:class:`SharedBarrier` runs one barrier at a time. A reader that arrives while one is in flight
joins the next round, which starts when the one in flight ends: a round never includes a reader
that arrived after it started, so each reader's barrier began after it arrived.
A reader waits for at most two barriers; with no barrier in flight it starts one at once, as before.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

__all__ = ["SharedBarrier"]


class _Round:
    """One barrier and the readers waiting for it."""

    __slots__ = ("deadline", "done", "error", "started")

    def __init__(self) -> None:
        self.deadline = float("-inf")  # the latest deadline of the readers that joined it
        self.started = False
        self.done = False
        self.error: BaseException | None = None


class SharedBarrier:
    """`wait(timeout)` returns once a barrier proposed after the call began has completed.

    `run(timeout)` performs one barrier (commits a no-op) or raises; its error is raised, as a
    copy, in every reader of that round. `timed_out()` is the error a reader gets when its own
    `timeout` passes before its round completed (the same one a timed-out proposal gives).
    """

    def __init__(
        self,
        run: Callable[[float], None],
        timed_out: Callable[[], BaseException],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._timed_out = timed_out
        self._clock = clock
        self._cond = threading.Condition()
        self._running: _Round | None = None
        self._next: _Round | None = None
        self.rounds = 0  # barriers actually run (for tests and metrics)

    def wait(self, timeout: float) -> None:
        deadline = self._clock() + timeout
        with self._cond:
            mine = self._next
            if mine is None:
                mine = self._next = _Round()
            mine.deadline = max(mine.deadline, deadline)
            while not mine.done:
                if self._running is None and not mine.started:
                    # Start it: nobody joins it any more (later readers make the next round).
                    mine.started = True
                    self._running, self._next = mine, None
                    self.rounds += 1
                    # The no-op serves every reader of the round: it gets the most patient one's
                    # time, not only what is left of the starter's (which may have spent nearly
                    # all of it waiting for the previous round).
                    budget = max(mine.deadline - self._clock(), 0.001)
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._timed_out()
                self._cond.wait(remaining)
            else:
                return self._outcome(mine)
        try:
            self._run(budget)
        except BaseException as exc:
            mine.error = exc
        finally:
            with self._cond:
                mine.done = True
                self._running = None
                self._cond.notify_all()
        return self._outcome(mine)

    @staticmethod
    def _outcome(round_: _Round) -> None:
        if round_.error is not None:
            # Each reader raises its own copy: one exception object raised in several threads at
            # once would have their tracebacks tangled. An exception whose __init__ does not take
            # its args back (InvalidArgument(field, reason)) cannot be copied: raise it as it is.
            try:
                error = copy.copy(round_.error)
            except Exception:
                error = round_.error
            raise error
