"""The User Service's fast agenda listing answers exactly as its Flask view (differential).

Two apps over one in-process DB, one with the fast path (`agenda.common.fastviews`) and one without,
get the same request: the status, the headers and the body must be the same bytes, and each app's
stats must count it alike. Whether the fast path or Flask answered is seen from a view spy.
"""

from __future__ import annotations

import logging
from typing import Any

import flask
import pytest
from werkzeug.test import TestResponse

from agenda.calendar.store import EventStore
from agenda.common.tokens import TokenIssuer
from agenda.common.web import IDENTITY_HEADER, REQUEST_ID_HEADER, SECRET_HEADER
from agenda.db.memory import MemoryDBClient
from agenda.users.app import Deps, create_app

from ..backends import AUDIENCE, ISSUER, KEY_ID, SECRET, SIGNING_KEY, Clock, add_account, at, ok

WEEK = f"from={at(1, 0)}&to={at(8, 0)}"


class Pair:
    """The same User Service twice over one DB: `fast` with the fast path, `flask` without."""

    def __init__(self, db: MemoryDBClient, clock: Clock) -> None:
        self.deps: dict[str, Deps] = {}
        self.apps: dict[str, flask.Flask] = {}
        self.flask_views: dict[str, int] = {}
        for name in ("fast", "flask"):
            issuer = TokenIssuer(SIGNING_KEY, KEY_ID, ISSUER, AUDIENCE)
            deps = Deps(store=EventStore(db), issuer=issuer, gateway_secret=SECRET, clock=clock)
            app = create_app(deps, fast_views=name == "fast")
            self.deps[name], self.apps[name] = deps, app
            self._spy(name, app)

    def _spy(self, name: str, app: flask.Flask) -> None:
        self.flask_views[name] = 0
        original = app.view_functions["events.list_events"]

        def counted() -> Any:
            self.flask_views[name] += 1
            return original()

        app.view_functions["events.list_events"] = counted

    def both(self, method: str, url: str, headers: dict[str, str]) -> tuple[TestResponse, TestResponse]:
        fast = self.apps["fast"].test_client().open(url, method=method, headers=headers)
        slow = self.apps["flask"].test_client().open(url, method=method, headers=headers)
        return fast, slow


@pytest.fixture
def apps(db: MemoryDBClient, clock: Clock) -> Pair:
    for name in ("alice", "bob"):
        add_account(db, name)
    pair = Pair(db, clock)
    client = pair.apps["flask"].test_client()
    caller = {SECRET_HEADER: SECRET, IDENTITY_HEADER: "alice"}
    for start, end in ((10, 12), (11, 13), (14, 15)):
        body = {"title": f"Plan {start}", "start": at(2, start), "end": at(2, end), "participants": ["bob"]}
        ok(client.post("/v1/events?allow_conflict=true", json=body, headers=caller), 201)
    pair.deps["flask"].requests_served = 0
    return pair


def same(fast: TestResponse, slow: TestResponse, *, request_id: bool = True) -> None:
    """Same status, same headers (the request id only when it is the caller's), same bytes."""
    assert fast.status == slow.status
    fast_headers, slow_headers = dict(fast.headers), dict(slow.headers)
    if not request_id:
        assert len(fast_headers.pop(REQUEST_ID_HEADER)) == len(slow_headers.pop(REQUEST_ID_HEADER))
    assert fast_headers == slow_headers
    assert fast.get_data() == slow.get_data()


USER = {SECRET_HEADER: SECRET, IDENTITY_HEADER: "alice", REQUEST_ID_HEADER: "req-1"}


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_the_listing_is_answered_by_the_fast_path_with_flasks_bytes(apps: Pair, who: str) -> None:
    fast, slow = apps.both("GET", f"/v1/events?{WEEK}", {**USER, IDENTITY_HEADER: who})
    same(fast, slow)
    assert len(fast.get_json()["events"]) == 3
    assert fast.get_json()["events"][0]["conflicts"]  # the clash is flagged
    assert apps.flask_views == {"fast": 0, "flask": 1}
    assert [d.requests_served for d in apps.deps.values()] == [1, 1]


def test_a_debugging_app_indents_its_listing_alike(apps: Pair) -> None:
    for app in apps.apps.values():
        app.debug = True
    fast, slow = apps.both("GET", f"/v1/events?{WEEK}", USER)
    same(fast, slow)
    assert b'\n  "events"' in fast.get_data()
    assert apps.flask_views == {"fast": 0, "flask": 1}


def test_without_a_request_id_each_answer_gets_a_fresh_one(apps: Pair) -> None:
    headers = {**USER, REQUEST_ID_HEADER: "not a token!"}
    fast, slow = apps.both("GET", f"/v1/events?{WEEK}", headers)
    same(fast, slow, request_id=False)
    assert fast.headers[REQUEST_ID_HEADER] != "not a token!"
    assert apps.flask_views == {"fast": 0, "flask": 1}


