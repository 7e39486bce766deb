"""Transactions: every compare target and op, branch choice, single revision, atomicity."""

import pytest

from agenda.db.commands import MAX_TXN_OPS
from agenda.db.errors import InvalidArgument, LeaseNotFound
from agenda.db.state import KVStateMachine
from agenda.db.txn import (
    lease_grant_command,
    put_command,
    txn_command,
    txn_compare,
    txn_delete,
    txn_get,
    txn_put,
    txn_range,
)


@pytest.fixture
def sm() -> KVStateMachine:
    """/k: value "v2", create_revision 1, mod_revision 3, version 2, lease 9; /other at revision 2."""
    machine = KVStateMachine()
    machine.apply(lease_grant_command(9, 60, 0))
    machine.apply(put_command("/k", "v1"))
    machine.apply(put_command("/other", 10))
    machine.apply(put_command("/k", "v2", lease=9))
    return machine


def run(sm: KVStateMachine, compare: list, success: list | None = None, failure: list | None = None) -> dict:
    return sm.apply(txn_command(compare, success or [], failure or []))


def holds(sm: KVStateMachine, key: str, target: str, op: str, value: object) -> bool:
    before = sm.snapshot()
    result = run(sm, [txn_compare(key, target, op, value)])
    assert sm.snapshot() == before  # compares alone never change anything
    return result["succeeded"]


EXISTING_KEY_CASES = [
    ("mod_revision", "eq", 3, True),
    ("mod_revision", "eq", 1, False),
    ("mod_revision", "ne", 1, True),
    ("mod_revision", "lt", 4, True),
    ("mod_revision", "lt", 3, False),
    ("mod_revision", "gt", 2, True),
    ("mod_revision", "gt", 3, False),
    ("create_revision", "eq", 1, True),
    ("create_revision", "gt", 0, True),
    ("create_revision", "lt", 1, False),
    ("version", "eq", 2, True),
    ("version", "ne", 2, False),
    ("version", "lt", 3, True),
    ("version", "gt", 2, False),
    ("lease", "eq", 9, True),
    ("lease", "eq", 0, False),
    ("lease", "gt", 8, True),
    ("lease", "lt", 9, False),
    ("exists", "eq", True, True),
    ("exists", "eq", False, False),
    ("exists", "ne", False, True),
    ("exists", "ne", True, False),
    ("value", "eq", "v2", True),
    ("value", "eq", "v1", False),
    ("value", "ne", "v1", True),
    ("value", "ne", "v2", False),
    ("value", "lt", "v3", True),
    ("value", "lt", "v2", False),
    ("value", "gt", "v1", True),
    ("value", "gt", "w", False),
    ("value", "lt", 5, False),  # string vs number: unordered
    ("value", "gt", 5, False),
]


@pytest.mark.parametrize(("target", "op", "value", "expected"), EXISTING_KEY_CASES)
def test_compare_on_existing_key(sm, target, op, value, expected):
    assert holds(sm, "/k", target, op, value) is expected


MISSING_KEY_CASES = [
    # etcd: a missing key's revisions, version and lease read as 0
    ("mod_revision", "eq", 0, True),
    ("mod_revision", "gt", 0, False),
    ("mod_revision", "lt", 1, True),
    ("create_revision", "eq", 0, True),
    ("create_revision", "ne", 0, False),
    ("version", "eq", 0, True),
    ("version", "gt", 0, False),
    ("lease", "eq", 0, True),
    ("exists", "eq", False, True),
    ("exists", "eq", True, False),
    ("exists", "ne", True, True),
    # a missing key has no value: it equals nothing and is ordered against nothing
    ("value", "eq", None, False),
    ("value", "eq", "", False),
    ("value", "ne", "anything", True),
    ("value", "ne", None, True),
    ("value", "lt", "zzz", False),
    ("value", "gt", "", False),
]


@pytest.mark.parametrize(("target", "op", "value", "expected"), MISSING_KEY_CASES)
def test_compare_on_missing_key(sm, target, op, value, expected):
    assert holds(sm, "/missing", target, op, value) is expected


@pytest.mark.parametrize(
    ("stored", "op", "given", "expected"),
    [
        (1, "eq", 1.0, True),  # JSON numbers compare numerically
        (1, "eq", True, False),  # but booleans are not numbers
        (0, "eq", False, False),
        (None, "eq", None, True),
        ({"a": 1, "b": [1, 2]}, "eq", {"b": [1, 2], "a": 1}, True),
        ({"a": 1}, "eq", {"a": 1, "b": 2}, False),
        ([1, 2], "eq", [1, 2], True),
        ([1, 2], "eq", [2, 1], False),
        ([1, 2], "ne", [1], True),
        (5, "lt", 7.5, True),
        (5, "gt", 7.5, False),
        (-1, "lt", 0, True),
        ("b", "gt", "a", True),
        ("é", "gt", "z", True),  # code point / UTF-8 byte order
        (True, "gt", False, False),  # booleans are unordered
        ([1], "lt", [2], False),  # arrays are unordered
        ({"a": 1}, "gt", {"a": 0}, False),
        (None, "lt", 1, False),
    ],
)
def test_value_compare_semantics(stored, op, given, expected):
    sm = KVStateMachine()
    sm.apply(put_command("/v", stored))
    assert holds(sm, "/v", "value", op, given) is expected


