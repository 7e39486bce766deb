"""Recurring group events through the Group Service's real app (the User Service on the same DB for
the members' side): fanned out as series, seen occurrence by occurrence in the group agenda and the
free slots, and a flat group's occurrence cancelled by one member's decline of it alone."""

from __future__ import annotations

from typing import Any

from ..backends import Caller, ok, problem
from .test_views import team

MONDAY = "2031-01-06T09:00:00Z"
TWO_WEEKS = "from=2031-01-06T00:00:00Z&to=2031-01-20T00:00:00Z"


def weekly(organizer: Caller, group_id: str, **fields: Any) -> Any:
    body = {
        "title": "Sync",
        "start": MONDAY,
        "end": "2031-01-06T10:00:00Z",
        "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"},
        **fields,
    }
    return organizer.post(f"/v1/groups/{group_id}/events", json=body)


def test_a_hierarchical_series_reaches_juniors_and_shows_in_the_group_agenda_and_free_slots(
    alice: Caller, bob: Caller, users: Any
) -> None:
    group_id = team(alice, bob, hierarchical=True)
    series = ok(weekly(alice, group_id), 201)
    assert series["recurrence"]["rrule"] == "FREQ=WEEKLY;COUNT=4"
    assert series["participants"]["bob"]["status"] == "accepted"
    bobs = ok(users("bob").get(f"/v1/events?{TWO_WEEKS}"))["events"]
    assert [e["recurrence_id"] for e in bobs] == ["2031-01-06T09:00:00Z", "2031-01-13T09:00:00Z"]
    agenda = ok(bob.get(f"/v1/groups/{group_id}/agenda?{TWO_WEEKS}"))["members"]
    assert [(b["start"], b["recurrence_id"]) for b in agenda["alice"]] == [
        ("2031-01-06T09:00:00Z", "2031-01-06T09:00:00Z"),
        ("2031-01-13T09:00:00Z", "2031-01-13T09:00:00Z"),
    ]
    day = "from=2031-01-13T08:00:00Z&to=2031-01-13T12:00:00Z&duration=60"
    slots = ok(alice.get(f"/v1/groups/{group_id}/free?{day}"))["slots"]
    assert slots == [
        {"start": "2031-01-13T08:00:00Z", "end": "2031-01-13T09:00:00Z"},
        {"start": "2031-01-13T10:00:00Z", "end": "2031-01-13T12:00:00Z"},
    ]


def test_a_flat_groups_occurrence_is_cancelled_by_one_decline_of_it(
    alice: Caller, bob: Caller, carol: Caller, users: Any
) -> None:
    group_id = team(alice, bob, carol)
    series = ok(weekly(alice, group_id), 201)
    path = f"/v1/events/{series['id']}/respond"
    for name in ("bob", "carol"):
        ok(users(name).post(path, json={"status": "accepted"}))
    assert ok(users("alice").get(f"/v1/events/{series['id']}"))["status"] == "confirmed"
    ok(users("carol").post(path, json={"status": "declined", "occurrence": "2031-01-13T09:00:00Z"}))
    listed = ok(users("alice").get(f"/v1/events?{TWO_WEEKS}"))["events"]
    assert [e["recurrence_id"] for e in listed] == ["2031-01-06T09:00:00Z"]  # the cancelled one is gone
    assert ok(users("alice").get(f"/v1/events/{series['id']}"))["status"] == "confirmed"


def test_a_bad_or_clashing_recurring_group_event_is_refused(alice: Caller, bob: Caller, users: Any) -> None:
    group_id = team(alice, bob)
    bad = weekly(alice, group_id, recurrence={"rrule": "FREQ=MINUTELY"})
    problem(bad, 400, field="recurrence.rrule")
    clash = {"title": "Mine", "start": "2031-01-20T09:30:00Z", "end": "2031-01-20T10:30:00Z"}
    mine = ok(users("alice").post("/v1/events", json=clash), 201)
    assert problem(weekly(alice, group_id), 409, type="event-conflict")["conflicts"] == [mine["id"]]
