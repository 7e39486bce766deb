"""The User Service behind the API gateway, on a real DB cluster: accounts, events, invitations,
conflicts, concurrency, token checks at the gateway, hostile input and the iCalendar export.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import icalendar
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.tokens import TokenIssuer

from ..conftest import wait_until
from .conftest import GATEWAY_SECRET, LOGIN_LIMIT, Stack

PROBLEM = "application/problem+json"
DAY = "2031-03-0{day}T{hour:02d}:{minute:02d}:00Z"


def at(day: int, hour: int, minute: int = 0) -> str:
    return DAY.format(day=day, hour=hour, minute=minute)


def event_body(title: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "start": start, "end": end, **extra}


def assert_problem(response: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert body.get("field") == field, body
    return body


# ------------------------------------------------------------------------------------------ accounts


def test_register_login_me(stack: Stack) -> None:
    name = f"reg{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": "s3cret-pass", "display_name": "Ana", "timezone": "America/Havana"}
    created = stack.call("POST", "/v1/auth/register", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "username": name,
        "display_name": "Ana",
        "timezone": "America/Havana",
        "created": created.json()["created"],
    }
    assert "password" not in created.text
    assert_problem(stack.call("POST", "/v1/auth/register", json=body), 409, "username")
    login = stack.call("POST", "/v1/auth/login", json={"username": name, "password": "s3cret-pass"})
    assert login.status_code == 200
    grant = login.json()
    assert grant["token_type"] == "Bearer"
    assert grant["expires_in"] > 0
    me = stack.call("GET", "/v1/me", grant["access_token"])
    assert me.status_code == 200
    assert me.json()["username"] == name
    assert me.headers["X-Request-ID"]


def test_concurrent_registrations_of_one_name_create_one_account(stack: Stack) -> None:
    name = f"race{uuid.uuid4().hex[:8]}"
    statuses: list[int] = []

    def register(index: int) -> None:
        body = {"username": name, "password": f"password-{index}"}
        statuses.append(stack.call("POST", "/v1/auth/register", json=body).status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201, 409, 409, 409]


def test_wrong_password_is_401_and_login_attempts_are_rate_limited(stack: Stack) -> None:
    name, _ = stack.user("rl")
    wrong = {"username": name, "password": "not the password"}
    codes = [stack.call("POST", "/v1/auth/login", json=wrong).status_code for _ in range(LOGIN_LIMIT - 1)]
    assert codes == [401] * (LOGIN_LIMIT - 1)  # stack.user()'s successful login reset the count
    fifth = stack.call("POST", "/v1/auth/login", json=wrong)
    assert fifth.status_code == 401
    limited = stack.call(
        "POST", "/v1/auth/login", json={"username": name, "password": "correct horse battery"}
    )
    assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    unknown = stack.call("POST", "/v1/auth/login", json={"username": "nobody-here", "password": "whatever1"})
    assert_problem(unknown, 401)


# -------------------------------------------------------------------------------- tokens at gateway


def _token(
    stack: Stack,
    *,
    key: Ed25519PrivateKey | None = None,
    aud: str = "agenda",
    now: float | None = None,
    kid: str = "k1",
) -> str:
    issuer = TokenIssuer(
        key or stack.signing_key, kid, "agenda-users", aud, ttl=600, clock=lambda: now or time.time()
    )
    return issuer.issue("mallory")[0]


def test_bad_tokens_are_refused_before_any_backend_sees_them(stack: Stack) -> None:
    bad = {
        "forged": _token(stack, key=Ed25519PrivateKey.generate()),
        "expired": _token(stack, now=time.time() - 7200),
        "wrong-audience": _token(stack, aud="another-service"),
        "wrong-kid": _token(stack, kid="k9"),
        "garbage": "not-a-jwt",
    }
    before = stack.backend_requests()
    for label, token in bad.items():
        for method, path in (("GET", "/v1/me"), ("POST", "/v1/events"), ("GET", "/v1/calendar.ics")):
            response = stack.call(method, path, token, json={"title": "x"} if method == "POST" else None)
            assert_problem(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), label
    assert_problem(stack.call("GET", "/v1/me"), 401)
    assert stack.backend_requests() == before
    # The control: a valid token does reach the backend.
    _, token = stack.user("ctl")
    after_user = stack.backend_requests()
    assert stack.call("GET", "/v1/me", token).status_code == 200
    assert stack.backend_requests() == after_user + 1


def test_backends_refuse_callers_without_the_gateway_secret(stack: Stack) -> None:
    base = stack.users_urls[0]
    direct = requests.get(base + "/v1/me", headers={"X-Agenda-User": "alice"}, timeout=5)
    assert_problem(direct, 403)
    spoofed = requests.get(
        base + "/v1/me", headers={"X-Agenda-User": "alice", "X-Agenda-Gateway-Secret": "guess"}, timeout=5
    )
    assert_problem(spoofed, 403)
    ok = requests.get(base + "/v1/health", timeout=5)
    assert ok.status_code == 200
    assert GATEWAY_SECRET not in ok.text


# ------------------------------------------------------------------------------------------- events


def test_invitation_is_visible_at_once_and_answers_notify_the_organizer(stack: Stack) -> None:
    alice, alice_token = stack.user("alice")
    bob, bob_token = stack.user("bob")
    created = stack.call(
        "POST",
        "/v1/events",
        alice_token,
        json=event_body("Plan", at(2, 9), at(2, 10), participants=[bob], location="Room 1"),
    )
    assert created.status_code == 201, created.text
    event = created.json()
    assert event["organizer"] == alice
    assert event["participants"] == {bob: {"status": "needs-action", "level": None}}
    assert created.headers["Location"] == f"/v1/events/{event['id']}"

    # No polling: the create returned after the txn committed, so Bob's view already holds it.
    invitations = stack.call("GET", "/v1/invitations", bob_token).json()["invitations"]
    assert [i["id"] for i in invitations] == [event["id"]]
    assert invitations[0]["my_status"] == "needs-action"
    agenda = stack.call("GET", "/v1/events", bob_token, params={"from": at(2, 0), "to": at(3, 0)}).json()
    assert [e["id"] for e in agenda["events"]] == [event["id"]]
    notes = stack.call("GET", "/v1/notifications", bob_token).json()["notifications"]
    assert [(n["kind"], n["event_id"]) for n in notes] == [("invited", event["id"])]

    answered = stack.call("POST", f"/v1/events/{event['id']}/respond", bob_token, json={"status": "accepted"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["participants"][bob]["status"] == "accepted"
    assert stack.call("GET", "/v1/invitations", bob_token).json()["invitations"] == []
    alice_notes = stack.call("GET", "/v1/notifications", alice_token).json()
    assert [(n["kind"], n["detail"]) for n in alice_notes["notifications"]] == [
        ("responded", f"{bob} accepted")
    ]
    later = stack.call("GET", "/v1/notifications", alice_token, params={"since": alice_notes["next"]})
    assert later.json()["notifications"] == []

    # Only participants see the event; only the organizer may change or cancel it.
    _, carol_token = stack.user("carol")
    assert_problem(stack.call("GET", f"/v1/events/{event['id']}", carol_token), 404)
    assert_problem(stack.call("PATCH", f"/v1/events/{event['id']}", bob_token, json={"title": "Mine"}), 403)
    assert_problem(stack.call("DELETE", f"/v1/events/{event['id']}", bob_token), 403)
    assert_problem(
        stack.call("POST", f"/v1/events/{event['id']}/respond", alice_token, json={"status": "accepted"}), 403
    )
    moved = stack.call(
        "PATCH", f"/v1/events/{event['id']}", alice_token, json={"start": at(2, 11), "end": at(2, 12)}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["start"], moved.json()["sequence"]) == (at(2, 11), 2)
    bob_view = stack.call("GET", "/v1/events", bob_token, params={"from": at(2, 0), "to": at(3, 0)}).json()
    assert [e["start"] for e in bob_view["events"]] == [at(2, 11)]
    assert stack.call("DELETE", f"/v1/events/{event['id']}", alice_token).status_code == 204
    cancelled = stack.call("GET", f"/v1/events/{event['id']}", bob_token).json()
    assert cancelled["status"] == "cancelled"
    kinds = [n["kind"] for n in stack.call("GET", "/v1/notifications", bob_token).json()["notifications"]]
    assert kinds == ["invited", "changed", "cancelled"]


def test_unknown_participant_is_refused_naming_the_item(stack: Stack) -> None:
    _, token = stack.user("org")
    response = stack.call(
        "POST", "/v1/events", token, json=event_body("x", at(3, 9), at(3, 10), participants=["ghost-user-x"])
    )
    assert_problem(response, 400, "participants[0]")


def test_conflicts_are_409_unless_allowed_and_then_flagged(stack: Stack) -> None:
    _, token = stack.user("busy")
    first = stack.call("POST", "/v1/events", token, json=event_body("A", at(4, 10), at(4, 11)))
    assert first.status_code == 201
    clash = stack.call("POST", "/v1/events", token, json=event_body("B", at(4, 10, 30), at(4, 11, 30)))
    body = assert_problem(clash, 409)
    assert body["conflicts"] == [first.json()["id"]]
    touching = stack.call("POST", "/v1/events", token, json=event_body("C", at(4, 11), at(4, 12)))
    assert touching.status_code == 201  # back-to-back is not a conflict
    forced = stack.call(
        "POST",
        "/v1/events",
        token,
        params={"allow_conflict": "true"},
        json=event_body("B", at(4, 10, 30), at(4, 11, 30)),
    )
    assert forced.status_code == 201
    ids = {"A": first.json()["id"], "B": forced.json()["id"], "C": touching.json()["id"]}
    window = {"from": at(4, 0), "to": at(5, 0)}
    agenda = {
        e["title"]: e["conflicts"]
        for e in stack.call("GET", "/v1/events", token, params=window).json()["events"]
    }
    assert agenda == {"A": [ids["B"]], "B": [ids["A"], ids["C"]], "C": [ids["B"]]}
    conflicts = stack.call("GET", "/v1/conflicts", token, params=window).json()["conflicts"]
    assert sorted(c["title"] for c in conflicts) == ["A", "B", "C"]
    assert_problem(
        stack.call("POST", "/v1/events", token, params={"allow_conflict": "maybe"}, json={}),
        400,
        "allow_conflict",
    )


def test_accepting_into_a_conflict_is_409_unless_allowed(stack: Stack) -> None:
    _, alice_token = stack.user("alice")
    bob, bob_token = stack.user("bob")
    own = stack.call("POST", "/v1/events", bob_token, json=event_body("Bob's", at(5, 9), at(5, 10)))
    assert own.status_code == 201
    invite = stack.call(
        "POST",
        "/v1/events",
        alice_token,
        json=event_body("Meet", at(5, 9, 30), at(5, 10, 30), participants=[bob]),
    )
    assert invite.status_code == 201  # an invitation does not block anyone yet
    path = f"/v1/events/{invite.json()['id']}/respond"
    assert_problem(stack.call("POST", path, bob_token, json={"status": "accepted"}), 409)
    assert stack.call("POST", path, bob_token, json={"status": "tentative"}).status_code == 200
    forced = stack.call(
        "POST", path, bob_token, params={"allow_conflict": "true"}, json={"status": "accepted"}
    )
    assert forced.status_code == 200


def test_concurrent_creates_never_double_book(stack: Stack) -> None:
    _, token = stack.user("race")
    results: list[requests.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def create(index: int) -> None:
        barrier.wait(timeout=30)
        response = stack.call(
            "POST",
            "/v1/events",
            token,
            json=event_body(f"slot{index}", at(6, 9, index * 5), at(6, 10, index * 5)),
        )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409, 409, 409], [r.text for r in results]
    agenda = stack.call("GET", "/v1/events", token, params={"from": at(6, 0), "to": at(7, 0)}).json()[
        "events"
    ]
    assert len(agenda) == 1
    assert agenda[0]["conflicts"] == []


# ----------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"title": "x", "start": ', 400, None),
        ("[1, 2]", 400, None),
        ('{"title": NaN, "start": "a", "end": "b"}', 400, None),
        ("[" * 100_000, 400, None),
        ({"title": 5, "start": at(7, 9), "end": at(7, 10)}, 400, "title"),
        ({"title": "x", "start": at(7, 9), "end": at(7, 10), "colour": "red"}, 400, "colour"),
        ({"title": "x", "start": at(7, 9)}, 400, "end"),
        ({"title": "x", "start": "tomorrow", "end": at(7, 10)}, 400, "start"),
        ({"title": "x", "start": "2031-03-07T09:00:00", "end": at(7, 10)}, 400, "start"),
        ({"title": "x", "start": "2031-02-30T09:00:00Z", "end": at(7, 10)}, 400, "start"),
        ({"title": "x", "start": at(7, 10), "end": at(7, 9)}, 400, "end"),
        ({"title": "   ", "start": at(7, 9), "end": at(7, 10)}, 400, "title"),
        ({"title": "x", "start": at(7, 9), "end": at(7, 10), "participants": "bob"}, 400, "participants"),
        (
            {"title": "x", "start": at(7, 9), "end": at(7, 10), "participants": ["Bob!"]},
            400,
            "participants[0]",
        ),
        ({"title": "x", "start": at(7, 9), "end": at(7, 10), "visibility": "secret"}, 400, "visibility"),
        ({"title": "x" * 300_000, "start": at(7, 9), "end": at(7, 10)}, 413, None),
    ],
    ids=[
        "truncated",
        "array",
        "nan",
        "deep-nesting",
        "wrong-type",
        "unknown-field",
        "missing",
        "not-a-time",
        "naive-time",
        "impossible-date",
        "end-before-start",
        "blank-title",
        "participants-type",
        "bad-username",
        "bad-visibility",
        "huge",
    ],
)
def test_bad_event_input_is_a_problem_naming_the_field(
    stack: Stack, body: Any, status: int, field: str | None
) -> None:
    _, token = stack.user("bad")
    if isinstance(body, str):
        response = stack.call(
            "POST", "/v1/events", token, data=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = stack.call("POST", "/v1/events", token, json=body)
    assert_problem(response, status, field)


def test_other_bad_input_is_4xx_never_500(stack: Stack) -> None:
    _, token = stack.user("bad")
    assert_problem(
        stack.call("POST", "/v1/auth/register", json={"username": "x", "password": "long enough"}),
        400,
        "username",
    )
    assert_problem(
        stack.call("POST", "/v1/auth/register", json={"username": "okname", "password": "short"}),
        400,
        "password",
    )
    assert_problem(
        stack.call(
            "POST",
            "/v1/auth/register",
            json={"username": "okname2", "password": "long enough", "timezone": "Mars/Base"},
        ),
        400,
        "timezone",
    )
    assert_problem(
        stack.call("POST", "/v1/auth/register", data="x", headers={"Content-Type": "text/plain"}), 415
    )
    assert_problem(stack.call("GET", "/v1/events", token, params={"from": at(1, 0)}), 400, "to")
    assert_problem(
        stack.call("GET", "/v1/events", token, params={"from": at(2, 0), "to": at(1, 0)}), 400, "to"
    )
    assert_problem(
        stack.call(
            "GET", "/v1/events", token, params={"from": "2030-01-01T00:00:00Z", "to": "2032-01-01T00:00:00Z"}
        ),
        400,
        "to",
    )
    assert_problem(stack.call("GET", "/v1/notifications", token, params={"since": "../../x"}), 400, "since")
    assert_problem(stack.call("GET", "/v1/events/../../users/x", token), 404)
    assert_problem(stack.call("GET", "/v1/events/%00", token), 404)
    assert_problem(stack.call("GET", "/v1/events/" + "a" * 32, token), 404)
    assert_problem(
        stack.call("POST", "/v1/events/" + "a" * 32 + "/respond", token, json={"status": "maybe"}),
        400,
        "status",
    )
    assert_problem(stack.call("PUT", "/v1/events/abc", token), 405)


# ------------------------------------------------------------------------------ export and contract


def test_calendar_ics_parses_with_icalendar(stack: Stack) -> None:
    alice, token = stack.user("ics")
    bob, _ = stack.user("icsb")
    body = event_body(
        "Café, «review»; ñ", at(8, 9), at(8, 10), description="line1\nline2", participants=[bob]
    )
    assert stack.call("POST", "/v1/events", token, json=body).status_code == 201
    response = stack.call("GET", "/v1/calendar.ics", token)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(response.content)
    (vevent,) = calendar.walk("VEVENT")
    assert str(vevent["SUMMARY"]) == "Café, «review»; ñ"
    assert str(vevent["DESCRIPTION"]) == "line1\nline2"
    assert vevent.decoded("DTSTART").isoformat() == "2031-03-08T09:00:00+00:00"
    assert str(vevent["ORGANIZER"]) == f"mailto:{alice}@agenda.invalid"


def test_openapi_and_health(stack: Stack) -> None:
    doc = stack.call("GET", "/v1/openapi.json").json()
    for path in (
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/me",
        "/v1/events",
        "/v1/events/{event_id}",
        "/v1/events/{event_id}/respond",
        "/v1/invitations",
        "/v1/conflicts",
        "/v1/notifications",
        "/v1/calendar.ics",
        "/v1/health",
        "/v1/openapi.json",
    ):
        assert path in doc["paths"], path
    health = stack.call("GET", "/v1/health", headers={"X-Request-ID": "trace-me-1"})
    assert health.json()["status"] == "ok"
    assert health.headers["X-Request-ID"] == "trace-me-1"
    minted = stack.call("GET", "/v1/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert minted.headers["X-Request-ID"] != "bad id\twith tab"


# ------------------------------------------------------------------------------- backend failover


def test_a_user_service_instance_killed_mid_run_costs_no_failed_get(stack: Stack) -> None:
    name, token = stack.user("mr")
    answers: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.get(
                        stack.url("/v1/me"), headers={"Authorization": f"Bearer {token}"}, timeout=30
                    )
                except requests.RequestException:
                    answers.append(0)
                else:
                    answers.append(response.status_code)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for = len(answers) + 40
        wait_until(lambda: len(answers) >= wait_for, 30.0, message="GETs before the kill")
        stack.kill("users2")  # SIGKILL while four clients are reading through the gateway
        after_kill = len(answers)
        wait_until(lambda: len(answers) >= after_kill + 80, 60.0, message="GETs after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        stack.restart("users2")
    assert set(answers) == {200}, sorted(set(answers))  # 0: a transport error
    assert stack.call("GET", "/v1/me", token).json()["username"] == name


def test_gateway_fails_over_when_a_user_service_instance_dies(stack: Stack) -> None:
    name, token = stack.user("fo")
    stack.kill("users1")
    try:
        for _ in range(4):  # whichever instance the gateway preferred, every request gets an answer
            assert stack.call("GET", "/v1/me", token).json()["username"] == name
        # A POST to a dead instance provably never left the gateway (connection refused): re-sent.
        created = stack.call(
            "POST", "/v1/events", token, json=event_body("after failover", at(9, 9), at(9, 10))
        )
        assert created.status_code == 201, created.text
        assert stack.call("GET", f"/v1/events/{created.json()['id']}", token).status_code == 200
    finally:
        stack.restart("users1")


def test_concurrent_accepts_never_double_book_the_invitee(stack: Stack) -> None:
    bob, bob_token = stack.user("inv")
    ids = []
    for index in range(3):
        _, organizer = stack.user(f"org{index}")
        body = event_body(f"meeting{index}", at(9, 13, index * 10), at(9, 14, index * 10), participants=[bob])
        created = stack.call("POST", "/v1/events", organizer, json=body)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    results: list[int] = []
    barrier = threading.Barrier(len(ids))

    def accept(event_id: str) -> None:
        barrier.wait(timeout=30)
        response = stack.call(
            "POST", f"/v1/events/{event_id}/respond", bob_token, json={"status": "accepted"}
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=accept, args=(event_id,)) for event_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [200, 409, 409]
    agenda = stack.call("GET", "/v1/events", bob_token, params={"from": at(9, 0), "to": at(9, 23)}).json()
    accepted = [e["id"] for e in agenda["events"] if e["my_status"] == "accepted"]
    assert len(accepted) == 1
