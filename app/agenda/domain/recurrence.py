"""Recurring events: RFC 5545 recurrence (RRULE, RDATE, EXDATE) and overridden occurrences
(RECURRENCE-ID), expanded with dateutil's ``rrule`` in the series' own time zone. Pure: no I/O, no clock.

Decisions (RFC 5545 leaves some open, the rest is how this service bounds the work):

* The series' DTSTART is the event's start and is always its first occurrence, even when the rule would
  not produce it; COUNT counts it (RFC 5545 3.8.5.3). RDATEs add occurrences (not counted by COUNT),
  EXDATEs remove them. Every occurrence lasts exactly as long as the first.
* The rule is expanded in the local wall time of `Recurrence.timezone`, so "every Monday 09:00
  Europe/Madrid" stays 09:00 in Madrid across DST. A local time that does not exist (the spring gap)
  is read with the offset before the gap, an ambiguous one (the autumn repeat) as its first instance
  (RFC 5545 3.3.5): that is zoneinfo's ``fold=0``.
* Only FREQ=DAILY, WEEKLY, MONTHLY and YEARLY, and no BYHOUR, BYMINUTE or BYSECOND: the time of day is
  the event's start, so a rule yields at most one occurrence per day. BYxxx parts are accepted only where
  RFC 5545 allows them for the FREQ (BYWEEKNO and BYYEARDAY yearly only, no BYMONTHDAY weekly, numbered
  BYDAY monthly or yearly only). COUNT is at most `MAX_COUNT`, INTERVAL at most `MAX_INTERVAL`.
* Bounds, so that no input can hang a service or blow its memory: a series has occurrences only in
  the `HORIZON` (a hundred years) after its start, an open-ended rule included; one expansion generates at
  most `MAX_EXPANDED` occurrences (more than a hundred years of daily ones); and dateutil itself, which walks
  period by period until year 9999 when a rule stops matching (``FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30``
  would take seconds), is run on dates moved forward by a whole number of 400-year Gregorian cycles
  (which repeat weekdays and leap days exactly), so that year 9999 comes soon after the horizon.
* An `Override` is keyed by its recurrence-id, the RFC 3339 UTC start the occurrence has in the series
  (`format_time`). It may move the occurrence, change its title, description or location, cancel it,
  and hold per-occurrence answers (`partstats`) that take precedence over the series' for that
  occurrence only. An override whose recurrence-id is not (or no longer) an occurrence is ignored.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final, Self

from dateutil import rrule as _du

from agenda.domain.model import PartStat, format_time, parse_stored_time, to_utc
from agenda.domain.validation import (
    ValidationError,
    parse_event_times,
    parse_time,
    validate_description,
    validate_location,
    validate_timezone,
    validate_title,
)

__all__ = [
    "HORIZON",
    "MAX_COUNT",
    "MAX_EXDATES",
    "MAX_EXPANDED",
    "MAX_INTERVAL",
    "MAX_OVERRIDES",
    "MAX_RDATES",
    "MAX_RRULE_LENGTH",
    "Occurrence",
    "Override",
    "Recurrence",
    "Rule",
    "horizon_end",
    "is_occurrence",
    "occurrence_times",
    "occurrences",
    "original_starts",
    "parse_override",
    "parse_recurrence",
    "parse_recurrence_id",
    "parse_rrule",
    "recheck",
    "series_end",
]

HORIZON: Final = timedelta(days=36525)  # a hundred years, leap days included
HORIZON_TEXT: Final = "a hundred years"  # how the refusals name it
MAX_COUNT: Final = 1000
MAX_INTERVAL: Final = 1000
MAX_RDATES: Final = 100
MAX_EXDATES: Final = 366
MAX_OVERRIDES: Final = 100
# At most one occurrence per day from the rule over the horizon, plus the RDATEs and DTSTART: this cap is
# never reached by a valid series; it bounds the work if that reasoning is ever broken.
MAX_EXPANDED: Final = HORIZON.days + MAX_RDATES + 1
MAX_RRULE_LENGTH: Final = 500
# The last start a series may have: its horizon, its occurrences' ends and dateutil's shifted dates
# must all stay well inside datetime's range (year 9999).
LATEST_START: Final = datetime(9800, 1, 1, tzinfo=UTC)

_FREQS: Final = {"DAILY": _du.DAILY, "WEEKLY": _du.WEEKLY, "MONTHLY": _du.MONTHLY, "YEARLY": _du.YEARLY}
_SUB_DAILY: Final = ("SECONDLY", "MINUTELY", "HOURLY")
_WEEKDAYS: Final = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# The canonical order of the parts in a normalised rule.
_PARTS: Final = (
    "FREQ",
    "UNTIL",
    "COUNT",
    "INTERVAL",
    "BYMONTH",
    "BYWEEKNO",
    "BYYEARDAY",
    "BYMONTHDAY",
    "BYDAY",
    "BYSETPOS",
    "WKST",
)
_TIME_OF_DAY_PARTS: Final = ("BYHOUR", "BYMINUTE", "BYSECOND")
_BYDAY_ITEM: Final = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_INTEGER: Final = re.compile(r"[+-]?\d{1,4}")
_UNTIL_DATE: Final = re.compile(r"\d{8}")
_UNTIL_UTC: Final = re.compile(r"\d{8}T\d{6}Z")
# One Gregorian cycle: 400 years are exactly 146097 days, 20871 weeks and 4800 months.
_CYCLE_YEARS: Final = 400
_PERIODS_PER_CYCLE: Final = {_du.DAILY: 146097, _du.WEEKLY: 20871, _du.MONTHLY: 4800, _du.YEARLY: 400}
# Where dateutil's walk must end in the shifted calendar: a year before its own end (9999), so that
# the dates it builds near the end of a period never overflow.
_SHIFTED_LIMIT_YEAR: Final = 9997


# ------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed RRULE within what this service accepts (see the module). `until` is UTC."""

    freq: str
    until: datetime | None = None
    count: int | None = None
    interval: int = 1
    bymonth: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byday: tuple[tuple[int | None, int], ...] = ()  # (ordinal or None, weekday 0 = Monday)
    bysetpos: tuple[int, ...] = ()
    wkst: int | None = None

    def text(self) -> str:
        """The normalised RRULE: parts in a fixed order, lists sorted, defaults left out, UNTIL in UTC."""
        parts = [f"FREQ={self.freq}"]
        if self.until is not None:
            parts.append(f"UNTIL={self.until.strftime('%Y%m%dT%H%M%SZ')}")
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        for name, values in (
            ("BYMONTH", self.bymonth),
            ("BYWEEKNO", self.byweekno),
            ("BYYEARDAY", self.byyearday),
            ("BYMONTHDAY", self.bymonthday),
        ):
            if values:
                parts.append(f"{name}={','.join(map(str, values))}")
        if self.byday:
            days = [f"{'' if n is None else n}{_WEEKDAYS[day]}" for n, day in self.byday]
            parts.append(f"BYDAY={','.join(days)}")
        if self.bysetpos:
            parts.append(f"BYSETPOS={','.join(map(str, self.bysetpos))}")
        if self.wkst is not None:
            parts.append(f"WKST={_WEEKDAYS[self.wkst]}")
        return ";".join(parts)

    def dateutil_rule(self, dtstart: datetime, until: datetime) -> _du.rrule:
        """dateutil's rule from naive local `dtstart`, walking no further than the first match after
        naive local `until` (COUNT and UNTIL are applied by the caller, on the merged set)."""
        weekdays = [_du.weekday(day, n) for n, day in self.byday]
        return _du.rrule(
            _FREQS[self.freq],
            dtstart=dtstart,
            interval=self.interval,
            wkst=self.wkst,
            until=until,
            bysetpos=self.bysetpos or None,
            bymonth=self.bymonth or None,
            bymonthday=self.bymonthday or None,
            byyearday=self.byyearday or None,
            byweekno=self.byweekno or None,
            byweekday=weekdays or None,
            # The time of day is dtstart's; without these dateutil takes the same from dtstart too,
            # but saying so keeps any default from adding occurrences within a day.
            byhour=dtstart.hour,
            byminute=dtstart.minute,
            bysecond=dtstart.second,
            cache=False,
        )


