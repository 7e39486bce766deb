"""CalDAV in the User Service: the same events as the JSON API, seen as calendars (RFC 4791).

URL space (the gateway forwards ``/dav/...`` here with the caller's identity, from a token or from
HTTP Basic):

``/dav/``                                 the root; its ``current-user-principal`` starts discovery
``/dav/principals/<user>/``               the principal: calendar-home-set, addresses, scheduling boxes
``/dav/calendars/<user>/``                the calendar home: one calendar per collection
``/dav/calendars/<user>/<calendar>/``     a calendar; ``default`` always exists
``/dav/calendars/<user>/<calendar>/<name>``  one event (a calendar object resource)
``/dav/calendars/<user>/inbox/``, ``outbox/``  RFC 6638's scheduling boxes (the inbox lists the pending
                                          invitations as iTIP REQUESTs; the outbox takes free-busy requests)

Which calendar shows an event to a user: the organizer's own collection (`Event.calendar`) under the
name it was PUT with (`Event.dav_name`, else ``<id>.ics``); every participant's ``default`` calendar
under ``<id>.ics``, unless they declined it (as the ``calendar.ics`` export). An event PUT under a new
name gets an id derived from (user, calendar, name), so finding a resource by its URL needs no index.

Everything stored once: a PUT is the JSON API's create or change (the conflict rules apply; a
conflict is a 409 naming ``agenda:no-conflict``); ATTENDEEs who are our users become participants and
are invited (RFC 6638 implicit scheduling); an attendee's PUT that changes their own PARTSTAT is their
answer; DELETE by the organizer removes the event for everyone (participants are told it was
cancelled), by an attendee declines it. ETags are ``"<sequence>-<updated>"``: every change of an event
bumps its sequence. Sync tokens are DB revisions: changes since one are read from the DB's watch
history, and a token older than that history is refused with ``valid-sync-token``, upon which clients
sync from scratch.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import flask
import icalendar

from agenda.calendar import MAX_INVITEES
from agenda.calendar.layout import (
    agenda_prefix,
    calendar_key,
    calendars_prefix,
    inbox_key,
    inbox_prefix,
    uid_key,
)
from agenda.calendar.store import Change, EventConflict, EventNotFound, EventStore
from agenda.common.backend import current_user
from agenda.common.web import keyed_id
from agenda.dav import query
from agenda.dav.xml import (
    AGENDA,
    CALDAV,
    CS,
    DAV,
    ICAL,
    DavError,
    PropStat,
    clark,
    element,
    error_body,
    multistatus,
    parse_body,
    serialise,
)
from agenda.db.client import Compacted, RevisionMismatch
from agenda.db.txn import txn_compare, txn_delete, txn_put
from agenda.domain.ical import (
    DEFAULT_DOMAIN,
    MAX_OBJECT_BYTES,
    CalendarObject,
    ICalError,
    UnsupportedComponent,
    address_user,
    calendar_object,
    new_calendar,
    parse_object,
    to_ical,
    user_address,
)
from agenda.domain.model import Event, EventKind, EventStatus, Participation, PartStat, format_time, to_utc
from agenda.domain.rules import (
    apply_response,
    busy_intervals,
    cancel_event,
    change_notifications,
    expand,
    invitation_notifications,
)
from agenda.domain.validation import MAX_QUERY_RANGE

__all__ = ["DEFAULT_CALENDAR", "DavDeps", "dav_blueprint"]

DEFAULT_CALENDAR: Final = "default"
INBOX: Final = "inbox"
OUTBOX: Final = "outbox"
_SCHEDULING_BOXES: Final = (INBOX, OUTBOX)
_CALENDAR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_OBJECT_NAME: Final = re.compile(r"[^/\x00-\x1f\x7f]{1,200}")
_OWN_ID_NAME: Final = re.compile(r"([0-9a-f]{32})\.ics")
_SYNC_PREFIX: Final = "https://agenda.invalid/sync/"
_MAX_CALENDARS: Final = 50
_MAX_DEAD_PROPS: Final = 32
_MAX_PROP_TEXT: Final = 4096
_DAV_CLASSES: Final = "1, 3, access-control, calendar-access, calendar-auto-schedule, extended-mkcol"
_ICS: Final = "text/calendar; charset=utf-8"
_XML: Final = "application/xml; charset=utf-8"
_REFUSE_CONFLICTS: Final = clark(AGENDA, "refuse-conflicts")
_CALENDAR_PROPS: Final = {
    clark(DAV, "displayname"): "displayname",
    clark(CALDAV, "calendar-description"): "description",
    clark(ICAL, "calendar-color"): "color",
    clark(ICAL, "calendar-order"): "order",
    clark(CALDAV, "calendar-timezone"): "timezone",
}


@dataclass
class DavDeps:
    """What CalDAV needs from the User Service: its store, its clock, and a user's time zone."""

    store: EventStore
    clock: Callable[[], datetime]
    timezone_of: Callable[[str], str]


def _deps() -> DavDeps:
    return flask.current_app.extensions["agenda.dav"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ paths


def _principal(user: str) -> str:
    return f"/dav/principals/{user}/"


def _home(user: str) -> str:
    return f"/dav/calendars/{user}/"


def _calendar_href(user: str, calendar: str) -> str:
    return f"{_home(user)}{quote(calendar, safe='@+')}/"


def _object_href(user: str, calendar: str, name: str) -> str:
    return f"{_calendar_href(user, calendar)}{quote(name, safe='@+:')}"


@dataclass(frozen=True)
class Target:
    """What a request path names: ``kind`` is root, principals, principal, home, calendar, box or object."""

    kind: str
    user: str = ""
    calendar: str = ""
    name: str = ""


def _target(path: str) -> Target:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:1] != ["dav"]:
        raise DavError(404, "not a CalDAV path")
    parts = parts[1:]
    if not parts or parts == [""]:
        return Target("root")
    if parts[0] == "principals":
        if len(parts) == 1:
            return Target("principals")
        if len(parts) == 2:
            return Target("principal", parts[1])
    elif parts[0] == "calendars" and len(parts) >= 2:
        user = parts[1]
        if len(parts) == 2:
            return Target("home", user)
        calendar = parts[2]
        if calendar in _SCHEDULING_BOXES and len(parts) == 3:
            return Target("box", user, calendar)
        if not _CALENDAR_NAME.fullmatch(calendar):
            raise DavError(404, f"{calendar!r} is not a calendar name (letters, digits, . _ @ + -)")
        if len(parts) == 3:
            return Target("calendar", user, calendar)
        if len(parts) == 4 and _OBJECT_NAME.fullmatch(parts[3]):
            return Target("object", user, calendar, parts[3])
    raise DavError(404, "no such CalDAV resource")


def _own(target: Target) -> None:
    """Only your own principal and calendars: others' are private (the JSON API shows no one's either)."""
    if target.user and target.user != current_user():
        raise DavError(404, "no such CalDAV resource")


# ---------------------------------------------------------------------------------------- records


# The default calendar is the user's agenda, where the JSON API books: it refuses double-booking as the
# JSON API does. A calendar made with MKCALENDAR is an overlay (holidays, a shared project) and does not,
# unless its agenda:refuse-conflicts property says so (a CalDAV client cannot pass allow_conflict).
_DEFAULT_RECORD: Final = {"displayname": "Agenda", "refuse_conflicts": True}


