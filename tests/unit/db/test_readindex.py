"""ReadIndex: the decision logic (pure) and the transport's stamps and echoes that feed it."""

from __future__ import annotations

from typing import Any

import pytest

from agenda.db.durability import DurableFileJournal
from agenda.db.pysyncobj_adapter import TransportBase
from agenda.db.readindex import Once, ReadIndex, majority_echoed, term_floor
from agenda.db.transport import SEQ_KEY, DurableTransport

OK = "ok"
VOTERS = ("b", "c", "d", "e")  # the leader is "a": three of five make a majority


class Outcome:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, result: Any, error: Any) -> None:
        self.calls.append((result, error))


def tracker() -> ReadIndex:
    return ReadIndex(OK, fallback_after=0.2, forget_after=3.0)


def begin(reads: ReadIndex, done: Outcome, *, seq: int = 7, commit_index: int = 100) -> Once:
    once = Once(done)
    reads.begin(term=3, commit_index=commit_index, seq=seq, now=10.0, done=once)
    return once


def settle(reads: ReadIndex, **overrides: Any) -> list[Any]:
    state = {"now": 10.0, "leading": True, "term": 3, "applied": 100, "voters": VOTERS, "acked": {}}
    state.update(overrides)
    return reads.settle(**state)


def test_majority_counts_the_leader_and_the_voters_at_or_past_the_stamp() -> None:
    assert not majority_echoed(VOTERS, {}, 0)
    assert not majority_echoed(VOTERS, {"b": 5}, 5)  # 2 of 5
    assert majority_echoed(VOTERS, {"b": 5, "c": 9}, 5)  # 3 of 5
    assert not majority_echoed(VOTERS, {"b": 4, "c": 9, "x": 9}, 5)  # a non-voter does not count
    assert majority_echoed(("b",), {"b": 0}, 0)  # 2 of 2
    assert not majority_echoed(("b",), {}, 0)
    assert majority_echoed((), {}, 0)  # a single member is its own majority


def test_stamps_of_a_later_term_are_above_every_stamp_of_an_earlier_one() -> None:
    assert term_floor(0) == 0
    assert term_floor(4) > term_floor(3) + 10**12
    assert term_floor(2**20) < 2**63  # a signed 64-bit stamp for a million terms


def test_once_passes_on_only_the_first_outcome() -> None:
    done = Outcome()
    once = Once(done)
    once(None, OK)
    once(None, "failed")
    assert done.calls == [(None, OK)]
    assert once.fired


def test_a_round_is_served_once_a_majority_echoed_a_later_stamp_and_its_index_is_applied() -> None:
    reads, done = tracker(), Outcome()
    begin(reads, done)
    assert settle(reads, acked={"b": 6, "c": 6, "d": 6, "e": 6}) == []  # answers to earlier sends only
    assert done.calls == []
    assert len(reads.pending) == 1
    assert settle(reads, acked={"b": 7, "c": 6}) == []
    assert done.calls == []
    assert settle(reads, acked={"b": 7, "c": 8}, applied=99) == []  # confirmed, index not applied yet
    assert done.calls == []
    assert settle(reads, acked={}, applied=100) == []  # confirmation is kept once reached
    assert done.calls == [(None, OK)]
    assert reads.pending == []


@pytest.mark.parametrize("change", [{"leading": False}, {"term": 4}])
def test_a_round_whose_leader_lost_its_term_is_redone_by_the_log_even_if_confirmed(
    change: dict[str, Any],
) -> None:
    reads, done = tracker(), Outcome()
    once = begin(reads, done)
    settle(reads, acked={"b": 7, "c": 7}, applied=99)
    redo = settle(reads, acked={"b": 7, "c": 7}, applied=100, **change)
    assert [r.done for r in redo] == [once]
    assert done.calls == []
    assert reads.pending == []


def test_an_unconfirmed_round_also_goes_by_the_log_after_its_time_and_the_first_to_finish_serves() -> None:
    reads, done = tracker(), Outcome()
    once = begin(reads, done)
    assert settle(reads, now=10.19, acked={"b": 7}) == []
    redo = settle(reads, now=10.2, acked={"b": 7})
    assert [r.done for r in redo] == [once]
    assert len(reads.pending) == 1  # still waiting for its echoes too
    assert settle(reads, now=10.3, acked={"b": 7}) == []  # handed to the log once only
    assert settle(reads, now=10.4, acked={"b": 7, "c": 7}) == []  # the late echoes serve it
    assert done.calls == [(None, OK)]
    assert reads.pending == []
    once(None, OK)  # the no-op's outcome then changes nothing
    assert done.calls == [(None, OK)]


def test_a_round_served_by_its_no_op_is_dropped_and_one_never_confirmed_is_forgotten() -> None:
    reads, first, second = tracker(), Outcome(), Outcome()
    served = begin(reads, first)
    begin(reads, second)
    assert len(settle(reads, now=10.2)) == 2
    served(None, OK)  # the no-op of the first committed
    settle(reads, now=10.3)
    assert len(reads.pending) == 1
    assert settle(reads, now=13.19) == []
    assert len(reads.pending) == 1
    settle(reads, now=13.2)  # the second's no-op never answered: left to its reader's own timeout
    assert reads.pending == []
    assert second.calls == []


