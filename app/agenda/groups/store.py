"""The Group Service's data in the key-value store (events themselves use `agenda.users.store`).

KV layout, in addition to the User Service's (events, agenda index, notifications, booking guards):

``groups/<group_id>``
    The group (`agenda.domain.model.Group.to_dict()`), members and their levels and states included.
``memberships/<username>/<group_id>``
    ``{level, state}``: one index entry per member (invited or active) so "my groups" is one range
    read. Written in the same transaction as the group, only for members whose entry changed.

Every change of a group is one transaction compared on the group's ``mod_revision`` (0 to create):
two concurrent invitations or removals cannot overwrite each other; the loser recomputes from a fresh
read, so the hierarchy rules are always checked against the state actually changed.
Group events are ordinary events (kind ``group``, ``group_id`` set) written through `EventStore`, so
they appear in every participant's agenda, conflicts, notifications and calendar export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from agenda.db.client import DBClient, DBUnavailable
from agenda.db.state import txn_compare, txn_delete, txn_put
from agenda.domain.model import Group, Notification
from agenda.users.store import Contention, notification_cursor, notifications_prefix

__all__ = ["GroupNotFound", "GroupStore", "group_key", "membership_prefix"]

_ATTEMPTS: Final = 8

Mutation = Callable[[Group], tuple[Group | None, Sequence[Notification]] | None]


class GroupNotFound(Exception):  # noqa: N818
    pass


def group_key(group_id: str) -> str:
    return f"groups/{group_id}"


def membership_prefix(username: str) -> str:
    return f"memberships/{username}/"


class GroupStore:
    def __init__(self, db: DBClient) -> None:
        self.db = db

    def get(self, group_id: str) -> tuple[Group, int]:
        kv = self.db.get(group_key(group_id))
        if kv is None:
            raise GroupNotFound(group_id)
        return Group.from_dict(kv["value"]), int(kv["mod_revision"])

    def groups_of(self, username: str) -> list[dict[str, Any]]:
        """`[{group_id, level, state}]` for every group `username` belongs to or is invited to."""
        out = []
        for kv in self.db.iter_prefix(membership_prefix(username)):
            out.append({"group_id": kv["key"].rsplit("/", 1)[1], **kv["value"]})
        return out

    @staticmethod
    def _ops(old: Group | None, new: Group | None, notes: Sequence[Notification]) -> list[dict[str, Any]]:
        group_id = (new or old).id  # type: ignore[union-attr]
        ops = [
            txn_put(group_key(group_id), new.to_dict())
            if new is not None
            else txn_delete(group_key(group_id))
        ]
        before = {} if old is None else old.members
        after = {} if new is None else new.members
        for user in sorted(set(before) | set(after)):
            if user not in after:
                ops.append(txn_delete(membership_prefix(user) + group_id))
            elif before.get(user) != after[user]:
                membership = after[user]
                value = {"level": membership.level, "state": membership.state.value}
                ops.append(txn_put(membership_prefix(user) + group_id, value))
        for note in notes:
            cursor = notification_cursor(note)
            ops.append(
                txn_put(notifications_prefix(note.user) + cursor, {**note.to_dict(), "cursor": cursor})
            )
        return ops

    def create(self, group: Group, notes: Sequence[Notification] = ()) -> Group:
        result = self.db.txn(
            [txn_compare(group_key(group.id), "mod_revision", "eq", 0)], self._ops(None, group, notes)
        )
        if not result["succeeded"]:
            raise Contention("group id collision")
        return group

    def update(self, group_id: str, mutate: Mutation) -> Group | None:
        """Apply `mutate` (None: nothing to do; (None, notes): dissolve the group) with CAS retries."""
        for _attempt in range(_ATTEMPTS):
            old, revision = self.get(group_id)
            outcome = mutate(old)
            if outcome is None:
                return old
            new, notes = outcome
            compare = [txn_compare(group_key(group_id), "mod_revision", "eq", revision)]
            try:
                result = self.db.txn(compare, self._ops(old, new, notes))
            except DBUnavailable as exc:
                if not exc.outcome_unknown:
                    raise
                kv = self.db.get(group_key(group_id))
                stored = None if kv is None else kv["value"]
                if stored == (None if new is None else new.to_dict()):
                    return new
                continue
            if result["succeeded"]:
                return new
        raise Contention("too many concurrent changes to the group; try again")