def _integers(
    name: str, raw: str, field: str, low: int, high: int, *, signed: bool = True
) -> tuple[int, ...]:
    values: set[int] = set()
    for item in raw.split(","):
        if not _INTEGER.fullmatch(item):
            raise ValidationError(field, f"{name} must be a list of integers, not {raw!r}")
        value = int(item)
        if value == 0 or abs(value) < low or abs(value) > high or (value < 0 and not signed):
            bounds = f"{low} to {high}" + (f" or -{high} to -{low}" if signed else "")
            raise ValidationError(field, f"{name} values must be {bounds}, not {value}")
        values.add(value)
    return tuple(sorted(values))


def _weekday(raw: str, name: str, field: str) -> int:
    if raw not in _WEEKDAYS:
        raise ValidationError(field, f"{name} must be one of {', '.join(_WEEKDAYS)}, not {raw!r}")
    return _WEEKDAYS.index(raw)


def _until(raw: str, zone: zoneinfo.ZoneInfo, field: str) -> datetime:
    """UNTIL as UTC: a UTC date-time, or a date meaning the end of that local day (inclusive)."""
    try:
        if _UNTIL_UTC.fullmatch(raw):
            return datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if _UNTIL_DATE.fullmatch(raw):
            day = datetime.strptime(raw, "%Y%m%d").date()
            return datetime.combine(day, time(23, 59, 59), zone).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(field, f"UNTIL {raw} is not a real date") from None
    raise ValidationError(
        field, f"UNTIL must be a date (20310301) or a UTC date-time (20310301T090000Z), not {raw!r}"
    )