def _calendar_record(user: str, calendar: str) -> dict[str, Any] | None:
    if calendar in _SCHEDULING_BOXES:
        return {"displayname": calendar, "box": True}
    kv = _deps().store.db.get(calendar_key(user, calendar))
    if kv is None:
        return dict(_DEFAULT_RECORD) if calendar == DEFAULT_CALENDAR else None
    return kv["value"]  # type: ignore[no-any-return]


def _calendars(user: str) -> dict[str, dict[str, Any]]:
    found = {DEFAULT_CALENDAR: dict(_DEFAULT_RECORD)}
    for kv in _deps().store.db.iter_prefix(calendars_prefix(user)):
        found[kv["key"].rsplit("/", 1)[1]] = kv["value"]
    return found


def _require_calendar(user: str, calendar: str) -> dict[str, Any]:
    record = _calendar_record(user, calendar)
    if record is None:
        raise DavError(404, f"there is no calendar {calendar!r}")
    return record


def _href_name(event: Event, user: str, calendar: str) -> str:
    if calendar == INBOX:
        return f"{event.id}.ics"
    return _placement(event, user)[1]  # type: ignore[index]


def _placement(event: Event, user: str) -> tuple[str, str] | None:
    """(calendar, resource name) where `user` sees `event`, or None when it is not in their calendars."""
    if event.organizer == user:
        return event.calendar or DEFAULT_CALENDAR, event.dav_name or f"{event.id}.ics"
    if event.partstat(user) in (None, PartStat.DECLINED):
        return None
    return DEFAULT_CALENDAR, f"{event.id}.ics"


def _etag(event: Event) -> str:
    return f'"{event.sequence}-{int(event.updated.timestamp() * 1_000_000)}"'


def _schedule_tag(event: Event) -> str:
    """RFC 6638 3.2.10: changes with the organizer's changes, not with an attendee's answer, so an
    attendee's client can update its PARTSTAT without losing to another attendee's reply."""
    record = event.to_dict()
    for volatile in ("updated", "sequence", "status"):
        record.pop(volatile, None)
    record["participants"] = sorted(event.participants)
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    return f'"{digest}"'


def _dav_id(user: str, calendar: str, name: str) -> str:
    return keyed_id("dav", user, f"{calendar}/{name}")


def _find(target: Target) -> Event | None:
    """The event at `target` (an object path), as the caller sees it, or None."""
    store = _deps().store
    if target.calendar == INBOX:
        own = _OWN_ID_NAME.fullmatch(target.name)
        if own is None:
            return None
        try:
            event, _ = store.get_event(own.group(1))
        except EventNotFound:
            return None
        return event if _pending(event, target.user, _inbox_seen(target.user)) else None
    candidates = [_dav_id(target.user, target.calendar, target.name)]
    own = _OWN_ID_NAME.fullmatch(target.name)
    if own:
        candidates.append(own.group(1))
    for event_id in candidates:
        try:
            event, _ = store.get_event(event_id)
        except EventNotFound:
            continue
        if _placement(event, target.user) == (target.calendar, target.name):
            return event
    return None


def _pending(event: Event, user: str, seen: dict[str, int]) -> bool:
    """An invitation still in `user`'s schedule inbox: unanswered, not cancelled, and changed since the
    client last took it out (DELETE from the inbox is the client saying it has processed the message)."""
    if event.status is EventStatus.CANCELLED or event.partstat(user) is not PartStat.NEEDS_ACTION:
        return False
    return seen.get(event.id, -1) < event.sequence


def _inbox_seen(user: str) -> dict[str, int]:
    return {
        kv["key"].rsplit("/", 1)[1]: int(kv["value"].get("sequence", -1))
        for kv in _deps().store.db.iter_prefix(inbox_prefix(user))
    }


def _member_of(user: str, calendar: str) -> Callable[[Event], bool]:
    """Whether an event of `user`'s agenda is in `calendar` (the inbox: a pending invitation)."""
    if calendar == INBOX:
        seen = _inbox_seen(user)
        return lambda event: _pending(event, user, seen)
    return lambda event: (_placement(event, user) or ("",))[0] == calendar


def _members(
    user: str, calendar: str, start: datetime | None = None, end: datetime | None = None
) -> list[Event]:
    """The events in one of `user`'s calendars (overlapping [start, end) when given)."""
    member = _member_of(user, calendar)
    return [e for e in _deps().store.agenda(user, start, end) if member(e)]


def _entries(user: str, calendar: str) -> tuple[list[tuple[Event, int]], int]:
    """Every event in the calendar with its index entry's mod_revision, and the revision read at."""
    pairs, revision = _deps().store.agenda_entries(user)
    member = _member_of(user, calendar)
    return [(e, r) for e, r in pairs if member(e)], revision


def _ctag(entries: Sequence[tuple[Event, int]]) -> str:
    # The newest entry's revision and the count name the set exactly: an entry added or changed has a
    # revision above every one before it, and a removal alone lowers the count (see the module docs).
    newest = max((revision for _, revision in entries), default=0)
    return f"{newest}-{len(entries)}"


# ------------------------------------------------------------------------------------- properties


def _href_prop(tag: str, *hrefs: str) -> ET.Element:
    return element(tag, children=[element(clark(DAV, "href"), h) for h in hrefs])


def _resourcetype(*kinds: str) -> ET.Element:
    return element(clark(DAV, "resourcetype"), children=[ET.Element(k) for k in kinds])


def _privileges() -> ET.Element:
    names = [
        "read",
        "write",
        "write-properties",
        "write-content",
        "bind",
        "unbind",
        "read-current-user-privilege-set",
    ]
    return element(
        clark(DAV, "current-user-privilege-set"),
        children=[element(clark(DAV, "privilege"), children=[ET.Element(clark(DAV, n))]) for n in names]
        + [element(clark(DAV, "privilege"), children=[ET.Element(clark(CALDAV, "read-free-busy"))])],
    )


def _report_set(*reports: str) -> ET.Element:
    return element(
        clark(DAV, "supported-report-set"),
        children=[
            element(
                clark(DAV, "supported-report"),
                children=[element(clark(DAV, "report"), children=[ET.Element(r)])],
            )
            for r in reports
        ],
    )


def _common(user: str) -> dict[str, Callable[[], ET.Element]]:
    return {
        clark(DAV, "current-user-principal"): lambda: _href_prop(
            clark(DAV, "current-user-principal"), _principal(user)
        ),
        clark(DAV, "principal-collection-set"): lambda: _href_prop(
            clark(DAV, "principal-collection-set"), "/dav/principals/"
        ),
        clark(DAV, "current-user-privilege-set"): _privileges,
        clark(DAV, "owner"): lambda: _href_prop(clark(DAV, "owner"), _principal(user)),
    }


def _root_props(user: str) -> dict[str, Callable[[], ET.Element]]:
    return _common(user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(clark(DAV, "collection")),
        clark(DAV, "displayname"): lambda: element(clark(DAV, "displayname"), "Agenda Distribuida"),
    }