def test_rounds_are_decided_independently() -> None:
    reads, first, second = tracker(), Outcome(), Outcome()
    begin(reads, first)
    begin(reads, second, seq=9, commit_index=105)
    settle(reads, acked={"b": 8, "c": 8}, applied=105)
    assert first.calls == [(None, OK)]
    assert second.calls == []
    settle(reads, acked={"b": 9, "c": 9}, applied=105)
    assert second.calls == [(None, OK)]


# ----------------------------------------------------------------------------------- the transport


class Wire:
    """What the transport hands to pysyncobj's own send, and what it delivers to pysyncobj."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []
        self.delivered: list[tuple[Any, dict[str, Any]]] = []


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    wire = Wire()

    def sent(_self: Any, node: Any, message: Any) -> bool:
        wire.sent.append((node, dict(message)))
        return True

    monkeypatch.setattr(TransportBase.__mro__[1], "send", sent)  # pysyncobj's TCPTransport.send
    return wire


def transport(wire: Wire, answer: bool = False, fsync: bool = False) -> DurableTransport:
    """A DurableTransport without sockets; when `answer`, pysyncobj answers every AppendEntries it is
    handed with one next_node_idx to its sender. Without `fsync` there is no journal and acks are sent
    at once; with it they are held until `after_tick`'s group commit (of a journal with nothing to sync)."""
    link = object.__new__(DurableTransport)
    link._held, link.next_seq, link.acked, link.echoed_at, link._answering = [], 0, {}, {}, None
    link._unconfirmed = set()
    journal = None
    if fsync:
        journal = object.__new__(DurableFileJournal)
        journal._fsync, journal._dirty, journal.syncs = True, False, 0
        link._last_ping = float("inf")  # no pings in after_tick
        link.connection_timeout = lambda: 1.0  # type: ignore[method-assign]
    link.raft_log = lambda: journal  # type: ignore[method-assign]

    def deliver(node: Any, message: Any) -> None:
        wire.delivered.append((node, dict(message)))
        if answer and message.get("type") == "append_entries":
            link.send(node, {"type": "next_node_idx", "next_node_idx": 5, "reset": False, "success": True})

    link.deliver = deliver  # type: ignore[method-assign]
    return link


def test_every_append_entries_sent_gets_the_next_stamp(wire: Wire) -> None:
    link = transport(wire)
    for node in ("b", "c", "b"):
        link.send(node, {"type": "append_entries", "term": 3})
    link.send("b", {"type": "request_vote", "term": 3})
    assert [(node, m.get(SEQ_KEY)) for node, m in wire.sent] == [("b", 0), ("c", 1), ("b", 2), ("b", None)]
    assert link.next_seq == 3


def test_a_follower_echoes_the_stamp_of_the_append_entries_it_answers(wire: Wire) -> None:
    link = transport(wire, answer=True)
    link.message_received("a", {"type": "append_entries", "term": 3, SEQ_KEY: 41})
    link.message_received("a", {"type": "append_entries", "term": 3})  # an older leader: no stamp
    link.send("a", {"type": "next_node_idx", "next_node_idx": 5, "reset": False, "success": False})
    assert [m.get(SEQ_KEY) for _, m in wire.sent] == [41, None, None]
    assert [m["type"] for _, m in wire.delivered] == ["append_entries", "append_entries"]


def test_a_held_ack_carries_the_stamp_of_the_append_entries_it_answers(wire: Wire) -> None:
    link = transport(wire, answer=True, fsync=True)
    link.message_received("a", {"type": "append_entries", "term": 3, SEQ_KEY: 41})
    link.message_received("a", {"type": "append_entries", "term": 3})  # an older leader: no stamp
    assert wire.sent == []  # held until the group commit
    link.after_tick()
    assert [m.get(SEQ_KEY) for _, m in wire.sent] == [41, None]


def test_an_answer_to_another_member_is_not_stamped(wire: Wire) -> None:
    link = transport(wire)

    def deliver(node: Any, message: Any) -> None:
        link.send("z", {"type": "next_node_idx", "next_node_idx": 1, "reset": True, "success": False})

    link.deliver = deliver  # type: ignore[method-assign]
    link.message_received("a", {"type": "append_entries", "term": 3, SEQ_KEY: 41})
    assert [m.get(SEQ_KEY) for _, m in wire.sent] == [None]


def test_the_leader_keeps_each_members_highest_echo_and_delivers_every_answer(wire: Wire) -> None:
    link = transport(wire)
    for node, seq in (("b", 5), ("b", 3), ("c", 2), ("c", "9"), ("d", None), ("b", 6)):
        message: dict[str, Any] = {
            "type": "next_node_idx",
            "next_node_idx": 1,
            "reset": False,
            "success": True,
        }
        if seq is not None:
            message[SEQ_KEY] = seq
        link.message_received(node, message)
    assert link.acked == {"b": 6}  # a stamp that is not an int is no echo: "c" stopped counting
    assert set(link.echoed_at) == {"b"}
    assert len(wire.delivered) == 6


def test_a_member_answering_without_a_stamp_or_whose_link_closed_no_longer_counts(wire: Wire) -> None:
    link = transport(wire)
    answer = {"type": "next_node_idx", "next_node_idx": 1, "success": True}
    for node in ("b", "c"):
        link.message_received(node, {**answer, SEQ_KEY: 5})
    link.message_received("b", answer)  # restarted as an older version
    link.link_closed("c")
    assert link.acked == {}
    assert link.echoed_at == {}
    assert len(wire.delivered) == 3
