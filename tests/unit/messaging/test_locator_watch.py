"""The locator's handling of the DB record, against the in-process DB (no Redis server needed).

What matters here: a malformed, absent or changing record is reported clearly, the watcher thread
survives all of them, and the record in use follows the DB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agenda.db.memory import InProcessDB, MemoryDBClient
from agenda.db.state import KVStateMachine
from agenda.devstack.stack import free_ports
from agenda.messaging import PRIMARY_KEY, NoPrimary, PrimaryRecord, RedisLocator


def poll(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.01)
    return value


def record(port: int, epoch: int) -> dict[str, Any]:
    return {"name": f"127.0.0.1:{port}", "host": "127.0.0.1", "port": port, "epoch": epoch}


@pytest.fixture
def db() -> MemoryDBClient:
    return MemoryDBClient()


@pytest.fixture
def locator(db: MemoryDBClient) -> Iterator[RedisLocator]:
    loc = RedisLocator(db, watch_timeout=0.5, socket_timeout=0.5)
    yield loc
    loc.close()
    assert loc._thread is not None
    poll(lambda: not loc._thread.is_alive(), 3.0)  # type: ignore[union-attr]


def test_the_watcher_follows_every_change_of_the_record(db: MemoryDBClient, locator: RedisLocator) -> None:
    assert locator.current() is None
    poll(lambda: locator.problem)  # first read done: nothing recorded yet
    assert "no Redis primary is recorded at /system/redis/primary" in locator.problem  # type: ignore[operator]
    db.put(PRIMARY_KEY, record(7001, 1))
    assert poll(lambda: locator.current()) == PrimaryRecord("127.0.0.1:7001", "127.0.0.1", 7001, 1)
    assert locator.problem is None
    db.put(PRIMARY_KEY, record(7002, 2))
    poll(lambda: locator.current() and locator.current().port == 7002)  # type: ignore[union-attr]
    assert locator.switches == 1
    db.put(PRIMARY_KEY + "-lock", "someone")  # a key sharing the prefix is not the record
    db.delete(PRIMARY_KEY)
    poll(lambda: locator.current() is None)
    assert locator.problem == "no Redis primary is recorded at /system/redis/primary"


def test_a_malformed_record_is_reported_and_the_watcher_survives_it(
    db: MemoryDBClient, locator: RedisLocator, caplog: pytest.LogCaptureFixture
) -> None:
    db.put(PRIMARY_KEY, record(7001, 1))
    poll(lambda: locator.current())
    with caplog.at_level(logging.ERROR, logger="agenda.messaging.locator"):
        db.put(PRIMARY_KEY, {"name": "x", "host": "127.0.0.1", "port": "six", "epoch": 2})
        # The watcher logs just after it records the problem: wait for the log line itself.
        poll(lambda: any("'port'" in r.getMessage() for r in caplog.records))
    assert "'port' must be an integer" in locator.problem  # type: ignore[operator]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "/system/redis/primary" in line
    assert "still using 127.0.0.1:7001 (epoch 1)" in line
    assert not any(r.exc_info for r in caplog.records)  # reported, not a crash with a trace
    assert locator.current() == PrimaryRecord("127.0.0.1:7001", "127.0.0.1", 7001, 1)  # last good stays
    assert locator._thread is not None
    assert locator._thread.is_alive()
    db.put(PRIMARY_KEY, record(7003, 3))  # the watcher still follows the key afterwards
    poll(lambda: locator.current() and locator.current().port == 7003)  # type: ignore[union-attr]
    assert locator.problem is None


def test_a_watch_overtaken_by_compaction_re_reads_the_record_and_watches_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = MemoryDBClient(InProcessDB(KVStateMachine(history_limit=2)))
    db.put(PRIMARY_KEY, record(7001, 1))
    loc = RedisLocator(db, watch_timeout=1.0, socket_timeout=0.5)
    try:
        poll(lambda: loc.current())
        reads = db.counts["range"]
        with caplog.at_level(logging.INFO, logger="agenda.messaging.locator"):
            with db.burst():  # three changes the watcher cannot see one by one: two fall out of history
                for epoch in (2, 3, 4):
                    db.put(PRIMARY_KEY, record(7000 + epoch, epoch))
            poll(lambda: locator_epoch(loc) == 4)
        assert any("compacted past revision" in r.getMessage() for r in caplog.records)
        assert db.counts["range"] == reads + 1  # the re-read, which found the newest record
        assert loc.switches == 1  # straight from epoch 1 to 4: the lost changes were never replayed
        db.put(PRIMARY_KEY, record(7005, 5))  # watching again, from the re-read's revision
        poll(lambda: locator_epoch(loc) == 5)
        assert db.counts["range"] == reads + 1
    finally:
        loc.close()
        assert loc._thread is not None
        poll(lambda: not loc._thread.is_alive(), 3.0)  # type: ignore[union-attr]


def locator_epoch(loc: RedisLocator) -> int | None:
    current = loc.current()
    return current.epoch if current is not None else None


def test_with_only_a_malformed_record_client_says_why_without_trying_redis(db: MemoryDBClient) -> None:
    db.put(PRIMARY_KEY, "garbage")
    with RedisLocator(db, watch=False) as loc, pytest.raises(NoPrimary, match="malformed record") as caught:
        loc.client()
    assert "not a JSON object" in str(caught.value)


def test_an_unreachable_recorded_primary_is_no_primary(db: MemoryDBClient) -> None:
    (port,) = free_ports(1)  # nothing listens there
    db.put(PRIMARY_KEY, record(port, 1))
    with RedisLocator(db, watch=False, socket_timeout=0.5) as loc, pytest.raises(NoPrimary) as caught:
        loc.client()
    assert f"127.0.0.1:{port} (epoch 1) is unreachable" in str(caught.value)


def test_a_db_outage_is_no_primary_not_a_crash(db: MemoryDBClient) -> None:
    db.outage(times=10)
    with RedisLocator(db, watch=False) as loc, pytest.raises(NoPrimary, match="cannot read"):
        loc.client()
    db.clear_faults()
