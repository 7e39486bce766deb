"""The notification stream's logic, with a fake clock, hub and DB reader: what is sent, and when."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from agenda.common.errors import Problem
from agenda.gateway.streams import (
    HEARTBEAT,
    ReplayFailed,
    StreamSettings,
    event_text,
    initial_cursor,
    notification_stream,
    resume_cursor,
)
from agenda.messaging.hub import RESYNC

CURSOR = "00000001764000000000.n0"


def note(n: int) -> dict[str, Any]:
    cursor = f"{1764000000000000 + n:020d}.n{n}"
    return {"id": f"n{n}", "cursor": cursor, "user": "alice", "kind": "invitation"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeListener:
    """Hands out scripted items; each `get` advances the clock by what it waited (or by `step`)."""

    def __init__(self, clock: Clock, items: list[Any]) -> None:
        self.clock = clock
        self.items = items
        self.closed = False
        self.waits: list[float] = []

    def get(self, timeout: float) -> dict[str, Any] | None:
        self.waits.append(timeout)
        if self.items:
            item = self.items.pop(0)
            if item is not None:
                return item
        self.clock.now += timeout
        return None

    def close(self) -> None:
        self.closed = True


class FakeHub:
    def __init__(self, listener: FakeListener, live: bool = True) -> None:
        self.listener = listener
        self.live = live

    def listen(self, user: str) -> FakeListener:
        return self.listener


def events(chunks: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for chunk in chunks:
        text = chunk.decode()
        if text.startswith("id: "):
            data = next(line for line in text.splitlines() if line.startswith("data: "))
            out.append(json.loads(data[len("data: ") :]))
    return out


def run(
    items: list[Any],
    *,
    first: list[dict[str, Any]] | None = None,
    fetch: Callable[[str], list[dict[str, Any]]] | None = None,
    live: bool = True,
    seconds: float = 10.0,
    settings: StreamSettings | None = None,
    phase: float = 1.0,
) -> tuple[list[bytes], FakeListener]:
    clock = Clock()
    listener = FakeListener(clock, items)
    hub = FakeHub(listener, live)
    body = notification_stream(
        "alice",
        CURSOR,
        first or [],
        fetch or (lambda cursor: []),
        hub,
        settings or StreamSettings(heartbeat=5.0, poll_interval=2.0),
        clock.now + seconds,
        clock=clock,
        phase=lambda: phase,
    )
    return list(body), listener


def test_event_text_is_one_sse_event_with_the_cursor_as_id() -> None:
    text = event_text(note(1)).decode()
    assert text.startswith(f"id: {note(1)['cursor']}\nevent: notification\ndata: ")
    assert text.endswith("\n\n")
    assert json.loads(text.split("data: ", 1)[1]) == note(1)


def test_resume_cursor_prefers_last_event_id_and_checks_it() -> None:
    assert resume_cursor(None, None) is None
    assert resume_cursor(CURSOR, "00000000000000000000.x") == CURSOR
    assert resume_cursor(None, CURSOR) == CURSOR
    with pytest.raises(Problem) as caught:
        resume_cursor("42", None)
    assert caught.value.status == 400
    assert caught.value.field == "Last-Event-ID"
    with pytest.raises(Problem) as caught:
        resume_cursor(None, "../etc")
    assert caught.value.field == "since"


def test_initial_cursor_sorts_before_notifications_created_later() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    micros = int(now.timestamp() * 1_000_000)
    assert initial_cursor(now) < f"{micros:020d}.a"
    assert initial_cursor(now) > f"{micros - 1:020d}.z"


def test_the_catch_up_then_live_messages_are_sent_once_each() -> None:
    chunks, listener = run([note(2), note(2), note(3)], first=[note(1), note(2)], seconds=1.0)
    assert chunks[0] == b"retry: 2000\n\n"
    assert [e["id"] for e in events(chunks)] == ["n1", "n2", "n3"]
    assert listener.closed


def test_a_resync_reads_the_db_after_the_newest_cursor_sent() -> None:
    asked: list[str] = []

    def fetch(cursor: str) -> list[dict[str, Any]]:
        asked.append(cursor)
        return [note(2), note(3)]

    chunks, _ = run([note(2), RESYNC], fetch=fetch, seconds=1.0)
    assert asked == [note(2)["cursor"]]
    assert [e["id"] for e in events(chunks)] == ["n2", "n3"]


def test_without_a_live_hub_the_stream_polls_the_db() -> None:
    polls: list[str] = []

    def fetch(cursor: str) -> list[dict[str, Any]]:
        polls.append(cursor)
        return [note(len(polls))]

    chunks, listener = run([], fetch=fetch, live=False, seconds=7.0)
    assert len(polls) == 3  # at 2, 4 and 6 seconds
    assert [e["id"] for e in events(chunks)] == ["n1", "n2", "n3"]
    assert max(listener.waits) <= 2.0


def test_a_failed_poll_is_retried_at_the_next_one() -> None:
    calls = 0

    def fetch(cursor: str) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ReplayFailed("users down")
        return [note(1)]

    chunks, _ = run([], fetch=fetch, live=False, seconds=5.0)
    assert calls == 2
    assert [e["id"] for e in events(chunks)] == ["n1"]


def test_an_idle_stream_sends_heartbeats_and_ends_at_its_deadline() -> None:
    chunks, listener = run([], seconds=16.0)
    assert chunks.count(HEARTBEAT) == 3  # at 5, 10 and 15 seconds
    assert events(chunks) == []
    assert max(listener.waits) <= 5.0  # asleep until the next heartbeat: nothing polls while idle
    assert listener.closed


def test_the_first_heartbeat_comes_after_a_random_half_to_whole_interval() -> None:
    chunks, listener = run([], seconds=13.0, phase=0.0)
    assert chunks.count(HEARTBEAT) == 3  # at 2.5, 7.5 and 12.5 seconds: the phase is kept
    assert listener.waits[0] == 2.5


def test_draining_ends_every_open_stream_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from agenda.gateway import streams
    from agenda.messaging.hub import Listener

    monkeypatch.setattr(streams, "_draining", threading.Event())
    listener = Listener("alice", lambda _: None)
    hub = FakeHub(listener)  # type: ignore[arg-type]
    body = notification_stream(
        "alice", CURSOR, [], lambda cursor: [], hub, StreamSettings(heartbeat=300.0), float("inf")
    )
    assert next(body) == b"retry: 2000\n\n"
    ended = threading.Event()

    def drain_all() -> None:
        list(body)  # the rest of the stream: nothing, then its end
        ended.set()

    reader = threading.Thread(target=drain_all, daemon=True)
    reader.start()
    assert not ended.wait(0.2)  # an idle stream stays open
    streams.begin_draining()
    assert ended.wait(5.0)  # woken by the drain, not by a timer (the heartbeat is 300 s away)
    assert streams.draining()
