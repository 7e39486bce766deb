"""What every backend service shares: gateway trust, the problem handlers, the argument checks."""

from __future__ import annotations

from typing import Any

import flask
import pytest
from flask.testing import FlaskClient

from agenda.calendar.cas import Contention
from agenda.calendar.store import EventConflict
from agenda.common.backend import backend_app, check_args, current_user, query_flag, query_range
from agenda.common.web import IDENTITY_HEADER, REQUEST_ID_HEADER, SECRET_HEADER
from agenda.db.client import DBError, DBUnavailable
from agenda.domain.rules import RuleError

SECRET = "backend-secret-0123456789"
TRUSTED = {SECRET_HEADER: SECRET}
RAISED: dict[str, Exception] = {
    "conflict": EventConflict("bob", ["e1"]),
    "contention": Contention("lost"),
    "rule": RuleError("organizer-only", "only the organizer", forbidden=True),
    "db-down": DBUnavailable("no leader"),
    "db-odd": DBError(418, None, "teapot"),
}


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def client(calls: list[str]) -> FlaskClient:
    app = backend_app("test", SECRET, on_request=lambda: calls.append(flask.request.path))

    @app.get("/me")
    def me() -> Any:
        check_args({"flag", "from", "to"})
        start, end = query_range() if "from" in flask.request.args else (None, None)
        return {"user": current_user(), "flag": query_flag("flag"), "range": [str(start), str(end)]}

    @app.get("/raise/<name>")
    def raise_(name: str) -> Any:
        raise RAISED[name]

    @app.get("/internal/stats")
    def stats() -> Any:
        return {"ok": True}

    return app.test_client()


def test_health_answers_anyone_and_echoes_the_request_id(client: FlaskClient, calls: list[str]) -> None:
    response = client.get("/v1/health", headers={REQUEST_ID_HEADER: "req-1"})
    assert response.status_code == 200
    assert response.get_json()["service"] == "test"
    assert response.headers[REQUEST_ID_HEADER] == "req-1"
    assert calls == []


@pytest.mark.parametrize("secret", [None, "wrong", SECRET + "x"])
def test_without_the_gateway_secret_nothing_else_answers(client: FlaskClient, secret: str | None) -> None:
    headers = {} if secret is None else {SECRET_HEADER: secret, IDENTITY_HEADER: "alice"}
    response = client.get("/me", headers={**headers, REQUEST_ID_HEADER: "req-2"})
    assert response.status_code == 403
    assert response.get_json()["request_id"] == "req-2"  # bound before the refusal


def test_the_identity_is_trusted_once_the_secret_matched(client: FlaskClient, calls: list[str]) -> None:
    response = client.get("/me?flag=1", headers={**TRUSTED, IDENTITY_HEADER: "alice"})
    assert response.get_json() == {"user": "alice", "flag": True, "range": ["None", "None"]}
    assert calls == ["/me"]
    assert client.get("/me", headers=TRUSTED).status_code == 401  # no caller
    assert client.get("/me", headers={**TRUSTED, IDENTITY_HEADER: "Not A Name!"}).status_code == 401
    assert client.get("/internal/stats", headers=TRUSTED).status_code == 200
    assert calls == ["/me", "/me", "/me"]  # the operator's stats are not counted


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("bogus=1", "bogus"),
        ("flag=maybe", "flag"),
        ("from=2031-01-01T00:00:00Z", "to"),
        ("to=x&from=x", "from"),
    ],
)
def test_argument_checks_name_the_field(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/me?{query}", headers={**TRUSTED, IDENTITY_HEADER: "alice"})
    assert response.status_code == 400
    assert response.get_json()["field"] == field


@pytest.mark.parametrize(
    ("name", "status", "extra"),
    [
        ("conflict", 409, {"user": "bob", "conflicts": ["e1"]}),
        ("contention", 503, {}),
        ("rule", 403, {"type": "https://agenda.invalid/problems/organizer-only"}),
        ("db-down", 503, {}),
        ("db-odd", 500, {}),
    ],
)
def test_domain_store_and_db_errors_are_problems(
    client: FlaskClient, name: str, status: int, extra: dict[str, Any]
) -> None:
    response = client.get(f"/raise/{name}", headers=TRUSTED)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert extra.items() <= response.get_json().items()
