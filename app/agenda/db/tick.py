"""Hand-offs between request threads and pysyncobj's tick thread: a result slot and a wake-up pipe.

pysyncobj runs Raft on one tick thread that sleeps in poll(); request threads queue proposals for it
and wait for their results. :class:`Waiter` is the one-shot result slot of a proposal, :class:`Wakeup`
the pipe that wakes the poller when a proposal is queued (in batched mode pysyncobj does not wake it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from agenda.db.pysyncobj_adapter import POLL_READ

__all__ = ["Waiter", "Wakeup"]


class Waiter:
    """Result slot of one proposal (pysyncobj calls ``on_result`` from the tick thread).

    A bare lock, held from creation and released by ``on_result``, is a one-shot event that costs far
    less than ``threading.Event`` (no Condition, no per-wait waiter lock).
    """

    __slots__ = ("_done", "error", "result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.result: Any = None
        self.error: Any = None

    def on_result(self, result: Any, error: Any) -> None:
        self.result = result
        self.error = error
        with contextlib.suppress(RuntimeError):  # defensive: a second result is ignored
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once ``on_result`` ran; False after ``timeout`` seconds."""
        return self._done.acquire(timeout=timeout)


class Wakeup:
    """Wakes pysyncobj's poller when a proposal is queued (at most one pending byte in the pipe).

    A proposer queues its command, then sets the flag and writes a byte only if the flag was clear. The
    tick thread drains the pipe, *then* clears the flag, and only after poll returns takes the queued
    proposals: a proposal queued before its proposer saw the flag set is picked up by that wake-up, and
    the flag is never left set with an empty pipe.
    """

    def __init__(self, poller: Any) -> None:
        self._pending = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        poller.subscribe(self._read_fd, self._on_readable, POLL_READ)

    def notify(self) -> None:
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending anyway
            os.write(self._write_fd, b"w")

    def _on_readable(self, _descr: int, _event: int) -> None:
        # Drain first, then clear: a proposer that set the flag after the drain has its byte still in the
        # pipe (the next poll returns at once); clearing first could swallow that byte and leave the flag
        # set with an empty pipe, after which no proposer would wake the tick thread again.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass
        self._pending = False
