"""Hand committed notifications to Redis in the background, so no request ever waits on Redis.

The stores call an :class:`Announcer` with the notifications a transaction stored, right after it
committed (``agenda.calendar.cas.commit``). The call only appends them to a bounded in-memory queue;
one background thread publishes each, in order, on its user's channel (``notifications:<user>``) as
the stored record: the notification's dict plus its ``cursor``, the id a live stream resumes from.

Nothing here can lose a notification, only its live delivery: it is in the DB already, and a client
that reconnects reads what it missed from there. So a full queue drops its *oldest* message (the one
most likely to be stale, and already past a reconnecting client's cursor soonest), and a publish that
fails (:class:`~agenda.messaging.publisher.Publisher` gives up after its deadline) is counted and
logged, at most once per ``log_interval`` for each kind of trouble, never raised to the request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from agenda.calendar.layout import notification_record
from agenda.domain.model import Notification
from agenda.messaging.channels import user_channel

__all__ = ["Announcer"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 10_000


class _Publishes(Protocol):
    def publish(self, channel: str, message: Mapping[str, Any]) -> int: ...


class _RateLimit:
    """Admits one log line per `interval` at most, counting the lines held back in between.

    Not thread-safe by itself: `Announcer` asks under its lock and writes the line after releasing it.
    """

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def admit(self) -> str | None:
        """None: hold this line back; otherwise the suffix the line ends with (what was held back)."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return f" ({held} more such reports held back)" if held else ""


class Announcer:
    """``announcer(notes)`` queues `notes` for publishing; never blocks, never raises. Thread-safe.

    `queue_size` bounds the messages waiting; beyond it the oldest is dropped (counted). `close`
    stops taking messages and waits at most its `timeout` for the queue to drain; what is still
    queued then is dropped (counted). `stats()` says how many were published, dropped and failed.
    """

    def __init__(
        self,
        publisher: _Publishes,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._publisher = publisher
        self.queue_size = queue_size
        self._queue: deque[Notification] = deque()
        self._changed = threading.Condition()  # guards the queue, the counts and `_closed`
        self._closed = False
        self._busy = False  # a message has been taken and is being published
        self._published = 0
        self._dropped = 0
        self._failed = 0
        self._drops_logged = _RateLimit(log_interval, clock)
        self._failures_logged = _RateLimit(log_interval, clock)
        self._thread = threading.Thread(target=self._run, name="notification-announcer", daemon=True)
        self._thread.start()

    def __call__(self, notes: Sequence[Notification]) -> None:
        """Queue `notes` (in order) behind what is waiting; drop the oldest if the queue is full."""
        dropped = 0
        with self._changed:
            closed = self._closed
            if closed:
                dropped = len(notes)
            else:
                for note in notes:
                    if len(self._queue) >= self.queue_size:
                        self._queue.popleft()
                        dropped += 1
                    self._queue.append(note)
                self._changed.notify_all()
            self._dropped += dropped
            suffix = self._drops_logged.admit() if dropped else None
        if suffix is not None:
            why = "the announcer is closed" if closed else f"the queue is full ({self.queue_size})"
            log.warning("dropped %d notification message(s): %s; they are stored%s", dropped, why, suffix)

    def stats(self) -> dict[str, int]:
        """``{published, dropped, failed, queued}`` so far."""
        with self._changed:
            return {
                "published": self._published,
                "dropped": self._dropped,
                "failed": self._failed,
                "queued": len(self._queue),
            }

    def flush(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds until nothing is queued or being published; True if so."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Take no more messages, publish what is queued for at most `timeout` seconds, drop the rest."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)
        with self._changed:
            left = len(self._queue)
            self._queue.clear()
            self._dropped += left
        if left:
            log.warning("closing: dropped %d queued notification message(s) after %gs", left, timeout)
        if self._thread.is_alive():
            log.info("closing: a publish is still in progress; the announcer thread ends after it")

    def __enter__(self) -> Announcer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return  # closed and drained
                note = self._queue.popleft()
                self._busy = True
            self._publish(note)

    def _publish(self, note: Notification) -> None:
        try:
            self._publisher.publish(user_channel(note.user), notification_record(note))
        except Exception as exc:  # whatever it is, the request must not see it
            with self._changed:
                self._failed += 1
                failed = self._failed
                suffix = self._failures_logged.admit()
            if suffix is not None:
                log.warning(
                    "publishing notification %s for %s failed (%d so far; it is stored): %s%s",
                    note.id,
                    note.user,
                    failed,
                    exc,
                    suffix,
                )
        else:
            with self._changed:
                self._published += 1
