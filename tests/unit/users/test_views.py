"""Every route of the User Service, through its real app over the in-process DB.

Success paths, the error statuses each route answers (400 naming the field, 401, 403, 404, 409), and
the store's branches a cluster only reaches by bad luck: a lost race (`db.contend`), a lost answer
whose write was or was not applied (`db.unknown_outcome`), and a DB without a leader (`db.outage`).
`test_every_route_has_view_tests` fails when a route is added without tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from agenda.calendar import MAX_INVITEES
from agenda.calendar.cas import ATTEMPTS
from agenda.calendar.layout import user_key
from agenda.calendar.store import Change, EventStore
from agenda.common.tokens import TokenVerifier
from agenda.common.web import SECRET_HEADER
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.domain.model import Event

from ..backends import (
    AUDIENCE,
    ISSUER,
    KEY_ID,
    PASSWORD,
    SIGNING_KEY,
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
from . import test_dav

NO_EVENT = "0" * 32


def at(hour: float) -> str:
    return _at(10, hour)


RANGE = f"from={_at(1, 0)}&to={_at(31, 0)}"


def create(
    caller: Caller, start: float = 10, end: float = 11, query: str = "", **fields: Any
) -> dict[str, Any]:
    body = {"title": "Plan", "start": at(start), "end": at(end), **fields}
    return ok(caller.post(f"/v1/events{query}", json=body), 201)


def rival(organizer: str, start: float, end: float) -> Callable[[DBClient, tuple[str, ...]], object]:
    """A concurrent write: another instance books `organizer` from `start` to `end` meanwhile."""

    def write(other: DBClient, _keys: tuple[str, ...]) -> object:
        event = Event.from_dict(
            {
                "id": "f" * 32,
                "title": "Rival",
                "start": at(start),
                "end": at(end),
                "organizer": organizer,
                "created": at(0),
                "updated": at(0),
            }
        )
        return EventStore(other).create(lambda: Change(event, (), (organizer,)))

    return write


def notifications(caller: Caller) -> list[dict[str, Any]]:
    return ok(caller.get("/v1/notifications"))["notifications"]


def test_every_route_has_view_tests(app: Any) -> None:
    rules = url_rules(app)
    assert len(rules - {"GET /v1/health", "GET /internal/stats"} - set(DAV_ROUTES)) == 13
    assert covered(globals()) | covered(vars(test_dav)) == rules


# -------------------------------------------------------------------------------- every route at once

SAMPLES: dict[str, Sample] = {
    "POST /v1/auth/register": ("POST", "/v1/auth/register", {"username": "erin", "password": PASSWORD}),
    "POST /v1/auth/login": ("POST", "/v1/auth/login", {"username": "alice", "password": PASSWORD}),
    "GET /v1/me": ("GET", "/v1/me", None),
    "POST /v1/events": ("POST", "/v1/events", {"title": "T", "start": at(10), "end": at(11)}),
    "GET /v1/events": ("GET", f"/v1/events?{RANGE}", None),
    "GET /v1/events/<event_id>": ("GET", f"/v1/events/{NO_EVENT}", None),
    "PATCH /v1/events/<event_id>": ("PATCH", f"/v1/events/{NO_EVENT}", {"title": "T"}),
    "DELETE /v1/events/<event_id>": ("DELETE", f"/v1/events/{NO_EVENT}", None),
    "POST /v1/events/<event_id>/respond": ("POST", f"/v1/events/{NO_EVENT}/respond", {"status": "accepted"}),
    "GET /v1/invitations": ("GET", "/v1/invitations", None),
    "GET /v1/conflicts": ("GET", f"/v1/conflicts?{RANGE}", None),
    "GET /v1/notifications": ("GET", "/v1/notifications", None),
    "GET /v1/calendar.ics": ("GET", "/v1/calendar.ics", None),
    "GET /internal/stats": ("GET", "/internal/stats", None),
}
# CalDAV (test_dav.py): every method on "/dav" and on "/dav/<path:path>"; the samples name a resource
# each method reaches the DB for without a body.
DAV_ROUTES = test_dav.ROUTES
_DAV_PATHS = {
    "POST": "/dav/calendars/alice/outbox/",
    "PUT": "/dav/calendars/alice/default/x.ics",
    "DELETE": "/dav/calendars/alice/default/x.ics",
    "MKCALENDAR": "/dav/calendars/alice/new/",
    "MKCOL": "/dav/calendars/alice/new/",
}
SAMPLES |= {
    route: (route.split()[0], _DAV_PATHS.get(route.split()[0], "/dav/calendars/alice/default/"), None)
    for route in DAV_ROUTES
    if route.endswith("<path:path>")
}
SAMPLES |= {route: (route.split()[0], "/dav", None) for route in DAV_ROUTES if route.endswith(" /dav")}
PUBLIC = {"POST /v1/auth/register", "POST /v1/auth/login", "GET /internal/stats"}
# These read their body before the DB, so without a body they answer 400 whether or not it is up; the
# CalDAV root ("/dav") is answered without the DB.
BODY_FIRST = {route for route in DAV_ROUTES if route.split()[0] in ("POST", "REPORT", "PROPPATCH")}
BODY_FIRST |= {route for route in DAV_ROUTES if route.endswith(" /dav")}


def test_the_samples_are_every_route_but_health(app: Any) -> None:
    assert set(SAMPLES) == url_rules(app) - {"GET /v1/health"}


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_nothing_but_health_answers_without_the_gateway_secret(client: FlaskClient, route: str) -> None:
    refused_without_the_secret(client, SAMPLES[route])


@pytest.mark.parametrize("route", sorted(set(SAMPLES) - PUBLIC))
def test_a_users_route_needs_a_caller(client: FlaskClient, route: str) -> None:
    refused_without_a_caller(client, SAMPLES[route])


@pytest.mark.parametrize("route", sorted(set(SAMPLES) - {"GET /internal/stats"} - BODY_FIRST))
def test_without_a_db_leader_every_route_is_503(alice: Caller, db: MemoryDBClient, route: str) -> None:
    unavailable_without_a_db_leader(alice, db, SAMPLES[route])


# ----------------------------------------------------------------------------------- health, stats


@covers("GET /v1/health")
def test_health_answers_without_the_secret(app: Any) -> None:
    assert ok(app.test_client().get("/v1/health"))["service"] == "users"


@covers("GET /internal/stats")
def test_stats_count_the_users_requests_only(client: FlaskClient, alice: Caller) -> None:
    alice.get("/v1/me")
    alice.get("/v1/invitations")
    client.get("/v1/health")
    assert ok(client.get("/internal/stats")) == {"requests": 2}
    problem(client.get("/internal/stats", headers={SECRET_HEADER: "wrong"}), 403)


# --------------------------------------------------------------------------------------- accounts


@covers("POST /v1/auth/register")
def test_register_creates_the_account_and_never_shows_the_password(
    client: FlaskClient, db: MemoryDBClient
) -> None:
    body = {"username": "erin", "password": PASSWORD, "display_name": "Erin E.", "timezone": "Europe/Madrid"}
    response = client.post("/v1/auth/register", json=body)
    user = ok(response, 201)
    assert response.headers["Location"] == "/v1/me"
    assert user == {
        "username": "erin",
        "display_name": "Erin E.",
        "timezone": "Europe/Madrid",
        "created": "2031-01-01T08:00:00.001000Z",
    }
    stored = db.get(user_key("erin"))
    assert stored is not None
    assert stored["value"]["password"]["alg"] == "scrypt"
    assert PASSWORD not in str(stored["value"])


@covers("POST /v1/auth/register")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "Erin!", "password": PASSWORD}, "username"),
        ({"username": "erin", "password": "short"}, "password"),
        ({"username": "erin", "password": PASSWORD, "timezone": "Mars/Base"}, "timezone"),
        ({"username": "erin", "password": PASSWORD, "display_name": "two\nlines"}, "display_name"),
        ({"username": "erin", "password": PASSWORD, "admin": True}, "admin"),
        ({"username": "erin"}, "password"),
        ({"username": 7, "password": PASSWORD}, "username"),
    ],
)
def test_register_names_the_bad_field(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    problem(client.post("/v1/auth/register", json=body), 400, field=field)


@covers("POST /v1/auth/register")
def test_register_refuses_a_taken_name_and_a_body_that_is_not_json(
    client: FlaskClient, alice: Caller
) -> None:
    taken = client.post("/v1/auth/register", json={"username": "alice", "password": PASSWORD})
    problem(taken, 409, field="username", type="username-taken")
    problem(client.post("/v1/auth/register", data="x", content_type="text/plain"), 415)
    problem(client.post("/v1/auth/register", data="[" * 100, content_type="application/json"), 400)


@covers("POST /v1/auth/register")
def test_register_repeated_with_its_idempotency_key_answers_with_the_account(
    client: FlaskClient, db: MemoryDBClient
) -> None:
    body = {"username": "erin", "password": PASSWORD}
    first = ok(client.post("/v1/auth/register", json=body, headers={"Idempotency-Key": "k1"}), 201)
    stored = db.get(user_key("erin"))
    assert ok(client.post("/v1/auth/register", json=body, headers={"Idempotency-Key": "k1"}), 201) == first
    assert db.get(user_key("erin")) == stored  # the first account, not overwritten
    # Someone else's claim on the name (another key, or none) is still refused.
    taken = client.post("/v1/auth/register", json=body, headers={"Idempotency-Key": "k2"})
    problem(taken, 409, type="username-taken")
    problem(client.post("/v1/auth/register", json=body), 409, type="username-taken")
    problem(client.post("/v1/auth/register", json=body, headers={"Idempotency-Key": " "}), 400)


@covers("POST /v1/auth/register")
def test_register_losing_the_race_for_a_name_is_409(client: FlaskClient, db: MemoryDBClient) -> None:
    def register_first(other: DBClient, keys: tuple[str, ...]) -> None:
        assert keys == (user_key("erin"),)
        other.put(keys[0], {"username": "erin", "password": {"salt": "somebody else's"}})

    db.contend(write=register_first)
    taken = client.post("/v1/auth/register", json={"username": "erin", "password": PASSWORD})
    problem(taken, 409, type="username-taken")
    assert db.pending_faults() == 0


@covers("POST /v1/auth/register")
def test_register_with_an_unknown_outcome_recognises_its_own_write(
    client: FlaskClient, db: MemoryDBClient
) -> None:
    db.unknown_outcome(applied=True)
    ok(client.post("/v1/auth/register", json={"username": "erin", "password": PASSWORD}), 201)
    assert db.counts["put"] == 1  # settled by reading it back, not by writing again
    ok(client.post("/v1/auth/login", json={"username": "erin", "password": PASSWORD}))


@covers("POST /v1/auth/register")
def test_register_whose_write_was_lost_is_503_and_can_be_retried(
    client: FlaskClient, db: MemoryDBClient
) -> None:
    db.unknown_outcome(applied=False)
    body = {"username": "erin", "password": PASSWORD}
    problem(client.post("/v1/auth/register", json=body), 503)
    assert db.get(user_key("erin")) is None
    ok(client.post("/v1/auth/register", json=body), 201)


@covers("POST /v1/auth/login")
def test_login_issues_a_token_for_the_account(client: FlaskClient, alice: Caller) -> None:
    token = ok(client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD}))
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    verifier = TokenVerifier({KEY_ID: SIGNING_KEY.public_key()}, ISSUER, AUDIENCE)
    assert verifier.verify(token["access_token"])["sub"] == "alice"


@covers("POST /v1/auth/login")
@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password"), ("nobody", PASSWORD), ("Not A Name", PASSWORD)],
)
def test_login_refuses_wrong_credentials_alike(
    client: FlaskClient, alice: Caller, username: str, password: str
) -> None:
    response = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert problem(response, 401)["detail"] == "Wrong username or password."
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@covers("POST /v1/auth/login")
def test_login_names_a_missing_field(client: FlaskClient) -> None:
    problem(client.post("/v1/auth/login", json={"username": "alice"}), 400, field="password")


@covers("GET /v1/me")
def test_me_is_the_callers_account(alice: Caller) -> None:
    assert ok(alice.get("/v1/me")) == {
        "username": "alice",
        "display_name": "Alice",
        "timezone": "UTC",
        "created": "2031-01-01T00:00:00Z",
    }


@covers("GET /v1/me")
def test_me_without_an_account_is_404(client: FlaskClient) -> None:
    problem(Caller(client, "ghost").get("/v1/me"), 404)


# ----------------------------------------------------------------------------------------- events


@covers("POST /v1/events", "GET /v1/events/<event_id>")
def test_a_personal_event_is_created_and_read_back(alice: Caller) -> None:
    response = alice.post("/v1/events", json={"title": "Dentist", "start": at(9), "end": at(10)})
    event = ok(response, 201)
    assert response.headers["Location"] == f"/v1/events/{event['id']}"
    assert (event["kind"], event["status"], event["my_status"], event["sequence"]) == (
        "personal",
        "confirmed",
        "accepted",
        0,
    )
    assert ok(alice.get(f"/v1/events/{event['id']}")) == event


@covers("POST /v1/events", "GET /v1/events/<event_id>")
def test_an_appointment_invites_its_participants(alice: Caller, bob: Caller) -> None:
    event = create(alice, participants=["bob"])
    assert event["kind"] == "appointment"
    assert event["participants"] == {"bob": {"status": "needs-action", "level": None}}
    assert ok(bob.get(f"/v1/events/{event['id']}"))["my_status"] == "needs-action"
    assert [(n["kind"], n["event_id"]) for n in notifications(bob)] == [("invited", event["id"])]


@covers("POST /v1/events")
@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"start": at(10), "end": at(11)}, "", "title"),
        ({"title": "", "start": at(10), "end": at(11)}, "", "title"),
        ({"title": "T", "start": "tomorrow", "end": at(11)}, "", "start"),
        ({"title": "T", "start": at(11), "end": at(10)}, "", "end"),
        ({"title": "T", "start": at(10), "end": at(11), "visibility": "secret"}, "", "visibility"),
        ({"title": "T", "start": at(10), "end": at(11), "participants": "bob"}, "", "participants"),
        ({"title": "T", "start": at(10), "end": at(11), "participants": ["alice"]}, "", "participants[0]"),
        (
            {"title": "T", "start": at(10), "end": at(11), "participants": ["bob", "bob"]},
            "",
            "participants[1]",
        ),
        (
            {"title": "T", "start": at(10), "end": at(11), "participants": ["bob", "zed"]},
            "",
            "participants[1]",
        ),
        (
            {"title": "T", "start": at(10), "end": at(11), "participants": [f"u{i:03}" for i in range(26)]},
            "",
            "participants",
        ),
        ({"title": "T", "start": at(10), "end": at(11)}, "?allow_conflict=maybe", "allow_conflict"),
        ({"title": "T", "start": at(10), "end": at(11)}, "?colour=red", "colour"),
    ],
)
def test_create_event_names_the_bad_field(
    alice: Caller, bob: Caller, body: dict[str, Any], query: str, field: str
) -> None:
    assert MAX_INVITEES < 26
    problem(alice.post(f"/v1/events{query}", json=body), 400, field=field)


@covers("POST /v1/events")
def test_create_event_with_an_idempotency_key_creates_once(
    alice: Caller, bob: Caller, db: MemoryDBClient
) -> None:
    body = {"title": "Sync", "start": at(10), "end": at(11), "participants": ["bob"]}
    key = {"Idempotency-Key": "sync-2031-01-10"}
    first = alice.post("/v1/events", json=body, headers=key)
    event = ok(first, 201)
    revision = db.machine.revision
    # The repeat (the gateway resending after a lost answer) finds the event: no conflict with
    # itself, no second invitation, no write; the same answer and Location. (It finds it through
    # its transaction's failed compare, which writes nothing: the store's revision stays.)
    again = alice.post("/v1/events", json=body, headers=key)
    assert ok(again, 201) == event
    assert again.headers["Location"] == first.headers["Location"]
    assert db.machine.revision == revision
    assert [e["id"] for e in ok(alice.get(f"/v1/events?{RANGE}"))["events"]] == [event["id"]]
    assert [n["event_id"] for n in notifications(bob)] == [event["id"]]
    # Keys belong to their user, and another key is another event.
    assert (
        ok(bob.post("/v1/events", json={**body, "participants": []}, headers=key), 201)["id"] != event["id"]
    )
    other = alice.post("/v1/events?allow_conflict=true", json=body, headers={"Idempotency-Key": "other"})
    assert ok(other, 201)["id"] != event["id"]


@covers("POST /v1/events")
@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "caf\u00e9"])
def test_create_event_refuses_a_malformed_idempotency_key(alice: Caller, key: str) -> None:
    body = {"title": "T", "start": at(10), "end": at(11)}
    problem(
        alice.post("/v1/events", json=body, headers={"Idempotency-Key": key}), 400, field="Idempotency-Key"
    )
    assert ok(alice.get(f"/v1/events?{RANGE}"))["events"] == []


@covers("POST /v1/events")
def test_create_event_over_a_commitment_is_409_unless_allowed(alice: Caller) -> None:
    first = create(alice, 10, 11)
    clash = problem(alice.post("/v1/events", json={"title": "B", "start": at(10.5), "end": at(12)}), 409)
    assert (clash["type"].rsplit("/", 1)[1], clash["user"], clash["conflicts"]) == (
        "event-conflict",
        "alice",
        [first["id"]],
    )
    create(alice, 10.5, 12, query="?allow_conflict=true")
    create(alice, 12, 13)  # back to back is no conflict


@covers("POST /v1/events")
def test_create_event_rechecks_after_losing_the_race_to_a_clashing_booking(
    alice: Caller, db: MemoryDBClient
) -> None:
    db.contend(write=rival("alice", 10.5, 11.5))
    clash = problem(alice.post("/v1/events", json={"title": "T", "start": at(10), "end": at(11)}), 409)
    assert clash["conflicts"] == ["f" * 32]  # found on the second attempt, written meanwhile
    assert db.counts["txn"] == 1


@covers("POST /v1/events")
def test_create_event_retries_a_lost_race_that_changed_nothing_relevant(
    alice: Caller, db: MemoryDBClient
) -> None:
    create(alice, 8, 9)  # alice's booking guard exists, so the default concurrent write bumps it
    txns = db.counts["txn"]
    db.contend()
    create(alice, 10, 11)
    assert db.counts["txn"] - txns == 2
    assert db.pending_faults() == 0


@covers("POST /v1/events")
def test_create_event_gives_up_after_losing_every_race(alice: Caller, db: MemoryDBClient) -> None:
    create(alice, 8, 9)
    db.contend(ATTEMPTS)
    response = alice.post("/v1/events", json={"title": "T", "start": at(10), "end": at(11)})
    problem(response, 503)
    assert response.headers["Retry-After"] == "1"
    assert len(ok(alice.get(f"/v1/events?{RANGE}"))["events"]) == 1


@covers("POST /v1/events")
@either_outcome
def test_create_event_with_an_unknown_outcome_stores_it_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, applied: bool
) -> None:
    db.unknown_outcome(applied=applied)
    event = create(alice, participants=["bob"])
    assert db.counts["txn"] == (1 if applied else 2)
    assert [e["id"] for e in ok(alice.get(f"/v1/events?{RANGE}"))["events"]] == [event["id"]]
    assert len(notifications(bob)) == 1


@covers("GET /v1/events")
def test_the_agenda_lists_the_range_with_conflict_flags(alice: Caller, bob: Caller) -> None:
    a = create(alice, 10, 12)
    b = create(alice, 11, 13, query="?allow_conflict=true")
    c = create(alice, 14, 15)
    invited = create(bob, 16, 17, participants=["alice"])
    ok(alice.post(f"/v1/events/{invited['id']}/respond", json={"status": "declined"}))
    agenda = ok(alice.get(f"/v1/events?from={at(10.5)}&to={at(20)}"))
    assert (agenda["from"], agenda["to"]) == (at(10.5), at(20))
    assert [(e["id"], e["conflicts"]) for e in agenda["events"]] == [
        (a["id"], [b["id"]]),
        (b["id"], [a["id"]]),
        (c["id"], []),
    ]  # the declined invitation is not listed
    assert ok(alice.get(f"/v1/events?from={at(15)}&to={at(16)}"))["events"] == []


@covers("GET /v1/events")
@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"to={at(12)}", "from"),
        (f"from={at(12)}", "to"),
        (f"from={at(12)}&to={at(11)}", "to"),
        (f"from={_at(1, 0)}&to=2032-06-01T00:00:00Z", "to"),
        (f"from=noon&to={at(11)}", "from"),
        (f"{RANGE}&page=2", "page"),
    ],
)
def test_the_agenda_names_the_bad_parameter(alice: Caller, query: str, field: str) -> None:
    problem(alice.get(f"/v1/events?{query}"), 400, field=field)


@covers("GET /v1/events/<event_id>")
def test_an_event_is_404_unless_it_exists_and_involves_the_caller(alice: Caller, carol: Caller) -> None:
    event = create(alice)
    for path in (f"/v1/events/{NO_EVENT}", "/v1/events/not-an-id", f"/v1/events/{event['id']}"):
        problem(carol.get(path), 404)
    problem(alice.get(f"/v1/events/{event['id']}?verbose=1"), 400, field="verbose")


@covers("PATCH /v1/events/<event_id>")
def test_the_organizer_changes_an_event_and_participants_are_told(alice: Caller, bob: Caller) -> None:
    event = create(alice, participants=["bob"])
    changed = ok(alice.patch(f"/v1/events/{event['id']}", json={"title": "Plan B", "location": "Room 2"}))
    assert (changed["title"], changed["location"], changed["sequence"]) == ("Plan B", "Room 2", 1)
    assert [n["kind"] for n in notifications(bob)] == ["invited", "changed"]
    moved = ok(alice.patch(f"/v1/events/{event['id']}", json={"end": at(12)}))
    assert (moved["start"], moved["end"]) == (at(10), at(12))


@covers("PATCH /v1/events/<event_id>")
def test_a_change_that_changes_nothing_writes_nothing(alice: Caller, db: MemoryDBClient) -> None:
    event = create(alice)
    txns = db.counts["txn"]
    assert ok(alice.patch(f"/v1/events/{event['id']}", json={"title": "Plan"}))["sequence"] == 0
    assert db.counts["txn"] == txns


@covers("PATCH /v1/events/<event_id>")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"end": at(9)}, "end"),
        ({"start": "soon"}, "start"),
        ({"colour": "red"}, "colour"),
        ({"title": 3}, "title"),
    ],
)
def test_change_event_names_the_bad_field(alice: Caller, body: dict[str, Any], field: str) -> None:
    event = create(alice)
    problem(alice.patch(f"/v1/events/{event['id']}", json=body), 400, field=field)


@covers("PATCH /v1/events/<event_id>")
def test_only_the_organizer_changes_an_event_and_strangers_cannot_see_it(
    alice: Caller, bob: Caller, carol: Caller
) -> None:
    event = create(alice, participants=["bob"])
    problem(bob.patch(f"/v1/events/{event['id']}", json={"title": "Mine"}), 403, type="organizer-only")
    problem(carol.patch(f"/v1/events/{event['id']}", json={"title": "Mine"}), 404)
    problem(alice.patch(f"/v1/events/{NO_EVENT}", json={"title": "Mine"}), 404)


@covers("PATCH /v1/events/<event_id>")
def test_moving_onto_a_commitment_is_409_unless_allowed_and_a_cancelled_event_is_409(alice: Caller) -> None:
    create(alice, 12, 13)
    event = create(alice, 10, 11)
    path = f"/v1/events/{event['id']}"
    problem(alice.patch(path, json={"start": at(12), "end": at(13)}), 409, type="event-conflict")
    ok(alice.patch(f"{path}?allow_conflict=true", json={"start": at(12), "end": at(13)}))
    assert alice.delete(path).status_code == 204
    problem(alice.patch(path, json={"title": "Again"}), 409, type="event-cancelled")


@covers("PATCH /v1/events/<event_id>")
def test_a_change_that_lost_a_race_is_decided_again_on_the_fresh_event(
    alice: Caller, db: MemoryDBClient
) -> None:
    event = create(alice)

    def relocate(other: DBClient, _keys: tuple[str, ...]) -> None:
        EventStore(other).update(event["id"], lambda e: Change(e.revised(START, location="Elsewhere")))

    db.contend(write=relocate)
    changed = ok(alice.patch(f"/v1/events/{event['id']}", json={"title": "Plan B"}))
    assert (changed["title"], changed["location"], changed["sequence"]) == ("Plan B", "Elsewhere", 2)


@covers("PATCH /v1/events/<event_id>")
@either_outcome
def test_a_change_with_an_unknown_outcome_is_applied_once(
    alice: Caller, db: MemoryDBClient, applied: bool
) -> None:
    event = create(alice)
    db.unknown_outcome(applied=applied)
    assert ok(alice.patch(f"/v1/events/{event['id']}", json={"title": "Plan B"}))["sequence"] == 1
    assert ok(alice.get(f"/v1/events/{event['id']}"))["sequence"] == 1


@covers("DELETE /v1/events/<event_id>")
def test_deleting_cancels_the_event_for_everyone_once(alice: Caller, bob: Caller, db: MemoryDBClient) -> None:
    event = create(alice, participants=["bob"])
    path = f"/v1/events/{event['id']}"
    response = alice.delete(path)
    assert (response.status_code, response.get_data()) == (204, b"")
    assert ok(bob.get(path))["status"] == "cancelled"
    assert [n["kind"] for n in notifications(bob)] == ["invited", "cancelled"]
    txns = db.counts["txn"]
    assert alice.delete(path).status_code == 204  # again: nothing to do
    assert db.counts["txn"] == txns


@covers("DELETE /v1/events/<event_id>")
def test_only_the_organizer_deletes_and_strangers_get_404(alice: Caller, bob: Caller, carol: Caller) -> None:
    event = create(alice, participants=["bob"])
    problem(bob.delete(f"/v1/events/{event['id']}"), 403, type="organizer-only")
    problem(carol.delete(f"/v1/events/{event['id']}"), 404)
    problem(alice.delete("/v1/events/nope"), 404)
    problem(alice.delete(f"/v1/events/{event['id']}?force=1"), 400, field="force")


@covers("DELETE /v1/events/<event_id>")
@either_outcome
def test_deleting_with_an_unknown_outcome_cancels_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, applied: bool
) -> None:
    event = create(alice, participants=["bob"])
    db.unknown_outcome(applied=applied)
    assert alice.delete(f"/v1/events/{event['id']}").status_code == 204
    assert ok(alice.get(f"/v1/events/{event['id']}"))["sequence"] == 1
    assert [n["kind"] for n in notifications(bob)] == ["invited", "cancelled"]


@covers("DELETE /v1/events/<event_id>")
def test_deleting_under_endless_contention_is_503(alice: Caller, db: MemoryDBClient) -> None:
    event = create(alice)
    db.contend(ATTEMPTS)
    problem(alice.delete(f"/v1/events/{event['id']}"), 503)
    assert ok(alice.get(f"/v1/events/{event['id']}"))["status"] == "confirmed"


@covers("POST /v1/events/<event_id>/respond")
def test_a_participant_answers_and_the_organizer_is_told(alice: Caller, bob: Caller) -> None:
    event = create(alice, participants=["bob"])
    answered = ok(bob.post(f"/v1/events/{event['id']}/respond", json={"status": "accepted"}))
    assert (answered["my_status"], answered["participants"]["bob"]["status"]) == ("accepted", "accepted")
    assert [(n["kind"], n["detail"]) for n in notifications(alice)] == [("responded", "bob accepted")]


@covers("POST /v1/events/<event_id>/respond")
@pytest.mark.parametrize(
    ("body", "field"),
    [({"status": "maybe"}, "status"), ({"status": "needs-action"}, "status"), ({}, "status")],
)
def test_an_answer_names_the_bad_field(alice: Caller, bob: Caller, body: dict[str, Any], field: str) -> None:
    event = create(alice, participants=["bob"])
    problem(bob.post(f"/v1/events/{event['id']}/respond", json=body), 400, field=field)


@covers("POST /v1/events/<event_id>/respond")
def test_only_participants_answer(alice: Caller, bob: Caller, carol: Caller) -> None:
    event = create(alice, participants=["bob"])
    path = f"/v1/events/{event['id']}/respond"
    problem(alice.post(path, json={"status": "accepted"}), 403, type="not-a-participant")
    problem(carol.post(path, json={"status": "accepted"}), 404)
    problem(bob.post(f"/v1/events/{NO_EVENT}/respond", json={"status": "accepted"}), 404)


@covers("POST /v1/events/<event_id>/respond")
def test_accepting_over_a_commitment_is_409_unless_allowed_and_cancelled_events_take_no_answers(
    alice: Caller, bob: Caller
) -> None:
    create(bob, 10.5, 11.5)
    event = create(alice, participants=["bob"])
    path = f"/v1/events/{event['id']}/respond"
    clash = problem(bob.post(path, json={"status": "accepted"}), 409, type="event-conflict")
    assert clash["user"] == "bob"
    ok(bob.post(path, json={"status": "tentative"}))  # only an acceptance commits bob's time
    ok(bob.post(f"{path}?allow_conflict=1", json={"status": "accepted"}))
    assert alice.delete(f"/v1/events/{event['id']}").status_code == 204
    problem(bob.post(path, json={"status": "declined"}), 409, type="event-cancelled")


@covers("POST /v1/events/<event_id>/respond")
def test_an_acceptance_that_lost_the_race_to_a_clashing_booking_is_409(
    alice: Caller, bob: Caller, db: MemoryDBClient
) -> None:
    event = create(alice, participants=["bob"])
    db.contend(write=rival("bob", 10, 10.5))
    problem(
        bob.post(f"/v1/events/{event['id']}/respond", json={"status": "accepted"}), 409, type="event-conflict"
    )
    assert ok(bob.get(f"/v1/events/{event['id']}"))["my_status"] == "needs-action"


@covers("POST /v1/events/<event_id>/respond")
@either_outcome
def test_an_answer_with_an_unknown_outcome_is_recorded_once(
    alice: Caller, bob: Caller, db: MemoryDBClient, applied: bool
) -> None:
    event = create(alice, participants=["bob"])
    db.unknown_outcome(applied=applied)
    ok(bob.post(f"/v1/events/{event['id']}/respond", json={"status": "declined"}))
    assert ok(alice.get(f"/v1/events/{event['id']}"))["sequence"] == 1
    assert len(notifications(alice)) == 1


@covers("GET /v1/invitations")
def test_invitations_are_the_unanswered_live_events(alice: Caller, bob: Caller) -> None:
    first = create(alice, 10, 11, participants=["bob"])
    second = create(alice, 12, 13, participants=["bob"])
    cancelled = create(alice, 14, 15, participants=["bob"])
    assert alice.delete(f"/v1/events/{cancelled['id']}").status_code == 204
    ok(bob.post(f"/v1/events/{second['id']}/respond", json={"status": "tentative"}))
    assert [e["id"] for e in ok(bob.get("/v1/invitations"))["invitations"]] == [first["id"]]
    assert ok(alice.get("/v1/invitations")) == {"invitations": []}
    problem(bob.get("/v1/invitations?all=1"), 400, field="all")


@covers("GET /v1/conflicts")
def test_conflicts_are_the_overlapping_events_in_range(alice: Caller) -> None:
    a = create(alice, 10, 12)
    b = create(alice, 11, 13, query="?allow_conflict=true")
    create(alice, 14, 15)
    listed = ok(alice.get(f"/v1/conflicts?{RANGE}"))["conflicts"]
    assert [(e["id"], e["conflicts"]) for e in listed] == [(a["id"], [b["id"]]), (b["id"], [a["id"]])]
    assert ok(alice.get(f"/v1/conflicts?from={at(14)}&to={at(15)}")) == {"conflicts": []}
    problem(alice.get(f"/v1/conflicts?from={at(14)}"), 400, field="to")


@covers("GET /v1/notifications")
def test_notifications_page_by_cursor(alice: Caller, bob: Caller) -> None:
    for hour in (10, 12, 14):
        create(alice, hour, hour + 1, participants=["bob"])
    first = ok(bob.get("/v1/notifications?limit=2"))
    assert [n["kind"] for n in first["notifications"]] == ["invited", "invited"]
    assert first["next"] == first["notifications"][-1]["cursor"]
    rest = ok(bob.get(f"/v1/notifications?since={first['next']}"))
    assert len(rest["notifications"]) == 1
    assert ok(bob.get(f"/v1/notifications?since={rest['next']}")) == {
        "notifications": [],
        "next": rest["next"],
    }
    assert ok(alice.get("/v1/notifications")) == {"notifications": [], "next": None}


@covers("GET /v1/notifications")
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("n=1", "n"),
    ],
)
def test_notifications_name_the_bad_parameter(alice: Caller, query: str, field: str) -> None:
    problem(alice.get(f"/v1/notifications?{query}"), 400, field=field)


@covers("GET /v1/calendar.ics")
def test_the_calendar_exports_what_the_caller_has_not_declined(alice: Caller, bob: Caller) -> None:
    create(alice, 10, 11, participants=["bob"], title="Kept")
    declined = create(alice, 12, 13, participants=["bob"], title="Declined")
    ok(bob.post(f"/v1/events/{declined['id']}/respond", json={"status": "declined"}))
    response = bob.get("/v1/calendar.ics")
    text = ok(response)
    assert response.mimetype == "text/calendar"
    assert text.startswith("BEGIN:VCALENDAR")
    assert "SUMMARY:Kept" in text
    assert "Declined" not in text
    assert "SUMMARY:Declined" in ok(alice.get("/v1/calendar.ics"))
    problem(bob.get("/v1/calendar.ics?tz=UTC"), 400, field="tz")
