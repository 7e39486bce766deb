"""Parsing and validation of API input; every error names the field and says what is wrong with it.

The HTTP layer turns a `ValidationError` into a 400 problem with `field` set, so a client can point at
the offending input. The limits bound how much one request can cost (storage, conflict checks, fan-out)
and keep text exportable to iCalendar, whose TEXT values cannot carry control characters.

Unknown fields are the HTTP layer's business (it sees the whole body); these functions judge values.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agenda.domain.model import EventKind, PartStat, Visibility

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_DISPLAY_NAME",
    "MAX_EVENT_DURATION",
    "MAX_GROUP_MEMBERS",
    "MAX_GROUP_NAME",
    "MAX_LEVEL",
    "MAX_LOCATION",
    "MAX_PARTICIPANTS",
    "MAX_PASSWORD",
    "MAX_QUERY_RANGE",
    "MAX_SLOT_MINUTES",
    "MAX_TITLE",
    "MIN_PASSWORD",
    "ValidationError",
    "check_group_size",
    "parse_event_times",
    "parse_query_range",
    "parse_time",
    "validate_description",
    "validate_display_name",
    "validate_event_details",
    "validate_event_kind",
    "validate_group_name",
    "validate_level",
    "validate_location",
    "validate_participants",
    "validate_password",
    "validate_response_status",
    "validate_slot_duration",
    "validate_timezone",
    "validate_title",
    "validate_username",
    "validate_visibility",
]

MAX_TITLE: Final = 200
MAX_GROUP_NAME: Final = 200
MAX_DESCRIPTION: Final = 10_000
MAX_LOCATION: Final = 500
MAX_DISPLAY_NAME: Final = 100
MAX_EVENT_DURATION: Final = timedelta(days=31)
MAX_QUERY_RANGE: Final = timedelta(days=366)
MAX_GROUP_MEMBERS: Final = 500
MAX_PARTICIPANTS: Final = 500
MIN_PASSWORD: Final = 8
# An upper bound too: password hashing costs time per byte, so an unbounded password is a cheap DoS.
MAX_PASSWORD: Final = 1024
MAX_SLOT_MINUTES: Final = 1440
# Levels are small numbers in practice; a bound keeps them sane in storage and UIs.
MAX_LEVEL: Final = 1000

_USERNAME: Final = re.compile(r"[a-z0-9_.-]{3,32}")
# RFC 3339 section 5.6 date-time; the offset is mandatory, so naive times never get in.
_RFC3339: Final = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?P<frac>\.\d+)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
# IANA zone names are path-like; refusing anything else keeps odd strings away from the filesystem.
_ZONE_NAME: Final = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_NOT_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})
# C0 controls and DEL; line breaks and tabs are allowed only where noted.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ValidationError(ValueError):
    """Input `field` is unacceptable because of `reason` (a sentence fragment fit for a client)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
    return value


def _integer(value: Any, field: str) -> int:
    # bool is a subclass of int in Python but not an integer in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, f"must be an integer, not {_type_name(value)}")
    return value