def _principal_props(user: str, me: str | None = None) -> dict[str, Callable[[], ET.Element]]:
    return _common(me or user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(clark(DAV, "collection"), clark(DAV, "principal")),
        clark(DAV, "displayname"): lambda: element(clark(DAV, "displayname"), user),
        clark(DAV, "principal-URL"): lambda: _href_prop(clark(DAV, "principal-URL"), _principal(user)),
        clark(CALDAV, "calendar-home-set"): lambda: _href_prop(
            clark(CALDAV, "calendar-home-set"), _home(user)
        ),
        clark(CALDAV, "calendar-user-address-set"): lambda: _href_prop(
            clark(CALDAV, "calendar-user-address-set"), user_address(user), _principal(user)
        ),
        clark(CALDAV, "schedule-inbox-URL"): lambda: _href_prop(
            clark(CALDAV, "schedule-inbox-URL"), f"{_home(user)}inbox/"
        ),
        clark(CALDAV, "schedule-outbox-URL"): lambda: _href_prop(
            clark(CALDAV, "schedule-outbox-URL"), f"{_home(user)}outbox/"
        ),
        clark(CALDAV, "calendar-user-type"): lambda: element(
            clark(CALDAV, "calendar-user-type"), "INDIVIDUAL"
        ),
        clark(DAV, "supported-report-set"): lambda: _report_set(),
    }


def _home_props(user: str) -> dict[str, Callable[[], ET.Element]]:
    return _common(user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(clark(DAV, "collection")),
        clark(DAV, "displayname"): lambda: element(clark(DAV, "displayname"), f"Calendars of {user}"),
    }


def _box_props(user: str, box: str) -> dict[str, Callable[[], ET.Element]]:
    kind = clark(CALDAV, "schedule-inbox" if box == "inbox" else "schedule-outbox")
    return _common(user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(clark(DAV, "collection"), kind),
        clark(DAV, "displayname"): lambda: element(clark(DAV, "displayname"), box),
    }


def _calendar_props(user: str, calendar: str, record: dict[str, Any]) -> dict[str, Callable[[], ET.Element]]:
    state: dict[str, Any] = {}

    def entries() -> tuple[list[tuple[Event, int]], int]:
        if "entries" not in state:
            state["entries"] = _entries(user, calendar)
        return state["entries"]  # type: ignore[no-any-return]

    props = _common(user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(
            clark(DAV, "collection"), clark(CALDAV, "calendar")
        ),
        clark(CALDAV, "supported-calendar-data"): lambda: element(
            clark(CALDAV, "supported-calendar-data"),
            children=[_calendar_data_type()],
        ),
        clark(CALDAV, "max-resource-size"): lambda: element(clark(CALDAV, "max-resource-size"), "65536"),
        clark(CS, "getctag"): lambda: element(clark(CS, "getctag"), _ctag(entries()[0])),
        clark(DAV, "sync-token"): lambda: element(clark(DAV, "sync-token"), f"{_SYNC_PREFIX}{entries()[1]}"),
        clark(DAV, "supported-report-set"): lambda: _report_set(
            clark(CALDAV, "calendar-query"),
            clark(CALDAV, "calendar-multiget"),
            clark(CALDAV, "free-busy-query"),
            clark(DAV, "sync-collection"),
        ),
        clark(CALDAV, "schedule-calendar-transp"): lambda: element(
            clark(CALDAV, "schedule-calendar-transp"), children=[ET.Element(clark(CALDAV, "opaque"))]
        ),
        clark(DAV, "getcontenttype"): lambda: element(
            clark(DAV, "getcontenttype"), "text/calendar; charset=utf-8"
        ),
    }
    props[_REFUSE_CONFLICTS] = lambda: element(
        _REFUSE_CONFLICTS, "true" if record.get("refuse_conflicts") else "false"
    )
    props[clark(CALDAV, "supported-calendar-component-set")] = lambda: element(
        clark(CALDAV, "supported-calendar-component-set"),
        children=[_named(clark(CALDAV, "comp"), c) for c in record.get("components") or ["VEVENT"]],
    )
    for tag, key in _CALENDAR_PROPS.items():
        if record.get(key) not in (None, ""):
            props[tag] = lambda tag=tag, key=key: element(tag, str(record[key]))
    for tag, text in (record.get("dead") or {}).items():
        props[tag] = lambda tag=tag, text=text: element(tag, text)
    return props


def _named(tag: str, name: str) -> ET.Element:
    node = ET.Element(tag)
    node.set("name", name)
    return node


def _calendar_data_type() -> ET.Element:
    node = ET.Element(clark(CALDAV, "calendar-data"))
    node.set("content-type", "text/calendar")
    node.set("version", "2.0")
    return node


class _Rendered:
    """Rendered calendar objects, by what determines them: an event's id, sequence and update time (every
    change bumps the sequence), the viewer's time zone and whether it is the inbox's iTIP form. Clients
    ask for the same objects again and again (every poll of a calendar-query, every multiget), and
    rendering costs two iCalendar parses and a serialisation. Bounded (least recently used goes)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], tuple[bytes, list[icalendar.Calendar]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> tuple[bytes, list[icalendar.Calendar]]:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        made = (make(), [])  # the parsed form is added on first use (filters need it, GET does not)
        with self._lock:
            self._items[key] = made
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return made


_RENDERED: Final = _Rendered(4096)


def _rendered(event: Event, user: str, inbox: bool) -> tuple[bytes, list[icalendar.Calendar]]:
    timezone = _deps().timezone_of(user)
    key = (event.id, event.sequence, event.updated, event.recurrence_id, timezone, inbox)

    def make() -> bytes:
        body = calendar_object(event, now=event.updated, timezone=timezone)
        if not inbox:
            return body
        message = icalendar.Calendar.from_ical(body)
        message.add("METHOD", "REQUEST")
        return message.to_ical()  # type: ignore[no-any-return]

    return _RENDERED.get(key, make)


def _render(event: Event, user: str, *, inbox: bool = False) -> bytes:
    """The event as `user` sees it; in the schedule inbox, as the iTIP REQUEST that invites them."""
    return _rendered(event, user, inbox)[0]


def _parsed(event: Event, user: str, *, inbox: bool = False) -> icalendar.Calendar:
    """`_render`'s object parsed, for filters (never modified: they only read it)."""
    body, parsed = _rendered(event, user, inbox)
    if not parsed:
        parsed.append(icalendar.Calendar.from_ical(body))
    return parsed[0]


def _object_props(
    user: str, event: Event, calendar_data: ET.Element | None = None, *, inbox: bool = False
) -> dict[str, Callable[[], ET.Element]]:
    def data() -> ET.Element:
        body = _render(event, user, inbox=inbox)
        if calendar_data is not None:
            body = _shape_calendar_data(body, calendar_data)
        return element(clark(CALDAV, "calendar-data"), body.decode("utf-8"))

    return _common(user) | {
        clark(DAV, "resourcetype"): lambda: _resourcetype(),
        clark(DAV, "getetag"): lambda: element(clark(DAV, "getetag"), _etag(event)),
        clark(DAV, "getcontenttype"): lambda: element(
            clark(DAV, "getcontenttype"), "text/calendar; charset=utf-8; component=vevent"
        ),
        clark(DAV, "getlastmodified"): lambda: element(
            clark(DAV, "getlastmodified"), event.updated.strftime("%a, %d %b %Y %H:%M:%S GMT")
        ),
        clark(CALDAV, "calendar-data"): data,
        clark(CALDAV, "schedule-tag"): lambda: element(clark(CALDAV, "schedule-tag"), _schedule_tag(event)),
    }


