"""The stores announce exactly the notifications a committed transaction stored, once, and nothing else.

Both services' real apps run over the in-process DB with stores given a recording `announce`; every
test compares what was announced with what the request added under ``notifications/`` in the DB, and
the DB's faults (a lost race, a lost answer, no leader) show that only a commit is ever announced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from flask.testing import FlaskClient

from agenda.calendar.cas import ATTEMPTS
from agenda.calendar.layout import booking_key, notification_record
from agenda.calendar.store import Change, EventStore
from agenda.db.client import DBClient
from agenda.db.memory import MemoryDBClient
from agenda.domain.model import Notification
from agenda.domain.rules import change_notifications
from agenda.groups.store import GroupStore

from ..backends import (
    Caller,
    Clock,
    add_account,
    at,
    gateway_client,
    groups_app,
    ok,
    problem,
    users_app,
)


class Recorder:
    """An `announce` that remembers each call's notifications."""

    def __init__(self) -> None:
        self.calls: list[tuple[Notification, ...]] = []

    def __call__(self, notes: Sequence[Notification]) -> None:
        self.calls.append(tuple(notes))


def stored(db: DBClient) -> dict[str, Any]:
    return {kv["key"]: kv["value"] for kv in db.iter_prefix("notifications/")}


@pytest.fixture
def announced() -> Recorder:
    return Recorder()


@pytest.fixture
def users(db: MemoryDBClient, clock: Clock, announced: Recorder) -> Callable[[str], Caller]:
    """The User Service whose store announces to `announced`: ``users("bob")`` calls it as bob."""
    client = gateway_client(users_app(db, clock, announced))
    for name in ("alice", "bob", "carol"):
        add_account(db, name)
    return lambda name: Caller(client, name)


@pytest.fixture
def groups(db: MemoryDBClient, clock: Clock, announced: Recorder, users: Any) -> Callable[[str], Caller]:
    client: FlaskClient = gateway_client(groups_app(db, clock, announced))
    return lambda name: Caller(client, name)


@pytest.fixture
def once(db: MemoryDBClient, announced: Recorder) -> Callable[[Callable[[], Any]], list[Notification]]:
    """``once(request)``: run it, assert ONE announcement of exactly what it stored; return its notes."""

    def run(request: Callable[[], Any]) -> list[Notification]:
        before, calls = stored(db), len(announced.calls)
        request()
        added = {key: value for key, value in stored(db).items() if key not in before}
        assert len(announced.calls) == calls + 1, announced.calls[calls:]
        notes = list(announced.calls[-1])
        assert notes, "an empty announcement"
        assert sorted((notification_record(n) for n in notes), key=repr) == sorted(added.values(), key=repr)
        return notes

    return run


@pytest.fixture
def nothing(db: MemoryDBClient, announced: Recorder) -> Callable[[Callable[[], Any]], None]:
    """``nothing(request)``: run it, assert it neither stored nor announced a notification."""

    def run(request: Callable[[], Any]) -> None:
        before, calls = stored(db), len(announced.calls)
        request()
        assert stored(db) == before
        assert announced.calls[calls:] == []

    return run


def event_body(**changes: Any) -> dict[str, Any]:
    return {"title": "Plan", "start": at(10, 9), "end": at(10, 10), "participants": ["bob"], **changes}


def create(users: Callable[[str], Caller], **changes: Any) -> str:
    return ok(users("alice").post("/v1/events", json=event_body(**changes)), 201)["id"]


# -------------------------------------------------------------------------------- what is announced


def test_creating_an_event_announces_the_invitation(users: Any, once: Any) -> None:
    notes = once(lambda: create(users, participants=["bob", "carol"]))
    assert sorted((n.user, n.kind.value) for n in notes) == [("bob", "invited"), ("carol", "invited")]


def test_an_update_a_response_and_a_cancellation_each_announce_their_notifications(
    users: Any, once: Any
) -> None:
    event_id = create(users)
    notes = once(lambda: ok(users("alice").patch(f"/v1/events/{event_id}", json={"title": "Renamed"})))
    assert [(n.user, n.kind.value) for n in notes] == [("bob", "changed")]
    notes = once(lambda: ok(users("bob").post(f"/v1/events/{event_id}/respond", json={"status": "accepted"})))
    assert [(n.user, n.kind.value) for n in notes] == [("alice", "responded")]
    notes = once(lambda: ok(users("alice").delete(f"/v1/events/{event_id}"), 204))
    assert [(n.user, n.kind.value) for n in notes] == [("bob", "cancelled")]


def test_group_invitations_answers_and_group_events_are_announced(groups: Any, once: Any) -> None:
    group_id = ok(groups("alice").post("/v1/groups", json={"name": "Team"}), 201)["id"]
    notes = once(
        lambda: ok(groups("alice").post(f"/v1/groups/{group_id}/members", json={"username": "bob"}), 201)
    )
    assert [(n.user, n.kind.value, n.group_id) for n in notes] == [("bob", "membership", group_id)]
    notes = once(lambda: ok(groups("bob").post(f"/v1/groups/{group_id}/membership", json={"accept": True})))
    assert [n.user for n in notes] == ["alice"]
    body = {"title": "Sync", "start": at(11, 9), "end": at(11, 10)}
    notes = once(lambda: ok(groups("alice").post(f"/v1/groups/{group_id}/events", json=body), 201))
    assert [(n.user, n.kind.value) for n in notes] == [("bob", "invited")]


def test_a_change_without_notifications_announces_nothing(
    users: Any, groups: Any, nothing: Any, announced: Recorder
) -> None:
    nothing(lambda: ok(users("alice").post("/v1/events", json=event_body(participants=[])), 201))
    nothing(lambda: ok(groups("alice").post("/v1/groups", json={"name": "Solo"}), 201))
    assert announced.calls == []


