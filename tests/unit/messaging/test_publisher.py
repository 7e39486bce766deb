"""Publisher's retry policy with a scripted locator and a fake clock (no Redis, no sleeping)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import redis
from redis.exceptions import NoPermissionError

from agenda.messaging import NoPrimary, Publisher, PublishFailed
from agenda.messaging.publisher import PUBLISH_SCRIPT, backoff_delays


class FakeClient:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> Any:
        self.calls.append(args)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeLocator:
    """client() hands out the scripted items in turn (an exception is raised)."""

    def __init__(self, *items: Any) -> None:
        self.items = list(items)
        self.invalidated: list[tuple[Any, str]] = []

    def client(self) -> Any:
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if isinstance(item, BaseException):
            raise item
        return item

    def invalidate(self, client: Any, reason: str) -> None:
        self.invalidated.append((client, reason))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def publisher(locator: FakeLocator, clock: Clock, deadline: float = 3.0) -> Publisher:
    return Publisher(locator, deadline=deadline, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap() -> None:
    assert list(itertools.islice(backoff_delays(0.05, 0.5), 6)) == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_publish_sends_compact_json_through_the_write_guarded_script() -> None:
    client = FakeClient(2)
    clock = Clock()
    assert publisher(FakeLocator(client), clock).publish("notifications:u1", {"a": 1, "é": [True]}) == 2
    ((*command, channel, payload),) = client.calls
    assert command == ["EVAL", PUBLISH_SCRIPT, 0]
    assert channel == "notifications:u1"
    assert payload == '{"a":1,"é":[true]}'
    assert json.loads(payload) == {"a": 1, "é": [True]}
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.ConnectionError("Connection refused"),
        redis.TimeoutError("Timeout reading from socket"),
    ],
)
def test_a_failed_connection_is_dropped_and_the_primary_relocated(failure: Exception) -> None:
    old, new = FakeClient(failure), FakeClient(1)
    clock = Clock()
    locator = FakeLocator(old, new)
    assert publisher(locator, clock).publish("c", {}) == 1
    assert [client for client, _ in locator.invalidated] == [old]
    assert type(failure).__name__ in locator.invalidated[0][1]
    assert clock.sleeps == [0.05]


def test_no_primary_for_longer_than_the_deadline_raises_publish_failed() -> None:
    clock = Clock()
    locator = FakeLocator(NoPrimary("recorded Redis primary 10.0.0.5:6379 (epoch 2) answers as a slave"))
    with pytest.raises(PublishFailed) as caught:
        publisher(locator, clock, deadline=3.0).publish("notifications:u1", {"x": 1})
    message = str(caught.value)
    assert "'notifications:u1' within 3s" in message
    assert "answers as a slave" in message
    assert clock.now - 100.0 == pytest.approx(3.0)  # waited out the deadline, not more
    assert max(clock.sleeps) == 0.5
    assert len(clock.sleeps) > 5


def test_recovers_when_the_primary_shows_up_before_the_deadline() -> None:
    clock = Clock()
    client = FakeClient(4)
    locator = FakeLocator(NoPrimary("mid-failover"), NoPrimary("mid-failover"), client)
    assert publisher(locator, clock).publish("c", {}) == 4
    assert clock.sleeps == [0.05, 0.1]
    assert locator.invalidated == []  # no client was handed out to fail


@pytest.mark.parametrize(
    "refusal",
    [
        redis.AuthenticationError("WRONGPASS invalid username-password pair"),
        NoPermissionError("this user has no permissions to access the 'c' channel"),
    ],
)
def test_a_refusal_is_not_retried(refusal: Exception) -> None:
    clock = Clock()
    with pytest.raises(PublishFailed, match="refused"):
        publisher(FakeLocator(FakeClient(refusal)), clock).publish("c", {})
    assert clock.sleeps == []


def test_a_message_json_cannot_encode_is_the_callers_bug() -> None:
    with pytest.raises(TypeError):
        publisher(FakeLocator(FakeClient(1)), Clock()).publish("c", {"when": object()})
