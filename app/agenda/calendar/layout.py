"""Where the calendar keeps its data in the DB cluster's key-value store (every value is JSON).

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
``agenda/<username>/~series/<last end>/<event_id>``
    One index entry per user involved in a RECURRING event, instead of its ``<start>`` entry, holding a
    full copy of the series (rule, overrides and all). ``<last end>`` is RFC 3339 UTC of the latest
    instant any occurrence can end (`agenda.domain.recurrence.series_end`: the last occurrence's end,
    moved ones included, or the hundred-year horizon's, `recurrence.HORIZON`, for an open-ended rule), so
    a user's agenda between two instants reads, beside the range above, the single range of series not
    over by ``from`` (starting at ``agenda/<username>/~series/<from>``), whenever they began; a series is
    then expanded into its occurrences in the window. ``~`` sorts after every digit, so the range of plain
    events stops before these entries, while everything that watches or lists the whole
    ``agenda/<username>/`` prefix (CalDAV's ctag and sync) sees series too. Written in the same
    transaction as the event, and moved (deleted and put) when its last end changes.
``notifications/<username>/<cursor>``
    One per notification (`notification_record`: `Notification.to_dict()` plus ``cursor``). The cursor is
    ``<20-digit microseconds since the epoch>.<notification id>``: sortable by time, unique, and the
    client's ``since`` bookmark.
``booking/<username>``
    The user's booking guard. Every transaction that can change what blocks a user's time puts this
    key, and every transaction that checked a user's conflicts compares its ``mod_revision`` with the
    one read *before* the agenda was read. So between "no conflict found" and "event written", no
    other commitment of that user can have been written: double-booking is impossible under
    concurrency, across any number of service instances.
``calendars/<username>/<name>``
    A CalDAV calendar collection the user made (MKCALENDAR): ``{displayname, description, color,
    order, created}``. The default calendar (``default``) exists without a record until one is written.
    Events name the organizer's collection in ``calendar`` ("" for the default one).
``dav-uids/<username>/<calendar>/<sha256 of the UID>``
    ``{"event": id}``: which event holds an iCalendar UID in one of the user's calendars, so a second
    resource with the same UID is refused (CalDAV's ``no-uid-conflict``) with one read. Written and
    deleted in the event's own transaction.
``dav-inbox/<username>/<event_id>``
    ``{"sequence": n}``: the user's CalDAV client took the invitation out of its schedule inbox at that
    sequence. The inbox lists the pending invitations changed since (RFC 6638's inbox, derived).
``groups/<group_id>``
    The group (`agenda.domain.model.Group.to_dict()`), members and their levels and states included.
``memberships/<username>/<group_id>``
    ``{level, state}``: one index entry per member (invited or active) so "my groups" is one range
    read. Written in the same transaction as the group, only for members whose entry changed.

Group events are ordinary events (kind ``group``, ``group_id`` set), so they appear in every
participant's agenda, conflicts, notifications and calendar export.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from agenda.domain.model import Event, Notification, format_time
from agenda.domain.recurrence import series_end

__all__ = [
    "NOTIFICATION_CURSOR",
    "agenda_key",
    "agenda_prefix",
    "booking_key",
    "calendar_key",
    "calendars_prefix",
    "event_key",
    "group_key",
    "inbox_key",
    "inbox_prefix",
    "index_key",
    "index_tail",
    "membership_prefix",
    "notification_cursor",
    "notification_record",
    "notifications_prefix",
    "series_prefix",
    "uid_key",
    "user_key",
]


def user_key(username: str) -> str:
    return f"users/{username}"


def event_key(event_id: str) -> str:
    return f"events/{event_id}"


def agenda_prefix(username: str) -> str:
    return f"agenda/{username}/"


def agenda_key(username: str, event: Event) -> str:
    return f"{agenda_prefix(username)}{format_time(event.start)}/{event.id}"


def series_prefix(username: str) -> str:
    return f"{agenda_prefix(username)}~series/"


def index_tail(event: Event) -> str:
    """What follows the user in `event`'s index keys: ``<start>/<id>``, or ``<last end>/<id>`` for a
    series (its last end costs an expansion of the series: compute it once per record)."""
    if event.recurrence is None:
        return f"{format_time(event.start)}/{event.id}"
    last = series_end(event.start, event.end, event.recurrence, event.overrides)
    return f"{format_time(last)}/{event.id}"


def index_key(username: str, event: Event, tail: str | None = None) -> str:
    """Where `event` is indexed for `username`: ``series/`` for a recurring event, else ``agenda/``;
    `tail` is `index_tail(event)` when the caller has it already."""
    prefix = agenda_prefix(username) if event.recurrence is None else series_prefix(username)
    return prefix + (index_tail(event) if tail is None else tail)


def booking_key(username: str) -> str:
    return f"booking/{username}"


def notifications_prefix(username: str) -> str:
    return f"notifications/{username}/"


# What `notification_cursor` makes (and what a client may send back as ``since`` or Last-Event-ID).
NOTIFICATION_CURSOR: Final = re.compile(r"\d{20}\.[A-Za-z0-9:._-]{1,200}")


def notification_cursor(note: Notification) -> str:
    micros = int(note.created.timestamp() * 1_000_000)
    return f"{micros:020d}.{note.id}"


def notification_record(note: Notification) -> dict[str, Any]:
    """What is stored for `note` (and what is published about it): its dict plus its ``cursor``."""
    return {**note.to_dict(), "cursor": notification_cursor(note)}


def calendar_key(username: str, name: str) -> str:
    return f"calendars/{username}/{name}"


def calendars_prefix(username: str) -> str:
    return f"calendars/{username}/"


def uid_key(username: str, calendar: str, uid: str) -> str:
    digest = hashlib.sha256(uid.encode()).hexdigest()
    return f"dav-uids/{username}/{calendar or 'default'}/{digest}"


def inbox_key(username: str, event_id: str) -> str:
    return f"dav-inbox/{username}/{event_id}"


def inbox_prefix(username: str) -> str:
    return f"dav-inbox/{username}/"


def group_key(group_id: str) -> str:
    return f"groups/{group_id}"


def membership_prefix(username: str) -> str:
    return f"memberships/{username}/"
