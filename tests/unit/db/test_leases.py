"""Leases: grant, keepalive, revoke, leader-driven expiry, and keys moving between leases."""

import pytest

from agenda.db.errors import InvalidArgument, LeaseExists, LeaseNotFound
from agenda.db.state import KVStateMachine
from agenda.db.txn import (
    delete_command,
    lease_expire_command,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    put_command,
)


@pytest.fixture
def sm() -> KVStateMachine:
    return KVStateMachine()


def test_grant_creates_lease_without_bumping_revision(sm):
    sm.apply(put_command("/x", 1))
    result = sm.apply(lease_grant_command(42, 10, 1000.25))
    assert result == {"ok": True, "id": 42, "ttl": 10, "deadline": 1010.25, "revision": 1}
    assert sm.lease(42) == {"id": 42, "ttl": 10, "deadline": 1010.25, "keys": []}
    assert sm.revision == 1
    assert sm.lease(43) is None


def test_grant_of_existing_id_is_refused_without_change(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    before = sm.snapshot()
    with pytest.raises(LeaseExists):
        sm.apply(lease_grant_command(1, 99, 5))
    assert sm.snapshot() == before
    assert sm.apply_or_error(lease_grant_command(1, 99, 5))["error"] == "lease_exists"


@pytest.mark.parametrize(
    "command",
    [
        {"op": "lease_grant", "id": 0, "ttl": 10, "now": 0},
        {"op": "lease_grant", "id": 2**63, "ttl": 10, "now": 0},
        {"op": "lease_grant", "id": 1, "ttl": 0, "now": 0},
        {"op": "lease_grant", "id": 1, "ttl": 1.5, "now": 0},
        {"op": "lease_grant", "id": 1, "ttl": 10, "now": float("nan")},
        {"op": "lease_grant", "id": 1, "ttl": 10, "now": -1},
        {"op": "lease_grant", "id": 1, "ttl": 10, "now": True},
        {"op": "lease_grant", "id": 1, "ttl": 10},
        {"op": "lease_keepalive", "id": "1", "now": 0},
        {"op": "lease_revoke", "id": -5},
        {"op": "lease_expire", "now": "soon"},
        {"op": "lease_expire", "now": float("inf")},
    ],
)
def test_malformed_lease_commands(sm, command):
    before = sm.snapshot()
    with pytest.raises(InvalidArgument):
        sm.apply(command)
    assert sm.snapshot() == before


def test_put_with_unknown_lease_is_refused_without_change(sm):
    sm.apply(put_command("/a", 1))
    before = sm.snapshot()
    with pytest.raises(LeaseNotFound) as err:
        sm.apply(put_command("/a", 2, lease=7))
    assert err.value.lease_id == 7
    assert sm.snapshot() == before
    assert sm.apply_or_error(put_command("/a", 2, lease=7)) == {
        "ok": False,
        "error": "lease_not_found",
        "message": "lease 7 not found",
        "lease": 7,
        "revision": 1,
    }


def test_put_attaches_key_to_lease(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    sm.apply(put_command("/b", 1, lease=1))
    sm.apply(put_command("/a", 1, lease=1))
    assert sm.get("/a")["lease"] == 1
    assert sm.lease(1)["keys"] == ["/a", "/b"]


def test_revoke_deletes_attached_keys_in_one_revision(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    sm.apply(lease_grant_command(2, 10, 0))
    for key in ("/s/c", "/s/a", "/s/b"):
        sm.apply(put_command(key, key, lease=1))
    sm.apply(put_command("/other", 0, lease=2))
    sm.apply(put_command("/free", 0))
    result = sm.apply(lease_revoke_command(1))
    assert result == {"ok": True, "id": 1, "deleted": 3, "revision": 6}
    assert sm.revision == 6
    assert sm.range("/s/") == ([], False)
    assert sm.get("/other") is not None
    assert sm.get("/free") is not None
    assert sm.lease(1) is None
    events = sm.events_since(5)
    assert [(e["type"], e["kv"]["key"], e["revision"]) for e in events] == [
        ("delete", "/s/a", 6),
        ("delete", "/s/b", 6),
        ("delete", "/s/c", 6),
    ]
    assert events[0]["kv"]["lease"] == 1


def test_revoke_of_lease_without_keys_does_not_bump_revision(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    assert sm.apply(lease_revoke_command(1)) == {"ok": True, "id": 1, "deleted": 0, "revision": 0}
    assert sm.leases() == []


def test_revoke_unknown_lease_is_refused(sm):
    with pytest.raises(LeaseNotFound):
        sm.apply(lease_revoke_command(5))


def test_keepalive_renews_deadline(sm):
    sm.apply(lease_grant_command(1, 10, 100))
    result = sm.apply(lease_keepalive_command(1, 105.5))
    assert result == {"ok": True, "id": 1, "ttl": 10, "deadline": 115.5, "revision": 0}
    assert sm.lease(1)["deadline"] == 115.5


def test_keepalive_never_shortens_a_lease(sm):
    sm.apply(lease_grant_command(1, 10, 100))
    sm.apply(lease_keepalive_command(1, 95))  # a new leader whose clock is behind
    assert sm.lease(1)["deadline"] == 110


def test_keepalive_unknown_lease_is_refused(sm):
    with pytest.raises(LeaseNotFound):
        sm.apply(lease_keepalive_command(1, 0))


def test_keepalive_past_deadline_is_refused_even_before_expiry_is_applied(sm):
    sm.apply(lease_grant_command(1, 10, 100))
    before = sm.snapshot()
    with pytest.raises(LeaseNotFound):
        sm.apply(lease_keepalive_command(1, 110))
    assert sm.snapshot() == before


def test_expire_revokes_exactly_the_leases_due(sm):
    sm.apply(lease_grant_command(3, 10, 100))  # deadline 110
    sm.apply(lease_grant_command(1, 5, 100))  # deadline 105
    sm.apply(lease_grant_command(2, 20, 100))  # deadline 120
    sm.apply(put_command("/one", 1, lease=1))
    sm.apply(put_command("/two", 2, lease=2))
    sm.apply(put_command("/three", 3, lease=3))
    assert sm.expired_leases(109.9) == [1]
    assert sm.next_deadline() == 105
    result = sm.apply(lease_expire_command(110))  # boundary: deadline == now expires
    assert result == {"ok": True, "expired": [1, 3], "deleted": 2, "revision": 4}
    assert [lease["id"] for lease in sm.leases()] == [2]
    assert sm.get("/one") is None
    assert sm.get("/three") is None
    assert sm.get("/two") is not None
    assert {e["revision"] for e in sm.events_since(3)} == {4}


def test_expire_with_nothing_due_changes_nothing(sm):
    sm.apply(lease_grant_command(1, 10, 100))
    sm.apply(put_command("/a", 1, lease=1))
    before = sm.snapshot()
    assert sm.apply(lease_expire_command(109)) == {"ok": True, "expired": [], "deleted": 0, "revision": 1}
    assert sm.snapshot() == before


def test_expire_of_keyless_leases_drops_them_without_revision(sm):
    sm.apply(lease_grant_command(1, 10, 100))
    result = sm.apply(lease_expire_command(200))
    assert result == {"ok": True, "expired": [1], "deleted": 0, "revision": 0}
    assert sm.leases() == []
    assert sm.next_deadline() is None


def test_put_under_another_lease_moves_the_key(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    sm.apply(lease_grant_command(2, 10, 0))
    sm.apply(put_command("/a", 1, lease=1))
    sm.apply(put_command("/a", 2, lease=2))
    assert sm.lease(1)["keys"] == []
    assert sm.lease(2)["keys"] == ["/a"]
    sm.apply(lease_revoke_command(1))
    assert sm.get("/a")["value"] == 2
    sm.apply(lease_revoke_command(2))
    assert sm.get("/a") is None


def test_put_without_lease_detaches_the_key(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    sm.apply(put_command("/a", 1, lease=1))
    sm.apply(put_command("/a", 2))
    assert sm.get("/a")["lease"] == 0
    assert sm.lease(1)["keys"] == []
    sm.apply(lease_revoke_command(1))
    assert sm.get("/a")["value"] == 2


def test_deleting_a_key_detaches_it(sm):
    sm.apply(lease_grant_command(1, 10, 0))
    sm.apply(put_command("/a", 1, lease=1))
    sm.apply(delete_command("/a"))
    assert sm.lease(1)["keys"] == []
    sm.apply(put_command("/a", 2))  # recreated without a lease: must survive the revoke
    assert sm.apply(lease_revoke_command(1))["deleted"] == 0
    assert sm.get("/a")["value"] == 2


def test_leases_listing_is_sorted(sm):
    for lease_id in (5, 1, 3):
        sm.apply(lease_grant_command(lease_id, lease_id, 0))
    assert sm.leases() == [
        {"id": 1, "ttl": 1, "deadline": 1},
        {"id": 3, "ttl": 3, "deadline": 3},
        {"id": 5, "ttl": 5, "deadline": 5},
    ]
