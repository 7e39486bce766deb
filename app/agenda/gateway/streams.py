"""``GET /v1/notifications/stream``: a user's notifications as Server-Sent Events.

Each notification is one event: ``id:`` its cursor (``<20-digit microseconds>.<notification id>``, the
same bookmark ``GET /v1/notifications?since=`` takes, so the id a browser's EventSource sends back as
``Last-Event-ID`` on reconnect is exactly where to resume), ``event: notification``, ``data:`` the
notification as ``GET /v1/notifications`` lists it.

Where they come from:

- On connect with ``Last-Event-ID`` (or ``?since=``), everything after it is read from the DB through
  the User Service before the stream starts, so a client that was away misses nothing.
- Then live, from the process's :class:`~agenda.messaging.hub.NotificationHub` (Redis Pub/Sub). When
  the hub (re)subscribes it tells every stream to catch up from the DB again (the messages published
  while it was not subscribed), and while it is not subscribed at all (Redis failing over, or not
  configured) the stream polls the DB every ``poll_interval`` seconds instead. Notifications are
  stored in the same transaction as the change they describe, so the DB is always complete; Redis
  only makes them fast.
- An id already sent on this connection is never sent twice (catch-ups and live messages overlap).

A comment line (``: keep-alive``) every ``heartbeat`` seconds keeps proxies and load balancers from
closing an idle stream and lets the server notice a client that went away. A stream ends when the
access token expires (the client reconnects with a fresh one and its Last-Event-ID), after
``max_age`` seconds, or at once when the process starts draining for a restart (`begin_draining`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from agenda.calendar.layout import NOTIFICATION_CURSOR
from agenda.common.errors import bad_request

__all__ = [
    "ReplayFailed",
    "StreamSettings",
    "begin_draining",
    "drain_when",
    "draining",
    "event_text",
    "initial_cursor",
    "notification_stream",
    "resume_cursor",
]

log = logging.getLogger(__name__)

HEARTBEAT: Final = b": keep-alive\n\n"
DRAIN: Final = {"drain": True}  # put in every open stream's listener when the process starts draining
_SEEN_IDS: Final = 4096  # ids remembered per connection to drop duplicates
_draining = threading.Event()
# The listeners of the streams open in this process, to wake them when it starts draining (instead of
# a thousand idle streams each waking every second to look).
_open: weakref.WeakSet[Any] = weakref.WeakSet()
_open_lock = threading.Lock()


class ReplayFailed(Exception):  # noqa: N818 - reads as the condition, like NoPrimary
    """The DB's notifications could not be read (the User Service did not answer as expected)."""


@dataclass(frozen=True)
class StreamSettings:
    heartbeat: float = 15.0  # seconds between keep-alive comments
    poll_interval: float = 2.0  # seconds between DB reads while the hub is not subscribed
    max_age: float = 3600.0  # seconds a stream lasts at most; the client reconnects with its id
    retry_ms: int = 2000  # the reconnection delay the client is told (SSE ``retry:``)
    page: int = 100  # notifications per read of the DB
    replay_limit: int = 1000  # notifications per catch-up at most; the rest come at the next one


