"""Key-value basics of the DB state machine: revisions, key lifecycle, CAS, validation, range reads."""

import json

import pytest

from agenda.db.commands import MAX_KEY_BYTES, MAX_VALUE_BYTES, validate_command
from agenda.db.errors import InvalidArgument
from agenda.db.state import KVStateMachine
from agenda.db.txn import delete_command, noop_command, put_command


@pytest.fixture
def sm() -> KVStateMachine:
    return KVStateMachine()


def put(sm: KVStateMachine, key: str, value: object = "v", **kw: object) -> dict:
    return sm.apply(put_command(key, value, **kw))


# --------------------------------------------------------------------------------------------- revisions


def test_empty_store_is_at_revision_zero(sm):
    assert sm.revision == 0
    assert len(sm) == 0
    assert sm.get("/a") is None
    assert sm.range("") == ([], False)
    assert sm.events_since(0) == []


def test_every_put_bumps_the_global_revision_by_one(sm):
    revisions = [put(sm, key)["revision"] for key in ("/a", "/b", "/a", "/c", "/a")]
    assert revisions == [1, 2, 3, 4, 5]
    assert sm.revision == 5


def test_create_sets_create_mod_revision_and_version_1(sm):
    put(sm, "/x")
    result = put(sm, "/a", {"title": "Lunch"})
    assert result == {"ok": True, "revision": 2, "create_revision": 2, "version": 1}
    assert sm.get("/a") == {
        "key": "/a",
        "value": {"title": "Lunch"},
        "create_revision": 2,
        "mod_revision": 2,
        "version": 1,
        "lease": 0,
    }


def test_update_bumps_version_and_mod_revision_keeps_create_revision(sm):
    put(sm, "/a", 1)
    put(sm, "/b", 1)
    result = put(sm, "/a", 2)
    assert result == {"ok": True, "revision": 3, "create_revision": 1, "version": 2}
    kv = sm.get("/a")
    assert (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"]) == (2, 1, 3, 2)
    # the other key is untouched
    assert sm.get("/b")["mod_revision"] == 2


def test_delete_existing_key_bumps_revision_and_removes_it(sm):
    put(sm, "/a")
    assert sm.apply(delete_command("/a")) == {"ok": True, "deleted": 1, "revision": 2}
    assert sm.get("/a") is None
    assert len(sm) == 0
    assert sm.revision == 2


def test_delete_missing_key_changes_nothing(sm):
    put(sm, "/a")
    before = sm.snapshot()
    assert sm.apply(delete_command("/nope")) == {"ok": True, "deleted": 0, "revision": 1}
    assert sm.snapshot() == before


def test_recreate_after_delete_starts_a_new_lifecycle(sm):
    put(sm, "/a", 1)
    put(sm, "/a", 2)
    sm.apply(delete_command("/a"))
    result = put(sm, "/a", 3)
    assert result == {"ok": True, "revision": 4, "create_revision": 4, "version": 1}
    assert sm.get("/a")["create_revision"] == 4


def test_noop_is_a_barrier_without_side_effects(sm):
    put(sm, "/a")
    before = sm.snapshot()
    assert sm.apply(noop_command()) == {"ok": True, "revision": 1}
    assert sm.snapshot() == before


# --------------------------------------------------------------------------------------------------- CAS


def test_put_cas_succeeds_on_matching_mod_revision(sm):
    put(sm, "/a", 1)
    put(sm, "/b", 1)
    result = put(sm, "/a", 2, prev_revision=1)
    assert result["ok"] is True
    assert sm.get("/a")["value"] == 2


def test_put_cas_conflict_reports_current_and_changes_nothing(sm):
    put(sm, "/a", 1)
    put(sm, "/a", 2)
    before = sm.snapshot()
    result = put(sm, "/a", 3, prev_revision=1)
    assert result == {"ok": False, "error": "conflict", "key": "/a", "mod_revision": 2, "revision": 2}
    assert sm.snapshot() == before
    assert sm.revision == 2


def test_put_cas_zero_means_must_not_exist(sm):
    assert put(sm, "/a", 1, prev_revision=0)["ok"] is True
    before = sm.snapshot()
    result = put(sm, "/a", 2, prev_revision=0)
    assert result["ok"] is False
    assert result["error"] == "conflict"
    assert result["mod_revision"] == 1
    assert sm.snapshot() == before


def test_put_cas_on_missing_key_with_nonzero_revision_conflicts(sm):
    result = put(sm, "/a", 1, prev_revision=5)
    assert result == {"ok": False, "error": "conflict", "key": "/a", "mod_revision": 0, "revision": 0}
    assert sm.get("/a") is None


def test_delete_cas(sm):
    put(sm, "/a")
    before = sm.snapshot()
    assert sm.apply(delete_command("/a", prev_revision=7))["error"] == "conflict"
    assert sm.apply(delete_command("/a", prev_revision=0))["error"] == "conflict"
    assert sm.snapshot() == before
    assert sm.apply(delete_command("/a", prev_revision=1)) == {"ok": True, "deleted": 1, "revision": 2}


def test_delete_cas_zero_on_missing_key_is_a_successful_noop(sm):
    assert sm.apply(delete_command("/a", prev_revision=0)) == {"ok": True, "deleted": 0, "revision": 0}


# ---------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**62,
        1.5,
        "",
        "héllo ✓ 日本",
        [],
        [1, [2, {"a": None}]],
        {},
        {"b": 1, "a": [True]},
    ],
)
def test_json_values_round_trip(sm, value):
    put(sm, "/a", value)
    stored = sm.get("/a")["value"]
    assert stored == value
    assert type(stored) is type(value)


