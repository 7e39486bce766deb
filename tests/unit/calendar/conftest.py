"""The store over the shared in-process `db` (tests/unit/conftest.py), for the calendar store's tests."""

from __future__ import annotations

import pytest

from agenda.calendar.store import EventStore
from agenda.db.memory import MemoryDBClient


@pytest.fixture
def store(db: MemoryDBClient) -> EventStore:
    return EventStore(db)
