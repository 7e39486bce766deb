"""Records keep UTC times and survive the JSON round trip the KV store puts them through."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenda.domain.model import (
    Event,
    EventKind,
    EventStatus,
    Group,
    Membership,
    MemberState,
    Notification,
    NotificationKind,
    Participation,
    PartStat,
    Visibility,
    format_time,
    parse_stored_time,
    to_utc,
)
from agenda.domain.recurrence import Override, Recurrence

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HAVANA = timezone(timedelta(hours=-5))


def make_event(**changes: object) -> Event:
    fields: dict[str, object] = {
        "id": "e1",
        "title": "Standup",
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "organizer": "alice",
        "created": T0 - timedelta(days=1),
        "updated": T0 - timedelta(days=1),
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def test_format_time_is_rfc3339_utc_with_z() -> None:
    assert format_time(datetime(2026, 11, 26, 5, 0, tzinfo=HAVANA)) == "2026-11-26T10:00:00Z"
    assert format_time(T0.replace(microsecond=1500)) == "2026-11-26T10:00:00.001500Z"
    assert format_time(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0999-01-02T03:04:05Z"


def test_format_time_refuses_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))


def test_parse_stored_time_round_trips_and_normalises() -> None:
    assert parse_stored_time("2026-11-26T10:00:00Z") == T0
    assert parse_stored_time("2026-11-26T05:00:00-05:00").tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_stored_time("2026-11-26T10:00:00")


def test_event_normalises_times_to_utc_and_enums() -> None:
    event = make_event(start=datetime(2026, 11, 26, 5, tzinfo=HAVANA), kind="group", status="tentative")
    assert event.start == T0
    assert event.start.tzinfo is UTC
    assert event.kind is EventKind.GROUP
    assert event.status is EventStatus.TENTATIVE


def test_event_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="event start"):
        make_event(start=datetime(2026, 1, 1))


def test_organizer_cannot_be_participant() -> None:
    with pytest.raises(ValueError, match="organizer"):
        make_event(participants={"alice": Participation()})


def test_event_round_trips_through_json() -> None:
    event = make_event(
        description="line1\nline2",
        location="Room 1",
        visibility=Visibility.PUBLIC,
        group_id="g1",
        kind=EventKind.GROUP,
        status=EventStatus.TENTATIVE,
        participants={"bob": Participation(PartStat.ACCEPTED, 2), "carol": Participation()},
        sequence=3,
    )
    data = json.loads(json.dumps(event.to_dict()))
    assert data["start"] == "2026-11-26T10:00:00Z"
    assert data["participants"]["bob"] == {"status": "accepted", "level": 2}
    assert Event.from_dict(data) == event


def test_event_from_dict_defaults_and_missing_keys() -> None:
    data = make_event().to_dict()
    for key in ("description", "location", "visibility", "group_id", "kind", "status", "participants"):
        del data[key]
    event = Event.from_dict(data)
    assert event.visibility is Visibility.PRIVATE
    assert event.participants == {}
    del data["title"]
    with pytest.raises(ValueError, match="'title'"):
        Event.from_dict(data)


def test_a_recurring_event_round_trips_with_its_overrides() -> None:
    recurrence = Recurrence("FREQ=WEEKLY;BYDAY=MO", (T0 + timedelta(days=2),), (), "Europe/Madrid")
    overrides = {
        "2026-12-03T10:00:00Z": Override(cancelled=True),
        "2026-12-10T10:00:00Z": Override(
            start=T0 + timedelta(days=14, hours=2),
            end=T0 + timedelta(days=14, hours=3),
            title="Later",
            partstats={"bob": PartStat.DECLINED},
        ),
    }
    event = make_event(
        recurrence=recurrence, overrides=overrides, participants={"bob": Participation(PartStat.ACCEPTED)}
    )
    data = json.loads(json.dumps(event.to_dict()))
    assert data["recurrence"] == {
        "rrule": "FREQ=WEEKLY;BYDAY=MO",
        "rdates": ["2026-11-28T10:00:00Z"],
        "exdates": [],
        "timezone": "Europe/Madrid",
    }
    assert data["overrides"]["2026-12-10T10:00:00Z"] == {
        "start": "2026-12-10T12:00:00Z",
        "end": "2026-12-10T13:00:00Z",
        "title": "Later",
        "partstats": {"bob": "declined"},
    }
    assert Event.from_dict(data) == event


def test_a_plain_events_record_is_unchanged_and_old_records_load() -> None:
    data = make_event().to_dict()
    assert not {"recurrence", "overrides", "recurrence_id"} & set(data)
    event = Event.from_dict({**data, "recurrence": None, "overrides": {}})
    assert (event.recurrence, event.overrides, event.recurrence_id) == (None, {}, None)


def test_only_a_series_has_overrides_and_an_occurrence_shows_its_recurrence_id() -> None:
    with pytest.raises(ValueError, match="only a recurring event"):
        make_event(overrides={"2026-11-26T10:00:00Z": Override(cancelled=True)})
    occurrence = make_event(recurrence=Recurrence("FREQ=DAILY"), recurrence_id="2026-11-27T10:00:00Z")
    data = occurrence.to_dict()
    assert data["recurrence_id"] == "2026-11-27T10:00:00Z"
    assert "overrides" not in data  # an occurrence's own override is already applied to it
    assert Event.from_dict(data) == occurrence


def test_participation_from_dict_rejects_bad_level() -> None:
    with pytest.raises(ValueError, match="level"):
        Participation.from_dict({"status": "accepted", "level": True})


def test_partstat_and_involves() -> None:
    event = make_event(participants={"bob": Participation(PartStat.TENTATIVE)})
    assert event.partstat("alice") is PartStat.ACCEPTED
    assert event.partstat("bob") is PartStat.TENTATIVE
    assert event.partstat("zed") is None
    assert event.involves("alice")
    assert event.involves("bob")
    assert not event.involves("zed")


def test_revised_bumps_sequence_and_updated() -> None:
    event = make_event(sequence=4)
    later = T0 + timedelta(minutes=5)
    revised = event.revised(later, title="Retro")
    assert (revised.title, revised.sequence, revised.updated) == ("Retro", 5, later)
    assert event.title == "Standup"  # the original is untouched


def test_group_round_trip_and_helpers() -> None:
    group = Group(
        id="g1",
        name="Team",
        owner="alice",
        created=T0,
        hierarchical=True,
        members={
            "alice": Membership(0),
            "bob": Membership(1, MemberState.ACTIVE, "alice"),
            "carol": Membership(2, MemberState.INVITED, "bob"),
        },
    )
    assert Group.from_dict(json.loads(json.dumps(group.to_dict()))) == group
    assert group.active_members() == ["alice", "bob"]
    assert group.active_level("bob") == 1
    assert group.active_level("carol") is None
    assert group.is_active("alice")
    assert not group.is_active("carol")
    assert not group.is_active("zed")


def test_notification_round_trip_and_needs_a_subject() -> None:
    note = Notification(id="n1", user="bob", kind=NotificationKind.INVITED, created=T0, event_id="e1")
    assert Notification.from_dict(json.loads(json.dumps(note.to_dict()))) == note
    with pytest.raises(ValueError, match="event or a group"):
        Notification(id="n2", user="bob", kind=NotificationKind.MEMBERSHIP, created=T0)


def _format_time_by_fields(value: datetime) -> str:
    """format_time as it was written before (field by field), to check the faster one against."""
    utc = value.astimezone(UTC)
    text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, HAVANA, timezone(timedelta(hours=5, minutes=45))]),
    )
)
def test_format_time_matches_the_field_by_field_format(value: datetime) -> None:
    assert format_time(value) == _format_time_by_fields(value)
    assert parse_stored_time(format_time(value)) == value
    assert to_utc(value) == value
