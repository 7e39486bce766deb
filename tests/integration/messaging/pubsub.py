"""What the messaging tests do by hand: record a primary in the DB, subscribe, wait for a message."""

from __future__ import annotations

import json
from typing import Any

import redis

from agenda.db.client import DBClient

from ..conftest import RedisServer, wait_until


def record(db: DBClient, key: str, server: RedisServer, epoch: int) -> None:
    """Record `server` as the primary at `key` (the supervisor's job)."""
    db.put(key, {"name": server.name, "host": server.host, "port": server.port, "epoch": epoch})


def subscribe(server: RedisServer, channel: str) -> redis.client.PubSub:
    pubsub = server.client().pubsub()
    pubsub.subscribe(channel)
    # Subscribed once the server confirms it. Reading the confirmation here matters: with
    # ignore_subscribe_messages set, a later get_message that reads it returns None at once, which
    # looks like "nothing published" without having waited at all.
    confirmation = wait_until(lambda: pubsub.get_message(timeout=0.1), 5.0, 0.0, "the subscription")
    assert confirmation["type"] == "subscribe", confirmation
    pubsub.ignore_subscribe_messages = True
    return pubsub


def received(pubsub: redis.client.PubSub, timeout: float = 5.0) -> dict[str, Any]:
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), timeout, 0.0, "a message")
    return json.loads(message["data"])


def nothing_received(pubsub: redis.client.PubSub) -> bool:
    return pubsub.get_message(timeout=0.3) is None
