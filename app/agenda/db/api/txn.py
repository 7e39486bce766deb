"""``/v1/txn``: compare-and-swap transactions over several keys, as one revision."""

from __future__ import annotations

from typing import Any

import flask

from agenda.common.errors import json_body
from agenda.db.api.args import check_args, redirect_requested
from agenda.db.api.context import db_context, revision_response
from agenda.db.api.forwarding import leader_route
from agenda.db.api.problems import raise_for_result
from agenda.db.txn import txn_command

__all__ = ["txn"]

txn = flask.Blueprint("txn", __name__)


@txn.post("/v1/txn")
def run_txn() -> Any:
    ctx = db_context()
    check_args(flask.request.args, set())
    redirect_requested()
    body = json_body({}, {"compare": list, "success": list, "failure": list})
    command = txn_command(body.get("compare", []), body.get("success", []), body.get("failure", []))
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    result = ctx.node.propose(command)
    raise_for_result(result)
    payload = {
        "succeeded": result["succeeded"],
        "results": result["results"],
        "revision": result["revision"],
    }
    return revision_response(payload, result["revision"])