def test_all_compares_must_hold(sm):
    ok = txn_compare("/k", "version", "eq", 2)
    bad = txn_compare("/other", "value", "eq", 11)
    assert run(sm, [ok, ok])["succeeded"] is True
    assert run(sm, [ok, bad])["succeeded"] is False
    assert run(sm, [bad, ok])["succeeded"] is False


def test_empty_compare_takes_success_branch(sm):
    result = run(sm, [], [txn_get("/other")], [txn_get("/k")])
    assert result["succeeded"] is True
    assert result["results"][0]["get"]["kv"]["key"] == "/other"


def test_success_branch_runs_when_compares_hold(sm):
    result = run(
        sm,
        [txn_compare("/k", "mod_revision", "eq", 3)],
        [txn_put("/a", 1), txn_delete("/other")],
        [txn_put("/b", 1)],
    )
    assert result["succeeded"] is True
    assert sm.get("/a")["value"] == 1
    assert sm.get("/other") is None
    assert sm.get("/b") is None


def test_failure_branch_runs_otherwise(sm):
    result = run(
        sm,
        [txn_compare("/k", "mod_revision", "eq", 1)],
        [txn_put("/a", 1)],
        [txn_put("/b", 2), txn_get("/k")],
    )
    assert result["succeeded"] is False
    assert sm.get("/a") is None
    assert sm.get("/b")["value"] == 2
    assert result["results"][1]["get"]["kv"]["value"] == "v2"


def test_txn_with_many_writes_is_one_revision(sm):
    result = run(sm, [], [txn_put("/a", 1), txn_put("/k", "v3"), txn_delete("/other"), txn_put("/b", 2)])
    assert result["revision"] == 4
    assert sm.revision == 4
    assert sm.get("/a")["mod_revision"] == sm.get("/b")["mod_revision"] == sm.get("/k")["mod_revision"] == 4
    assert sm.get("/k")["version"] == 3
    assert sm.get("/a")["create_revision"] == 4
    assert [e["revision"] for e in sm.events_since(3)] == [4, 4, 4, 4]
    assert [(e["type"], e["kv"]["key"]) for e in sm.events_since(3)] == [
        ("put", "/a"),
        ("put", "/k"),
        ("delete", "/other"),
        ("put", "/b"),
    ]


def test_op_results_shapes(sm):
    result = run(
        sm,
        [],
        [txn_put("/a", 1), txn_delete("/other"), txn_delete("/nope"), txn_get("/a"), txn_range("/", limit=2)],
    )
    assert result["ok"] is True
    put_r, del_r, del_missing, get_r, range_r = result["results"]
    assert put_r == {"put": {"key": "/a", "revision": 4, "create_revision": 4, "version": 1}}
    assert del_r == {"delete": {"key": "/other", "deleted": 1}}
    assert del_missing == {"delete": {"key": "/nope", "deleted": 0}}
    assert get_r["get"]["kv"] == {
        "key": "/a",
        "value": 1,
        "create_revision": 4,
        "mod_revision": 4,
        "version": 1,
        "lease": 0,
    }
    assert [kv["key"] for kv in range_r["range"]["kvs"]] == ["/a", "/k"]
    assert range_r["range"]["more"] is False  # /other was deleted earlier in this txn


def test_reads_see_earlier_writes_of_the_same_txn(sm):
    result = run(
        sm,
        [],
        [
            txn_get("/k"),
            txn_put("/k", "v3"),
            txn_get("/k"),
            txn_delete("/other"),
            txn_get("/other"),
            txn_put("/k2", 0),
            txn_range("/k"),
        ],
    )
    r = result["results"]
    assert r[0]["get"]["kv"]["value"] == "v2"
    assert (r[2]["get"]["kv"]["value"], r[2]["get"]["kv"]["version"], r[2]["get"]["kv"]["lease"]) == (
        "v3",
        3,
        0,
    )
    assert r[4]["get"]["kv"] is None
    assert [kv["key"] for kv in r[6]["range"]["kvs"]] == ["/k", "/k2"]


def test_read_only_txn_does_not_bump_revision(sm):
    before = sm.snapshot()
    result = run(sm, [txn_compare("/k", "exists", "eq", True)], [txn_get("/k"), txn_range("/")])
    assert result["revision"] == 3
    assert sm.snapshot() == before


def test_txn_deleting_only_missing_keys_does_not_bump_revision(sm):
    before = sm.snapshot()
    assert run(sm, [], [txn_delete("/nope")])["revision"] == 3
    assert sm.snapshot() == before


def test_txn_put_attaches_lease(sm):
    run(sm, [], [txn_put("/leased", 1, lease=9)])
    assert sm.get("/leased")["lease"] == 9
    assert sm.lease(9)["keys"] == ["/k", "/leased"]


