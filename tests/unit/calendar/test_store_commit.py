"""How many DB requests an event change costs, and that the cheaper path keeps the rules exact.

A keyed create (the gateway always sends an Idempotency-Key) is one transaction compared on the
event's absence, not a read and then a transaction; a conflict check is one agenda read (two range
requests: the plain events' index and the series' one, `agenda.calendar.layout`) whose revision the
transaction compares the booking guard against, not a guard read and an agenda read; a lost race
decides again from what the failed transaction read, not from another read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from agenda.calendar.cas import Write, commit
from agenda.calendar.layout import booking_key
from agenda.calendar.store import Change, EventConflict, EventNotFound, EventStore
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.db.txn import txn_get
from agenda.domain.model import Event

NOW = datetime(2031, 1, 1, 8, tzinfo=UTC)
KEYED = "a" * 32


def event(event_id: str = KEYED, start: int = 10, end: int = 11, title: str = "Plan") -> Event:
    return Event(
        id=event_id,
        title=title,
        start=NOW.replace(hour=start),
        end=NOW.replace(hour=end),
        organizer="alice",
        created=NOW,
        updated=NOW,
    )


def build(new: Event, check: bool) -> Callable[[], Change]:
    return lambda: Change(new, (), ("alice",) if check else ())


def requests_of(db: MemoryDBClient) -> dict[str, int]:
    return {kind: db.counts[kind] for kind in ("get", "range", "txn") if db.counts[kind]}


@pytest.mark.parametrize(("check", "expected"), [(False, {"txn": 1}), (True, {"range": 2, "txn": 1})])
def test_a_keyed_create_is_one_transaction_without_reading_the_event(
    store: EventStore, db: MemoryDBClient, check: bool, expected: dict[str, int]
) -> None:
    new = event()
    assert store.create(build(new, check), event_id=new.id) == new
    assert requests_of(db) == expected  # no read of the event, none of the booking guard
    assert store.get_event(new.id)[0] == new


def test_a_repeat_is_found_by_the_failed_compare_and_writes_nothing(
    store: EventStore, db: MemoryDBClient
) -> None:
    new = event()
    store.create(build(new, True), event_id=new.id)
    revision = db.machine.revision
    again = event(title="Plan, resent")  # what a repeat builds: same id, later decisions
    assert store.create(build(again, True), event_id=again.id) == new  # the stored one
    assert db.machine.revision == revision


def test_a_repeat_answers_with_its_event_even_when_it_now_conflicts(store: EventStore) -> None:
    new = event()
    store.create(build(new, True), event_id=new.id)
    store.create(build(event("b" * 32), False))  # overlapping, booked with allow_conflict
    assert store.create(build(new, True), event_id=new.id) == new


def test_a_first_keyed_create_over_a_commitment_is_a_conflict(store: EventStore, db: MemoryDBClient) -> None:
    store.create(build(event("b" * 32, 9, 11), False))
    with pytest.raises(EventConflict) as info:
        store.create(build(event(), True), event_id=KEYED)
    assert info.value.conflicts == ["b" * 32]
    with pytest.raises(EventNotFound):
        store.get_event(KEYED)


def rival(start: int, end: int) -> Callable[[DBClient, tuple[str, ...]], object]:
    """Another instance books alice from `start` to `end` between our agenda read and our commit."""
    return lambda other, _keys: EventStore(other).create(build(event("f" * 32, start, end), True))


def test_a_commitment_booked_after_the_agenda_read_fails_the_compare_and_is_then_found(
    store: EventStore, db: MemoryDBClient
) -> None:
    db.contend(write=rival(10, 11))
    with pytest.raises(EventConflict) as info:
        store.create(build(event(), True), event_id=KEYED)
    assert info.value.conflicts == ["f" * 32]
    assert requests_of(db) == {"range": 4, "txn": 1}  # the retry needed no read of the event


def test_a_guard_moved_by_an_unrelated_booking_costs_one_more_round(
    store: EventStore, db: MemoryDBClient
) -> None:
    db.contend(write=rival(14, 15))
    new = event()
    assert store.create(build(new, True), event_id=new.id) == new
    assert requests_of(db) == {"range": 4, "txn": 2}


def test_an_untouched_guard_passes_the_compare(store: EventStore, db: MemoryDBClient) -> None:
    store.create(build(event("b" * 32, 14, 15), True))  # alice's guard written before our read
    guard = db.get(booking_key("alice"))
    assert guard is not None
    new = event()
    assert store.create(build(new, True), event_id=new.id) == new
    assert int(db.get(booking_key("alice"))["mod_revision"]) > int(guard["mod_revision"])  # type: ignore[index]


def test_a_lost_update_decides_again_from_what_its_transaction_read(
    store: EventStore, db: MemoryDBClient
) -> None:
    new = event()
    store.create(build(new, False), event_id=new.id)
    db.contend()  # the event is rewritten between our read and our commit
    seen: list[Event] = []

    def rename(current: Event) -> Change:
        seen.append(current)
        return Change(current.revised(NOW, title=f"Renamed {len(seen)}"))

    before = requests_of(db)
    stored = store.update(new.id, rename)
    assert stored.title == "Renamed 2"
    assert seen == [new, new]  # the rewrite changed nothing but the revision
    spent = {kind: count - before.get(kind, 0) for kind, count in requests_of(db).items()}
    assert spent == {"get": 1, "txn": 2}  # one read, then the failed txn's own


def test_an_update_of_an_event_gone_meanwhile_is_not_found(store: EventStore, db: MemoryDBClient) -> None:
    class Vanishing:
        """A failed txn whose failure branch finds no event (cannot happen today: events are never
        deleted), to pin what the store does with such an answer."""

        def __init__(self, inner: MemoryDBClient) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def txn(self, compare: Any, success: Any, failure: Any = ()) -> dict[str, Any]:
            return {"succeeded": False, "results": [{"get": {"kv": None}}], "revision": 1}

    new = event()
    store.create(build(new, False), event_id=new.id)
    with pytest.raises(EventNotFound):
        EventStore(Vanishing(db)).update(new.id, lambda current: Change(current.revised(NOW)))  # type: ignore[arg-type]


class FailingOnce:
    """A DB whose first txn loses its compare; records what each txn was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def txn(self, *args: Any) -> dict[str, Any]:
        self.sent.append(args)
        if len(self.sent) == 1:
            return {"succeeded": False, "results": [{"get": {"kv": {"key": "k", "value": 7}}}], "revision": 3}
        return {"succeeded": True, "results": [], "revision": 4}


def test_commit_sends_the_failure_reads_and_hands_their_results_to_the_next_attempt() -> None:
    db = FailingOnce()
    lost: list[Any] = []
    reads = [txn_get("k")]

    def attempt() -> tuple[int, Write]:
        return len(db.sent), Write([], [], "k", 1, failure=reads, on_lost=lost.append)

    assert commit(db, attempt, what="thing") == 1  # type: ignore[arg-type]
    assert [args[2] for args in db.sent] == [reads, reads]
    assert lost == [[{"get": {"kv": {"key": "k", "value": 7}}}]]


def test_a_write_without_failure_reads_sends_a_two_branch_txn() -> None:
    db = FailingOnce()
    assert commit(db, lambda: ("done", Write([], [], "k", 1)), what="thing") == "done"  # type: ignore[arg-type]
    assert [len(args) for args in db.sent] == [2, 2]