def parse_time(value: Any, field: str) -> datetime:
    """An RFC 3339 date-time WITH an offset, returned in UTC and truncated to whole seconds.

    Naive times are refused: the service cannot guess whose wall clock they meant. Sub-second precision
    is dropped because neither iCalendar nor people schedule below a second.
    """
    text = _string(value, field)
    match = _RFC3339.fullmatch(text)
    if match is None:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?", text):
            raise ValidationError(field, "must include a UTC offset such as Z or +02:00")
        raise ValidationError(field, "must be an RFC 3339 date-time such as 2026-11-26T10:00:00Z")
    offset = match["offset"].upper()
    if offset != "Z" and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        raise ValidationError(field, f"has an impossible UTC offset {offset}")
    try:
        local = datetime.fromisoformat(
            f"{match['date']}T{match['time']}{'+00:00' if offset == 'Z' else offset}"
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(field, "is not a real date and time") from None


def _span(start: datetime, end: datetime, limit: timedelta, end_field: str, what: str) -> None:
    if end <= start:
        raise ValidationError(end_field, f"must be after the {what} start")
    if end - start > limit:
        raise ValidationError(end_field, f"must be at most {limit.days} days after the {what} start")


def parse_event_times(
    start: Any, end: Any, *, start_field: str = "start", end_field: str = "end", what: str = "event"
) -> tuple[datetime, datetime]:
    """An event's (start, end), or one occurrence's (`what`, named in the errors): end strictly after
    start, at most 31 days later.

    Zero-length events would never conflict with anything and confuse agenda views; the 31-day cap
    bounds how many days one event can block in conflict and free-slot searches.
    """
    start_at = parse_time(start, start_field)
    end_at = parse_time(end, end_field)
    _span(start_at, end_at, MAX_EVENT_DURATION, end_field, what)
    return start_at, end_at


def parse_query_range(
    from_: Any, to: Any, *, from_field: str = "from", to_field: str = "to"
) -> tuple[datetime, datetime]:
    """An agenda or free-slot query's [from, to): from before to, at most 366 days apart.

    The cap bounds how many events one query can make a service read (a year, leap years included).
    """
    start_at = parse_time(from_, from_field)
    end_at = parse_time(to, to_field)
    _span(start_at, end_at, MAX_QUERY_RANGE, to_field, "range")
    return start_at, end_at


def _single_line(value: Any, field: str, *, minimum: int, maximum: int) -> str:
    text = _string(value, field).strip()
    if _CONTROL.search(text):
        raise ValidationError(field, "must not contain control characters or line breaks")
    if len(text) < minimum:
        raise ValidationError(
            field, "must not be blank" if minimum == 1 else f"must have at least {minimum} characters"
        )
    if len(text) > maximum:
        raise ValidationError(field, f"must have at most {maximum} characters")
    return text


def validate_title(value: Any, field: str = "title") -> str:
    """1..200 characters after trimming surrounding spaces; one line."""
    return _single_line(value, field, minimum=1, maximum=MAX_TITLE)


def validate_group_name(value: Any, field: str = "name") -> str:
    """1..200 characters after trimming surrounding spaces; one line."""
    return _single_line(value, field, minimum=1, maximum=MAX_GROUP_NAME)


def validate_location(value: Any, field: str = "location") -> str:
    """At most 500 characters, one line; empty means no location."""
    return _single_line(value, field, minimum=0, maximum=MAX_LOCATION)


def validate_display_name(value: Any, field: str = "display_name") -> str:
    """At most 100 characters, one line; empty means "show the username"."""
    return _single_line(value, field, minimum=0, maximum=MAX_DISPLAY_NAME)


def validate_description(value: Any, field: str = "description") -> str:
    """At most 10,000 characters; line breaks and tabs are allowed, other control characters are not."""
    text = _string(value, field)
    if _CONTROL_EXCEPT_WHITESPACE.search(text):
        raise ValidationError(field, "must not contain control characters other than line breaks and tabs")
    if len(text) > MAX_DESCRIPTION:
        raise ValidationError(field, f"must have at most {MAX_DESCRIPTION} characters")
    return text


def validate_username(value: Any, field: str = "username") -> str:
    """3..32 characters of a-z, 0-9, '_', '.', '-'.

    Lower case only, and refused rather than folded, so one account never has two spellings and
    usernames are safe inside KV keys, URLs and iCalendar addresses without escaping.
    """
    text = _string(value, field)
    if not 3 <= len(text) <= 32:
        raise ValidationError(field, "must have 3 to 32 characters")
    if not _USERNAME.fullmatch(text):
        raise ValidationError(field, "may contain only lower-case letters a-z, digits and '_', '.', '-'")
    return text


def validate_password(value: Any, field: str = "password") -> str:
    """8..1024 characters; never echoed back in the error."""
    text = _string(value, field)
    if len(text) < MIN_PASSWORD:
        raise ValidationError(field, f"must have at least {MIN_PASSWORD} characters")
    if len(text) > MAX_PASSWORD:
        raise ValidationError(field, f"must have at most {MAX_PASSWORD} characters")
    return text


def validate_timezone(value: Any, field: str = "timezone") -> str:
    """An IANA time-zone name known to this host's zoneinfo, such as "America/Havana" or "UTC"."""
    text = _string(value, field)
    if len(text) > 64 or not _ZONE_NAME.fullmatch(text) or text in _NOT_ZONES:
        raise ValidationError(field, "must be an IANA time-zone name such as Europe/Madrid")
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field, f"is not a known IANA time zone: {text}") from None
    return text


