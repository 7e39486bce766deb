"""iCalendar (RFC 5545) in and out, through the `icalendar` library.

Two directions:

* **Out.** `to_ical` is a user's whole calendar (the ``calendar.ics`` export, METHOD:PUBLISH);
  `calendar_object` is one event as a CalDAV calendar object resource (RFC 4791 section 4.1: one
  VCALENDAR, one UID, no METHOD).
* **In.** `parse_object` reads a calendar object a CalDAV client PUT: it checks what RFC 4791 requires
  of one (a VCALENDAR holding VEVENTs that share one UID), and derives the domain's fields from it.

An event created through CalDAV keeps the client's object (`Event.ical`, re-serialised by the library,
so it is well-formed): alarms, categories, colours, X- properties and the client's time zones are the
client's data and must come back unchanged. The domain owns a few fields (times, title, attendees and
their answers, status, sequence), which can change later through the JSON API or another user's answer.
So `calendar_object` starts from the stored object and overwrites a property only where the event now
differs from what the stored object says; an untouched event comes back exactly as it was stored.

Everything derived from an object is a pure function of it (`parse_object`), which is what makes that
comparison sound: "what the stored object says" is `parse_object(stored)`, computed the same way as when
it was stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import icalendar

from agenda.domain.model import Event, EventStatus, Participation, PartStat, Visibility, format_time, to_utc
from agenda.domain.recurrence import (
    MAX_EXDATES,
    MAX_OVERRIDES,
    MAX_RDATES,
    Override,
    Recurrence,
    horizon_end,
    occurrence_times,
    original_starts,
    parse_rrule,
)
from agenda.domain.validation import (
    MAX_DESCRIPTION,
    MAX_EVENT_DURATION,
    MAX_LOCATION,
    MAX_TITLE,
    ValidationError,
)

__all__ = [
    "DEFAULT_DOMAIN",
    "MAX_OBJECT_BYTES",
    "PRODID",
    "CalendarObject",
    "ICalError",
    "UnsupportedComponent",
    "address_user",
    "calendar_object",
    "new_calendar",
    "parse_object",
    "to_ical",
    "user_address",
]

PRODID: Final = "-//Agenda Distribuida//Agenda 1.0//EN"
# .invalid (RFC 2606) can never be a real domain, so our UIDs and addresses cannot clash with others'.
DEFAULT_DOMAIN: Final = "agenda.invalid"
# One calendar object resource. A meeting with alarms and a long description is a few KiB; the cap keeps
# one event's copies (one per involved user, in one DB transaction) far below the DB's limits.
MAX_OBJECT_BYTES: Final = 64 * 1024
# Components in one object: a series with this many overridden occurrences is already unusual.
MAX_COMPONENTS: Final = 200
UNTITLED: Final = "(no title)"

_PARTSTAT: Final = {
    PartStat.NEEDS_ACTION: "NEEDS-ACTION",
    PartStat.ACCEPTED: "ACCEPTED",
    PartStat.DECLINED: "DECLINED",
    PartStat.TENTATIVE: "TENTATIVE",
}
_PARTSTAT_IN: Final = {text: stat for stat, text in _PARTSTAT.items()} | {"DELEGATED": PartStat.DECLINED}
_STATUS: Final = {
    EventStatus.CONFIRMED: "CONFIRMED",
    EventStatus.TENTATIVE: "TENTATIVE",
    EventStatus.CANCELLED: "CANCELLED",
}
_STATUS_IN: Final = {text: status for status, text in _STATUS.items()}
_CLASS: Final = {Visibility.PRIVATE: "PRIVATE", Visibility.PUBLIC: "PUBLIC"}

# TEXT may hold any character but controls (tab and line breaks aside); the library does not drop them.
_TEXT_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAKS: Final = re.compile(r"\s*[\r\n]+\s*")
# Components a calendar object may hold besides its VEVENTs (RFC 4791 section 4.1).
_ALLOWED_COMPONENTS: Final = frozenset({"VEVENT", "VTIMEZONE"})


class ICalError(ValidationError):
    """An iCalendar body we cannot store; `field` names the component or property (``VEVENT.DTSTART``)."""


class UnsupportedComponent(ICalError):  # noqa: N818 - reads as the condition callers handle
    """A component other than VEVENT and VTIMEZONE (a VTODO, a VJOURNAL): well-formed, not ours to store."""


def user_address(user: str, domain: str = DEFAULT_DOMAIN) -> str:
    """`user`'s calendar user address. Usernames are [a-z0-9_.-], safe in a mailto URI."""
    return f"mailto:{user}@{domain}"


