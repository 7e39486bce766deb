"""The announcer: never blocks, publishes in order, drops the oldest, counts failures and survives them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenda.calendar.layout import notification_record
from agenda.domain.model import Notification, NotificationKind
from agenda.messaging import Announcer, PublishFailed, user_channel

START = datetime(2031, 1, 1, tzinfo=UTC)


def note(i: int, user: str = "bob") -> Notification:
    return Notification(
        id=f"n{i}",
        user=user,
        kind=NotificationKind.INVITED,
        created=START + timedelta(seconds=i),
        event_id="e",
    )


class FakePublisher:
    """Records what it publishes; `gate` (when set) holds each publish until it is opened."""

    def __init__(self, *, gated: bool = False, fail: set[str] | None = None) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.started = threading.Semaphore(0)  # released as each publish starts
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.fail = fail or set()

    def publish(self, channel: str, message: Mapping[str, Any]) -> int:
        self.started.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if message["id"] in self.fail:
            raise PublishFailed(f"could not publish {message['id']}")
        self.published.append((channel, dict(message)))
        return 1

    def ids(self) -> list[str]:
        return [message["id"] for _channel, message in self.published]


@pytest.fixture
def announcers() -> Iterator[list[Announcer]]:
    made: list[Announcer] = []
    yield made
    for announcer in made:
        announcer.close(timeout=1.0)


def make(announcers: list[Announcer], publisher: FakePublisher, **kwargs: Any) -> Announcer:
    announcer = Announcer(publisher, **kwargs)
    announcers.append(announcer)
    return announcer


def test_publishes_each_note_in_order_on_its_users_channel_with_its_cursor(announcers: list) -> None:
    publisher = FakePublisher()
    announcer = make(announcers, publisher)
    notes = [note(1, "bob"), note(2, "carol"), note(3, "bob")]
    announcer(notes[:2])
    announcer(notes[2:])
    assert announcer.flush(5)
    assert publisher.published == [(user_channel(n.user), notification_record(n)) for n in notes]
    assert publisher.published[0][1]["cursor"].endswith(".n1")
    assert announcer.stats() == {"published": 3, "dropped": 0, "failed": 0, "queued": 0}


def test_a_call_never_waits_for_redis(announcers: list) -> None:
    publisher = FakePublisher(gated=True)
    announcer = make(announcers, publisher)
    began = time.monotonic()
    for i in range(100):
        announcer([note(i)])
    assert time.monotonic() - began < 1.0  # the publisher is stuck on the first one all along
    assert announcer.stats()["queued"] >= 99
    publisher.gate.set()
    assert announcer.flush(5)
    assert publisher.ids() == [f"n{i}" for i in range(100)]


def test_a_full_queue_drops_the_oldest_and_counts_it(
    announcers: list, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FakePublisher(gated=True)
    announcer = make(announcers, publisher, queue_size=3)
    announcer([note(0)])
    assert publisher.started.acquire(timeout=5)  # n0 is being published: the queue is empty
    with caplog.at_level(logging.WARNING, logger="agenda.messaging.announcer"):
        announcer([note(1), note(2), note(3), note(4)])
        announcer([note(5)])
    assert announcer.stats() == {"published": 0, "dropped": 2, "failed": 0, "queued": 3}
    publisher.gate.set()
    assert announcer.flush(5)
    assert publisher.ids() == ["n0", "n3", "n4", "n5"]
    assert announcer.stats()["dropped"] == 2
    # Logged, rate-limited: the second drop (within the interval) was held back.
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1


def test_failures_are_counted_and_logged_rate_limited_never_raised(
    announcers: list, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    publisher = FakePublisher(fail={"n1", "n2", "n3"})
    announcer = make(announcers, publisher, log_interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="agenda.messaging.announcer"):
        announcer([note(1), note(2), note(3), note(4)])
        assert announcer.flush(5)
        assert announcer.stats() == {"published": 1, "dropped": 0, "failed": 3, "queued": 0}
        failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 1
        assert "n1" in failures[0]
        now[0] = 61.0
        publisher.fail.add("n5")
        announcer([note(5)])
        assert announcer.flush(5)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    assert "n5" in failures[1]
    assert "2 more such reports held back" in failures[1]
    assert publisher.ids() == ["n4"]


def test_an_unexpected_error_is_a_failure_too(announcers: list) -> None:
    class Broken(FakePublisher):
        def publish(self, channel: str, message: Mapping[str, Any]) -> int:
            raise RuntimeError("bug")

    announcer = make(announcers, Broken())
    announcer([note(1)])
    assert announcer.flush(5)
    assert announcer.stats()["failed"] == 1
    announcer([note(2)])  # the thread lives on
    assert announcer.flush(5)
    assert announcer.stats()["failed"] == 2


def test_close_drains_the_queue() -> None:
    publisher = FakePublisher(gated=True)
    announcer = Announcer(publisher)
    announcer([note(i) for i in range(50)])
    threading.Timer(0.1, publisher.gate.set).start()
    announcer.close(timeout=5)
    assert publisher.ids() == [f"n{i}" for i in range(50)]
    assert announcer.stats() == {"published": 50, "dropped": 0, "failed": 0, "queued": 0}
    announcer([note(99)])  # after close: counted as dropped, never raised
    assert announcer.stats()["dropped"] == 1


def test_close_waits_at_most_its_bound_and_drops_the_rest() -> None:
    publisher = FakePublisher(gated=True)
    announcer = Announcer(publisher)
    announcer([note(i) for i in range(5)])
    assert publisher.started.acquire(timeout=5)
    began = time.monotonic()
    announcer.close(timeout=0.2)
    assert time.monotonic() - began < 2.0
    assert announcer.stats() == {"published": 0, "dropped": 4, "failed": 0, "queued": 0}
    publisher.gate.set()  # the publish in flight finishes; nothing else is published
    assert announcer.flush(5)
    assert publisher.ids() == ["n0"]


def test_concurrent_callers_lose_nothing_uncounted(announcers: list) -> None:
    publisher = FakePublisher()
    announcer = make(announcers, publisher, queue_size=50)
    per_thread, threads = 200, 8

    def call(t: int) -> None:
        for i in range(per_thread):
            announcer([note(t * per_thread + i, user=f"u{t}")])

    workers = [threading.Thread(target=call, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert announcer.flush(10)
    stats = announcer.stats()
    assert stats["published"] + stats["dropped"] == per_thread * threads
    assert stats["published"] == len(publisher.published)
    for t in range(threads):  # each user's messages stay in the order they were announced
        mine = [
            int(message["id"][1:])
            for channel, message in publisher.published
            if channel == f"notifications:u{t}"
        ]
        assert mine == sorted(mine)


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Announcer(FakePublisher(), queue_size=0)
