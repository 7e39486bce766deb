"""The backend services' real apps in process, for their view tests: no sockets, no DB cluster.

Each app is built by its own factory over a `MemoryDBClient` (the DB's state machine in this process,
with injectable races and lost answers) and called as the API gateway calls it: with the gateway's
secret on every request and the caller's name in the identity header. `covers` and `url_rules` let
each service's view tests prove that every URL rule of the app has at least one test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final, TypeVar

import flask
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from agenda.calendar.cas import Announce
from agenda.calendar.store import EventStore
from agenda.common.errors import PROBLEM_CONTENT_TYPE, problem_type
from agenda.common.tokens import TokenIssuer
from agenda.common.web import IDENTITY_HEADER, SECRET_HEADER, environ_key
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.groups.app import GroupDeps
from agenda.groups.app import create_app as create_groups_app
from agenda.groups.store import GroupStore
from agenda.users.app import Deps
from agenda.users.app import create_app as create_users_app
from agenda.users.passwords import hash_password

SECRET: Final = "unit-gateway-secret-0123456789"
PASSWORD: Final = "correct horse battery"
SIGNING_KEY: Final = Ed25519PrivateKey.generate()
KEY_ID, ISSUER, AUDIENCE = "k1", "agenda-users", "agenda"
START: Final = datetime(2031, 1, 1, 8, tzinfo=UTC)

F = TypeVar("F", bound=Callable[..., Any])


class Clock:
    """The services' clock: starts at `START` and moves 1 ms per reading, so every instant is distinct."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def users_app(db: DBClient, clock: Clock, announce: Announce | None = None) -> flask.Flask:
    issuer = TokenIssuer(SIGNING_KEY, KEY_ID, ISSUER, AUDIENCE)
    store = EventStore(db, announce=announce)
    return create_users_app(Deps(store=store, issuer=issuer, gateway_secret=SECRET, clock=clock))


def groups_app(db: DBClient, clock: Clock, announce: Announce | None = None) -> flask.Flask:
    groups, events = GroupStore(db, announce=announce), EventStore(db, announce=announce)
    return create_groups_app(GroupDeps(groups=groups, events=events, gateway_secret=SECRET, clock=clock))


def gateway_client(app: flask.Flask) -> FlaskClient:
    """`app`'s test client sending the gateway's secret with every request (a header may override it)."""
    client = app.test_client()
    client.environ_base[environ_key(SECRET_HEADER)] = SECRET
    return client


@dataclass(frozen=True)
class Caller:
    """A user calling through the gateway: each request carries their name in the identity header."""

    client: FlaskClient
    name: str

    def request(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {IDENTITY_HEADER: self.name, **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)


@cache
def password_record() -> dict[str, Any]:
    """One scrypt hash of `PASSWORD` for every seeded account (hashing costs tens of milliseconds)."""
    return hash_password(PASSWORD)


def add_account(db: DBClient, name: str) -> None:
    record = {
        "username": name,
        "display_name": name.title(),
        "timezone": "UTC",
        "password": password_record(),
        "created": "2031-01-01T00:00:00Z",
    }
    EventStore(db).create_user(record)


def at(day: int, hour: float) -> str:
    """RFC 3339 for January `day` 2031 at `hour` (fractions are minutes), UTC."""
    moment = datetime(2031, 1, day, tzinfo=UTC) + timedelta(hours=hour)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(response: TestResponse, status: int = 200) -> Any:
    """The JSON body of a successful `response` (asserting its status, with the body on failure)."""
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json() if response.is_json else response.get_data(as_text=True)


def problem(response: TestResponse, status: int, *, field: str | None = None, type: str | None = None) -> Any:
    """The problem+json body of `response`, asserting its status and, when given, the field and type."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json()
    if field is not None:
        assert body.get("field") == field, body
    if type is not None:
        assert body["type"] == problem_type(type), body
    return body


either_outcome = pytest.mark.parametrize("applied", [True, False], ids=["applied", "lost"])
"""Parametrize a test over both fates of a write whose answer was lost (`db.unknown_outcome(applied=...)`)."""

Sample = tuple[str, str, dict[str, Any] | None]
"""A request that reaches a route: method, concrete path, JSON body."""


def refused_without_the_secret(client: FlaskClient, sample: Sample) -> None:
    method, path, body = sample
    for secret in ("", "not-the-secret"):
        headers = {SECRET_HEADER: secret, IDENTITY_HEADER: "alice"}
        problem(client.open(path, method=method, json=body, headers=headers), 403)


def refused_without_a_caller(client: FlaskClient, sample: Sample) -> None:
    method, path, body = sample
    problem(client.open(path, method=method, json=body), 401)
    problem(client.open(path, method=method, json=body, headers={IDENTITY_HEADER: "Not A Name"}), 401)


def unavailable_without_a_db_leader(caller: Caller, db: MemoryDBClient, sample: Sample) -> None:
    method, path, body = sample
    db.outage(100)
    response = caller.request(method, path, json=body)
    db.clear_faults()
    problem(response, 503)
    assert response.headers["Retry-After"] == "2"


def covers(*routes: str) -> Callable[[F], F]:
    """Mark a test as a view test of each route (``"METHOD /rule"`` as in the app's URL map)."""

    def mark(test: F) -> F:
        test.covered_routes = (*getattr(test, "covered_routes", ()), *routes)  # type: ignore[attr-defined]
        return test

    return mark


def url_rules(app: flask.Flask) -> set[str]:
    """``"METHOD /rule"`` for every route the app serves (HEAD and OPTIONS are Flask's own)."""
    return {
        f"{method} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    }


def covered(namespace: Mapping[str, object]) -> set[str]:
    """The routes the tests in `namespace` (a test module's globals) are marked as covering."""
    return {route for value in namespace.values() for route in getattr(value, "covered_routes", ())}
