"""The login rate limiter, driven by an injected clock."""

import pytest

from agenda.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_up_to_the_limit_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60, clock=clock)
    assert [limiter.attempt("alice|1.2.3.4") for _ in range(3)] == [None, None, None]
    clock.now += 10
    assert limiter.attempt("alice|1.2.3.4") == 50
    clock.now += 49.5
    assert limiter.attempt("alice|1.2.3.4") == 1  # rounded up, never 0
    clock.now += 0.5
    assert limiter.attempt("alice|1.2.3.4") is None  # the first attempt left the window


def test_keys_are_independent() -> None:
    limiter = RateLimiter(1, 60, clock=Clock())
    assert limiter.attempt("alice|1.2.3.4") is None
    assert limiter.attempt("alice|1.2.3.4") is not None
    assert limiter.attempt("alice|5.6.7.8") is None
    assert limiter.attempt("bob|1.2.3.4") is None


def test_refused_attempts_do_not_extend_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 60, clock=clock)
    limiter.attempt("k")
    for _ in range(119):  # refused attempts up to 59.5 s
        clock.now += 0.5
        limiter.attempt("k")
    clock.now += 0.5
    assert limiter.attempt("k") is None  # 60 s after the only recorded attempt


def test_reset_forgets_a_key() -> None:
    limiter = RateLimiter(1, 60, clock=Clock())
    limiter.attempt("k")
    limiter.reset("k")
    assert limiter.attempt("k") is None


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(1, 60, clock=Clock(), max_keys=10)
    for i in range(100):
        limiter.attempt(f"user{i}|ip")
    assert len(limiter) == 10


@pytest.mark.parametrize(("limit", "window"), [(0, 60), (1, 0), (1, -1)])
def test_bad_parameters(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimiter(limit, window)
