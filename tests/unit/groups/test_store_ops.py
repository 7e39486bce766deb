"""The Group Service's transaction builder: one group write plus only the changed index entries."""

from datetime import UTC, datetime

from agenda.calendar.cas import Write
from agenda.calendar.layout import group_key, membership_prefix
from agenda.domain.model import Group, Membership, MemberState, Notification, NotificationKind
from agenda.groups.store import GroupStore

NOW = datetime(2031, 1, 1, tzinfo=UTC)


def group(members: dict[str, Membership]) -> Group:
    return Group(id="g" * 32, name="G", owner="alice", created=NOW, hierarchical=True, members=members)


def keys(ops: list[dict]) -> list[tuple[str, str]]:
    return [(kind, op[kind]["key"]) for op in ops for kind in op]


def test_create_writes_group_and_owner_index() -> None:
    new = group({"alice": Membership(0)})
    assert keys(GroupStore._ops(None, new)) == [
        ("put", group_key(new.id)),
        ("put", membership_prefix("alice") + new.id),
    ]


def test_only_changed_members_are_reindexed_and_notifications_written() -> None:
    old = group({"alice": Membership(0), "bob": Membership(1), "carol": Membership(2, MemberState.INVITED)})
    new = group({"alice": Membership(0), "bob": Membership(1), "carol": Membership(2), "dan": Membership(3)})
    note = Notification(id="n1", user="dan", kind=NotificationKind.MEMBERSHIP, created=NOW, group_id=old.id)
    ops = Write([], GroupStore._ops(old, new), "", None, [note]).txn_ops()
    assert keys(ops)[:3] == [
        ("put", group_key(old.id)),
        ("put", membership_prefix("carol") + old.id),
        ("put", membership_prefix("dan") + old.id),
    ]
    assert keys(ops)[3][1].startswith("notifications/dan/")
    assert ops[1]["put"]["value"] == {"level": 2, "state": "active"}


def test_removal_and_dissolution_delete_index_entries() -> None:
    old = group({"alice": Membership(0), "bob": Membership(1)})
    assert keys(GroupStore._ops(old, group({"alice": Membership(0)}))) == [
        ("put", group_key(old.id)),
        ("delete", membership_prefix("bob") + old.id),
    ]
    alone = group({"alice": Membership(0)})
    assert keys(GroupStore._ops(alone, None)) == [
        ("delete", group_key(old.id)),
        ("delete", membership_prefix("alice") + old.id),
    ]
