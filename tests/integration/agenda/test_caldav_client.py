"""A real CalDAV client (the `caldav` library) against the whole stack, through the gateway.

What a calendar app does: discover the principal and its calendars, save and find events, follow
changes with a sync token (including one made through the JSON API), and schedule: an event saved with
an attendee reaches the attendee's calendar and inbox, the attendee answers from their own client, and
the organizer sees the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import caldav
import icalendar
import pytest

from .conftest import Stack

PASSWORD = "correct horse battery"  # what Stack.user registers
DAY = datetime(2031, 3, 3, tzinfo=UTC)


def client(stack: Stack, name: str) -> caldav.DAVClient:
    return caldav.DAVClient(url=stack.url("/dav/"), username=name, password=PASSWORD, timeout=30)


@pytest.fixture
def two(stack: Stack) -> Iterator[tuple[str, str, caldav.DAVClient, caldav.DAVClient]]:
    (alice, _), (bob, _) = stack.user("cda"), stack.user("cdb")
    with client(stack, alice) as first, client(stack, bob) as second:
        yield alice, bob, first, second


def ical(uid: str, start: datetime, summary: str, *attendees: str) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VEVENT", f"UID:{uid}"]
    lines += ["DTSTAMP:20310101T000000Z", f"DTSTART:{start:%Y%m%dT%H%M%SZ}"]
    lines += [f"DTEND:{start + timedelta(hours=1):%Y%m%dT%H%M%SZ}", f"SUMMARY:{summary}"]
    if attendees:
        lines.append(f"ORGANIZER:mailto:{attendees[0]}@agenda.invalid")
        lines += [
            f"ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}@agenda.invalid" for a in attendees[1:]
        ]
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


def test_discover_save_search_and_sync(
    stack: Stack, two: tuple[str, str, caldav.DAVClient, caldav.DAVClient]
) -> None:
    alice, _, dav, _ = two
    principal = dav.principal()
    assert str(principal.url).endswith(f"/dav/principals/{alice}/")
    [calendar] = principal.calendars()
    assert str(calendar.url).endswith(f"/dav/calendars/{alice}/default/")

    calendar.save_event(ical("morning@test", DAY + timedelta(hours=9), "Morning"))
    calendar.save_event(ical("evening@test", DAY + timedelta(hours=18), "Evening"))
    found = calendar.search(event=True, start=DAY + timedelta(hours=8), end=DAY + timedelta(hours=12))
    assert [str(e.icalendar_component["SUMMARY"]) for e in found] == ["Morning"]

    synced = calendar.objects_by_sync_token(load_objects=True)
    assert sorted(str(o.icalendar_component["SUMMARY"]) for o in synced) == ["Evening", "Morning"]
    token = synced.sync_token

    # A change through the JSON API shows in the client's next sync.
    _, token_json = (
        alice,
        stack.call("POST", "/v1/auth/login", json={"username": alice, "password": PASSWORD}),
    )
    bearer = token_json.json()["access_token"]
    listed = stack.call("GET", "/v1/events?from=2031-03-01T00:00:00Z&to=2031-03-31T00:00:00Z", bearer).json()
    morning = next(e for e in listed["events"] if e["title"] == "Morning")
    changed = stack.call("PATCH", f"/v1/events/{morning['id']}", bearer, json={"title": "Early"})
    assert changed.status_code == 200, changed.text
    updates = calendar.objects_by_sync_token(sync_token=token, load_objects=True)
    assert [str(o.icalendar_component["SUMMARY"]) for o in updates] == ["Early"]

    # and a deletion in the client is gone from the JSON API too
    found[0].delete()
    listed = stack.call("GET", "/v1/events?from=2031-03-01T00:00:00Z&to=2031-03-31T00:00:00Z", bearer).json()
    assert [e["title"] for e in listed["events"]] == ["Evening"]


def test_an_invitation_is_answered_from_the_attendees_client(
    stack: Stack, two: tuple[str, str, caldav.DAVClient, caldav.DAVClient]
) -> None:
    alice, bob, alice_dav, bob_dav = two
    [alice_calendar] = alice_dav.principal().calendars()
    alice_calendar.save_event(ical("lunch@test", DAY + timedelta(hours=13), "Lunch", alice, bob))

    bob_principal = bob_dav.principal()
    inbox = bob_principal.schedule_inbox()
    assert len(inbox.get_items()) == 1  # the REQUEST waits in bob's inbox
    [bob_calendar] = bob_principal.calendars()
    [copy] = bob_calendar.search(event=True, start=DAY, end=DAY + timedelta(days=1))
    component = copy.icalendar_component
    assert str(component["SUMMARY"]) == "Lunch"

    # bob accepts in his client: his own PARTSTAT, saved back
    for attendee in (
        component.get("ATTENDEE", [])
        if isinstance(component.get("ATTENDEE"), list)
        else [component["ATTENDEE"]]
    ):
        if str(attendee).startswith(f"mailto:{bob}@"):
            attendee.params["PARTSTAT"] = "ACCEPTED"
    copy.save()

    [organizer_copy] = alice_calendar.search(event=True, start=DAY, end=DAY + timedelta(days=1))
    organizer_view = icalendar.Calendar.from_ical(organizer_copy.data).walk("VEVENT")[0]
    rows = (
        organizer_view["ATTENDEE"]
        if isinstance(organizer_view["ATTENDEE"], list)
        else [organizer_view["ATTENDEE"]]
    )
    assert {str(a): a.params["PARTSTAT"] for a in rows}[f"mailto:{bob}@agenda.invalid"] == "ACCEPTED"
    assert list(bob_principal.schedule_inbox().get_items()) == []  # answered: out of the inbox