def validate_visibility(value: Any, field: str = "visibility") -> Visibility:
    text = _string(value, field)
    try:
        return Visibility(text)
    except ValueError:
        raise ValidationError(field, "must be 'private' or 'public'") from None


def validate_event_details(body: Mapping[str, Any]) -> dict[str, Any]:
    """The details every new event has, checked, from a request body that has title, start and end.

    Absent optional fields take their defaults: no description or location, private visibility. The
    result is keyword arguments of `Event`.
    """
    title = validate_title(body["title"])
    start, end = parse_event_times(body["start"], body["end"])
    return {
        "title": title,
        "start": start,
        "end": end,
        "description": validate_description(body.get("description", "")),
        "location": validate_location(body.get("location", "")),
        "visibility": validate_visibility(body.get("visibility", Visibility.PRIVATE.value)),
    }


def validate_event_kind(value: Any, field: str = "kind") -> EventKind:
    text = _string(value, field)
    try:
        return EventKind(text)
    except ValueError:
        choices = ", ".join(f"'{k.value}'" for k in EventKind)
        raise ValidationError(field, f"must be one of {choices}") from None


def validate_response_status(value: Any, field: str = "status") -> PartStat:
    """An RSVP: accepted, declined or tentative. needs-action is where invitations start, not an answer."""
    text = _string(value, field)
    answers = (PartStat.ACCEPTED, PartStat.DECLINED, PartStat.TENTATIVE)
    if text not in {a.value for a in answers}:
        raise ValidationError(field, "must be 'accepted', 'declined' or 'tentative'")
    return PartStat(text)


def validate_participants(value: Any, organizer: str, field: str = "participants") -> list[str]:
    """A list of distinct usernames, at most 500, without the organizer (who takes part by organizing).

    Duplicates are refused rather than merged: they usually mean a client bug worth surfacing.
    """
    if not isinstance(value, list):
        raise ValidationError(field, f"must be an array of usernames, not {_type_name(value)}")
    if len(value) > MAX_PARTICIPANTS:
        raise ValidationError(field, f"must have at most {MAX_PARTICIPANTS} usernames")
    seen: set[str] = set()
    for index, item in enumerate(value):
        name = validate_username(item, f"{field}[{index}]")
        if name == organizer:
            raise ValidationError(f"{field}[{index}]", "is the organizer, who takes part already")
        if name in seen:
            raise ValidationError(f"{field}[{index}]", f"repeats {name}")
        seen.add(name)
    return list(value)


def validate_slot_duration(value: Any, field: str = "duration") -> timedelta:
    """A free-slot search's meeting length in whole minutes, 1..1440 (one day)."""
    minutes = _integer(value, field)
    if not 1 <= minutes <= MAX_SLOT_MINUTES:
        raise ValidationError(field, f"must be between 1 and {MAX_SLOT_MINUTES} minutes")
    return timedelta(minutes=minutes)


def validate_level(value: Any, field: str = "level") -> int:
    """A hierarchy level: 0 (the owner, most senior) .. 1000; larger numbers are more junior."""
    level = _integer(value, field)
    if not 0 <= level <= MAX_LEVEL:
        raise ValidationError(field, f"must be between 0 and {MAX_LEVEL}")
    return level


def check_group_size(members: Iterable[object] | int, adding: int = 1, field: str = "members") -> None:
    """Refuse growing a group past 500 members (invited ones included, since they may all accept).

    Every group event fans out to every member, so the cap bounds the work and size of one write.
    """
    count = members if isinstance(members, int) else sum(1 for _ in members)
    if count + adding > MAX_GROUP_MEMBERS:
        raise ValidationError(field, f"a group may have at most {MAX_GROUP_MEMBERS} members")