def address_user(address: str, domain: str = DEFAULT_DOMAIN) -> str | None:
    """The username behind one of our calendar user addresses, or None for anyone else's."""
    text = str(address).strip()
    if text[:7].lower() != "mailto:":
        return None
    local, at, host = text[7:].rpartition("@")
    if not at or host.lower() != domain.lower() or not re.fullmatch(r"[a-z0-9_.-]{3,32}", local.lower()):
        return None
    return local.lower()


def _text(value: str) -> str:
    return _TEXT_CONTROLS.sub("", value)


# ------------------------------------------------------------------------------------------- in


@dataclass(frozen=True)
class CalendarObject:
    """What a stored calendar object says in the domain's terms (see the module's docstring).

    `attendees` are our users among its ATTENDEEs (the organizer excluded) with their PARTSTAT;
    `organizer` is the ORGANIZER's username when it is one of ours, None when absent or foreign.
    `recurring` is true when the master carries RRULE or RDATE, or overridden occurrences exist: the
    domain's times are then the series' first occurrence. `recurrence` and `overrides` are the series
    in the domain's terms (`agenda.domain.recurrence`) when the domain can hold it: one RRULE it accepts
    (at most daily, COUNT <= 1000...), its RDATEs and EXDATEs, and an `Override` per RECURRENCE-ID
    VEVENT saying what differs from the master (times, text, STATUS:CANCELLED, our attendees' answers);
    None and {} otherwise (the object is still stored whole, and kept as written).
    """

    uid: str
    title: str
    start: datetime
    end: datetime
    all_day: bool
    description: str
    location: str
    visibility: Visibility
    status: EventStatus
    sequence: int
    organizer: str | None
    attendees: Mapping[str, PartStat] = field(default_factory=dict)
    recurring: bool = False
    text: str = ""
    recurrence: Recurrence | None = None
    overrides: Mapping[str, Override] = field(default_factory=dict)
    # Why a master's RRULE/RDATE is more than the domain can hold ("" when it can, or has none): the
    # CalDAV server refuses such an object rather than keep occurrences its agenda would not see.
    recurrence_problem: str = ""


def _fail(where: str, reason: str) -> ICalError:
    return ICalError(where, reason)