def _shape_calendar_data(body: bytes, request: ET.Element) -> bytes:
    """``CALDAV:calendar-data`` with ``expand``: the occurrences in the range instead of the series."""
    expand_node = request.find(clark(CALDAV, "expand"))
    if expand_node is None:
        return body
    time_range = query.TimeRange.parse(expand_node)
    start, end = time_range.window()
    return query.expand(icalendar.Calendar.from_ical(body), start, end).to_ical()  # type: ignore[no-any-return]


# Properties `allprop` leaves out (RFC 4918 9.1: expensive or large ones are only given when named).
_NOT_IN_ALLPROP: Final = frozenset(
    {
        clark(CALDAV, "calendar-data"),
        clark(CS, "getctag"),
        clark(DAV, "sync-token"),
        clark(DAV, "current-user-privilege-set"),
    }
)


def _propstat(href: str, props: dict[str, Callable[[], ET.Element]], request: ET.Element | None) -> PropStat:
    """One response: the named properties (404 for unknown ones), every property, or their names."""
    result = PropStat(href)
    if request is None or request.find(clark(DAV, "allprop")) is not None:
        result.found = [build() for tag, build in props.items() if tag not in _NOT_IN_ALLPROP]
        return result
    if request.find(clark(DAV, "propname")) is not None:
        result.found = [ET.Element(tag) for tag in props]
        return result
    wanted = request.find(clark(DAV, "prop"))
    if wanted is None:
        raise DavError(400, "the body must ask for prop, allprop or propname")
    for node in wanted:
        build = props.get(node.tag)
        if build is None:
            result.missing.append(node.tag)
        else:
            result.found.append(build())
    return result


# ---------------------------------------------------------------------------------------- answers


def _xml_response(body: bytes, status: int = 207, headers: dict[str, str] | None = None) -> flask.Response:
    return flask.Response(body, status=status, content_type=_XML, headers=headers or {})


def _multistatus(responses: Iterable[PropStat], *, sync_token: str | None = None) -> flask.Response:
    return _xml_response(multistatus(responses, sync_token=sync_token))


def _depth(default: str = "0") -> str:
    depth = flask.request.headers.get("Depth", default).strip().lower()
    if depth not in ("0", "1", "infinity"):
        raise DavError(400, "Depth must be 0, 1 or infinity")
    return depth


def _body() -> ET.Element | None:
    return parse_body(flask.request.get_data(cache=True))


# ---------------------------------------------------------------------------------------- views

_METHODS: Final = [
    "POST",
    "OPTIONS",
    "GET",
    "HEAD",
    "PUT",
    "DELETE",
    "PROPFIND",
    "PROPPATCH",
    "REPORT",
    "MKCALENDAR",
    "MKCOL",
]
_ALLOW: Final = ", ".join(_METHODS)

dav_bp = flask.Blueprint("dav", __name__)


@dav_bp.errorhandler(DavError)
def _dav_error(error: DavError) -> flask.Response:
    headers = {"DAV": _DAV_CLASSES}
    if error.status == 405:
        headers["Allow"] = _ALLOW
    return flask.Response(error_body(error), status=error.status, content_type=_XML, headers=headers)


@dav_bp.after_request
def _dav_headers(response: flask.Response) -> flask.Response:
    response.headers.setdefault("DAV", _DAV_CLASSES)
    return response


@dav_bp.route("/dav", defaults={"path": ""}, methods=_METHODS, strict_slashes=False)
@dav_bp.route("/dav/<path:path>", methods=_METHODS)
def dav(path: str) -> Any:
    method = flask.request.method
    if method == "OPTIONS":
        return flask.Response(
            status=200, headers={"Allow": _ALLOW, "DAV": _DAV_CLASSES, "Content-Length": "0"}
        )
    target = _target(flask.request.path)
    _own(target)
    return _HANDLERS[method](target)  # the route takes no other method


# ------------------------------------------------------------------------------------- PROPFIND


def _props_for(target: Target, me: str) -> tuple[str, dict[str, Callable[[], ET.Element]]]:
    if target.kind == "root":
        return "/dav/", _root_props(me)
    if target.kind == "principals":
        return "/dav/principals/", _root_props(me)
    if target.kind == "principal":
        return _principal(me), _principal_props(me)
    if target.kind == "home":
        return _home(me), _home_props(me)
    if target.kind == "box":
        return f"{_home(me)}{target.calendar}/", _box_props(me, target.calendar)
    if target.kind == "calendar":
        record = _require_calendar(me, target.calendar)
        return _calendar_href(me, target.calendar), _calendar_props(me, target.calendar, record)
    event = _find(target)
    if event is None:
        raise DavError(404, "no such calendar object")
    return _object_href(me, target.calendar, target.name), _object_props(me, event)


def _propfind(target: Target) -> flask.Response:
    me = current_user()
    request = _body()
    if request is not None and request.tag != clark(DAV, "propfind"):
        raise DavError(400, "a PROPFIND body must be a DAV:propfind")
    depth = _depth("0" if target.kind == "object" else "1")
    href, props = _props_for(target, me)
    responses = [_propstat(href, props, request)]
    if depth != "0":
        responses.extend(_children(target, me, request))
    return _multistatus(responses)


def _children(target: Target, me: str, request: ET.Element | None) -> list[PropStat]:
    if target.kind == "root":
        return [
            _propstat(_principal(me), _principal_props(me), request),
            _propstat(_home(me), _home_props(me), request),
        ]
    if target.kind == "principals":
        return [_propstat(_principal(me), _principal_props(me), request)]
    if target.kind == "home":
        found = [
            _propstat(_calendar_href(me, name), _calendar_props(me, name, record), request)
            for name, record in sorted(_calendars(me).items())
        ]
        found += [_propstat(f"{_home(me)}{box}/", _box_props(me, box), request) for box in _SCHEDULING_BOXES]
        return found
    if target.kind == "calendar" or (target.kind == "box" and target.calendar == INBOX):
        return [
            _propstat(
                _object_href(me, target.calendar, _href_name(e, me, target.calendar)),
                _object_props(me, e, inbox=target.calendar == INBOX),
                request,
            )
            for e in _members(me, target.calendar)
        ]
    return []


# ------------------------------------------------------------------------------------ PROPPATCH


def _prop_text(node: ET.Element) -> str:
    text = "".join(node.itertext()).strip()
    if len(text) > _MAX_PROP_TEXT:
        raise DavError(403, f"{node.tag} must be at most {_MAX_PROP_TEXT} characters")
    return text


