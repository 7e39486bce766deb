"""The User Service's data in the DB cluster's key-value store, and the transactions that change it.

KV layout (every value is JSON):

``users/<username>``
    The account: ``{username, display_name, timezone, password: {alg, n, r, p, salt, hash}, created}``.
    Created with ``prev_revision=0`` (create-only), so two concurrent registrations of one name
    cannot both succeed: the DB decides, atomically.
``events/<event_id>``
    The event record (`agenda.domain.model.Event.to_dict()`); the source of truth.
``agenda/<username>/<start>/<event_id>``
    One index entry per user involved in the event (organizer and every participant), holding a full
    copy of the event. ``<start>`` is RFC 3339 UTC (``2026-11-26T10:00:00Z``), which sorts as text, so
    a user's agenda between two instants is a single ordered range read starting at ``from - 31 days``
    (the longest possible event) and stopping at the first key starting at or after ``to``.
``notifications/<username>/<cursor>``
    One per notification (`Notification.to_dict()` plus ``cursor``). The cursor is
    ``<20-digit microseconds since the epoch>.<notification id>``: sortable by time, unique, and the
    client's ``since`` bookmark.
``booking/<username>``
    The user's booking guard. Every transaction that can change what blocks a user's time puts this
    key, and every transaction that checked a user's conflicts compares its ``mod_revision`` with the
    one read *before* the agenda was read. So between "no conflict found" and "event written", no
    other commitment of that user can have been written: double-booking is impossible under
    concurrency, across any number of User Service instances.

Each change of an event (create, edit, cancel, answer) writes the event, every affected index entry,
the notifications and the booking guards in ONE transaction, compared on the event's own
``mod_revision`` (0 to create) and on the guards of the users whose conflicts were checked. A failed
compare means someone else changed something first: the change is recomputed from fresh reads.

A transaction holds at most 128 operations, so an appointment has at most `MAX_INVITEES` participants
(four operations per involved user in the worst case: two index ops, a notification and a guard).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from agenda.db.client import DBClient, DBUnavailable, RevisionMismatch
from agenda.db.state import txn_compare, txn_delete, txn_put
from agenda.domain.model import Event, Notification, format_time
from agenda.domain.rules import blocks, conflicts_for
from agenda.domain.validation import MAX_EVENT_DURATION

__all__ = [
    "MAX_INVITEES",
    "Contention",
    "EventConflict",
    "EventNotFound",
    "EventStore",
    "UsernameTaken",
    "agenda_key",
    "notification_cursor",
]

log = logging.getLogger(__name__)

MAX_INVITEES: Final = 25
_ATTEMPTS: Final = 8
_PAGE: Final = 200


class UsernameTaken(Exception):  # noqa: N818
    pass


class EventNotFound(Exception):  # noqa: N818
    pass


class Contention(Exception):  # noqa: N818
    """The change lost its compare too many times in a row; the client may retry later."""


class EventConflict(Exception):  # noqa: N818
    """`user` has commitments (`conflicts`, event ids) overlapping the event."""

    def __init__(self, user: str, conflicts: list[str]) -> None:
        self.user = user
        self.conflicts = conflicts
        super().__init__(f"{user} is busy: {conflicts}")


def user_key(username: str) -> str:
    return f"users/{username}"


def event_key(event_id: str) -> str:
    return f"events/{event_id}"


def agenda_prefix(username: str) -> str:
    return f"agenda/{username}/"


def agenda_key(username: str, event: Event) -> str:
    return f"{agenda_prefix(username)}{format_time(event.start)}/{event.id}"


def booking_key(username: str) -> str:
    return f"booking/{username}"


def notifications_prefix(username: str) -> str:
    return f"notifications/{username}/"


def notification_cursor(note: Notification) -> str:
    micros = int(note.created.timestamp() * 1_000_000)
    return f"{micros:020d}.{note.id}"


def _involved(event: Event | None) -> set[str]:
    return set() if event is None else {event.organizer, *event.participants}


@dataclass(frozen=True)
class Change:
    """What a mutation of one event decided: the new record, notifications, and whose conflicts to check."""

    event: Event
    notifications: Sequence[Notification] = ()
    check_conflicts: Sequence[str] = ()


class EventStore:
    """Users and events over a `DBClient`; thread-safe (the client is)."""

    def __init__(self, db: DBClient) -> None:
        self.db = db

    # ---------------------------------------------------------------------------------- accounts

    def create_user(self, record: dict[str, Any]) -> None:
        key = user_key(record["username"])
        try:
            self.db.put(key, record, prev_revision=0)
        except RevisionMismatch:
            raise UsernameTaken(record["username"]) from None
        except DBUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            # The write may have been applied: it was ours exactly when the stored salt is ours.
            stored = self.db.get(key)
            if stored is None:
                raise
            if stored["value"].get("password", {}).get("salt") != record["password"]["salt"]:
                raise UsernameTaken(record["username"]) from None

    def get_user(self, username: str) -> dict[str, Any] | None:
        kv = self.db.get(user_key(username))
        return None if kv is None else kv["value"]

    def missing_users(self, usernames: Iterable[str]) -> list[str]:
        """The usernames among `usernames` that have no account."""
        return [name for name in usernames if self.db.get(user_key(name)) is None]

    # ------------------------------------------------------------------------------------ reads

    def get_event(self, event_id: str) -> tuple[Event, int]:
        kv = self.db.get(event_key(event_id))
        if kv is None:
            raise EventNotFound(event_id)
        return Event.from_dict(kv["value"]), int(kv["mod_revision"])

    def _iter_agenda(self, username: str, start_key: str | None) -> Iterator[dict[str, Any]]:
        prefix = agenda_prefix(username)
        start = start_key
        while True:
            page = self.db.range(prefix, start=start, limit=_PAGE)
            yield from page["items"]
            if not page["more"] or not page["items"]:
                return
            start = page["items"][-1]["key"] + "\0"

    def agenda(
        self, username: str, range_start: datetime | None = None, range_end: datetime | None = None
    ) -> list[Event]:
        """`username`'s indexed events overlapping [range_start, range_end) (everything when unbounded)."""
        prefix = agenda_prefix(username)
        start_key = None
        if range_start is not None:
            start_key = prefix + format_time(range_start - MAX_EVENT_DURATION)
        stop = None if range_end is None else prefix + format_time(range_end)
        events = []
        for kv in self._iter_agenda(username, start_key):
            if stop is not None and kv["key"] >= stop:
                break
            event = Event.from_dict(kv["value"])
            if range_start is not None and event.end <= range_start:
                continue
            events.append(event)
        return events

    def notifications(self, username: str, since: str | None, limit: int) -> list[dict[str, Any]]:
        prefix = notifications_prefix(username)
        start = None if since is None else prefix + since + "\0"
        page = self.db.range(prefix, start=start, limit=limit)
        return [kv["value"] for kv in page["items"]]

    # ----------------------------------------------------------------------------------- writes

    def _booking_revision(self, username: str) -> int:
        kv = self.db.get(booking_key(username))
        return 0 if kv is None else int(kv["mod_revision"])

    def _check(self, change: Change) -> dict[str, int]:
        """Read each checked user's guard, THEN their agenda; raise EventConflict; return the guards."""
        guards: dict[str, int] = {}
        new = change.event
        for user in change.check_conflicts:
            guards[user] = self._booking_revision(user)
            existing = self.agenda(user, new.start, new.end)
            hits = conflicts_for(user, new, existing)
            if hits:
                raise EventConflict(user, hits)
        return guards

    @staticmethod
    def _ops(old: Event | None, change: Change) -> list[dict[str, Any]]:
        new = change.event
        value = new.to_dict()
        ops = [txn_put(event_key(new.id), value)]
        for user in sorted(_involved(old) | _involved(new)):
            old_key = agenda_key(user, old) if old is not None and user in _involved(old) else None
            new_key = agenda_key(user, new) if user in _involved(new) else None
            if old_key is not None and old_key != new_key:
                ops.append(txn_delete(old_key))
            if new_key is not None:
                ops.append(txn_put(new_key, value))
            was = old is not None and blocks(user, old)
            moved = old is not None and (old.start, old.end) != (new.start, new.end)
            if blocks(user, new) != was or (was and moved) or user in change.check_conflicts:
                ops.append(txn_put(booking_key(user), {"event": new.id, "sequence": new.sequence}))
        for note in change.notifications:
            cursor = notification_cursor(note)
            ops.append(
                txn_put(notifications_prefix(note.user) + cursor, {**note.to_dict(), "cursor": cursor})
            )
        return ops

    def create(self, build: Callable[[], Change]) -> Event:
        """Store the event `build()` returns (called again after a lost race)."""
        return self._commit(None, lambda _old: build())

    def update(self, event_id: str, mutate: Callable[[Event], Change | None]) -> Event:
        """Apply `mutate` to the current event; None from it means "nothing to change"."""
        return self._commit(event_id, mutate)

    def _commit(self, event_id: str | None, mutate: Callable[[Any], Change | None]) -> Event:
        for _attempt in range(_ATTEMPTS):
            old: Event | None = None
            revision = 0
            if event_id is not None:
                old, revision = self.get_event(event_id)
            change = mutate(old)
            if change is None:
                assert old is not None  # noqa: S101 - only updates may change nothing
                return old
            guards = self._check(change)
            compare = [txn_compare(event_key(change.event.id), "mod_revision", "eq", revision)]
            compare += [txn_compare(booking_key(u), "mod_revision", "eq", r) for u, r in guards.items()]
            try:
                result = self.db.txn(compare, self._ops(old, change))
            except DBUnavailable as exc:
                if not exc.outcome_unknown:
                    raise
                kv = self.db.get(event_key(change.event.id))
                if kv is not None and kv["value"] == change.event.to_dict():
                    return change.event
                continue
            if result["succeeded"]:
                return change.event
            log.info("event txn lost a race; retrying", extra={"event_id": change.event.id})
        raise Contention("too many concurrent changes; try again")
