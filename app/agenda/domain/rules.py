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
* Recurring events are seen as their occurrences (`instances`): each is an `Event` with the
  occurrence's times, details and answers and its `recurrence_id`, so every rule above applies to one
  occurrence as to a plain event. A series is checked for conflicts within `CONFLICT_HORIZON` (366
  days) from its start or from now, whichever is later (`conflict_window`): clashes further out are
  not found when booking, only flagged in the agenda when that time is listed. Two occurrences of one
  series never conflict with each other.
* One occurrence may be answered (`apply_response(..., occurrence=)`), changed or cancelled alone; the
  answer is kept in its `Override` and wins over the series' answer for that occurrence only. In a
  flat group the occurrence's status follows from its own answers: a decline cancels that occurrence,
  not the series.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

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
    parse_stored_time,
    to_utc,
)
from agenda.domain.recurrence import (
    MAX_OVERRIDES,
    Occurrence,
    Override,
    horizon_end,
    is_occurrence,
    occurrence_times,
    occurrences,
    original_starts,
)
from agenda.domain.validation import MAX_EVENT_DURATION, MAX_GROUP_MEMBERS, MAX_QUERY_RANGE, ValidationError

__all__ = [
    "CONFLICT_HORIZON",
    "Fanout",
    "Interval",
    "RuleError",
    "apply_response",
    "blocks",
    "busy_intervals",
    "can_invite",
    "can_remove",
    "cancel_event",
    "cancel_occurrence",
    "change_notifications",
    "change_occurrence",
    "check_invite",
    "check_remove",
    "conflict_window",
    "conflicts_for",
    "consensus_required",
    "expand",
    "flag_conflicts",
    "free_slots",
    "group_event_participation",
    "instance_key",
    "instances",
    "invitation_notifications",
    "is_senior",
    "notification_id",
    "occurrence_span",
    "overlaps",
    "prune_overrides",
    "visible_block",
]

# How far ahead a series' occurrences are checked for conflicts when it is booked (see the module).
CONFLICT_HORIZON: Final = MAX_QUERY_RANGE


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


def _participants_at(event: Event, override: Override | None) -> dict[str, Participation]:
    """The series' participations with the occurrence's own answers in place of theirs."""
    if override is None or not override.partstats:
        return dict(event.participants)
    merged = dict(event.participants)
    for user, status in override.partstats.items():
        current = merged.get(user)
        if current is not None:
            merged[user] = Participation(status, current.level)
    return merged


def _status_at(event: Event, participants: Mapping[str, Participation]) -> EventStatus:
    # A flat-group occurrence with answers of its own is decided by them, as the series is by its own.
    if event.status is EventStatus.CANCELLED or not consensus_required(event):
        return event.status
    return _consensus_status(participants)


def _instance(event: Event, occurrence: Occurrence) -> Event:
    override = occurrence.override
    participants = _participants_at(event, override)
    details = {}
    if override is not None:
        details = {
            name: getattr(override, name)
            for name in ("title", "description", "location")
            if getattr(override, name) is not None
        }
    return replace(
        event,
        start=occurrence.start,
        end=occurrence.end,
        participants=participants,
        status=_status_at(event, participants) if override is not None else event.status,
        overrides={},
        recurrence_id=occurrence.recurrence_id,
        **details,
    )


def instances(event: Event, window_start: datetime, window_end: datetime) -> list[Event]:
    """`event` as it happens in [window_start, window_end): a plain event itself if it overlaps, a
    series one `Event` per occurrence (`Event.recurrence_id` set), in the order of their original starts."""
    if event.recurrence is None:
        return [event] if event.start < window_end and event.end > window_start else []
    found = occurrences(event.start, event.end, event.recurrence, window_start, window_end, event.overrides)
    return [_instance(event, occurrence) for occurrence in found]


def expand(events: Iterable[Event], window_start: datetime, window_end: datetime) -> list[Event]:
    """Every event's `instances` in the window. Plain events keep their order (an agenda's is by start)
    and nothing is sorted unless a series was expanded: then all by (start, id, recurrence-id)."""
    listed: list[Event] = []
    recurring = False
    for event in events:
        if event.recurrence is None:
            if event.start < window_end and event.end > window_start:
                listed.append(event)
        else:
            recurring = True
            listed.extend(instances(event, window_start, window_end))
    if recurring:
        listed.sort(key=lambda e: (e.start, e.id, e.recurrence_id or ""))
    return listed


def conflict_window(event: Event, now: datetime | None = None) -> Interval:
    """The span within which `event` is checked for conflicts: a plain event's own; for a series, the
    `CONFLICT_HORIZON` from its start, or from `now` when the series began earlier."""
    if event.recurrence is None:
        return Interval(event.start, event.end)
    begin = event.start if now is None else max(event.start, now)
    return Interval(begin, begin + CONFLICT_HORIZON)


def _order(event: Event) -> tuple[datetime, datetime, str, str]:
    return (event.start, event.end, event.id, event.recurrence_id or "")


