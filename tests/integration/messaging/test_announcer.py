"""Committed notifications reach Redis: the real DB cluster, real redis-server processes, no fakes.

A subscriber on the recorded primary receives the invitee's notification exactly as the DB stored it
(same cursor, the id a live stream resumes from): once through a store with a real Announcer, once
end to end through the User Service's app (built by its own CLI factory, redis enabled) in process.
A Redis that cannot be reached costs the request nothing: the failure is counted in the background.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.calendar.store import Change, EventStore
from agenda.common.service import shutdown
from agenda.common.web import IDENTITY_HEADER, SECRET_HEADER, environ_key
from agenda.db.client import DBClient
from agenda.devstack.stack import free_ports
from agenda.domain.model import Event, EventKind, Participation
from agenda.domain.rules import invitation_notifications
from agenda.messaging import PRIMARY_KEY, Announcer, Publisher, RedisLocator, user_channel
from agenda.users import cli as users_cli

from ..conftest import Cluster, RedisServer
from .pubsub import received, record, subscribe

PASSWORD = "correct horse battery"
SECRET = "integration-gateway-secret-0123456789"
REDIS_USER, REDIS_PASSWORD = "agenda", "redis-password-0123"


@pytest.fixture
def announcing(db: DBClient, locators: Callable[..., RedisLocator]) -> Iterator[Callable[..., Announcer]]:
    """``make(key, deadline=3.0)``: an Announcer over a real Publisher and locator of the record at key."""
    made: list[Announcer] = []

    def make(key: str, deadline: float = 3.0) -> Announcer:
        announcer = Announcer(Publisher(locators(db, key=key), deadline=deadline))
        made.append(announcer)
        return announcer

    yield make
    for announcer in made:  # before the locators close
        announcer.close(timeout=5.0)


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def account(store: EventStore, username: str) -> None:
    store.create_user(
        {"username": username, "password": {"salt": uuid.uuid4().hex}, "created": "2031-01-01T00:00:00Z"}
    )


def invitation(organizer: str, invitee: str) -> Change:
    now = datetime.now(UTC)
    start = datetime(2031, 3, 1, 9, tzinfo=UTC)
    event = Event(
        id=uuid.uuid4().hex,
        title="Plan",
        start=start,
        end=start + timedelta(hours=1),
        organizer=organizer,
        created=now,
        updated=now,
        kind=EventKind.APPOINTMENT,
        participants={invitee: Participation()},
    )
    return Change(event, invitation_notifications(event, now), (organizer,))


def test_the_invitee_receives_the_stored_notification_from_a_store(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    announcing: Callable[..., Announcer],
) -> None:
    primary, replica = redis_servers(2)
    record(db, key, primary, 1)
    announcer = announcing(key)
    store = EventStore(db, announce=announcer)
    alice, bob = name("alice"), name("bob")
    account(store, alice)
    account(store, bob)
    on_primary = subscribe(primary, user_channel(bob))
    on_replica = subscribe(replica, user_channel(bob))

    event = store.create(lambda: invitation(alice, bob))

    message = received(on_primary)
    (stored,) = store.notifications(bob, None, 10)
    assert message == stored  # the same record: the cursor included
    assert message["cursor"] == stored["cursor"]
    assert message["event_id"] == event.id
    assert message["kind"] == "invited"
    assert received(on_replica) == stored  # through replication, once published on the primary
    assert announcer.flush(5)
    assert announcer.stats() == {"published": 1, "dropped": 0, "failed": 0, "queued": 0}
    assert on_primary.get_message(timeout=0.3) is None  # once


def test_an_unreachable_redis_costs_the_request_nothing(
    db: DBClient, key: str, announcing: Callable[..., Announcer], tmp_path: Path
) -> None:
    (dead_port,) = free_ports(1)
    record(db, key, RedisServer(dead_port, tmp_path), 1)  # never started: nothing listens there
    announcer = announcing(key, deadline=1.0)
    store = EventStore(db, announce=announcer)
    alice, bob = name("alice"), name("bob")
    account(store, alice)
    account(store, bob)

    began = time.monotonic()
    store.create(lambda: invitation(alice, bob))
    took = time.monotonic() - began

    assert took < 1.0, f"the request took {took:.2f}s: it waited on Redis"
    assert len(store.notifications(bob, None, 10)) == 1  # the notification is stored all the same
    assert announcer.flush(10)
    assert announcer.stats() == {"published": 0, "dropped": 0, "failed": 1, "queued": 0}


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def test_an_invitation_posted_to_the_user_service_reaches_the_invitees_channel(
    cluster: Cluster,
    db: DBClient,
    redis_servers: Callable[..., list[RedisServer]],
    signing_key: Path,
    tmp_path: Path,
) -> None:
    (primary,) = redis_servers(1, users={REDIS_USER: REDIS_PASSWORD}, default_off=True)
    settings = {
        "db_urls": [m.url for m in cluster.members.values()],
        "signing_key": str(signing_key),
        "gateway_secret": SECRET,
        "tls": {"enabled": False},
        "redis": {"enabled": True, "username": REDIS_USER, "password": REDIS_PASSWORD, "tls": False},
    }
    config = tmp_path / "users.yaml"
    config.write_text(yaml.safe_dump(settings))
    record(db, PRIMARY_KEY, primary, 1)  # the real key: the service has no other
    app = users_cli.build_app(users_cli.load(["--config", str(config)]))
    try:
        client = app.test_client()
        client.environ_base[environ_key(SECRET_HEADER)] = SECRET
        alice, bob = name("alice"), name("bob")
        for user in (alice, bob):
            response = client.post("/v1/auth/register", json={"username": user, "password": PASSWORD})
            assert response.status_code == 201, response.get_data(as_text=True)
        on_primary = subscribe(primary, user_channel(bob))

        body = {"title": "Plan", "start": "2031-03-02T09:00:00Z", "end": "2031-03-02T10:00:00Z"}
        response = client.post(
            "/v1/events", json={**body, "participants": [bob]}, headers={IDENTITY_HEADER: alice}
        )
        assert response.status_code == 201, response.get_data(as_text=True)

        message = received(on_primary)
        listed = client.get("/v1/notifications", headers={IDENTITY_HEADER: bob}).get_json()["notifications"]
        assert [n["cursor"] for n in listed] == [message["cursor"]]
        assert message == listed[0]
        assert message["event_id"] == response.get_json()["id"]
        assert (message["user"], message["kind"]) == (bob, "invited")
    finally:
        shutdown(app)  # drains the announcer and stops its locator
        db.delete(PRIMARY_KEY)