def _apply_props(record: dict[str, Any], update: ET.Element) -> list[str]:
    """Apply a propertyupdate's set/remove to a calendar record; the changed property names."""
    changed = []
    dead = dict(record.get("dead") or {})
    for action in update:
        removing = action.tag == clark(DAV, "remove")
        if action.tag not in (clark(DAV, "set"), clark(DAV, "remove")):
            raise DavError(400, f"{action.tag} is not set or remove")
        for prop in action.findall(clark(DAV, "prop")):
            for node in prop:
                changed.append(node.tag)
                if node.tag == clark(DAV, "resourcetype"):
                    continue  # given by MKCOL's extended form; a calendar stays a calendar
                key = _CALENDAR_PROPS.get(node.tag)
                if node.tag == _REFUSE_CONFLICTS:
                    value = "false" if removing else _prop_text(node).lower()
                    if value not in ("true", "false"):
                        raise DavError(400, "agenda:refuse-conflicts is true or false")
                    record["refuse_conflicts"] = value == "true"
                elif key is not None:
                    record[key] = None if removing else _prop_text(node)
                elif node.tag.startswith(f"{{{DAV}}}") or node.tag.startswith(f"{{{CALDAV}}}"):
                    if node.tag == clark(CALDAV, "supported-calendar-component-set"):
                        if removing or "components" in record:
                            raise DavError(
                                403,
                                f"{node.tag} is set when the calendar is made",
                                condition="cannot-modify-protected-property",
                                namespace=DAV,
                            )
                        record["components"] = sorted({c.get("name", "").upper() for c in node} - {""}) or [
                            "VEVENT"
                        ]
                        continue
                    raise DavError(
                        403,
                        f"{node.tag} is protected",
                        condition="cannot-modify-protected-property",
                        namespace=DAV,
                    )
                elif removing:
                    dead.pop(node.tag, None)
                else:
                    dead[node.tag] = _prop_text(node)
    if len(dead) > _MAX_DEAD_PROPS:
        raise DavError(507, f"a calendar holds at most {_MAX_DEAD_PROPS} custom properties")
    record["dead"] = dead
    return changed


def _proppatch(target: Target) -> flask.Response:
    me = current_user()
    if target.kind != "calendar":
        raise DavError(
            403,
            "only calendars have properties to change",
            condition="cannot-modify-protected-property",
            namespace=DAV,
        )
    request = _body()
    if request is None or request.tag != clark(DAV, "propertyupdate"):
        raise DavError(400, "a PROPPATCH body must be a DAV:propertyupdate")
    kv = _deps().store.db.get(calendar_key(me, target.calendar))
    record = dict(_require_calendar(me, target.calendar) if kv is None else kv["value"])
    changed = _apply_props(record, request)
    _deps().store.db.put(
        calendar_key(me, target.calendar), record, prev_revision=0 if kv is None else kv["mod_revision"]
    )
    result = PropStat(_calendar_href(me, target.calendar), found=[ET.Element(t) for t in changed])
    return _multistatus([result])


# ------------------------------------------------------------------------------------ MKCALENDAR


def _mkcalendar(target: Target) -> flask.Response:
    me = current_user()
    if target.kind != "calendar":
        raise DavError(
            403, "calendars are made inside your calendar home", condition="calendar-collection-location-ok"
        )
    if target.calendar == DEFAULT_CALENDAR:  # exists without a record; any other is checked by the put
        raise DavError(
            405,
            f"the calendar {target.calendar!r} exists already",
            condition="resource-must-be-null",
            namespace=DAV,
        )
    if len(_calendars(me)) > _MAX_CALENDARS:
        raise DavError(507, f"a user has at most {_MAX_CALENDARS} calendars")
    record: dict[str, Any] = {"displayname": target.calendar, "created": format_time(_deps().clock())}
    request = _body()
    if request is not None:
        for update in request:
            if update.tag == clark(DAV, "set"):
                holder = element(clark(DAV, "propertyupdate"), children=[update])
                _apply_props(record, holder)
    try:
        _deps().store.db.put(calendar_key(me, target.calendar), record, prev_revision=0)
    except RevisionMismatch:
        raise DavError(
            405,
            f"the calendar {target.calendar!r} exists already",
            condition="resource-must-be-null",
            namespace=DAV,
        ) from None
    if flask.request.method == "MKCOL":
        return _xml_response(b"", 201, {"Location": _calendar_href(me, target.calendar)})
    return flask.Response(
        status=201, headers={"Location": _calendar_href(me, target.calendar), "Content-Length": "0"}
    )


# ----------------------------------------------------------------------------------------- GET


def _get(target: Target) -> flask.Response:
    me = current_user()
    if target.kind == "calendar":
        record = _require_calendar(me, target.calendar)
        text = to_ical(_members(me, target.calendar), now=_deps().clock(), name=record.get("displayname"))
        return flask.Response(text.encode(), content_type=_ICS)
    if target.kind != "object":
        return flask.Response(
            f"Agenda Distribuida CalDAV: {flask.request.path}\n".encode(),
            content_type="text/plain; charset=utf-8",
        )
    event = _find(target)
    if event is None:
        raise DavError(404, "no such calendar object")
    body = _render(event, me, inbox=target.calendar == INBOX)
    response = flask.Response(b"" if flask.request.method == "HEAD" else body, content_type=_ICS)
    response.headers["ETag"] = _etag(event)
    response.headers["Schedule-Tag"] = _schedule_tag(event)
    response.headers["Content-Length"] = str(len(body))
    return response


# ----------------------------------------------------------------------------------------- PUT


def _check_preconditions(current: Event | None) -> None:
    if_match = flask.request.headers.get("If-Match")
    if_none_match = flask.request.headers.get("If-None-Match")
    if if_none_match is not None and if_none_match.strip() == "*" and current is not None:
        raise DavError(412, "the resource exists (If-None-Match: *)", namespace=DAV)
    if if_none_match is not None and current is not None and _etag(current) in _etags(if_none_match):
        raise DavError(412, "the resource still has that ETag (If-None-Match)", namespace=DAV)
    if if_match is not None:
        if current is None:
            raise DavError(412, "the resource does not exist (If-Match)", namespace=DAV)
        if if_match.strip() != "*" and _etag(current) not in _etags(if_match):
            raise DavError(412, "the resource changed: its ETag no longer matches If-Match", namespace=DAV)


def _check_schedule_tag(current: Event | None) -> None:
    wanted = flask.request.headers.get("If-Schedule-Tag-Match")
    if wanted is not None and (current is None or wanted.strip() != _schedule_tag(current)):
        raise DavError(412, "the organizer changed the event since (If-Schedule-Tag-Match)", namespace=DAV)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _put(target: Target) -> flask.Response:
    me = current_user()
    if target.kind != "object":
        raise DavError(405, "PUT a calendar object into a calendar")
    record = _require_calendar(me, target.calendar)
    if record.get("box"):
        raise DavError(
            403, "the scheduling boxes are the server's to fill", condition="supported-calendar-component"
        )
    if "VEVENT" not in (record.get("components") or ["VEVENT"]):
        raise DavError(
            403,
            "this calendar was made for other components than VEVENT",
            condition="supported-calendar-component",
        )
    content_type = flask.request.mimetype
    if content_type not in ("text/calendar", "", "application/octet-stream"):
        raise DavError(
            415,
            f"calendar objects are text/calendar, not {content_type}",
            condition="supported-calendar-data",
        )
    try:
        parsed = parse_object(flask.request.get_data(cache=True), timezone=_deps().timezone_of(me))
    except UnsupportedComponent as exc:
        raise DavError(403, f"{exc.field} {exc.reason}", condition="supported-calendar-component") from None
    except ICalError as exc:
        raise DavError(400, f"{exc.field} {exc.reason}", condition="valid-calendar-data") from None
    if parsed.recurrence_problem:
        raise DavError(
            403,
            f"VEVENT.RRULE {parsed.recurrence_problem}",
            condition="valid-calendar-object-resource",
        )
    current = _find(target)
    _check_preconditions(current)
    _check_schedule_tag(current)
    if current is not None and current.organizer != me:
        stored = _attendee_put(current, me, parsed.attendees.get(me))
        return _put_answer(stored, 204)
    stored = _organizer_put(
        target, me, parsed, current, refuse_conflicts=bool(record.get("refuse_conflicts"))
    )
    return _put_answer(stored, 204 if current is not None else 201)


