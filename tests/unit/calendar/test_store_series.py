"""Series in the store: indexed under ``agenda/<user>/~series/<last end>/<id>`` in the event's transaction,
found by any later window whatever their start, checked for conflicts occurrence by occurrence, and
protected by the booking guards like any commitment."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agenda.calendar.layout import agenda_prefix, index_key, series_prefix
from agenda.calendar.store import Change, EventConflict, EventStore
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.domain.model import Event, EventKind, Participation
from agenda.domain.recurrence import Override, Recurrence

START = datetime(2030, 1, 7, 9, tzinfo=UTC)  # a Monday, a year before "now"
NOW = datetime(2031, 1, 6, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)


def series(
    event_id: str = "s" * 32, rule: str = "FREQ=WEEKLY", start: datetime = START, **fields: object
) -> Event:
    return Event(
        id=event_id,
        title="Weekly",
        start=start,
        end=start + HOUR,
        organizer="alice",
        created=START,
        updated=START,
        recurrence=Recurrence(rule),
        **fields,  # type: ignore[arg-type]
    )


def plain(event_id: str, start: datetime, organizer: str = "alice") -> Event:
    return Event(
        id=event_id,
        title=event_id,
        start=start,
        end=start + HOUR,
        organizer=organizer,
        created=START,
        updated=START,
    )


def keys(db: DBClient, prefix: str) -> list[str]:
    return [kv["key"] for kv in db.iter_prefix(prefix)]


def test_a_series_is_indexed_by_its_last_end_for_everyone_involved(
    store: EventStore, db: MemoryDBClient
) -> None:
    counted = series(
        rule="FREQ=WEEKLY;COUNT=3", participants={"bob": Participation()}, kind=EventKind.APPOINTMENT
    )
    store.create(lambda: Change(counted, (), ("alice",)))
    assert keys(db, series_prefix("alice")) == [f"agenda/alice/~series/2030-01-21T10:00:00Z/{counted.id}"]
    assert keys(db, series_prefix("bob")) == [f"agenda/bob/~series/2030-01-21T10:00:00Z/{counted.id}"]
    assert keys(db, agenda_prefix("alice")) == keys(db, series_prefix("alice"))  # only the series entry


def test_a_series_that_began_a_year_ago_is_in_todays_window_and_an_ended_one_is_not_read(
    store: EventStore,
) -> None:
    store.create(lambda: Change(series()))
    store.create(lambda: Change(series("e" * 32, "FREQ=DAILY;COUNT=5", START + 2 * HOUR)))
    found = store.agenda("alice", NOW, NOW + WEEK)
    assert [e.id for e in found] == ["s" * 32]  # the ended one is before the range read starts
    assert [e.id for e in store.agenda("alice")] == ["e" * 32, "s" * 32]  # unbounded: all


def test_a_plain_event_over_an_occurrence_a_year_on_is_a_conflict(store: EventStore) -> None:
    store.create(lambda: Change(series()))
    monday = START + 52 * WEEK
    with pytest.raises(EventConflict) as caught:
        store.create(lambda: Change(plain("p" * 32, monday + HOUR / 2), (), ("alice",)))
    assert caught.value.conflicts == ["s" * 32]
    store.create(lambda: Change(plain("q" * 32, monday + HOUR), (), ("alice",)))  # back to back is fine


def test_a_new_series_is_checked_within_the_year_from_now_and_not_beyond(store: EventStore) -> None:
    store.create(lambda: Change(plain("n" * 32, NOW + 40 * WEEK + 26 * HOUR)))  # a Tuesday 10:00
    store.create(lambda: Change(plain("f" * 32, NOW + 60 * WEEK + 26 * HOUR)))
    tuesdays = series(rule="FREQ=WEEKLY;BYDAY=TU", start=START + 25 * HOUR)
    with pytest.raises(EventConflict) as caught:
        store.create(lambda: Change(tuesdays, (), ("alice",), checked_from=NOW))
    assert caught.value.conflicts == ["n" * 32]  # the one 60 weeks away is past the horizon
    moved = replace(
        tuesdays, recurrence=Recurrence("FREQ=WEEKLY;BYDAY=TU", exdates=(NOW + 40 * WEEK + 26 * HOUR,))
    )
    stored = store.create(lambda: Change(moved, (), ("alice",), checked_from=NOW))
    assert stored.recurrence == moved.recurrence


def test_a_rival_booking_of_an_occurrence_after_the_read_fails_the_compare(
    store: EventStore, db: MemoryDBClient
) -> None:
    store.create(lambda: Change(plain("a" * 32, NOW - WEEK)))  # writes alice's booking guard

    def rival(other: DBClient, _keys: tuple[str, ...]) -> None:
        EventStore(other).create(lambda: Change(plain("r" * 32, START + 60 * WEEK), (), ("alice",)))

    db.contend(write=rival)
    with pytest.raises(EventConflict) as caught:
        store.create(lambda: Change(series(), (), ("alice",), checked_from=NOW))
    assert caught.value.conflicts == ["r" * 32]


def test_turning_a_plain_event_into_a_series_moves_its_index_in_one_transaction(
    store: EventStore, db: MemoryDBClient
) -> None:
    first = plain("x" * 32, START)
    store.create(lambda: Change(first))
    txns = db.counts["txn"]
    recurring = store.update(
        first.id, lambda e: Change(replace(e, recurrence=Recurrence("FREQ=DAILY;COUNT=2")))
    )
    assert db.counts["txn"] == txns + 1
    assert keys(db, agenda_prefix("alice")) == keys(db, series_prefix("alice"))  # only the series entry
    assert keys(db, series_prefix("alice")) == [index_key("alice", recurring)]


def test_moving_an_occurrence_later_moves_the_series_entry(store: EventStore, db: MemoryDBClient) -> None:
    counted = series(rule="FREQ=WEEKLY;COUNT=2")
    store.create(lambda: Change(counted))
    later = Override(start=START + 10 * WEEK, end=START + 10 * WEEK + HOUR)
    moved = store.update(
        counted.id, lambda e: Change(e.revised(NOW, overrides={"2030-01-14T09:00:00Z": later}))
    )
    assert keys(db, series_prefix("alice")) == [f"agenda/alice/~series/2030-03-18T10:00:00Z/{moved.id}"]
    assert [e.id for e in store.agenda("alice", START + 10 * WEEK, START + 11 * WEEK)] == [moved.id]
