"""Property tests: determinism, snapshot/restore equivalence, and internal invariants under random logs."""

import json
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenda.db.errors import Compacted
from agenda.db.state import KVStateMachine

KEYS = ["/a", "/b", "/c/x", "/c/y", "/system/redis/primary"]
LEASES = [1, 2, 3]

keys = st.sampled_from(KEYS)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False).map(lambda f: round(f, 2)),
    st.sampled_from(["", "x", "y", "ü"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 2), max_size=2),
)
lease_refs = st.sampled_from([0, 0, *LEASES, 9])  # 9 is never granted: exercises lease_not_found
revisions = st.integers(0, 12)
times = st.integers(0, 40)


def put_cmds() -> st.SearchStrategy[dict]:
    return st.builds(
        lambda k, v, lease, prev: {"op": "put", "key": k, "value": v, "lease": lease, "prev_revision": prev},
        keys,
        values,
        lease_refs,
        st.one_of(st.none(), revisions),
    )


def delete_cmds() -> st.SearchStrategy[dict]:
    return st.builds(
        lambda k, prev: {"op": "delete", "key": k, "prev_revision": prev},
        keys,
        st.one_of(st.none(), revisions),
    )


def compares() -> st.SearchStrategy[dict]:
    int_compare = st.builds(
        lambda k, t, o, v: {"key": k, "target": t, "op": o, "value": v},
        keys,
        st.sampled_from(["mod_revision", "create_revision", "version", "lease"]),
        st.sampled_from(["eq", "ne", "lt", "gt"]),
        st.integers(0, 6),
    )
    value_compare = st.builds(
        lambda k, o, v: {"key": k, "target": "value", "op": o, "value": v},
        keys,
        st.sampled_from(["eq", "ne", "lt", "gt"]),
        values,
    )
    exists_compare = st.builds(
        lambda k, o, v: {"key": k, "target": "exists", "op": o, "value": v},
        keys,
        st.sampled_from(["eq", "ne"]),
        st.booleans(),
    )
    return st.one_of(int_compare, value_compare, exists_compare)


def txn_ops() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.builds(
            lambda k, v, lease: {"put": {"key": k, "value": v, "lease": lease}}, keys, values, lease_refs
        ),
        st.builds(lambda k: {"delete": {"key": k}}, keys),
        st.builds(lambda k: {"get": {"key": k}}, keys),
        st.builds(
            lambda p, lim: {"range": {"prefix": p, "limit": lim}},
            st.sampled_from(["", "/c/", "/z"]),
            st.integers(0, 3),
        ),
    )


def txn_cmds() -> st.SearchStrategy[dict]:
    # Branches may write a key twice: such txns must be rejected identically everywhere.
    return st.builds(
        lambda c, s, f: {"op": "txn", "compare": c, "success": s, "failure": f},
        st.lists(compares(), max_size=3),
        st.lists(txn_ops(), max_size=4),
        st.lists(txn_ops(), max_size=3),
    )


def lease_cmds() -> st.SearchStrategy[dict]:
    lease_ids = st.sampled_from([*LEASES, 9])
    return st.one_of(
        st.builds(
            lambda i, ttl, now: {"op": "lease_grant", "id": i, "ttl": ttl, "now": now},
            lease_ids,
            st.integers(1, 10),
            times,
        ),
        st.builds(lambda i, now: {"op": "lease_keepalive", "id": i, "now": now}, lease_ids, times),
        st.builds(lambda i: {"op": "lease_revoke", "id": i}, lease_ids),
        st.builds(lambda now: {"op": "lease_expire", "now": now}, times),
    )


invalid_cmds = st.sampled_from(
    [
        {"op": "put", "key": "", "value": 1},
        {"op": "put", "key": "/a", "value": float("nan")},
        {"op": "txn", "success": [{"put": {"key": "/a", "value": 1}}, {"put": {"key": "\x00", "value": 1}}]},
        {"op": "bogus"},
    ]
)

commands = st.lists(
    st.one_of(
        put_cmds(),
        put_cmds(),
        delete_cmds(),
        txn_cmds(),
        lease_cmds(),
        st.just({"op": "noop"}),
        invalid_cmds,
    ),
    max_size=40,
)


