"""The fast ``POST /v1/txn`` path answers exactly like the Flask view (differential test), and a
command a builder made is parsed once before it is proposed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agenda.db import commands
from agenda.db.api import create_app
from agenda.db.commands import CheckedCommand, validate_command
from agenda.db.errors import LeaderUnknown, OutcomeUnknown
from agenda.db.txn import put_command, txn_command, txn_compare, txn_get, txn_put
from unit.db.test_api_errors import FakeNode

VOLATILE = {"Date", "X-Request-ID"}

PUT_A = {"put": {"key": "a", "value": {"x": [1, 2.5, None, True], "é": "ü"}, "lease": 0}}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/txn", {"json": {"compare": [], "success": [PUT_A], "failure": []}}),
    ("/v1/txn", {"json": {"success": [PUT_A]}}),  # branches may be left out
    ("/v1/txn", {"json": {"compare": [{"key": "a", "target": "mod_revision", "op": "eq", "value": 0}]}}),
    (
        "/v1/txn",
        {
            "json": {
                "compare": [{"key": "a", "target": "mod_revision", "op": "lt", "value": 1}],
                "success": [PUT_A],
                "failure": [{"get": {"key": "a"}}, {"range": {"prefix": "", "start": None, "limit": 5}}],
            }
        },
    ),  # fails after the first case wrote "a": the failure branch's reads answer
    ("/v1/txn", {"json": {}}),
    ("/v1/txn", {"json": {"success": [PUT_A, PUT_A]}}),  # a key written twice -> 400
    ("/v1/txn", {"json": {"success": [{"put": {"key": "a", "value": 1, "lease": 99}}]}}),  # unknown lease
    ("/v1/txn", {"json": {"success": [{"put": {"key": "", "value": 1}}]}}),  # empty key -> 400
    ("/v1/txn", {"json": {"compare": {"not": "a list"}}}),  # -> 400
    ("/v1/txn", {"json": {"compare": [], "extra": []}}),  # unknown field -> 400
    ("/v1/txn", {"json": [1]}),  # not an object -> 400
    ("/v1/txn", {"data": b"{nope", "content_type": "application/json"}),
    (
        "/v1/txn",
        {"data": b'{"success": [{"put": {"key": "a", "value": NaN}}]}', "content_type": "application/json"},
    ),
    ("/v1/txn", {"data": b'{"success": []}', "content_type": "text/plain"}),  # 415
    ("/v1/txn", {"data": b'{"success": []}', "content_type": "application/json; charset=utf-8"}),
    ("/v1/txn?redirect=false", {"json": {"success": []}}),
    ("/v1/txn?bogus=1", {"json": {"success": []}}),
    ("/v1/txn", {"json": {"compare": [5]}}),  # not an object -> 400 naming compare[0]
    ("/v1/txn", {"json": {"success": ["ab"]}}),
    ("/v1/txn", {"json": {"failure": [None]}}),
    ("/v1/txn", {"json": {"success": [[["put", {"key": "b", "value": 1}]]]}}),  # pairs are not an object
]


def _run(fast: bool, role: str = "leader", fail_with: Exception | None = None) -> list[tuple[Any, ...]]:
    node = FakeNode()
    node.role = role
    client = create_app(node, fast_writes=fast).test_client()
    out = []
    for index, (path, kwargs) in enumerate(CASES):
        node.fail_with = fail_with if index == 0 else None
        response = client.post(path, headers={"X-Request-ID": "req-1"}, **kwargs)
        headers = [(k, v) for k, v in response.headers.items() if k not in VOLATILE]
        out.append((path, response.status_code, headers, response.get_data()))
        assert response.headers.get("X-Request-ID") == "req-1"
    metrics = client.get("/metrics").get_data(as_text=True)
    out.append(("metrics", [line for line in metrics.splitlines() if "http_requests_total{" in line]))
    return out


@pytest.mark.parametrize("fail_with", [None, OutcomeUnknown("timed out"), LeaderUnknown("no leader")])
def test_fast_txn_matches_flask(fail_with: Exception | None) -> None:
    assert _run(True, fail_with=fail_with) == _run(False, fail_with=fail_with)


def test_fast_txn_matches_flask_on_a_follower_without_leader() -> None:
    assert _run(True, role="orphan") == _run(False, role="orphan")


def test_fast_txn_answers_and_counts_the_request() -> None:
    node = FakeNode()
    client = create_app(node).test_client()
    response = client.post("/v1/txn", json={"success": [PUT_A]})
    assert response.status_code == 200
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Agenda-Revision"] == "1"
    body = json.loads(response.get_data())
    assert body["succeeded"] is True
    assert body["revision"] == 1
    assert node.counters["proposals"] == 1


def test_unexpected_exception_is_an_opaque_500_like_flask() -> None:
    node = FakeNode()
    node.fail_with = RuntimeError("boom")
    fast = create_app(node).test_client().post("/v1/txn", json={"success": []})
    slow = create_app(node, fast_writes=False).test_client().post("/v1/txn", json={"success": []})
    assert fast.status_code == slow.status_code == 500
    assert fast.get_json()["detail"] == slow.get_json()["detail"]


# --- commands made by the builders are parsed once ---------------------------------------------------


def test_builders_hand_out_checked_commands_equal_to_plain_ones() -> None:
    command = txn_command([txn_compare("a", "version", "eq", 0)], [txn_put("a", 1)], [txn_get("a")])
    assert type(command) is CheckedCommand
    assert command == {
        "op": "txn",
        "compare": [{"key": "a", "target": "version", "op": "eq", "value": 0}],
        "success": [{"put": {"key": "a", "value": 1, "lease": 0}}],
        "failure": [{"get": {"key": "a"}}],
    }
    assert type(put_command("a", 1)) is CheckedCommand


def test_validate_command_parses_only_what_no_builder_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[Any] = []
    real = commands.parse_command
    monkeypatch.setattr(commands, "parse_command", lambda command: parsed.append(command) or real(command))
    checked = put_command("a", 1)
    validate_command(checked)
    assert parsed == []
    validate_command(dict(checked))  # a plain dict, whoever made it, is parsed
    assert parsed == [checked]
    with pytest.raises(commands.InvalidArgument):
        validate_command({"op": "put", "key": "", "value": 1})


def test_a_well_formed_txn_on_the_leader_never_reaches_the_flask_view() -> None:
    app = create_app(FakeNode())

    def view_not_expected() -> Any:
        raise AssertionError("the Flask view served a well-formed txn")

    app.view_functions["txn.run_txn"] = view_not_expected
    assert app.test_client().post("/v1/txn", json={"success": [PUT_A]}).status_code == 200
    assert app.test_client().post("/v1/txn", json={"extra": []}).status_code == 500  # Flask's, as it must


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"compare": [5]}, "compare[0]"),
        ({"success": ["ab"]}, "success[0]"),
        ({"failure": [None]}, "failure[0]"),
        ({"success": [[["put", {"key": "b", "value": 1}]]]}, "success[0]"),
    ],
)
def test_a_txn_item_that_is_not_an_object_is_a_400_naming_it(fast: bool, body: Any, field: str) -> None:
    node = FakeNode()
    response = create_app(node, fast_writes=fast).test_client().post("/v1/txn", json=body)
    assert response.status_code == 400
    assert response.content_type.startswith("application/problem+json")
    assert response.get_json()["field"] == field
    assert node.kv.get("b") is None  # nothing was written


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("path", ["/v1/txn", "/v1/kv/b"])
def test_a_chunked_body_is_read_to_its_end_whatever_content_length_says(fast: bool, path: str) -> None:
    import io

    from werkzeug.test import EnvironBuilder

    body = b'{"success":[{"put":{"key":"b","value":1}}]}' if path == "/v1/txn" else b'{"value":1}'
    sent = body + b" and more"
    node = FakeNode()
    app = create_app(node, fast_writes=fast)
    method = "POST" if path == "/v1/txn" else "PUT"
    environ = EnvironBuilder(path=path, method=method, content_type="application/json").get_environ()
    # What the server makes of "Transfer-Encoding: chunked" with a (conflicting) Content-Length.
    environ.update(
        CONTENT_LENGTH=str(len(body)),
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(sent), "wsgi.input_terminated": True},
    )
    status: list[str] = []
    b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("400")
    assert node.kv.get("b") is None
