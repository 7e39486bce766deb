"""Group powers by level, group-event fan-out, and how answers move an event and whom they notify."""

from datetime import UTC, datetime, timedelta

import pytest

from agenda.domain.model import (
    Event,
    EventKind,
    EventStatus,
    Group,
    Membership,
    MemberState,
    NotificationKind,
    Participation,
    PartStat,
)
from agenda.domain.rules import (
    RuleError,
    apply_response,
    can_invite,
    can_remove,
    cancel_event,
    change_notifications,
    check_invite,
    check_remove,
    consensus_required,
    group_event_participation,
    invitation_notifications,
    is_senior,
    notification_id,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
NOW = T0 - timedelta(hours=1)


def hierarchy() -> Group:
    """owner(0) > boss(1) = peer(1) > dev(2) > intern(3); newbie(4) only invited."""
    return Group(
        id="g-h",
        name="Company",
        owner="owner",
        created=T0,
        hierarchical=True,
        members={
            "owner": Membership(0),
            "boss": Membership(1, invited_by="owner"),
            "peer": Membership(1, invited_by="owner"),
            "dev": Membership(2, invited_by="boss"),
            "intern": Membership(3, invited_by="dev"),
            "newbie": Membership(4, MemberState.INVITED, "intern"),
        },
    )


def flat() -> Group:
    return Group(
        id="g-f",
        name="Friends",
        owner="owner",
        created=T0,
        members={
            "owner": Membership(0),
            "ann": Membership(0, invited_by="owner"),
            "ben": Membership(0, invited_by="owner"),
            "cat": Membership(0, MemberState.INVITED, "owner"),
        },
    )


def group_event(group: Group, organizer: str) -> Event:
    fanout = group_event_participation(group, organizer)
    return Event(
        id="ev1",
        title="Meeting",
        start=T0,
        end=T0 + timedelta(hours=1),
        organizer=organizer,
        created=NOW,
        updated=NOW,
        group_id=group.id,
        kind=EventKind.GROUP,
        status=fanout.status,
        participants=fanout.participants,
    )


# ------------------------------------------------------------------------------------------ invite


@pytest.mark.parametrize(
    ("actor", "level", "allowed"),
    [
        ("owner", 1, True),
        ("owner", 0, False),  # nobody creates a second level 0
        ("boss", 2, True),
        ("boss", 1, False),  # equal level: no peers
        ("boss", 0, False),
        ("dev", 3, True),
        ("dev", 2, False),
        ("intern", 4, True),
        ("intern", 3, False),
        ("newbie", 5, False),  # invited, not yet active
        ("stranger", 9, False),
    ],
)
def test_hierarchical_invite_only_strictly_below(actor: str, level: int, allowed: bool) -> None:
    assert can_invite(hierarchy(), actor, level) is allowed


@pytest.mark.parametrize(
    ("actor", "allowed"), [("owner", True), ("ann", False), ("cat", False), ("zed", False)]
)
def test_flat_invite_owner_only(actor: str, allowed: bool) -> None:
    assert can_invite(flat(), actor, 0) is allowed


def test_check_invite_reasons() -> None:
    with pytest.raises(RuleError) as caught:
        check_invite(hierarchy(), "boss", "x", 1)
    assert caught.value.code == "level-too-senior"
    assert caught.value.forbidden
    with pytest.raises(RuleError) as caught:
        check_invite(flat(), "ann", "x", 0)
    assert caught.value.code == "owner-only"
    with pytest.raises(RuleError) as caught:
        check_invite(hierarchy(), "newbie", "x", 9)
    assert caught.value.code == "not-a-member"
    with pytest.raises(RuleError) as caught:
        check_invite(hierarchy(), "owner", "dev", 5)
    assert caught.value.code == "already-member"
    assert not caught.value.forbidden
    check_invite(hierarchy(), "owner", "someone", 5)


def test_invite_refused_when_group_full() -> None:
    members = {"owner": Membership(0)} | {f"user{i:03d}": Membership(1) for i in range(499)}
    full = Group(id="g", name="Big", owner="owner", created=T0, hierarchical=True, members=members)
    with pytest.raises(RuleError) as caught:
        check_invite(full, "owner", "one-more", 1)
    assert caught.value.code == "group-full"
    almost = Group(id="g", name="Big", owner="owner", created=T0, members=dict(list(members.items())[:499]))
    check_invite(almost, "owner", "one-more", 0)


# ------------------------------------------------------------------------------------------ remove


@pytest.mark.parametrize(
    ("actor", "target", "allowed"),
    [
        ("owner", "boss", True),
        ("owner", "newbie", True),  # withdrawing an invitation
        ("boss", "dev", True),
        ("boss", "intern", True),
        ("boss", "peer", False),  # equal level
        ("boss", "owner", False),
        ("dev", "boss", False),
        ("intern", "newbie", True),
        ("newbie", "intern", False),  # invitees have no powers
        ("stranger", "intern", False),
        ("dev", "dev", True),  # leaving
        ("newbie", "newbie", True),  # declining the invitation
        ("owner", "owner", False),  # others remain
        ("owner", "ghost", False),  # not a member
    ],
)
def test_hierarchical_remove(actor: str, target: str, allowed: bool) -> None:
    assert can_remove(hierarchy(), actor, target) is allowed


@pytest.mark.parametrize(
    ("actor", "target", "allowed"),
    [
        ("owner", "ann", True),
        ("owner", "cat", True),
        ("ann", "ben", False),
        ("ann", "owner", False),
        ("ann", "ann", True),
        ("cat", "cat", True),
        ("owner", "owner", False),
    ],
)
def test_flat_remove(actor: str, target: str, allowed: bool) -> None:
    assert can_remove(flat(), actor, target) is allowed


def test_owner_may_leave_when_alone() -> None:
    alone = Group(id="g", name="Solo", owner="owner", created=T0, members={"owner": Membership(0)})
    assert can_remove(alone, "owner", "owner")


def test_check_remove_reasons() -> None:
    cases = [
        (hierarchy(), "owner", "owner", "owner-cannot-leave", False),
        (hierarchy(), "boss", "owner", "owner-cannot-be-removed", True),
        (hierarchy(), "boss", "peer", "level-too-senior", True),
        (flat(), "ann", "ben", "owner-only", True),
        (flat(), "zed", "ben", "not-a-member", True),
        (flat(), "owner", "zed", "not-a-member", False),
    ]
    for group, actor, target, code, forbidden in cases:
        with pytest.raises(RuleError) as caught:
            check_remove(group, actor, target)
        assert (caught.value.code, caught.value.forbidden) == (code, forbidden), (actor, target)


def test_is_senior_is_strict_and_hierarchical_only() -> None:
    group = hierarchy()
    assert is_senior(group, "owner", "boss")
    assert is_senior(group, "boss", "newbie")  # seniority over an invitee's intended level
    assert not is_senior(group, "boss", "peer")
    assert not is_senior(group, "dev", "boss")
    assert not is_senior(group, "newbie", "owner")
    assert not is_senior(group, "zed", "dev")
    assert not is_senior(group, "owner", "zed")
    assert not is_senior(flat(), "owner", "ann")


# ------------------------------------------------------------------------------------------ fan-out


def test_hierarchical_fanout_commits_juniors_and_invites_peers_and_seniors() -> None:
    fanout = group_event_participation(hierarchy(), "boss")
    assert fanout.status is EventStatus.CONFIRMED
    assert fanout.participants == {
        "owner": Participation(PartStat.NEEDS_ACTION, 0),
        "peer": Participation(PartStat.NEEDS_ACTION, 1),
        "dev": Participation(PartStat.ACCEPTED, 2),
        "intern": Participation(PartStat.ACCEPTED, 3),
    }  # newbie is only invited to the group: no events yet


def test_hierarchical_fanout_from_owner_and_from_bottom() -> None:
    from_owner = group_event_participation(hierarchy(), "owner").participants
    assert {p.status for p in from_owner.values()} == {PartStat.ACCEPTED}
    from_intern = group_event_participation(hierarchy(), "intern").participants
    assert {p.status for p in from_intern.values()} == {PartStat.NEEDS_ACTION}


def test_flat_fanout_invites_every_other_active_member() -> None:
    fanout = group_event_participation(flat(), "ann")
    assert fanout.status is EventStatus.TENTATIVE
    assert fanout.participants == {"owner": Participation(), "ben": Participation()}


def test_flat_fanout_alone_is_confirmed() -> None:
    alone = Group(id="g", name="Solo", owner="owner", created=T0, members={"owner": Membership(0)})
    fanout = group_event_participation(alone, "owner")
    assert (fanout.participants, fanout.status) == ({}, EventStatus.CONFIRMED)


def test_fanout_refuses_non_members() -> None:
    with pytest.raises(RuleError, match="not an active member"):
        group_event_participation(flat(), "cat")


def test_consensus_required_only_for_flat_group_events() -> None:
    assert consensus_required(group_event(flat(), "owner"))
    assert not consensus_required(group_event(hierarchy(), "boss"))
    appointment = group_event(flat(), "owner")
    assert not consensus_required(Event(**{**_fields(appointment), "kind": EventKind.APPOINTMENT}))


def _fields(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in Event.__dataclass_fields__}


def test_invitation_notifications() -> None:
    notes = invitation_notifications(group_event(hierarchy(), "boss"), NOW)
    assert [(n.user, n.kind) for n in notes] == [
        ("owner", NotificationKind.INVITED),
        ("peer", NotificationKind.INVITED),
        ("dev", NotificationKind.CONFIRMED),
        ("intern", NotificationKind.CONFIRMED),
    ]
    assert all(n.event_id == "ev1" and n.group_id == "g-h" and n.created == NOW for n in notes)


# ------------------------------------------------------------------------------------------- RSVPs


def kinds(notes: list) -> list[tuple[str, NotificationKind]]:
    return sorted((n.user, n.kind) for n in notes)


def test_flat_event_confirms_after_last_accept() -> None:
    event = group_event(flat(), "owner")
    later = NOW + timedelta(minutes=1)
    event, notes = apply_response(event, "ann", PartStat.ACCEPTED, now=later)
    assert event.status is EventStatus.TENTATIVE
    assert event.sequence == 1
    assert event.updated == later
    assert kinds(notes) == [("owner", NotificationKind.RESPONDED)]
    assert notes[0].detail == "ann accepted"
    event, notes = apply_response(event, "ben", PartStat.ACCEPTED, now=later)
    assert event.status is EventStatus.CONFIRMED
    assert event.sequence == 2
    assert kinds(notes) == [
        ("ann", NotificationKind.CONFIRMED),
        ("ben", NotificationKind.CONFIRMED),
        ("owner", NotificationKind.CONFIRMED),
        ("owner", NotificationKind.RESPONDED),
    ]


def test_flat_event_tentative_answer_keeps_it_tentative() -> None:
    event = group_event(flat(), "owner")
    event, _ = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW)
    event, notes = apply_response(event, "ben", PartStat.TENTATIVE, now=NOW)
    assert event.status is EventStatus.TENTATIVE
    assert kinds(notes) == [("owner", NotificationKind.RESPONDED)]


