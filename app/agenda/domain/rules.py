"""The calendar's business rules: conflicts, group hierarchy, group-event fan-out, RSVPs, privacy and
free slots. Pure functions over `model` records; the services only load, call and store.

Decisions taken here (the specification left them open):

* Blocking: an event blocks a user's time when it is not cancelled and the user organizes it or has
  ACCEPTED it. A tentative or unanswered invitation does not block (`conflicts_for` ignores it) but is
  still flagged in the agenda view (`flag_conflicts`), so the user sees the clash before answering.
* Ownership: the owner may leave only when no other member (active or invited) remains, which
  dissolves the group; otherwise ownership would be orphaned. Nobody can remove the owner.
* Hierarchical group events are CONFIRMED at once: juniors are committed (accepted) without being
  asked, peers and seniors are merely invited and their answers never change the event's status.
  Juniors may still answer later (e.g. decline when ill): the organizer is told, the event stands.
* Flat group events need everyone: TENTATIVE until every participant has accepted (CONFIRMED at once
  when there is nobody to ask), CANCELLED for good on the first decline. Answering a cancelled event
  is refused, except repeating one's recorded answer, which is a no-op so client retries are safe.
  A confirmed flat event whose participant switches to tentative goes back to TENTATIVE.
* Appointments (and personal events) just record answers; their status is the organizer's to set.
* Notification ids are derived from (event, sequence, kind, recipient), so a retried transaction writes
  the same notifications again instead of duplicates.
* The privacy mask also shows full details to a viewer who organizes or was invited to the event:
  they see it in their own agenda anyway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from agenda.domain.model import (
    Event,
    EventKind,
    EventStatus,
    Group,
    Notification,
    NotificationKind,
    Participation,
    PartStat,
    Visibility,
    format_time,
    to_utc,
)
from agenda.domain.validation import MAX_GROUP_MEMBERS

__all__ = [
    "Fanout",
    "Interval",
    "RuleError",
    "apply_response",
    "blocks",
    "busy_intervals",
    "can_invite",
    "can_remove",
    "cancel_event",
    "change_notifications",
    "check_invite",
    "check_remove",
    "conflicts_for",
    "consensus_required",
    "flag_conflicts",
    "free_slots",
    "group_event_participation",
    "invitation_notifications",
    "is_senior",
    "notification_id",
    "overlaps",
    "visible_block",
]


class RuleError(Exception):
    """A request that breaks a rule. `code` is a stable slug (for a problem type URI); `forbidden`
    tells the HTTP layer 403 (the actor lacks the right) from 409 (the state does not allow it).
    """

    def __init__(self, code: str, message: str, *, forbidden: bool = False) -> None:
        self.code = code
        self.message = message
        self.forbidden = forbidden
        super().__init__(f"{code}: {message}")


class Interval(NamedTuple):
    """A half-open [start, end) span of time."""

    start: datetime
    end: datetime


# ---------------------------------------------------------------------------------------- conflicts


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Whether half-open [a_start, a_end) and [b_start, b_end) share an instant.

    Touching intervals (one ends when the other starts) do not overlap: back-to-back meetings are
    fine. Written as max(starts) < min(ends) so that empty intervals overlap nothing.
    """
    return max(a_start, b_start) < min(a_end, b_end)


def blocks(user: str, event: Event) -> bool:
    """Whether `event` is a commitment of `user`: not cancelled, and organized or accepted by them."""
    if event.status is EventStatus.CANCELLED:
        return False
    return event.partstat(user) is PartStat.ACCEPTED


def _shows(user: str, event: Event) -> bool:
    # Everything the agenda view lists: not cancelled and not declined (unanswered and tentative too).
    if event.status is EventStatus.CANCELLED:
        return False
    status = event.partstat(user)
    return status is not None and status is not PartStat.DECLINED


def conflicts_for(user: str, candidate: Event, existing: Iterable[Event]) -> list[str]:
    """Ids of `user`'s commitments (see `blocks`) that overlap `candidate`, in start order.

    Used before creating an event or accepting an invitation; `candidate` itself is skipped so that
    re-checking a stored event (e.g. when moving it) does not report it against itself.
    """
    hits = [
        event
        for event in existing
        if event.id != candidate.id
        and blocks(user, event)
        and overlaps(candidate.start, candidate.end, event.start, event.end)
    ]
    hits.sort(key=lambda e: (e.start, e.end, e.id))
    return [e.id for e in hits]