def conflicts_for(
    user: str, candidate: Event, existing: Iterable[Event], *, window: Interval | None = None
) -> list[str]:
    """Ids of `user`'s commitments (see `blocks`) that overlap `candidate`, in start order.

    Used before creating an event or accepting an invitation; `candidate` itself is skipped so that
    re-checking a stored event (e.g. when moving it) does not report it against itself. Series, on
    either side, are compared occurrence by occurrence within `window` (default `conflict_window`);
    of a candidate series only the occurrences that would commit `user` are checked.
    """
    span = window or conflict_window(candidate)
    wanted = instances(candidate, *span)
    if candidate.recurrence is not None:
        wanted = [w for w in wanted if blocks(user, w)]
    wanted.sort(key=_order)
    wanted_starts = [w.start for w in wanted]
    hits = []
    for event in existing:
        if event.id == candidate.id:
            continue
        for commitment in instances(event, *span) if event.recurrence is not None else [event]:
            if not blocks(user, commitment):
                continue
            # Candidates starting before the commitment ends and, since none lasts longer than
            # MAX_EVENT_DURATION, not so long before it starts: only those can overlap it.
            earliest = commitment.start - MAX_EVENT_DURATION
            for index in range(bisect_left(wanted_starts, commitment.end) - 1, -1, -1):
                mine = wanted[index]
                if mine.start < earliest:
                    break
                if overlaps(mine.start, mine.end, commitment.start, commitment.end):
                    hits.append(commitment)
                    break
    hits.sort(key=_order)
    return list(dict.fromkeys(e.id for e in hits))


def instance_key(event: Event) -> str:
    """What tells apart the events listed in one agenda: the id, and the recurrence-id of an occurrence."""
    return event.id if event.recurrence_id is None else f"{event.id}@{event.recurrence_id}"


def flag_conflicts(user: str, events: Iterable[Event]) -> dict[str, list[str]]:
    """For each event in `user`'s agenda view (not cancelled, not declined by them), the ids of the
    other such events overlapping it, in start order; events without conflicts map to []. The keys are
    `instance_key`s (the id, for a plain event): give it occurrences (`expand`), not series.

    Sort and sweep with a heap of events still running: O(n log n + k) for k reported pairs, since an
    agenda query may cover a year of a busy user's events.
    """
    listed = [e for e in events if _shows(user, e)]
    flags: dict[str, list[str]] = {instance_key(e): [] for e in listed}
    # Empty events overlap nothing; leaving them out keeps the sweep's invariant simple.
    shown = sorted((e for e in listed if e.start < e.end), key=_order)
    clashes: dict[str, list[Event]] = {}
    running: list[tuple[datetime, int, Event]] = []  # (end, tiebreak, event) still open
    for index, event in enumerate(shown):
        while running and running[0][0] <= event.start:
            heapq.heappop(running)
        # Every event still running started no later than this one and ends after it starts.
        for _, _, other in running:
            if other.id != event.id:  # nor does a series clash with itself
                clashes.setdefault(instance_key(other), []).append(event)
                clashes.setdefault(instance_key(event), []).append(other)
        heapq.heappush(running, (event.end, index, event))
    for key, others in clashes.items():
        others.sort(key=_order)
        flags[key] = list(dict.fromkeys(e.id for e in others))
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
    event: Event, user: str, status: PartStat, *, now: datetime, occurrence: str | None = None
) -> tuple[Event, list[Notification]]:
    """Record `user`'s answer to `event`; return the revised event and the notifications to store.

    The organizer is told of every answer. For flat-group events (see `consensus_required`) the last
    acceptance confirms the event and the first decline cancels it; everyone is told of either, and
    of a confirmed event falling back to tentative. Repeating the recorded answer changes nothing and
    notifies nobody, so retries are harmless. Raises `RuleError` for non-participants, for
    "needs-action" (not an answer) and for answers to a cancelled event.

    With `occurrence` (a recurrence-id) the answer is for that occurrence of the series only (see
    `_answer_occurrence`); a `ValidationError` on ``occurrence`` says it is not one.
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
    if occurrence is not None:
        return _answer_occurrence(event, user, current, status, occurrence, now)
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


def _with_override(event: Event, recurrence_id: str, override: Override) -> dict[str, Override]:
    """`event`'s overrides with `override` for `recurrence_id` (none if it changes nothing), bounded:
    every override is copied into each involved user's index entry, so their number is capped."""
    overrides = dict(event.overrides)
    if override.empty:
        overrides.pop(recurrence_id, None)
        return overrides
    if recurrence_id not in overrides and len(overrides) >= MAX_OVERRIDES:
        raise RuleError(
            "too-many-overrides", f"a series may have at most {MAX_OVERRIDES} occurrences of its own"
        )
    overrides[recurrence_id] = override
    return overrides


