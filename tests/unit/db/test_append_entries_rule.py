"""Raft's AppendEntries receiver rule in front of pysyncobj's (agenda.db.append_rule.trim_known_entries):
a follower deletes entries only from the first conflicting one, and never claims more than it was sent."""

from __future__ import annotations

from typing import Any

import pytest

from agenda.db.append_rule import trim_known_entries

# The follower's log: indices 5..10; 5-8 of term 2, 9-10 of term 3.
LOG = [(b"c%d" % i, i, 2 if i <= 8 else 3) for i in range(5, 11)]


def entries(first: int, last: int, term: int | None = None) -> list[tuple[bytes, int, int]]:
    return [
        (b"c%d" % i, i, term if term is not None else (2 if i <= 8 else 3)) for i in range(first, last + 1)
    ]


def append(prev: int, new: list[Any], commit: int = 10, prev_term: int | None = None) -> dict[str, Any]:
    term = prev_term if prev_term is not None else (2 if prev <= 8 else 3)
    return {"type": "append_entries", "term": 3, "prevLogIdx": prev, "prevLogTerm": term, "entries": new,
            "commit_index": commit}  # fmt: skip


def test_a_stale_heartbeat_keeps_the_log_and_vouches_only_for_what_it_covered():
    message, covered = trim_known_entries(append(7, [], commit=9), LOG)
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (10, 3, [])
    assert message["commit_index"] == 7  # not beyond the entries the leader showed it has
    assert covered == 7  # the answer claims index 7, not 10


def test_a_repeated_append_keeps_the_log_and_vouches_for_its_entries():
    message, covered = trim_known_entries(append(6, entries(7, 9)), LOG)
    assert (message["prevLogIdx"], message["entries"]) == (10, [])
    assert message["commit_index"] == 9
    assert covered == 9


def test_known_entries_are_dropped_and_the_new_ones_appended_after_the_log():
    message, covered = trim_known_entries(append(8, entries(9, 12)), LOG)
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (10, 3)
    assert [e[1] for e in message["entries"]] == [11, 12]
    assert message["commit_index"] == 10
    assert covered is None


def test_a_conflict_still_truncates_from_the_conflicting_entry():
    new = [*entries(7, 8), *entries(9, 11, term=4)]  # 9 and 10 are of term 3 here: they conflict
    message, covered = trim_known_entries(append(6, new), LOG)
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (8, 2)  # pysyncobj deletes from 9 on
    assert [e[1] for e in message["entries"]] == [9, 10, 11]
    assert covered is None
    first_conflicts = [*entries(7, 7, term=4)]
    assert trim_known_entries(append(6, first_conflicts), LOG) == (append(6, first_conflicts), None)


@pytest.mark.parametrize(
    "message",
    [
        append(10, entries(11, 11)),  # at the end of the log: nothing to delete
        append(3, entries(4, 6)),  # before the log (compacted): pysyncobj's answer
        append(7, entries(8, 8), prev_term=1),  # prevLogTerm differs: pysyncobj refuses
        {**append(7, []), "transmission": "start", "data": b""},
        {"type": "append_entries", "term": 3, "serialized": b"...", "commit_index": 3},
    ],
)
def test_anything_else_is_left_to_pysyncobj(message):
    assert trim_known_entries(message, LOG) == (message, None)
    assert trim_known_entries(message, []) == (message, None)
