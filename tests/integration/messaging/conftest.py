"""Fixtures of the messaging tests: a client of the session's DB cluster, a primary key of the test's
own, and locators that are closed at teardown."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agenda.db.client import DBClient
from agenda.messaging import RedisLocator

from ..conftest import Cluster


@pytest.fixture
def db(cluster: Cluster) -> Iterator[DBClient]:
    client = DBClient([m.url for m in cluster.members.values()], timeout=(1.0, 5.0))
    yield client
    client.close()


@pytest.fixture
def key() -> str:
    """A key of the test's own, so that no other test's record (or watcher) gets in the way."""
    return f"/tests/messaging/{uuid.uuid4().hex}/redis/primary"


@pytest.fixture
def locators() -> Iterator[Callable[..., RedisLocator]]:
    made: list[RedisLocator] = []

    def make(db: DBClient, **kwargs: Any) -> RedisLocator:
        locator = RedisLocator(db, watch_timeout=1.0, socket_timeout=0.5, **kwargs)
        made.append(locator)
        return locator

    yield make
    for locator in made:
        locator.close()
