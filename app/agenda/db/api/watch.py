"""``/v1/watch``: long-poll for the changes under a prefix since a revision."""

from __future__ import annotations

from typing import Any

import flask

from agenda.db.api.args import check_args, parse_float_arg, parse_int_arg
from agenda.db.api.context import (
    DEFAULT_WATCH_TIMEOUT,
    EMPTY,
    MAX_WATCH_TIMEOUT,
    db_context,
    revision_response,
)
from agenda.db.state import KVStateMachine

__all__ = ["watch"]

watch = flask.Blueprint("watch", __name__)


@watch.get("/v1/watch")
def watch_prefix() -> Any:
    node = db_context().node
    args = flask.request.args
    check_args(args, {"prefix", "since", "timeout"})
    prefix = args.get("prefix", "")
    EMPTY.range(prefix, None, None)  # validates the prefix
    since = parse_int_arg(args, "since")
    timeout = parse_float_arg(args, "timeout", default=DEFAULT_WATCH_TIMEOUT, maximum=MAX_WATCH_TIMEOUT)
    if since is None:
        since = node.read(lambda sm: sm.revision)
    cursor = [since]

    def probe(sm: KVStateMachine) -> tuple[list[dict[str, Any]], int] | None:
        # Compacted -> 410: on the first probe when `since` is too old, and on a later one when the
        # history moved past the cursor meanwhile (a burst of commits before this thread got the lock
        # back, or a snapshot installed); either way the events the watcher needs are gone.
        events = sm.events_since(cursor[0])
        cursor[0] = max(cursor[0], sm.revision)
        matching = [event for event in events if event["kv"]["key"].startswith(prefix)]
        return (matching, sm.revision) if matching else None

    found = node.wait_changed(probe, timeout)
    if found is None:
        # The revision the events were checked up to, not the member's revision now: a commit after the
        # last probe would otherwise be skipped by a watcher continuing from this answer.
        revision = cursor[0]
        return revision_response({"events": [], "revision": revision}, revision)
    events, revision = found
    return revision_response({"events": events, "revision": revision}, revision)
