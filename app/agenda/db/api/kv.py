"""``/v1/kv``: read, list, write and delete keys."""

from __future__ import annotations

from typing import Any

import flask

from agenda.common.errors import json_body, not_found, problem_type
from agenda.db.api.args import check_args, parse_consistency, parse_int_arg, redirect_requested
from agenda.db.api.context import ANY_JSON, EMPTY, db_context, revision_response
from agenda.db.api.forwarding import leader_route
from agenda.db.api.problems import raise_for_result
from agenda.db.commands import validate_key
from agenda.db.txn import delete_command, put_command

__all__ = ["key_not_found", "kv"]

kv = flask.Blueprint("kv", __name__)


def key_not_found(key: str, revision: int) -> Exception:
    """The 404 of a read of a key that does not exist (at ``revision``)."""
    return not_found(f"key {key!r} does not exist", type=problem_type("key-not-found"), revision=revision)


@kv.get("/v1/kv/<key:key>")
def get_key(key: str) -> Any:
    ctx = db_context()
    args = flask.request.args
    check_args(args, {"consistency"})
    consistency = parse_consistency(args)
    redirect_requested()
    validate_key(key)
    if consistency == "linearizable":
        routed = leader_route(ctx)
        if routed is not None:
            return routed
        ctx.node.read_barrier()
    record, revision = ctx.node.read(lambda sm: (sm.get(key), sm.revision))
    if record is None:
        raise key_not_found(key, revision)
    return revision_response(record, revision)


@kv.get("/v1/kv")
def range_keys() -> Any:
    ctx = db_context()
    args = flask.request.args
    check_args(args, {"consistency", "prefix", "start", "limit"})
    consistency = parse_consistency(args)
    redirect_requested()
    prefix = args.get("prefix", "")
    start = args.get("start")
    limit = parse_int_arg(args, "limit")
    EMPTY.range(prefix, start, limit)  # validates (raises InvalidArgument -> 400) before any routing
    if consistency == "linearizable":
        routed = leader_route(ctx)
        if routed is not None:
            return routed
        ctx.node.read_barrier()
    items, more, revision = ctx.node.read(lambda sm: (*sm.range(prefix, start, limit), sm.revision))
    return revision_response({"items": items, "revision": revision, "more": more}, revision)


@kv.put("/v1/kv/<key:key>")
def put_key(key: str) -> Any:
    # Keep in step with the fast path (agenda.db.api.fastput), which answers most of these requests.
    ctx = db_context()
    check_args(flask.request.args, set())
    redirect_requested()
    body = json_body({"value": ANY_JSON}, {"lease": int, "prev_revision": (int, type(None))})
    command = put_command(
        key, body["value"], lease=body.get("lease", 0), prev_revision=body.get("prev_revision")
    )
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    result = ctx.node.propose(command)
    raise_for_result(result)
    payload = {
        "revision": result["revision"],
        "create_revision": result["create_revision"],
        "version": result["version"],
    }
    return revision_response(payload, result["revision"])


@kv.delete("/v1/kv/<key:key>")
def delete_key(key: str) -> Any:
    ctx = db_context()
    args = flask.request.args
    check_args(args, {"prev_revision"})
    redirect_requested()
    command = delete_command(key, prev_revision=parse_int_arg(args, "prev_revision"))
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    result = ctx.node.propose(command)
    raise_for_result(result)
    if not result.get("deleted"):
        raise not_found(
            f"key {key!r} does not exist", type=problem_type("key-not-found"), revision=result["revision"]
        )
    return revision_response({"revision": result["revision"], "deleted": 1}, result["revision"])
