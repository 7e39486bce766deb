"""``GET /v1/notifications/stream`` end to end: services publishing on a real redis-server, the gateway's
hub subscribed to it, streams read by a real SSE client.

A stack of its own (the session's shares the DB cluster but has no Redis): two User Services, one Group
Service and a gateway, all with Redis on; the primary is recorded at the real key (what the supervisor
would do) and removed afterwards. Every wait is a bounded poll.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenda.db.client import DBClient
from agenda.devstack import DevStack
from agenda.messaging import PRIMARY_KEY
from sse_client import SseStream

from ..conftest import RedisServer, free_ports, wait_until
from ..messaging.pubsub import subscribe
from .conftest import GATEWAY_SECRET, Stack

REDIS_USER = "agenda"
REDIS_PASSWORD = "stream-test-redis-password"
PROBLEM = "application/problem+json"
HEARTBEAT = 1.0
POLL = 0.5


def record(db: DBClient, server: RedisServer, epoch: int) -> None:
    db.put(PRIMARY_KEY, {"name": server.name, "host": server.host, "port": server.port, "epoch": epoch})


@pytest.fixture(scope="module")
def redis_pair(db_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    root = tmp_path_factory.mktemp("stream-redis")
    servers = [
        RedisServer(port, root / f"r{i}", {REDIS_USER: REDIS_PASSWORD}, True)
        for i, port in enumerate(free_ports(2))
    ]
    for server in servers:
        server.start(None)  # two independent primaries: the test records which one is "the" primary
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="module")
def db(db_cluster: Any) -> Iterator[DBClient]:
    client = DBClient([m.url for m in db_cluster.members.values()], timeout=(1.0, 5.0))
    yield client
    client.close()


@pytest.fixture(scope="module")
def live(
    db_cluster: Any, db: DBClient, redis_pair: list[RedisServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    db_cluster.wait_healthy()
    record(db, redis_pair[0], 1)
    redis = {"enabled": True, "username": REDIS_USER, "password": REDIS_PASSWORD, "tls": False}
    db_urls = [member.url for member in db_cluster.members.values()]
    dev = DevStack(
        tmp_path_factory.mktemp("stream-stack"),
        tls=False,
        db_urls=db_urls,
        gateway_secret=GATEWAY_SECRET,
        settings={
            "users": {"redis": redis},
            "groups": {"redis": redis},
            "gateway": {
                "redis": redis,
                "db_urls": db_urls,
                "streams": {"heartbeat": HEARTBEAT, "poll_interval": POLL},
            },
        },
    )
    try:
        with dev:
            stack = Stack(dev)
            yield stack
            stack.session.close()
    finally:
        db.delete(PRIMARY_KEY)


def stream(stack: Stack, token: str | None, **headers: str) -> SseStream:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    opened = SseStream(stack.url("/v1/notifications/stream"), headers).start()
    assert opened.status == 200
    wait_until(lambda: opened.retry is not None, 10.0, 0.02, "the stream's first line")
    return opened


@pytest.fixture
def streams() -> Iterator[Callable[[SseStream], SseStream]]:
    opened: list[SseStream] = []

    def keep(s: SseStream) -> SseStream:
        opened.append(s)
        return s

    yield keep
    for s in opened:
        s.close()


def at(day: int, hour: int) -> str:
    base = datetime(2032, 1, 5, tzinfo=UTC) + timedelta(days=day, hours=hour, minutes=uuid.uuid4().int % 50)
    return base.strftime("%Y-%m-%dT%H:%M:%SZ")


def invite(stack: Stack, token: str, *guests: str, day: int = 0) -> dict[str, Any]:
    response = stack.call(
        "POST",
        "/v1/events",
        token,
        json={"title": "Plan", "start": at(day, 9), "end": at(day, 10), "participants": list(guests)},
    )
    assert response.status_code == 201, response.text
    return response.json()


def created_at(note: dict[str, Any]) -> float:
    return datetime.fromisoformat(note["created"].replace("Z", "+00:00")).timestamp()


def listed(stack: Stack, token: str) -> list[dict[str, Any]]:
    response = stack.call("GET", "/v1/notifications", token)
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def test_an_invitation_reaches_the_invitees_stream_live_with_its_cursor_as_id(
    live: Stack, streams: Callable[[SseStream], SseStream]
) -> None:
    _alice, a_tok = live.user("sa")
    bob, b_tok = live.user("sb")
    bobs = streams(stream(live, b_tok))

    event = invite(live, a_tok, bob)

    wait_until(lambda: bobs.events, 10.0, 0.02, "bob's invitation on his stream")
    (got,) = bobs.events
    (stored,) = listed(live, b_tok)
    assert got.event == "notification"
    assert got.id == stored["cursor"]
    assert got.data == stored
    assert (got.data["kind"], got.data["event_id"], got.data["user"]) == ("invited", event["id"], bob)
    # It came through Redis, not by polling: the gateway's hub is subscribed and delivered it.
    hub = live.call("GET", "/v1/health").json()["notifications"]
    assert hub["live"] is True
    assert hub["delivered"] >= 1
    print(f"invitation: created to arrival on the stream {got.at - created_at(got.data):.3f}s")


def test_each_user_receives_only_their_own_notifications(
    live: Stack, streams: Callable[[SseStream], SseStream]
) -> None:
    _alice, a_tok = live.user("oa")
    bob, b_tok = live.user("ob")
    carol, c_tok = live.user("oc")
    bobs = streams(stream(live, b_tok))
    carols = streams(stream(live, c_tok))

    invite(live, a_tok, bob, day=1)
    invite(live, a_tok, carol, day=2)
    invite(live, a_tok, bob, carol, day=3)

    wait_until(lambda: len(bobs.events) == 2 and len(carols.events) == 2, 10.0, 0.02, "two each")
    assert {e.data["user"] for e in bobs.events} == {bob}
    assert {e.data["user"] for e in carols.events} == {carol}
    assert bobs.ids == [n["id"] for n in listed(live, b_tok)]


def test_last_event_id_replays_what_was_missed_then_goes_live(
    live: Stack, streams: Callable[[SseStream], SseStream]
) -> None:
    _alice, a_tok = live.user("ra")
    bob, b_tok = live.user("rb")
    for day in range(3):
        invite(live, a_tok, bob, day=10 + day)
    stored = listed(live, b_tok)
    assert len(stored) == 3

    resumed = streams(stream(live, b_tok, **{"Last-Event-ID": stored[0]["cursor"]}))
    wait_until(lambda: len(resumed.events) == 2, 10.0, 0.02, "the two missed notifications")
    assert resumed.ids == [n["id"] for n in stored[1:]]
    invite(live, a_tok, bob, day=14)
    wait_until(lambda: len(resumed.events) == 3, 10.0, 0.02, "the live one after the replay")
    assert resumed.ids == [n["id"] for n in listed(live, b_tok)[1:]]


def test_an_idle_stream_gets_heartbeats(live: Stack, streams: Callable[[SseStream], SseStream]) -> None:
    _, token = live.user("hb")
    idle = streams(stream(live, token))
    wait_until(lambda: idle.comments >= 2, 10 * HEARTBEAT, 0.05, "two keep-alive comments")
    assert not idle.ended.is_set()
    assert idle.events == []


def test_a_hierarchical_group_event_reaches_every_connected_subordinate(
    live: Stack, streams: Callable[[SseStream], SseStream]
) -> None:
    _boss, boss_tok = live.user("gb")
    members = [live.user(f"g{i}") for i in range(3)]
    group = live.call("POST", "/v1/groups", boss_tok, json={"name": "Dept", "hierarchical": True}).json()
    for level, (name, token) in enumerate(members, start=1):
        inviter = boss_tok if level == 1 else members[level - 2][1]
        response = live.call(
            "POST", f"/v1/groups/{group['id']}/members", inviter, json={"username": name, "level": level}
        )
        assert response.status_code == 201, response.text
        response = live.call("POST", f"/v1/groups/{group['id']}/membership", token, json={"accept": True})
        assert response.status_code == 200, response.text
    opened = {name: streams(stream(live, token)) for name, token in members}

    response = live.call(
        "POST",
        f"/v1/groups/{group['id']}/events",
        boss_tok,
        json={"title": "All hands", "start": at(20, 9), "end": at(20, 10)},
    )
    assert response.status_code == 201, response.text
    event_id = response.json()["id"]

    def everyone_told() -> bool:
        return all(any(e.data.get("event_id") == event_id for e in s.events) for s in opened.values())

    wait_until(everyone_told, 10.0, 0.02, "the group event on every subordinate's stream")
    for name, s in opened.items():
        (note,) = [e.data for e in s.events if e.data.get("event_id") == event_id]
        assert (note["user"], note["kind"]) == (name, "confirmed")


def test_a_stream_without_a_token_is_refused_at_once(live: Stack) -> None:
    response = live.session.get(live.url("/v1/notifications/stream"), timeout=5)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    ("headers", "params", "field"),
    [
        ({"Last-Event-ID": "42"}, {}, "Last-Event-ID"),
        ({"Last-Event-ID": "00000000000000000001.a b"}, {}, "Last-Event-ID"),
        ({}, {"since": "../x"}, "since"),
        ({}, {"cursor": "x"}, "cursor"),
    ],
)
def test_a_bad_resume_point_is_a_400_naming_it(
    live: Stack, headers: dict[str, str], params: dict[str, str], field: str
) -> None:
    _, token = live.user("bad")
    response = live.session.get(
        live.url("/v1/notifications/stream"),
        headers={**headers, "Authorization": f"Bearer {token}"},
        params=params,
        timeout=5,
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    assert response.json()["field"] == field


def test_with_redis_down_the_stream_polls_and_after_a_new_primary_is_recorded_it_is_live_again(
    live: Stack,
    db: DBClient,
    redis_pair: list[RedisServer],
    streams: Callable[[SseStream], SseStream],
) -> None:
    _alice, a_tok = live.user("fa")
    bob, b_tok = live.user("fb")
    bobs = streams(stream(live, b_tok))
    first, second = redis_pair
    try:
        first.kill()
        invite(live, a_tok, bob, day=30)
        # Nothing can be published (the recorded primary is gone): the stream reads it from the DB.
        wait_until(lambda: len(bobs.events) == 1, 10.0, 0.02, "the invitation, polled from the DB")

        record(db, second, 2)  # what the supervisor does after promoting a replica
        invite(live, a_tok, bob, day=31)
        wait_until(lambda: len(bobs.events) == 2, 10.0, 0.02, "the second invitation")
        assert bobs.ids == [n["id"] for n in listed(live, b_tok)]
        assert not bobs.ended.is_set()
        # The services publish on the new primary again: a message reaches a plain subscriber there.
        probe = subscribe(second, f"notifications:{bob}")
        # A day of its own for each try: the next try must not conflict with the one before it.
        days = itertools.count(32)

        def published_live() -> bool:
            invite(live, a_tok, bob, day=next(days))
            message = probe.get_message(timeout=2.0)
            return message is not None and json.loads(message["data"])["user"] == bob

        wait_until(published_live, 20.0, 0.1, "a publish on the new primary")
        probe.close()
    finally:
        first.start(None)
        record(db, first, 3)
    # And the gateway is subscribed there too: a stream opened now gets its invitation.
    carol, c_tok = live.user("fc")
    carols = streams(stream(live, c_tok))
    invite(live, a_tok, carol, day=40)
    wait_until(lambda: len(carols.events) == 1, 10.0, 0.02, "carol's invitation after the switch back")


def test_the_stream_is_in_the_openapi_document(live: Stack) -> None:
    document = live.session.get(live.url("/v1/openapi.json"), timeout=5).json()
    operation = document["paths"]["/v1/notifications/stream"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} == {"since", "Last-Event-ID"}
    assert {"400", "401"} <= set(operation["responses"])
