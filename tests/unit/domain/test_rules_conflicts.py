"""Which events clash: half-open overlap, commitments that block, and the agenda view's flags."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.domain.model import Event, EventStatus, Participation, PartStat
from agenda.domain.rules import blocks, busy_intervals, conflicts_for, flag_conflicts, overlaps

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def ev(
    event_id: str,
    start: float,
    end: float,
    *,
    organizer: str = "alice",
    status: EventStatus = EventStatus.CONFIRMED,
    participants: dict[str, PartStat] | None = None,
) -> Event:
    return Event(
        id=event_id,
        title=event_id,
        start=at(start),
        end=at(end),
        organizer=organizer,
        created=T0,
        updated=T0,
        status=status,
        participants={user: Participation(s) for user, s in (participants or {}).items()},
    )


# ------------------------------------------------------------------------------------------ overlaps


def test_overlaps_half_open() -> None:
    assert overlaps(at(0), at(2), at(1), at(3))
    assert overlaps(at(1), at(3), at(0), at(2))
    assert overlaps(at(0), at(4), at(1), at(2))  # containment
    assert overlaps(at(0), at(1), at(0), at(1))  # identical


def test_touching_intervals_do_not_overlap() -> None:
    assert not overlaps(at(0), at(1), at(1), at(2))
    assert not overlaps(at(1), at(2), at(0), at(1))


def test_disjoint_and_empty_intervals_do_not_overlap() -> None:
    assert not overlaps(at(0), at(1), at(2), at(3))
    assert not overlaps(at(1), at(1), at(0), at(2))  # an empty interval inside another
    assert not overlaps(at(0), at(2), at(1), at(1))


# ---------------------------------------------------------------------------------------- blocking


def test_blocks_organizer_and_accepted_only() -> None:
    event = ev(
        "e",
        0,
        1,
        participants={
            "bob": PartStat.ACCEPTED,
            "carol": PartStat.TENTATIVE,
            "dan": PartStat.NEEDS_ACTION,
            "erin": PartStat.DECLINED,
        },
    )
    assert blocks("alice", event)
    assert blocks("bob", event)
    assert not blocks("carol", event)
    assert not blocks("dan", event)
    assert not blocks("erin", event)
    assert not blocks("zed", event)


def test_cancelled_event_blocks_nobody() -> None:
    event = ev("e", 0, 1, status=EventStatus.CANCELLED, participants={"bob": PartStat.ACCEPTED})
    assert not blocks("alice", event)
    assert not blocks("bob", event)


def test_tentative_event_still_blocks_committed_users() -> None:
    event = ev("e", 0, 1, status=EventStatus.TENTATIVE, participants={"bob": PartStat.ACCEPTED})
    assert blocks("alice", event)
    assert blocks("bob", event)


def test_conflicts_for_returns_overlapping_commitments_in_start_order() -> None:
    existing = [
        ev("late", 2, 4),
        ev("early", 0, 1.5),
        ev("touching-before", -1, 1 - 0.0),  # ends exactly when the candidate starts
        ev("touching-after", 3, 5),
        ev("cancelled", 1, 3, status=EventStatus.CANCELLED),
        ev("declined", 1, 3, organizer="bob", participants={"alice": PartStat.DECLINED}),
        ev("tentative", 1, 3, organizer="bob", participants={"alice": PartStat.TENTATIVE}),
        ev("unanswered", 1, 3, organizer="bob", participants={"alice": PartStat.NEEDS_ACTION}),
        ev("accepted", 1.5, 2.5, organizer="bob", participants={"alice": PartStat.ACCEPTED}),
        ev("not-mine", 1, 3, organizer="bob"),
    ]
    candidate = ev("new", 1, 3)
    assert conflicts_for("alice", candidate, existing) == ["early", "accepted", "late"]


def test_conflicts_for_excludes_the_candidate_itself() -> None:
    stored = ev("e1", 0, 2)
    moved = ev("e1", 1, 3)
    assert conflicts_for("alice", moved, [stored]) == []
    assert conflicts_for("alice", moved, [stored, ev("e2", 2, 4)]) == ["e2"]


def test_busy_intervals_are_commitments() -> None:
    events = [
        ev("a", 0, 1),
        ev("b", 2, 3, status=EventStatus.CANCELLED),
        ev("c", 4, 5, organizer="bob", participants={"alice": PartStat.TENTATIVE}),
        ev("d", 6, 7, organizer="bob", participants={"alice": PartStat.ACCEPTED}),
    ]
    assert busy_intervals("alice", events) == [(at(0), at(1)), (at(6), at(7))]


# ----------------------------------------------------------------------------------- flag_conflicts


def test_flag_conflicts_lists_every_shown_event() -> None:
    events = [
        ev("a", 0, 2),
        ev("b", 1, 3),
        ev("c", 3, 4),  # touches b only
        ev("d", 0, 5, status=EventStatus.CANCELLED),
        ev("e", 0, 5, organizer="bob", participants={"alice": PartStat.DECLINED}),
        ev("f", 3.5, 6, organizer="bob", participants={"alice": PartStat.TENTATIVE}),
        ev("g", 0, 9, organizer="bob"),  # not alice's
    ]
    assert flag_conflicts("alice", events) == {"a": ["b"], "b": ["a"], "c": ["f"], "f": ["c"]}


def test_flag_conflicts_handles_nesting_and_equal_starts() -> None:
    events = [ev("outer", 0, 10), ev("x", 1, 2), ev("y", 1, 3), ev("z", 9, 11), ev("w", 11, 12)]
    assert flag_conflicts("alice", events) == {
        "outer": ["x", "y", "z"],
        "x": ["outer", "y"],
        "y": ["outer", "x"],
        "z": ["outer"],
        "w": [],
    }


def test_flag_conflicts_accepts_a_generator_and_empty_input() -> None:
    assert flag_conflicts("alice", iter([ev("a", 0, 1), ev("b", 0.5, 2)])) == {"a": ["b"], "b": ["a"]}
    assert flag_conflicts("alice", []) == {}


def test_flag_conflicts_scales() -> None:
    # 20,000 back-to-back events plus one long overlap: a quadratic scan would take minutes.
    events = [ev(f"e{i}", i, i + 1) for i in range(20_000)]
    events.append(ev("long", 10.5, 13.5))
    flags = flag_conflicts("alice", events)
    assert flags["long"] == ["e10", "e11", "e12", "e13"]
    assert flags["e11"] == ["long"]
    assert flags["e5000"] == []


def oracle(user: str, events: list[Event]) -> dict[str, list[str]]:
    order = {e.id: (e.start, e.end, e.id) for e in events}
    shown = [
        e
        for e in events
        if e.status is not EventStatus.CANCELLED and e.partstat(user) not in (None, PartStat.DECLINED)
    ]
    return {
        e.id: sorted(
            (o.id for o in shown if o.id != e.id and max(e.start, o.start) < min(e.end, o.end)),
            key=order.__getitem__,
        )
        for e in shown
    }


def build(
    index: int, start: int, length: int, organizer: str, status: EventStatus, answer: PartStat | None
) -> Event:
    participants = {"alice": Participation(answer)} if organizer == "bob" and answer is not None else {}
    return Event(
        id=f"e{index}",
        title="t",
        start=at(start / 4),
        end=at((start + length) / 4),
        organizer=organizer,
        created=T0,
        updated=T0,
        status=status,
        participants=participants,
    )


# Quarter-hour grid over 12 hours, lengths 0..3 hours: dense enough that overlaps, touching and
# containment are common. Zero-length events are included: they overlap nothing.
agendas = st.lists(
    st.tuples(
        st.integers(0, 48),
        st.integers(0, 12),
        st.sampled_from(["alice", "bob"]),
        st.sampled_from(list(EventStatus)),
        st.none() | st.sampled_from(list(PartStat)),
    ),
    max_size=30,
).map(lambda rows: [build(i, *row) for i, row in enumerate(rows)])


@settings(max_examples=150, deadline=None)
@given(agendas)
def test_flag_conflicts_agrees_with_quadratic_oracle(events: list[Event]) -> None:
    assert flag_conflicts("alice", events) == oracle("alice", events)


@settings(max_examples=100, deadline=None)
@given(agendas, st.integers(0, 48), st.integers(1, 12))
def test_conflicts_for_agrees_with_oracle(events: list[Event], start: int, length: int) -> None:
    candidate = ev("candidate", start / 4, (start + length) / 4)
    expected = {
        e.id
        for e in events
        if e.status is not EventStatus.CANCELLED
        and e.partstat("alice") is PartStat.ACCEPTED
        and max(e.start, candidate.start) < min(e.end, candidate.end)
    }
    assert set(conflicts_for("alice", candidate, events)) == expected
