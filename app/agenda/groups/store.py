"""The Group Service's groups in the DB cluster (keys: `agenda.calendar.layout`; events: `EventStore`).

Every change of a group is one transaction compared on the group's ``mod_revision`` (0 to create),
committed through `agenda.calendar.cas.commit`: two concurrent invitations or removals cannot overwrite
each other; the loser recomputes from a fresh read, so the hierarchy rules are always checked against
the state actually changed. A membership index entry is written in the same transaction as the group,
only for members whose entry changed, with the change's notifications (announced once committed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agenda.calendar.cas import Announce, Write, commit
from agenda.calendar.layout import group_key, membership_prefix
from agenda.db.client import DBClient
from agenda.db.txn import txn_compare, txn_delete, txn_put
from agenda.domain.model import Group, Notification

__all__ = ["GroupNotFound", "GroupStore"]

Mutation = Callable[[Group], tuple[Group | None, Sequence[Notification]] | None]


class GroupNotFound(Exception):  # noqa: N818
    pass


class GroupStore:
    """Groups over a `DBClient`; `announce` as `EventStore`'s: told each committed change's notifications."""

    def __init__(self, db: DBClient, *, announce: Announce | None = None) -> None:
        self.db = db
        self.announce = announce

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
    def _ops(old: Group | None, new: Group | None) -> list[dict[str, Any]]:
        """The group's and its changed index entries' operations (notifications are the `Write`'s notes)."""
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
        return ops

    @classmethod
    def _write(
        cls, revision: int, old: Group | None, new: Group | None, notes: Sequence[Notification]
    ) -> Write:
        """The transaction from `old` (read at `revision`, 0: none) to `new` (None: dissolved)."""
        key = group_key((new or old).id)  # type: ignore[union-attr]
        compare = [txn_compare(key, "mod_revision", "eq", revision)]
        return Write(compare, cls._ops(old, new), key, None if new is None else new.to_dict(), notes)

    def create(self, group: Group, notes: Sequence[Notification] = ()) -> Group:
        """Store a new group; an unknown outcome is settled like any other write's (by reading it back).

        A group with this id already there is returned instead: the id is random, or derived from an
        Idempotency-Key, in which case it exists only when a repeat of the same request created it.
        """
        write = self._write(0, None, group, notes)

        def attempt() -> tuple[Group, Write | None]:
            kv = self.db.get(group_key(group.id))
            if kv is not None:
                return Group.from_dict(kv["value"]), None
            return group, write

        return commit(self.db, attempt, what="group", announce=self.announce)

    def update(self, group_id: str, mutate: Mutation) -> Group | None:
        """Apply `mutate` (None: nothing to do; (None, notes): dissolve the group) with CAS retries."""

        def attempt() -> tuple[Group | None, Write | None]:
            old, revision = self.get(group_id)
            outcome = mutate(old)
            if outcome is None:
                return old, None
            new, notes = outcome
            return new, self._write(revision, old, new, notes)

        return commit(self.db, attempt, what="group", announce=self.announce)