def test_flat_event_confirmed_falls_back_to_tentative() -> None:
    event = group_event(flat(), "owner")
    event, _ = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW)
    event, _ = apply_response(event, "ben", PartStat.ACCEPTED, now=NOW)
    event, notes = apply_response(event, "ben", PartStat.TENTATIVE, now=NOW)
    assert event.status is EventStatus.TENTATIVE
    assert (("ann", NotificationKind.CHANGED)) in kinds(notes)


def test_flat_event_cancelled_on_first_decline_and_later_answers_refused() -> None:
    event = group_event(flat(), "owner")
    event, _ = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW)
    event, notes = apply_response(event, "ben", PartStat.DECLINED, now=NOW)
    assert event.status is EventStatus.CANCELLED
    assert kinds(notes) == [
        ("ann", NotificationKind.CANCELLED),
        ("ben", NotificationKind.CANCELLED),
        ("owner", NotificationKind.CANCELLED),
        ("owner", NotificationKind.RESPONDED),
    ]
    with pytest.raises(RuleError) as caught:
        apply_response(event, "ann", PartStat.DECLINED, now=NOW)
    assert caught.value.code == "event-cancelled"
    assert not caught.value.forbidden
    with pytest.raises(RuleError):
        apply_response(event, "ben", PartStat.ACCEPTED, now=NOW)  # no un-declining a cancelled event


