"""The calendar's records: events, groups, notifications, and their JSON form for the KV store.

Records are frozen dataclasses: the services read a record, compute a new one with the rules, and write
it back in a KV transaction that checks the old revision. Immutability makes "compute the new record"
impossible to confuse with "mutate what we read", which matters when a transaction is retried.

Times are aware datetimes normalised to UTC on construction and serialised as RFC 3339 with a `Z`
("2026-11-26T10:00:00Z"), so stored values sort as strings and never depend on a server's zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    # Only for annotations: `recurrence` imports this module (its records use PartStat and the times'
    # helpers), so this one loads it lazily, and only for records that recur.
    from agenda.domain.recurrence import Override, Recurrence

__all__ = [
    "Event",
    "EventKind",
    "EventStatus",
    "Group",
    "MemberState",
    "Membership",
    "Notification",
    "NotificationKind",
    "PartStat",
    "Participation",
    "Visibility",
    "format_time",
    "parse_stored_time",
    "to_utc",
]


class Visibility(StrEnum):
    """Whether other group members may see an event's details (public) or only that you are busy."""

    PRIVATE = "private"
    PUBLIC = "public"


class EventKind(StrEnum):
    """personal: the organizer alone; appointment: organizer plus invited users; group: fanned out."""

    PERSONAL = "personal"
    APPOINTMENT = "appointment"
    GROUP = "group"


class EventStatus(StrEnum):
    """The event as a whole; the same three values as iCalendar's VEVENT STATUS."""

    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


class PartStat(StrEnum):
    """One participant's answer; the same values as iCalendar's PARTSTAT, so export is a mapping."""

    NEEDS_ACTION = "needs-action"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TENTATIVE = "tentative"


class MemberState(StrEnum):
    """An invited member has not accepted yet: they get no group events and have no powers."""

    INVITED = "invited"
    ACTIVE = "active"


class NotificationKind(StrEnum):
    INVITED = "invited"
    RESPONDED = "responded"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    CHANGED = "changed"
    MEMBERSHIP = "membership"


