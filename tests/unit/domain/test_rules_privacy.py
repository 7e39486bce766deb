"""What a member's event reveals to another member in the group agenda view."""

from datetime import UTC, datetime, timedelta

import pytest

from agenda.domain.model import Event, Group, Membership, MemberState, Participation, Visibility
from agenda.domain.rules import visible_block

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MASK = {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T11:00:00Z", "busy": True}


def hierarchy() -> Group:
    return Group(
        id="g",
        name="Company",
        owner="owner",
        created=T0,
        hierarchical=True,
        members={
            "owner": Membership(0),
            "boss": Membership(1),
            "peer": Membership(1),
            "dev": Membership(2),
            "pending": Membership(0 + 1, MemberState.INVITED),
        },
    )


def flat() -> Group:
    return Group(
        id="f",
        name="Friends",
        owner="owner",
        created=T0,
        members={"owner": Membership(0), "boss": Membership(0), "peer": Membership(0), "dev": Membership(0)},
    )


def event_of(member: str, visibility: Visibility = Visibility.PRIVATE, **extra: object) -> Event:
    return Event(
        id="e1",
        title="Dentist",
        description="root canal",
        location="Clinic",
        start=T0,
        end=T0 + timedelta(hours=1),
        organizer=member,
        created=T0,
        updated=T0,
        visibility=visibility,
        **extra,  # type: ignore[arg-type]
    )


def is_full(block: dict) -> bool:
    return block.get("title") == "Dentist"


def test_full_block_shape() -> None:
    block = visible_block("boss", "boss", event_of("boss"), hierarchy())
    assert block["id"] == "e1"
    assert block["title"] == "Dentist"
    assert block["description"] == "root canal"
    assert block["location"] == "Clinic"
    assert block["start"] == "2026-11-26T10:00:00Z"
    assert block["end"] == "2026-11-26T11:00:00Z"
    assert block["busy"] is True
    assert "participants" not in block  # who else answered what is not the viewer's business


def test_masked_block_shape() -> None:
    assert visible_block("peer", "boss", event_of("boss"), hierarchy()) == MASK


@pytest.mark.parametrize(
    ("viewer", "member", "full"),
    [
        ("boss", "boss", True),  # oneself
        ("owner", "boss", True),  # strictly more senior
        ("owner", "dev", True),
        ("boss", "dev", True),
        ("peer", "boss", False),  # same level
        ("dev", "boss", False),  # junior
        ("dev", "owner", False),
        ("pending", "dev", False),  # invitees have no seniority yet
        ("stranger", "dev", False),
    ],
)
def test_private_events_in_hierarchical_group(viewer: str, member: str, full: bool) -> None:
    assert is_full(visible_block(viewer, member, event_of(member), hierarchy())) is full


@pytest.mark.parametrize(
    ("viewer", "member", "full"),
    [("boss", "boss", True), ("owner", "boss", False), ("boss", "owner", False), ("peer", "dev", False)],
)
def test_private_events_in_flat_group(viewer: str, member: str, full: bool) -> None:
    assert is_full(visible_block(viewer, member, event_of(member), flat())) is full


@pytest.mark.parametrize("group", [hierarchy(), flat()])
@pytest.mark.parametrize("viewer", ["dev", "peer", "stranger"])
def test_public_events_visible_to_all(group: Group, viewer: str) -> None:
    assert is_full(visible_block(viewer, "boss", event_of("boss", Visibility.PUBLIC), group))


def test_participant_sees_event_they_take_part_in() -> None:
    # dev is junior to boss but invited to boss's private event: they already have it in their agenda.
    event = event_of("boss", participants={"dev": Participation()})
    assert is_full(visible_block("dev", "boss", event, hierarchy()))
    assert is_full(visible_block("dev", "boss", event, flat()))


def test_viewing_another_participants_copy() -> None:
    # The member is a participant (not the organizer) of someone else's private event.
    event = event_of("owner", participants={"boss": Participation()})
    assert visible_block("peer", "boss", event, hierarchy()) == MASK
    assert is_full(visible_block("owner", "boss", event, hierarchy()))
