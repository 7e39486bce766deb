"""Sliding-window rate limiter for login attempts, keyed by (username, client address).

Keyed by the pair so that an attacker guessing one user's password from one address is slowed down
without locking the real user out from elsewhere, and one address cannot try many users quickly
either without hitting the limit per user. In memory, per gateway instance: with N gateways an
attacker gets at most N times the limit, still a bound. The clock is injected for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["RateLimiter", "login_key"]


def login_key(username: str, address: str | None) -> str:
    """The limiter's key of a login attempt: the username as the client gave it, and its address.

    One function for every way of logging in (the JSON login, a CalDAV client's Basic credentials), so
    that they count against one budget.
    """
    return f"{username}|{address}"


class RateLimiter:
    """At most `limit` attempts per key in any `window` seconds; thread-safe, memory-bounded."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, key: str) -> int | None:
        """Record an attempt for `key`: None when allowed, else whole seconds to wait (Retry-After).

        A refused attempt is not recorded, so waiting the advertised time always helps.
        """
        now = self._clock()
        with self._lock:
            times = self._attempts.get(key)
            if times is None:
                times = deque()
                self._attempts[key] = times
            while times and times[0] <= now - self.window:
                times.popleft()
            self._attempts.move_to_end(key)
            if len(times) >= self.limit:
                return max(1, math.ceil(times[0] + self.window - now))
            times.append(now)
            while len(self._attempts) > self._max_keys:
                self._attempts.popitem(last=False)  # forget the least recently seen key
            return None

    def reset(self, key: str) -> None:
        """Forget `key`'s attempts (after a successful login)."""
        with self._lock:
            self._attempts.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)