def flag_conflicts(user: str, events: Iterable[Event]) -> dict[str, list[str]]:
    """For each event in `user`'s agenda view (not cancelled, not declined by them), the ids of the
    other such events overlapping it, in start order; events without conflicts map to [].

    Sort and sweep with a heap of events still running: O(n log n + k) for k reported pairs, since an
    agenda query may cover a year of a busy user's events.
    """
    listed = [e for e in events if _shows(user, e)]
    flags: dict[str, list[str]] = {e.id: [] for e in listed}
    # Empty events overlap nothing; leaving them out keeps the sweep's invariant simple.
    shown = sorted((e for e in listed if e.start < e.end), key=lambda e: (e.start, e.end, e.id))
    running: list[tuple[datetime, int, Event]] = []  # (end, tiebreak, event) still open
    for index, event in enumerate(shown):
        while running and running[0][0] <= event.start:
            heapq.heappop(running)
        # Every event still running started no later than this one and ends after it starts.
        for _, _, other in running:
            if other.id != event.id:
                flags[other.id].append(event.id)
                flags[event.id].append(other.id)
        heapq.heappush(running, (event.end, index, event))
    order = {e.id: (e.start, e.end, e.id) for e in shown}
    for ids in flags.values():
        ids.sort(key=order.__getitem__)
    return flags


def busy_intervals(user: str, events: Iterable[Event]) -> list[Interval]:
    """The spans `user` is committed to (see `blocks`): their input to `free_slots`."""
    return [Interval(e.start, e.end) for e in events if blocks(user, e)]


# ---------------------------------------------------------------------------------------- hierarchy


def is_senior(group: Group, senior: str, junior: str) -> bool:
    """Whether active member `senior` outranks member `junior` in a hierarchical group.

    Strictly: equal levels are peers. Always False in flat groups, which have no ranks.
    """
    if not group.hierarchical:
        return False
    senior_level = group.active_level(senior)
    junior_membership = group.membership(junior)
    if senior_level is None or junior_membership is None:
        return False
    return senior_level < junior_membership.level


def check_invite(group: Group, actor: str, target: str | None, target_level: int) -> None:
    """Raise `RuleError` unless `actor` may invite `target` into `group` at `target_level`.

    Hierarchical: any active member, strictly below their own level (so nobody can create a peer or a
    superior, and level 0 stays the owner's). Flat: only the owner; the level is ignored (flat groups
    store 0). `target` may be None to ask only whether the actor could invite at that level.
    """
    actor_level = group.active_level(actor)
    if actor_level is None:
        raise RuleError("not-a-member", f"{actor} is not an active member of the group", forbidden=True)
    if group.hierarchical:
        if target_level <= actor_level:
            raise RuleError(
                "level-too-senior",
                f"{actor} (level {actor_level}) may only invite at a level greater than {actor_level}",
                forbidden=True,
            )
    elif actor != group.owner:
        raise RuleError("owner-only", "only the owner may invite to a non-hierarchical group", forbidden=True)
    if target is not None and target in group.members:
        raise RuleError("already-member", f"{target} is already a member or invited")
    if len(group.members) + 1 > MAX_GROUP_MEMBERS:
        raise RuleError("group-full", f"a group may have at most {MAX_GROUP_MEMBERS} members")


def can_invite(group: Group, actor: str, target_level: int) -> bool:
    """Whether `actor` may invite someone new at `target_level` (see `check_invite`)."""
    try:
        check_invite(group, actor, None, target_level)
    except RuleError:
        return False
    return True


def check_remove(group: Group, actor: str, target: str) -> None:
    """Raise `RuleError` unless `actor` may remove `target` (an active or invited member) from `group`.

    Anyone may remove themselves (leave, or turn an invitation down), except the owner while anyone
    else remains. Otherwise: hierarchical, an active member may remove members strictly below their
    level; flat, only the owner may remove. Nobody removes the owner.
    """
    if target not in group.members:
        raise RuleError("not-a-member", f"{target} is not a member of the group")
    if actor == target:
        if target == group.owner and len(group.members) > 1:
            raise RuleError("owner-cannot-leave", "the owner may leave only once every other member has gone")
        return
    if target == group.owner:
        raise RuleError("owner-cannot-be-removed", "nobody may remove the group's owner", forbidden=True)
    if not group.is_active(actor):
        raise RuleError("not-a-member", f"{actor} is not an active member of the group", forbidden=True)
    if group.hierarchical:
        if not is_senior(group, actor, target):
            raise RuleError(
                "level-too-senior",
                f"{actor} may only remove members at a lower rank than their own",
                forbidden=True,
            )
    elif actor != group.owner:
        raise RuleError(
            "owner-only", "only the owner may remove members of a non-hierarchical group", forbidden=True
        )


