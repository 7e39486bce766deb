"""Flask application factory of the Group Service.

Only reached through the API gateway, on the terms every backend shares (`agenda.common.backend`:
the gateway's secret, then the caller from X-Agenda-User). The rules (who may invite or remove whom,
how a group event fans out, what the privacy mask shows, where the free slots are) are
`agenda.domain.rules`; this module loads, calls and stores.

Decisions: group details and the group agenda are visible to active members only (an invitee sees
the group's name and members, to decide); a group event is checked against the organizer's own
commitments (409 unless allow_conflict=true), never against other members' (their clashes are flagged
in their agendas instead, or they would be able to veto seniors' events in hierarchical groups).
A group event is one transaction, so it may involve at most `MAX_INVITEES` other active members.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import flask

from agenda.calendar import MAX_INVITEES
from agenda.calendar.store import Change, EventStore
from agenda.calendar.views import event_view
from agenda.common.backend import (
    backend_app,
    check_args,
    current_user,
    new_record_id,
    query_flag,
    query_range,
)
from agenda.common.errors import bad_request, conflict, forbidden, json_body, not_found, problem_type
from agenda.domain.model import (
    Event,
    EventKind,
    Group,
    Membership,
    MemberState,
    Notification,
    NotificationKind,
    format_time,
)
from agenda.domain.recurrence import parse_recurrence
from agenda.domain.rules import (
    RuleError,
    blocks,
    busy_intervals,
    check_invite,
    check_remove,
    expand,
    free_slots,
    group_event_participation,
    invitation_notifications,
    visible_block,
)
from agenda.domain.validation import (
    ValidationError,
    validate_event_details,
    validate_group_name,
    validate_level,
    validate_slot_duration,
    validate_username,
)
from agenda.groups.store import GroupNotFound, GroupStore

__all__ = ["GroupDeps", "create_app"]

_EXT: Final = "agenda.groups"
_GROUP_ID: Final = re.compile(r"[0-9a-f]{32}")


@dataclass
class GroupDeps:
    groups: GroupStore
    events: EventStore
    gateway_secret: str
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def _deps() -> GroupDeps:
    return flask.current_app.extensions[_EXT]


def _group(group_id: str, me: str, *, active: bool = True) -> Group:
    if not _GROUP_ID.fullmatch(group_id):
        raise not_found("No such group.")
    try:
        group, _ = _deps().groups.get(group_id)
    except GroupNotFound:
        raise not_found("No such group.") from None
    if me not in group.members:
        raise not_found("No such group.")  # do not reveal groups to outsiders
    if active and not group.is_active(me):
        raise forbidden("Accept the invitation first.", type=problem_type("not-a-member"))
    return group


def _membership_note(group: Group, user: str, detail: str, now: datetime) -> Notification:
    micros = int(now.timestamp() * 1_000_000)
    return Notification(
        id=f"{group.id}:membership:{user}:{micros}",
        user=user,
        kind=NotificationKind.MEMBERSHIP,
        created=now,
        group_id=group.id,
        detail=detail,
    )


def _with_members(group: Group, members: dict[str, Membership]) -> Group:
    return Group(
        id=group.id,
        name=group.name,
        owner=group.owner,
        created=group.created,
        hierarchical=group.hierarchical,
        members=members,
    )


bp = flask.Blueprint("groups", __name__)


@bp.post("/v1/groups")
def create_group() -> Any:
    check_args(set())
    me = current_user()
    body = json_body({"name": str}, {"hierarchical": bool})
    now = _deps().clock()
    group = Group(
        id=new_record_id("group", me),
        name=validate_group_name(body["name"]),
        owner=me,
        created=now,
        hierarchical=body.get("hierarchical", False),
        members={me: Membership(level=0, state=MemberState.ACTIVE)},
    )
    stored = _deps().groups.create(group)
    return stored.to_dict(), 201, {"Location": f"/v1/groups/{stored.id}"}


@bp.get("/v1/groups")
def my_groups() -> Any:
    check_args(set())
    return {"groups": _deps().groups.groups_of(current_user())}


@bp.get("/v1/groups/<group_id>")
def get_group(group_id: str) -> Any:
    check_args(set())
    return _group(group_id, current_user(), active=False).to_dict()


@bp.post("/v1/groups/<group_id>/members")
def invite(group_id: str) -> Any:
    check_args(set())
    me = current_user()
    body = json_body({"username": str}, {"level": int})
    target = validate_username(body["username"])
    group = _group(group_id, me)
    level = validate_level(body["level"]) if "level" in body else None
    if group.hierarchical and level is None:
        raise bad_request("level is required in a hierarchical group", field="level")
    if _deps().events.missing_users([target]):
        raise bad_request(f"username {target} has no account", field="username")

    def mutate(current: Group) -> tuple[Group, list[Notification]]:
        at = level if current.hierarchical and level is not None else 0
        check_invite(current, me, target, at)
        members = dict(current.members)
        members[target] = Membership(level=at, state=MemberState.INVITED, invited_by=me)
        now = _deps().clock()
        note = _membership_note(current, target, f"{me} invites you to {current.name}", now)
        return _with_members(current, members), [note]

    updated = _deps().groups.update(group.id, mutate)
    assert updated is not None  # noqa: S101 - invitations never dissolve a group
    return updated.to_dict(), 201


@bp.post("/v1/groups/<group_id>/membership")
def answer_invitation(group_id: str) -> Any:
    """The invitee's answer: ``{accept: true}`` makes the membership active, ``false`` declines it.

    Declining an invitation removes it (the inviter is told); an active member leaves with
    ``DELETE /v1/groups/{id}/members/{username}`` instead, so ``accept: false`` is a 409 for them.
    """
    check_args(set())
    me = current_user()
    body = json_body({"accept": bool})
    accept = body["accept"]
    group = _group(group_id, me, active=False)

    def mutate(current: Group) -> tuple[Group | None, list[Notification]] | None:
        membership = current.membership(me)
        if membership is None:
            raise RuleError("not-a-member", f"{me} is not invited to the group")
        if membership.state is MemberState.ACTIVE:
            if accept:
                return None  # a retried accept is harmless
            raise RuleError("already-a-member", f"{me} is already a member; leave with DELETE instead")
        told = membership.invited_by or current.owner
        now = _deps().clock()
        members = dict(current.members)
        if accept:
            members[me] = Membership(membership.level, MemberState.ACTIVE, membership.invited_by)
            return _with_members(current, members), [_membership_note(current, told, f"{me} joined", now)]
        del members[me]
        if not members:
            return None, []  # everyone else has left: the group dissolves
        return _with_members(current, members), [_membership_note(current, told, f"{me} declined", now)]

    updated = _deps().groups.update(group.id, mutate)
    if not accept:
        return "", 204
    assert updated is not None  # noqa: S101 - accepting never dissolves a group
    return updated.to_dict()


@bp.delete("/v1/groups/<group_id>/members/<username>")
def remove(group_id: str, username: str) -> Any:
    check_args(set())
    me = current_user()
    group = _group(group_id, me, active=False)

    def mutate(current: Group) -> tuple[Group | None, list[Notification]] | None:
        if username not in current.members:
            return None  # already gone: a retried DELETE is harmless
        check_remove(current, me, username)
        members = {u: m for u, m in current.members.items() if u != username}
        if not members:
            return None, []  # the owner left an empty group: dissolve it
        now = _deps().clock()
        notes = [] if username == me else [_membership_note(current, username, f"{me} removed you", now)]
        return _with_members(current, members), notes

    _deps().groups.update(group.id, mutate)
    return "", 204


@bp.post("/v1/groups/<group_id>/events")
def create_group_event(group_id: str) -> Any:
    check_args({"allow_conflict"})
    allow = query_flag("allow_conflict")
    me = current_user()
    body = json_body(
        {"title": str, "start": str, "end": str},
        {"description": str, "location": str, "visibility": str, "recurrence": dict},
    )
    details = validate_event_details(body)
    recurrence = None
    if "recurrence" in body:
        raw = body["recurrence"]
        zone = _deps().events.recurrence_timezone(me, raw)
        recurrence = parse_recurrence(raw, start=details["start"], end=details["end"], default_timezone=zone)
    group = _group(group_id, me)
    fanout = group_event_participation(group, me)
    if len(fanout.participants) > MAX_INVITEES:
        raise conflict(
            f"a group event may involve at most {MAX_INVITEES} other members",
            type=problem_type("group-too-large"),
        )
    now = _deps().clock()
    event_id = new_record_id(f"group-event {group.id}", me)
    event = Event(
        id=event_id,
        organizer=me,
        created=now,
        updated=now,
        **details,
        group_id=group.id,
        kind=EventKind.GROUP,
        status=fanout.status,
        participants=fanout.participants,
        recurrence=recurrence,
    )
    notes = invitation_notifications(event, now)
    change = Change(event, notes, () if allow else (me,), checked_from=now)
    stored = _deps().events.create(lambda: change, event_id=event_id)
    return event_view(stored, me), 201, {"Location": f"/v1/events/{stored.id}"}


def _members_events(group: Group, start: datetime, end: datetime) -> dict[str, list[Event]]:
    """Each active member's commitments in [start, end): plain events and occurrences of series."""
    return {
        member: [
            e for e in expand(_deps().events.agenda(member, start, end), start, end) if blocks(member, e)
        ]
        for member in group.active_members()
    }


