"""Watch history (events_since, the Compacted boundary) and snapshot/restore."""

import json

import pytest

from agenda.db.errors import Compacted, InvalidArgument
from agenda.db.snapshot import SNAPSHOT_FORMAT
from agenda.db.state import KVStateMachine
from agenda.db.txn import (
    delete_command,
    lease_expire_command,
    lease_grant_command,
    lease_keepalive_command,
    put_command,
    txn_command,
    txn_delete,
    txn_put,
)


def puts(sm: KVStateMachine, count: int, prefix: str = "/k") -> None:
    for i in range(count):
        sm.apply(put_command(f"{prefix}{i}", i))


# ----------------------------------------------------------------------------------------------- watch


def test_events_carry_kv_after_put_and_before_delete():
    sm = KVStateMachine()
    sm.apply(put_command("/a", 1))
    sm.apply(put_command("/a", 2))
    sm.apply(delete_command("/a"))
    assert sm.events_since(0) == [
        {
            "type": "put",
            "revision": 1,
            "kv": {
                "key": "/a",
                "value": 1,
                "create_revision": 1,
                "mod_revision": 1,
                "version": 1,
                "lease": 0,
            },
        },
        {
            "type": "put",
            "revision": 2,
            "kv": {
                "key": "/a",
                "value": 2,
                "create_revision": 1,
                "mod_revision": 2,
                "version": 2,
                "lease": 0,
            },
        },
        {
            "type": "delete",
            "revision": 3,
            "kv": {
                "key": "/a",
                "value": 2,
                "create_revision": 1,
                "mod_revision": 2,
                "version": 2,
                "lease": 0,
            },
        },
    ]


def test_events_since_is_exclusive_and_future_is_empty():
    sm = KVStateMachine()
    puts(sm, 4)
    assert [e["revision"] for e in sm.events_since(2)] == [3, 4]
    assert sm.events_since(4) == []
    assert sm.events_since(100) == []


def test_non_mutating_commands_add_no_events():
    sm = KVStateMachine()
    sm.apply(put_command("/a", 1))
    sm.apply(delete_command("/missing"))
    sm.apply(put_command("/a", 9, prev_revision=7))  # failed CAS
    sm.apply(lease_grant_command(1, 5, 0))
    sm.apply(lease_keepalive_command(1, 1))
    sm.apply(lease_expire_command(2))
    sm.apply(txn_command([], [txn_delete("/missing")]))
    assert len(sm.events_since(0)) == 1


def test_events_since_rejects_bad_revision():
    sm = KVStateMachine()
    with pytest.raises(InvalidArgument):
        sm.events_since(-1)
    with pytest.raises(InvalidArgument):
        sm.events_since("3")


def test_nothing_dropped_means_any_revision_is_fine():
    sm = KVStateMachine(history_limit=10)
    puts(sm, 10)
    assert sm.compact_revision == 0
    assert len(sm.events_since(0)) == 10


def test_compacted_boundary_is_exact():
    sm = KVStateMachine(history_limit=3)
    puts(sm, 5)  # revisions 1..5; history keeps 3, 4, 5
    assert sm.compact_revision == 2
    assert [e["revision"] for e in sm.events_since(2)] == [3, 4, 5]  # R_min - 1: fine
    with pytest.raises(Compacted) as err:
        sm.events_since(1)  # R_min - 2: compacted
    assert err.value.oldest_available == 3
    assert err.value.compact_revision == 2
    assert err.value.to_result()["error"] == "compacted"
    with pytest.raises(Compacted):
        sm.events_since(0)


def test_history_drops_whole_revisions_only():
    sm = KVStateMachine(history_limit=4)
    sm.apply(put_command("/a", 0))  # rev 1: 1 event
    sm.apply(txn_command([], [txn_put("/x", 1), txn_put("/y", 1), txn_put("/z", 1)]))  # rev 2: 3 events
    sm.apply(put_command("/b", 0))  # rev 3: 5 events total -> drop rev 1
    assert sm.compact_revision == 1
    assert [e["revision"] for e in sm.events_since(1)] == [2, 2, 2, 3]
    sm.apply(put_command("/c", 0))  # 5 events -> drop all of rev 2, never a part of it
    assert sm.compact_revision == 2
    assert [e["revision"] for e in sm.events_since(2)] == [3, 4]


def test_newest_revision_is_kept_even_if_larger_than_limit():
    sm = KVStateMachine(history_limit=2)
    sm.apply(put_command("/a", 0))
    sm.apply(txn_command([], [txn_put(f"/t{i}", i) for i in range(5)]))
    assert sm.compact_revision == 1
    assert len(sm.events_since(1)) == 5


def test_history_limit_must_be_positive():
    with pytest.raises(InvalidArgument):
        KVStateMachine(history_limit=0)


# -------------------------------------------------------------------------------------------- snapshot


