"""Names of the Redis Pub/Sub channels, in one place so publishers and subscribers agree."""

from __future__ import annotations

from typing import Final

__all__ = ["USER_PREFIX", "user_channel"]

USER_PREFIX: Final = "notifications:"
# Glob characters would make a pattern subscription (PSUBSCRIBE notifications:*) match the wrong users.
_FORBIDDEN: Final = frozenset("*?[]\\:")


def user_channel(user_id: str) -> str:
    """``notifications:<user_id>``, the channel of one user's notifications.

    The id is checked rather than escaped: user ids are opaque tokens (uuid hex), so an empty one, one
    with whitespace, control, separator or glob characters is a caller's bug that would otherwise
    publish where nobody listens, or where the wrong user does.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"a user id must be a non-empty string, got {user_id!r}")
    if len(user_id) > 256:
        raise ValueError("a user id must be at most 256 characters")
    if any(not c.isprintable() or c.isspace() or c in _FORBIDDEN for c in user_id):
        raise ValueError(f"user id {user_id!r} contains whitespace, control, ':' or glob characters")
    return USER_PREFIX + user_id
