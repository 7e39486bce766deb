"""RFC 5545 (iCalendar) export of a user's events, written by hand.

Hand-written because the output is small and fixed (one VCALENDAR of VEVENTs, METHOD:PUBLISH) and a
runtime dependency for it would be one more thing to pin and patch on every service. The subtle parts
are all here: TEXT escaping (section 3.3.11), CRLF line ends, and folding at 75 OCTETS (section 3.1)
without splitting a multi-byte UTF-8 character, which many naive writers get wrong for non-ASCII text.
Tests parse the output with the `icalendar` package to keep this honest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from agenda.domain.model import Event, EventStatus, PartStat, Visibility, to_utc

__all__ = [
    "DEFAULT_DOMAIN",
    "PRODID",
    "escape_text",
    "fold_line",
    "format_ical_time",
    "to_ical",
]

PRODID: Final = "-//Agenda Distribuida//Agenda 1.0//EN"
# .invalid (RFC 2606) can never be a real domain, so our UIDs and addresses cannot clash with others'.
DEFAULT_DOMAIN: Final = "agenda.invalid"
CRLF: Final = "\r\n"
_MAX_OCTETS: Final = 75

_PARTSTAT: Final = {
    PartStat.NEEDS_ACTION: "NEEDS-ACTION",
    PartStat.ACCEPTED: "ACCEPTED",
    PartStat.DECLINED: "DECLINED",
    PartStat.TENTATIVE: "TENTATIVE",
}
_STATUS: Final = {
    EventStatus.CONFIRMED: "CONFIRMED",
    EventStatus.TENTATIVE: "TENTATIVE",
    EventStatus.CANCELLED: "CANCELLED",
}
_CLASS: Final = {Visibility.PRIVATE: "PRIVATE", Visibility.PUBLIC: "PUBLIC"}

# TEXT may hold any character but controls (tab aside); line breaks are escaped, the rest dropped.
_TEXT_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")
# Parameter values may not hold controls or DQUOTE at all, and must be quoted if they hold ; : ,
_PARAM_UNSAFE: Final = re.compile(r'[\x00-\x08\x0a-\x1f\x7f"]')


def escape_text(value: str) -> str:
    """A TEXT value escaped per RFC 5545 3.3.11: backslash, semicolon, comma, and newlines as \\n."""
    value = _NEWLINES.sub("\n", value)
    value = _TEXT_CONTROLS.sub("", value)
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _param(value: str) -> str:
    value = _PARAM_UNSAFE.sub("", value)
    return f'"{value}"' if any(c in value for c in ";:,") else value


def format_ical_time(value: datetime) -> str:
    """A DATE-TIME in UTC form (19980119T070000Z); sub-second precision cannot be expressed and is dropped."""
    utc = to_utc(value)
    return f"{utc.year:04d}{utc.month:02d}{utc.day:02d}T{utc.hour:02d}{utc.minute:02d}{utc.second:02d}Z"


def fold_line(line: str) -> str:
    """`line` folded into CRLF-terminated physical lines of at most 75 octets each (RFC 5545 3.1).

    Continuation lines begin with one space, which counts toward their 75 octets. Breaks fall only
    between characters, never inside a UTF-8 sequence.
    """
    if len(line.encode()) <= _MAX_OCTETS:
        return line + CRLF
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    limit = _MAX_OCTETS
    for char in line:
        size = len(char.encode())
        if used + size > limit:
            pieces.append("".join(current))
            current, used, limit = [], 0, _MAX_OCTETS - 1
        current.append(char)
        used += size
    pieces.append("".join(current))
    return (CRLF + " ").join(pieces) + CRLF


def _address(user: str, domain: str) -> str:
    # Usernames are [a-z0-9_.-], safe in a mailto URI; the domain keeps them from reaching real mail.
    return f"mailto:{user}@{domain}"


def _vevent(event: Event, dtstamp: str, domain: str) -> list[str]:
    lines = [
        "BEGIN:VEVENT",
        f"UID:{escape_text(f'{event.id}@{domain}')}",
        f"DTSTAMP:{dtstamp}",
        f"DTSTART:{format_ical_time(event.start)}",
        f"DTEND:{format_ical_time(event.end)}",
        f"CREATED:{format_ical_time(event.created)}",
        f"LAST-MODIFIED:{format_ical_time(event.updated)}",
        f"SEQUENCE:{event.sequence}",
        f"STATUS:{_STATUS[event.status]}",
        f"CLASS:{_CLASS[event.visibility]}",
        f"SUMMARY:{escape_text(event.title)}",
    ]
    if event.description:
        lines.append(f"DESCRIPTION:{escape_text(event.description)}")
    if event.location:
        lines.append(f"LOCATION:{escape_text(event.location)}")
    lines.append(f"ORGANIZER;CN={_param(event.organizer)}:{_address(event.organizer, domain)}")
    for user, participation in sorted(event.participants.items()):
        lines.append(
            f"ATTENDEE;CN={_param(user)};ROLE=REQ-PARTICIPANT;PARTSTAT={_PARTSTAT[participation.status]}"
            f":{_address(user, domain)}"
        )
    lines.append("END:VEVENT")
    return lines


def to_ical(
    events: Iterable[Event],
    *,
    now: datetime,
    domain: str = DEFAULT_DOMAIN,
    name: str | None = None,
) -> str:
    """A VCALENDAR (METHOD:PUBLISH) holding one VEVENT per event, as text with CRLF line ends.

    `now` becomes every DTSTAMP (when this copy was made); `domain` qualifies UIDs and attendee
    addresses; `name` sets X-WR-CALNAME, which common clients show as the calendar's title.
    The caller encodes the result as UTF-8 (the iCalendar default charset).
    """
    dtstamp = format_ical_time(now)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH"]
    if name is not None:
        lines.append(f"X-WR-CALNAME:{escape_text(name)}")
    for event in sorted(events, key=lambda e: (e.start, e.end, e.id)):
        lines.extend(_vevent(event, dtstamp, domain))
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) for line in lines)