def _as_utc(value: date | datetime, zone: tzinfo, where: str) -> datetime:
    """A DATE or DATE-TIME as UTC: a DATE is midnight and a floating time is wall time, in `zone`."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    try:
        return to_utc(value, where)
    except (ValueError, OverflowError) as exc:
        raise _fail(where, f"is not a usable time: {exc}") from None


def _one_line(value: Any, limit: int) -> str:
    return _LINE_BREAKS.sub(" ", _text(str(value))).strip()[:limit]


def _times(vevent: icalendar.Event, zone: tzinfo) -> tuple[datetime, datetime, bool]:
    dtstart = vevent.get("DTSTART")
    if dtstart is None:
        raise _fail("VEVENT.DTSTART", "is required")
    first = dtstart.dt
    all_day = not isinstance(first, datetime)
    start = _as_utc(first, zone, "VEVENT.DTSTART")
    if vevent.get("DTEND") is not None:
        if vevent.get("DURATION") is not None:
            raise _fail("VEVENT.DURATION", "must not be given together with DTEND")
        end = _as_utc(vevent["DTEND"].dt, zone, "VEVENT.DTEND")
        where = "VEVENT.DTEND"
    elif vevent.get("DURATION") is not None:
        duration = vevent["DURATION"].dt
        if not isinstance(duration, timedelta):
            raise _fail("VEVENT.DURATION", "must be a duration")
        end = start + duration
        where = "VEVENT.DURATION"
    else:
        # RFC 5545 3.6.1: a day without an end lasts the day; a time without one, no time at all.
        # The domain has no zero-length events (they would never conflict), so it lasts one second.
        end = start + (timedelta(days=1) if all_day else timedelta(seconds=1))
        where = "VEVENT.DTSTART"
    if end <= start:
        raise _fail(where, "must end after DTSTART")
    if end - start > MAX_EVENT_DURATION:
        raise _fail(where, f"must end at most {MAX_EVENT_DURATION.days} days after DTSTART")
    return start, end, all_day


def _addresses(vevent: icalendar.Event, name: str) -> list[Any]:
    found = vevent.get(name)
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return UTC


def parse_object(data: bytes | str, *, domain: str = DEFAULT_DOMAIN, timezone: str = "UTC") -> CalendarObject:
    """Check a calendar object resource and derive its fields; ICalError says what is wrong.

    `timezone` (the owner's) places all-day and floating times. The size is checked first, before the
    library reads anything, so an oversized body costs nothing.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_OBJECT_BYTES:
        raise _fail("VCALENDAR", f"must be at most {MAX_OBJECT_BYTES} bytes, got {len(raw)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail("VCALENDAR", f"must be UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _fail("VCALENDAR", f"is not valid iCalendar: {str(exc)[:200]}") from None
    if not isinstance(calendar, icalendar.Calendar) or calendar.name != "VCALENDAR":
        raise _fail("VCALENDAR", "the body must be one VCALENDAR")
    if len(calendar.subcomponents) > MAX_COMPONENTS:
        raise _fail("VCALENDAR", f"must hold at most {MAX_COMPONENTS} components")
    if "METHOD" in calendar:
        raise _fail("VCALENDAR.METHOD", "a stored calendar object must not carry METHOD (RFC 4791 4.1)")
    for component in calendar.subcomponents:
        if component.name not in _ALLOWED_COMPONENTS:
            raise UnsupportedComponent(
                component.name or "VCALENDAR", "only VEVENT (and VTIMEZONE) components are supported here"
            )
    vevents = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    if not vevents:
        raise _fail("VEVENT", "the calendar object must hold a VEVENT")
    uids = {str(v.get("UID", "")).strip() for v in vevents}
    if len(uids) != 1 or "" in uids:
        raise _fail("VEVENT.UID", "every VEVENT must carry the same, non-empty UID")
    uid = uids.pop()
    if len(uid) > 255 or _TEXT_CONTROLS.search(uid) or "\n" in uid or "\r" in uid:
        raise _fail("VEVENT.UID", "must be one line of at most 255 characters")
    masters = [v for v in vevents if v.get("RECURRENCE-ID") is None]
    if len(masters) > 1:
        raise _fail("VEVENT.RECURRENCE-ID", "only one VEVENT may lack RECURRENCE-ID")
    # An object holding only overridden occurrences (an invitation to one occurrence) has no master:
    # the domain then sees its first overridden occurrence.
    main = masters[0] if masters else min(vevents, key=lambda v: _as_utc(v["DTSTART"].dt, UTC, "x"))
    zone = _zone(timezone)
    start, end, all_day = _times(main, zone)
    for other in vevents:
        if other is not main:
            _times(other, zone)  # every occurrence must be well-formed too
    try:
        sequence = int(main.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        raise _fail("VEVENT.SEQUENCE", "must be an integer") from None
    status = _STATUS_IN.get(str(main.get("STATUS", "CONFIRMED")).upper(), EventStatus.CONFIRMED)
    visibility = Visibility.PUBLIC if str(main.get("CLASS", "")).upper() == "PUBLIC" else Visibility.PRIVATE
    organizer_prop = main.get("ORGANIZER")
    organizer = None if organizer_prop is None else address_user(str(organizer_prop), domain)
    attendees: dict[str, PartStat] = {}
    for prop in _addresses(main, "ATTENDEE"):
        user = address_user(str(prop), domain)
        if user is None or user == organizer:
            continue
        partstat = str(getattr(prop, "params", {}).get("PARTSTAT", "NEEDS-ACTION")).upper()
        attendees[user] = _PARTSTAT_IN.get(partstat, PartStat.NEEDS_ACTION)
    recurring = bool(len(vevents) > 1 or main.get("RRULE") is not None or main.get("RDATE") is not None)
    recurrence, overrides, problem = _series_of(main, vevents, zone, timezone, domain, organizer, attendees)
    return CalendarObject(
        uid=uid,
        title=_one_line(main.get("SUMMARY", ""), MAX_TITLE) or UNTITLED,
        start=start,
        end=end,
        all_day=all_day,
        description=_text(str(main.get("DESCRIPTION", "")))[:MAX_DESCRIPTION],
        location=_one_line(main.get("LOCATION", ""), MAX_LOCATION),
        visibility=visibility,
        status=status,
        sequence=max(sequence, 0),
        organizer=organizer,
        attendees=attendees,
        recurring=recurring,
        text=calendar.to_ical().decode("utf-8"),
        recurrence=recurrence,
        overrides=overrides,
        recurrence_problem=problem,
    )


def _dates(vevent: icalendar.Event, name: str, zone: tzinfo) -> list[datetime]:
    """Every value of RDATE or EXDATE (any number of lines, each a list) as UTC; a PERIOD by its start."""
    found = vevent.get(name)
    if found is None:
        return []
    out = []
    for line in found if isinstance(found, list) else [found]:
        for value in line.dts:
            moment = value.dt[0] if isinstance(value.dt, tuple) else value.dt
            out.append(_as_utc(moment, zone, f"VEVENT.{name}"))
    return out


def _series_of(
    master: icalendar.Event,
    vevents: list[icalendar.Event],
    zone: tzinfo,
    timezone: str,
    domain: str,
    organizer: str | None,
    attendees: Mapping[str, PartStat],
) -> tuple[Recurrence | None, dict[str, Override], str]:
    """The master's recurrence and the overridden occurrences, in the domain's terms (see CalendarObject),
    and why the domain cannot hold the master's rule, when it cannot."""
    rules = master.get("RRULE")
    if master.get("RECURRENCE-ID") is not None:
        return None, {}, ""  # no master: an invitation to some occurrences only
    if isinstance(rules, list):
        return None, {}, "must have at most one RRULE"
    if rules is None and master.get("RDATE") is None:
        return None, {}, ""
    first = master["DTSTART"].dt
    tz = getattr(first, "tzinfo", None)
    # The rule follows DTSTART's zone; a floating or all-day start follows the owner's.
    zone_name = tz.key if isinstance(tz, ZoneInfo) else ("UTC" if tz is not None else timezone)
    try:
        rule = None if rules is None else parse_rrule(rules.to_ical().decode(), zone_name).text()
        rdates = _dates(master, "RDATE", zone)
        exdates = _dates(master, "EXDATE", zone)
        if len(rdates) > MAX_RDATES or len(exdates) > MAX_EXDATES:
            return None, {}, f"must have at most {MAX_RDATES} RDATEs and {MAX_EXDATES} EXDATEs"
        if rule is None and not rdates:
            return None, {}, ""
        recurrence = Recurrence(rule, tuple(rdates), tuple(exdates), zone_name)
    except ValidationError as exc:
        return None, {}, exc.reason
    except ValueError as exc:
        return None, {}, str(exc)[:200]
    start, end, _ = _times(master, zone)
    overrides: dict[str, Override] = {}
    for vevent in vevents:
        if vevent is master or len(overrides) >= MAX_OVERRIDES:
            continue
        original = _as_utc(vevent["RECURRENCE-ID"].dt, zone, "VEVENT.RECURRENCE-ID")
        moved_start, moved_end, _ = _times(vevent, zone)
        moved = (moved_start, moved_end) != (original, original + (end - start))
        texts = {
            name: value
            for name, value, master_value in (
                (
                    "title",
                    _one_line(vevent.get("SUMMARY", ""), MAX_TITLE),
                    _one_line(master.get("SUMMARY", ""), MAX_TITLE),
                ),
                (
                    "description",
                    _text(str(vevent.get("DESCRIPTION", "")))[:MAX_DESCRIPTION],
                    _text(str(master.get("DESCRIPTION", "")))[:MAX_DESCRIPTION],
                ),
                (
                    "location",
                    _one_line(vevent.get("LOCATION", ""), MAX_LOCATION),
                    _one_line(master.get("LOCATION", ""), MAX_LOCATION),
                ),
            )
            if value != master_value
        }
        answers = {}
        for prop in _addresses(vevent, "ATTENDEE"):
            user = address_user(str(prop), domain)
            if user is None or user == organizer or user not in attendees:
                continue
            partstat = str(getattr(prop, "params", {}).get("PARTSTAT", "NEEDS-ACTION")).upper()
            answer = _PARTSTAT_IN.get(partstat, PartStat.NEEDS_ACTION)
            if answer is not attendees[user]:
                answers[user] = answer
        override = Override(
            start=moved_start if moved else None,
            end=moved_end if moved else None,
            cancelled=str(vevent.get("STATUS", "")).upper() == "CANCELLED",
            partstats=answers,
            **texts,
        )
        if not override.empty:
            overrides[format_time(original)] = override
    return recurrence, overrides, ""


# ------------------------------------------------------------------------------------------ out


def _event_uid(event: Event, domain: str) -> str:
    return event.uid or f"{event.id}@{domain}"


def _address_prop(user: str, domain: str, **params: str) -> icalendar.vCalAddress:
    prop = icalendar.vCalAddress(user_address(user, domain))
    prop.params["CN"] = user
    for name, value in params.items():
        prop.params[name] = value
    return prop


def _set_times(vevent: icalendar.Event, event: Event, zone: tzinfo | None = None) -> None:
    """DTSTART and DTEND from the event, in the zone the object used (a client shows its own zone), or
    in `zone` (a series': its rule follows that zone's wall clock, and so must a client's expansion)."""
    old = vevent.get("DTSTART")
    if zone is None:
        zone = getattr(old.dt, "tzinfo", None) if old is not None else None
    for name in ("DTSTART", "DTEND", "DURATION"):
        vevent.pop(name, None)
    zone = zone if isinstance(zone, ZoneInfo) else UTC
    vevent.add("DTSTART", event.start.astimezone(zone))
    vevent.add("DTEND", event.end.astimezone(zone))


def _set_people(vevent: icalendar.Event, event: Event, domain: str) -> None:
    """ORGANIZER, and each participant's ATTENDEE with their answer; every other row as it was written
    (people elsewhere, the organizer's own row, an address of ours that is nobody's account)."""
    rows = _addresses(vevent, "ATTENDEE")
    ours = {user: a for a in rows if (user := address_user(str(a), domain)) in event.participants}
    kept = [a for a in rows if address_user(str(a), domain) not in event.participants]
    vevent.pop("ATTENDEE", None)
    organizer_given = address_user(str(vevent.get("ORGANIZER", "")), domain)
    if (event.participants or "ORGANIZER" in vevent) and organizer_given != event.organizer:
        vevent.pop("ORGANIZER", None)
        vevent.add("ORGANIZER", _address_prop(event.organizer, domain))
    for user, participation in sorted(event.participants.items()):
        prop = ours.get(user)
        if prop is None:
            prop = _address_prop(user, domain, ROLE="REQ-PARTICIPANT")
        prop.params["PARTSTAT"] = _PARTSTAT[participation.status]
        kept.append(prop)
    for prop in kept:
        vevent.add("ATTENDEE", prop, encode=False)


def _new_vevent(event: Event, domain: str, zone: tzinfo | None = None) -> icalendar.Event:
    vevent = icalendar.Event()
    vevent.add("UID", _event_uid(event, domain))
    vevent.add("CREATED", event.created)
    _set_times(vevent, event, zone)
    vevent.add("SUMMARY", _text(event.title))
    if event.description:
        vevent.add("DESCRIPTION", _text(event.description))
    if event.location:
        vevent.add("LOCATION", _text(event.location))
    vevent.add("CLASS", _CLASS[event.visibility])
    vevent.add("STATUS", _STATUS[event.status])
    vevent.add("ORGANIZER", _address_prop(event.organizer, domain))
    _set_people(vevent, event, domain)
    return vevent


def _replace(vevent: icalendar.Event, name: str, value: Any) -> None:
    vevent.pop(name, None)
    if value not in ("", None):
        vevent.add(name, value)


def _master(calendar: icalendar.Calendar) -> icalendar.Event:
    vevents = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    masters = [v for v in vevents if v.get("RECURRENCE-ID") is None]
    return masters[0] if masters else vevents[0]


def _series_zone(recurrence: Recurrence) -> tzinfo:
    return UTC if recurrence.timezone == "UTC" else ZoneInfo(recurrence.timezone)


def _set_recurrence(vevent: icalendar.Event, recurrence: Recurrence) -> None:
    """RRULE, RDATE and EXDATE of the master, the dates in the rule's zone (as DTSTART)."""
    zone = _series_zone(recurrence)
    for name in ("RRULE", "RDATE", "EXDATE"):
        vevent.pop(name, None)
    if recurrence.rrule is not None:
        vevent.add("RRULE", icalendar.vRecur.from_ical(recurrence.rrule))
    if recurrence.rdates:
        vevent.add("RDATE", [t.astimezone(zone) for t in recurrence.rdates])
    if recurrence.exdates:
        vevent.add("EXDATE", [t.astimezone(zone) for t in recurrence.exdates])


def _series_vevents(event: Event, domain: str) -> tuple[list[Any], list[Any]]:
    """(VTIMEZONE, VEVENTs) of a series made through the JSON API: the master with its recurrence, then
    one VEVENT with RECURRENCE-ID per override of an occurrence that exists (RFC 5545 3.8.4.4)."""
    assert event.recurrence is not None  # noqa: S101 - only series come here
    zone = _series_zone(event.recurrence)
    master = _new_vevent(event, domain, zone)
    _set_recurrence(master, event.recurrence)
    vevents = [master]
    limit = horizon_end(event.start)
    existing = {format_time(t) for t in original_starts(event.start, event.recurrence, limit)}
    for rid, override in sorted(event.overrides.items()):
        if rid not in existing:
            continue
        original = datetime.fromisoformat(rid)
        start, end = occurrence_times(original, event.end - event.start, override)
        participants = {
            user: Participation(override.partstats.get(user, p.status), p.level)
            for user, p in event.participants.items()
        }
        occurrence = Event(
            id=event.id,
            uid=event.uid,
            title=event.title if override.title is None else override.title,
            description=event.description if override.description is None else override.description,
            location=event.location if override.location is None else override.location,
            start=start,
            end=end,
            organizer=event.organizer,
            created=event.created,
            updated=event.updated,
            visibility=event.visibility,
            status=EventStatus.CANCELLED if override.cancelled else event.status,
            participants=participants,
        )
        vevent = _new_vevent(occurrence, domain, zone)
        vevent.add("RECURRENCE-ID", original.astimezone(zone))
        vevents.append(vevent)
    zones = []
    if event.recurrence.timezone != "UTC":
        first = min([event.start, *(o.start for o in event.overrides.values() if o.start is not None)])
        zones.append(
            icalendar.Timezone.from_tzid(
                event.recurrence.timezone,
                first_date=first.date() - timedelta(days=1),
                last_date=limit.date() + timedelta(days=1),
            )
        )
    return zones, vevents


def _vevents_of(event: Event, domain: str, timezone: str) -> tuple[list[Any], list[Any]]:
    """(VTIMEZONEs, VEVENTs) of the event: the stored object with the domain's changes, or new ones."""
    if not event.ical:
        if event.recurrence is not None:
            return _series_vevents(event, domain)
        return [], [_new_vevent(event, domain)]
    stored = parse_object(event.ical, domain=domain, timezone=timezone)
    calendar = icalendar.Calendar.from_ical(event.ical)
    vevent = _master(calendar)
    # A rule changed through the JSON API replaces the object's; a client's rule the domain could not
    # hold (event.recurrence None) is the client's and stays as written.
    if event.recurrence is not None and stored.recurrence != event.recurrence:
        _set_recurrence(vevent, event.recurrence)
    if (stored.start, stored.end) != (event.start, event.end):
        _set_times(vevent, event)
    if stored.title != event.title:
        _replace(vevent, "SUMMARY", _text(event.title))
    if stored.description != event.description:
        _replace(vevent, "DESCRIPTION", _text(event.description))
    if stored.location != event.location:
        _replace(vevent, "LOCATION", _text(event.location))
    if stored.visibility != event.visibility:
        _replace(vevent, "CLASS", _CLASS[event.visibility])
    if stored.status != event.status:
        _replace(vevent, "STATUS", _STATUS[event.status])
    answers = {u: p.status for u, p in event.participants.items()}
    if any(stored.attendees.get(u) != status for u, status in answers.items()) or (
        stored.organizer not in (None, event.organizer)
    ):
        _set_people(vevent, event, domain)
    zones = [c for c in calendar.subcomponents if c.name == "VTIMEZONE"]
    vevents = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    return zones, vevents


def _stamp(vevents: Iterable[Any], event: Event, now: datetime) -> None:
    for vevent in vevents:
        _replace(vevent, "DTSTAMP", now)
        _replace(vevent, "LAST-MODIFIED", event.updated)
        # The domain counts every change; a client's own SEQUENCE only ever grows with it.
        _replace(vevent, "SEQUENCE", max(event.sequence, int(vevent.get("SEQUENCE", 0) or 0)))


def new_calendar(method: str | None = None, name: str | None = None) -> icalendar.Calendar:
    """An empty VCALENDAR of ours (VERSION, PRODID, CALSCALE), with METHOD and X-WR-CALNAME when given."""
    calendar = icalendar.Calendar()
    calendar.add("VERSION", "2.0")
    calendar.add("PRODID", PRODID)
    calendar.add("CALSCALE", "GREGORIAN")
    if method is not None:
        calendar.add("METHOD", method)
    if name is not None:
        calendar.add("X-WR-CALNAME", icalendar.vText(_text(name)))
    return calendar


def calendar_object(
    event: Event, *, now: datetime, domain: str = DEFAULT_DOMAIN, timezone: str = "UTC"
) -> bytes:
    """One event as a CalDAV calendar object resource (UTF-8 bytes with CRLF line ends)."""
    zones, vevents = _vevents_of(event, domain, timezone)
    _stamp(vevents, event, now)
    calendar = new_calendar()
    for component in [*zones, *vevents]:
        calendar.add_component(component)
    return calendar.to_ical()


def to_ical(
    events: Iterable[Event],
    *,
    now: datetime,
    domain: str = DEFAULT_DOMAIN,
    name: str | None = None,
    timezone: str = "UTC",
) -> str:
    """A VCALENDAR (METHOD:PUBLISH) of every event, as text with CRLF line ends.

    `now` becomes every DTSTAMP (when this copy was made); `domain` qualifies UIDs and attendee
    addresses; `name` sets X-WR-CALNAME, which common clients show as the calendar's title. A time zone
    several stored objects define is written once.
    """
    calendar = new_calendar("PUBLISH", name)
    zones: dict[str, Any] = {}
    bodies: list[Any] = []
    for event in sorted(events, key=lambda e: (e.start, e.end, e.id)):
        event_zones, vevents = _vevents_of(event, domain, timezone)
        for zone in event_zones:
            zones.setdefault(str(zone.get("TZID", "")), zone)
        _stamp(vevents, event, now)
        bodies.extend(vevents)
    for component in [*zones.values(), *bodies]:
        calendar.add_component(component)
    return calendar.to_ical().decode("utf-8")