def test_flat_event_decline_after_confirmation_cancels() -> None:
    event = group_event(flat(), "owner")
    event, _ = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW)
    event, _ = apply_response(event, "ben", PartStat.ACCEPTED, now=NOW)
    event, _ = apply_response(event, "ann", PartStat.DECLINED, now=NOW)
    assert event.status is EventStatus.CANCELLED


def test_repeated_answer_is_a_no_op_even_when_cancelled() -> None:
    event = group_event(flat(), "owner")
    event, _ = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW)
    same, notes = apply_response(event, "ann", PartStat.ACCEPTED, now=NOW + timedelta(hours=1))
    assert same is event
    assert notes == []
    cancelled, _ = apply_response(event, "ben", PartStat.DECLINED, now=NOW)
    retried, notes = apply_response(cancelled, "ben", PartStat.DECLINED, now=NOW)
    assert retried is cancelled
    assert notes == []


def test_hierarchical_answers_never_change_status() -> None:
    event = group_event(hierarchy(), "boss")
    event, notes = apply_response(event, "owner", PartStat.DECLINED, now=NOW)
    assert event.status is EventStatus.CONFIRMED
    assert event.participants["owner"] == Participation(PartStat.DECLINED, 0)
    assert kinds(notes) == [("boss", NotificationKind.RESPONDED)]
    event, notes = apply_response(event, "dev", PartStat.DECLINED, now=NOW)  # a junior may still say so
    assert event.status is EventStatus.CONFIRMED
    assert kinds(notes) == [("boss", NotificationKind.RESPONDED)]