def busy_machine(history_limit: int = 6) -> KVStateMachine:
    sm = KVStateMachine(history_limit=history_limit)
    sm.apply(lease_grant_command(1, 30, 1000.125))
    sm.apply(lease_grant_command(2, 5, 1000))
    puts(sm, 4)
    sm.apply(put_command("/leased/a", {"nested": [1, 2.5, None]}, lease=1))
    sm.apply(put_command("/leased/b", "ü", lease=2))
    sm.apply(put_command("/k1", "again"))
    sm.apply(delete_command("/k2"))
    sm.apply(txn_command([], [txn_put("/t", True), txn_delete("/k3")]))
    sm.apply(lease_keepalive_command(1, 1010.5))
    return sm


def state_view(sm: KVStateMachine) -> tuple:
    return (
        sm.revision,
        sm.compact_revision,
        sm.range(""),
        sm.leases(),
        [sm.lease(lease["id"]) for lease in sm.leases()],
        sm.events_since(sm.compact_revision),
    )


def test_snapshot_round_trip_preserves_everything():
    sm = busy_machine()
    assert sm.compact_revision > 0  # the scenario exercises trimming too
    data = sm.snapshot()
    restored = KVStateMachine.from_snapshot(data, history_limit=6)
    assert restored.snapshot() == data
    assert state_view(restored) == state_view(sm)
    assert restored.lease(1)["deadline"] == 1040.5
    with pytest.raises(Compacted):
        restored.events_since(sm.compact_revision - 1)


def test_restored_machine_evolves_identically():
    sm = busy_machine()
    restored = KVStateMachine.from_snapshot(sm.snapshot(), history_limit=6)
    follow_up = [
        put_command("/leased/c", 1, lease=2),
        put_command("/k1", "x", prev_revision=sm.get("/k1")["mod_revision"]),
        lease_expire_command(1006),
        txn_command([], [txn_put("/t", False)]),
    ]
    for command in follow_up:
        assert sm.apply(command) == restored.apply(command)
    assert sm.snapshot() == restored.snapshot()
    assert sm.get("/leased/b") is None


def test_snapshot_is_canonical_json():
    sm = busy_machine()
    data = sm.snapshot()
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert [row[0] for row in doc["kvs"]] == sorted(row[0] for row in doc["kvs"])


def test_same_commands_give_identical_snapshots():
    assert busy_machine().snapshot() == busy_machine().snapshot()


def test_empty_snapshot_round_trip():
    sm = KVStateMachine()
    restored = KVStateMachine.from_snapshot(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert restored.revision == 0


def test_restore_replaces_existing_state():
    source = busy_machine()
    target = KVStateMachine(history_limit=6)
    target.apply(put_command("/stale", 1))
    target.apply(lease_grant_command(99, 1, 0))
    target.restore(source.snapshot())
    assert target.get("/stale") is None
    assert target.lease(99) is None
    assert target.snapshot() == source.snapshot()


def test_restore_with_smaller_history_limit_compacts_further():
    sm = busy_machine(history_limit=100)
    assert sm.compact_revision == 0
    small = KVStateMachine.from_snapshot(sm.snapshot(), history_limit=2)
    assert small.compact_revision > 0
    assert small.events_since(small.compact_revision) == sm.events_since(small.compact_revision)
    with pytest.raises(Compacted):
        small.events_since(0)


def _corrupt(data: bytes, mutate) -> bytes:
    doc = json.loads(data)
    mutate(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        _corrupt(busy_machine().snapshot(), lambda d: d.update(format=SNAPSHOT_FORMAT + 1)),
        _corrupt(busy_machine().snapshot(), lambda d: d.update(extra=1)),
        _corrupt(busy_machine().snapshot(), lambda d: d["leases"].clear()),  # keys refer to unknown leases
        _corrupt(busy_machine().snapshot(), lambda d: d["kvs"].reverse()),
        _corrupt(busy_machine().snapshot(), lambda d: d["kvs"][0].__setitem__(1, "{broken")),
        _corrupt(busy_machine().snapshot(), lambda d: d["kvs"][0].__setitem__(3, 10**6)),  # mod > revision
        _corrupt(busy_machine().snapshot(), lambda d: d["kvs"][0].pop()),
        _corrupt(busy_machine().snapshot(), lambda d: d["history"].reverse()),
        _corrupt(busy_machine().snapshot(), lambda d: d["history"][0].__setitem__(0, "touch")),
        _corrupt(busy_machine().snapshot(), lambda d: d.update(compact_revision=10**6)),
    ],
)
def test_bad_snapshot_is_rejected_and_state_kept(data):
    sm = busy_machine()
    before = sm.snapshot()
    with pytest.raises(InvalidArgument) as err:
        sm.restore(data)
    assert err.value.field.startswith("snapshot")
    assert sm.snapshot() == before
