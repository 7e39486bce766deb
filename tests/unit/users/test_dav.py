"""CalDAV in the User Service, through its real app over the in-process DB, as clients speak it.

Each test sends what a CalDAV client sends (PROPFIND, PUT of an iCalendar object, REPORT...) and reads
the XML or iCalendar back with real parsers. The same events are checked through the JSON API: a
calendar object is stored once, as the event the JSON API shows.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Final

import icalendar
import pytest
from werkzeug.test import TestResponse

from agenda.db.memory import MemoryDBClient
from agenda.users.dav import _METHODS

from ..backends import Caller, Clock, covers, gateway_client, groups_app, ok
from ..backends import at as _at

DAV: Final = "{DAV:}"
C: Final = "{urn:ietf:params:xml:ns:caldav}"
A: Final = "{https://agenda.invalid/ns/}"
HOME: Final = "/dav/calendars/alice/"
CAL: Final = HOME + "default/"
# Flask answers HEAD and OPTIONS for every rule itself, so the app's URL map lists the others.
ROUTES: Final = [
    f"{m} {rule}" for m in _METHODS if m not in ("HEAD", "OPTIONS") for rule in ("/dav", "/dav/<path:path>")
]
RANGE: Final = f"from={_at(1, 0)}&to={_at(31, 0)}"


def vevent(
    uid: str = "u1@client", start: str = "20310110T100000Z", end: str = "20310110T110000Z", **props: str
) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VEVENT", f"UID:{uid}"]
    lines += ["DTSTAMP:20310101T000000Z", f"DTSTART:{start}", f"DTEND:{end}"]
    lines += [f"{k.replace('_', '-')}:{v}" for k, v in props.items() if not k.startswith("ATTENDEE")]
    lines += [
        f"ATTENDEE;PARTSTAT={v}:mailto:{k.removeprefix('ATTENDEE_')}@agenda.invalid"
        for k, v in props.items()
        if k.startswith("ATTENDEE")
    ]
    lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT15M", "DESCRIPTION:soon", "END:VALARM"]
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines).encode()


def dav(caller: Caller, method: str, path: str, body: bytes | str = b"", **headers: str) -> TestResponse:
    data = body.encode() if isinstance(body, str) else body
    return caller.request(
        method, path, data=data, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


def xml(response: TestResponse, status: int = 207) -> ET.Element:
    assert response.status_code == status, response.get_data(as_text=True)
    return ET.fromstring(response.get_data())  # noqa: S314 - our own answer


def hrefs(root: ET.Element) -> list[str]:
    return [r.findtext(f"{DAV}href") or "" for r in root.iter(f"{DAV}response")]


def prop(root: ET.Element, href: str, name: str) -> ET.Element | None:
    for response in root.iter(f"{DAV}response"):
        if response.findtext(f"{DAV}href") == href:
            for propstat in response.iter(f"{DAV}propstat"):
                if "200" in (propstat.findtext(f"{DAV}status") or ""):
                    found = propstat.find(f"{DAV}prop/{name}")
                    if found is not None:
                        return found
    return None


def put(
    caller: Caller, name: str, body: bytes, status: int = 201, calendar: str = "default", **headers: str
) -> TestResponse:
    response = dav(
        caller,
        "PUT",
        f"/dav/calendars/{caller.name}/{calendar}/{name}",
        body,
        Content_Type="text/calendar",
        **headers,
    )
    assert response.status_code == status, response.get_data(as_text=True)
    return response


def condition(response: TestResponse, status: int) -> str:
    """The precondition element a DAV:error body names (its local name)."""
    root = xml(response, status)
    assert root.tag == f"{DAV}error"
    assert root.findtext(f"{A}message")  # a readable reason besides the element
    named = [child.tag.split("}")[1] for child in root if child.tag != f"{A}message"]
    return named[0] if named else ""


def report(caller: Caller, path: str, body: str) -> ET.Element:
    return xml(dav(caller, "REPORT", path, body, Content_Type="application/xml", Depth="1"))


def json_events(caller: Caller) -> list[dict[str, Any]]:
    return ok(caller.get(f"/v1/events?{RANGE}"))["events"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- discovery


@covers(*[r for r in ROUTES if r.startswith("PROPFIND")])
def test_discovery_from_the_root_to_the_default_calendar(alice: Caller) -> None:
    root = xml(dav(alice, "PROPFIND", "/dav/", Depth="0"))
    principal = prop(root, "/dav/", f"{DAV}current-user-principal")
    assert principal is not None
    assert principal.findtext(f"{DAV}href") == "/dav/principals/alice/"
    found = xml(dav(alice, "PROPFIND", "/dav/principals/alice/", Depth="0"))
    home = prop(found, "/dav/principals/alice/", f"{C}calendar-home-set")
    assert home is not None
    assert home.findtext(f"{DAV}href") == HOME
    addresses = prop(found, "/dav/principals/alice/", f"{C}calendar-user-address-set")
    assert addresses is not None
    assert "mailto:alice@agenda.invalid" in [h.text for h in addresses]
    listing = xml(dav(alice, "PROPFIND", HOME, Depth="1"))
    assert set(hrefs(listing)) == {HOME, CAL, HOME + "inbox/", HOME + "outbox/"}
    kind = prop(listing, CAL, f"{DAV}resourcetype")
    assert kind is not None
    assert kind.find(f"{C}calendar") is not None
    # /dav without the slash is the root too (clients strip it)
    assert "/dav/" in hrefs(xml(dav(alice, "PROPFIND", "/dav", Depth="0")))


def test_another_users_calendars_are_not_found(alice: Caller, bob: Caller) -> None:
    del bob
    assert condition(dav(alice, "PROPFIND", "/dav/calendars/bob/default/", Depth="0"), 404) == ""
    assert dav(alice, "GET", "/dav/calendars/bob/default/x.ics").status_code == 404


@covers(
    *[r for r in ROUTES if r.startswith("PROPPATCH") or r.startswith("MKCALENDAR") or r.startswith("MKCOL")]
)
def test_mkcalendar_proppatch_and_delete_of_a_calendar(alice: Caller) -> None:
    body = (
        '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
        "<D:displayname>Work</D:displayname></D:prop></D:set></C:mkcalendar>"
    )
    assert dav(alice, "MKCALENDAR", HOME + "work/", body).status_code == 201
    assert condition(dav(alice, "MKCALENDAR", HOME + "work/", body), 405) == "resource-must-be-null"
    patch = (
        '<D:propertyupdate xmlns:D="DAV:" xmlns:I="http://apple.com/ns/ical/"><D:set><D:prop>'
        "<I:calendar-color>#FF0000FF</I:calendar-color><D:displayname>Job</D:displayname></D:prop></D:set>"
        "</D:propertyupdate>"
    )
    xml(dav(alice, "PROPPATCH", HOME + "work/", patch))
    listing = xml(dav(alice, "PROPFIND", HOME + "work/", Depth="0"))
    assert prop(listing, HOME + "work/", f"{DAV}displayname").text == "Job"  # type: ignore[union-attr]
    assert prop(listing, HOME + "work/", "{http://apple.com/ns/ical/}calendar-color").text == "#FF0000FF"  # type: ignore[union-attr]
    put(alice, "w.ics", vevent("w1"), calendar="work")
    assert dav(alice, "DELETE", HOME + "work/").status_code == 204
    assert json_events(alice) == []  # its events went with it
    assert dav(alice, "MKCALENDAR", HOME + "work/", body).status_code == 201  # the name is free again
    assert "w.ics" not in str(hrefs(xml(dav(alice, "PROPFIND", HOME + "work/", Depth="1"))))
    # extended MKCOL (RFC 5689) makes calendars too
    assert dav(alice, "MKCOL", HOME + "other/").status_code == 201
    assert condition(dav(alice, "DELETE", CAL), 403) == ""  # the default calendar stays


# ------------------------------------------------------------------------------------- objects


@covers(*[r for r in ROUTES if r.split()[0] in ("PUT", "GET")])
def test_a_put_event_is_the_json_apis_event_and_keeps_the_clients_data(alice: Caller) -> None:
    created = put(alice, "meeting.ics", vevent(SUMMARY="Review", LOCATION="Room 1"))
    etag = created.headers["ETag"]
    [listed] = json_events(alice)
    assert (listed["title"], listed["location"], listed["start"]) == ("Review", "Room 1", _at(10, 10))
    assert "ical" not in listed
    got = dav(alice, "GET", CAL + "meeting.ics")
    assert got.status_code == 200
    assert got.headers["ETag"] == etag
    assert got.mimetype == "text/calendar"
    component = icalendar.Calendar.from_ical(got.get_data()).walk("VEVENT")[0]
    assert str(component["UID"]) == "u1@client"
    assert component.walk("VALARM"), "the client's alarm is kept"
    head = dav(alice, "HEAD", CAL + "meeting.ics")
    assert head.status_code == 200
    assert head.get_data() == b""
    assert head.headers["ETag"] == etag
    # a change through the JSON API shows in CalDAV, alarm still there, under a new ETag
    ok(alice.patch(f"/v1/events/{listed['id']}", json={"title": "Final review"}))
    again = dav(alice, "GET", CAL + "meeting.ics")
    component = icalendar.Calendar.from_ical(again.get_data()).walk("VEVENT")[0]
    assert str(component["SUMMARY"]) == "Final review"
    assert component.walk("VALARM")
    assert again.headers["ETag"] != etag


def test_if_match_and_if_none_match(alice: Caller) -> None:
    etag = put(alice, "a.ics", vevent()).headers["ETag"]
    assert condition(put(alice, "a.ics", vevent(), 412, If_None_Match="*"), 412) == ""
    assert condition(put(alice, "a.ics", vevent(), 412, If_Match='"0-1"'), 412) == ""
    assert condition(put(alice, "new.ics", vevent("n"), 412, If_Match=etag), 412) == ""
    changed = put(alice, "a.ics", vevent(SUMMARY="v2"), 204, If_Match=etag)
    assert changed.headers["ETag"] != etag
    assert dav(alice, "DELETE", CAL + "a.ics", If_Match=etag).status_code == 412


def test_a_second_resource_with_the_same_uid_is_refused(alice: Caller) -> None:
    put(alice, "a.ics", vevent("same"))
    refused = put(alice, "b.ics", vevent("same", start="20310111T100000Z", end="20310111T110000Z"), 409)
    assert condition(refused, 409) == "no-uid-conflict"
    assert xml(refused, 409).find(f"{C}no-uid-conflict/{DAV}href").text == CAL + "a.ics"  # type: ignore[union-attr]
    assert (
        condition(put(alice, "a.ics", vevent("other"), 409), 409) == "no-uid-conflict"
    )  # a UID never changes
    assert len(json_events(alice)) == 1


def test_the_default_calendar_refuses_double_booking_an_overlay_calendar_does_not(alice: Caller) -> None:
    put(alice, "a.ics", vevent("a"))
    refused = put(alice, "b.ics", vevent("b", start="20310110T103000Z", end="20310110T113000Z"), 409)
    assert condition(refused, 409) == "no-conflict"
    assert "alice already has commitments" in xml(refused, 409).findtext(f"{A}message", "")
    assert dav(alice, "MKCALENDAR", HOME + "holidays/").status_code == 201
    put(alice, "b.ics", vevent("b", start="20310110T103000Z", end="20310110T113000Z"), calendar="holidays")
    assert len(json_events(alice)) == 2


@covers(*[r for r in ROUTES if r.startswith("DELETE")])
def test_delete_by_the_organizer_removes_it_for_everyone(alice: Caller, bob: Caller) -> None:
    put(alice, "m.ics", vevent(ATTENDEE_bob="NEEDS-ACTION"))
    [seen] = ok(bob.get("/v1/invitations"))["invitations"]
    assert dav(alice, "DELETE", CAL + "m.ics").status_code == 204
    assert dav(alice, "GET", CAL + "m.ics").status_code == 404
    assert json_events(alice) == []
    assert json_events(bob) == []
    kinds = [
        n["kind"] for n in ok(bob.get("/v1/notifications"))["notifications"] if n["event_id"] == seen["id"]
    ]
    assert kinds == ["invited", "cancelled"]
    assert dav(alice, "DELETE", CAL + "m.ics").status_code == 404


# ----------------------------------------------------------------------------------- scheduling


@covers(*[r for r in ROUTES if r.startswith("POST")])
def test_attendees_are_invited_and_answer_from_their_own_client(alice: Caller, bob: Caller) -> None:
    put(alice, "m.ics", vevent(SUMMARY="Lunch", ATTENDEE_bob="NEEDS-ACTION", ATTENDEE_nobody="NEEDS-ACTION"))
    [invitation] = ok(bob.get("/v1/invitations"))["invitations"]
    bob_href = f"/dav/calendars/bob/default/{invitation['id']}.ics"
    listing = xml(dav(bob, "PROPFIND", "/dav/calendars/bob/default/", Depth="1"))
    assert bob_href in hrefs(listing)
    inbox = xml(dav(bob, "PROPFIND", "/dav/calendars/bob/inbox/", Depth="1"))
    assert f"/dav/calendars/bob/inbox/{invitation['id']}.ics" in hrefs(inbox)
    message = dav(bob, "GET", f"/dav/calendars/bob/inbox/{invitation['id']}.ics").get_data()
    assert icalendar.Calendar.from_ical(message)["METHOD"] == "REQUEST"
    # bob accepts in his client: the PUT of his copy with PARTSTAT=ACCEPTED is his answer
    mine = dav(bob, "GET", bob_href)
    tag = mine.headers["Schedule-Tag"]
    accepted = mine.get_data().replace(b"PARTSTAT=NEEDS-ACTION", b"PARTSTAT=ACCEPTED")
    answered = put(bob, f"{invitation['id']}.ics", accepted, 204, If_Schedule_Tag_Match=tag)
    assert answered.headers["Schedule-Tag"] == tag  # an answer is not the organizer's change
    assert ok(bob.get("/v1/invitations"))["invitations"] == []
    organizer_view = icalendar.Calendar.from_ical(dav(alice, "GET", CAL + "m.ics").get_data()).walk("VEVENT")[
        0
    ]
    statuses = {str(a): a.params["PARTSTAT"] for a in organizer_view["ATTENDEE"]}
    assert statuses["mailto:bob@agenda.invalid"] == "ACCEPTED"
    assert statuses["mailto:nobody@agenda.invalid"] == "NEEDS-ACTION"  # not ours: kept as written
    assert (
        xml(dav(bob, "PROPFIND", "/dav/calendars/bob/inbox/", Depth="1")).find(f"{DAV}response") is not None
    )
    assert hrefs(xml(dav(bob, "PROPFIND", "/dav/calendars/bob/inbox/", Depth="1"))) == [
        "/dav/calendars/bob/inbox/"
    ]
    # free-busy through the outbox: bob's busy time, nothing about what it is
    request = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:fb1\r\n"
        "DTSTAMP:20310101T000000Z\r\nDTSTART:20310110T000000Z\r\nDTEND:20310111T000000Z\r\n"
        "ORGANIZER:mailto:alice@agenda.invalid\r\nATTENDEE:mailto:bob@agenda.invalid\r\n"
        "ATTENDEE:mailto:ghost@agenda.invalid\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n"
    )
    answer = xml(dav(alice, "POST", HOME + "outbox/", request, Content_Type="text/calendar"), 200)
    statuses_fb = [r.findtext(f"{C}request-status") for r in answer.iter(f"{C}response")]
    assert statuses_fb == ["2.0;Success", "3.7;Invalid calendar user"]
    reply = answer.findtext(f"{C}response/{C}calendar-data") or ""
    assert "FREEBUSY;VALUE=PERIOD:20310110T100000Z/20310110T110000Z" in reply
    assert "Lunch" not in reply


def test_an_attendee_declining_by_delete_leaves_the_organizers_event(alice: Caller, bob: Caller) -> None:
    put(alice, "m.ics", vevent(ATTENDEE_bob="NEEDS-ACTION"))
    [invitation] = ok(bob.get("/v1/invitations"))["invitations"]
    assert dav(bob, "DELETE", f"/dav/calendars/bob/default/{invitation['id']}.ics").status_code == 204
    assert ok(bob.get(f"/v1/events/{invitation['id']}"))["my_status"] == "declined"
    assert dav(alice, "GET", CAL + "m.ics").status_code == 200


# -------------------------------------------------------------------------------------- reports


@covers(*[r for r in ROUTES if r.startswith("REPORT")])
def test_calendar_query_by_time_range_and_multiget(alice: Caller) -> None:
    put(alice, "a.ics", vevent("a", SUMMARY="Morning"))
    put(alice, "b.ics", vevent("b", start="20310112T100000Z", end="20310112T110000Z", SUMMARY="Later"))
    query = (
        '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
        '<C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20310110T000000Z" end="20310111T000000Z"/></C:comp-filter></C:comp-filter>'
        "</C:filter></C:calendar-query>"
    )
    assert hrefs(report(alice, CAL, query)) == [CAL + "a.ics"]
    text = query.replace(
        '<C:time-range start="20310110T000000Z" end="20310111T000000Z"/>',
        '<C:prop-filter name="SUMMARY"><C:text-match>later</C:text-match></C:prop-filter>',
    )
    assert hrefs(report(alice, CAL, text)) == [CAL + "b.ics"]
    multiget = (
        '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
        f"<C:calendar-data/></D:prop><D:href>{CAL}b.ics</D:href><D:href>{CAL}gone.ics</D:href>"
        "</C:calendar-multiget>"
    )
    found = report(alice, CAL, multiget)
    assert "Later" in (prop(found, CAL + "b.ics", f"{C}calendar-data").text or "")  # type: ignore[union-attr]
    missing = [r for r in found.iter(f"{DAV}response") if r.findtext(f"{DAV}href") == CAL + "gone.ics"]
    assert "404" in (missing[0].findtext(f"{DAV}status") or "")


def test_sync_collection_follows_changes_made_anywhere(alice: Caller) -> None:
    put(alice, "a.ics", vevent("a"))
    sync = (
        '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level>'
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"
    )
    first = report(alice, CAL, sync.format(""))
    assert hrefs(first) == [CAL + "a.ics"]
    token = first.findtext(f"{DAV}sync-token") or ""
    assert hrefs(report(alice, CAL, sync.format(token))) == []
    created = ok(
        alice.post("/v1/events", json={"title": "JSON", "start": _at(11, 9), "end": _at(11, 10)}), 201
    )
    changed = report(alice, CAL, sync.format(token))
    assert hrefs(changed) == [f"{CAL}{created['id']}.ics"]
    token = changed.findtext(f"{DAV}sync-token") or ""
    assert dav(alice, "DELETE", CAL + "a.ics").status_code == 204
    removed = report(alice, CAL, sync.format(token))
    assert hrefs(removed) == [CAL + "a.ics"]
    assert "404" in (removed.find(f"{DAV}response/{DAV}status").text or "")  # type: ignore[union-attr]
    bad = dav(alice, "REPORT", CAL, sync.format("https://elsewhere/1"), Content_Type="application/xml")
    assert condition(bad, 403) == "valid-sync-token"


def test_ctag_changes_with_every_change(alice: Caller) -> None:
    def ctag() -> str:
        listing = xml(
            dav(
                alice,
                "PROPFIND",
                CAL,
                '<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"><D:prop><CS:getctag/></D:prop></D:propfind>',
                Depth="0",
            )
        )
        return prop(listing, CAL, "{http://calendarserver.org/ns/}getctag").text or ""  # type: ignore[union-attr]

    seen = [ctag()]
    put(alice, "a.ics", vevent("a"))
    seen.append(ctag())
    put(alice, "a.ics", vevent("a", SUMMARY="x"), 204)
    seen.append(ctag())
    dav(alice, "DELETE", CAL + "a.ics")
    seen.append(ctag())
    assert len(set(seen[1:])) == 3
    assert seen[1] != seen[0]


# ------------------------------------------------------------------------------------- bad input

LAUGHS: Final = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>'
    '<D:propfind xmlns:D="DAV:"><D:prop>&lol3;</D:prop></D:propfind>'
)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "named"),
    [
        ("PROPFIND", "/dav/", LAUGHS, 400, ""),
        ("PROPFIND", "/dav/", "<D:propfind xmlns:D='DAV:'><D:prop>", 400, ""),
        ("PROPFIND", "/dav/", "<a>" * 30_000 + "</a>" * 30_000, 400, ""),  # deep, but no propfind
        ("REPORT", CAL, "[" * 200_000, 400, ""),  # a JSON-nesting bomb is not XML
        ("REPORT", CAL, "<x/>", 403, "supported-report"),
        ("PUT", CAL + "bad.ics", "BEGIN:VCALENDAR\r\nnonsense\r\n", 400, "valid-calendar-data"),
        (
            "PUT",
            CAL + "todo.ics",
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
            403,
            "supported-calendar-component",
        ),
        ("PUT", CAL + "noend.ics", vevent(end="20310110T090000Z").decode(), 400, "valid-calendar-data"),
        ("PUT", "/dav/calendars/alice/inbox/x.ics", vevent().decode(), 403, "supported-calendar-component"),
        ("PUT", "/dav/calendars/alice/nowhere/x.ics", vevent().decode(), 404, ""),
        ("PUT", "/dav/calendars/bob/default/x.ics", vevent().decode(), 404, ""),  # someone else's calendar
        (
            "PUT",
            CAL + "method.ics",
            vevent().decode().replace("VERSION:2.0", "VERSION:2.0\r\nMETHOD:REQUEST"),
            400,
            "valid-calendar-data",
        ),
        (
            "PUT",
            CAL + "twouids.ics",
            vevent()
            .decode()
            .replace(
                "END:VEVENT\r\nEND:VCALENDAR",
                "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:other\r\nDTSTART:20310110T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR",
            ),
            400,
            "valid-calendar-data",
        ),
        ("PROPFIND", "/dav/no/such/thing", "", 404, ""),
    ],
)
def test_bad_requests_name_their_reason_and_write_nothing(
    alice: Caller, db: MemoryDBClient, method: str, path: str, body: str, status: int, named: str
) -> None:
    before = db.range("", limit=1000)["items"]
    response = dav(
        alice, method, path, body, Content_Type="text/calendar" if method == "PUT" else "application/xml"
    )
    assert condition(response, status) == named
    assert db.range("", limit=1000)["items"] == before


def test_a_body_over_the_limit_is_refused_before_it_is_read(alice: Caller) -> None:
    response = dav(alice, "PUT", CAL + "big.ics", b"x" * (300 * 1024), Content_Type="text/calendar")
    assert response.status_code == 413


def test_options_advertises_calendar_access_and_scheduling(alice: Caller) -> None:
    response = dav(alice, "OPTIONS", "/dav/")
    assert "calendar-access" in response.headers["DAV"]
    assert "calendar-auto-schedule" in response.headers["DAV"]
    assert "REPORT" in response.headers["Allow"]


def test_principal_search_finds_you_and_only_named_others(alice: Caller, bob: Caller) -> None:
    del bob
    search = (
        '<D:principal-property-search xmlns:D="DAV:"><D:property-search><D:prop><D:displayname/></D:prop>'
        "<D:match>{}</D:match></D:property-search><D:prop><D:displayname/></D:prop></D:principal-property-search>"
    )
    assert hrefs(report(alice, "/dav/", search.format("ali"))) == ["/dav/principals/alice/"]
    assert hrefs(report(alice, "/dav/", search.format("bo"))) == []
    assert hrefs(report(alice, "/dav/", search.format("bob"))) == ["/dav/principals/bob/"]
    everyone = (
        '<D:principal-property-search xmlns:D="DAV:"><D:prop><D:displayname/></D:prop>'
        "</D:principal-property-search>"
    )
    assert hrefs(report(alice, "/dav/", everyone)) == ["/dav/principals/alice/"]


@pytest.mark.parametrize(
    ("hierarchical", "partstat", "status"),
    [(True, "ACCEPTED", "CONFIRMED"), (False, "NEEDS-ACTION", "TENTATIVE")],
)
def test_group_events_arrive_as_the_group_rules_make_them(
    alice: Caller,
    bob: Caller,
    db: MemoryDBClient,
    clock: Clock,
    hierarchical: bool,
    partstat: str,
    status: str,
) -> None:
    groups = gateway_client(groups_app(db, clock))
    owner, member = Caller(groups, alice.name), Caller(groups, bob.name)
    group_id = ok(owner.post("/v1/groups", json={"name": "Team", "hierarchical": hierarchical}), 201)["id"]
    invite = {"username": "bob", **({"level": 1} if hierarchical else {})}
    ok(owner.post(f"/v1/groups/{group_id}/members", json=invite), 201)
    ok(member.post(f"/v1/groups/{group_id}/membership", json={"accept": True}))
    event = ok(
        owner.post(
            f"/v1/groups/{group_id}/events", json={"title": "Sync", "start": _at(10, 9), "end": _at(10, 10)}
        ),
        201,
    )
    copy = dav(bob, "GET", f"/dav/calendars/bob/default/{event['id']}.ics")
    component = icalendar.Calendar.from_ical(copy.get_data()).walk("VEVENT")[0]
    assert str(component["STATUS"]) == status
    attendee = component["ATTENDEE"]
    assert str(attendee) == "mailto:bob@agenda.invalid"
    assert attendee.params["PARTSTAT"] == partstat


# ------------------------------------------------------------------------------------- recurrence


def series(rule: str, *extra: str) -> bytes:
    body = vevent("weekly@client", SUMMARY="Standup").decode()
    return (
        body.replace("BEGIN:VALARM", "\r\n".join([f"RRULE:{rule}", "BEGIN:VALARM"]))
        .replace("END:VCALENDAR", "\r\n".join([*extra, "END:VCALENDAR"]))
        .encode()
    )


def test_a_series_put_by_a_client_is_the_domains_series(alice: Caller) -> None:
    cancelled = "\r\n".join(
        [
            "BEGIN:VEVENT",
            "UID:weekly@client",
            "DTSTAMP:20310101T000000Z",
            "RECURRENCE-ID:20310124T100000Z",
            "DTSTART:20310124T100000Z",
            "DTEND:20310124T110000Z",
            "STATUS:CANCELLED",
            "END:VEVENT",
        ]
    )
    put(alice, "weekly.ics", series("FREQ=WEEKLY;COUNT=10", cancelled))
    listed = ok(alice.get(f"/v1/events?from={_at(1, 0)}&to={_at(31, 0)}"))["events"]
    starts = [e["start"] for e in listed if e["status"] != "cancelled"]
    assert starts == [_at(10, 10), _at(17, 10)]  # the 24th is cancelled; the 31st at 10:00 is past `to`
    # an occurrence months later is found by a one-day query (the series index, not the first start)
    query = (
        '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20310307T000000Z" end="20310308T000000Z"/></C:comp-filter></C:comp-filter>'
        "</C:filter></C:calendar-query>"
    )
    assert hrefs(report(alice, CAL, query)) == [CAL + "weekly.ics"]
    # and the default calendar refuses double-booking an occurrence
    clash = put(alice, "clash.ics", vevent("clash", start="20310307T103000Z", end="20310307T113000Z"), 409)
    assert condition(clash, 409) == "no-conflict"


@pytest.mark.parametrize(
    "rule",
    # sub-daily rules would put up to 31 million occurrences in a year; COUNT is capped at 1000
    ["FREQ=SECONDLY", "FREQ=MINUTELY;INTERVAL=1", "FREQ=DAILY;COUNT=5000", "FREQ=DAILY;BYHOUR=1,2,3"],
)
def test_a_rule_the_domain_cannot_hold_is_refused_with_its_reason(
    alice: Caller, db: MemoryDBClient, rule: str
) -> None:
    before = db.range("", limit=1000)["items"]
    refused = put(alice, "bad.ics", series(rule), 403)
    assert condition(refused, 403) == "valid-calendar-object-resource"
    assert "VEVENT.RRULE" in xml(refused, 403).findtext(f"{A}message", "")
    assert db.range("", limit=1000)["items"] == before