class _Listens(Protocol):
    def get(self, timeout: float) -> dict[str, Any] | None: ...

    def put(self, item: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class _Hub(Protocol):
    @property
    def live(self) -> bool: ...

    def listen(self, user: str) -> _Listens: ...


# ------------------------------------------------------------------------------ process draining


def begin_draining() -> None:
    """End every stream of this process at once (it is about to stop)."""
    _draining.set()
    with _open_lock:
        listeners = list(_open)
    for listener in listeners:
        listener.put(DRAIN)


def draining() -> bool:
    return _draining.is_set()


def drain_when(stopping: Callable[[], bool], interval: float = 0.5) -> threading.Thread:
    """Watch `stopping` (gunicorn: ``lambda: not worker.alive``) and drain the streams once it is true.

    A graceful stop waits for every request in flight, and a stream never finishes on its own: without
    this, each restart would wait the whole graceful timeout. Clients reconnect (to the next process,
    the listening socket being systemd's) with their Last-Event-ID and miss nothing.
    """

    def watch() -> None:
        while not stopping():
            time.sleep(interval)
        begin_draining()

    thread = threading.Thread(target=watch, name="stream-drain", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------------ the format


def event_text(record: dict[str, Any]) -> bytes:
    """One SSE event for a notification record (its ``cursor`` is the event's id)."""
    data = json.dumps(record, separators=(",", ":"), sort_keys=True)
    return f"id: {record['cursor']}\nevent: notification\ndata: {data}\n\n".encode()


def resume_cursor(last_event_id: str | None, since: str | None) -> str | None:
    """Where a stream resumes: ``Last-Event-ID`` (what EventSource sends), else ``?since=``; validated.

    A value that is not a cursor this API made is a 400 naming the field, never a stream that starts
    from an arbitrary place.
    """
    for field, value in (("Last-Event-ID", last_event_id), ("since", since)):
        if value is None:
            continue
        if not NOTIFICATION_CURSOR.fullmatch(value):
            raise bad_request(f"{field} must be the id of an event this stream sent", field=field)
        return value
    return None


def initial_cursor(now: datetime) -> str:
    """A cursor for "from now on": before every notification created after `now`."""
    micros = int(now.astimezone(UTC).timestamp() * 1_000_000)
    return f"{micros:020d}.-"


# ---------------------------------------------------------------------------------- the stream


class _Sent:
    """The ids sent on one connection (the most recent `_SEEN_IDS`) and the newest cursor sent."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def admit(self, record: dict[str, Any]) -> bool:
        note_id = record["id"]
        if note_id in self._ids:
            return False
        self._ids.add(note_id)
        self._order.append(note_id)
        if len(self._order) > _SEEN_IDS:
            self._ids.discard(self._order.popleft())
        self.cursor = max(self.cursor, record["cursor"])
        return True


def notification_stream(
    user: str,
    cursor: str,
    first: list[dict[str, Any]],
    fetch: Callable[[str], list[dict[str, Any]]],
    hub: _Hub | None,
    settings: StreamSettings,
    ends_at: float,
    *,
    listener: _Listens | None = None,
    clock: Callable[[], float] = time.monotonic,
    phase: Callable[[], float] = random.random,
) -> Iterator[bytes]:
    """The stream's bytes: `first` (the catch-up done before responding), then live and caught-up events.

    `fetch(cursor)` returns the records after `cursor`, oldest first (raising :class:`ReplayFailed`);
    `listener` is the hub listener opened *before* `first` was read, so nothing falls in between.
    `ends_at` is on `clock`'s scale.
    """
    sent = _Sent(cursor)
    if listener is None and hub is not None:
        listener = hub.listen(user)
    if listener is not None:
        with _open_lock:
            _open.add(listener)
    try:
        yield f"retry: {settings.retry_ms}\n\n".encode()
        for record in first:
            if sent.admit(record):
                yield event_text(record)
        now = clock()
        # The first keep-alive comes after a random half to whole interval: streams opened together (a
        # gateway restart reconnects them all at once) then keep their heartbeats spread out instead of
        # writing in one burst every interval (measured: bursts of 1,000 every 5 s doubled create-event's
        # p99 on a 2-core host, spread they cost nothing measurable).
        next_heartbeat = now + settings.heartbeat * (0.5 + phase() / 2)
        next_poll = now + settings.poll_interval
        while not draining():
            now = clock()
            if now >= ends_at:
                return
            live = hub is not None and hub.live
            wake = min(next_heartbeat, ends_at)
            if listener is None:
                wake = min(wake, now + 1.0)  # nothing would wake it when draining begins: look each second
            if not live:
                wake = min(wake, next_poll)
            item = listener.get(wake - now) if listener is not None else _sleep(wake - now)
            if item is not None and item.get("drain") is True:
                return
            catch_up = item is not None and item.get("resync") is True
            if item is not None and not catch_up:
                if sent.admit(item):
                    yield event_text(item)
                    next_heartbeat = clock() + settings.heartbeat
                continue
            now = clock()
            if not live and now >= next_poll:
                catch_up, next_poll = True, now + settings.poll_interval
            if catch_up:
                try:
                    records = fetch(sent.cursor)
                except ReplayFailed as exc:
                    log.warning("catching up the stream of %s failed (retried): %s", user, exc)
                    records = []
                for record in records:
                    if sent.admit(record):
                        yield event_text(record)
                        next_heartbeat = clock() + settings.heartbeat
            if clock() >= next_heartbeat:
                yield HEARTBEAT
                next_heartbeat = clock() + settings.heartbeat
    finally:
        if listener is not None:
            with _open_lock:
                _open.discard(listener)
            listener.close()


def _sleep(seconds: float) -> None:
    time.sleep(max(0.0, seconds))
