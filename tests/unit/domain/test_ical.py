"""The iCalendar export, checked by parsing it back with the `icalendar` package and on the wire."""

from datetime import UTC, datetime, timedelta

import icalendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.domain.ical import PRODID, to_ical
from agenda.domain.model import Event, EventKind, EventStatus, Participation, PartStat, Visibility

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 34, 56, tzinfo=UTC)

TRICKY = [
    "Plain",
    "Lunch, then review; bring laptops",
    "Line one\nLine two\r\nLine three\rend",
    "Back\\slash \\n not a newline",
    "Emoji 🎉🧑‍🤝‍🧑 party",
    "Ünïcödé ñ " * 30,
    "日本語のタイトル" * 40,
    "é" * 300,
    "🎉" * 300,
    "x" * 74 + "é",  # a two-octet character straddling the fold point
    'Quote " colon : semicolon ; comma , tab \t',
    "",
]


def make_event(event_id: str = "e1", title: str = "Standup", **changes: object) -> Event:
    fields: dict[str, object] = {
        "id": event_id,
        "title": title,
        "start": T0,
        "end": T0 + timedelta(hours=1, minutes=30),
        "organizer": "alice",
        "created": T0 - timedelta(days=2),
        "updated": T0 - timedelta(days=1),
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def parse(text: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(text)


def only_event(text: str) -> icalendar.Event:
    events = parse(text).walk("VEVENT")
    assert len(events) == 1
    return events[0]


def attendees(vevent: icalendar.Event) -> dict[str, str]:
    found = vevent.get("ATTENDEE", [])
    if not isinstance(found, list):
        found = [found]
    return {str(a): str(a.params["PARTSTAT"]) for a in found}


def test_calendar_envelope() -> None:
    text = to_ical([], now=NOW, name="Alice's agenda, work")
    calendar = parse(text)
    assert calendar["VERSION"] == "2.0"
    assert calendar["PRODID"] == PRODID
    assert calendar["CALSCALE"] == "GREGORIAN"
    assert calendar["METHOD"] == "PUBLISH"
    # icalendar keeps unknown X- properties raw (still escaped); SUMMARY tests cover unescaping.
    assert calendar["X-WR-CALNAME"].to_ical() == b"Alice's agenda\\, work"
    assert text.startswith("BEGIN:VCALENDAR\r\n")
    assert text.endswith("END:VCALENDAR\r\n")


def test_full_event_fields_round_trip() -> None:
    event = make_event(
        description="Agenda:\n1. status, blockers; plans",
        location="Room 3, floor 2",
        visibility=Visibility.PUBLIC,
        kind=EventKind.GROUP,
        group_id="g1",
        status=EventStatus.TENTATIVE,
        sequence=7,
        participants={
            "bob": Participation(PartStat.ACCEPTED, 1),
            "carol": Participation(PartStat.DECLINED, 1),
            "dan": Participation(PartStat.TENTATIVE, 2),
            "erin": Participation(PartStat.NEEDS_ACTION, 2),
        },
    )
    vevent = only_event(to_ical([event], now=NOW))
    assert str(vevent["UID"]) == "e1@agenda.invalid"
    assert vevent.decoded("DTSTAMP") == NOW
    assert vevent.decoded("DTSTART") == event.start
    assert vevent.decoded("DTEND") == event.end
    assert vevent.decoded("DTSTART").utcoffset() == timedelta(0)
    assert vevent.decoded("CREATED") == event.created
    assert vevent.decoded("LAST-MODIFIED") == event.updated
    assert str(vevent["SUMMARY"]) == "Standup"
    assert str(vevent["DESCRIPTION"]) == "Agenda:\n1. status, blockers; plans"
    assert str(vevent["LOCATION"]) == "Room 3, floor 2"
    assert str(vevent["STATUS"]) == "TENTATIVE"
    assert str(vevent["CLASS"]) == "PUBLIC"
    assert int(vevent["SEQUENCE"]) == 7
    assert str(vevent["ORGANIZER"]) == "mailto:alice@agenda.invalid"
    assert vevent["ORGANIZER"].params["CN"] == "alice"
    assert attendees(vevent) == {
        "mailto:bob@agenda.invalid": "ACCEPTED",
        "mailto:carol@agenda.invalid": "DECLINED",
        "mailto:dan@agenda.invalid": "TENTATIVE",
        "mailto:erin@agenda.invalid": "NEEDS-ACTION",
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (EventStatus.CONFIRMED, "CONFIRMED"),
        (EventStatus.TENTATIVE, "TENTATIVE"),
        (EventStatus.CANCELLED, "CANCELLED"),
    ],
)
def test_status_mapping(status: EventStatus, expected: str) -> None:
    assert str(only_event(to_ical([make_event(status=status)], now=NOW))["STATUS"]) == expected


def test_private_class_and_optional_properties_omitted() -> None:
    text = to_ical([make_event()], now=NOW)
    vevent = only_event(text)
    assert str(vevent["CLASS"]) == "PRIVATE"
    assert "DESCRIPTION" not in vevent
    assert "LOCATION" not in vevent
    assert "ATTENDEE" not in vevent


def test_several_events_sorted_by_start_and_custom_domain() -> None:
    later = make_event("late", start=T0 + timedelta(days=1), end=T0 + timedelta(days=1, hours=1))
    early = make_event("early")
    events = parse(to_ical([later, early], now=NOW, domain="example.org")).walk("VEVENT")
    assert [str(e["UID"]) for e in events] == ["early@example.org", "late@example.org"]
    assert str(events[0]["ORGANIZER"]) == "mailto:alice@example.org"


@pytest.mark.parametrize("title", TRICKY)
def test_tricky_text_round_trips(title: str) -> None:
    event = make_event(title=title, description=title * 3, location=title[:500])
    text = to_ical([event], now=NOW)
    vevent = only_event(text)
    expected = title.replace("\r\n", "\n").replace("\r", "\n")
    assert str(vevent["SUMMARY"]) == expected
    if title:
        assert str(vevent["DESCRIPTION"]) == expected * 3
        assert str(vevent["LOCATION"]) == expected[:500]
    assert_wire_format(text)


def assert_wire_format(text: str) -> None:
    data = text.encode()
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")[:-1]
    assert b"\n" not in b"".join(lines)
    assert b"\r" not in b"".join(lines)
    for line in lines:
        assert len(line) <= 75, line
        line.decode()  # each physical line is valid UTF-8 on its own: no split character


def test_control_characters_are_dropped() -> None:
    vevent = only_event(to_ical([make_event(title="bell\x07 nul\x00 del\x7f")], now=NOW))
    assert str(vevent["SUMMARY"]) == "bell nul del"


def test_times_are_utc_with_z_and_four_digit_years() -> None:
    start, end = datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(999, 1, 2, 4, 0, tzinfo=UTC)
    event = make_event(start=start, end=end)
    text = to_ical([event], now=NOW)
    assert "DTSTART:09990102T030405Z\r\n" in text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_any_text_round_trips(title: str, description: str) -> None:
    event = make_event(title=title or "t", description=description)
    text = to_ical([event], now=NOW)
    assert_wire_format(text)
    vevent = only_event(text)

    def cleaned(value: str) -> str:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(c for c in value if c in "\t\n" or not (ord(c) < 32 or ord(c) == 127))

    assert str(vevent["SUMMARY"]) == cleaned(title or "t")
    if description:
        assert str(vevent.get("DESCRIPTION", "")) == cleaned(description)
