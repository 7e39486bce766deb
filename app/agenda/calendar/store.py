"""Accounts, events and notifications in the DB cluster, and the transactions that change them.

The keys are `agenda.calendar.layout`'s. Each change of an event (create, edit, cancel, answer) writes
the event, every affected index entry, the notifications and the booking guards in ONE transaction,
compared on the event's own ``mod_revision`` (0 to create) and on the guards of the users whose
conflicts were checked, and committed through `agenda.calendar.cas.commit`: a failed compare means
someone else changed something first, and the change is recomputed from fresh reads.

A transaction holds at most 128 operations, so an event involves at most
`agenda.calendar.MAX_INVITEES` people besides its organizer (four operations per involved user in the
worst case: two index ops, a notification and a guard).
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from agenda.calendar.cas import Announce, Write, commit
from agenda.calendar.layout import (
    agenda_prefix,
    booking_key,
    event_key,
    index_key,
    index_tail,
    notifications_prefix,
    series_prefix,
    user_key,
)
from agenda.db.client import DBClient, DBUnavailable, RevisionMismatch
from agenda.db.txn import txn_compare, txn_delete, txn_get, txn_put
from agenda.domain.model import Event, Notification, format_time, parse_stored_time
from agenda.domain.rules import Interval, blocks, conflict_window, conflicts_for
from agenda.domain.validation import MAX_EVENT_DURATION

__all__ = [
    "Change",
    "EventConflict",
    "EventNotFound",
    "EventStore",
    "UsernameTaken",
]

_PAGE: Final = 200
_BOOKING_STRIPES: Final = 64


class UsernameTaken(Exception):  # noqa: N818
    pass


class EventNotFound(Exception):  # noqa: N818
    pass


class EventConflict(Exception):  # noqa: N818
    """`user` has commitments (`conflicts`, event ids) overlapping the event."""

    def __init__(self, user: str, conflicts: list[str]) -> None:
        self.user = user
        self.conflicts = conflicts
        super().__init__(f"{user} is busy: {conflicts}")


def _involved(event: Event | None) -> set[str]:
    return set() if event is None else {event.organizer, *event.participants}


def _blocking(user: str, event: Event | None) -> tuple[Any, ...] | None:
    """What of a series decides when it blocks `user`: its times, its rule, and per occurrence its
    moves, cancellations and `user`'s own answers (other users' answers never block `user`)."""
    if event is None:
        return None
    moved = tuple(
        sorted(
            (rid, o.start, o.end, o.cancelled, o.partstats.get(user)) for rid, o in event.overrides.items()
        )
    )
    return (blocks(user, event), event.start, event.end, event.recurrence, moved)


@dataclass(frozen=True)
class Change:
    """What a mutation of one event decided: the new record, notifications, and whose conflicts to check.

    A series is checked within `agenda.domain.rules.conflict_window`: the year from its start, or from
    `checked_from` (the caller's now) when that is later, so that a series that began long ago is checked
    where it still happens.

    `extra_ops` and `extra_compare` join the event's transaction: what a caller keeps beside the event
    (CalDAV's UID index) is written, and checked, atomically with it.
    """

    event: Event
    notifications: Sequence[Notification] = ()
    check_conflicts: Sequence[str] = ()
    checked_from: datetime | None = None
    # Check only there instead (one occurrence answered or moved: the others are as they were).
    checked_within: Interval | None = None
    extra_ops: Sequence[Mapping[str, Any]] = ()
    extra_compare: Sequence[Mapping[str, Any]] = ()


class EventStore:
    """Users and events over a `DBClient`; thread-safe (the client is).

    `announce`, when given, is told the notifications of every committed change (`commit`'s rules:
    once, after the commit, never for a change that did not commit); it must not block.
    """

    def __init__(self, db: DBClient, *, announce: Announce | None = None) -> None:
        self.db = db
        self.announce = announce
        self._booking_stripes = [threading.Lock() for _ in range(_BOOKING_STRIPES)]

    @contextlib.contextmanager
    def booking(self, user: str | None) -> Iterator[None]:
        """Hold while a change checked against `user`'s agenda is decided and written (None: nothing).

        Such changes compare the user's booking guard, so concurrent ones in this process would only
        make each other lose and retry, up to `commit`'s limit (a calendar client saving a batch of
        events at once). Taking turns here leaves the guard to settle races between instances."""
        if user is None:
            yield
            return
        with self._booking_stripes[zlib.crc32(user.encode()) % _BOOKING_STRIPES]:
            yield

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

    def timezone_of(self, username: str) -> str:
        """The account's IANA time zone ("UTC" when it has none, or no longer exists)."""
        record = self.get_user(username)
        return "UTC" if record is None else str(record.get("timezone") or "UTC")

    def recurrence_timezone(self, username: str, recurrence: Any) -> str:
        """The zone a recurrence given without one follows: the account's (read only then); "UTC" for
        one that names its own or is no object (its validation then says what is wrong)."""
        if isinstance(recurrence, dict) and "timezone" not in recurrence:
            return self.timezone_of(username)
        return "UTC"

    def missing_users(self, usernames: Iterable[str]) -> list[str]:
        """The usernames among `usernames` that have no account."""
        return [name for name in usernames if self.db.get(user_key(name)) is None]

    # ------------------------------------------------------------------------------------ reads

    def get_event(self, event_id: str) -> tuple[Event, int]:
        kv = self.db.get(event_key(event_id))
        if kv is None:
            raise EventNotFound(event_id)
        return Event.from_dict(kv["value"]), int(kv["mod_revision"])

    def _iter_agenda(
        self,
        username: str,
        start_key: str | None,
        revisions: list[int] | None = None,
        prefix: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The kvs of `username`'s agenda (or of another `prefix`) from `start_key` on, page by page;
        each page's revision (the store's revision it was read at) is appended to `revisions` when given."""
        prefix = prefix or agenda_prefix(username)
        start = start_key
        while True:
            page = self.db.range(prefix, start=start, limit=_PAGE)
            if revisions is not None:
                revisions.append(int(page["revision"]))
            yield from page["items"]
            if not page["more"] or not page["items"]:
                return
            start = page["items"][-1]["key"] + "\0"

    def agenda(
        self, username: str, range_start: datetime | None = None, range_end: datetime | None = None
    ) -> list[Event]:
        """`username`'s indexed events overlapping [range_start, range_end) (everything when unbounded):
        plain events in start order, then the series that may have an occurrence there, as records
        (`agenda.domain.rules.expand` turns them into occurrences)."""
        return self._agenda(username, range_start, range_end)[0]

    def _agenda(
        self, username: str, range_start: datetime | None, range_end: datetime | None
    ) -> tuple[list[Event], int]:
        """`agenda`, and the lowest revision its pages were read at: no change of the agenda committed
        at or before that revision is missing from the list (whichever member served each page)."""
        prefix = agenda_prefix(username)
        start_key = None
        if range_start is not None:
            start_key = prefix + format_time(range_start - MAX_EVENT_DURATION)
        stop = None if range_end is None else prefix + format_time(range_end)
        series = series_prefix(username)
        events = []
        revisions: list[int] = []
        for kv in self._iter_agenda(username, start_key, revisions):
            # Series entries sort after every start: past the last plain event, they are read below.
            if (stop is not None and kv["key"] >= stop) or kv["key"].startswith(series):
                break
            # The look-back reads up to a month of events that ended before the range: tell them by
            # their end alone (a listing of busy days reads hundreds), before building the event.
            if range_start is not None and parse_stored_time(kv["value"]["end"]) <= range_start:
                continue
            events.append(Event.from_dict(kv["value"]))
        # Series that are not over by range_start, whenever they began (keyed by their last end).
        series_start = None if range_start is None else series + format_time(range_start)
        for kv in self._iter_agenda(username, series_start, revisions, series):
            event = Event.from_dict(kv["value"])
            if range_end is None or event.start < range_end:
                events.append(event)
        return events, min(revisions)

    def agenda_entries(self, username: str) -> tuple[list[tuple[Event, int]], int]:
        """Every indexed event of `username` with its index entry's ``mod_revision``, and the lowest
        revision the pages were read at: what CalDAV's ctag and sync token are made of."""
        revisions: list[int] = []
        pairs = [
            (Event.from_dict(kv["value"]), int(kv["mod_revision"]))
            for kv in self._iter_agenda(username, None, revisions)  # series entries included
        ]
        return pairs, min(revisions)

    def notifications(self, username: str, since: str | None, limit: int) -> list[dict[str, Any]]:
        prefix = notifications_prefix(username)
        start = None if since is None else prefix + since + "\0"
        page = self.db.range(prefix, start=start, limit=limit)
        return [kv["value"] for kv in page["items"]]

    # ----------------------------------------------------------------------------------- writes

    def _check(self, change: Change) -> dict[str, int]:
        """Read each checked user's agenda; raise EventConflict; return, per user, the revision the
        agenda was read at.

        The transaction then requires each user's booking guard to be unchanged since that revision
        (``mod_revision < revision + 1``): every write that can change what blocks a user's time puts
        the guard in the same transaction as the agenda entries, so a guard last written at or before
        the read means the read saw that write, and a later one makes the compare fail. (Guards are
        never deleted, so a missing guard, read as 0, has never been written.) This is the same
        guarantee as reading the guard before the agenda and comparing it for equality, without the
        guard's own linearizable read.
        """
        guards: dict[str, int] = {}
        new = change.event
        window = change.checked_within or conflict_window(new, change.checked_from)
        for user in change.check_conflicts:
            existing, revision = self._agenda(user, window.start, window.end)
            hits = conflicts_for(user, new, existing, window=window)
            if hits:
                raise EventConflict(user, hits)
            guards[user] = revision
        return guards

    @staticmethod
    def _ops(old: Event | None, change: Change) -> list[dict[str, Any]]:
        """The record and index operations of `change` (its notifications are the `Write`'s notes)."""
        new = change.event
        value = new.to_dict()
        ops = [txn_put(event_key(new.id), value)]
        recurring = new.recurrence is not None or (old is not None and old.recurrence is not None)
        # Index keys are computed once per record: a series' key needs its last end (an expansion).
        old_tail = None if old is None else index_tail(old)
        new_tail = index_tail(new)
        for user in sorted(_involved(old) | _involved(new)):
            old_key = None
            if old is not None and user in _involved(old):
                old_key = index_key(user, old, old_tail)
            new_key = index_key(user, new, new_tail) if user in _involved(new) else None
            if old_key is not None and old_key != new_key:
                ops.append(txn_delete(old_key))
            if new_key is not None:
                ops.append(txn_put(new_key, value))
            if recurring:
                guard = _blocking(user, old) != _blocking(user, new)
            else:
                was = old is not None and blocks(user, old)
                moved = old is not None and (old.start, old.end) != (new.start, new.end)
                guard = blocks(user, new) != was or (was and moved)
            if guard or user in change.check_conflicts:
                ops.append(txn_put(booking_key(user), {"event": new.id, "sequence": new.sequence}))
        return ops

    def create(self, build: Callable[[], Change], *, event_id: str | None = None) -> Event:
        """Store the event `build()` returns (called again after a lost race).

        With `event_id` (the id `build` gives, derived from an Idempotency-Key) the create happens at
        most once: when that event exists already, a repeat of the request, it is returned as is.
        """
        if event_id is None:
            return self._commit(None, lambda _old: build())
        # A repeat is rare: the first attempt assumes the event is absent instead of reading it, and
        # its transaction's compare (the event's mod_revision is 0) finds out otherwise.
        return self._commit(
            event_id, lambda old: build() if old is None else None, missing_ok=True, assume_absent=True
        )

    def update(self, event_id: str, mutate: Callable[[Event], Change | None]) -> Event:
        """Apply `mutate` to the current event; None from it means "nothing to change"."""
        return self._commit(event_id, mutate)

    def remove(
        self,
        event_id: str,
        decide: Callable[[Event], Sequence[Notification]],
        *,
        extra_ops: Callable[[Event], Sequence[Mapping[str, Any]]] = lambda _event: (),
    ) -> Event:
        """Delete the event outright: its record and every index entry, in one transaction.

        `decide` gets the current event, raises to refuse, and returns the notifications to store (the
        participants' "cancelled"); `extra_ops` adds the caller's own deletions (CalDAV's UID index).
        The users it blocked get their booking guard put, as for any change of what blocks them.
        Returns the event as it was. (The JSON API's DELETE cancels instead, so the event stays visible;
        a CalDAV client's DELETE means the resource is gone.)
        """

        def attempt() -> tuple[Event, Write | None]:
            old, revision = self._read_event(event_id)
            if old is None:
                raise EventNotFound(event_id)
            notes = decide(old)
            key = event_key(event_id)
            ops = [txn_delete(key)]
            tail = index_tail(old)
            for user in sorted(_involved(old)):
                ops.append(txn_delete(index_key(user, old, tail)))
                if blocks(user, old):
                    ops.append(txn_put(booking_key(user), {"event": old.id, "removed": old.sequence}))
            ops.extend(extra_ops(old))
            compare = [txn_compare(key, "mod_revision", "eq", revision)]
            return old, Write(compare, ops, key, None, notes)

        return commit(self.db, attempt, what="event", announce=self.announce)

    def _read_event(self, event_id: str) -> tuple[Event | None, int]:
        try:
            return self.get_event(event_id)
        except EventNotFound:
            return None, 0

    def _commit(
        self,
        event_id: str | None,
        mutate: Callable[[Any], Change | None],
        *,
        missing_ok: bool = False,
        assume_absent: bool = False,
    ) -> Event:
        # The event as the last lost transaction found it (its failure branch reads it): the next
        # attempt decides from that instead of reading it again.
        found: list[tuple[Event | None, int]] = []

        def lost(results: Sequence[Mapping[str, Any]]) -> None:
            kv = results[0]["get"]["kv"] if results else None
            found.append((None, 0) if kv is None else (Event.from_dict(kv["value"]), int(kv["mod_revision"])))

        def attempt() -> tuple[Event, Write | None]:
            old: Event | None = None
            revision = 0
            assumed = False
            if event_id is not None:
                if found:
                    old, revision = found.pop()
                elif assume_absent:
                    assumed = True
                else:
                    old, revision = self._read_event(event_id)
                if old is None and not missing_ok:
                    raise EventNotFound(event_id)
            change = mutate(old)
            if change is None:
                assert old is not None  # noqa: S101 - only updates may change nothing
                return old, None
            try:
                guards = self._check(change)
            except EventConflict:
                if not assumed:
                    raise
                # Not read, only assumed absent: if the event exists (a repeat of this request),
                # `mutate` answers with it, as when it was read first; otherwise the conflict stands.
                old, revision = self._read_event(event_id)  # type: ignore[arg-type]
                if old is None:
                    raise
                change = mutate(old)
                if change is None:
                    return old, None
                guards = self._check(change)
            key = event_key(change.event.id)
            compare = [txn_compare(key, "mod_revision", "eq", revision)]
            compare += [txn_compare(booking_key(u), "mod_revision", "lt", r + 1) for u, r in guards.items()]
            compare += change.extra_compare
            ops = [*self._ops(old, change), *change.extra_ops]
            if event_id is None:
                return change.event, Write(compare, ops, key, change.event.to_dict(), change.notifications)
            write = Write(
                compare,
                ops,
                key,
                change.event.to_dict(),
                change.notifications,
                failure=[txn_get(event_key(event_id))],
                on_lost=lost,
            )
            return change.event, write

        return commit(self.db, attempt, what="event", announce=self.announce)
