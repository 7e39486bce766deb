"""The event transaction builder: index moves, booking guards and notifications in one txn."""

from datetime import UTC, datetime, timedelta
from typing import Any

from agenda.calendar.cas import Write
from agenda.calendar.layout import agenda_key, booking_key, notification_cursor
from agenda.calendar.store import Change, EventStore
from agenda.domain.model import Event, EventKind, Participation, PartStat
from agenda.domain.rules import apply_response, invitation_notifications

NOW = datetime(2031, 1, 1, 8, tzinfo=UTC)


def event(**changes: object) -> Event:
    base = {
        "id": "e" * 32,
        "title": "Plan",
        "start": NOW + timedelta(hours=1),
        "end": NOW + timedelta(hours=2),
        "organizer": "alice",
        "created": NOW,
        "updated": NOW,
        "kind": EventKind.APPOINTMENT,
        "participants": {"bob": Participation()},
    }
    return Event(**{**base, **changes})  # type: ignore[arg-type]


def summary(ops: list[dict]) -> list[tuple[str, str]]:
    return [(kind, op[kind]["key"]) for op in ops for kind in op]


def txn(old: Event | None, change: Change) -> list[Any]:
    """The whole transaction `EventStore` commits for `change`: its ops, then its notifications."""
    return Write([], EventStore._ops(old, change), "", None, change.notifications).txn_ops()


def test_create_indexes_everyone_guards_the_organizer_and_notifies() -> None:
    new = event()
    notes = invitation_notifications(new, NOW)
    ops = txn(None, Change(new, notes, ("alice",)))
    assert summary(ops) == [
        ("put", f"events/{new.id}"),
        ("put", agenda_key("alice", new)),
        ("put", booking_key("alice")),
        ("put", agenda_key("bob", new)),
        ("put", f"notifications/bob/{notification_cursor(notes[0])}"),
    ]
    assert ops[1]["put"]["value"] == new.to_dict()  # the index holds the whole event


def test_moving_an_event_moves_every_index_entry_and_bumps_committed_users() -> None:
    old = event(participants={"bob": Participation(PartStat.ACCEPTED)})
    new = old.revised(NOW, start=old.start + timedelta(days=1), end=old.end + timedelta(days=1))
    ops = summary(EventStore._ops(old, Change(new)))
    assert ("delete", agenda_key("bob", old)) in ops
    assert ("put", agenda_key("bob", new)) in ops
    assert ("put", booking_key("bob")) in ops  # bob's commitment moved
    assert ("put", booking_key("alice")) in ops


def test_an_unchanged_non_blocking_invitee_is_not_guarded() -> None:
    old = event()
    new = old.revised(NOW, title="Renamed")
    ops = summary(EventStore._ops(old, Change(new)))
    assert ("put", booking_key("bob")) not in ops  # needs-action blocks nothing before or after
    assert ("put", booking_key("alice")) not in ops  # same times: alice's commitment unchanged
    assert ("delete", agenda_key("bob", old)) not in ops  # same start: same key, rewritten in place


def test_accepting_bumps_the_responders_guard() -> None:
    old = event()
    new, notes = apply_response(old, "bob", PartStat.ACCEPTED, now=NOW)
    ops = summary(txn(old, Change(new, notes, ("bob",))))
    assert ("put", booking_key("bob")) in ops
    assert ("put", f"notifications/alice/{notification_cursor(notes[0])}") in ops
