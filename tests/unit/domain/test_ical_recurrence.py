"""Recurrence through iCalendar both ways: a series made through the JSON API is exported with RRULE,
RDATE, EXDATE, a VTIMEZONE and one RECURRENCE-ID VEVENT per override, parses back to the same domain
series, and expands in a maintained third-party library (`recurring_ical_events`) to exactly the
occurrences our own expansion lists; a client's recurring object parses into the domain's terms."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import icalendar
import recurring_ical_events

from agenda.domain.ical import calendar_object, parse_object, to_ical
from agenda.domain.model import Event, EventKind, Participation, PartStat
from agenda.domain.recurrence import Override, Recurrence
from agenda.domain.rules import instances

NOW = datetime(2031, 1, 1, tzinfo=UTC)
MONDAY = datetime(2031, 1, 6, 8, tzinfo=UTC)  # 09:00 in Madrid
HOUR = timedelta(hours=1)


def series() -> Event:
    return Event(
        id="a" * 32,
        title="Standup",
        description="Daily-ish",
        location="Room 1",
        start=MONDAY,
        end=MONDAY + HOUR,
        organizer="alice",
        created=NOW,
        updated=NOW,
        kind=EventKind.APPOINTMENT,
        participants={"bob": Participation(PartStat.ACCEPTED)},
        recurrence=Recurrence(
            "FREQ=WEEKLY;UNTIL=20310630T215959Z;BYDAY=MO,WE",
            rdates=(datetime(2031, 1, 10, 15, tzinfo=UTC),),
            exdates=(datetime(2031, 1, 15, 8, tzinfo=UTC),),
            timezone="Europe/Madrid",
        ),
        overrides={
            # Moved to the afternoon and retitled; cancelled; declined by bob (after the DST change).
            "2031-01-13T08:00:00Z": Override(
                start=datetime(2031, 1, 13, 14, tzinfo=UTC),
                end=datetime(2031, 1, 13, 15, tzinfo=UTC),
                title="Later",
            ),
            "2031-01-20T08:00:00Z": Override(cancelled=True),
            "2031-04-02T07:00:00Z": Override(partstats={"bob": PartStat.DECLINED}),
        },
    )


def test_a_series_round_trips_through_its_calendar_object() -> None:
    event = series()
    text = calendar_object(event, now=NOW)
    parsed = parse_object(text)
    assert parsed.recurring
    assert parsed.recurrence == event.recurrence
    assert parsed.overrides == event.overrides
    assert (parsed.start, parsed.end, parsed.title) == (event.start, event.end, "Standup")


def test_the_export_says_it_in_rfc_5545() -> None:
    calendar = icalendar.Calendar.from_ical(calendar_object(series(), now=NOW))
    zones = [c for c in calendar.subcomponents if c.name == "VTIMEZONE"]
    assert [str(z["TZID"]) for z in zones] == ["Europe/Madrid"]
    master, *others = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    assert master["DTSTART"].to_ical() == b"20310106T090000"
    assert master["DTSTART"].params["TZID"] == "Europe/Madrid"
    assert master["RRULE"].to_ical() == b"FREQ=WEEKLY;UNTIL=20310630T215959Z;BYDAY=MO,WE"
    assert [d.dt for d in master["EXDATE"].dts] == [datetime(2031, 1, 15, 8, tzinfo=UTC)]
    assert [str(o["RECURRENCE-ID"].to_ical().decode()) for o in others] == [
        "20310113T090000",
        "20310120T090000",
        "20310402T090000",
    ]
    assert str(others[1]["STATUS"]) == "CANCELLED"
    declined = (
        [a for a in others[2]["ATTENDEE"]]
        if isinstance(others[2]["ATTENDEE"], list)
        else [others[2]["ATTENDEE"]]
    )
    assert [a.params["PARTSTAT"] for a in declined] == ["DECLINED"]


def test_a_maintained_library_expands_our_export_exactly_as_we_do() -> None:
    event = series()
    window = (datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 7, 15, tzinfo=UTC))
    ours = [(e.start, e.end, e.title) for e in instances(event, *window)]
    calendar = icalendar.Calendar.from_ical(to_ical([event], now=NOW))
    theirs = sorted(
        (c["DTSTART"].dt.astimezone(UTC), c["DTEND"].dt.astimezone(UTC), str(c["SUMMARY"]))
        for c in recurring_ical_events.of(calendar).between(*window)
        if str(c.get("STATUS", "")) != "CANCELLED"
    )
    assert sorted(ours) == theirs
    assert len(ours) > 40  # January to June, across the change to summer time on 30 March
    assert {start.astimezone(UTC).hour for start, _, title in ours if title == "Standup"} == {7, 8, 15}


def test_a_clients_recurring_object_is_read_in_the_domains_terms() -> None:
    text = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//client//EN",
            "BEGIN:VEVENT",
            "UID:client-series",
            "DTSTART;TZID=America/New_York:20310303T090000",
            "DTEND;TZID=America/New_York:20310303T093000",
            "RRULE:FREQ=DAILY;COUNT=10",
            "EXDATE;TZID=America/New_York:20310305T090000",
            "SUMMARY:Walk",
            "ORGANIZER:mailto:alice@agenda.invalid",
            "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@agenda.invalid",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:client-series",
            "RECURRENCE-ID;TZID=America/New_York:20310310T090000",
            "DTSTART;TZID=America/New_York:20310310T100000",
            "DTEND;TZID=America/New_York:20310310T103000",
            "SUMMARY:Walk",
            "ORGANIZER:mailto:alice@agenda.invalid",
            "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@agenda.invalid",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    parsed = parse_object(text)
    assert parsed.recurrence == Recurrence(
        "FREQ=DAILY;COUNT=10", exdates=(datetime(2031, 3, 5, 14, tzinfo=UTC),), timezone="America/New_York"
    )
    # 10 March is after the change to daylight time (9 March): 09:00 EDT is 13:00Z.
    assert parsed.overrides == {
        "2031-03-10T13:00:00Z": Override(
            start=datetime(2031, 3, 10, 14, tzinfo=UTC),
            end=datetime(2031, 3, 10, 14, 30, tzinfo=UTC),
            partstats={"bob": PartStat.DECLINED},
        )
    }


def test_a_rule_the_domain_cannot_hold_keeps_the_object_but_no_recurrence() -> None:
    text = (
        calendar_object(series(), now=NOW)
        .decode()
        .replace("RRULE:FREQ=WEEKLY;UNTIL=20310630T215959Z;BYDAY=MO,WE", "RRULE:FREQ=HOURLY;COUNT=5")
    )
    parsed = parse_object(text)
    assert parsed.recurring
    assert (parsed.recurrence, parsed.overrides) == (None, {})


def test_a_rule_changed_through_the_json_api_replaces_the_stored_objects() -> None:
    stored = calendar_object(series(), now=NOW).decode()
    changed = replace(
        series(),
        ical=stored,
        recurrence=Recurrence("FREQ=DAILY;COUNT=3", timezone="Europe/Madrid"),
        overrides={},
    )
    parsed = parse_object(calendar_object(changed, now=NOW))
    assert parsed.recurrence == changed.recurrence
    # A stored client object whose rule the domain does not hold is exported as the client wrote it.
    untouched = replace(series(), ical=stored, recurrence=None, overrides={})
    assert "BYDAY=MO,WE" in calendar_object(untouched, now=NOW).decode()
