"""Recurring events through the User Service's real app: create with a recurrence (in the account's
time zone by default), one listed item per occurrence, conflicts on occurrences, answering, moving and
cancelling one occurrence, bad rules refused with the part named and nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from agenda.db.memory import MemoryDBClient

from ..backends import PASSWORD, Caller, ok, problem

MONDAY = "2031-01-06T08:00:00Z"  # 09:00 in Madrid
WINTER = "from=2031-01-05T00:00:00Z&to=2031-01-20T00:00:00Z"


@pytest.fixture
def erin(client: FlaskClient) -> Caller:
    """A caller whose account is in Europe/Madrid."""
    body = {"username": "erin", "password": PASSWORD, "timezone": "Europe/Madrid"}
    ok(client.post("/v1/auth/register", json=body), 201)
    return Caller(client, "erin")


def create_series(
    caller: Caller, rule: str = "FREQ=WEEKLY;BYDAY=MO", start: str = MONDAY, hours: int = 1, **fields: Any
) -> dict[str, Any]:
    end = start.replace(f"T{start[11:13]}", f"T{int(start[11:13]) + hours:02d}")
    recurrence = {"rrule": rule, **fields.pop("recurrence", {})}
    body = {"title": "Weekly", "start": start, "end": end, "recurrence": recurrence, **fields}
    return ok(caller.post("/v1/events", json=body), 201)


def listing(caller: Caller, query: str = WINTER) -> list[dict[str, Any]]:
    return ok(caller.get(f"/v1/events?{query}"))["events"]


def test_a_series_follows_the_accounts_time_zone_and_lists_one_item_per_occurrence(erin: Caller) -> None:
    series = create_series(erin)
    assert series["recurrence"] == {
        "rrule": "FREQ=WEEKLY;BYDAY=MO",
        "rdates": [],
        "exdates": [],
        "timezone": "Europe/Madrid",
    }
    assert series["overrides"] == {}
    items = listing(erin)
    assert [(e["id"], e["recurrence_id"], e["start"], e["end"]) for e in items] == [
        (series["id"], "2031-01-06T08:00:00Z", "2031-01-06T08:00:00Z", "2031-01-06T09:00:00Z"),
        (series["id"], "2031-01-13T08:00:00Z", "2031-01-13T08:00:00Z", "2031-01-13T09:00:00Z"),
    ]
    assert all("overrides" not in e and e["conflicts"] == [] for e in items)
    # After the change to summer time (30 March) it is still 09:00 in Madrid: 07:00Z.
    summer = listing(erin, "from=2031-03-30T00:00:00Z&to=2031-04-01T00:00:00Z")
    assert [e["start"] for e in summer] == ["2031-03-31T07:00:00Z"]
    # A year later, found although the series began long before the listed range.
    later = listing(erin, "from=2032-01-05T00:00:00Z&to=2032-01-06T00:00:00Z")
    assert [e["start"] for e in later] == ["2032-01-05T08:00:00Z"]


def test_an_explicit_time_zone_wins_and_plain_events_list_unchanged(erin: Caller) -> None:
    plain = ok(
        erin.post(
            "/v1/events", json={"title": "P", "start": "2031-01-07T10:00:00Z", "end": "2031-01-07T11:00:00Z"}
        ),
        201,
    )
    series = create_series(erin, recurrence={"timezone": "UTC"})
    assert series["recurrence"]["timezone"] == "UTC"
    items = listing(erin)
    assert [(e["id"], e.get("recurrence_id")) for e in items] == [
        (series["id"], "2031-01-06T08:00:00Z"),
        (plain["id"], None),
        (series["id"], "2031-01-13T08:00:00Z"),
    ]
    assert not {"recurrence", "overrides", "recurrence_id"} & set(items[1])


@pytest.mark.parametrize(
    ("recurrence", "field", "reason"),
    [
        ({"rrule": "FREQ=SECONDLY"}, "recurrence.rrule", "at most daily"),
        ({"rrule": "FREQ=HOURLY;INTERVAL=1"}, "recurrence.rrule", "at most daily"),
        ({"rrule": "FREQ=DAILY;BYHOUR=1,2,3"}, "recurrence.rrule", "BYHOUR"),
        ({"rrule": "FREQ=DAILY;COUNT=100000"}, "recurrence.rrule", "COUNT"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "recurrence.rrule", "no occurrence"),
        ({"rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31"}, "recurrence.rrule", "no occurrence"),
        ({"rrule": "FREQ=DAILY;UNTIL=20300101T000000Z"}, "recurrence.rrule", "UNTIL is before"),
        ({"rrule": "nonsense"}, "recurrence.rrule", "NAME=VALUE"),
        ({"rrule": 5}, "recurrence.rrule", "must be a string"),
        ({"rrule": "FREQ=DAILY", "timezone": "Nowhere/Land"}, "recurrence.timezone", "IANA"),
        (
            {"rrule": "FREQ=DAILY", "exdates": ["2031-01-07T09:00:00Z"]},
            "recurrence.exdates[0]",
            "not the start",
        ),
        ({"rrule": "FREQ=DAILY", "every": 2}, "recurrence.every", "not a recurrence field"),
    ],
)
def test_a_bad_recurrence_is_a_400_naming_the_part_and_writes_nothing(
    erin: Caller, db: MemoryDBClient, recurrence: dict[str, Any], field: str, reason: str
) -> None:
    revision = db.machine.revision
    body = {"title": "T", "start": MONDAY, "end": "2031-01-06T09:00:00Z", "recurrence": recurrence}
    response = erin.post("/v1/events", json=body)
    assert reason in problem(response, 400, field=field)["detail"]
    assert db.machine.revision == revision
    problem(erin.post("/v1/events", json={**body, "recurrence": "FREQ=DAILY"}), 400, field="recurrence")


def test_occurrences_conflict_both_ways(erin: Caller) -> None:
    series = create_series(erin)
    clash = {"title": "Dentist", "start": "2031-06-02T07:30:00Z", "end": "2031-06-02T08:30:00Z"}
    assert problem(erin.post("/v1/events", json=clash), 409, type="event-conflict")["conflicts"] == [
        series["id"]
    ]
    dentist = ok(erin.post("/v1/events?allow_conflict=true", json=clash), 201)
    june = listing(erin, "from=2031-06-02T00:00:00Z&to=2031-06-03T00:00:00Z")
    assert [(e["id"], e["conflicts"]) for e in june] == [
        (series["id"], [dentist["id"]]),
        (dentist["id"], [series["id"]]),
    ]
    assert [
        e["id"]
        for e in ok(erin.get("/v1/conflicts?from=2031-06-01T00:00:00Z&to=2031-06-08T00:00:00Z"))["conflicts"]
    ] == [
        series["id"],
        dentist["id"],
    ]
    # A new series is checked occurrence by occurrence, in its time zone (the account's).
    clash = problem(
        erin.post(
            "/v1/events",
            json={
                "title": "Gym",
                "start": "2031-01-08T07:30:00Z",
                "end": "2031-01-08T08:30:00Z",
                "recurrence": {"rrule": "FREQ=DAILY"},
            },
        ),
        409,
    )
    # Every Monday from 13 January; the dentist is missed: in June the gym, 08:30 in Madrid, is 06:30Z.
    assert clash["conflicts"] == [series["id"]]


def test_a_participant_declines_one_occurrence_and_the_organizer_sees_it(erin: Caller, bob: Caller) -> None:
    series = create_series(erin, participants=["bob"])
    path = f"/v1/events/{series['id']}/respond"
    ok(bob.post(path, json={"status": "accepted"}))
    answered = ok(bob.post(path, json={"status": "declined", "occurrence": "2031-01-13T09:00:00+01:00"}))
    assert answered["overrides"] == {"2031-01-13T08:00:00Z": {"partstats": {"bob": "declined"}}}
    assert [e["recurrence_id"] for e in listing(bob)] == ["2031-01-06T08:00:00Z"]
    organizer_view = ok(erin.get(f"/v1/events/{series['id']}"))
    assert organizer_view["overrides"]["2031-01-13T08:00:00Z"]["partstats"] == {"bob": "declined"}
    assert [e["participants"]["bob"]["status"] for e in listing(erin)] == ["accepted", "declined"]
    problem(
        bob.post(path, json={"status": "declined", "occurrence": "2031-01-14T08:00:00Z"}),
        400,
        field="occurrence",
    )
    problem(bob.post(path, json={"status": "declined", "occurrence": "Monday"}), 400, field="occurrence")


def test_accepting_one_occurrence_checks_only_that_one(erin: Caller, bob: Caller) -> None:
    series = create_series(erin, participants=["bob"])
    ok(
        bob.post(
            "/v1/events", json={"title": "B", "start": "2031-01-13T08:00:00Z", "end": "2031-01-13T09:00:00Z"}
        ),
        201,
    )
    path = f"/v1/events/{series['id']}/respond"
    problem(bob.post(path, json={"status": "accepted"}), 409, type="event-conflict")
    ok(bob.post(path, json={"status": "accepted", "occurrence": "2031-01-06T08:00:00Z"}))
    conflict = bob.post(path, json={"status": "accepted", "occurrence": "2031-01-13T08:00:00Z"})
    problem(conflict, 409, type="event-conflict")


def test_the_organizer_moves_and_cancels_single_occurrences(erin: Caller, bob: Caller) -> None:
    series = create_series(erin, participants=["bob"])
    path = f"/v1/events/{series['id']}"
    moved = ok(
        erin.patch(
            path,
            json={
                "occurrence": "2031-01-13T08:00:00Z",
                "start": "2031-01-14T15:00:00Z",
                "end": "2031-01-14T16:00:00Z",
                "title": "Tuesday instead",
            },
        )
    )
    assert moved["overrides"]["2031-01-13T08:00:00Z"]["start"] == "2031-01-14T15:00:00Z"
    assert [(e["start"], e["title"]) for e in listing(bob)] == [
        ("2031-01-06T08:00:00Z", "Weekly"),
        ("2031-01-14T15:00:00Z", "Tuesday instead"),
    ]
    assert erin.delete(f"{path}?occurrence=2031-01-06T08:00:00Z").status_code == 204
    assert [e["start"] for e in listing(bob)] == ["2031-01-14T15:00:00Z"]
    assert ok(bob.get(path))["status"] == "confirmed"  # the series stands
    problem(erin.delete(f"{path}?occurrence=2031-01-07T08:00:00Z"), 400, field="occurrence")
    problem(bob.delete(f"{path}?occurrence=2031-01-20T08:00:00Z"), 403, type="organizer-only")
    problem(
        erin.patch(path, json={"occurrence": "2031-01-20T08:00:00Z", "start": "2031-01-21T08:00:00Z"}),
        400,
        field="end",
    )
    problem(
        erin.patch(path, json={"occurrence": "2031-01-20T08:00:00Z", "visibility": "public"}),
        400,
        field="visibility",
    )
    ok(
        erin.post(
            "/v1/events", json={"title": "X", "start": "2031-01-22T08:00:00Z", "end": "2031-01-22T09:00:00Z"}
        ),
        201,
    )
    onto = {
        "occurrence": "2031-01-20T08:00:00Z",
        "start": "2031-01-22T08:30:00Z",
        "end": "2031-01-22T09:30:00Z",
    }
    problem(erin.patch(path, json=onto), 409, type="event-conflict")


def test_patching_the_rule_moving_the_series_and_ending_it(erin: Caller) -> None:
    series = create_series(erin)
    path = f"/v1/events/{series['id']}"
    ok(erin.patch(path, json={"occurrence": "2031-01-13T08:00:00Z", "title": "Special"}))
    weekly_wednesday = ok(erin.patch(path, json={"recurrence": {"rrule": "FREQ=WEEKLY;BYDAY=WE"}}))
    assert weekly_wednesday["overrides"] == {}  # 13 January is no longer an occurrence
    assert [e["start"] for e in listing(erin)] == [MONDAY, "2031-01-08T08:00:00Z", "2031-01-15T08:00:00Z"]
    moved = ok(erin.patch(path, json={"start": "2031-01-06T10:00:00Z", "end": "2031-01-06T11:00:00Z"}))
    assert moved["recurrence"]["rrule"] == "FREQ=WEEKLY;BYDAY=WE"
    assert listing(erin)[1]["start"] == "2031-01-08T10:00:00Z"
    plain = ok(erin.patch(path, json={"recurrence": None}))
    assert "recurrence" not in plain
    assert [e["start"] for e in listing(erin)] == ["2031-01-06T10:00:00Z"]
    problem(erin.patch(path, json={"recurrence": {"rrule": "FREQ=MINUTELY"}}), 400, field="recurrence.rrule")


def test_an_invitation_to_a_series_is_listed_once(erin: Caller, bob: Caller) -> None:
    series = create_series(erin, participants=["bob"])
    assert [e["id"] for e in ok(bob.get("/v1/invitations"))["invitations"]] == [series["id"]]
