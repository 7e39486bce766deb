"""ReadIndex: the decision logic (pure) and the transport's stamps and echoes that feed it."""

from __future__ import annotations

from typing import Any

import pytest

from agenda.db.pysyncobj_adapter import TransportBase
from agenda.db.readindex import ReadIndex, majority_echoed
from agenda.db.transport import SEQ_KEY, DurableTransport

OK, NOT_LEADER = "ok", "not-leader"
VOTERS = ("b", "c", "d", "e")  # the leader is "a": three of five make a majority


class Outcome:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, result: Any, error: Any) -> None:
        self.calls.append((result, error))


def tracker() -> ReadIndex:
    return ReadIndex(OK, NOT_LEADER, fallback_after=0.2)


def settle(reads: ReadIndex, **overrides: Any) -> list[Any]:
    state = {"now": 10.0, "leading": True, "term": 3, "applied": 100, "voters": VOTERS, "acked": {}}
    state.update(overrides)
    return reads.settle(**state)


def test_majority_counts_the_leader_and_the_voters_at_or_past_the_stamp() -> None:
    assert not majority_echoed(VOTERS, {})
    assert not majority_echoed(VOTERS, {"b": 5}, 5)  # 2 of 5
    assert majority_echoed(VOTERS, {"b": 5, "c": 9}, 5)  # 3 of 5
    assert not majority_echoed(VOTERS, {"b": 4, "c": 9, "x": 9}, 5)  # a non-voter does not count
    assert majority_echoed(("b",), {"b": 0}, 0)  # 2 of 2
    assert not majority_echoed(("b",), {}, 0)
    assert majority_echoed((), {}, 0)  # a single member is its own majority
    assert majority_echoed(VOTERS, {"b": 0, "c": 0})  # by default: ever echoed a stamp
    assert not majority_echoed(VOTERS, {"b": 0})


def test_a_round_is_served_once_a_majority_echoed_a_later_stamp_and_its_index_is_applied() -> None:
    reads, done = tracker(), Outcome()
    reads.begin(term=3, commit_index=100, seq=7, now=10.0, done=done)
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
def test_a_round_whose_leader_lost_its_term_fails_even_if_confirmed(change: dict[str, Any]) -> None:
    reads, done = tracker(), Outcome()
    reads.begin(term=3, commit_index=100, seq=7, now=10.0, done=done)
    settle(reads, acked={"b": 7, "c": 7}, applied=99)
    assert settle(reads, acked={"b": 7, "c": 7}, applied=100, **change) == []
    assert done.calls == [(None, NOT_LEADER)]
    assert reads.pending == []


def test_an_unconfirmed_round_is_handed_back_for_the_log_after_its_time() -> None:
    reads, done = tracker(), Outcome()
    reads.begin(term=3, commit_index=100, seq=7, now=10.0, done=done)
    assert settle(reads, now=10.19, acked={"b": 7}) == []
    redo = settle(reads, now=10.2, acked={"b": 7})
    assert [r.done for r in redo] == [done]
    assert done.calls == []
    assert reads.pending == []


def test_rounds_are_decided_independently() -> None:
    reads, first, second = tracker(), Outcome(), Outcome()
    reads.begin(term=3, commit_index=100, seq=7, now=10.0, done=first)
    reads.begin(term=3, commit_index=105, seq=9, now=10.0, done=second)
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


def transport(wire: Wire, answer: bool = False) -> DurableTransport:
    """A DurableTransport without sockets or journal (acks are sent at once); when `answer`, pysyncobj
    answers every AppendEntries it is handed with one next_node_idx to its sender."""
    link = object.__new__(DurableTransport)
    link._held, link.next_seq, link.acked, link._answering = [], 0, {}, None
    link.raft_log = lambda: None  # type: ignore[method-assign]

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
    assert link.acked == {"b": 6, "c": 2}  # a stamp that is not an int is ignored
    assert len(wire.delivered) == 6
