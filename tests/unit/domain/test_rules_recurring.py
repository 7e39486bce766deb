"""The rules on occurrences: expansion into instances, conflicts (within the horizon), flags, free
slots, privacy, and answering, changing or cancelling one occurrence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agenda.domain.model import (
    Event,
    EventKind,
    EventStatus,
    Group,
    Membership,
    NotificationKind,
    Participation,
    PartStat,
    Visibility,
)
from agenda.domain.recurrence import Override, Recurrence, parse_rrule
from agenda.domain.rules import (
    CONFLICT_HORIZON,
    RuleError,
    apply_response,
    blocks,
    busy_intervals,
    cancel_occurrence,
    change_occurrence,
    conflict_window,
    conflicts_for,
    expand,
    flag_conflicts,
    free_slots,
    instances,
    prune_overrides,
    visible_block,
)
from agenda.domain.validation import ValidationError

MONDAY = datetime(2031, 1, 6, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
NOW = datetime(2031, 1, 1, tzinfo=UTC)
SECOND = "2031-01-13T09:00:00Z"  # the second Monday


def weekly(
    event_id: str = "series",
    rule: str = "FREQ=WEEKLY",
    start: datetime = MONDAY,
    participants: dict[str, PartStat] | None = None,
    overrides: dict[str, Override] | None = None,
    **fields: object,
) -> Event:
    return Event(
        id=event_id,
        title="Standup",
        start=start,
        end=start + HOUR,
        organizer=fields.pop("organizer", "alice"),  # type: ignore[arg-type]
        created=NOW,
        updated=NOW,
        participants={u: Participation(s) for u, s in (participants or {}).items()},
        recurrence=Recurrence(parse_rrule(rule).text()),
        overrides=overrides or {},
        **fields,  # type: ignore[arg-type]
    )


def plain(event_id: str, start: datetime, hours: float = 1, organizer: str = "alice") -> Event:
    return Event(
        id=event_id,
        title=event_id,
        start=start,
        end=start + timedelta(hours=hours),
        organizer=organizer,
        created=NOW,
        updated=NOW,
    )


# ------------------------------------------------------------------------------------- instances


def test_a_series_is_seen_as_its_occurrences_with_their_own_details_and_answers() -> None:
    series = weekly(
        participants={"bob": PartStat.ACCEPTED},
        overrides={SECOND: Override(title="Retro", location="Room 2", partstats={"bob": PartStat.DECLINED})},
    )
    seen = instances(series, MONDAY, MONDAY + 3 * WEEK)
    assert [(e.id, e.recurrence_id, e.start) for e in seen] == [
        ("series", "2031-01-06T09:00:00Z", MONDAY),
        ("series", SECOND, MONDAY + WEEK),
        ("series", "2031-01-20T09:00:00Z", MONDAY + 2 * WEEK),
    ]
    assert (seen[1].title, seen[1].location, seen[0].title) == ("Retro", "Room 2", "Standup")
    assert [e.partstat("bob") for e in seen] == [PartStat.ACCEPTED, PartStat.DECLINED, PartStat.ACCEPTED]
    assert [blocks("bob", e) for e in seen] == [True, False, True]
    assert all(e.overrides == {} and e.recurrence == series.recurrence for e in seen)


def test_expand_keeps_a_plain_agendas_order_and_sorts_when_a_series_joins() -> None:
    later, earlier = plain("b", MONDAY + 2 * HOUR), plain("a", MONDAY + HOUR)
    assert expand([later, earlier], MONDAY, MONDAY + DAY) == [later, earlier]  # as read: nothing sorted
    mixed = expand([plain("x", MONDAY + WEEK + 3 * HOUR), weekly()], MONDAY, MONDAY + 2 * WEEK)
    assert [(e.id, e.start) for e in mixed] == [
        ("series", MONDAY),
        ("series", MONDAY + WEEK),
        ("x", MONDAY + WEEK + 3 * HOUR),
    ]
    assert expand([plain("gone", MONDAY - DAY)], MONDAY, MONDAY + DAY) == []


# ------------------------------------------------------------------------------------- conflicts


def test_flags_name_the_series_on_the_occurrence_that_clashes_only() -> None:
    events = expand([weekly(), plain("dentist", MONDAY + WEEK + HOUR / 2)], MONDAY, MONDAY + 3 * WEEK)
    flags = flag_conflicts("alice", events)
    assert flags == {
        "series@2031-01-06T09:00:00Z": [],
        f"series@{SECOND}": ["dentist"],
        "dentist": ["series"],
        "series@2031-01-20T09:00:00Z": [],
    }


def test_a_plain_candidate_clashes_with_an_occurrence_of_a_series_that_began_long_ago() -> None:
    old = weekly(start=datetime(2025, 1, 6, 9, tzinfo=UTC))
    assert conflicts_for("alice", plain("new", MONDAY + HOUR / 2), [old]) == ["series"]
    assert conflicts_for("alice", plain("new", MONDAY + 2 * HOUR), [old]) == []


def test_a_candidate_series_is_checked_within_its_horizon_only() -> None:
    series = weekly()
    near = plain("near", MONDAY + 30 * WEEK)
    far = plain("far", MONDAY + 60 * WEEK)  # beyond the 366 days from the start
    assert conflicts_for("alice", series, [far, near]) == ["near"]
    assert conflict_window(series) == (MONDAY, MONDAY + CONFLICT_HORIZON)
    # Checked from now when the series began earlier: then the far clash is inside the window.
    now = MONDAY + 40 * WEEK
    assert conflict_window(series, now) == (now, now + CONFLICT_HORIZON)
    assert conflicts_for("alice", series, [far, near], window=conflict_window(series, now)) == ["far"]


def test_only_occurrences_that_commit_the_user_are_checked_and_a_series_never_clashes_with_itself() -> None:
    declined_there = weekly(
        organizer="bob",
        participants={"alice": PartStat.ACCEPTED},
        overrides={SECOND: Override(partstats={"alice": PartStat.DECLINED})},
    )
    mine = plain("mine", MONDAY + WEEK)
    assert conflicts_for("alice", declined_there, [mine]) == []
    assert conflicts_for("alice", declined_there, [plain("other", MONDAY)]) == ["other"]
    assert conflicts_for("alice", weekly(), [weekly()]) == []


def test_two_series_clash_where_their_occurrences_meet() -> None:
    mondays = weekly("mondays")
    saturday = MONDAY + 5 * DAY + HOUR / 2
    weekend = weekly("daily", rule="FREQ=DAILY;COUNT=2", start=saturday)  # Saturday, Sunday 09:30
    assert conflicts_for("alice", weekend, [mondays]) == []
    long_weekend = weekly("daily", rule="FREQ=DAILY;COUNT=3", start=saturday)  # and Monday 09:30
    assert conflicts_for("alice", long_weekend, [mondays]) == ["mondays"]


def test_busy_intervals_and_free_slots_see_each_occurrence() -> None:
    day = (MONDAY - 9 * HOUR, MONDAY + 15 * HOUR)
    events = expand([weekly(rule="FREQ=DAILY")], *day)
    busy = busy_intervals("alice", events)
    assert busy == [(MONDAY, MONDAY + HOUR)]
    slots = free_slots({"alice": busy}, *day, timedelta(hours=2))
    assert [(s.start, s.end) for s in slots] == [(day[0], MONDAY), (MONDAY + HOUR, day[1])]


def test_a_masked_occurrence_hides_what_it_is_and_a_visible_one_says_which_it_is() -> None:
    group = Group(
        id="g",
        name="G",
        owner="alice",
        created=NOW,
        members={"alice": Membership(0), "carol": Membership(0)},
    )
    occurrence = instances(weekly(), MONDAY, MONDAY + HOUR)[0]
    assert visible_block("carol", "alice", occurrence, group) == {
        "start": "2031-01-06T09:00:00Z",
        "end": "2031-01-06T10:00:00Z",
        "busy": True,
    }
    public = instances(weekly(visibility=Visibility.PUBLIC), MONDAY, MONDAY + HOUR)[0]
    assert visible_block("carol", "alice", public, group)["recurrence_id"] == "2031-01-06T09:00:00Z"


# ------------------------------------------------------------------------------ one occurrence


def test_declining_one_occurrence_keeps_the_series_and_tells_the_organizer() -> None:
    series = weekly(participants={"bob": PartStat.ACCEPTED})
    revised, notes = apply_response(series, "bob", PartStat.DECLINED, now=NOW, occurrence=SECOND)
    assert revised.overrides == {SECOND: Override(partstats={"bob": PartStat.DECLINED})}
    assert (revised.participants["bob"].status, revised.sequence) == (PartStat.ACCEPTED, 1)
    assert [(n.user, n.kind, n.detail) for n in notes] == [
        ("alice", NotificationKind.RESPONDED, f"bob declined the occurrence of {SECOND}")
    ]
    assert apply_response(revised, "bob", PartStat.DECLINED, now=NOW, occurrence=SECOND) == (revised, [])
    # Answering as the series does again drops the override.
    back, _ = apply_response(revised, "bob", PartStat.ACCEPTED, now=NOW, occurrence=SECOND)
    assert back.overrides == {}


def test_an_answer_names_the_occurrence_field_when_there_is_no_such_occurrence() -> None:
    series = weekly(participants={"bob": PartStat.ACCEPTED})
    single = replace(plain("p", MONDAY), participants={"bob": Participation()})
    for target, occurrence in ((series, "2031-01-14T09:00:00Z"), (single, SECOND)):
        with pytest.raises(ValidationError) as caught:
            apply_response(target, "bob", PartStat.DECLINED, now=NOW, occurrence=occurrence)
        assert caught.value.field == "occurrence"


def test_a_flat_group_occurrence_is_decided_by_its_own_answers() -> None:
    series = weekly(
        kind=EventKind.GROUP,
        group_id="g",
        status=EventStatus.CONFIRMED,
        participants={"bob": PartStat.ACCEPTED, "carol": PartStat.ACCEPTED},
    )
    revised, notes = apply_response(series, "bob", PartStat.DECLINED, now=NOW, occurrence=SECOND)
    assert revised.status is EventStatus.CONFIRMED
    statuses = [e.status for e in instances(revised, MONDAY, MONDAY + 3 * WEEK)]
    assert statuses == [EventStatus.CONFIRMED, EventStatus.CANCELLED, EventStatus.CONFIRMED]
    assert {(n.user, n.kind) for n in notes if n.kind is NotificationKind.CANCELLED} == {
        ("alice", NotificationKind.CANCELLED),
        ("bob", NotificationKind.CANCELLED),
        ("carol", NotificationKind.CANCELLED),
    }
    with pytest.raises(RuleError) as caught:
        apply_response(revised, "carol", PartStat.TENTATIVE, now=NOW, occurrence=SECOND)
    assert caught.value.code == "event-cancelled"


def test_the_organizer_cancels_and_moves_single_occurrences() -> None:
    series = weekly(participants={"bob": PartStat.ACCEPTED})
    with pytest.raises(RuleError):
        cancel_occurrence(series, "bob", SECOND, now=NOW)
    cancelled, notes = cancel_occurrence(series, "alice", SECOND, now=NOW)
    assert [e.start for e in instances(cancelled, MONDAY, MONDAY + 3 * WEEK)] == [MONDAY, MONDAY + 2 * WEEK]
    assert [(n.user, n.kind) for n in notes] == [("bob", NotificationKind.CANCELLED)]
    assert cancel_occurrence(cancelled, "alice", SECOND, now=NOW) == (cancelled, [])
    with pytest.raises(RuleError):
        change_occurrence(cancelled, "alice", SECOND, Override(title="x"), now=NOW)

    later = Override(start=MONDAY + WEEK + 5 * HOUR, end=MONDAY + WEEK + 6 * HOUR)
    moved = change_occurrence(series, "alice", SECOND, later, now=NOW)
    assert moved is not None
    assert [e.start for e in instances(moved, MONDAY + WEEK, MONDAY + WEEK + DAY)] == [later.start]
    assert change_occurrence(moved, "alice", SECOND, later, now=NOW) is None


def test_overrides_of_occurrences_that_no_longer_exist_are_pruned() -> None:
    series = weekly(overrides={SECOND: Override(title="x"), "2031-01-20T09:00:00Z": Override(title="y")})
    assert prune_overrides(series) == series.overrides
    shorter = replace(series, recurrence=Recurrence("FREQ=WEEKLY;COUNT=2"))
    assert prune_overrides(shorter) == {SECOND: Override(title="x")}