def test_tuples_are_stored_as_lists(sm):
    put(sm, "/a", (1, 2))
    assert sm.get("/a")["value"] == [1, 2]


def test_store_is_isolated_from_caller_mutation(sm):
    value = {"attendees": ["ana"]}
    put(sm, "/a", value)
    value["attendees"].append("bob")
    read = sm.get("/a")["value"]
    read["attendees"].append("eve")
    assert sm.get("/a")["value"] == {"attendees": ["ana"]}


def test_value_at_size_limit_is_accepted_and_one_byte_more_is_not(sm):
    at_limit = "x" * (MAX_VALUE_BYTES - 2)  # plus two quote characters
    assert len(json.dumps(at_limit)) == MAX_VALUE_BYTES
    put(sm, "/a", at_limit)
    with pytest.raises(InvalidArgument) as err:
        put(sm, "/b", at_limit + "x")
    assert err.value.field == "value"


def test_key_at_byte_limit_counts_utf8_bytes(sm):
    key = "é" * (MAX_KEY_BYTES // 2)  # 2 bytes each
    put(sm, key)
    with pytest.raises(InvalidArgument):
        put(sm, key + "a")


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def _cyclic() -> list:
    loop: list = []
    loop.append(loop)
    return loop


BAD_COMMANDS = [
    pytest.param({"op": "put", "key": "", "value": 1}, "key", id="empty-key"),
    pytest.param({"op": "put", "key": 5, "value": 1}, "key", id="non-string-key"),
    pytest.param({"op": "put", "key": "a\x00b", "value": 1}, "key", id="nul-in-key"),
    pytest.param({"op": "put", "key": "k" * (MAX_KEY_BYTES + 1), "value": 1}, "key", id="long-key"),
    pytest.param({"op": "put", "key": "\ud800", "value": 1}, "key", id="surrogate-key"),
    pytest.param({"op": "put", "key": "/a", "value": float("nan")}, "value", id="nan"),
    pytest.param({"op": "put", "key": "/a", "value": float("inf")}, "value", id="inf"),
    pytest.param({"op": "put", "key": "/a", "value": {1, 2}}, "value", id="set"),
    pytest.param({"op": "put", "key": "/a", "value": {1: "x"}}, "value", id="int-object-key"),
    pytest.param({"op": "put", "key": "/a", "value": b"raw"}, "value", id="bytes"),
    pytest.param({"op": "put", "key": "/a", "value": "\udfff"}, "value", id="surrogate-value"),
    pytest.param({"op": "put", "key": "/a", "value": _deep(150)}, "value", id="too-deep"),
    pytest.param({"op": "put", "key": "/a", "value": _cyclic()}, "value", id="cycle"),
    pytest.param({"op": "put", "key": "/a", "value": 10**5000}, "value", id="huge-int"),
    pytest.param({"op": "put", "key": "/a"}, "put", id="missing-value"),
    pytest.param({"op": "put", "key": "/a", "value": 1, "vlaue": 2}, "put", id="unknown-field"),
    pytest.param({"op": "put", "key": "/a", "value": 1, "lease": -1}, "lease", id="negative-lease"),
    pytest.param({"op": "put", "key": "/a", "value": 1, "lease": True}, "lease", id="bool-lease"),
    pytest.param({"op": "put", "key": "/a", "value": 1, "prev_revision": -1}, "prev_revision", id="neg-prev"),
    pytest.param(
        {"op": "put", "key": "/a", "value": 1, "prev_revision": "1"}, "prev_revision", id="str-prev"
    ),
    pytest.param({"op": "delete"}, "delete", id="delete-no-key"),
    pytest.param({"op": "frobnicate"}, "op", id="unknown-op"),
    pytest.param({"key": "/a"}, "op", id="no-op"),
    pytest.param({"op": "noop", "extra": 1}, "noop", id="noop-extra"),
    pytest.param(["op", "put"], "command", id="not-a-dict"),
]


@pytest.mark.parametrize(("command", "field"), BAD_COMMANDS)
def test_invalid_commands_raise_before_any_change(sm, command, field):
    put(sm, "/a", "original")
    before = sm.snapshot()
    with pytest.raises(InvalidArgument) as err:
        sm.apply(command)
    assert err.value.field == field
    assert sm.snapshot() == before
    with pytest.raises(InvalidArgument):
        validate_command(command)


def test_apply_or_error_turns_refusals_into_results(sm):
    put(sm, "/a")
    result = sm.apply_or_error({"op": "put", "key": "", "value": 1})
    assert result == {
        "ok": False,
        "error": "invalid_argument",
        "message": "key: must not be empty",
        "field": "key",
        "reason": "must not be empty",
        "revision": 1,
    }
    assert sm.apply_or_error(put_command("/b", 1))["ok"] is True


def test_builders_validate_eagerly_and_produce_plain_dicts():
    assert put_command("/a", [1], lease=3, prev_revision=0) == {
        "op": "put",
        "key": "/a",
        "value": [1],
        "lease": 3,
        "prev_revision": 0,
    }
    assert delete_command("/a") == {"op": "delete", "key": "/a", "prev_revision": None}
    assert noop_command() == {"op": "noop"}
    with pytest.raises(InvalidArgument):
        put_command("", 1)
    with pytest.raises(InvalidArgument):
        delete_command("/a", prev_revision=-2)


def test_results_are_json_serialisable(sm):
    result = put(sm, "/a", {"ü": [1.5, None]})
    assert json.loads(json.dumps(result)) == result
    assert json.loads(json.dumps(sm.get("/a"))) == sm.get("/a")


# ----------------------------------------------------------------------------------------------- range


def fill(sm: KVStateMachine, keys: list[str]) -> None:
    for key in keys:
        put(sm, key, key)


def keys_of(items: list[dict]) -> list[str]:
    return [item["key"] for item in items]


def test_range_returns_prefix_matches_in_key_order(sm):
    fill(sm, ["/u/3", "/g/1", "/u/1", "/u/10", "/u/2", "/ua", "/v"])
    items, more = sm.range("/u/")
    assert keys_of(items) == ["/u/1", "/u/10", "/u/2", "/u/3"]
    assert more is False
    assert items[0]["value"] == "/u/1"


def test_range_empty_prefix_lists_everything(sm):
    fill(sm, ["b", "a", "c"])
    assert keys_of(sm.range("")[0]) == ["a", "b", "c"]


def test_range_order_is_utf8_byte_order(sm):
    keys = ["/z", "/é", "/a", "/日", "/\U0001f600", "/Z", "/\uffff"]
    fill(sm, keys)
    expected = sorted(keys, key=lambda k: k.encode("utf-8"))
    assert keys_of(sm.range("/")[0]) == expected


def test_range_limit_and_more(sm):
    fill(sm, ["/p/a", "/p/b", "/p/c", "/q"])
    assert (keys_of(sm.range("/p/", limit=2)[0]), sm.range("/p/", limit=2)[1]) == (["/p/a", "/p/b"], True)
    items, more = sm.range("/p/", limit=3)
    assert (keys_of(items), more) == (["/p/a", "/p/b", "/p/c"], False)
    items, more = sm.range("/p/", limit=0)
    assert (len(items), more) == (3, False)


def test_range_start_is_inclusive_and_clamped_to_prefix(sm):
    fill(sm, ["/p/a", "/p/b", "/p/c", "/a"])
    assert keys_of(sm.range("/p/", start="/p/b")[0]) == ["/p/b", "/p/c"]
    assert keys_of(sm.range("/p/", start="/")[0]) == ["/p/a", "/p/b", "/p/c"]
    assert sm.range("/p/", start="/q") == ([], False)


def test_range_pagination_with_nul_successor_visits_every_key_once(sm):
    keys = [f"/k/{i:03d}" for i in range(25)]
    fill(sm, reversed(keys))
    seen: list[str] = []
    start = None
    while True:
        items, more = sm.range("/k/", start=start, limit=7)
        seen.extend(keys_of(items))
        if not more:
            break
        start = items[-1]["key"] + "\x00"
    assert seen == keys


def test_range_reflects_deletes(sm):
    fill(sm, ["/a", "/b", "/c"])
    sm.apply(delete_command("/b"))
    assert keys_of(sm.range("/")[0]) == ["/a", "/c"]


@pytest.mark.parametrize(
    "kwargs",
    [{"prefix": 3}, {"prefix": "/a\x00"}, {"prefix": "/", "limit": -1}, {"prefix": "/", "start": 5}],
)
def test_range_rejects_bad_arguments(sm, kwargs):
    with pytest.raises(InvalidArgument):
        sm.range(**kwargs)


def test_get_rejects_invalid_key(sm):
    with pytest.raises(InvalidArgument):
        sm.get("")
