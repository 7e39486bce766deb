"""Messaging over Redis Pub/Sub: find the primary through the DB Service and publish to it.

Services are never given a Redis address: :class:`RedisLocator` reads and watches the primary that
the Redis supervisor records in the DB (``/system/redis/primary``), and :class:`Publisher` publishes
JSON messages there, re-locating across a failover. :func:`user_channel` names a user's channel, and
:class:`Announcer` publishes the notifications the stores committed, in the background.

Only the DB's client side is used (``agenda.db.client``), per the import contract.
"""

from agenda.messaging.announcer import Announcer
from agenda.messaging.channels import USER_PREFIX, user_channel
from agenda.messaging.errors import MalformedRecord, MessagingError, NoPrimary, PublishFailed
from agenda.messaging.hub import RESYNC, Listener, NotificationHub
from agenda.messaging.locator import RedisLocator
from agenda.messaging.publisher import Publisher
from agenda.messaging.record import PRIMARY_KEY, PrimaryRecord, parse_record

__all__ = [
    "PRIMARY_KEY",
    "RESYNC",
    "USER_PREFIX",
    "Announcer",
    "Listener",
    "MalformedRecord",
    "MessagingError",
    "NoPrimary",
    "NotificationHub",
    "PrimaryRecord",
    "PublishFailed",
    "Publisher",
    "RedisLocator",
    "parse_record",
    "user_channel",
]