@bp.get("/v1/groups/<group_id>/agenda")
def group_agenda(group_id: str) -> Any:
    check_args({"from", "to"})
    me = current_user()
    start, end = query_range()
    group = _group(group_id, me)
    members = {
        member: [visible_block(me, member, e, group) for e in events]
        for member, events in _members_events(group, start, end).items()
    }
    return {"group_id": group.id, "from": format_time(start), "to": format_time(end), "members": members}


@bp.get("/v1/groups/<group_id>/free")
def group_free(group_id: str) -> Any:
    check_args({"from", "to", "duration"})
    me = current_user()
    start, end = query_range()
    raw = flask.request.args.get("duration", "30")
    if not raw.isdigit():
        raise ValidationError("duration", "must be a whole number of minutes")
    duration = validate_slot_duration(int(raw))
    group = _group(group_id, me)
    busy = {m: busy_intervals(m, events) for m, events in _members_events(group, start, end).items()}
    slots = free_slots(busy, start, end, duration)
    return {"slots": [{"start": format_time(s.start), "end": format_time(s.end)} for s in slots]}


def create_app(deps: GroupDeps) -> flask.Flask:
    app = backend_app("groups", deps.gateway_secret)
    app.extensions[_EXT] = deps
    app.register_blueprint(bp)
    return app