def can_remove(group: Group, actor: str, target: str) -> bool:
    """Whether `actor` may remove `target` (see `check_remove`)."""
    try:
        check_remove(group, actor, target)
    except RuleError:
        return False
    return True


# ---------------------------------------------------------------------------------- group events


@dataclass(frozen=True, slots=True)
class Fanout:
    """What a new group event starts as: each other active member's participation, and its status."""

    participants: dict[str, Participation]
    status: EventStatus


def group_event_participation(group: Group, organizer: str) -> Fanout:
    """Participations for a new event that `organizer` creates in `group` (all other active members).

    Hierarchical: members strictly below the organizer are committed at once (accepted), members at or
    above their level are invited (needs-action); the event is confirmed. Flat: everyone is invited and
    the event is tentative until all accept (confirmed at once if nobody else is active).
    Invited-but-not-yet-active members get nothing: they have not joined.
    """
    own = group.active_level(organizer)
    if own is None:
        raise RuleError("not-a-member", f"{organizer} is not an active member of the group", forbidden=True)
    others = [user for user in group.active_members() if user != organizer]
    if group.hierarchical:
        participants = {}
        for user in others:
            level = group.members[user].level
            status = PartStat.ACCEPTED if level > own else PartStat.NEEDS_ACTION
            participants[user] = Participation(status, level)
        return Fanout(participants, EventStatus.CONFIRMED)
    participants = {user: Participation(PartStat.NEEDS_ACTION, None) for user in others}
    return Fanout(participants, EventStatus.TENTATIVE if participants else EventStatus.CONFIRMED)


def consensus_required(event: Event) -> bool:
    """Whether `event` is a flat-group event, which happens only if every participant accepts.

    Told from the event alone (participants of hierarchical fan-outs carry a level, flat ones don't),
    so the answer does not change when the group's membership does.
    """
    return event.kind is EventKind.GROUP and all(p.level is None for p in event.participants.values())


def _consensus_status(participants: Mapping[str, Participation]) -> EventStatus:
    statuses = [p.status for p in participants.values()]
    if PartStat.DECLINED in statuses:
        return EventStatus.CANCELLED
    if all(s is PartStat.ACCEPTED for s in statuses):
        return EventStatus.CONFIRMED
    return EventStatus.TENTATIVE


def notification_id(event_id: str, sequence: int, kind: NotificationKind, user: str) -> str:
    """Deterministic id: the same change notifies the same user once, however often it is retried."""
    return f"{event_id}:{sequence}:{kind.value}:{user}"


def _notify(
    event: Event, kind: NotificationKind, users: Iterable[str], now: datetime, detail: str
) -> list[Notification]:
    return [
        Notification(
            id=notification_id(event.id, event.sequence, kind, user),
            user=user,
            kind=kind,
            created=now,
            event_id=event.id,
            group_id=event.group_id,
            detail=detail,
        )
        for user in sorted(set(users))
    ]


def _everyone(event: Event) -> list[str]:
    return [event.organizer, *event.participants]


def apply_response(
    event: Event, user: str, status: PartStat, *, now: datetime
) -> tuple[Event, list[Notification]]:
    """Record `user`'s answer to `event`; return the revised event and the notifications to store.

    The organizer is told of every answer. For flat-group events (see `consensus_required`) the last
    acceptance confirms the event and the first decline cancels it; everyone is told of either, and
    of a confirmed event falling back to tentative. Repeating the recorded answer changes nothing and
    notifies nobody, so retries are harmless. Raises `RuleError` for non-participants, for
    "needs-action" (not an answer) and for answers to a cancelled event.
    """
    status = PartStat(status)
    if status is PartStat.NEEDS_ACTION:
        raise RuleError(
            "not-an-answer", "needs-action is not an answer; reply accepted, declined or tentative"
        )
    current = event.participants.get(user)
    if current is None:
        detail = "organizes" if user == event.organizer else "was not invited to"
        raise RuleError(
            "not-a-participant", f"{user} {detail} this event and cannot answer it", forbidden=True
        )
    if current.status is status:
        return event, []
    if event.status is EventStatus.CANCELLED:
        raise RuleError("event-cancelled", "the event is cancelled and no longer takes answers")

    participants = dict(event.participants)
    participants[user] = Participation(status, current.level)
    new_status = _consensus_status(participants) if consensus_required(event) else event.status
    revised = event.revised(now, participants=participants, status=new_status)

    notes = _notify(revised, NotificationKind.RESPONDED, [event.organizer], now, f"{user} {status.value}")
    if new_status is not event.status:
        kind, detail = {
            EventStatus.CONFIRMED: (NotificationKind.CONFIRMED, "everyone accepted"),
            EventStatus.CANCELLED: (NotificationKind.CANCELLED, f"{user} declined"),
            EventStatus.TENTATIVE: (
                NotificationKind.CHANGED,
                f"{user} is no longer sure; the event is tentative",
            ),
        }[new_status]
        notes += _notify(revised, kind, _everyone(revised), now, detail)
    return revised, notes


