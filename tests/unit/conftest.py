"""Fixtures of the backend services' view tests, flaskr-style.

`tests/unit/users/conftest.py` and `tests/unit/groups/conftest.py` each supply `app`, their service's
real application over the `db` below; the rest is shared: an in-process DB (`MemoryDBClient`: inject
races with `db.contend`, lost answers with `db.unknown_outcome`, no leader with `db.outage`), the
services' clock, a test `client` that calls as the gateway does, and callers with seeded accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest
from flask.testing import FlaskClient

from agenda.db.memory import MemoryDBClient

from .backends import Caller, Clock, add_account, gateway_client


@pytest.fixture
def db() -> Iterator[MemoryDBClient]:
    client = MemoryDBClient()
    yield client
    # A fault that never happened means the test did not reach the branch it is about.
    assert client.pending_faults() == 0, "an injected DB fault never happened"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return gateway_client(app)


def _person(name: str) -> object:
    @pytest.fixture(name=name)
    def person(client: FlaskClient, db: MemoryDBClient) -> Caller:
        add_account(db, name)
        return Caller(client, name)

    return person


alice = _person("alice")
bob = _person("bob")
carol = _person("carol")
dan = _person("dan")