def to_utc(value: datetime, what: str = "time") -> datetime:
    """`value` converted to UTC; naive datetimes are refused because their instant is unknowable."""
    if value.tzinfo is UTC:
        # Already UTC (every stored and normalised time): astimezone would return it unchanged. A
        # listed agenda converts each event's times a dozen times, so the shortcut shows.
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`; fractional seconds only when present, so whole-second times stay short."""
    # isoformat() is exactly that (a four-digit year on every platform, unlike strftime's %Y; six-digit
    # microseconds only when there are some) with "+00:00" for the Z, and much cheaper than strftime. A
    # listed agenda formats four times per event: cutting the offset off beats building a naive copy.
    return to_utc(value).isoformat()[:-6] + "Z"


def parse_stored_time(text: str) -> datetime:
    """Read a time written by `format_time` (or any ISO 8601 time with an offset) back as UTC.

    This is for trusted stored data; API input goes through `validation.parse_time`, which is stricter
    and names the field on error.
    """
    if not isinstance(text, str):
        raise TypeError(f"stored time must be a string, got {type(text).__name__}")
    value = datetime.fromisoformat(text)
    # Stored times are UTC: skip building the error's description for them (a listed agenda parses
    # a hundred times per request).
    return value if value.tzinfo is UTC else to_utc(value, f"stored time {text!r}")


def _require(data: Mapping[str, Any], key: str, record: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise ValueError(f"{record} record lacks {key!r}") from None


@dataclass(frozen=True, slots=True)
class Participation:
    """A participant's answer and, for hierarchical groups, their level when the event was fanned out.

    `level` is None exactly for participants of appointments and of flat (non-hierarchical) group
    events; the rules use that to tell a flat-group event (which needs everyone's consent) from a
    hierarchical one without reading the group again, whose membership may have changed since.
    """

    status: PartStat = PartStat.NEEDS_ACTION
    level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "level": self.level}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        level = data.get("level")
        if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
            raise ValueError(f"participation level must be an integer or null, got {level!r}")
        return cls(status=PartStat(_require(data, "status", "participation")), level=level)


# Event fields written only when set, so an event made through the JSON API is stored as before.
_DAV_FIELDS: Final = ("uid", "ical", "calendar", "dav_name")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One calendar entry. `sequence` grows by one on every change, as iCalendar's SEQUENCE requires,
    so calendar clients replace their copy instead of keeping a stale one.

    The organizer is never in `participants`: organizing is itself the commitment.

    A recurring event (a series) has a `recurrence`; its `start` and `end` are the first occurrence's
    (iCalendar's DTSTART and DTEND), and `overrides` holds what differs for single occurrences, keyed by
    recurrence-id (`agenda.domain.recurrence`). `recurrence_id` is set only on an occurrence expanded from
    a series for a view (`agenda.domain.rules.instances`): such an instance is never stored.
    """

    id: str
    title: str
    start: datetime
    end: datetime
    organizer: str
    created: datetime
    updated: datetime
    description: str = ""
    location: str = ""
    visibility: Visibility = Visibility.PRIVATE
    group_id: str | None = None
    kind: EventKind = EventKind.PERSONAL
    status: EventStatus = EventStatus.CONFIRMED
    participants: Mapping[str, Participation] = field(default_factory=dict)
    sequence: int = 0
    recurrence: Recurrence | None = None
    overrides: Mapping[str, Override] = field(default_factory=dict)
    recurrence_id: str | None = None
    # CalDAV (`agenda.domain.ical`): the iCalendar UID ("" means derived from the id), the client's own
    # calendar object, kept so its alarms, categories and time zones come back as it wrote them, and
    # where the organizer keeps it: their calendar collection ("" is the default one) and the resource
    # name it was PUT under. All empty for an event made through the JSON API.
    uid: str = ""
    ical: str = ""
    calendar: str = ""
    dav_name: str = ""

    def __post_init__(self) -> None:
        # Normalise here so every Event, however built, holds UTC times and plain enum values. What is
        # already normalised (every Event read back from the store) is left as it is: converting it
        # would return the same object.
        for name in ("start", "end", "created", "updated"):
            value = getattr(self, name)
            if value.tzinfo is not UTC:
                object.__setattr__(self, name, to_utc(value, f"event {name}"))
        if type(self.visibility) is not Visibility:
            object.__setattr__(self, "visibility", Visibility(self.visibility))
        if type(self.kind) is not EventKind:
            object.__setattr__(self, "kind", EventKind(self.kind))
        if type(self.status) is not EventStatus:
            object.__setattr__(self, "status", EventStatus(self.status))
        object.__setattr__(self, "participants", dict(self.participants))
        if self.organizer in self.participants:
            raise ValueError(f"organizer {self.organizer!r} must not also be a participant")
        if self.overrides:
            object.__setattr__(self, "overrides", dict(self.overrides))
            if self.recurrence is None:
                raise ValueError("only a recurring event has overridden occurrences")

    def involves(self, user: str) -> bool:
        """True when `user` organizes the event or was invited to it."""
        return user == self.organizer or user in self.participants

    def partstat(self, user: str) -> PartStat | None:
        """`user`'s answer; the organizer counts as accepted; None if the user is not involved."""
        if user == self.organizer:
            return PartStat.ACCEPTED
        participation = self.participants.get(user)
        return participation.status if participation else None

    def revised(self, now: datetime, **changes: Any) -> Event:
        """A copy with `changes`, `updated` set to `now` and `sequence` bumped: every change is a revision."""
        return replace(self, **changes, updated=now, sequence=self.sequence + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "description": self.description,
            "location": self.location,
            "visibility": self.visibility.value,
            "organizer": self.organizer,
            "group_id": self.group_id,
            "kind": self.kind.value,
            "status": self.status.value,
            "participants": {user: p.to_dict() for user, p in sorted(self.participants.items())},
            "created": format_time(self.created),
            "updated": format_time(self.updated),
            "sequence": self.sequence,
            # Only when there is something to say: records of plain events stay as they were.
            **self._recurrence_dict(),
        } | {name: getattr(self, name) for name in _DAV_FIELDS if getattr(self, name)}

    def _recurrence_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.recurrence is not None:
            data["recurrence"] = self.recurrence.to_dict()
            if self.recurrence_id is None:
                data["overrides"] = {rid: o.to_dict() for rid, o in sorted(self.overrides.items())}
        if self.recurrence_id is not None:
            data["recurrence_id"] = self.recurrence_id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        participants = data.get("participants") or {}
        recurring: dict[str, Any] = {}
        if data.get("recurrence") is not None:
            from agenda.domain.recurrence import Override, Recurrence  # see the TYPE_CHECKING import

            recurring["recurrence"] = Recurrence.from_dict(data["recurrence"])
            overrides = data.get("overrides") or {}
            recurring["overrides"] = {rid: Override.from_dict(o) for rid, o in overrides.items()}
        if data.get("recurrence_id") is not None:
            recurring["recurrence_id"] = data["recurrence_id"]
        return cls(
            id=_require(data, "id", "event"),
            title=_require(data, "title", "event"),
            start=parse_stored_time(_require(data, "start", "event")),
            end=parse_stored_time(_require(data, "end", "event")),
            organizer=_require(data, "organizer", "event"),
            created=parse_stored_time(_require(data, "created", "event")),
            updated=parse_stored_time(_require(data, "updated", "event")),
            description=data.get("description", ""),
            location=data.get("location", ""),
            visibility=Visibility(data.get("visibility", Visibility.PRIVATE)),
            group_id=data.get("group_id"),
            kind=EventKind(data.get("kind", EventKind.PERSONAL)),
            status=EventStatus(data.get("status", EventStatus.CONFIRMED)),
            participants={user: Participation.from_dict(p) for user, p in participants.items()},
            sequence=int(data.get("sequence", 0)),
            uid=data.get("uid", ""),
            ical=data.get("ical", ""),
            calendar=data.get("calendar", ""),
            dav_name=data.get("dav_name", ""),
            **recurring,
        )


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's place in a group. In flat groups every level is 0 and carries no meaning."""

    level: int
    state: MemberState = MemberState.ACTIVE
    invited_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "state": self.state.value, "invited_by": self.invited_by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            level=int(_require(data, "level", "membership")),
            state=MemberState(data.get("state", MemberState.ACTIVE)),
            invited_by=data.get("invited_by"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """A named set of users. In a hierarchical group a LOWER level number is MORE senior; the owner
    is level 0, and since members may only invite strictly below themselves, nobody else ever is.
    """

    id: str
    name: str
    owner: str
    created: datetime
    hierarchical: bool = False
    members: Mapping[str, Membership] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", to_utc(self.created, "group created"))
        object.__setattr__(self, "members", dict(self.members))

    def membership(self, user: str) -> Membership | None:
        return self.members.get(user)

    def is_active(self, user: str) -> bool:
        """Only active members have powers and receive group events; invitees have not said yes yet."""
        membership = self.members.get(user)
        return membership is not None and membership.state is MemberState.ACTIVE

    def active_level(self, user: str) -> int | None:
        """`user`'s level if they are an active member, else None."""
        membership = self.members.get(user)
        if membership is None or membership.state is not MemberState.ACTIVE:
            return None
        return membership.level

    def active_members(self) -> list[str]:
        return sorted(user for user, m in self.members.items() if m.state is MemberState.ACTIVE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hierarchical": self.hierarchical,
            "owner": self.owner,
            "members": {user: m.to_dict() for user, m in sorted(self.members.items())},
            "created": format_time(self.created),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        members = data.get("members") or {}
        return cls(
            id=_require(data, "id", "group"),
            name=_require(data, "name", "group"),
            owner=_require(data, "owner", "group"),
            created=parse_stored_time(_require(data, "created", "group")),
            hierarchical=bool(data.get("hierarchical", False)),
            members={user: Membership.from_dict(m) for user, m in members.items()},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """Something a user should be told about an event or a group; at least one of the two ids is set."""

    id: str
    user: str
    kind: NotificationKind
    created: datetime
    event_id: str | None = None
    group_id: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", to_utc(self.created, "notification created"))
        object.__setattr__(self, "kind", NotificationKind(self.kind))
        if self.event_id is None and self.group_id is None:
            raise ValueError("a notification must refer to an event or a group")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "kind": self.kind.value,
            "event_id": self.event_id,
            "group_id": self.group_id,
            "detail": self.detail,
            "created": format_time(self.created),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            id=_require(data, "id", "notification"),
            user=_require(data, "user", "notification"),
            kind=NotificationKind(_require(data, "kind", "notification")),
            created=parse_stored_time(_require(data, "created", "notification")),
            event_id=data.get("event_id"),
            group_id=data.get("group_id"),
            detail=data.get("detail", ""),
        )
