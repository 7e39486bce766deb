"""API input is parsed into domain values, or refused with an error naming the field and the reason."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenda.domain.model import EventKind, PartStat, Visibility
from agenda.domain.validation import (
    ValidationError,
    check_group_size,
    parse_event_times,
    parse_query_range,
    parse_time,
    validate_description,
    validate_display_name,
    validate_event_details,
    validate_event_kind,
    validate_group_name,
    validate_level,
    validate_location,
    validate_participants,
    validate_password,
    validate_response_status,
    validate_slot_duration,
    validate_timezone,
    validate_title,
    validate_username,
    validate_visibility,
)


def refused(func: Any, *args: Any, field: str, reason: str = "", **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        func(*args, **kwargs)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


# ------------------------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T10:00:00Z", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26t10:00:00z", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T05:00:00-05:00", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T11:30:00+01:30", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T10:00:00.999999Z", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T10:00:00-00:00", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_rfc3339_and_stores_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "start")
    assert parsed == expected
    assert parsed.tzinfo is UTC
    assert parsed.microsecond == 0


@pytest.mark.parametrize("text", ["2026-11-26T10:00:00", "2026-11-26T10:00", "2026-11-26 10:00:00"])
def test_parse_time_refuses_naive_times(text: str) -> None:
    refused(parse_time, text, "start", field="start", reason="must include a UTC offset")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "2026-11-26",
        "2026-11-26T10:00Z",
        "20261126T100000Z",
        "2026-11-26T10:00:00+0100",
        " 2026-11-26T10:00:00Z",
    ],
)
def test_parse_time_refuses_non_rfc3339(text: str) -> None:
    refused(parse_time, text, "from", field="from", reason="RFC 3339")


@pytest.mark.parametrize(
    "text", ["2026-02-30T10:00:00Z", "2026-11-26T24:00:00Z", "2026-11-26T10:00:60Z", "2026-13-01T00:00:00Z"]
)
def test_parse_time_refuses_impossible_dates(text: str) -> None:
    refused(parse_time, text, "start", field="start", reason="not a real date")


def test_parse_time_refuses_impossible_offsets_and_overflow() -> None:
    refused(parse_time, "2026-11-26T10:00:00+24:00", "start", field="start", reason="impossible UTC offset")
    refused(parse_time, "2026-11-26T10:00:00+01:60", "start", field="start", reason="impossible UTC offset")
    refused(parse_time, "0001-01-01T00:00:00+01:00", "start", field="start", reason="not a real date")


@pytest.mark.parametrize("value", [None, 1700000000, True, ["2026-11-26T10:00:00Z"]])
def test_parse_time_refuses_non_strings(value: object) -> None:
    refused(parse_time, value, "start", field="start", reason="must be a string")


def test_event_times_order_and_length() -> None:
    start, end = parse_event_times("2026-11-26T10:00:00Z", "2026-11-26T10:00:01Z")
    assert end - start == timedelta(seconds=1)
    # 11:00 at +01:00 is 10:00Z: the same instant as the start, so a zero-length event.
    refused(
        parse_event_times, "2026-11-26T10:00:00Z", "2026-11-26T11:00:00+01:00", field="end", reason="after"
    )
    refused(parse_event_times, "2026-11-26T10:00:00Z", "2026-11-26T09:00:00Z", field="end", reason="after")
    ok_start, ok_end = parse_event_times("2026-11-01T00:00:00Z", "2026-12-02T00:00:00Z")
    assert ok_end - ok_start == timedelta(days=31)
    refused(parse_event_times, "2026-11-01T00:00:00Z", "2026-12-02T00:00:01Z", field="end", reason="31 days")
    refused(parse_event_times, "nope", "2026-12-02T00:00:01Z", field="start")
    refused(parse_event_times, "2026-11-01T00:00:00Z", "nope", field="end")


def test_event_times_custom_field_names() -> None:
    refused(
        parse_event_times,
        "2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00Z",
        start_field="s",
        end_field="e",
        field="e",
    )


def test_query_range() -> None:
    start, end = parse_query_range("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")  # 366 days, leap year
    assert end - start == timedelta(days=366)
    refused(parse_query_range, "2024-01-01T00:00:00Z", "2025-01-01T00:00:01Z", field="to", reason="366 days")
    refused(parse_query_range, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", field="to", reason="after")
    refused(parse_query_range, "2024-01-01T00:00:00", "2024-01-02T00:00:00Z", field="from", reason="offset")


# -------------------------------------------------------------------------------------------- text


def test_title_limits() -> None:
    assert validate_title("  Standup  ") == "Standup"
    assert validate_title("x" * 200) == "x" * 200
    assert validate_title("Reunión 🎉") == "Reunión 🎉"
    refused(validate_title, "", field="title", reason="blank")
    refused(validate_title, "   ", field="title", reason="blank")
    refused(validate_title, "x" * 201, field="title", reason="at most 200")
    refused(validate_title, "a\nb", field="title", reason="line breaks")
    refused(validate_title, "a\x00b", field="title", reason="control")
    refused(validate_title, 5, field="title", reason="must be a string, not number")
    refused(validate_title, None, field="title", reason="not null")


def test_group_name_limits() -> None:
    assert validate_group_name("Team") == "Team"
    refused(validate_group_name, "", field="name", reason="blank")
    refused(validate_group_name, "x" * 201, field="name", reason="at most 200")


def test_description_limits() -> None:
    assert validate_description("") == ""
    assert validate_description("line 1\nline 2\r\n\tindented") == "line 1\nline 2\r\n\tindented"
    assert len(validate_description("é" * 10_000)) == 10_000
    refused(validate_description, "x" * 10_001, field="description", reason="at most 10000")
    refused(validate_description, "bell\x07", field="description", reason="control")
    refused(validate_description, ["x"], field="description", reason="not array")


def test_location_limits() -> None:
    assert validate_location("") == ""
    assert validate_location("x" * 500) == "x" * 500
    refused(validate_location, "x" * 501, field="location", reason="at most 500")
    refused(validate_location, "a\nb", field="location")


def test_display_name_limits() -> None:
    assert validate_display_name("Alice A.") == "Alice A."
    assert validate_display_name("") == ""
    refused(validate_display_name, "x" * 101, field="display_name", reason="at most 100")


@pytest.mark.parametrize("name", ["abc", "alice", "a.b-c_d", "x" * 32, "007", "..."])
def test_username_valid(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ab", "3 to 32"),
        ("x" * 33, "3 to 32"),
        ("Alice", "lower-case"),
        ("al ice", "lower-case"),
        ("alicé", "lower-case"),
        ("a/b", "lower-case"),
        ("al@ce", "lower-case"),
        ("abc\n", "lower-case"),
    ],
)
def test_username_invalid(name: str, reason: str) -> None:
    refused(validate_username, name, field="username", reason=reason)


def test_username_custom_field() -> None:
    refused(validate_username, 42, "target", field="target", reason="string")


def test_password_limits_and_no_echo() -> None:
    assert validate_password("8 chars!") == "8 chars!"
    assert validate_password("p" * 1024) == "p" * 1024
    error = refused(validate_password, "short12", field="password", reason="at least 8")
    assert "short12" not in str(error)
    refused(validate_password, "p" * 1025, field="password", reason="at most 1024")
    refused(validate_password, None, field="password", reason="string")


@pytest.mark.parametrize("zone", ["UTC", "America/Havana", "Europe/Madrid", "America/Argentina/Buenos_Aires"])
def test_timezone_valid(zone: str) -> None:
    assert validate_timezone(zone) == zone


@pytest.mark.parametrize(
    "zone",
    ["", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "localtime", "Europe/", "x" * 65, "UTC "],
)
def test_timezone_invalid(zone: str) -> None:
    refused(validate_timezone, zone, field="timezone")


def test_enums() -> None:
    assert validate_visibility("public") is Visibility.PUBLIC
    refused(validate_visibility, "secret", field="visibility", reason="'private' or 'public'")
    assert validate_event_kind("appointment") is EventKind.APPOINTMENT
    refused(validate_event_kind, "party", field="kind", reason="'personal'")
    assert validate_response_status("declined") is PartStat.DECLINED
    refused(validate_response_status, "needs-action", field="status", reason="'accepted'")
    refused(validate_response_status, "maybe", field="status")


def test_participants() -> None:
    assert validate_participants(["bob", "carol"], organizer="alice") == ["bob", "carol"]
    assert validate_participants([], organizer="alice") == []
    refused(validate_participants, "bob", organizer="alice", field="participants", reason="array")
    refused(
        validate_participants, ["bob", "Carol"], organizer="alice", field="participants[1]", reason="lower"
    )
    refused(validate_participants, ["bob", 3], organizer="alice", field="participants[1]", reason="string")
    refused(
        validate_participants,
        ["bob", "alice"],
        organizer="alice",
        field="participants[1]",
        reason="organizer",
    )
    refused(
        validate_participants,
        ["bob", "dan", "bob"],
        organizer="alice",
        field="participants[2]",
        reason="repeats",
    )
    many = [f"user{i:03d}" for i in range(501)]
    refused(validate_participants, many, organizer="alice", field="participants", reason="at most 500")
    assert len(validate_participants(many[:500], organizer="alice")) == 500


def test_slot_duration() -> None:
    assert validate_slot_duration(1) == timedelta(minutes=1)
    assert validate_slot_duration(1440) == timedelta(days=1)
    refused(validate_slot_duration, 0, field="duration", reason="between 1 and 1440")
    refused(validate_slot_duration, 1441, field="duration", reason="between 1 and 1440")
    refused(validate_slot_duration, 30.0, field="duration", reason="integer")
    refused(validate_slot_duration, True, field="duration", reason="not boolean")
    refused(validate_slot_duration, "30", field="duration", reason="integer")


def test_level() -> None:
    assert validate_level(0) == 0
    refused(validate_level, -1, field="level", reason="between 0")
    refused(validate_level, 1001, field="level")
    refused(validate_level, False, field="level", reason="integer")


def test_group_size() -> None:
    check_group_size(499)
    check_group_size(["m"] * 499)
    refused(check_group_size, 500, field="members", reason="at most 500")
    refused(check_group_size, ["m"] * 498, 3, field="members")


def test_event_details_check_every_field_and_default_the_optional_ones() -> None:
    body = {"title": "Plan", "start": "2031-01-01T10:00:00Z", "end": "2031-01-01T12:00:00+01:00"}
    details = validate_event_details(body)
    assert details == {
        "title": "Plan",
        "start": datetime(2031, 1, 1, 10, tzinfo=UTC),
        "end": datetime(2031, 1, 1, 11, tzinfo=UTC),
        "description": "",
        "location": "",
        "visibility": Visibility.PRIVATE,
    }
    for field, bad in (("title", ""), ("end", "2031-01-01T09:00:00Z"), ("visibility", "secret")):
        with pytest.raises(ValidationError) as info:
            validate_event_details({**body, field: bad})
        assert info.value.field == field
