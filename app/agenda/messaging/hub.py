"""Fan the notifications published on Redis out to the live streams of one process.

A gateway process holds many open notification streams (``GET /v1/notifications/stream``) but one
Redis connection: the hub pattern-subscribes to every user's channel (``PSUBSCRIBE notifications:*``)
on the primary the :class:`~agenda.messaging.locator.RedisLocator` finds, and hands each message to the
:class:`Listener` of every stream its user has open. One subscription per process instead of one per
user keeps subscribing free of races (a stream never waits for a SUBSCRIBE to be confirmed) at the
cost of every gateway process seeing every user's messages, which at a calendar's rate is nothing.

A message is only the live path. Whatever the hub could not see (it was connecting, the primary
failed over, Redis is down) is in the DB: every time the hub (re)subscribes it puts
:data:`RESYNC` in every listener's queue, and the stream reads what it missed from the DB after its
last event id. While the hub is not subscribed, :attr:`NotificationHub.live` is False and the streams
poll the DB instead, so notifications keep arriving, only later.

Pure parts (:func:`user_of_channel`, :func:`decode_message`, :class:`Listener`) are unit-tested; the
thread that talks to Redis is thin and integration-tested against a real redis-server.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from agenda.messaging.channels import USER_PREFIX
from agenda.messaging.errors import MessagingError

__all__ = ["RESYNC", "Listener", "NotificationHub", "decode_message", "user_of_channel"]

log = logging.getLogger(__name__)

PATTERN: Final = USER_PREFIX + "*"
# Put in a listener's queue when the hub (re)subscribed: messages may have been missed before it.
RESYNC: Final = {"resync": True}
DEFAULT_LISTENER_QUEUE: Final = 1_000


def user_of_channel(channel: str | bytes) -> str | None:
    """The user whose channel `channel` is (``notifications:<user>``), or None for any other name."""
    if isinstance(channel, bytes):
        try:
            channel = channel.decode()
        except UnicodeDecodeError:
            return None
    if not channel.startswith(USER_PREFIX) or len(channel) == len(USER_PREFIX):
        return None
    return channel[len(USER_PREFIX) :]


def decode_message(data: str | bytes) -> dict[str, Any] | None:
    """A published notification record (a JSON object with a string ``cursor`` and ``id``), or None."""
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("cursor"), str) or not isinstance(record.get("id"), str):
        return None
    return record


class Listener:
    """One stream's queue of messages for `user`: records, or :data:`RESYNC`. Thread-safe.

    The queue is bounded: a stream that does not keep up loses its oldest queued messages and gets a
    :data:`RESYNC` in their place, so it reads them from the DB instead (nothing is lost, only late).
    """

    def __init__(
        self, user: str, on_close: Callable[[Listener], None], size: int = DEFAULT_LISTENER_QUEUE
    ) -> None:
        self.user = user
        self._on_close = on_close
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=size)
        self.overflowed = 0

    def put(self, item: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.overflowed += 1
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(RESYNC)

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next item, waiting at most `timeout` seconds; None if none came."""
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._on_close(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NotificationHub:
    """One pattern subscription to every user's channel on the Redis primary, fanned out to listeners.

    `locator` is a started :class:`~agenda.messaging.locator.RedisLocator` (its ``client()`` and
    ``current()`` are what is used). The hub's thread starts with :meth:`start` (in the process that
    serves the streams: threads do not survive a fork) and stops with :meth:`close`.

    The subscription is dropped and made again, on the newly recorded primary, when the locator's
    record changes, when a read fails, and when a PING sent every `ping_interval` seconds gets no
    answer within `ping_timeout`: a half-open connection to a host that vanished never holds it.
    """

    def __init__(
        self,
        locator: Any,
        *,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 2.0,
        listener_queue: int = DEFAULT_LISTENER_QUEUE,
    ) -> None:
        self._locator = locator
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._listener_queue = listener_queue
        self._lock = threading.Lock()  # guards _listeners and the counters
        self._listeners: dict[str, set[Listener]] = {}
        self._live = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscriptions = 0  # how many times the hub (re)subscribed
        self.delivered = 0
        self.malformed = 0
        self.problem: str | None = "not subscribed yet"

    # ---------------------------------------------------------------------------------- public API

    @property
    def live(self) -> bool:
        """True while subscribed: a message published now reaches the listeners."""
        return self._live.is_set()

    def wait_live(self, timeout: float) -> bool:
        return self._live.wait(timeout)

    def listen(self, user: str) -> Listener:
        """A listener for `user`'s messages from now on; close it (or use ``with``) when the stream ends."""
        listener = Listener(user, self._remove, self._listener_queue)
        with self._lock:
            self._listeners.setdefault(user, set()).add(listener)
        return listener

    def stats(self) -> dict[str, Any]:
        with self._lock:
            streams = sum(len(group) for group in self._listeners.values())
            return {
                "live": self.live,
                "streams": streams,
                "users": len(self._listeners),
                "subscriptions": self.subscriptions,
                "delivered": self.delivered,
                "malformed": self.malformed,
                "problem": self.problem,
            }

    def start(self) -> NotificationHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notification-hub", daemon=True)
            self._thread.start()
        return self

    def close(self, join_timeout: float = 1.0) -> None:
        self._stop.set()
        self._live.clear()
        if self._thread is not None:
            self._thread.join(join_timeout)

    # --------------------------------------------------------------------------------- internals

    def _remove(self, listener: Listener) -> None:
        with self._lock:
            group = self._listeners.get(listener.user)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self._listeners[listener.user]

    def _broadcast(self, item: dict[str, Any]) -> None:
        with self._lock:
            listeners = [listener for group in self._listeners.values() for listener in group]
        for listener in listeners:
            listener.put(item)

    def _deliver(self, channel: Any, data: Any) -> None:
        user = user_of_channel(channel)
        record = decode_message(data) if user is not None else None
        with self._lock:
            if record is None:
                self.malformed += 1
                return
            listeners = list(self._listeners.get(user, ()))
            self.delivered += len(listeners)
        for listener in listeners:
            listener.put(record)

    def _run(self) -> None:
        delay = self._reconnect_delay
        while not self._stop.is_set():
            try:
                self._subscribed_session()
                delay = self._reconnect_delay
            except Exception as exc:  # Redis down, no primary recorded, a reset: all mean "try again"
                self._live.clear()
                reason = f"{type(exc).__name__}: {exc}"
                if reason != self.problem:
                    log.warning("notification hub not subscribed (streams poll the DB meanwhile): %s", reason)
                self.problem = reason
                self._stop.wait(delay)
                delay = min(delay * 2, self._max_reconnect_delay)

    def _subscribed_session(self) -> None:
        """Subscribe on the recorded primary and deliver until the record moves or the link fails."""
        client = self._locator.client()
        record = self._locator.current()
        pubsub = client.pubsub()
        try:
            try:
                pubsub.psubscribe(PATTERN)
                confirmed = pubsub.get_message(timeout=self._ping_timeout)
            except Exception:
                self._locator.invalidate(client, "subscribing failed")
                raise
            if not confirmed or confirmed.get("type") != "psubscribe":
                raise MessagingError(f"no psubscribe confirmation from {record}: {confirmed!r}")
            with self._lock:
                self.subscriptions += 1
            self.problem = None
            self._live.set()
            log.info("notification hub subscribed to %s on %s", PATTERN, record)
            # Anything published while not subscribed is only in the DB: every stream catches up.
            self._broadcast(RESYNC)
            self._deliver_until_moved(pubsub, record)
        finally:
            self._live.clear()
            try:
                pubsub.close()
            except Exception:  # the connection may already be gone; closing is best effort
                log.debug("closing the pubsub connection failed", exc_info=True)

    def _deliver_until_moved(self, pubsub: Any, record: Any) -> None:
        next_ping = time.monotonic() + self._ping_interval
        awaiting_pong_since: float | None = None
        while not self._stop.is_set():
            if self._locator.current() != record:
                raise MessagingError(f"the recorded primary moved from {record} to {self._locator.current()}")
            now = time.monotonic()
            if awaiting_pong_since is not None and now - awaiting_pong_since > self._ping_timeout:
                raise MessagingError(f"no answer to PING from {record} within {self._ping_timeout}s")
            if awaiting_pong_since is None and now >= next_ping:
                pubsub.ping()
                awaiting_pong_since = now
            message = pubsub.get_message(timeout=0.5)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "pmessage":
                self._deliver(message.get("channel"), message.get("data"))
            elif kind == "pong":
                awaiting_pong_since = None
                next_ping = time.monotonic() + self._ping_interval
            elif kind in ("punsubscribe", "unsubscribe"):
                raise MessagingError(f"the subscription on {record} ended")
