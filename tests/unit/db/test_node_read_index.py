"""Node's ReadIndex rounds on the tick thread, over a scripted Raft and transport (no sockets).

The round's decisions and the transport's stamps (`tests/unit/db/test_readindex.py`) are tested on
their own; these tests cover how the node begins the rounds and when it goes by the log instead.
"""

from __future__ import annotations

from typing import Any

import pytest

import agenda.db.node as node_module
from agenda.db.errors import LeaderUnknown, NodeError
from agenda.db.node import Node
from agenda.db.peers import Peer
from agenda.db.pysyncobj_adapter import FAIL_REASON
from agenda.db.readindex import term_floor
from agenda.db.tick import Waiter

TERM = 3
FLOOR = term_floor(TERM)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedRaft:
    """The leader's side of pysyncobj that the node reads and drives."""

    def __init__(self, *, others: tuple[str, ...] = ("b", "c"), start: int | None = 10, commit: int = 10):
        self.leader, self.term, self.start = True, TERM, start
        self.raftCommitIndex, self.raftLastApplied = commit, commit
        self.otherNodes = set(others)
        self.noops: list[Any] = []  # the callbacks of the no-ops proposed
        self.sent = 0  # AppendEntries rounds sent

    @property
    def raftCurrentTerm(self) -> int:  # noqa: N802 - pysyncobj's name
        return self.term

    def is_leader(self) -> bool:
        return self.leader

    def leader_node(self) -> Any:
        return "a" if self.leader else None

    def term_start_index(self) -> int | None:
        return self.start

    def apply_command(self, command: Any, callback: Any) -> None:
        assert command["op"] == "noop"
        self.noops.append(callback)

    def send_append_entries(self) -> None:
        self.sent += 1

    def last_log_index(self) -> int:
        return self.raftCommitIndex


class ScriptedTransport:
    def __init__(self, clock: Clock) -> None:
        self.next_seq = FLOOR + 100
        self.acked = {"b": FLOOR + 50, "c": FLOOR + 50}  # both followers echoed lately
        self.echoed_at = {"b": clock.now, "c": clock.now}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(node_module.time, "monotonic", clock)
    return clock


def leader(raft: ScriptedRaft, clock: Clock, tmp_path: Any) -> Node:
    node = Node(Peer("a", "127.0.0.1:1", "127.0.0.1:2"), [], tmp_path)
    node._raft, node._transport = raft, ScriptedTransport(clock)  # type: ignore[assignment]
    return node


def reading(raft: ScriptedRaft, clock: Clock, tmp_path: Any) -> tuple[Node, Waiter]:
    """A leader over `raft` and a reader whose round it has just begun."""
    node = leader(raft, clock, tmp_path)
    waiter = Waiter()
    node._begin_read(waiter.on_result)
    return node, waiter


def served(waiter: Waiter) -> Any:
    """The outcome `waiter` got (without waiting), or None if it has none yet."""
    return waiter.error if waiter.wait(0) else None


def test_a_round_sends_append_entries_at_once_and_is_served_by_echoes_at_or_past_its_stamp(
    clock: Clock, tmp_path: Any
) -> None:
    raft = ScriptedRaft()
    node, waiter = reading(raft, clock, tmp_path)
    node._flush_leader(raft)  # type: ignore[arg-type]
    assert raft.sent == 1
    assert raft.noops == []
    node._transport.acked.update(b=FLOOR + 99, c=FLOOR + 99)  # type: ignore[union-attr]
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert served(waiter) is None
    node._transport.acked.update(b=FLOOR + 100)  # type: ignore[union-attr]
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert served(waiter) == FAIL_REASON.SUCCESS
    assert node.counters["read_index_rounds"] == 1