def test_invalid_op_in_middle_leaves_state_untouched(sm):
    before = sm.snapshot()
    command = {
        "op": "txn",
        "compare": [],
        "success": [{"put": {"key": "/a", "value": 1}}, {"put": {"key": "", "value": 2}}],
        "failure": [],
    }
    with pytest.raises(InvalidArgument) as err:
        sm.apply(command)
    assert err.value.field == "success[1].put.key"
    assert sm.snapshot() == before
    assert sm.revision == 3


def test_invalid_op_in_untaken_branch_still_rejects_whole_txn(sm):
    before = sm.snapshot()
    command = {
        "op": "txn",
        "compare": [],
        "success": [{"put": {"key": "/a", "value": 1}}],
        "failure": [{"put": {"key": "/b", "value": float("nan")}}],
    }
    with pytest.raises(InvalidArgument):
        sm.apply(command)
    assert sm.snapshot() == before


def test_unknown_lease_in_taken_branch_aborts_everything(sm):
    before = sm.snapshot()
    with pytest.raises(LeaseNotFound) as err:
        run(sm, [], [txn_put("/a", 1), txn_delete("/other"), txn_put("/b", 2, lease=404)])
    assert err.value.lease_id == 404
    assert sm.snapshot() == before


def test_unknown_lease_in_untaken_branch_is_ignored(sm):
    # etcd checks leases only for the branch that runs; the other branch never touches the lease.
    result = run(sm, [], [txn_put("/a", 1)], [txn_put("/b", 2, lease=404)])
    assert result["ok"] is True
    assert sm.get("/a")["value"] == 1


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "size", "op": "eq", "value": 1}]},
            "compare[0].target",
        ),
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "version", "op": "ge", "value": 1}]},
            "compare[0].op",
        ),
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "version", "op": "eq", "value": "1"}]},
            "compare[0].value",
        ),
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "version", "op": "eq", "value": True}]},
            "compare[0].value",
        ),
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "exists", "op": "eq", "value": 1}]},
            "compare[0].value",
        ),
        (
            {"op": "txn", "compare": [{"key": "/k", "target": "exists", "op": "lt", "value": True}]},
            "compare[0].op",
        ),
        ({"op": "txn", "compare": [{"key": "/k", "target": "value", "op": "eq"}]}, "compare[0]"),
        (
            {"op": "txn", "compare": [{"key": "", "target": "value", "op": "eq", "value": 1}]},
            "compare[0].key",
        ),
        ({"op": "txn", "compare": {"key": "/k"}}, "compare"),
        ({"op": "txn", "success": [{"put": {"key": "/a", "value": 1}, "get": {"key": "/a"}}]}, "success[0]"),
        ({"op": "txn", "success": [{"watch": {"key": "/a"}}]}, "success[0]"),
        ({"op": "txn", "success": [{"get": {"key": "/a", "rev": 1}}]}, "success[0].get"),
        ({"op": "txn", "success": [{"range": {"prefix": "/", "limit": -1}}]}, "success[0].range.limit"),
        ({"op": "txn", "success": [{"delete": "/a"}]}, "success[0].delete"),
        ({"op": "txn", "success": "put"}, "success"),
        ({"op": "txn", "success": [{"get": {"key": "/a"}}] * (MAX_TXN_OPS + 1)}, "success"),
        ({"op": "txn", "else": []}, "txn"),
    ],
)
def test_malformed_txn_raises_without_change(sm, command, field):
    before = sm.snapshot()
    with pytest.raises(InvalidArgument) as err:
        sm.apply(command)
    assert err.value.field == field
    assert sm.snapshot() == before


@pytest.mark.parametrize(
    "ops",
    [
        [txn_put("/a", 1), txn_put("/a", 2)],
        [txn_put("/a", 1), txn_delete("/a")],
        [txn_delete("/k"), txn_delete("/k")],
    ],
)
def test_writing_a_key_twice_in_one_branch_is_rejected(sm, ops):
    before = sm.snapshot()
    with pytest.raises(InvalidArgument, match="more than once"):
        run(sm, [], ops)
    assert sm.snapshot() == before


def test_same_key_may_be_written_in_both_branches(sm):
    result = run(sm, [txn_compare("/k", "exists", "eq", False)], [txn_put("/k", 1)], [txn_put("/k", 2)])
    assert result["succeeded"] is False
    assert sm.get("/k")["value"] == 2


def test_txn_builders_validate_eagerly():
    with pytest.raises(InvalidArgument):
        txn_compare("/a", "bogus", "eq", 1)
    with pytest.raises(InvalidArgument):
        txn_put("/a", float("nan"))
    with pytest.raises(InvalidArgument):
        txn_range("/a", limit=-3)
    with pytest.raises(InvalidArgument):
        txn_command([], [txn_put("/a", 1), txn_put("/a", 2)])
    assert txn_command([], [txn_get("/a")]) == {
        "op": "txn",
        "compare": [],
        "success": [{"get": {"key": "/a"}}],
        "failure": [],
    }