def occurrence_span(event: Event, recurrence_id: str) -> Interval:
    """Where the occurrence `recurrence_id` of the series `event` is: moved, or at its original start."""
    begin, finish = occurrence_times(
        parse_stored_time(recurrence_id), event.end - event.start, event.overrides.get(recurrence_id)
    )
    return Interval(begin, finish)


def _check_occurrence(event: Event, recurrence_id: str, field: str = "occurrence") -> Override | None:
    """The occurrence's override; raise ValidationError(field) unless it is a live occurrence."""
    if event.recurrence is None:
        raise ValidationError(field, "is only for a recurring event")
    override = event.overrides.get(recurrence_id)
    if not is_occurrence(event.start, event.recurrence, recurrence_id):
        raise ValidationError(field, f"{recurrence_id} is not an occurrence of the event")
    return override


_STATUS_NOTES: Final = {
    EventStatus.CONFIRMED: NotificationKind.CONFIRMED,
    EventStatus.CANCELLED: NotificationKind.CANCELLED,
    EventStatus.TENTATIVE: NotificationKind.CHANGED,
}


def _answer_occurrence(
    event: Event, user: str, series: Participation, status: PartStat, recurrence_id: str, now: datetime
) -> tuple[Event, list[Notification]]:
    """`user`'s answer to one occurrence, kept in its override (and dropped from it when it is the
    series' answer again). A flat-group occurrence is confirmed, cancelled or back to tentative by its
    own answers, and everyone is told; cancelled occurrences take no answers, as cancelled events."""
    override = _check_occurrence(event, recurrence_id)
    if override is not None and override.cancelled:
        raise RuleError("event-cancelled", f"the occurrence {recurrence_id} is cancelled")
    answered = (override.partstats.get(user) if override is not None else None) or series.status
    if answered is status:
        return event, []
    before = _status_at(event, _participants_at(event, override))
    if event.status is EventStatus.CANCELLED or before is EventStatus.CANCELLED:
        raise RuleError("event-cancelled", "the occurrence is cancelled and no longer takes answers")
    partstats = dict(override.partstats) if override is not None else {}
    if status is series.status:
        partstats.pop(user, None)
    else:
        partstats[user] = status
    changed = replace(override or Override(), partstats=partstats)
    revised = event.revised(now, overrides=_with_override(event, recurrence_id, changed))
    what = f"the occurrence of {recurrence_id}"
    notes = _notify(
        revised, NotificationKind.RESPONDED, [event.organizer], now, f"{user} {status.value} {what}"
    )
    after = _status_at(event, _participants_at(event, changed))
    if after is not before:
        notes += _notify(revised, _STATUS_NOTES[after], _everyone(revised), now, f"{what} is {after.value}")
    return revised, notes


def cancel_occurrence(
    event: Event, actor: str, recurrence_id: str, *, now: datetime
) -> tuple[Event, list[Notification]]:
    """The organizer cancels one occurrence (its override says so); every participant is told. Twice
    is a no-op. Raises ValidationError on ``occurrence`` unless it is one."""
    if actor != event.organizer:
        raise RuleError("organizer-only", "only the organizer may cancel an occurrence", forbidden=True)
    override = _check_occurrence(event, recurrence_id)
    if event.status is EventStatus.CANCELLED or (override is not None and override.cancelled):
        return event, []
    overrides = _with_override(event, recurrence_id, replace(override or Override(), cancelled=True))
    revised = event.revised(now, overrides=overrides)
    detail = f"{actor} cancelled the occurrence of {recurrence_id}"
    return revised, _notify(revised, NotificationKind.CANCELLED, revised.participants, now, detail)


def change_occurrence(
    event: Event, actor: str, recurrence_id: str, changes: Override, *, now: datetime
) -> Event | None:
    """`event` with one occurrence moved or its details changed (what `changes` sets), or None when
    that changes nothing. Organizer only; raises ValidationError on ``occurrence`` unless it is a live
    occurrence. The caller tells the participants (`change_notifications`)."""
    if actor != event.organizer:
        raise RuleError("organizer-only", "only the organizer may change an occurrence", forbidden=True)
    override = _check_occurrence(event, recurrence_id) or Override()
    if override.cancelled:
        raise RuleError("event-cancelled", f"the occurrence {recurrence_id} is cancelled")
    merged = replace(
        override,
        **{
            name: getattr(changes, name)
            for name in ("start", "end", "title", "description", "location")
            if getattr(changes, name) is not None
        },
    )
    if merged == override:
        return None
    return event.revised(now, overrides=_with_override(event, recurrence_id, merged))


def prune_overrides(event: Event) -> dict[str, Override]:
    """The overrides of `event` that still name one of its occurrences (after its start or rule changed,
    an override of an occurrence that no longer exists is dropped with its answers)."""
    if event.recurrence is None or not event.overrides:
        return {}
    starts = {
        format_time(t) for t in original_starts(event.start, event.recurrence, horizon_end(event.start))
    }
    return {rid: o for rid, o in event.overrides.items() if rid in starts}


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
    if event.recurrence_id is not None:
        block["recurrence_id"] = event.recurrence_id
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
