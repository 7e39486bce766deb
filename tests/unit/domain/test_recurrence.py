"""Recurrence: RRULE checking, expansion in the series' time zone across DST, RDATE/EXDATE, overrides,
and the bounds that keep any rule, however adversarial, from hanging a service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.domain.model import PartStat, format_time
from agenda.domain.recurrence import (
    HORIZON,
    MAX_COUNT,
    MAX_EXPANDED,
    Override,
    Recurrence,
    occurrences,
    parse_override,
    parse_recurrence,
    parse_recurrence_id,
    parse_rrule,
    series_end,
)
from agenda.domain.validation import ValidationError

HOUR = timedelta(hours=1)
# Monday 6 January 2031, 09:00 in Madrid (CET, UTC+1).
MADRID_MONDAY = datetime(2031, 1, 6, 8, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def starts(
    start: datetime,
    recurrence: Recurrence,
    window: tuple[datetime, datetime],
    overrides: dict[str, Override] | None = None,
    duration: timedelta = HOUR,
) -> list[datetime]:
    return [o.start for o in occurrences(start, start + duration, recurrence, *window, overrides)]


def series(rule: str | None, start: datetime = MADRID_MONDAY, tz: str = "UTC", **body: object) -> Recurrence:
    return parse_recurrence({"rrule": rule, "timezone": tz, **body}, start=start, end=start + HOUR)


# ------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("RRULE:freq=weekly;byday=we,mo", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("BYDAY=MO;FREQ=WEEKLY;INTERVAL=1;WKST=SU", "FREQ=WEEKLY;BYDAY=MO;WKST=SU"),
        ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=-1FR"),
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"),
        ("FREQ=YEARLY;BYMONTH=3,1;BYMONTHDAY=1", "FREQ=YEARLY;BYMONTH=1,3;BYMONTHDAY=1"),
        ("FREQ=DAILY;UNTIL=20310301T120000Z", "FREQ=DAILY;UNTIL=20310301T120000Z"),
        ("FREQ=DAILY;COUNT=10;INTERVAL=2", "FREQ=DAILY;COUNT=10;INTERVAL=2"),
    ],
)
def test_a_rule_is_normalised(text: str, normal: str) -> None:
    assert parse_rrule(text).text() == normal


def test_a_date_until_is_the_end_of_that_local_day() -> None:
    assert parse_rrule("FREQ=DAILY;UNTIL=20310301", "Europe/Madrid").text() == (
        "FREQ=DAILY;UNTIL=20310301T225959Z"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (7, "must be a string"),
        ("", "must not be empty"),
        ("x" * 501, "at most 500"),
        ("WEEKLY", "not NAME=VALUE"),
        ("FREQ=WEEKLY;FREQ=DAILY", "repeats FREQ"),
        ("BYDAY=MO", "must have a FREQ"),
        ("FREQ=FORTNIGHTLY", "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY"),
        ("FREQ=SECONDLY", "FREQ=SECONDLY is not supported"),
        ("FREQ=MINUTELY", "FREQ=MINUTELY is not supported"),
        ("FREQ=HOURLY;COUNT=3", "FREQ=HOURLY is not supported"),
        ("FREQ=DAILY;BYHOUR=9,17", "BYHOUR is not supported"),
        ("FREQ=DAILY;BYMINUTE=0", "BYMINUTE is not supported"),
        ("FREQ=YEARLY;BYEASTER=0", "unknown or unsupported part BYEASTER"),
        ("FREQ=DAILY;X-NAME=1", "unknown or unsupported part X-NAME"),
        ("FREQ=DAILY;COUNT=2;UNTIL=20310301T000000Z", "both COUNT and UNTIL"),
        (f"FREQ=DAILY;COUNT={MAX_COUNT + 1}", f"1 to {MAX_COUNT}"),
        ("FREQ=DAILY;COUNT=0", "COUNT values"),
        ("FREQ=DAILY;COUNT=1,2", "COUNT must be one integer"),
        ("FREQ=DAILY;INTERVAL=1001", "INTERVAL values must be 1 to 1000"),
        ("FREQ=DAILY;INTERVAL=-2", "INTERVAL values"),
        ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL must be a date"),
        ("FREQ=DAILY;UNTIL=20310301T120000", "UNTIL must be a date"),
        ("FREQ=DAILY;UNTIL=20310230", "not a real date"),
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH values"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY values"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY values"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY is not allowed with FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYYEARDAY=1", "BYYEARDAY is not allowed with FREQ=MONTHLY"),
        ("FREQ=DAILY;BYWEEKNO=1", "BYWEEKNO is not allowed with FREQ=DAILY"),
        ("FREQ=WEEKLY;BYDAY=1MO", "numbered BYDAY"),
        ("FREQ=YEARLY;BYWEEKNO=1;BYDAY=1MO", "numbered BYDAY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY numbers must be 1 to 5"),
        ("FREQ=WEEKLY;BYDAY=MONDAY", "BYDAY items"),
        ("FREQ=WEEKLY;BYSETPOS=1", "BYSETPOS needs another BYxxx"),
        ("FREQ=WEEKLY;WKST=XX", "WKST must be one of"),
        ("FREQ=DAILY;BYMONTH=1,,2", "BYMONTH must be a list of integers"),
    ],
)
def test_a_bad_rule_is_refused_with_a_reason(text: object, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        parse_rrule(text)
    assert caught.value.field == "recurrence.rrule"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"rrule": "FREQ=DAILY;UNTIL=20301231T000000Z"}, "recurrence.rrule", "UNTIL is before"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "recurrence.rrule", "yields no occurrence"),
        ({"rrule": "FREQ=WEEKLY;BYDAY=MO;BYSETPOS=2"}, "recurrence.rrule", "yields no occurrence"),
        ({"rrule": "FREQ=DAILY;COUNT=1"}, "recurrence.rrule", "yields no occurrence"),
        ({"rrule": "FREQ=DAILY", "colour": "red"}, "recurrence.colour", "not a recurrence field"),
        ({"rrule": "FREQ=DAILY", "timezone": "Mars/Base"}, "recurrence.timezone", "not a known"),
        ({"rdates": []}, "recurrence.rrule", "required unless rdates"),
        ({"rrule": "FREQ=DAILY", "rdates": "2031-01-07T08:00:00Z"}, "recurrence.rdates", "must be an array"),
        ({"rrule": "FREQ=DAILY", "rdates": ["soon"]}, "recurrence.rdates[0]", "RFC 3339"),
        ({"rrule": "FREQ=DAILY", "rdates": ["2031-01-05T08:00:00Z"]}, "recurrence.rdates[0]", "after the"),
        (
            {"rrule": "FREQ=DAILY", "rdates": ["2145-01-05T08:00:00Z"]},
            "recurrence.rdates[0]",
            "a hundred years",
        ),
        (
            {"rrule": "FREQ=DAILY", "exdates": ["2031-01-07T09:00:00Z"]},
            "recurrence.exdates[0]",
            "not the start",
        ),
        (
            {"rrule": "FREQ=DAILY;COUNT=2", "exdates": ["2031-01-06T08:00:00Z", "2031-01-07T08:00:00Z"]},
            "recurrence.exdates",
            "exclude every occurrence",
        ),
        (
            {"rrule": "FREQ=DAILY", "rdates": ["2031-01-07T08:00:00Z"] * 101},
            "recurrence.rdates",
            "at most 100",
        ),
    ],
)
def test_a_bad_recurrence_names_its_part(body: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        parse_recurrence(body, start=MADRID_MONDAY, end=MADRID_MONDAY + HOUR)
    assert caught.value.field == field


def test_occurrences_that_would_overlap_each_other_are_refused() -> None:
    with pytest.raises(ValidationError, match="overlap") as caught:
        parse_recurrence({"rrule": "FREQ=DAILY"}, start=MADRID_MONDAY, end=MADRID_MONDAY + 25 * HOUR)
    assert caught.value.field == "recurrence.rrule"
    parse_recurrence({"rrule": "FREQ=DAILY"}, start=MADRID_MONDAY, end=MADRID_MONDAY + 24 * HOUR)


def test_the_timezone_defaults_to_the_callers_and_the_record_round_trips() -> None:
    recurrence = parse_recurrence(
        {
            "rrule": "FREQ=WEEKLY",
            "rdates": ["2031-01-08T10:00:00+02:00"],
            "exdates": ["2031-01-13T08:00:00Z"],
        },
        start=MADRID_MONDAY,
        end=MADRID_MONDAY + HOUR,
        default_timezone="Europe/Madrid",
    )
    assert recurrence.timezone == "Europe/Madrid"
    assert recurrence.to_dict() == {
        "rrule": "FREQ=WEEKLY",
        "rdates": ["2031-01-08T08:00:00Z"],
        "exdates": ["2031-01-13T08:00:00Z"],
        "timezone": "Europe/Madrid",
    }
    assert Recurrence.from_dict(recurrence.to_dict()) == recurrence


def test_a_late_start_is_refused_before_anything_overflows() -> None:
    start = utc(9990, 1, 1)
    with pytest.raises(ValidationError, match="before 9800"):
        parse_recurrence({"rrule": "FREQ=DAILY"}, start=start, end=start + HOUR)


# ------------------------------------------------------------------------------------ expansion


def test_weekly_in_madrid_stays_at_nine_local_across_both_dst_changes() -> None:
    weekly = series("FREQ=WEEKLY;BYDAY=MO", tz="Europe/Madrid")
    got = starts(MADRID_MONDAY, weekly, (utc(2031, 3, 20), utc(2031, 11, 4)))
    # Summer time from Sunday 30 March to Sunday 26 October 2031: 07:00Z, then 08:00Z again.
    assert got[:2] == [utc(2031, 3, 24, 8), utc(2031, 3, 31, 7)]
    assert got[-2:] == [utc(2031, 10, 27, 8), utc(2031, 11, 3, 8)]
    assert {t.astimezone(ZoneInfo("Europe/Madrid")).hour for t in got} == {9}


def test_daily_in_new_york_keeps_local_time_in_march_and_november() -> None:
    start = utc(2031, 3, 7, 14)  # 09:00 EST
    daily = series("FREQ=DAILY", start=start, tz="America/New_York")
    # DST starts Sunday 9 March 2031 and ends Sunday 2 November 2031.
    assert starts(start, daily, (utc(2031, 3, 8), utc(2031, 3, 11))) == [
        utc(2031, 3, 8, 14),
        utc(2031, 3, 9, 13),
        utc(2031, 3, 10, 13),
    ]
    assert starts(start, daily, (utc(2031, 11, 1), utc(2031, 11, 4))) == [
        utc(2031, 11, 1, 13),
        utc(2031, 11, 2, 14),
        utc(2031, 11, 3, 14),
    ]


def test_a_utc_rule_does_not_follow_anyones_dst() -> None:
    weekly = series("FREQ=WEEKLY", tz="UTC")
    assert {t.hour for t in starts(MADRID_MONDAY, weekly, (utc(2031, 1, 1), utc(2032, 1, 1)))} == {8}


def test_a_local_time_in_the_spring_gap_takes_the_offset_before_it_and_an_ambiguous_one_the_first() -> None:
    # 02:30 does not exist in New York on 9 March 2031; 01:30 happens twice on 2 November 2031.
    start = utc(2031, 3, 8, 7, 30)  # 02:30 EST
    daily = series("FREQ=DAILY", start=start, tz="America/New_York")
    assert starts(start, daily, (utc(2031, 3, 9), utc(2031, 3, 11))) == [
        utc(2031, 3, 9, 7, 30),  # read as EST, the offset before the gap
        utc(2031, 3, 10, 6, 30),  # 02:30 EDT
    ]
    start = utc(2031, 11, 1, 5, 30)  # 01:30 EDT
    daily = series("FREQ=DAILY", start=start, tz="America/New_York")
    assert starts(start, daily, (start, utc(2031, 11, 4))) == [
        start,
        utc(2031, 11, 2, 5, 30),  # the first 01:30, still EDT
        utc(2031, 11, 3, 6, 30),  # 01:30 EST
    ]


def test_dtstart_is_always_the_first_occurrence_and_counts_for_count() -> None:
    # A Monday start with a Tuesday rule: Monday, then two Tuesdays (COUNT=3 counts the Monday).
    rule = series("FREQ=WEEKLY;BYDAY=TU;COUNT=3")
    assert starts(MADRID_MONDAY, rule, (utc(2031, 1, 1), utc(2032, 1, 1))) == [
        MADRID_MONDAY,
        utc(2031, 1, 7, 8),
        utc(2031, 1, 14, 8),
    ]


def test_until_is_inclusive_and_count_stops_the_series() -> None:
    until = series("FREQ=DAILY;UNTIL=20310108T080000Z")
    assert len(starts(MADRID_MONDAY, until, (utc(2031, 1, 1), utc(2032, 1, 1)))) == 3
    count = series("FREQ=MONTHLY;COUNT=4")
    assert starts(MADRID_MONDAY, count, (utc(2031, 1, 1), utc(2040, 1, 1)))[-1] == utc(2031, 4, 6, 8)


def test_rdates_add_and_exdates_remove() -> None:
    recurrence = series(
        "FREQ=WEEKLY;COUNT=3",
        rdates=["2031-01-08T15:00:00Z", "2031-01-13T08:00:00Z"],  # the second one is an occurrence already
        exdates=["2031-01-13T08:00:00Z"],
    )
    assert starts(MADRID_MONDAY, recurrence, (utc(2031, 1, 1), utc(2031, 2, 1))) == [
        MADRID_MONDAY,
        utc(2031, 1, 8, 15),
        utc(2031, 1, 20, 8),
    ]


def test_rdates_alone_make_a_series() -> None:
    recurrence = series(None, rdates=["2031-02-01T10:00:00Z"])
    assert starts(MADRID_MONDAY, recurrence, (utc(2031, 1, 1), utc(2031, 3, 1))) == [
        MADRID_MONDAY,
        utc(2031, 2, 1, 10),
    ]


def test_the_window_is_half_open_and_an_occurrence_running_into_it_counts() -> None:
    daily = series("FREQ=DAILY")
    assert starts(MADRID_MONDAY, daily, (utc(2031, 1, 7, 9), utc(2031, 1, 8, 8))) == []
    assert starts(MADRID_MONDAY, daily, (utc(2031, 1, 7, 8, 59), utc(2031, 1, 8, 8, 1))) == [
        utc(2031, 1, 7, 8),
        utc(2031, 1, 8, 8),
    ]


def test_a_series_that_began_years_ago_is_found_in_todays_window() -> None:
    weekly = series("FREQ=WEEKLY", start=utc(2023, 1, 2, 8))
    assert starts(utc(2023, 1, 2, 8), weekly, (utc(2031, 1, 6), utc(2031, 1, 7))) == [utc(2031, 1, 6, 8)]


def test_an_open_ended_series_stops_at_the_horizon() -> None:
    daily = series("FREQ=DAILY")
    last = MADRID_MONDAY + HORIZON
    assert starts(MADRID_MONDAY, daily, (last - 2 * HOUR * 24, last + HOUR * 24 * 30)) == [
        last - 2 * HOUR * 24,
        last - HOUR * 24,
    ]
    assert series_end(MADRID_MONDAY, MADRID_MONDAY + HOUR, daily) == last + HOUR


def test_series_end_is_the_last_occurrences_end_moved_ones_included() -> None:
    count = series("FREQ=WEEKLY;COUNT=3")
    assert series_end(MADRID_MONDAY, MADRID_MONDAY + HOUR, count) == utc(2031, 1, 20, 9)
    moved = {"2031-01-13T08:00:00Z": Override(start=utc(2031, 3, 1, 8), end=utc(2031, 3, 1, 9))}
    assert series_end(MADRID_MONDAY, MADRID_MONDAY + HOUR, count, moved) == utc(2031, 3, 1, 9)


# ------------------------------------------------------------------------------------ overrides


def test_an_override_moves_an_occurrence_into_and_out_of_a_window() -> None:
    weekly = series("FREQ=WEEKLY")
    moved = {
        # The 13 January occurrence moves to 30 January; the 27 January one moves to 14 January.
        "2031-01-13T08:00:00Z": Override(start=utc(2031, 1, 30, 8), end=utc(2031, 1, 30, 9)),
        "2031-01-27T08:00:00Z": Override(start=utc(2031, 1, 14, 8), end=utc(2031, 1, 14, 9)),
    }
    window = (utc(2031, 1, 12), utc(2031, 1, 19))
    got = list(occurrences(MADRID_MONDAY, MADRID_MONDAY + HOUR, weekly, *window, moved))
    assert [(o.recurrence_id, o.start) for o in got] == [("2031-01-27T08:00:00Z", utc(2031, 1, 14, 8))]
    window = (utc(2031, 1, 26), utc(2031, 2, 2))
    got = list(occurrences(MADRID_MONDAY, MADRID_MONDAY + HOUR, weekly, *window, moved))
    assert [(o.recurrence_id, o.start) for o in got] == [("2031-01-13T08:00:00Z", utc(2031, 1, 30, 8))]


def test_a_cancelled_occurrence_is_left_out_and_an_orphan_override_ignored() -> None:
    weekly = series("FREQ=WEEKLY")
    overrides = {
        "2031-01-13T08:00:00Z": Override(cancelled=True),
        "2031-01-14T08:00:00Z": Override(start=utc(2031, 1, 15, 8), end=utc(2031, 1, 15, 9)),  # no such
        "2031-01-20T08:00:00Z": Override(title="Moved room", partstats={"bob": PartStat.DECLINED}),
    }
    got = list(
        occurrences(
            MADRID_MONDAY, MADRID_MONDAY + HOUR, weekly, utc(2031, 1, 10), utc(2031, 1, 25), overrides
        )
    )
    assert [o.start for o in got] == [utc(2031, 1, 20, 8)]
    assert got[0].override is not None
    assert got[0].override.partstats == {"bob": PartStat.DECLINED}


def test_an_override_round_trips_and_knows_when_it_is_empty() -> None:
    override = Override(
        start=utc(2031, 1, 1, 9),
        end=utc(2031, 1, 1, 10),
        title="T",
        cancelled=True,
        partstats={"bob": "declined"},
    )
    assert Override.from_dict(override.to_dict()) == override
    assert Override.from_dict({}).empty
    assert not Override(location="").empty
    with pytest.raises(ValueError, match="both start and end"):
        Override(start=utc(2031, 1, 1))


def test_override_input_is_checked_field_by_field() -> None:
    assert parse_override({"title": " New "}, field="o").title == "New"
    for body, field in (
        ({"start": "2031-01-01T10:00:00Z"}, "o.end"),
        ({"start": "2031-01-01T10:00:00Z", "end": "2031-01-01T09:00:00Z"}, "o.end"),
        ({"start": "2031-01-01T10:00:00Z", "end": "2031-02-02T10:00:00Z"}, "o.end"),  # over 31 days
        ({"start": "Monday", "end": "2031-01-01T09:00:00Z"}, "o.start"),
        ({"title": ""}, "o.title"),
        ({"colour": "red"}, "o.colour"),
    ):
        with pytest.raises(ValidationError) as caught:
            parse_override(body, field="o")
        assert caught.value.field == field
    with pytest.raises(ValidationError, match="after the occurrence start"):
        parse_override({"start": "2031-01-01T10:00:00Z", "end": "2031-01-01T10:00:00Z"})
    assert parse_recurrence_id("2031-01-13T09:00:00+01:00") == "2031-01-13T08:00:00Z"


# ---------------------------------------------------------------------------------- adversarial

ADVERSARIAL = [
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=DAILY;BYMONTH=4;BYMONTHDAY=-31",
    "FREQ=DAILY;INTERVAL=23;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=DAILY;INTERVAL=997;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=WEEKLY;BYDAY=MO;BYSETPOS=2",
    "FREQ=WEEKLY;BYMONTH=2;BYDAY=MO,TU;BYSETPOS=-3",
    "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYDAY=5MO;BYMONTH=2;BYMONTHDAY=1",
    "FREQ=YEARLY;BYWEEKNO=53;BYMONTH=6",
    "FREQ=YEARLY;BYYEARDAY=366;BYMONTH=1",
    "FREQ=YEARLY;INTERVAL=1000;BYYEARDAY=-366",
]


@pytest.mark.parametrize("rule", ADVERSARIAL)
def test_a_rule_that_matches_rarely_or_never_is_refused(rule: str) -> None:
    with pytest.raises(ValidationError, match="yields no occurrence"):
        series(rule)


@pytest.mark.parametrize("rule", ADVERSARIAL)
def test_expanding_a_never_matching_rule_ends_whatever_the_window(rule: str) -> None:
    # As if stored without the check: only DTSTART, found without walking dateutil to year 9999.
    recurrence = Recurrence(parse_rrule(rule).text())
    for start in (MADRID_MONDAY, utc(1, 1, 1, 8), utc(9799, 12, 31, 8)):
        got = starts(start, recurrence, (start, start + HORIZON + timedelta(days=365)))
        assert got[0] == start
        assert all(t < start + HORIZON for t in got)


def test_the_densest_series_expands_at_most_the_cap() -> None:
    rdates = [MADRID_MONDAY + timedelta(hours=h, minutes=30) for h in range(99)]
    dense = Recurrence(parse_rrule("FREQ=DAILY").text(), tuple(rdates))
    got = starts(MADRID_MONDAY, dense, (utc(1, 1, 1), utc(9999, 1, 1)), duration=timedelta(minutes=30))
    assert len(got) <= MAX_EXPANDED
    assert len(got) == HORIZON.days + 99


@settings(max_examples=60, deadline=None)
@given(
    freq=st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]),
    interval=st.integers(1, 1000),
    months=st.sets(st.integers(1, 12), max_size=3),
    monthdays=st.sets(st.integers(-31, 31).filter(bool), max_size=3),
    setpos=st.sets(st.integers(-366, 366).filter(bool), max_size=2),
    days=st.sets(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]), max_size=3),
)
def test_any_accepted_or_refused_rule_is_decided(
    freq: str, interval: int, months: set[int], monthdays: set[int], setpos: set[int], days: set[str]
) -> None:
    parts = [f"FREQ={freq}", f"INTERVAL={interval}"]
    if months:
        parts.append("BYMONTH=" + ",".join(map(str, months)))
    if monthdays and freq != "WEEKLY":
        parts.append("BYMONTHDAY=" + ",".join(map(str, monthdays)))
    if days:
        parts.append("BYDAY=" + ",".join(days))
    if setpos and len(parts) > 2:
        parts.append("BYSETPOS=" + ",".join(map(str, setpos)))
    try:
        recurrence = series(";".join(parts))
    except ValidationError:
        pass
    else:
        window = (utc(2035, 1, 1), utc(2036, 1, 1))
        assert all(window[0] - HOUR < t < window[1] for t in starts(MADRID_MONDAY, recurrence, window))


def test_every_recurrence_id_is_the_utc_form_of_the_original_start() -> None:
    weekly = series("FREQ=WEEKLY", tz="Europe/Madrid")
    got = list(occurrences(MADRID_MONDAY, MADRID_MONDAY + HOUR, weekly, utc(2031, 6, 1), utc(2031, 6, 10)))
    assert (
        [o.recurrence_id for o in got]
        == [format_time(o.start) for o in got]
        == [
            "2031-06-02T07:00:00Z",
            "2031-06-09T07:00:00Z",
        ]
    )
