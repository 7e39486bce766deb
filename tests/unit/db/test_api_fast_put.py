"""The fast ``PUT /v1/kv/<key>`` path answers exactly like the Flask view (differential test)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agenda.db.api import create_app
from agenda.db.errors import LeaderUnknown, OutcomeUnknown
from unit.db.test_api_errors import FakeNode

VOLATILE = {"Date", "X-Request-ID"}

CASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/kv/a", {"json": {"value": 1}}),
    ("/v1/kv//a/b", {"json": {"value": {"x": [1, 2, None, True]}}}),
    ("/v1/kv/a", {"json": {"value": "s", "prev_revision": None}}),
    ("/v1/kv/a", {"json": {"value": "s", "prev_revision": 1}}),  # revision mismatch -> 409
    ("/v1/kv/a", {"json": {"value": "s", "prev_revision": 0}}),
    ("/v1/kv/a", {"json": {"value": "s", "lease": 99}}),  # unknown lease -> 400
    ("/v1/kv/a", {"json": {"value": "s", "lease": True}}),  # bool is not an int -> 400
    ("/v1/kv/a", {"json": {"value": 1, "extra": 2}}),  # unknown field -> 400
    ("/v1/kv/a", {"json": {"lease": 0}}),  # missing value -> 400
    ("/v1/kv/a", {"json": [1]}),  # not an object -> 400
    ("/v1/kv/a", {"data": b"{nope", "content_type": "application/json"}),
    ("/v1/kv/a", {"data": b'{"value": NaN}', "content_type": "application/json"}),
    ("/v1/kv/a", {"data": b'{"value": 1}', "content_type": "text/plain"}),  # 415
    ("/v1/kv/a", {"data": b'{"value": 1}', "content_type": "application/json; charset=utf-8"}),
    ("/v1/kv/a?redirect=false", {"json": {"value": 1}}),
    ("/v1/kv/a?bogus=1", {"json": {"value": 1}}),
    ("/v1/kv/" + "k" * 5000, {"json": {"value": 1}}),  # key too long (if the state machine says so)
    ("/v1/kv/caf%C3%A9", {"json": {"value": 1}}),  # non-ASCII key: Flask path
]


def _run(fast: bool, role: str = "leader", fail_with: Exception | None = None) -> list[tuple[Any, ...]]:
    node = FakeNode()
    node.role = role
    client = create_app(node, fast_writes=fast).test_client()
    out = []
    for path, kwargs in CASES:
        node.fail_with = None
        if fail_with is not None and path == "/v1/kv/a" and kwargs.get("json") == {"value": 1}:
            node.fail_with = fail_with
        response = client.put(path, headers={"X-Request-ID": "req-1"}, **kwargs)
        headers = [(k, v) for k, v in response.headers.items() if k not in VOLATILE]
        out.append((path, response.status_code, headers, response.get_data()))
        assert response.headers.get("X-Request-ID") == "req-1"
    metrics = client.get("/metrics").get_data(as_text=True)
    out.append(("metrics", [line for line in metrics.splitlines() if "http_requests_total{" in line]))
    return out


@pytest.mark.parametrize("fail_with", [None, OutcomeUnknown("timed out"), LeaderUnknown("no leader")])
def test_fast_path_matches_flask(fail_with):
    assert _run(True, fail_with=fail_with) == _run(False, fail_with=fail_with)


def test_fast_path_matches_flask_on_a_follower_without_leader():
    assert _run(True, role="orphan") == _run(False, role="orphan")


def test_fast_path_mints_a_request_id_and_counts_the_request():
    node = FakeNode()
    client = create_app(node).test_client()
    response = client.put("/v1/kv/a", json={"value": 1})
    assert response.status_code == 200
    assert len(response.headers["X-Request-ID"]) == 32
    assert json.loads(response.get_data()) == {"revision": 1, "create_revision": 1, "version": 1}
    assert node.counters["proposals"] == 1


def test_unexpected_exception_is_an_opaque_500_like_flask():
    node = FakeNode()
    node.fail_with = RuntimeError("boom")
    fast = create_app(node).test_client().put("/v1/kv/a", json={"value": 1})
    slow = create_app(node, fast_writes=False).test_client().put("/v1/kv/a", json={"value": 1})
    assert fast.status_code == slow.status_code == 500
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"]
    assert sorted(fast.json) == sorted(slow.json)  # (the values name this request's id)
    assert fast.json["detail"] == slow.json["detail"]
