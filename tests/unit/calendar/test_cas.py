"""The one CAS loop both stores commit through: lost races, unknown outcomes, giving up."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from agenda.calendar.cas import ATTEMPTS, BACKOFF_BASE, BACKOFF_CAP, Contention, Write, commit
from agenda.calendar.layout import group_key, notification_record
from agenda.db.client import DBClient, DBUnavailable
from agenda.domain.model import Group, Membership, Notification, NotificationKind
from agenda.groups.store import GroupStore


@dataclass
class ScriptedDB:
    """Answers each txn from `script`: True/False (compare held or not), or an exception to raise.

    `applied` says whether a txn that raised was applied anyway (the write is then visible to get()).
    """

    script: list[Any]
    applied: bool = False
    kv: dict[str, Any] = field(default_factory=dict)
    txns: int = 0

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> dict[str, Any]:
        self.txns += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            if self.applied:
                self._apply(success)
            raise step
        if step:
            self._apply(success)
        return {"succeeded": bool(step), "results": [], "revision": self.txns}

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        for op in ops:
            if "put" in op:
                self.kv[op["put"]["key"]] = op["put"]["value"]
            else:
                self.kv.pop(op["delete"]["key"], None)

    def get(self, key: str) -> dict[str, Any] | None:
        return None if key not in self.kv else {"key": key, "value": self.kv[key], "mod_revision": 1}


def write(value: Any) -> Write:
    return Write([], [{"put": {"key": "k", "value": value}}], "k", value)


UNKNOWN = DBUnavailable("member went away", outcome_unknown=True)


def test_a_lost_race_decides_again_from_fresh_reads() -> None:
    db = ScriptedDB([False, True])
    calls = []

    def attempt() -> tuple[int, Write]:
        calls.append(1)
        return len(calls), write(len(calls))

    assert commit(db, attempt, what="thing") == 2  # type: ignore[arg-type]
    assert db.kv == {"k": 2}


def test_nothing_to_write_returns_at_once() -> None:
    db = ScriptedDB([])
    assert commit(db, lambda: ("same", None), what="thing") == "same"  # type: ignore[arg-type]
    assert db.txns == 0


@pytest.mark.parametrize("applied", [True, False])
def test_an_unknown_outcome_is_settled_by_reading_the_witness(applied: bool) -> None:
    db = ScriptedDB([UNKNOWN, True], applied=applied)
    assert commit(db, lambda: ("done", write("v")), what="thing") == "done"  # type: ignore[arg-type]
    assert db.txns == (1 if applied else 2)  # applied: never written twice


def test_a_plain_outage_is_not_retried() -> None:
    db = ScriptedDB([DBUnavailable("no leader")])
    with pytest.raises(DBUnavailable):
        commit(db, lambda: ("done", write("v")), what="thing")  # type: ignore[arg-type]
    assert db.txns == 1


def test_endless_contention_gives_up() -> None:
    db = ScriptedDB([False] * ATTEMPTS)
    with pytest.raises(Contention, match="the thing"):
        commit(db, lambda: ("done", write("v")), what="thing", pause=lambda _s: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("applied", [True, False])
def test_group_create_handles_an_unknown_outcome_like_the_other_writes(applied: bool) -> None:
    group = Group(
        id="g" * 32,
        name="G",
        owner="alice",
        created=datetime(2031, 1, 1, tzinfo=UTC),
        members={"alice": Membership(0)},
    )
    db = ScriptedDB([UNKNOWN, True], applied=applied)
    assert GroupStore(db).create(group) == group  # type: ignore[arg-type]
    assert db.kv[group_key(group.id)] == group.to_dict()
    assert db.txns == (1 if applied else 2)


def note(n: int) -> Notification:
    created = datetime(2031, 1, 1, tzinfo=UTC)
    return Notification(id=f"n{n}", user="bob", kind=NotificationKind.CHANGED, created=created, event_id="e")


@pytest.mark.parametrize(
    ("script", "applied", "txns"),
    [
        ([False, False, True], False, 3),  # two lost races
        ([UNKNOWN, True], False, 2),  # an answer lost, the write not applied: decided again
        ([UNKNOWN], True, 1),  # an answer lost, the write applied: settled by the witness
    ],
    ids=["races", "unknown-lost", "unknown-applied"],
)
def test_only_the_write_that_committed_is_announced_once(script: list, applied: bool, txns: int) -> None:
    db = ScriptedDB(script, applied=applied)
    calls: list[tuple[Notification, ...]] = []
    attempts = []

    def attempt() -> tuple[int, Write]:
        attempts.append(1)
        value = len(attempts)
        return value, Write([], [{"put": {"key": "k", "value": value}}], "k", value, [note(value)])

    result = commit(
        cast(DBClient, db), attempt, what="thing", announce=lambda notes: calls.append(tuple(notes))
    )
    assert db.txns == txns
    assert calls == [(note(result),)]
    assert db.kv[f"notifications/bob/{notification_record(note(result))['cursor']}"] == notification_record(
        note(result)
    )


def test_nothing_is_announced_without_a_commit_or_without_notes() -> None:
    calls: list[Any] = []

    def run(script: list[Any]) -> str:
        return commit(
            cast(DBClient, ScriptedDB(script)), lambda: ("x", write("v")), what="t", announce=calls.append
        )

    for script in ([DBUnavailable("no leader")], [False] * ATTEMPTS):
        with pytest.raises((DBUnavailable, Contention)):
            run(script)
    assert run([True]) == "x"
    assert calls == []  # `write` stores no notes


def test_an_announce_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_notes: Any) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="agenda.calendar.cas"):
        done = Write([], [], "k", None, [note(1)])
        db = cast(DBClient, ScriptedDB([True]))
        assert commit(db, lambda: ("ok", done), what="thing", announce=broken) == "ok"
    assert "boom" in caplog.text


def test_each_lost_race_pauses_a_random_while_that_grows_to_a_cap() -> None:
    db = ScriptedDB([False] * ATTEMPTS)
    pauses: list[float] = []
    with pytest.raises(Contention):
        commit(db, lambda: ("done", write("v")), what="thing", pause=pauses.append)  # type: ignore[arg-type]
    assert len(pauses) == ATTEMPTS
    for n, pause in enumerate(pauses):
        assert 0 <= pause <= min(BACKOFF_CAP, BACKOFF_BASE * 2**n)
    assert sum(pauses) <= sum(min(BACKOFF_CAP, BACKOFF_BASE * 2**n) for n in range(ATTEMPTS))