@pytest.mark.parametrize(
    "why",
    ["term's first entry not committed", "no echo of this term", "echoes too old", "one echo of four"],
)
def test_a_read_goes_by_the_log_when_read_index_cannot_be_used(clock: Clock, tmp_path: Any, why: str) -> None:
    raft = ScriptedRaft(start=11, commit=10) if why == "term's first entry not committed" else ScriptedRaft()
    node = leader(raft, clock, tmp_path)
    transport = node._transport
    if why == "no echo of this term":
        transport.acked.update(b=FLOOR - 1, c=FLOOR - 1)  # type: ignore[union-attr]
    elif why == "echoes too old":
        clock.now += 0.21
    elif why == "one echo of four":
        raft.otherNodes |= {"d", "e"}
        del transport.acked["c"]  # type: ignore[union-attr]
    waiter = Waiter()
    node._begin_read(waiter.on_result)
    assert node._reads.pending == []
    assert len(raft.noops) == 1
    raft.noops[0](None, FAIL_REASON.SUCCESS)
    assert served(waiter) == FAIL_REASON.SUCCESS
    assert node.counters["read_index_rounds"] == 0


def test_a_round_cut_off_by_a_new_term_is_redone_by_the_log(clock: Clock, tmp_path: Any) -> None:
    raft = ScriptedRaft()
    node, waiter = reading(raft, clock, tmp_path)
    raft.term = TERM + 2  # deposed and elected again before the round settled
    node._transport.acked.update(b=term_floor(TERM + 2), c=term_floor(TERM + 2))  # type: ignore[union-attr]
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert served(waiter) is None
    assert len(raft.noops) == 1
    raft.noops[0](None, FAIL_REASON.LEADER_CHANGED)
    assert served(waiter) == FAIL_REASON.LEADER_CHANGED
    assert node.counters["proposal_failures"] == 1


def test_a_slow_round_is_served_by_whichever_of_its_echoes_and_its_no_op_comes_first(
    clock: Clock, tmp_path: Any
) -> None:
    raft = ScriptedRaft()
    node, waiter = reading(raft, clock, tmp_path)
    clock.now += 0.2
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert len(raft.noops) == 1
    assert node.counters["read_index_fallbacks"] == 1
    node._transport.acked.update(b=FLOOR + 100, c=FLOOR + 100)  # type: ignore[union-attr]
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert served(waiter) == FAIL_REASON.SUCCESS
    raft.noops[0](None, FAIL_REASON.LEADER_CHANGED)  # too late to matter
    assert waiter.error == FAIL_REASON.SUCCESS


def test_a_single_member_is_served_in_the_same_tick(clock: Clock, tmp_path: Any) -> None:
    raft = ScriptedRaft(others=())
    node = leader(raft, clock, tmp_path)
    node._transport.acked.clear()  # type: ignore[union-attr]
    waiter = Waiter()
    node._begin_read(waiter.on_result)
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert served(waiter) == FAIL_REASON.SUCCESS
    assert raft.noops == []


def test_a_member_that_is_not_leading_refuses_the_round(clock: Clock, tmp_path: Any) -> None:
    raft = ScriptedRaft()
    raft.leader = False
    _, waiter = reading(raft, clock, tmp_path)
    assert served(waiter) == FAIL_REASON.NOT_LEADER


def test_read_round_reports_its_round_to_the_callback_in_our_errors(clock: Clock, tmp_path: Any) -> None:
    """The loop's read rounds (Node.read_round): begun on the tick thread, outcome as None or a NodeError."""
    raft = ScriptedRaft()
    node = leader(raft, clock, tmp_path)
    outcomes: list[Any] = []
    node.read_round(outcomes.append)
    node.read_round(outcomes.append)
    assert outcomes == []  # nothing happens until the tick thread runs what was scheduled
    raft.leader = False  # the second is begun after this member was deposed
    node._tick_calls.popleft()()
    raft.leader = True
    node._tick_calls.popleft()()
    node._transport.acked.update(b=FLOOR + 100, c=FLOOR + 100)  # type: ignore[union-attr]
    node._settle_reads(raft)  # type: ignore[arg-type]
    assert len(outcomes) == 2
    assert isinstance(outcomes[0], LeaderUnknown)  # what a waiting reader would have raised
    assert outcomes[1] is None
    assert node.counters["read_barriers"] == 2
    raft.leader = False
    with pytest.raises(NodeError):  # not leading when asked: nothing is scheduled
        node.read_round(outcomes.append)
    assert not node._tick_calls
