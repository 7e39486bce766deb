"""Every error a Flask service returns is problem+json, and a crash leaks nothing."""

import logging

import flask
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from agenda.common.errors import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    bad_request,
    conflict,
    forbidden,
    install_error_handlers,
    json_body,
    not_found,
    problem_response,
    problem_type,
    too_many_requests,
    unauthorized,
    unavailable,
)
from agenda.common.logs import bind_request_id

SECRET_MESSAGE = "db password is hunter2"


@pytest.fixture
def app() -> flask.Flask:
    app = flask.Flask("test")
    app.config["MAX_CONTENT_LENGTH"] = 1024
    install_error_handlers(app)

    @app.post("/events")
    def create_event() -> dict:
        body = json_body(
            {"title": str, "start": int, "all_day": bool},
            {"duration": float, "notes": (str, type(None)), "tags": list},
        )
        return {"got": body}

    @app.post("/loose")
    def loose() -> dict:
        return json_body({"a": int}, allow_unknown=True)

    @app.get("/items/<int:item>")
    def item(item: int) -> dict:
        if item == 0:
            raise not_found("no item 0")
        if item == 1:
            raise conflict("slot taken", field="start", type=problem_type("event-overlap"), other=7)
        return {"item": item}

    @app.get("/crash")
    def crash() -> dict:
        raise RuntimeError(SECRET_MESSAGE)

    @app.post("/werkzeug-json")
    def werkzeug_json() -> dict:
        return {"body": flask.request.get_json()}

    @app.get("/limited")
    def limited() -> dict:
        raise too_many_requests(30)

    @app.get("/private")
    def private() -> dict:
        raise unauthorized()

    @app.get("/aborted")
    def aborted() -> dict:
        flask.abort(403)

    return app


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return app.test_client()


def assert_problem(response: TestResponse, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert "type" in body
    return body


def test_valid_body_passes_through(client: FlaskClient) -> None:
    response = client.post("/events", json={"title": "standup", "start": 10, "all_day": False, "duration": 1})
    assert response.status_code == 200
    assert response.get_json() == {"got": {"title": "standup", "start": 10, "all_day": False, "duration": 1}}


def test_problem_from_view_keeps_field_type_and_extras(client: FlaskClient) -> None:
    body = assert_problem(client.get("/items/1"), 409)
    assert body == {
        "type": "https://agenda.invalid/problems/event-overlap",
        "title": "Conflict",
        "status": 409,
        "detail": "slot taken",
        "field": "start",
        "other": 7,
    }


def test_not_found_problem(client: FlaskClient) -> None:
    body = assert_problem(client.get("/items/0"), 404)
    assert body["detail"] == "no item 0"
    assert body["type"] == "about:blank"


def test_unknown_route_is_problem(client: FlaskClient) -> None:
    body = assert_problem(client.get("/nowhere"), 404)
    assert body["title"] == "Not Found"


def test_wrong_method_keeps_allow_header(client: FlaskClient) -> None:
    response = client.delete("/events")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_too_large_body(client: FlaskClient) -> None:
    response = client.post("/events", data="x" * 2048, content_type="application/json")
    assert_problem(response, 413)


def test_werkzeug_bad_json_is_problem(client: FlaskClient) -> None:
    response = client.post("/werkzeug-json", data="{nope", content_type="application/json")
    assert_problem(response, 400)


def test_abort_is_problem(client: FlaskClient) -> None:
    assert assert_problem(client.get("/aborted"), 403)["title"] == "Forbidden"


def test_retry_after_and_www_authenticate_headers(client: FlaskClient) -> None:
    limited = client.get("/limited")
    assert_problem(limited, 429)
    assert limited.headers["Retry-After"] == "30"
    private = client.get("/private")
    assert_problem(private, 401)
    assert private.headers["WWW-Authenticate"] == 'Bearer realm="agenda"'


def test_crash_is_opaque_500_and_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="agenda.common.errors"), bind_request_id("req-7"):
        response = client.get("/crash")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert SECRET_MESSAGE not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
    assert body["request_id"] == "req-7"
    (record,) = [r for r in caplog.records if r.name == "agenda.common.errors"]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == SECRET_MESSAGE
    assert record.request_id == "req-7"


