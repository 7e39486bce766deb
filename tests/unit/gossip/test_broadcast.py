"""The retransmit-limited queue: newer replaces older, fewest sends first, bounded sends, packets filled."""

from __future__ import annotations

from agenda.gossip.broadcast import BroadcastQueue


def test_an_update_about_a_member_replaces_the_queued_one() -> None:
    q = BroadcastQueue()
    q.queue("a", b"alive-a-1")
    q.take(100, limit=5)
    assert q.transmits("a") == 1
    q.queue("a", b"suspect-a-1")
    assert len(q) == 1
    assert q.transmits("a") == 0  # a new claim starts its own count
    assert q.take(100, limit=5) == [b"suspect-a-1"]


def test_each_update_is_sent_limit_times_then_dropped() -> None:
    q = BroadcastQueue()
    q.queue("a", b"x" * 10)
    sent = [q.take(100, limit=3) for _ in range(5)]
    assert sent == [[b"x" * 10]] * 3 + [[], []]
    assert "a" not in q
    assert len(q) == 0


def test_fewest_transmits_first_then_most_recent() -> None:
    q = BroadcastQueue()
    q.queue("old", b"o" * 10)
    q.take(100, limit=10)  # old: sent once
    q.queue("b", b"b" * 10)
    q.queue("c", b"c" * 10)
    # room for two: the two never sent, newest first; "old" waits.
    assert q.take(22, limit=10) == [b"c" * 10, b"b" * 10]
    # now all three were sent once: the most recently moved up goes first
    assert q.take(11, limit=10) == [b"b" * 10]
    assert q.transmits("old") == 1
    assert q.transmits("b") == 2


def test_take_fills_the_room_and_skips_what_does_not_fit() -> None:
    q = BroadcastQueue()
    q.queue("big", b"B" * 50)
    q.queue("small1", b"s" * 10)
    q.queue("small2", b"t" * 10)
    got = q.take(30, limit=10)  # 30 bytes: both small ones (11 each with the separator), not the big one
    assert sorted(got) == [b"s" * 10, b"t" * 10]
    assert q.transmits("big") == 0
    assert q.take(51, limit=10) == [b"B" * 50]
    assert q.take(5, limit=10) == []  # nothing fits: nothing counted as sent
    assert q.transmits("small1") == 1