def invitation_notifications(event: Event, now: datetime) -> list[Notification]:
    """What to tell participants of a newly created event: an invitation to those asked to answer,
    and a note to those committed without being asked (juniors in a hierarchical group).
    """
    asked = [u for u, p in event.participants.items() if p.status is PartStat.NEEDS_ACTION]
    told = [u for u, p in event.participants.items() if p.status is not PartStat.NEEDS_ACTION]
    notes = _notify(event, NotificationKind.INVITED, asked, now, f"{event.organizer} invites you")
    notes += _notify(event, NotificationKind.CONFIRMED, told, now, f"{event.organizer} added you")
    return notes


def change_notifications(event: Event, actor: str, now: datetime) -> list[Notification]:
    """What to tell participants when the organizer `actor` has changed `event` (already revised)."""
    return _notify(event, NotificationKind.CHANGED, event.participants, now, f"{actor} changed the event")


def cancel_event(event: Event, actor: str, *, now: datetime) -> tuple[Event, list[Notification]]:
    """The organizer cancels `event`; every participant is told. Cancelling twice is a no-op."""
    if actor != event.organizer:
        raise RuleError("organizer-only", "only the organizer may cancel an event", forbidden=True)
    if event.status is EventStatus.CANCELLED:
        return event, []
    revised = event.revised(now, status=EventStatus.CANCELLED)
    return revised, _notify(
        revised, NotificationKind.CANCELLED, revised.participants, now, f"{actor} cancelled"
    )


# --------------------------------------------------------------------------------------- privacy

_FULL_FIELDS = (
    "id",
    "title",
    "start",
    "end",
    "description",
    "location",
    "visibility",
    "organizer",
    "group_id",
    "kind",
    "status",
)


def visible_block(viewer: str, member: str, event: Event, group: Group) -> dict[str, Any]:
    """How `member`'s `event` appears to `viewer` in `group`'s agenda view.

    Full details when the viewer is the member, the event is public, the viewer takes part in it, or
    (hierarchical groups) the viewer strictly outranks the member. Otherwise only that the member is
    busy then: {start, end, busy: True}, which is all a free-slot search needs.
    """
    full = (
        viewer == member
        or event.visibility is Visibility.PUBLIC
        or event.involves(viewer)
        or is_senior(group, viewer, member)
    )
    if not full:
        return {"start": format_time(event.start), "end": format_time(event.end), "busy": True}
    data = event.to_dict()
    block = {key: data[key] for key in _FULL_FIELDS}
    block["busy"] = True
    return block


# ------------------------------------------------------------------------------------ free slots


def free_slots(
    busy_per_member: Mapping[str, Iterable[tuple[datetime, datetime]]],
    range_start: datetime,
    range_end: datetime,
    duration: timedelta,
) -> list[Interval]:
    """The maximal spans within [range_start, range_end) where no member is busy and which last at
    least `duration`, in time order.

    All members' busy intervals are merged into one sorted sweep, O(n log n): a slot is a gap of that
    sweep, and it is reported whole, so a client can place the meeting anywhere inside it.
    """
    if duration <= timedelta(0):
        raise ValueError("duration must be positive")
    start = to_utc(range_start, "range start")
    end = to_utc(range_end, "range end")
    if start >= end:
        raise ValueError("range start must be before range end")
    busy: list[tuple[datetime, datetime]] = []
    for intervals in busy_per_member.values():
        for b_start, b_end in intervals:
            clipped = (max(to_utc(b_start, "busy start"), start), min(to_utc(b_end, "busy end"), end))
            if clipped[0] < clipped[1]:
                busy.append(clipped)
    busy.sort()
    slots: list[Interval] = []
    cursor = start  # everything before `cursor` is known busy or already reported
    for b_start, b_end in busy:
        if b_start > cursor and b_start - cursor >= duration:
            slots.append(Interval(cursor, b_start))
        cursor = max(cursor, b_end)
    if end - cursor >= duration:
        slots.append(Interval(cursor, end))
    return slots
