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
    pubsub = server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    # Subscribed once the server counts it (SUBSCRIBE is sent on another connection than PUBLISH).
    wait_until(lambda: dict(server.client().pubsub_numsub(channel))[channel.encode()] >= 1, 5.0)
    return pubsub


def received(pubsub: redis.client.PubSub, timeout: float = 5.0) -> dict[str, Any]:
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), timeout, 0.0, "a message")
    return json.loads(message["data"])


def nothing_received(pubsub: redis.client.PubSub) -> bool:
    return pubsub.get_message(timeout=0.3) is None
