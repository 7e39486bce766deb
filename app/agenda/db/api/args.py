"""Query-string arguments of the DB's HTTP API: each parser answers 400 naming the parameter."""

from __future__ import annotations

from collections.abc import Mapping

import flask

from agenda.common.config import parse_bool
from agenda.common.errors import bad_request

__all__ = [
    "check_args",
    "lease_id_arg",
    "parse_consistency",
    "parse_float_arg",
    "parse_int_arg",
    "redirect_requested",
]


def parse_consistency(args: Mapping[str, str]) -> str:
    """``consistency`` query parameter: ``linearizable`` (default) or ``stale``."""
    value = args.get("consistency", "linearizable")
    if value not in ("linearizable", "stale"):
        raise bad_request("consistency must be 'linearizable' or 'stale'", field="consistency")
    return value


def parse_int_arg(args: Mapping[str, str], name: str, *, minimum: int = 0) -> int | None:
    """An optional non-negative integer query parameter; 400 naming it otherwise."""
    raw = args.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise bad_request(f"{name} must be an integer >= {minimum}", field=name)
    value = int(text)
    if value < minimum:
        raise bad_request(f"{name} must be an integer >= {minimum}", field=name)
    return value


def parse_float_arg(args: Mapping[str, str], name: str, *, default: float, maximum: float) -> float:
    """An optional float query parameter in [0, maximum]; 400 naming it otherwise."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"{name} must be a number of seconds", field=name) from None
    if not 0 <= value <= maximum:  # also rejects NaN
        raise bad_request(f"{name} must be between 0 and {maximum:g} seconds", field=name)
    return value


def check_args(args: Mapping[str, str], allowed: set[str]) -> None:
    """Reject unknown query parameters: a misspelt ``consistency`` must not silently mean the default."""
    unknown = sorted(set(args) - allowed - {"redirect"})
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])


def lease_id_arg(text: str) -> int:
    """A lease id in a URL: decimal digits of a positive int64 (the state machine checks the range)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise bad_request("lease id must be a positive integer", field="id")
    return int(text)


def redirect_requested() -> bool:
    """The current request's ``redirect`` flag: answer 307 towards the leader instead of forwarding."""
    raw = flask.request.args.get("redirect")
    if raw is None:
        return False
    try:
        return parse_bool(raw)
    except ValueError:
        raise bad_request("redirect must be true or false", field="redirect") from None
