"""Errors of the messaging layer, each with a message fit for a log line (no Redis internals needed)."""

from __future__ import annotations

__all__ = ["MalformedRecord", "MessagingError", "NoPrimary", "PublishFailed"]


class MessagingError(Exception):
    """Base class: anything that kept a message from reaching the Redis primary."""


class MalformedRecord(MessagingError, ValueError):  # noqa: N818 - the condition the caller handles
    """The primary recorded in the DB is not a valid record; says which key and what is wrong."""


class NoPrimary(MessagingError):  # noqa: N818
    """No usable primary right now: none recorded, the record unreadable, or its server not a master."""


class PublishFailed(MessagingError):  # noqa: N818
    """A publish did not succeed within its deadline (or was refused for good, e.g. bad credentials)."""
