"""calendar-query filters (RFC 4791 section 9.7) evaluated against one calendar object, and expansion.

A filter is a tree of ``comp-filter``, ``prop-filter``, ``param-filter``, ``time-range``,
``text-match`` and ``is-not-defined``; `Filter.parse` checks it (400 naming what is wrong) and
`Filter.matches` answers for one parsed VCALENDAR. Time ranges on recurring components look at every
occurrence (through `recurring_ical_events`), within `SEARCH_YEARS` of the range's open end, so an open
range over an endless rule still ends.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, Final

import icalendar
import recurring_ical_events

from agenda.dav.xml import CALDAV, DavError, clark

__all__ = ["Filter", "TimeRange", "expand", "occurrences", "parse_utc"]

# How far an open-ended time range reaches, and how many occurrences one object may yield in a query.
SEARCH_YEARS: Final = 50
MAX_OCCURRENCES: Final = 10_000
_FAR_PAST: Final = datetime(1900, 1, 1, tzinfo=UTC)
_FAR_FUTURE: Final = datetime(2200, 1, 1, tzinfo=UTC)


def parse_utc(text: str | None, what: str) -> datetime | None:
    """A CalDAV ``time-range`` bound (``20260101T000000Z``, UTC by RFC 4791 section 9.9)."""
    if text is None:
        return None
    try:
        value = datetime.strptime(text.strip(), "%Y%m%dT%H%M%SZ")
    except ValueError:
        reason = f"{what} must be a UTC date-time like 20260101T000000Z, got {text!r}"
        raise DavError(400, reason) from None
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TimeRange:
    start: datetime | None
    end: datetime | None

    @classmethod
    def parse(cls, node: ET.Element) -> TimeRange:
        start = parse_utc(node.get("start"), "time-range start")
        end = parse_utc(node.get("end"), "time-range end")
        if start is None and end is None:
            raise DavError(400, "time-range needs a start or an end")
        if start is not None and end is not None and end <= start:
            raise DavError(400, "time-range end must be after its start")
        return cls(start, end)

    def window(self) -> tuple[datetime, datetime]:
        """Closed bounds for searching: an open side reaches `SEARCH_YEARS` past the other."""
        reach = timedelta(days=365 * SEARCH_YEARS)
        start = self.start or max(_FAR_PAST, (self.end or _FAR_FUTURE) - reach)
        end = self.end or min(_FAR_FUTURE, start + reach)
        return start, end


def _as_datetime(value: date | datetime) -> datetime:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def occurrences(calendar: icalendar.Calendar, name: str, start: datetime, end: datetime) -> Iterator[Any]:
    """The `name` components of `calendar` (recurrences expanded) overlapping [start, end)."""
    query = recurring_ical_events.of(calendar, components=[name], skip_bad_series=True)
    return islice(iter(query.between(start, end)), MAX_OCCURRENCES)


def _overlaps(component: Any, time_range: TimeRange) -> bool:
    """RFC 4791 9.9 for one (already expanded) component: does it overlap the range?"""
    start, end = time_range.window()
    dtstart = component.get("DTSTART")
    if dtstart is None:
        return False
    first = _as_datetime(dtstart.dt)
    if component.get("DTEND") is not None:
        last = _as_datetime(component["DTEND"].dt)
    elif component.get("DURATION") is not None:
        last = first + component["DURATION"].dt
    elif not isinstance(dtstart.dt, datetime):
        last = first + timedelta(days=1)
    else:
        return start <= first < end
    if last == first:
        return start <= first < end
    return start < last and end > first


def _alarm_times(alarm: Any, parent: Any) -> Iterable[datetime]:
    trigger = alarm.get("TRIGGER")
    if trigger is None:
        return []
    value = trigger.dt
    if isinstance(value, datetime):
        return [_as_datetime(value)]
    related_end = str(trigger.params.get("RELATED", "START")).upper() == "END"
    anchor_prop = (
        parent.get("DTEND") if related_end and parent.get("DTEND") is not None else parent.get("DTSTART")
    )
    if anchor_prop is None:
        return []
    return [_as_datetime(anchor_prop.dt) + value]


@dataclass
class _Node:
    kind: str  # "comp", "prop" or "param"
    name: str
    not_defined: bool = False
    time_range: TimeRange | None = None
    text: tuple[str, bool, bool, str] | None = None  # (text, negate, case-sensitive, match-type)
    children: list[_Node] = field(default_factory=list)


_KINDS: Final = {
    clark(CALDAV, "comp-filter"): "comp",
    clark(CALDAV, "prop-filter"): "prop",
    clark(CALDAV, "param-filter"): "param",
}


def _text_match(node: ET.Element) -> tuple[str, bool, bool, str]:
    collation = node.get("collation", "i;ascii-casemap")
    if collation not in ("i;ascii-casemap", "i;octet", "i;unicode-casemap"):
        raise DavError(
            403,
            f"collation {collation!r} is not supported",
            condition="supported-collation",
        )
    negate = node.get("negate-condition", "no") == "yes"
    match_type = node.get("match-type", "contains")
    if match_type not in ("contains", "equals", "starts-with", "ends-with"):
        raise DavError(400, f"match-type {match_type!r} is not one RFC 4791/6352 define")
    return node.text or "", negate, collation == "i;octet", match_type


def _parse(node: ET.Element, depth: int = 0) -> _Node:
    if depth > 8:
        raise DavError(400, "the filter nests too deeply")
    kind = _KINDS[node.tag]
    name = node.get("name")
    if not name:
        raise DavError(400, f"every {kind}-filter needs a name")
    parsed = _Node(kind, name.upper())
    for child in node:
        if child.tag == clark(CALDAV, "is-not-defined"):
            parsed.not_defined = True
        elif child.tag == clark(CALDAV, "time-range") and kind != "param":
            parsed.time_range = TimeRange.parse(child)
        elif child.tag == clark(CALDAV, "text-match") and kind != "comp":
            parsed.text = _text_match(child)
        elif child.tag in _KINDS:
            parsed.children.append(_parse(child, depth + 1))
        else:
            raise DavError(400, f"{child.tag} is not allowed in a {kind}-filter")
    return parsed


def _matches_text(value: str, text: tuple[str, bool, bool, str]) -> bool:
    wanted, negate, case_sensitive, match_type = text
    if not case_sensitive:
        value, wanted = value.casefold(), wanted.casefold()
    found = {
        "contains": wanted in value,
        "equals": value == wanted,
        "starts-with": value.startswith(wanted),
        "ends-with": value.endswith(wanted),
    }[match_type]
    return found != negate


def _values(component: Any, name: str) -> list[Any]:
    found = component.get(name)
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def _text_of(value: Any) -> Iterable[str]:
    if isinstance(value, icalendar.prop.vCategory):
        return [str(c) for c in value.cats]
    if hasattr(value, "to_ical") and not isinstance(value, str):
        raw = value.to_ical()
        return [raw.decode() if isinstance(raw, bytes) else str(raw)]
    return [str(value)]


class Filter:
    """A checked ``CALDAV:filter``; `component` is the innermost component type it asks for."""

    def __init__(self, root: _Node) -> None:
        self.root = root

    @classmethod
    def parse(cls, node: ET.Element | None) -> Filter:
        if node is None:
            raise DavError(400, "calendar-query needs a filter", condition="valid-filter")
        comps = [c for c in node if c.tag == clark(CALDAV, "comp-filter")]
        if len(comps) != 1 or comps[0].get("name", "").upper() != "VCALENDAR":
            raise DavError(
                403,
                "the filter must hold one comp-filter named VCALENDAR",
                condition="valid-filter",
            )
        return cls(_parse(comps[0]))

    def time_range(self) -> TimeRange | None:
        """The VEVENT time range, when the filter has one: the store can then read only that window."""
        for child in self.root.children:
            if child.kind == "comp" and child.name == "VEVENT" and child.time_range and not child.not_defined:
                return child.time_range
        return None

    def matches(self, calendar: icalendar.Calendar) -> bool:
        return self._comp(self.root, [calendar], None)

    def _comp(self, node: _Node, candidates: list[Any], parent: Any) -> bool:
        found = [c for c in candidates if c.name == node.name]
        if node.not_defined:
            return not found
        if not found:
            return False
        if node.time_range is not None:
            found = self._in_range(node, found, parent)
        return any(self._all_children(node, component) for component in found)

    def _in_range(self, node: _Node, components: list[Any], parent: Any) -> list[Any]:
        assert node.time_range is not None  # noqa: S101
        if node.name == "VCALENDAR":  # a range without a component type: any event occurrence in it
            start, end = node.time_range.window()
            return [
                c for c in components if next(iter(occurrences(c, "VEVENT", start, end)), None) is not None
            ]
        if node.name == "VALARM":
            start, end = node.time_range.window()
            return [
                alarm
                for alarm in components
                if any(start <= when < end for when in _alarm_times(alarm, parent))
            ]
        if parent is not None and parent.name == "VCALENDAR":
            start, end = node.time_range.window()
            try:
                instances = list(occurrences(parent, node.name, start, end))
            except (ValueError, TypeError, OverflowError):
                instances = [c for c in components if _overlaps(c, node.time_range)]
            return instances
        return [c for c in components if _overlaps(c, node.time_range)]

    def _all_children(self, node: _Node, component: Any) -> bool:
        for child in node.children:
            if child.kind == "comp":
                if not self._comp(child, list(component.subcomponents), component):
                    return False
            elif not self._prop(child, component):
                return False
        return True

    def _prop(self, node: _Node, component: Any) -> bool:
        values = _values(component, node.name)
        if node.not_defined:
            return not values
        if not values:
            return False
        for value in values:
            if node.time_range is not None:
                when = getattr(value, "dt", None)
                start, end = node.time_range.window()
                if not isinstance(when, (date, datetime)) or not start <= _as_datetime(when) < end:
                    continue
            if node.text is not None and not any(_matches_text(t, node.text) for t in _text_of(value)):
                continue
            if all(self._param(child, value) for child in node.children):
                return True
        return False

    def _param(self, node: _Node, value: Any) -> bool:
        params = getattr(value, "params", {})
        found = params.get(node.name)
        if node.not_defined:
            return found is None
        if found is None:
            return False
        return node.text is None or _matches_text(str(found), node.text)


def expand(calendar: icalendar.Calendar, start: datetime, end: datetime) -> icalendar.Calendar:
    """``CALDAV:expand``: every occurrence in [start, end) as its own VEVENT, in UTC, without rules."""
    expanded = icalendar.Calendar()
    for name in ("VERSION", "PRODID"):
        if name in calendar:
            expanded.add(name, calendar[name])
    for occurrence in occurrences(calendar, "VEVENT", start, end):
        for prop in ("RRULE", "RDATE", "EXDATE"):
            occurrence.pop(prop, None)
        for prop in ("DTSTART", "DTEND", "RECURRENCE-ID"):
            value = occurrence.get(prop)
            if value is not None and isinstance(value.dt, datetime) and value.dt.tzinfo is not None:
                occurrence.pop(prop)
                occurrence.add(prop, value.dt.astimezone(UTC))
        expanded.add_component(occurrence)
    return expanded
