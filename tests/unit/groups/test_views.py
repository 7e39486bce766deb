"""Every route of the Group Service, through its real app over the in-process DB.

Success paths, the error statuses each route answers (400 naming the field, 401, 403, 404, 409), and
the stores' branches a cluster only reaches by bad luck: a lost race (`db.contend`), a lost answer
whose write was or was not applied (`db.unknown_outcome`), and a DB without a leader (`db.outage`).
The User Service's app shares the DB where a test needs a personal event or a notification.
`test_every_route_has_view_tests` fails when a route is added without tests.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from agenda.calendar import MAX_INVITEES
from agenda.calendar.layout import group_key, membership_prefix
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.domain.model import Group, Membership
from agenda.groups.store import GroupStore

from ..backends import (
    START,
    Caller,
    Sample,
    covered,
    covers,
    either_outcome,
    ok,
    problem,
    refused_without_a_caller,
    refused_without_the_secret,
    unavailable_without_a_db_leader,
    url_rules,
)
from ..backends import at as _at
from .conftest import Users

NO_GROUP = "0" * 32


def at(hour: float) -> str:
    return _at(10, hour)


DAY = f"from={at(8)}&to={at(18)}"


def new_group(owner: Caller, name: str = "Team", **fields: Any) -> dict[str, Any]:
    return ok(owner.post("/v1/groups", json={"name": name, **fields}), 201)


def invite(actor: Caller, group_id: str, username: str, level: int | None = None) -> Any:
    body: dict[str, Any] = {"username": username}
    if level is not None:
        body["level"] = level
    return actor.post(f"/v1/groups/{group_id}/members", json=body)


def team(owner: Caller, *members: Caller, hierarchical: bool = False) -> str:
    """A group of `owner` with `members` active (levels 1, 2, ... when hierarchical); its id."""
    group_id = new_group(owner, hierarchical=hierarchical)["id"]
    for level, member in enumerate(members, start=1):
        ok(invite(owner, group_id, member.name, level if hierarchical else None), 201)
        ok(member.post(f"/v1/groups/{group_id}/membership", json={"accept": True}))
    return group_id


def group_event(
    organizer: Caller, group_id: str, start: float = 10, end: float = 11, query: str = "", **fields: Any
) -> Any:
    body = {"title": "Sync", "start": at(start), "end": at(end), **fields}
    return organizer.post(f"/v1/groups/{group_id}/events{query}", json=body)


def notes(users: Users, name: str) -> list[tuple[str, str]]:
    items = ok(users(name).get("/v1/notifications"))["notifications"]
    return [(n["kind"], n["detail"]) for n in items]


def test_every_route_has_view_tests(app: Any) -> None:
    rules = url_rules(app)
    assert len(rules - {"GET /v1/health"}) == 9
    assert covered(globals()) == rules


# -------------------------------------------------------------------------------- every route at once

SAMPLES: dict[str, Sample] = {
    "POST /v1/groups": ("POST", "/v1/groups", {"name": "Team"}),
    "GET /v1/groups": ("GET", "/v1/groups", None),
    "GET /v1/groups/<group_id>": ("GET", f"/v1/groups/{NO_GROUP}", None),
    "POST /v1/groups/<group_id>/members": ("POST", f"/v1/groups/{NO_GROUP}/members", {"username": "bob"}),
    "POST /v1/groups/<group_id>/membership": ("POST", f"/v1/groups/{NO_GROUP}/membership", {"accept": True}),
    "DELETE /v1/groups/<group_id>/members/<username>": ("DELETE", f"/v1/groups/{NO_GROUP}/members/bob", None),
    "POST /v1/groups/<group_id>/events": (
        "POST",
        f"/v1/groups/{NO_GROUP}/events",
        {"title": "T", "start": at(10), "end": at(11)},
    ),
    "GET /v1/groups/<group_id>/agenda": ("GET", f"/v1/groups/{NO_GROUP}/agenda?{DAY}", None),
    "GET /v1/groups/<group_id>/free": ("GET", f"/v1/groups/{NO_GROUP}/free?{DAY}", None),
}


def test_the_samples_are_every_route_but_health(app: Any) -> None:
    assert set(SAMPLES) == url_rules(app) - {"GET /v1/health"}


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_nothing_but_health_answers_without_the_gateway_secret(client: FlaskClient, route: str) -> None:
    refused_without_the_secret(client, SAMPLES[route])


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_every_group_route_needs_a_caller(client: FlaskClient, route: str) -> None:
    refused_without_a_caller(client, SAMPLES[route])


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_without_a_db_leader_every_route_is_503(alice: Caller, db: MemoryDBClient, route: str) -> None:
    unavailable_without_a_db_leader(alice, db, SAMPLES[route])


@covers("GET /v1/health")
def test_health_answers_without_the_secret(app: Any) -> None:
    assert ok(app.test_client().get("/v1/health"))["service"] == "groups"


# ----------------------------------------------------------------------------------------- groups


@covers("POST /v1/groups", "GET /v1/groups")
def test_a_new_group_has_its_creator_as_owner_at_level_0(alice: Caller) -> None:
    response = alice.post("/v1/groups", json={"name": "Team", "hierarchical": True})
    group = ok(response, 201)
    assert response.headers["Location"] == f"/v1/groups/{group['id']}"
    assert (group["name"], group["owner"], group["hierarchical"]) == ("Team", "alice", True)
    assert group["members"] == {"alice": {"level": 0, "state": "active", "invited_by": None}}
    assert ok(alice.get("/v1/groups")) == {
        "groups": [{"group_id": group["id"], "level": 0, "state": "active"}]
    }


@covers("POST /v1/groups")
@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"name": ""}, "", "name"),
        ({"name": "a\nb"}, "", "name"),
        ({}, "", "name"),
        ({"name": "T", "hierarchical": "yes"}, "", "hierarchical"),
        ({"name": "T", "owner": "bob"}, "", "owner"),
        ({"name": "T"}, "?private=1", "private"),
    ],
)
def test_create_group_names_the_bad_field(
    alice: Caller, body: dict[str, Any], query: str, field: str
) -> None:
    problem(alice.post(f"/v1/groups{query}", json=body), 400, field=field)


@covers("POST /v1/groups")
@either_outcome
def test_create_group_with_an_unknown_outcome_stores_it_once(
    alice: Caller, db: MemoryDBClient, applied: bool
) -> None:
    db.unknown_outcome(applied=applied)
    group = new_group(alice)
    assert db.counts["txn"] == (1 if applied else 2)
    assert [g["group_id"] for g in ok(alice.get("/v1/groups"))["groups"]] == [group["id"]]


@covers("POST /v1/groups")
def test_create_group_with_an_idempotency_key_creates_once(
    alice: Caller, bob: Caller, db: MemoryDBClient
) -> None:
    key = {"Idempotency-Key": "team-1"}
    first = ok(alice.post("/v1/groups", json={"name": "Team"}, headers=key), 201)
    txns = db.counts["txn"]
    assert ok(alice.post("/v1/groups", json={"name": "Team"}, headers=key), 201) == first
    assert db.counts["txn"] == txns
    assert [g["group_id"] for g in ok(alice.get("/v1/groups"))["groups"]] == [first["id"]]
    assert ok(bob.post("/v1/groups", json={"name": "Team"}, headers=key), 201)["id"] != first["id"]
    problem(
        alice.post("/v1/groups", json={"name": "Team"}, headers={"Idempotency-Key": ""}),
        400,
        field="Idempotency-Key",
    )


@covers("GET /v1/groups")
def test_my_groups_include_invitations(alice: Caller, bob: Caller, carol: Caller) -> None:
    mine = new_group(alice)["id"]
    theirs = new_group(carol, hierarchical=True)["id"]
    ok(invite(carol, theirs, "alice", 3), 201)
    assert sorted(ok(alice.get("/v1/groups"))["groups"], key=lambda g: g["level"]) == [
        {"group_id": mine, "level": 0, "state": "active"},
        {"group_id": theirs, "level": 3, "state": "invited"},
    ]
    assert ok(bob.get("/v1/groups")) == {"groups": []}
    problem(bob.get("/v1/groups?mine=1"), 400, field="mine")


@covers("GET /v1/groups/<group_id>")
def test_a_group_is_shown_to_members_and_invitees_only(alice: Caller, bob: Caller, carol: Caller) -> None:
    group_id = new_group(alice)["id"]
    ok(invite(alice, group_id, "bob"), 201)
    assert ok(bob.get(f"/v1/groups/{group_id}"))["members"]["bob"] == {
        "level": 0,
        "state": "invited",
        "invited_by": "alice",
    }
    assert ok(alice.get(f"/v1/groups/{group_id}"))["id"] == group_id
    for path in (f"/v1/groups/{group_id}", f"/v1/groups/{NO_GROUP}", "/v1/groups/not-an-id"):
        problem(carol.get(path), 404)
    problem(alice.get(f"/v1/groups/{group_id}?full=1"), 400, field="full")


# ---------------------------------------------------------------------------------------- members


@covers("POST /v1/groups/<group_id>/members")
def test_inviting_adds_an_invited_member_who_is_told(alice: Caller, bob: Caller, users: Users) -> None:
    group_id = team(alice, hierarchical=True)
    group = ok(invite(alice, group_id, "bob", 2), 201)
    assert group["members"]["bob"] == {"level": 2, "state": "invited", "invited_by": "alice"}
    assert notes(users, "bob") == [("membership", "alice invites you to Team")]


@covers("POST /v1/groups/<group_id>/members")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "Bob!"}, "username"),
        ({"username": "zed", "level": 1}, "username"),
        ({"username": "bob", "level": -1}, "level"),
        ({"username": "bob", "level": "2"}, "level"),
        ({"username": "bob"}, "level"),
        ({}, "username"),
    ],
)
def test_invite_names_the_bad_field(alice: Caller, bob: Caller, body: dict[str, Any], field: str) -> None:
    group_id = team(alice, hierarchical=True)
    problem(alice.post(f"/v1/groups/{group_id}/members", json=body), 400, field=field)


@covers("POST /v1/groups/<group_id>/members")
def test_who_may_invite_whom(alice: Caller, bob: Caller, carol: Caller, dan: Caller) -> None:
    flat = team(alice, bob)
    problem(invite(bob, flat, "carol"), 403, type="owner-only")
    problem(invite(alice, flat, "bob"), 409, type="already-member")
    ranked = team(alice, bob, hierarchical=True)  # bob at level 1
    problem(invite(bob, ranked, "carol", 1), 403, type="level-too-senior")
    ok(invite(bob, ranked, "carol", 2), 201)
    problem(invite(carol, ranked, "dan", 3), 403, type="not-a-member")  # carol has not accepted yet
    problem(invite(dan, ranked, "dan", 5), 404)  # strangers do not learn the group exists
    problem(invite(alice, NO_GROUP, "dan"), 404)


@covers("POST /v1/groups/<group_id>/members")
def test_an_invitation_that_lost_a_race_keeps_the_other_change(
    alice: Caller, bob: Caller, carol: Caller, db: MemoryDBClient
) -> None:
    group_id = team(alice)

    def invite_carol(other: DBClient, _keys: tuple[str, ...]) -> None:
        def add(group: Group) -> tuple[Group, list[Any]]:
            members = {**group.members, "carol": Membership(0)}
            return replace(group, members=members), []

        GroupStore(other).update(group_id, add)

    db.contend(write=invite_carol)
    group = ok(invite(alice, group_id, "bob"), 201)
    assert sorted(group["members"]) == ["alice", "bob", "carol"]
    assert db.counts["txn"] == 2 + 1  # the group's creation, then the lost and the won attempt


@covers("POST /v1/groups/<group_id>/members")
@either_outcome
def test_an_invitation_with_an_unknown_outcome_is_made_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, users: Users, applied: bool
) -> None:
    group_id = team(alice)
    db.unknown_outcome(applied=applied)
    ok(invite(alice, group_id, "bob"), 201)
    assert len(notes(users, "bob")) == 1


@covers("POST /v1/groups/<group_id>/membership")
def test_accepting_makes_an_active_member_and_tells_the_inviter(
    alice: Caller, bob: Caller, db: MemoryDBClient, users: Users
) -> None:
    group_id = team(alice)
    ok(invite(alice, group_id, "bob"), 201)
    group = ok(bob.post(f"/v1/groups/{group_id}/membership", json={"accept": True}))
    assert group["members"]["bob"]["state"] == "active"
    assert notes(users, "alice") == [("membership", "bob joined")]
    txns = db.counts["txn"]
    ok(bob.post(f"/v1/groups/{group_id}/membership", json={"accept": True}))  # a retry is harmless
    assert db.counts["txn"] == txns


@covers("POST /v1/groups/<group_id>/membership")
def test_declining_removes_the_invitation(alice: Caller, bob: Caller, users: Users) -> None:
    group_id = team(alice)
    ok(invite(alice, group_id, "bob"), 201)
    response = bob.post(f"/v1/groups/{group_id}/membership", json={"accept": False})
    assert (response.status_code, response.get_data()) == (204, b"")
    problem(bob.get(f"/v1/groups/{group_id}"), 404)
    assert ok(bob.get("/v1/groups")) == {"groups": []}
    assert notes(users, "alice") == [("membership", "bob declined")]


@covers("POST /v1/groups/<group_id>/membership")
def test_answering_errors(alice: Caller, bob: Caller, carol: Caller) -> None:
    group_id = team(alice, bob)
    path = f"/v1/groups/{group_id}/membership"
    problem(bob.post(path, json={"accept": False}), 409, type="already-a-member")
    problem(carol.post(path, json={"accept": True}), 404)
    problem(bob.post(path, json={"accept": "yes"}), 400, field="accept")
    problem(bob.post(path, json={}), 400, field="accept")


@covers("POST /v1/groups/<group_id>/membership")
@either_outcome
def test_an_acceptance_with_an_unknown_outcome_is_recorded_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, users: Users, applied: bool
) -> None:
    group_id = team(alice)
    ok(invite(alice, group_id, "bob"), 201)
    db.unknown_outcome(applied=applied)
    assert ok(bob.post(f"/v1/groups/{group_id}/membership", json={"accept": True}))["members"]["bob"][
        "state"
    ] == ("active")
    assert notes(users, "alice") == [("membership", "bob joined")]


@covers("DELETE /v1/groups/<group_id>/members/<username>")
def test_the_owner_removes_a_member_who_is_told(
    alice: Caller, bob: Caller, carol: Caller, users: Users
) -> None:
    group_id = team(alice, bob, carol)
    response = alice.delete(f"/v1/groups/{group_id}/members/bob")
    assert (response.status_code, response.get_data()) == (204, b"")
    problem(bob.get(f"/v1/groups/{group_id}"), 404)
    assert notes(users, "bob")[-1] == ("membership", "alice removed you")
    assert alice.delete(f"/v1/groups/{group_id}/members/bob").status_code == 204  # already gone
    assert carol.delete(f"/v1/groups/{group_id}/members/carol").status_code == 204  # leaving
    assert ("membership", "carol removed you") not in notes(users, "carol")


@covers("DELETE /v1/groups/<group_id>/members/<username>")
def test_who_may_remove_whom(alice: Caller, bob: Caller, carol: Caller, dan: Caller) -> None:
    flat = team(alice, bob, carol)
    problem(alice.delete(f"/v1/groups/{flat}/members/alice"), 409, type="owner-cannot-leave")
    problem(bob.delete(f"/v1/groups/{flat}/members/alice"), 403, type="owner-cannot-be-removed")
    problem(bob.delete(f"/v1/groups/{flat}/members/carol"), 403, type="owner-only")
    problem(dan.delete(f"/v1/groups/{flat}/members/bob"), 404)
    ranked = team(alice, bob, carol, hierarchical=True)  # bob 1, carol 2
    problem(carol.delete(f"/v1/groups/{ranked}/members/bob"), 403, type="level-too-senior")
    assert bob.delete(f"/v1/groups/{ranked}/members/carol").status_code == 204
    problem(alice.delete(f"/v1/groups/{ranked}/members/bob?force=true"), 400, field="force")


@covers("DELETE /v1/groups/<group_id>/members/<username>")
@either_outcome
def test_the_last_member_leaving_dissolves_the_group_once_whatever_the_outcome(
    alice: Caller, db: MemoryDBClient, applied: bool
) -> None:
    group_id = team(alice)
    db.unknown_outcome(applied=applied)
    assert alice.delete(f"/v1/groups/{group_id}/members/alice").status_code == 204
    assert db.get(group_key(group_id)) is None
    assert list(db.iter_prefix(membership_prefix("alice"))) == []
    problem(alice.get(f"/v1/groups/{group_id}"), 404)


# ----------------------------------------------------------------------------------- group events


@covers("POST /v1/groups/<group_id>/events")
def test_a_flat_group_event_invites_every_active_member(
    alice: Caller, bob: Caller, carol: Caller, dan: Caller, users: Users
) -> None:
    group_id = team(alice, bob, carol)
    ok(invite(alice, group_id, "dan"), 201)  # not active: gets nothing
    response = group_event(alice, group_id)
    event = ok(response, 201)
    assert response.headers["Location"] == f"/v1/events/{event['id']}"
    assert (event["kind"], event["group_id"], event["status"], event["my_status"]) == (
        "group",
        group_id,
        "tentative",
        "accepted",
    )
    assert event["participants"] == {
        "bob": {"status": "needs-action", "level": None},
        "carol": {"status": "needs-action", "level": None},
    }
    assert [e["id"] for e in ok(users("bob").get("/v1/invitations"))["invitations"]] == [event["id"]]


@covers("POST /v1/groups/<group_id>/events")
def test_a_hierarchical_group_event_commits_the_juniors(alice: Caller, bob: Caller, carol: Caller) -> None:
    group_id = team(alice, bob, carol, hierarchical=True)
    event = ok(group_event(bob, group_id), 201)
    assert event["status"] == "confirmed"
    assert event["participants"] == {
        "alice": {"status": "needs-action", "level": 0},
        "carol": {"status": "accepted", "level": 2},
    }


@covers("POST /v1/groups/<group_id>/events")
def test_a_group_event_with_an_idempotency_key_is_created_once(
    alice: Caller, bob: Caller, users: Users, db: MemoryDBClient
) -> None:
    group_id = team(alice, bob)
    other_group = team(alice, bob)
    key = {"Idempotency-Key": "sync"}
    first = ok(
        alice.post(
            f"/v1/groups/{group_id}/events",
            json={"title": "Sync", "start": at(10), "end": at(11)},
            headers=key,
        ),
        201,
    )
    revision = db.machine.revision
    again = alice.post(
        f"/v1/groups/{group_id}/events", json={"title": "Sync", "start": at(10), "end": at(11)}, headers=key
    )
    assert ok(again, 201) == first
    assert db.machine.revision == revision  # found by its txn's failed compare: nothing written
    assert [e["id"] for e in ok(users("bob").get("/v1/invitations"))["invitations"]] == [first["id"]]
    # The same key in another group is another request.
    elsewhere = alice.post(
        f"/v1/groups/{other_group}/events?allow_conflict=true",
        json={"title": "Sync", "start": at(10), "end": at(11)},
        headers=key,
    )
    assert ok(elsewhere, 201)["id"] != first["id"]


@covers("POST /v1/groups/<group_id>/events")
def test_group_event_errors(alice: Caller, bob: Caller, carol: Caller, users: Users) -> None:
    group_id = team(alice, bob)
    ok(invite(alice, group_id, "carol"), 201)
    problem(group_event(carol, group_id), 403, type="not-a-member")
    problem(group_event(alice, NO_GROUP), 404)
    problem(
        alice.post(f"/v1/groups/{group_id}/events", json={"title": "", "start": at(10), "end": at(11)}),
        400,
        field="title",
    )
    problem(group_event(alice, group_id, 11, 10), 400, field="end")
    problem(group_event(alice, group_id, participants=["bob"]), 400, field="participants")
    problem(group_event(alice, group_id, query="?allow_conflict=perhaps"), 400, field="allow_conflict")
    ok(users("alice").post("/v1/events", json={"title": "Own", "start": at(10), "end": at(11)}), 201)
    clash = problem(group_event(alice, group_id), 409, type="event-conflict")
    assert clash["user"] == "alice"
    ok(group_event(alice, group_id, query="?allow_conflict=true"), 201)
    ok(group_event(bob, group_id), 201)  # other members' clashes are flagged, never refused


@covers("POST /v1/groups/<group_id>/events")
def test_a_group_event_may_involve_at_most_max_invitees_others(alice: Caller, db: MemoryDBClient) -> None:
    members = {"alice": Membership(0), **{f"m{i:02}": Membership(0) for i in range(MAX_INVITEES + 1)}}
    GroupStore(db).create(Group(id="a" * 32, name="Crowd", owner="alice", created=START, members=members))
    problem(group_event(alice, "a" * 32), 409, type="group-too-large")


@covers("POST /v1/groups/<group_id>/events")
def test_a_group_event_that_lost_the_race_to_the_organizers_booking_is_409(
    alice: Caller, bob: Caller, db: MemoryDBClient, users: Users
) -> None:
    group_id = team(alice, bob)

    def book(_other: DBClient, _keys: tuple[str, ...]) -> None:
        ok(users("alice").post("/v1/events", json={"title": "Mine", "start": at(10.5), "end": at(12)}), 201)

    db.contend(write=book)
    problem(group_event(alice, group_id), 409, type="event-conflict")


@covers("POST /v1/groups/<group_id>/events")
@either_outcome
def test_a_group_event_with_an_unknown_outcome_is_created_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, users: Users, applied: bool
) -> None:
    group_id = team(alice, bob)
    db.unknown_outcome(applied=applied)
    ok(group_event(alice, group_id), 201)
    assert len(ok(users("bob").get("/v1/invitations"))["invitations"]) == 1


@covers("GET /v1/groups/<group_id>/agenda")
def test_the_group_agenda_masks_what_a_member_may_not_see(
    alice: Caller, bob: Caller, carol: Caller, users: Users
) -> None:
    group_id = team(alice, bob, carol)
    secret = ok(users("bob").post("/v1/events", json={"title": "Doctor", "start": at(9), "end": at(10)}), 201)
    shared = {"title": "Talk", "start": at(12), "end": at(13), "visibility": "public"}
    public = ok(users("bob").post("/v1/events", json=shared), 201)
    ok(users("carol").post("/v1/events", json={"title": "Late", "start": at(20), "end": at(21)}), 201)
    agenda = ok(carol.get(f"/v1/groups/{group_id}/agenda?{DAY}"))
    assert (agenda["group_id"], agenda["from"], agenda["to"]) == (group_id, at(8), at(18))
    assert agenda["members"]["alice"] == []
    assert agenda["members"]["carol"] == []  # her own event is outside the range
    masked, full = agenda["members"]["bob"]
    assert masked == {"start": secret["start"], "end": secret["end"], "busy": True}
    assert (full["id"], full["title"], full["busy"]) == (public["id"], "Talk", True)
    assert ok(bob.get(f"/v1/groups/{group_id}/agenda?{DAY}"))["members"]["bob"][0]["title"] == "Doctor"


@covers("GET /v1/groups/<group_id>/agenda")
def test_group_agenda_errors(alice: Caller, bob: Caller, carol: Caller) -> None:
    group_id = team(alice)
    ok(invite(alice, group_id, "bob"), 201)
    problem(bob.get(f"/v1/groups/{group_id}/agenda?{DAY}"), 403, type="not-a-member")
    problem(carol.get(f"/v1/groups/{group_id}/agenda?{DAY}"), 404)
    problem(alice.get(f"/v1/groups/{group_id}/agenda?from={at(8)}"), 400, field="to")
    problem(alice.get(f"/v1/groups/{group_id}/agenda?{DAY}&who=bob"), 400, field="who")


@covers("GET /v1/groups/<group_id>/free")
def test_free_slots_avoid_every_active_members_commitments(alice: Caller, bob: Caller, users: Users) -> None:
    group_id = team(alice, bob)
    ok(users("alice").post("/v1/events", json={"title": "A", "start": at(9), "end": at(10)}), 201)
    ok(users("bob").post("/v1/events", json={"title": "B", "start": at(11), "end": at(12.5)}), 201)
    slots = ok(alice.get(f"/v1/groups/{group_id}/free?{DAY}&duration=60"))["slots"]
    assert slots == [
        {"start": at(8), "end": at(9)},
        {"start": at(10), "end": at(11)},
        {"start": at(12.5), "end": at(18)},
    ]
    default = ok(alice.get(f"/v1/groups/{group_id}/free?from={at(9)}&to={at(11)}"))["slots"]
    assert default == [{"start": at(10), "end": at(11)}]  # 30 minutes by default


@covers("GET /v1/groups/<group_id>/free")
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("duration=abc", "duration"),
        ("duration=0", "duration"),
        ("duration=1441", "duration"),
        ("len=5", "len"),
    ],
)
def test_free_slots_name_the_bad_parameter(alice: Caller, query: str, field: str) -> None:
    group_id = team(alice)
    problem(alice.get(f"/v1/groups/{group_id}/free?{DAY}&{query}"), 400, field=field)


@covers("GET /v1/groups/<group_id>/free")
def test_free_slots_are_for_active_members_only(alice: Caller, bob: Caller, carol: Caller) -> None:
    group_id = team(alice)
    ok(invite(alice, group_id, "bob"), 201)
    problem(bob.get(f"/v1/groups/{group_id}/free?{DAY}"), 403, type="not-a-member")
    problem(carol.get(f"/v1/groups/{group_id}/free?{DAY}"), 404)