def _put_answer(event: Event, status: int) -> flask.Response:
    return flask.Response(
        status=status,
        headers={"ETag": _etag(event), "Schedule-Tag": _schedule_tag(event), "Content-Length": "0"},
    )


def _attendee_put(current: Event, me: str, answer: PartStat | None) -> Event:
    """An attendee's PUT: their own PARTSTAT is their answer; anything else is the organizer's to change."""
    if answer is None or answer is PartStat.NEEDS_ACTION or answer is current.partstat(me):
        return current

    def mutate(event: Event) -> Change | None:
        revised, notes = apply_response(event, me, answer, now=_deps().clock())
        if revised is event:
            return None
        refuse = bool((_calendar_record(me, DEFAULT_CALENDAR) or {}).get("refuse_conflicts"))
        return Change(revised, notes, (me,) if answer is PartStat.ACCEPTED and refuse else ())

    with _deps().store.booking(me if answer is PartStat.ACCEPTED else None):
        return _conflict_checked(lambda: _deps().store.update(current.id, mutate))


def _conflict_checked(run: Callable[[], Event]) -> Event:
    try:
        return run()
    except EventConflict as exc:
        raise DavError(
            409,
            f"{exc.user} already has commitments at that time ({', '.join(exc.conflicts)}); "
            "move the event or decline the other one",
            condition="no-conflict",
            namespace=AGENDA,
        ) from None


def _participants(parsed_attendees: dict[str, PartStat], old: Event | None) -> dict[str, Participation]:
    """Our users among the ATTENDEEs: new ones are invited; known ones keep their own answer."""
    kept = {} if old is None else dict(old.participants)
    return {user: kept.get(user, Participation()) for user in parsed_attendees}


def _organizer_put(
    target: Target, me: str, parsed: CalendarObject, current: Event | None, *, refuse_conflicts: bool
) -> Event:
    store = _deps().store
    now = _deps().clock()
    calendar = "" if target.calendar == DEFAULT_CALENDAR else target.calendar
    if current is not None and current.uid and current.uid != parsed.uid:
        raise DavError(
            409, "a calendar object's UID cannot change; PUT it under a new name", condition="no-uid-conflict"
        )
    missing = store.missing_users(sorted(parsed.attendees))
    attendees = {u: s for u, s in parsed.attendees.items() if u not in missing and u != me}
    if len(attendees) > MAX_INVITEES:
        raise DavError(403, f"an event has at most {MAX_INVITEES} attendees from this server")
    uid_entry = uid_key(me, target.calendar, parsed.uid)
    event_id = current.id if current is not None else _dav_id(me, target.calendar, target.name)
    fields = {
        "title": parsed.title,
        "start": parsed.start,
        "end": parsed.end,
        "description": parsed.description,
        "location": parsed.location,
        "visibility": parsed.visibility,
        "recurrence": parsed.recurrence,
        "overrides": parsed.overrides,
        "uid": parsed.uid,
        "ical": parsed.text,
        "calendar": calendar,
        "dav_name": target.name,
    }
    holder = store.db.get(uid_entry)
    if holder is not None and holder["value"].get("event") != event_id:
        raise DavError(
            409,
            f"another resource in this calendar has the UID {parsed.uid!r}",
            condition="no-uid-conflict",
            hrefs=[_uid_holder_href(me, target.calendar, holder["value"].get("event", ""))],
        )
    uid_guard = txn_compare(uid_entry, "mod_revision", "eq", 0 if holder is None else holder["mod_revision"])
    uid_op = txn_put(uid_entry, {"event": event_id})

    def mutate(old: Event | None) -> Change | None:
        if old is None:
            participants = _participants(attendees, None)
            event = Event(
                id=event_id,
                organizer=me,
                created=now,
                updated=now,
                kind=EventKind.APPOINTMENT if participants else EventKind.PERSONAL,
                participants=participants,
                status=EventStatus.CANCELLED
                if parsed.status is EventStatus.CANCELLED
                else EventStatus.CONFIRMED,
                **fields,
            )
            notes = invitation_notifications(event, now)
            check = (me,) if refuse_conflicts else ()
            return Change(event, notes, check, extra_ops=[uid_op], extra_compare=[uid_guard])
        if old.organizer != me:
            raise DavError(403, "only the organizer may change this event")
        changes = dict(fields)
        if old.kind is not EventKind.GROUP:
            changes["participants"] = _participants(attendees, old)
            changes["kind"] = EventKind.APPOINTMENT if changes["participants"] else EventKind.PERSONAL
        if all(getattr(old, k) == v for k, v in changes.items()):
            return None
        revised = old.revised(now, **changes)
        invited = [u for u in revised.participants if u not in old.participants]
        notes = change_notifications(revised, me, now)
        if invited:
            notes += [n for n in invitation_notifications(revised, now) if n.user in invited]
        moved = (revised.start, revised.end) != (old.start, old.end)
        check = (me,) if moved and refuse_conflicts else ()
        return Change(revised, notes, check, extra_ops=[uid_op], extra_compare=[uid_guard])

    with store.booking(me if refuse_conflicts else None):
        if current is None:
            return _conflict_checked(lambda: store.create(lambda: mutate(None), event_id=event_id))  # type: ignore[arg-type,return-value]
        return _conflict_checked(lambda: store.update(event_id, mutate))


def _uid_holder_href(me: str, calendar: str, event_id: str) -> str:
    try:
        event, _ = _deps().store.get_event(event_id)
    except EventNotFound:
        return _calendar_href(me, calendar)
    placement = _placement(event, me)
    return _calendar_href(me, calendar) if placement is None else _object_href(me, *placement)


# -------------------------------------------------------------------------------------- DELETE


def _delete(target: Target) -> flask.Response:
    me = current_user()
    if target.kind == "calendar":
        return _delete_calendar(me, target.calendar)
    if target.kind != "object":
        raise DavError(403, "only calendars and calendar objects can be deleted")
    current = _find(target)
    if current is None:
        raise DavError(404, "no such calendar object")
    _check_preconditions(current)
    if target.calendar == INBOX:
        _deps().store.db.put(inbox_key(me, current.id), {"sequence": current.sequence})
        return flask.Response(status=204)
    if current.organizer == me:
        _remove(current, me)
    else:
        _attendee_put(current, me, PartStat.DECLINED)  # RFC 6638 3.2.2.3: an attendee's delete declines
    return flask.Response(status=204)


def _remove(event: Event, me: str) -> None:
    def decide(current: Event) -> list[Any]:
        if current.organizer != me:
            raise DavError(403, "only the organizer may delete this event")
        return list(cancel_event(current, me, now=_deps().clock())[1])

    def uid_ops(current: Event) -> list[dict[str, Any]]:
        if not current.uid:
            return []
        return [txn_delete(uid_key(me, current.calendar or DEFAULT_CALENDAR, current.uid))]

    try:
        _deps().store.remove(event.id, decide, extra_ops=uid_ops)
    except EventNotFound:
        raise DavError(404, "no such calendar object") from None


