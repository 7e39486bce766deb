"""The fast ``GET /v1/kv`` (range read) path answers exactly like the Flask view (differential test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenda.db.api import create_app
from agenda.db.api.fastput import ascii_json, page_text
from agenda.db.commands import canonical_json
from agenda.db.errors import LeaderUnknown, OutcomeUnknown
from agenda.db.state import KVStateMachine
from unit.db.test_api_errors import FakeNode

VOLATILE = {"Date", "X-Request-ID"}

QUERIES = [
    "",
    "prefix=agenda/alice/",
    "prefix=agenda/alice/&start=agenda/alice/2030-01-07&limit=2",
    "prefix=agenda%2Falice%2F&limit=0",
    "prefix=agenda/&consistency=stale",
    "prefix=agenda/&consistency=linearizable&limit=200",
    "prefix=caf%C3%A9",  # a non-ASCII prefix, percent-encoded
    "prefix=%FF",  # not UTF-8: kept percent-encoded, as Flask keeps it
    "prefix=a+b",
    "prefix=agenda/&limit=-1",  # 400
    "prefix=agenda/&limit=x",  # 400
    "prefix=agenda/&limit=%205",  # the view strips it
    "prefix=agenda/&limit=99999999999999999999",  # 400
    "prefix=agenda/&consistency=eventual",  # 400
    "prefix=agenda/&bogus=1",  # 400
    "prefix=a&prefix=b",  # a repeated argument: Flask's
    "prefix=agenda/&redirect=false",
    "prefix=agenda/&redirect=maybe",  # 400
    "prefix=" + "k" * 2000,  # prefix too long -> 400
    "prefix=a%00b",  # NUL -> 400
    "prefix=agenda/&start=agenda/alice/%00",
]


def _node() -> FakeNode:
    node = FakeNode()
    for key in ("agenda/alice/2030-01-07/e1", "agenda/alice/2030-01-08/e2", "agenda/bob/x", "café", "a b"):
        node.kv.apply(
            {"op": "put", "key": key, "value": {"k": key, "ü": [1, None]}, "lease": 0, "prev_revision": None}
        )
    return node


def _run(fast: bool, role: str = "leader", fail_with: Exception | None = None) -> list[tuple[Any, ...]]:
    node = _node()
    node.role = role
    client = create_app(node, fast_writes=fast).test_client()
    out = []
    for index, query in enumerate(QUERIES):
        node.fail_with = fail_with if index in (1, 4) else None
        response = client.get("/v1/kv?" + query if query else "/v1/kv", headers={"X-Request-ID": "req-1"})
        headers = [(k, v) for k, v in response.headers.items() if k not in VOLATILE]
        out.append((query, response.status_code, headers, response.get_data()))
        assert response.headers.get("X-Request-ID") == "req-1"
    metrics = client.get("/metrics").get_data(as_text=True)
    out.append(("metrics", [line for line in metrics.splitlines() if "http_requests_total{" in line]))
    return out


@pytest.mark.parametrize("fail_with", [None, OutcomeUnknown("timed out"), LeaderUnknown("no leader")])
def test_fast_range_matches_flask(fail_with: Exception | None) -> None:
    assert _run(True, fail_with=fail_with) == _run(False, fail_with=fail_with)


def test_fast_range_matches_flask_on_a_follower_without_leader() -> None:
    assert _run(True, role="orphan") == _run(False, role="orphan")


def test_a_plain_range_read_on_the_leader_never_reaches_the_flask_view() -> None:
    app = create_app(_node())

    def view_not_expected() -> Any:
        raise AssertionError("the Flask view served a plain range read")

    app.view_functions["kv.range_keys"] = view_not_expected
    response = app.test_client().get("/v1/kv?prefix=agenda/alice/&limit=1")
    assert response.status_code == 200
    body = response.get_json()
    assert [item["key"] for item in body["items"]] == ["agenda/alice/2030-01-07/e1"]
    assert body["more"] is True
    assert app.test_client().get("/v1/kv?prefix=a&prefix=b").status_code == 500  # the view's


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=12,
    )
)
def test_ascii_json_is_what_decoding_and_encoding_again_writes(value: Any) -> None:
    stored = canonical_json(value)
    assert ascii_json(stored) == json.dumps(json.loads(stored), separators=(",", ":"))


def test_a_page_is_written_as_jsonify_writes_it() -> None:
    machine = KVStateMachine()
    for key, value in [("p/a", {"ü": '\x7f😀\n"\\'}), ("p/b", [1.5, -0.0, 10**30]), ("p/ä", None)]:
        machine.apply({"op": "put", "key": key, "value": value, "lease": 0, "prev_revision": None})
    records, more = machine.range_records("p/", None, 2)
    items, _ = machine.range("p/", None, 2)
    expected = json.dumps({"items": items, "revision": 3, "more": more}, separators=(",", ":"))
    assert page_text(records, 3, more) == expected
