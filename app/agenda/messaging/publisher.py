"""Publish JSON messages on the Redis primary, riding out failovers within a deadline.

A failover takes the primary away for about a second (the supervisor's ``down_after`` plus promotion),
and notifications are worth delivering late rather than not at all, so :meth:`Publisher.publish`
re-locates the primary and retries with capped exponential backoff until its deadline, then raises
:class:`~agenda.messaging.errors.PublishFailed` with the last reason.

PUBLISH is not a write for Redis: a replica accepts it and delivers to its own subscribers only, so a
message published on a demoted primary would be lost silently. It is therefore sent through a script
declared as writing (``#!lua``, without ``no-writes``), which a replica refuses with READONLY; the
publisher then re-locates. The Redis account needs ``+eval`` and ``+publish`` (``+role`` too, for
the locator's check) and access to the channels.

Delivery is at least once: a timeout leaves unknown whether Redis published, and the retry may
publish again; subscribers must tolerate a duplicate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import redis

from agenda.db.client import DBError
from agenda.messaging.errors import NoPrimary, PublishFailed
from agenda.messaging.locator import RedisLocator

__all__ = ["PUBLISH_SCRIPT", "Publisher", "backoff_delays"]

log = logging.getLogger(__name__)

# allow-oom: plain PUBLISH works on a full primary, so must this (a write script is refused under OOM).
PUBLISH_SCRIPT: Final = "#!lua flags=allow-oom\nreturn redis.call('PUBLISH', ARGV[1], ARGV[2])\n"

# Worth another attempt after re-locating: the server went away, timed out, is a replica now
# (READONLY), is still loading, or no primary could be found yet (mid-failover, DB unreachable).
# AuthenticationError is a ConnectionError but never retried: the credentials will not get better.
_RETRYABLE: Final = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    NoPrimary,
    DBError,
)


def backoff_delays(initial: float, cap: float) -> Iterator[float]:
    """``initial``, doubling, never above ``cap``: the pauses between attempts."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Publisher:
    """JSON messages to Redis Pub/Sub channels on whichever server the DB names as primary."""

    def __init__(
        self,
        locator: RedisLocator,
        *,
        deadline: float = 3.0,
        initial_backoff: float = 0.05,
        max_backoff: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._locator = locator
        self.deadline = deadline
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._sleep = sleep

    def publish(self, channel: str, message: Mapping[str, Any]) -> int:
        """Publish ``message`` as JSON on ``channel``; returns how many subscribers received it.

        Raises :class:`PublishFailed` once ``deadline`` seconds have passed without success (an
        attempt already under way may overrun it by at most the locator's socket timeout), or at once
        when Redis rejects the credentials or the command. ``TypeError`` for a message JSON cannot encode.
        """
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        deadline = self._clock() + self.deadline
        delays = backoff_delays(self._initial_backoff, self._max_backoff)
        attempts = 0
        while True:
            attempts += 1
            client: redis.Redis | None = None
            try:
                client = self._locator.client()
                return int(client.execute_command("EVAL", PUBLISH_SCRIPT, 0, channel, payload))
            except redis.AuthenticationError as exc:
                raise PublishFailed(f"Redis refused our credentials: {exc}") from None
            except _RETRYABLE as exc:
                reason = _reason(exc)
                if client is not None:
                    self._locator.invalidate(client, reason)
            except redis.ResponseError as exc:  # NOPERM, a script error: a retry would get the same
                raise PublishFailed(f"Redis refused to publish on {channel!r}: {exc}") from None
            remaining = deadline - self._clock()
            if remaining <= 0:
                log.error("publish on %s failed after %d attempts: %s", channel, attempts, reason)
                raise PublishFailed(
                    f"could not publish on {channel!r} within {self.deadline:g}s "
                    f"({attempts} attempts); last error: {reason}"
                )
            log.info("publish on %s failed (%s); retrying", channel, reason)
            self._sleep(min(next(delays), remaining))
