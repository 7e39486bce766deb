"""The User Service's `app` for its view tests: the real factory over the in-process `db`."""

from __future__ import annotations

import flask
import pytest

from agenda.db.memory import MemoryDBClient

from ..backends import Clock, users_app


@pytest.fixture
def app(db: MemoryDBClient, clock: Clock) -> flask.Flask:
    return users_app(db, clock)
