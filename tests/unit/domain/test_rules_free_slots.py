"""Free slots: the spans where every member is free, at least as long as the meeting."""

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.domain.rules import Interval, free_slots

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iv(start: int, end: int) -> tuple[datetime, datetime]:
    return (at(start), at(end))


def test_no_busy_time_gives_the_whole_range() -> None:
    assert free_slots({}, at(0), at(600), HOUR) == [Interval(at(0), at(600))]
    assert free_slots({"a": [], "b": []}, at(0), at(600), HOUR) == [Interval(at(0), at(600))]


def test_busy_blocks_of_several_members_are_merged() -> None:
    busy = {"a": [iv(60, 120), iv(300, 360)], "b": [iv(90, 180)], "c": [iv(170, 200)]}
    assert free_slots(busy, at(0), at(480), timedelta(minutes=30)) == [
        Interval(at(0), at(60)),
        Interval(at(200), at(300)),
        Interval(at(360), at(480)),
    ]


def test_adjacent_busy_blocks_leave_no_gap() -> None:
    busy = {"a": [iv(60, 120)], "b": [iv(120, 180)]}
    assert free_slots(busy, at(0), at(240), timedelta(minutes=1)) == [
        Interval(at(0), at(60)),
        Interval(at(180), at(240)),
    ]


def test_unsorted_and_nested_busy_blocks() -> None:
    busy = {"a": [iv(200, 220), iv(60, 300), iv(100, 120)]}
    assert free_slots(busy, at(0), at(360), timedelta(minutes=30)) == [
        Interval(at(0), at(60)),
        Interval(at(300), at(360)),
    ]


def test_gaps_shorter_than_duration_are_dropped_and_equal_ones_kept() -> None:
    busy = {"a": [iv(30, 60), iv(89, 120), iv(180, 240)]}
    slots = free_slots(busy, at(0), at(300), timedelta(minutes=30))
    assert slots == [Interval(at(0), at(30)), Interval(at(120), at(180)), Interval(at(240), at(300))]


def test_range_edges() -> None:
    # Busy time touching or crossing the range edges is clipped; outside busy time is ignored.
    busy = {"a": [iv(-60, 0), iv(-30, 30), iv(570, 700), iv(800, 900)], "b": [iv(-500, -400)]}
    assert free_slots(busy, at(0), at(600), HOUR) == [Interval(at(30), at(570))]
    touching = {"a": [iv(-60, 0), iv(600, 660)]}
    assert free_slots(touching, at(0), at(600), HOUR) == [Interval(at(0), at(600))]


def test_fully_busy_or_too_short_range() -> None:
    assert free_slots({"a": [iv(-10, 700)]}, at(0), at(600), HOUR) == []
    assert free_slots({}, at(0), at(59), HOUR) == []
    assert free_slots({}, at(0), at(60), HOUR) == [Interval(at(0), at(60))]


def test_mixed_offsets_are_compared_as_instants() -> None:
    havana = timezone(timedelta(hours=-5))
    busy = {"a": [(datetime(2026, 11, 26, 4, 0, tzinfo=havana), datetime(2026, 11, 26, 5, 0, tzinfo=havana))]}
    slots = free_slots(busy, at(0), at(240), HOUR)  # busy 09:00-10:00 UTC
    assert slots == [Interval(at(0), at(60)), Interval(at(120), at(240))]
    assert all(s.start.tzinfo is UTC for s in slots)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="duration"):
        free_slots({}, at(0), at(60), timedelta(0))
    with pytest.raises(ValueError, match="before"):
        free_slots({}, at(60), at(60), HOUR)
    with pytest.raises(ValueError, match="timezone-aware"):
        free_slots({}, datetime(2026, 1, 1), at(60), HOUR)


def test_scales_to_many_members() -> None:
    busy = {f"m{m}": [iv(d * 1440 + 540 + m % 7, d * 1440 + 600) for d in range(366)] for m in range(100)}
    slots = free_slots(busy, at(0), at(366 * 1440), HOUR)
    assert len(slots) == 367
    assert slots[1] == Interval(at(600), at(1440 + 540))


# ------------------------------------------------------------------------------------ properties

SPAN = 240  # minutes of range; busy blocks may spill 30 minutes past either edge
members = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.lists(st.tuples(st.integers(-30, SPAN + 30), st.integers(0, 90)), max_size=6),
    max_size=4,
)


def busy_from(raw: dict[str, list[tuple[int, int]]]) -> dict[str, list[tuple[datetime, datetime]]]:
    return {m: [iv(s, s + length) for s, length in blocks] for m, blocks in raw.items()}


def free_minutes(raw: dict[str, list[tuple[int, int]]], lo: int, hi: int) -> list[bool]:
    """Oracle: minute i of the range is free iff no busy block of anyone covers [i, i+1)."""
    free = [True] * (hi - lo)
    for blocks in raw.values():
        for start, length in blocks:
            for minute in range(max(start, lo), min(start + length, hi)):
                free[minute - lo] = False
    return free


@settings(max_examples=200, deadline=None)
@given(members, st.integers(0, 60), st.integers(1, SPAN), st.integers(1, 120))
def test_free_slots_properties(
    raw: dict[str, list[tuple[int, int]]], lo: int, width: int, minutes: int
) -> None:
    hi = lo + width
    duration = timedelta(minutes=minutes)
    busy = busy_from(raw)
    slots = free_slots(busy, at(lo), at(hi), duration)

    # Sound: inside the range, long enough, sorted, apart, and clear of every busy interval.
    for slot in slots:
        assert at(lo) <= slot.start < slot.end <= at(hi)
        assert slot.end - slot.start >= duration
        for intervals in busy.values():
            for b_start, b_end in intervals:
                assert not max(slot.start, b_start) < min(slot.end, b_end)
    for earlier, later in itertools.pairwise(slots):
        assert earlier.end < later.start  # not even touching: slots are maximal

    # Complete and maximal: exactly the runs of free minutes that last at least `duration`.
    free = free_minutes(raw, lo, hi)
    runs, run_start = [], None
    for offset, is_free in enumerate([*free, False]):
        if is_free and run_start is None:
            run_start = offset
        elif not is_free and run_start is not None:
            runs.append((run_start, offset))
            run_start = None
    expected = [Interval(at(lo + s), at(lo + e)) for s, e in runs if e - s >= minutes]
    assert slots == expected


@settings(max_examples=100, deadline=None)
@given(members, st.integers(1, 120), st.integers(0, SPAN))
def test_any_free_window_fits_in_a_slot(raw: dict[str, list[tuple[int, int]]], minutes: int, t: int) -> None:
    # The provable converse: a window [t, t+d) in range that meets no busy interval lies within a slot.
    # (A point outside every slot is not necessarily busy: it may sit in a gap shorter than d.)
    busy = busy_from(raw)
    duration = timedelta(minutes=minutes)
    slots = free_slots(busy, at(0), at(SPAN), duration)
    window = (at(t), at(t) + duration)
    if window[1] > at(SPAN):
        return
    clear = all(not max(window[0], s) < min(window[1], e) for v in busy.values() for s, e in v)
    inside = any(slot.start <= window[0] and window[1] <= slot.end for slot in slots)
    assert clear == inside