def test_appointment_answers_are_recorded_only() -> None:
    event = Event(
        id="ap",
        title="1:1",
        start=T0,
        end=T0 + timedelta(hours=1),
        organizer="alice",
        created=NOW,
        updated=NOW,
        kind=EventKind.APPOINTMENT,
        participants={"bob": Participation()},
    )
    event, notes = apply_response(event, "bob", PartStat.DECLINED, now=NOW)
    assert event.status is EventStatus.CONFIRMED
    assert event.partstat("bob") is PartStat.DECLINED
    assert kinds(notes) == [("alice", NotificationKind.RESPONDED)]


def test_response_refusals() -> None:
    event = group_event(flat(), "owner")
    with pytest.raises(RuleError) as caught:
        apply_response(event, "zed", PartStat.ACCEPTED, now=NOW)
    assert (caught.value.code, caught.value.forbidden) == ("not-a-participant", True)
    with pytest.raises(RuleError, match="organizes"):
        apply_response(event, "owner", PartStat.ACCEPTED, now=NOW)
    with pytest.raises(RuleError) as caught:
        apply_response(event, "ann", PartStat.NEEDS_ACTION, now=NOW)
    assert caught.value.code == "not-an-answer"


def test_response_accepts_plain_strings() -> None:
    event, _ = apply_response(group_event(flat(), "owner"), "ann", "accepted", now=NOW)  # type: ignore[arg-type]
    assert event.partstat("ann") is PartStat.ACCEPTED


def test_notification_ids_are_deterministic_and_distinct() -> None:
    event = group_event(flat(), "owner")
    _, first = apply_response(event, "ann", PartStat.DECLINED, now=NOW)
    _, again = apply_response(event, "ann", PartStat.DECLINED, now=NOW + timedelta(seconds=5))
    assert [n.id for n in first] == [n.id for n in again]  # a retried transaction rewrites, not duplicates
    assert len({n.id for n in first}) == len(first)
    assert first[0].id == notification_id("ev1", 1, first[0].kind, first[0].user)


def test_change_notifications_tell_each_participant_once_under_the_revision() -> None:
    event = group_event(flat(), "owner")
    revised = event.revised(NOW, title="Moved")
    notes = change_notifications(revised, "owner", NOW)
    assert sorted(n.user for n in notes) == sorted(revised.participants)  # the organizer is not told
    assert {n.kind for n in notes} == {NotificationKind.CHANGED}
    assert all(n.detail == "owner changed the event" and n.event_id == revised.id for n in notes)
    first = notes[0]
    assert first.id == notification_id(revised.id, revised.sequence, NotificationKind.CHANGED, first.user)


def test_cancel_event() -> None:
    event = group_event(flat(), "owner")
    with pytest.raises(RuleError) as caught:
        cancel_event(event, "ann", now=NOW)
    assert caught.value.code == "organizer-only"
    cancelled, notes = cancel_event(event, "owner", now=NOW)
    assert cancelled.status is EventStatus.CANCELLED
    assert cancelled.sequence == event.sequence + 1
    assert kinds(notes) == [("ann", NotificationKind.CANCELLED), ("ben", NotificationKind.CANCELLED)]
    assert cancel_event(cancelled, "owner", now=NOW) == (cancelled, [])
