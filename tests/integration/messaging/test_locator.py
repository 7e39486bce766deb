"""The Redis locator and publisher against the real DB cluster and real Redis servers.

Each test records a primary in the DB (the supervisor's job, done by hand here), then checks where
messages arrive: a subscriber on a server only receives what was published on that server or, for a
replica, on its primary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from agenda.db.client import DBClient
from agenda.messaging import PRIMARY_KEY, Publisher, PublishFailed, RedisLocator, user_channel

from ..conftest import RedisServer, wait_until
from .pubsub import nothing_received, received, record, subscribe


def test_finds_the_recorded_primary_and_publishes_there(
    db: DBClient, redis_servers: Callable[..., list[RedisServer]], locators: Callable[..., RedisLocator]
) -> None:
    primary, _replica = redis_servers(2)
    record(db, PRIMARY_KEY, primary, 1)  # the real key, once
    try:
        locator = locators(db)
        channel = user_channel(uuid.uuid4().hex)
        on_primary = subscribe(primary, channel)
        assert Publisher(locator).publish(channel, {"kind": "invited", "n": 1}) == 1
        assert received(on_primary) == {"kind": "invited", "n": 1}
        assert locator.current() is not None
        assert locator.current().name == primary.name
        assert locator.client().connection_pool.connection_kwargs["port"] == primary.port
    finally:
        db.delete(PRIMARY_KEY)


def test_follows_a_failover_recorded_in_the_db(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    locators: Callable[..., RedisLocator],
) -> None:
    old, new = redis_servers(2)
    record(db, key, old, 1)
    locator = locators(db, key=key)
    publisher = Publisher(locator)
    channel = user_channel("u1")
    on_old = subscribe(old, channel)
    assert publisher.publish(channel, {"seq": 1}) == 1
    assert received(on_old) == {"seq": 1}
    on_new = subscribe(new, channel)

    new.client().replicaof("NO", "ONE")  # what the supervisor does, then records it
    started = time.monotonic()
    record(db, key, new, 2)
    wait_until(lambda: locator.current().name == new.name, 5.0, 0.002, "the locator to switch")
    switched = time.monotonic() - started
    old.kill()

    assert locator.switches == 1
    started = time.monotonic()
    assert publisher.publish(channel, {"seq": 2}) == 1
    published = time.monotonic() - started
    assert received(on_new) == {"seq": 2}
    assert locator.client().connection_pool.connection_kwargs["port"] == new.port

    old.start(replicaof=new)  # back on its port, as a replica: it gets the messages only through `new`
    on_old = subscribe(old, channel)
    wait_until(lambda: old.client().info("replication")["master_link_status"] == "up", 10.0)
    assert publisher.publish(channel, {"seq": 3}) == 1
    assert received(on_old) == {"seq": 3}
    assert received(on_new) == {"seq": 3}
    assert locator.current().name == new.name
    print(
        f"locator switched {switched * 1000:.0f} ms after the DB write, publish took {published * 1000:.0f}ms"
    )


def test_a_recorded_replica_is_never_published_to_until_the_record_is_corrected(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    locators: Callable[..., RedisLocator],
) -> None:
    primary, replica = redis_servers(2)
    record(db, key, replica, 1)  # wrong: it answers ROLE as a replica
    locator = locators(db, key=key)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    publisher = Publisher(locator, deadline=10.0, sleep=sleep)
    channel = user_channel("u2")
    on_primary = subscribe(primary, channel)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(publisher.publish, channel, {"seq": 1})
        wait_until(lambda: len(pauses) >= 3, 5.0, 0.01, "the publisher to retry")
        assert not future.done()
        assert nothing_received(on_primary)
        record(db, key, primary, 2)
        assert future.result(timeout=10) == 1
    assert received(on_primary) == {"seq": 1}
    assert locator.current().name == primary.name


def test_a_replica_recorded_for_good_fails_after_the_deadline(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    locators: Callable[..., RedisLocator],
) -> None:
    _primary, replica = redis_servers(2)
    record(db, key, replica, 1)
    publisher = Publisher(locators(db, key=key), deadline=1.5)
    started = time.monotonic()
    with pytest.raises(PublishFailed) as caught:
        publisher.publish(user_channel("u3"), {"seq": 1})
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 5.0
    assert f"{replica.name} (epoch 1) answers as a slave" in str(caught.value)
    assert "within 1.5s" in str(caught.value)


def test_a_demoted_primary_gets_nothing_even_before_the_record_moves(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    locators: Callable[..., RedisLocator],
) -> None:
    """A replica accepts a plain PUBLISH: the write-guarded script is what keeps messages off it."""
    first, second = redis_servers(2, primary_first=False)
    record(db, key, first, 1)
    locator = locators(db, key=key)
    publisher = Publisher(locator, deadline=1.0)
    channel = user_channel("u4")
    assert publisher.publish(channel, {"seq": 1}) == 0  # connected and verified; nobody listens yet
    on_first = subscribe(first, channel)
    first.client().replicaof(second.host, second.port)  # demoted behind the locator's back
    with pytest.raises(PublishFailed, match="answers as a slave"):
        publisher.publish(channel, {"seq": 2})
    assert nothing_received(on_first)
    assert first.client().publish(channel, "plain") == 1  # what an unguarded PUBLISH would have done


def test_authenticates_as_a_named_user_when_the_default_user_is_off(
    db: DBClient,
    key: str,
    redis_servers: Callable[..., list[RedisServer]],
    locators: Callable[..., RedisLocator],
) -> None:
    primary, _replica = redis_servers(2, users={"agenda": "s3cret-pw"}, default_off=True)
    record(db, key, primary, 1)
    channel = user_channel("u5")
    on_primary = subscribe(primary, channel)
    with pytest.raises(redis.AuthenticationError):
        primary.client(username="default").ping()  # the default user really is off

    publisher = Publisher(locators(db, key=key, username="agenda", password="s3cret-pw"))
    assert publisher.publish(channel, {"seq": 1}) == 1
    assert received(on_primary) == {"seq": 1}

    started = time.monotonic()
    anonymous = Publisher(locators(db, key=key), deadline=5.0)
    with pytest.raises(PublishFailed, match="refused our credentials"):
        anonymous.publish(channel, {"seq": 2})
    assert time.monotonic() - started < 2.0  # refused at once, not retried until the deadline
    wrong = Publisher(locators(db, key=key, username="agenda", password="nope"), deadline=5.0)
    with pytest.raises(PublishFailed, match="refused our credentials"):
        wrong.publish(channel, {"seq": 3})
    assert nothing_received(on_primary)