def _delete_calendar(me: str, calendar: str) -> flask.Response:
    if calendar == DEFAULT_CALENDAR:
        raise DavError(403, "the default calendar cannot be deleted; delete its events instead")
    _require_calendar(me, calendar)
    for event in _members(me, calendar):
        if event.organizer == me:
            _remove(event, me)
    _deps().store.db.delete(calendar_key(me, calendar))
    return flask.Response(status=204)


# -------------------------------------------------------------------------------------- REPORT


def _report(target: Target) -> flask.Response:
    me = current_user()
    request = _body()
    if request is None:
        raise DavError(400, "a REPORT needs a body naming the report")
    if request.tag == clark(DAV, "sync-collection"):
        return _sync_collection(target, me, request)
    if request.tag == clark(CALDAV, "calendar-multiget"):
        return _multiget(target, me, request)
    if request.tag == clark(CALDAV, "calendar-query"):
        return _calendar_query(target, me, request)
    if request.tag == clark(CALDAV, "free-busy-query"):
        return _free_busy(target, me, request)
    if request.tag == clark(DAV, "principal-property-search"):
        return _principal_search(me, request)
    if request.tag == clark(DAV, "principal-search-property-set"):
        return _xml_response(_search_property_set(), 200)
    raise DavError(
        403, f"the report {request.tag} is not supported", condition="supported-report", namespace=DAV
    )


_SEARCHABLE: Final = (clark(DAV, "displayname"), clark(CALDAV, "calendar-user-address-set"))


def _search_property_set() -> bytes:
    root = element(clark(DAV, "principal-search-property-set"))
    for tag in _SEARCHABLE:
        prop = element(clark(DAV, "prop"), children=[ET.Element(tag)])
        root.append(element(clark(DAV, "principal-search-property"), children=[prop]))
    return serialise(root)


def _principal_search(me: str, request: ET.Element) -> flask.Response:
    """RFC 3744 9.4, private by design: the caller finds themselves by any part of their name, and
    another user only by their exact username or address (enough to invite someone you know; the
    accounts cannot be listed). A search without conditions lists the caller alone."""
    conditions = []
    for search in request.findall(clark(DAV, "property-search")):
        match = (search.findtext(clark(DAV, "match")) or "").strip()
        tags = [node.tag for node in search.findall(f"{clark(DAV, 'prop')}/*")]
        if not tags or any(tag not in _SEARCHABLE for tag in tags):
            raise DavError(400, "searchable properties are displayname and calendar-user-address-set")
        conditions.append(match)
    anyof = request.get("test", "allof") == "anyof"
    candidates = {me}
    for match in conditions:
        user = match.lower().removeprefix("mailto:").split("@")[0]
        if re.fullmatch(r"[a-z0-9_.-]{3,32}", user) and _deps().store.get_user(user) is not None:
            candidates.add(user)

    def hit(user: str, match: str) -> bool:
        if user == me:
            return match.casefold() in f"{user} {user_address(user)}".casefold()
        return match.lower().removeprefix("mailto:") in (user, user_address(user).removeprefix("mailto:"))

    found = [
        u
        for u in sorted(candidates)
        if not conditions or (any if anyof else all)(hit(u, m) for m in conditions)
    ]
    # The `caldav` library puts the wanted properties beside an empty DAV:prop rather than inside it:
    # take them from either place.
    structural = {
        clark(DAV, "property-search"),
        clark(DAV, "prop"),
        clark(DAV, "apply-to-principal-collection-set"),
    }
    wanted = [*request.findall(f"{clark(DAV, 'prop')}/*"), *(n for n in request if n.tag not in structural)]
    props = element(clark(DAV, "propfind"), children=[element(clark(DAV, "prop"), children=wanted)])
    return _multistatus([_propstat(_principal(u), _principal_props(u, me), props) for u in found])


def _prop_request(request: ET.Element) -> tuple[ET.Element | None, ET.Element | None]:
    """(the DAV:prop/allprop part of a report, the calendar-data element within it)."""
    prop = request.find(clark(DAV, "prop"))
    if prop is None:
        return (request if request.find(clark(DAV, "allprop")) is not None else None), None
    holder = element(clark(DAV, "propfind"), children=[prop])
    return holder, prop.find(clark(CALDAV, "calendar-data"))


def _in_calendar(target: Target) -> None:
    if target.kind == "box" and target.calendar == INBOX:
        return
    if target.kind != "calendar":
        raise DavError(403, "this report runs on a calendar", condition="supported-report", namespace=DAV)
    _require_calendar(target.user, target.calendar)


def _multiget(target: Target, me: str, request: ET.Element) -> flask.Response:
    if target.kind not in ("calendar", "home", "box"):
        raise DavError(
            403, "calendar-multiget runs on a calendar", condition="supported-report", namespace=DAV
        )
    props, data = _prop_request(request)
    responses = []
    for node in request.findall(clark(DAV, "href")):
        href = (node.text or "").strip()
        path = urlsplit(href).path
        try:
            found = _target(path)
            event = _find(found) if found.kind == "object" and found.user == me else None
        except DavError:
            event = None
        if event is None:
            responses.append(PropStat(href, status=404))
        else:
            responses.append(
                _propstat(href, _object_props(me, event, data, inbox=found.calendar == INBOX), props)
            )
    return _multistatus(responses)


def _calendar_query(target: Target, me: str, request: ET.Element) -> flask.Response:
    _in_calendar(target)
    props, data = _prop_request(request)
    condition = query.Filter.parse(request.find(clark(CALDAV, "filter")))
    window = condition.time_range()
    candidates: list[Event]
    if window is not None and window.start is not None and window.end is not None:
        # The store's window read finds the series that may recur there too (its series index).
        candidates = _members(me, target.calendar, window.start, window.end)
    else:
        candidates = _members(me, target.calendar)
    if window is not None:
        # The domain's own times say which events cannot be in the range (they are derived from the
        # stored object by the same RFC rules): only the others are rendered and filtered.
        start, end = window.window()
        candidates = [e for e in candidates if expand([e], start, end)]
    responses = []
    for event in candidates:
        if condition.matches(_parsed(event, me, inbox=target.calendar == INBOX)):
            name = _href_name(event, me, target.calendar)
            inbox = target.calendar == INBOX
            responses.append(
                _propstat(
                    _object_href(me, target.calendar, name),
                    _object_props(me, event, data, inbox=inbox),
                    props,
                )
            )
    return _multistatus(responses)


def _free_busy(target: Target, me: str, request: ET.Element) -> flask.Response:
    _in_calendar(target)
    node = request.find(clark(CALDAV, "time-range"))
    if node is None:
        raise DavError(400, "free-busy-query needs a time-range")
    start, end = query.TimeRange.parse(node).window()
    calendar = new_calendar()
    calendar.add_component(_busy(me, _members(me, target.calendar, start, end), start, end))
    return flask.Response(calendar.to_ical(), content_type=_ICS)


def _busy(user: str, events: Iterable[Event], start: datetime, end: datetime) -> icalendar.FreeBusy:
    """A VFREEBUSY of `user`'s busy periods in [start, end) among `events` (series expanded)."""
    busy = icalendar.FreeBusy()
    busy.add("DTSTAMP", _deps().clock())
    busy.add("DTSTART", start)
    busy.add("DTEND", end)
    for interval in busy_intervals(user, expand(events, start, end)):
        busy.add("FREEBUSY", (max(interval.start, start), min(interval.end, end)))
    return busy


