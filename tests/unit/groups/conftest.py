"""The Group Service's `app` for its view tests: the real factory over the in-process `db`."""

from __future__ import annotations

from collections.abc import Callable

import flask
import pytest

from agenda.db.memory import MemoryDBClient

from ..backends import Caller, Clock, gateway_client, groups_app, users_app

Users = Callable[[str], Caller]


@pytest.fixture
def app(db: MemoryDBClient, clock: Clock) -> flask.Flask:
    return groups_app(db, clock)


@pytest.fixture
def users(db: MemoryDBClient, clock: Clock) -> Users:
    """The User Service on the same DB: `users("bob")` calls it as bob."""
    client = gateway_client(users_app(db, clock))
    return lambda name: Caller(client, name)