# Every request the fast path must leave to Flask: (method, url, headers). Flask answers both apps.
TO_FLASK: dict[str, tuple[str, str, dict[str, str]]] = {
    "no secret": ("GET", f"/v1/events?{WEEK}", {IDENTITY_HEADER: "alice", REQUEST_ID_HEADER: "req-1"}),
    "wrong secret": ("GET", f"/v1/events?{WEEK}", {**USER, SECRET_HEADER: "not-the-secret"}),
    "non-ASCII secret": ("GET", f"/v1/events?{WEEK}", {**USER, SECRET_HEADER: "s\xe9cret"}),
    "no caller": ("GET", f"/v1/events?{WEEK}", {SECRET_HEADER: SECRET, REQUEST_ID_HEADER: "req-1"}),
    "bad caller": ("GET", f"/v1/events?{WEEK}", {**USER, IDENTITY_HEADER: "Not A Name"}),
    "no to": ("GET", f"/v1/events?from={at(1, 0)}", USER),
    "no query": ("GET", "/v1/events", USER),
    "extra parameter": ("GET", f"/v1/events?{WEEK}&page=2", USER),
    "repeated from": ("GET", f"/v1/events?{WEEK}&from={at(2, 0)}", USER),
    "blank to": ("GET", f"/v1/events?from={at(1, 0)}&to=", USER),
    "reversed range": ("GET", f"/v1/events?from={at(8, 0)}&to={at(1, 0)}", USER),
    "range over a year": ("GET", f"/v1/events?from={at(1, 0)}&to=2032-06-01T00:00:00Z", USER),
    "not a time": ("GET", f"/v1/events?from=noon&to={at(8, 0)}", USER),
    "bad percent-escape": ("GET", f"/v1/events?{WEEK}&x=%FF", USER),
    "POST": ("POST", f"/v1/events?{WEEK}", USER),
    "HEAD": ("HEAD", f"/v1/events?{WEEK}", USER),
    "other path": ("GET", f"/v1/events/?{WEEK}", USER),
}


@pytest.mark.parametrize("case", sorted(TO_FLASK))
def test_what_the_fast_path_leaves_to_flask_is_answered_alike(apps: Pair, case: str) -> None:
    method, url, headers = TO_FLASK[case]
    fast, slow = apps.both(method, url, headers)
    same(fast, slow)
    assert apps.deps["fast"].requests_served == apps.deps["flask"].requests_served


def test_a_malformed_query_reaches_flask_which_names_the_field(apps: Pair) -> None:
    fast, _ = apps.both("GET", f"/v1/events?{WEEK}&from={at(2, 0)}", USER)
    assert fast.status_code == 200  # Flask takes the first of a repeated parameter
    fast, _ = apps.both("GET", f"/v1/events?from=noon&to={at(8, 0)}", USER)
    assert (fast.status_code, fast.get_json()["field"]) == (400, "from")
    assert apps.flask_views == {"fast": 2, "flask": 2}


def test_a_db_without_a_leader_is_flasks_503(apps: Pair, db: MemoryDBClient, caplog: Any) -> None:
    db.outage(100)
    fast, slow = apps.both("GET", f"/v1/events?{WEEK}", USER)
    db.clear_faults()
    same(fast, slow)
    assert (fast.status_code, fast.headers["Retry-After"]) == (503, "2")
    assert apps.flask_views == {"fast": 0, "flask": 1}
    assert [d.requests_served for d in apps.deps.values()] == [1, 1]


def test_an_unexpected_failure_is_flasks_opaque_500_logged_with_the_request_id(
    apps: Pair, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    for deps in apps.deps.values():
        monkeypatch.setattr(deps.store, "agenda", broken)
    with caplog.at_level(logging.ERROR):
        fast, slow = apps.both("GET", f"/v1/events?{WEEK}", USER)
    same(fast, slow)
    assert fast.status_code == 500
    assert b"secret detail" not in fast.get_data()
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert len(logged) == 2
    assert {getattr(r, "request_id", None) for r in logged} == {"req-1"}


def test_a_listing_with_occurrences_of_a_series_is_answered_alike(apps: Pair) -> None:
    client = apps.apps["flask"].test_client()
    caller = {SECRET_HEADER: SECRET, IDENTITY_HEADER: "alice"}
    body = {
        "title": "Daily",
        "start": at(1, 9),
        "end": at(1, 10),
        "participants": ["bob"],
        "recurrence": {"rrule": "FREQ=DAILY;COUNT=5", "timezone": "Europe/Madrid"},
    }
    ok(client.post("/v1/events?allow_conflict=true", json=body, headers=caller), 201)
    fast, slow = apps.both("GET", f"/v1/events?{WEEK}", USER)
    same(fast, slow)
    listed = fast.get_json()["events"]
    assert [e.get("recurrence_id") for e in listed].count(None) == 3  # the three plain events
    assert len(listed) == 3 + 5
    assert apps.flask_views == {"fast": 0, "flask": 1}