def check_invariants(sm: KVStateMachine) -> None:
    """Cross-check the public views against each other."""
    kvs, more = sm.range("")
    assert more is False
    assert [kv["key"] for kv in kvs] == sorted(kv["key"] for kv in kvs)
    assert len(kvs) == len(sm)
    attached: dict[int, list[str]] = {}
    for kv in kvs:
        assert 1 <= kv["create_revision"] <= kv["mod_revision"] <= sm.revision
        assert kv["version"] >= 1
        assert sm.get(kv["key"]) == kv
        if kv["lease"]:
            attached.setdefault(kv["lease"], []).append(kv["key"])
    for lease in sm.leases():
        assert sm.lease(lease["id"])["keys"] == attached.pop(lease["id"], [])
    assert attached == {}  # no key points at a lease that does not exist
    events = sm.events_since(sm.compact_revision)
    assert [e["revision"] for e in events] == sorted(e["revision"] for e in events)
    assert all(sm.compact_revision < e["revision"] <= sm.revision for e in events)


def observable(sm: KVStateMachine) -> tuple:
    """Everything a client can read, including what the watch history answers for every revision."""
    watch: list = []
    for since in range(sm.revision + 2):
        try:
            watch.append(sm.events_since(since))
        except Compacted as exc:
            watch.append(("compacted", exc.oldest_available))
    return (sm.revision, sm.compact_revision, sm.range(""), [sm.lease(x["id"]) for x in sm.leases()], watch)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=commands, cut=st.integers(0, 40), history_limit=st.integers(1, 6))
def test_same_log_same_state_and_snapshot_midway_equivalence(cmds, cut, history_limit):
    # JSON round trip: this is what the Raft log delivers to followers.
    cmds = [json.loads(json.dumps(c)) for c in cmds]
    cut = min(cut, len(cmds))
    first, second = KVStateMachine(history_limit), KVStateMachine(history_limit)
    resumed: KVStateMachine | None = None
    for index, command in enumerate(cmds):
        if index == cut:
            resumed = KVStateMachine.from_snapshot(first.snapshot(), history_limit)
            assert observable(resumed) == observable(first)
        before = first.snapshot()
        result_first = first.apply_or_error(command)
        assert second.apply_or_error(command) == result_first
        if resumed is not None:
            assert resumed.apply_or_error(command) == result_first
        json.dumps(result_first)  # results must be JSON-serialisable
        if result_first.get("error") in ("invalid_argument", "lease_not_found", "lease_exists", "conflict"):
            assert first.snapshot() == before  # refusals leave no trace
        assert first.revision - json.loads(before)["revision"] in (0, 1)  # at most one revision per command
    final = KVStateMachine.from_snapshot(first.snapshot(), history_limit)
    if resumed is None:
        resumed = final
    assert first.snapshot() == second.snapshot() == resumed.snapshot() == final.snapshot()
    assert observable(first) == observable(second) == observable(resumed) == observable(final)
    check_invariants(first)
    check_invariants(resumed)


@settings(max_examples=150, deadline=None)
@given(cmds=commands)
def test_replaying_the_watch_history_rebuilds_the_store(cmds):
    """With nothing compacted, folding all events over an empty dict yields exactly the live key set."""
    sm = KVStateMachine(history_limit=10_000)
    for command in cmds:
        sm.apply_or_error(command)
    rebuilt: dict[str, dict] = {}
    for event in sm.events_since(0):
        if event["type"] == "put":
            rebuilt[event["kv"]["key"]] = event["kv"]
        else:
            assert rebuilt.pop(event["kv"]["key"]) == event["kv"]  # delete events carry the prior kv
    assert [rebuilt[k] for k in sorted(rebuilt)] == sm.range("")[0]


_SCRIPT = """
import hashlib, json
from agenda.db.state import KVStateMachine
from agenda.db.txn import *
sm = KVStateMachine(history_limit=50)
out = []
for i in range(3):
    out.append(sm.apply(lease_grant_command(i + 1, 10 + i, 0.5)))
for i in range(60):
    out.append(sm.apply_or_error(put_command(f"/k/{(i * 7919) % 37}", {"i": i, "s": str(i)}, lease=i % 4)))
out.append(sm.apply(lease_revoke_command(2)))
out.append(sm.apply(lease_expire_command(11)))
guard = [txn_compare("/k/1", "exists", "eq", True)]
out.append(sm.apply(txn_command(guard, [txn_range("/k/"), txn_delete("/k/3")])))
print(hashlib.sha256(sm.snapshot() + json.dumps(out).encode()).hexdigest())
"""


def test_state_does_not_depend_on_the_hash_seed():
    """Nodes are separate processes with different str hash seeds: set/dict order must never leak out."""
    digests = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1