# ------------------------------------------------------------------------------------ the DB's faults


def test_a_lost_race_announces_once_what_the_retry_stored(
    users: Any, db: MemoryDBClient, once: Any, clock: Clock
) -> None:
    event_id = create(users)
    db.contend()  # another instance rewrites the event between our read and our commit
    txns = db.counts["txn"]
    notes = once(lambda: ok(users("alice").patch(f"/v1/events/{event_id}", json={"title": "Renamed"})))
    assert db.counts["txn"] == txns + 2
    # The first attempt's notification (an earlier instant, so another cursor) was never stored.
    assert [(n.user, n.kind.value) for n in notes] == [("bob", "changed")]
    assert len(stored(db)) == 2  # the invitation, and the retry's change notification


def test_a_lost_race_on_create_announces_once(users: Any, db: MemoryDBClient, once: Any) -> None:
    # Alice's booking guard moves under us (another of her events was written): the create is decided
    # again, finds no conflict, and commits.
    db.contend(write=lambda other, _keys: other.put(booking_key("alice"), {"event": "x", "sequence": 0}))
    txns = db.counts["txn"]
    once(lambda: create(users))
    assert db.counts["txn"] == txns + 2


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "lost"])
def test_an_unknown_outcome_announces_once(users: Any, db: MemoryDBClient, once: Any, applied: bool) -> None:
    """Found applied: announced once, not written again; not applied: the retry's commit is announced."""
    event_id = create(users)
    db.unknown_outcome(applied=applied, kinds=["txn"])
    txns = db.counts["txn"]
    once(lambda: ok(users("bob").post(f"/v1/events/{event_id}/respond", json={"status": "tentative"})))
    assert db.counts["txn"] == txns + (1 if applied else 2)


def test_an_unknown_outcome_of_a_group_invitation_announces_once(
    groups: Any, db: MemoryDBClient, once: Any
) -> None:
    group_id = ok(groups("alice").post("/v1/groups", json={"name": "Team"}), 201)["id"]
    db.unknown_outcome(applied=True, kinds=["txn"])
    once(lambda: ok(groups("alice").post(f"/v1/groups/{group_id}/members", json={"username": "bob"}), 201))


def test_refused_requests_announce_nothing(users: Any, groups: Any, db: MemoryDBClient, nothing: Any) -> None:
    event_id = create(users)
    # A conflict: bob accepts, then is invited to an overlapping event he cannot accept.
    ok(users("bob").post(f"/v1/events/{event_id}/respond", json={"status": "accepted"}))
    other = ok(users("carol").post("/v1/events", json=event_body()), 201)["id"]
    nothing(
        lambda: problem(users("bob").post(f"/v1/events/{other}/respond", json={"status": "accepted"}), 409)
    )
    nothing(lambda: problem(users("alice").post("/v1/events", json=event_body(title="Again")), 409))
    # Not the organizer; not a member of the group; nothing to change.
    nothing(lambda: problem(users("bob").patch(f"/v1/events/{event_id}", json={"title": "Mine"}), 403))
    group_id = ok(groups("alice").post("/v1/groups", json={"name": "Team"}), 201)["id"]
    nothing(
        lambda: problem(groups("bob").post(f"/v1/groups/{group_id}/members", json={"username": "carol"}), 404)
    )
    nothing(lambda: ok(users("bob").post(f"/v1/events/{event_id}/respond", json={"status": "accepted"})))


def test_a_write_that_never_commits_announces_nothing(users: Any, db: MemoryDBClient, nothing: Any) -> None:
    event_id = create(users)
    patch = {"title": "Renamed"}
    db.outage(kinds=["txn"])  # no leader: refused, not applied
    nothing(lambda: problem(users("alice").patch(f"/v1/events/{event_id}", json=patch), 503))
    db.contend(ATTEMPTS)  # every attempt loses its race: Contention
    nothing(lambda: problem(users("alice").patch(f"/v1/events/{event_id}", json=patch), 503))


def test_the_stores_announce_directly_too(
    db: MemoryDBClient, announced: Recorder, clock: Clock, once: Any, nothing: Any
) -> None:
    """Without an app: `EventStore.update` over a lost race; `GroupStore.update` with nothing to do."""
    add_account(db, "alice")
    add_account(db, "bob")
    silent = gateway_client(users_app(db, clock))  # a store without announce: as today
    event_id = ok(Caller(silent, "alice").post("/v1/events", json=event_body()), 201)["id"]
    assert announced.calls == []
    store = EventStore(db, announce=announced)

    def rename(event: Any) -> Change:
        revised = event.revised(clock(), title="Store")
        return Change(revised, change_notifications(revised, "alice", clock()))

    db.contend()
    notes = once(lambda: store.update(event_id, rename))
    assert [n.user for n in notes] == ["bob"]

    group_store = GroupStore(db, announce=announced)
    group_id = ok(
        Caller(gateway_client(groups_app(db, clock)), "alice").post("/v1/groups", json={"name": "T"}), 201
    )["id"]
    nothing(lambda: group_store.update(group_id, lambda group: None))


def test_an_announce_that_raises_is_logged_and_the_request_still_succeeds(
    db: MemoryDBClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_notes: Sequence[Notification]) -> None:
        raise RuntimeError("redis is on fire")

    add_account(db, "alice")
    add_account(db, "bob")
    client = gateway_client(users_app(db, clock, broken))
    with caplog.at_level(logging.ERROR, logger="agenda.calendar.cas"):
        ok(Caller(client, "alice").post("/v1/events", json=event_body()), 201)
    assert "redis is on fire" in caplog.text
    assert len(stored(db)) == 1