def _sync_collection(target: Target, me: str, request: ET.Element) -> flask.Response:
    """RFC 6578 on a calendar (or the inbox): everything, or what changed since a token (a revision)."""
    _in_calendar(target)
    props, data = _prop_request(request)
    token_text = (request.findtext(clark(DAV, "sync-token")) or "").strip()
    level = (request.findtext(clark(DAV, "sync-level")) or "1").strip()
    if level not in ("1", "infinite"):
        raise DavError(400, "sync-level must be 1")
    calendar = target.calendar
    inbox = calendar == INBOX

    def member(event: Event) -> PropStat:
        href = _object_href(me, calendar, _href_name(event, me, calendar))
        return _propstat(href, _object_props(me, event, data, inbox=inbox), props)

    if not token_text:
        entries, revision = _entries(me, calendar)
        return _multistatus([member(e) for e, _ in entries], sync_token=f"{_SYNC_PREFIX}{revision}")
    since = _parse_token(token_text)
    try:
        changes = _deps().store.db.watch(agenda_prefix(me), since, timeout=0)
    except Compacted:
        raise DavError(
            403,
            "the sync token is older than the history kept; sync from scratch",
            condition="valid-sync-token",
            namespace=DAV,
        ) from None
    last: dict[str, dict[str, Any]] = {}
    for change in changes.get("events", []):
        event_id = change["kv"]["key"].rsplit("/", 1)[1]
        last[event_id] = change["kv"].get("value") or {}
    is_member = _member_of(me, calendar)
    responses = []
    for event_id, value in sorted(last.items()):
        try:
            event: Event | None = _deps().store.get_event(event_id)[0]
        except EventNotFound:
            event = None
        if event is not None and is_member(event):
            responses.append(member(event))
            continue
        before = (
            _object_href(me, calendar, f"{event_id}.ics")
            if inbox
            else _removed_href(value, event_id, me, calendar)
        )
        if before is not None:
            responses.append(PropStat(before, status=404))
    return _multistatus(responses, sync_token=f"{_SYNC_PREFIX}{int(changes['revision'])}")


def _parse_token(text: str) -> int:
    if not text.startswith(_SYNC_PREFIX) or not text[len(_SYNC_PREFIX) :].isdigit():
        raise DavError(403, "not a sync token this server gave", condition="valid-sync-token", namespace=DAV)
    return int(text[len(_SYNC_PREFIX) :])


def _removed_href(value: dict[str, Any], event_id: str, me: str, calendar: str) -> str | None:
    """Where a removed (or moved away) event was in this calendar, from its last known record."""
    try:
        event = Event.from_dict(value)
    except (ValueError, KeyError, TypeError):
        return _object_href(me, calendar, f"{event_id}.ics")
    if event.organizer == me:
        if (event.calendar or DEFAULT_CALENDAR) != calendar:
            return None
        return _object_href(me, calendar, event.dav_name or f"{event.id}.ics")
    return _object_href(me, calendar, f"{event.id}.ics") if calendar == DEFAULT_CALENDAR else None


# ------------------------------------------------------------------------------- outbox (RFC 6638)


def _post(target: Target) -> flask.Response:
    """A free-busy request POSTed to the schedule outbox (RFC 6638 5): each attendee's busy time.

    Invitations need no POST: the server schedules implicitly when the organizer PUTs the event. Only
    busy periods are told, never what the events are, as a shared calendar's free-busy view does.
    """
    me = current_user()
    if target.kind != "box" or target.calendar != OUTBOX:
        raise DavError(405, "POST goes to your schedule outbox")
    body = flask.request.get_data(cache=True)
    if len(body) > MAX_OBJECT_BYTES:
        raise DavError(413, f"the request must be at most {MAX_OBJECT_BYTES} bytes")
    try:
        message = icalendar.Calendar.from_ical(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, KeyError, IndexError) as exc:
        raise DavError(
            400, f"the iTIP message is not valid iCalendar: {str(exc)[:200]}", condition="valid-calendar-data"
        ) from None
    requests = [c for c in message.subcomponents if c.name == "VFREEBUSY"]
    if str(message.get("METHOD", "")).upper() != "REQUEST" or len(requests) != 1:
        raise DavError(
            403,
            "the outbox takes free-busy requests (METHOD:REQUEST, one VFREEBUSY); invitations go by PUT",
            condition="valid-scheduling-message",
        )
    request = requests[0]
    if address_user(str(request.get("ORGANIZER", "")), DEFAULT_DOMAIN) != me:
        raise DavError(403, "ORGANIZER must be your own address", condition="organizer-allowed")
    try:
        start = to_utc(request["DTSTART"].dt, "DTSTART")
        end = to_utc(request["DTEND"].dt, "DTEND")
    except (KeyError, ValueError, AttributeError):
        raise DavError(
            400,
            "the VFREEBUSY needs DTSTART and DTEND date-times with a zone",
            condition="valid-calendar-data",
        ) from None
    if not start < end <= start + MAX_QUERY_RANGE:
        raise DavError(400, f"DTEND must be after DTSTART and at most {MAX_QUERY_RANGE.days} days later")
    attendees = request.get("ATTENDEE") or []
    attendees = attendees if isinstance(attendees, list) else [attendees]
    if len(attendees) > MAX_INVITEES:
        raise DavError(
            403, f"at most {MAX_INVITEES} attendees per request", condition="max-attendees-per-instance"
        )
    root = element(clark(CALDAV, "schedule-response"))
    for attendee in attendees:
        user = address_user(str(attendee), DEFAULT_DOMAIN)
        response = element(
            clark(CALDAV, "response"),
            children=[
                element(clark(CALDAV, "recipient"), children=[element(clark(DAV, "href"), str(attendee))])
            ],
        )
        if user is None or _deps().store.get_user(user) is None:
            response.append(element(clark(CALDAV, "request-status"), "3.7;Invalid calendar user"))
        else:
            response.append(element(clark(CALDAV, "request-status"), "2.0;Success"))
            reply = _free_busy_reply(user, start, end, request, str(attendee))
            response.append(element(clark(CALDAV, "calendar-data"), reply.decode("utf-8")))
        root.append(response)
    return _xml_response(serialise(root), 200)


def _free_busy_reply(user: str, start: datetime, end: datetime, request: Any, address: str) -> bytes:
    calendar = new_calendar("REPLY")
    reply = _busy(user, _deps().store.agenda(user, start, end), start, end)
    for name in ("UID", "ORGANIZER"):
        if name in request:
            reply.add(name, request[name])
    reply.add("ATTENDEE", address)
    calendar.add_component(reply)
    return calendar.to_ical()  # type: ignore[no-any-return]


_HANDLERS: Final[dict[str, Callable[[Target], Any]]] = {
    "POST": _post,
    "PROPFIND": _propfind,
    "PROPPATCH": _proppatch,
    "MKCALENDAR": _mkcalendar,
    "MKCOL": _mkcalendar,
    "GET": _get,
    "HEAD": _get,
    "PUT": _put,
    "DELETE": _delete,
    "REPORT": _report,
}


def dav_blueprint(app: flask.Flask, deps: DavDeps) -> None:
    """Serve CalDAV from `app` (the User Service) with `deps`."""
    app.extensions["agenda.dav"] = deps
    app.register_blueprint(dav_bp)