def test_non_json_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/events", data="title=x", content_type="application/x-www-form-urlencoded")
    body = assert_problem(response, 415)
    assert "application/json" in body["detail"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{nope", "Expecting property name"),
        ("", "Expecting value"),
        ("NaN", "NaN is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        (b"\xff\xfe{", ""),
        ("[" * 1020, "nested deeper than 64 levels"),  # RecursionError inside json: never a 500
        ('{"a": ' + "[" * 65 + "]" * 65 + "}", "nested deeper than 64 levels"),
    ],
)
def test_malformed_json_is_400_naming_the_reason(client: FlaskClient, data: str | bytes, reason: str) -> None:
    body = assert_problem(client.post("/events", data=data, content_type="application/json"), 400)
    assert body["detail"].startswith("body is not valid JSON: ")
    assert reason in body["detail"]


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_non_object_body_is_400(client: FlaskClient, payload: object) -> None:
    response = client.post("/events", data=flask.json.dumps(payload), content_type="application/json")
    assert assert_problem(response, 400)["detail"] == "body must be a JSON object"


def test_unknown_fields_are_named(client: FlaskClient) -> None:
    payload = {"title": "t", "start": 1, "all_day": True, "zeta": 1, "colour": "red"}
    body = assert_problem(client.post("/events", json=payload), 400)
    assert body["field"] == "colour"
    assert "'colour', 'zeta'" in body["detail"]


def test_unknown_fields_allowed_when_asked(client: FlaskClient) -> None:
    assert client.post("/loose", json={"a": 1, "b": 2}).get_json() == {"a": 1, "b": 2}


def test_missing_required_fields_are_named(client: FlaskClient) -> None:
    body = assert_problem(client.post("/events", json={"title": "t"}), 400)
    assert body["field"] == "start"
    assert body["detail"] == "missing required field(s): 'start', 'all_day'"


@pytest.mark.parametrize(
    ("field", "value", "expected", "got"),
    [
        ("start", True, "integer", "boolean"),  # bool must not pass as int
        ("start", 1.5, "integer", "number"),
        ("start", "10", "integer", "string"),
        ("title", None, "string", "null"),
        ("all_day", 1, "boolean", "integer"),
        ("duration", False, "number", "boolean"),
        ("notes", 5, "string or null", "integer"),
        ("tags", {}, "array", "object"),
    ],
)
def test_wrong_types_name_field_and_expected_type(
    client: FlaskClient, field: str, value: object, expected: str, got: str
) -> None:
    payload = {"title": "t", "start": 1, "all_day": True} | {field: value}
    body = assert_problem(client.post("/events", json=payload), 400)
    assert body["field"] == field
    assert body["detail"] == f"field {field!r} must be {expected}, got {got}"


def test_nullable_optional_accepts_null(client: FlaskClient) -> None:
    payload = {"title": "t", "start": 1, "all_day": True, "notes": None}
    assert client.post("/events", json=payload).status_code == 200


def test_helpers_build_the_right_problems() -> None:
    cases = [
        (bad_request("bad", field="x", hint="y"), 400),
        (unauthorized(), 401),
        (forbidden(), 403),
        (not_found(), 404),
        (conflict("c"), 409),
        (too_many_requests(5), 429),
        (unavailable(2), 503),
    ]
    for problem, status in cases:
        assert problem.status == status
    assert bad_request("bad", field="x", hint="y").to_dict() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "bad",
        "field": "x",
        "hint": "y",
    }


def test_problem_response_outside_request(app: flask.Flask) -> None:
    response = problem_response(unavailable(retry_after=3))
    assert response.status_code == 503
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    assert response.headers["Retry-After"] == "3"
    assert unavailable().to_dict()["title"] == "Service Unavailable"


def test_extras_may_not_override_standard_members() -> None:
    with pytest.raises(ValueError, match="status"):
        Problem(400, extras={"status": 200})