def parse_rrule(text: Any, timezone: str = "UTC", field: str = "recurrence.rrule") -> Rule:
    """An RRULE value (``FREQ=WEEKLY;BYDAY=MO,WE``, optionally prefixed ``RRULE:``) checked against what
    this service accepts (see the module); a date-only UNTIL is the end of that day in `timezone`.

    Raises `ValidationError(field, reason)` naming the offending part.
    """
    if not isinstance(text, str):
        raise ValidationError(field, "must be a string such as FREQ=WEEKLY;BYDAY=MO")
    raw = text.strip()
    if raw[:6].upper() == "RRULE:":
        raw = raw[6:]
    if not raw:
        raise ValidationError(field, "must not be empty")
    if len(raw) > MAX_RRULE_LENGTH:
        raise ValidationError(field, f"must have at most {MAX_RRULE_LENGTH} characters")
    parts: dict[str, str] = {}
    for piece in raw.split(";"):
        name, sep, value = piece.partition("=")
        name = name.strip().upper()
        value = value.strip().upper()
        if not sep or not name or not value:
            raise ValidationError(field, f"is not an RRULE: {piece!r} is not NAME=VALUE")
        if name in parts:
            raise ValidationError(field, f"repeats {name}")
        if name in _TIME_OF_DAY_PARTS:
            raise ValidationError(field, f"{name} is not supported: the time of day is the event's start")
        if name not in _PARTS:
            raise ValidationError(field, f"has an unknown or unsupported part {name}")
        parts[name] = value
    freq = parts.get("FREQ")
    if freq is None:
        raise ValidationError(field, "must have a FREQ, such as FREQ=WEEKLY")
    if freq in _SUB_DAILY:
        raise ValidationError(field, f"FREQ={freq} is not supported: events recur at most daily")
    if freq not in _FREQS:
        raise ValidationError(field, "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValidationError(field, "must not have both COUNT and UNTIL")

    rule: dict[str, Any] = {"freq": freq}
    if "UNTIL" in parts:
        rule["until"] = _until(parts["UNTIL"], zoneinfo.ZoneInfo(timezone), field)
    for name, key, high in (("COUNT", "count", MAX_COUNT), ("INTERVAL", "interval", MAX_INTERVAL)):
        if name in parts:
            if "," in parts[name]:
                raise ValidationError(field, f"{name} must be one integer")
            (rule[key],) = _integers(name, parts[name], field, 1, high, signed=False)
    if "BYMONTH" in parts:
        rule["bymonth"] = _integers("BYMONTH", parts["BYMONTH"], field, 1, 12, signed=False)
    for name, key, high, freqs in (
        ("BYWEEKNO", "byweekno", 53, ("YEARLY",)),
        ("BYYEARDAY", "byyearday", 366, ("YEARLY",)),
        ("BYMONTHDAY", "bymonthday", 31, ("DAILY", "MONTHLY", "YEARLY")),
    ):
        if name in parts:
            if freq not in freqs:
                raise ValidationError(field, f"{name} is not allowed with FREQ={freq}")
            rule[key] = _integers(name, parts[name], field, 1, high)
    if "BYDAY" in parts:
        days: set[tuple[int | None, int]] = set()
        for item in parts["BYDAY"].split(","):
            match = _BYDAY_ITEM.fullmatch(item)
            if match is None:
                raise ValidationError(field, f"BYDAY items must be like MO, 1MO or -1FR, not {item!r}")
            ordinal = None if match[1] is None else int(match[1])
            if ordinal is not None:
                if freq not in ("MONTHLY", "YEARLY") or (freq == "YEARLY" and "BYWEEKNO" in parts):
                    raise ValidationError(
                        field, "a numbered BYDAY (1MO) needs FREQ=MONTHLY, or YEARLY without BYWEEKNO"
                    )
                high = 5 if freq == "MONTHLY" else 53
                if ordinal == 0 or abs(ordinal) > high:
                    raise ValidationError(field, f"BYDAY numbers must be 1 to {high} or -{high} to -1")
            days.add((ordinal, _WEEKDAYS.index(match[2])))
        rule["byday"] = tuple(sorted(days, key=lambda d: (d[1], d[0] or 0)))
    if "BYSETPOS" in parts:
        if not any(name.startswith("BY") and name != "BYSETPOS" for name in parts):
            raise ValidationError(field, "BYSETPOS needs another BYxxx part to choose from")
        rule["bysetpos"] = _integers("BYSETPOS", parts["BYSETPOS"], field, 1, 366)
    if "WKST" in parts:
        rule["wkst"] = _weekday(parts["WKST"], "WKST", field)
    return Rule(**rule)


@lru_cache(maxsize=1024)
def _stored_rule(text: str, timezone: str) -> Rule:
    # A stored rule was validated when it was written; parsing it again per listing is wasted work.
    return parse_rrule(text, timezone)


# ------------------------------------------------------------------------------------ the records


def _utc_tuple(values: Any, what: str) -> tuple[datetime, ...]:
    return tuple(sorted({to_utc(v, what) for v in values}))


@dataclass(frozen=True, slots=True)
class Recurrence:
    """How an event recurs: a normalised RRULE (None: only RDATEs), extra dates, excluded dates (UTC),
    and the IANA time zone whose wall clock the rule follows."""

    rrule: str | None
    rdates: tuple[datetime, ...] = ()
    exdates: tuple[datetime, ...] = ()
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rdates", _utc_tuple(self.rdates, "rdate"))
        object.__setattr__(self, "exdates", _utc_tuple(self.exdates, "exdate"))
        if self.rrule is None and not self.rdates:
            raise ValueError("a recurrence needs an RRULE or RDATEs")

    @property
    def rule(self) -> Rule | None:
        return None if self.rrule is None else _stored_rule(self.rrule, self.timezone)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rrule": self.rrule,
            "rdates": [format_time(t) for t in self.rdates],
            "exdates": [format_time(t) for t in self.exdates],
            "timezone": self.timezone,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            rrule=data.get("rrule"),
            rdates=tuple(parse_stored_time(t) for t in data.get("rdates") or ()),
            exdates=tuple(parse_stored_time(t) for t in data.get("exdates") or ()),
            timezone=data.get("timezone") or "UTC",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """What differs for one occurrence (None: as in the series). `partstats` are per-occurrence answers."""

    start: datetime | None = None
    end: datetime | None = None
    title: str | None = None
    description: str | None = None
    location: str | None = None
    cancelled: bool = False
    partstats: Mapping[str, PartStat] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.start is None) != (self.end is None):
            raise ValueError("an override moves an occurrence with both start and end, or neither")
        if self.start is not None and self.end is not None:
            object.__setattr__(self, "start", to_utc(self.start, "override start"))
            object.__setattr__(self, "end", to_utc(self.end, "override end"))
        object.__setattr__(self, "partstats", {u: PartStat(s) for u, s in self.partstats.items()})

    @property
    def empty(self) -> bool:
        """Whether the override changes nothing (and so need not be kept)."""
        return self == Override()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.start is not None and self.end is not None:
            data["start"], data["end"] = format_time(self.start), format_time(self.end)
        for name in ("title", "description", "location"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.cancelled:
            data["cancelled"] = True
        if self.partstats:
            data["partstats"] = {u: s.value for u, s in sorted(self.partstats.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        start, end = data.get("start"), data.get("end")
        return cls(
            start=None if start is None else parse_stored_time(start),
            end=None if end is None else parse_stored_time(end),
            title=data.get("title"),
            description=data.get("description"),
            location=data.get("location"),
            cancelled=bool(data.get("cancelled", False)),
            partstats={u: PartStat(s) for u, s in (data.get("partstats") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence: its recurrence-id, its times (moved when overridden) and its override if any."""

    recurrence_id: str
    start: datetime
    end: datetime
    override: Override | None = None


# -------------------------------------------------------------------------------------- expansion


def _plus(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def occurrence_times(
    original: datetime, duration: timedelta, override: Override | None
) -> tuple[datetime, datetime]:
    """Where the occurrence whose original start is `original` is: where its override moved it, or at its
    original start for the series' `duration`."""
    if override is not None and override.start is not None and override.end is not None:
        return override.start, override.end
    return original, _plus(original, duration)


def horizon_end(start: datetime) -> datetime:
    """The instant from which a series starting at `start` has no occurrence (see `HORIZON`)."""
    return _plus(start, HORIZON)


def _shift_years(rule: Rule, last_year: int) -> int:
    """Whole Gregorian cycles to move the rule forward so its walk ends soon after `last_year`, keeping
    the rule's grid of periods (INTERVAL counts from DTSTART) exactly where it was."""
    periods = _PERIODS_PER_CYCLE[_FREQS[rule.freq]]
    step = rule.interval // math.gcd(periods, rule.interval)  # cycles per aligned shift
    span = _CYCLE_YEARS * step
    return span * max(0, (_SHIFTED_LIMIT_YEAR - last_year) // span)


def _move_years(moment: datetime, years: int) -> datetime:
    # Exact: a multiple of 400 years keeps the month, the day (Feb 29 included) and the weekday.
    return moment.replace(year=moment.year + years)


def _rule_starts(rule: Rule, start: datetime, zone: zoneinfo.ZoneInfo, stop: datetime) -> Iterator[datetime]:
    """The UTC starts the RRULE yields from `start` (UTC) on, in order, until at least `stop` (UTC)."""
    local_start = start.astimezone(zone).replace(tzinfo=None)
    # A day past `stop` in local time, whatever the offsets: dateutil stops at its first match after it.
    local_stop = _plus(stop, timedelta(days=2)).astimezone(zone).replace(tzinfo=None)
    shift = _shift_years(rule, local_stop.year)
    walk = rule.dateutil_rule(_move_years(local_start, shift), _move_years(local_stop, shift))
    try:
        for local in walk:
            yield _move_years(local, -shift).replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        return  # the shifted walk reached the end of datetime's range: nothing more to find


def _original_starts(start: datetime, recurrence: Recurrence, stop: datetime) -> Iterator[datetime]:
    """The series' occurrences' original starts before `stop` and within the horizon, in order:
    DTSTART, the rule's (COUNT and UNTIL applied), the RDATEs, less the EXDATEs; at most MAX_EXPANDED."""
    stop = min(stop, horizon_end(start))
    rule = recurrence.rule
    zone = zoneinfo.ZoneInfo(recurrence.timezone)

    def from_rule() -> Iterator[datetime]:
        yield start  # DTSTART is the first occurrence and counts towards COUNT
        if rule is None:
            return
        produced = 1
        for moment in _rule_starts(rule, start, zone, stop):
            if moment <= start:
                continue
            if (rule.count is not None and produced >= rule.count) or (
                rule.until is not None and moment > rule.until
            ):
                return
            produced += 1
            yield moment

    excluded = set(recurrence.exdates)
    previous = None
    for expanded, moment in enumerate(heapq.merge(from_rule(), recurrence.rdates)):
        if moment >= stop or expanded >= MAX_EXPANDED:
            return
        if moment == previous or moment in excluded:
            continue
        previous = moment
        yield moment


def original_starts(start: datetime, recurrence: Recurrence, stop: datetime) -> list[datetime]:
    """The original starts (recurrence-ids as instants) of the series' occurrences before `stop`."""
    return list(_original_starts(start, recurrence, stop))


def is_occurrence(start: datetime, recurrence: Recurrence, recurrence_id: str) -> bool:
    """Whether `recurrence_id` (stored form) is an occurrence of the series starting at `start`."""
    original = parse_stored_time(recurrence_id)
    return original in _original_starts(start, recurrence, _plus(original, timedelta(seconds=1)))


def occurrences(
    start: datetime,
    end: datetime,
    recurrence: Recurrence,
    window_start: datetime,
    window_end: datetime,
    overrides: Mapping[str, Override] | None = None,
) -> Iterator[Occurrence]:
    """The occurrences of the series [start, end) + `recurrence` overlapping [window_start, window_end),
    in the order of their original starts: moved ones where they were moved to (into the window or out
    of it), cancelled ones left out. Bounded by the horizon and `MAX_EXPANDED` whatever the window."""
    overrides = overrides or {}
    duration = end - start
    # An occurrence whose original start is after the window may have been moved into it.
    last = window_end
    for rid, override in overrides.items():
        if override.start is not None and override.start < window_end:
            original = parse_stored_time(rid)
            last = max(last, _plus(original, timedelta(seconds=1)))
    for original in _original_starts(start, recurrence, last):
        rid = format_time(original)
        override = overrides.get(rid)
        if override is not None and override.cancelled:
            continue
        begin, finish = occurrence_times(original, duration, override)
        if begin < window_end and finish > window_start:
            yield Occurrence(rid, begin, finish, override)


def series_end(
    start: datetime, end: datetime, recurrence: Recurrence, overrides: Mapping[str, Override] | None = None
) -> datetime:
    """The latest end of any occurrence (moved ones included): nothing of the series happens after it.
    Open-ended series are bounded by the horizon, so this needs no expansion for them."""
    rule = recurrence.rule
    latest = end
    if rule is not None and rule.count is None and rule.until is None:
        latest = _plus(horizon_end(start), end - start)
    else:
        for occurrence in occurrences(start, end, recurrence, start, horizon_end(start), overrides):
            latest = max(latest, occurrence.end)
    for override in (overrides or {}).values():
        if override.end is not None:
            latest = max(latest, override.end)
    return max(latest, max(recurrence.rdates, default=start) + (end - start))


# ------------------------------------------------------------------------------------- API input


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object")
    return value


def _times(value: Any, field: str, limit: int) -> list[datetime]:
    if not isinstance(value, list):
        raise ValidationError(field, "must be an array of RFC 3339 date-times")
    if len(value) > limit:
        raise ValidationError(field, f"must have at most {limit} date-times")
    return [parse_time(item, f"{field}[{index}]") for index, item in enumerate(value)]


def parse_recurrence_id(value: Any, field: str = "occurrence") -> str:
    """A recurrence-id as a client sends it (any RFC 3339 time), normalised to the stored form."""
    return format_time(parse_time(value, field))


def parse_recurrence(
    value: Any, *, start: datetime, end: datetime, default_timezone: str = "UTC", field: str = "recurrence"
) -> Recurrence:
    """``{"rrule", "rdates", "exdates", "timezone"}`` from a request, checked for the event [start, end).

    Refused, naming ``recurrence.<part>``: an RRULE this service does not accept (`parse_rrule`), an
    UNTIL before the start, a rule that yields nothing in the horizon, occurrences that would overlap
    each other, RDATEs before the start or past the horizon, EXDATEs that are not occurrences, or
    EXDATEs that remove every occurrence.
    """
    body = _object(value, field)
    for key in body:
        if key not in ("rrule", "rdates", "exdates", "timezone"):
            raise ValidationError(
                f"{field}.{key}", "is not a recurrence field (rrule, rdates, exdates, timezone)"
            )
    timezone = validate_timezone(body.get("timezone", default_timezone), f"{field}.timezone")
    if start >= LATEST_START:
        raise ValidationError(field, f"a recurring event must start before {LATEST_START.year}")
    raw_rule = body.get("rrule")
    rule = None if raw_rule is None else parse_rrule(raw_rule, timezone, f"{field}.rrule")
    rdates = _times(body.get("rdates", []), f"{field}.rdates", MAX_RDATES)
    exdates = _times(body.get("exdates", []), f"{field}.exdates", MAX_EXDATES)
    if rule is None and not rdates:
        raise ValidationError(f"{field}.rrule", "is required unless rdates are given")
    limit = horizon_end(start)
    for index, moment in enumerate(rdates):
        if not start < moment < limit:
            raise ValidationError(
                f"{field}.rdates[{index}]", f"must be after the event's start and within {HORIZON_TEXT} of it"
            )
    if rule is not None and rule.until is not None and rule.until < start:
        raise ValidationError(f"{field}.rrule", "UNTIL is before the event's start")
    text = None if rule is None else rule.text()
    if text is not None and len(list(_original_starts(start, Recurrence(text, (), (), timezone), limit))) < 2:
        raise ValidationError(
            f"{field}.rrule", f"yields no occurrence after the event's start within {HORIZON_TEXT}"
        )
    recurrence = Recurrence(text, tuple(rdates), (), timezone)
    every = list(_original_starts(start, recurrence, limit))
    duration = end - start
    for earlier, later in itertools.pairwise(every):
        if later - earlier < duration:
            raise ValidationError(
                f"{field}.rrule",
                f"makes occurrences overlap: the event outlasts the gap after {format_time(earlier)}",
            )
    starts = set(every)
    for index, moment in enumerate(exdates):
        if moment not in starts:
            raise ValidationError(f"{field}.exdates[{index}]", "is not the start of an occurrence")
    if starts <= set(exdates):
        raise ValidationError(f"{field}.exdates", "exclude every occurrence")
    return Recurrence(recurrence.rrule, recurrence.rdates, tuple(exdates), timezone)


def parse_override(value: Any, *, field: str = "") -> Override:
    """An override's changes from a request: start and end (together), title, description, location.
    Errors name ``<field>.<key>``, or just the key when `field` is empty (the fields of a whole body)."""

    def name(key: str) -> str:
        return f"{field}.{key}" if field else key

    body = _object(value, field or "body")
    allowed = ("start", "end", "title", "description", "location")
    for key in body:
        if key not in allowed:
            raise ValidationError(name(key), f"is not an occurrence field ({', '.join(allowed)})")
    start = end = None
    if "start" in body or "end" in body:
        if "start" not in body or "end" not in body:
            raise ValidationError(name("end" if "start" in body else "start"), "is required to move it")
        start, end = parse_event_times(
            body["start"], body["end"], start_field=name("start"), end_field=name("end"), what="occurrence"
        )
    text = {
        key: check(body[key], name(key))
        for key, check in (
            ("title", validate_title),
            ("description", validate_description),
            ("location", validate_location),
        )
        if key in body
    }
    return Override(start=start, end=end, **text)


def recheck(
    recurrence: Recurrence, *, start: datetime, end: datetime, field: str = "recurrence"
) -> Recurrence:
    """`recurrence` checked again for a series moved to [start, end) (as `parse_recurrence` checks it);
    EXDATEs that are no longer occurrences are dropped rather than refused."""
    checked = parse_recurrence({**recurrence.to_dict(), "exdates": []}, start=start, end=end, field=field)
    starts = set(_original_starts(start, checked, horizon_end(start)))
    kept = tuple(t for t in recurrence.exdates if t in starts)
    return Recurrence(checked.rrule, checked.rdates, kept, checked.timezone)
