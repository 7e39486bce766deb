"""``/v1/leases``: grant, keep alive and revoke leases (keys attached to a lease go with it)."""

from __future__ import annotations

import time
from typing import Any

import flask

from agenda.common.errors import json_body
from agenda.db.api.args import check_args, lease_id_arg, redirect_requested
from agenda.db.api.context import db_context, revision_response
from agenda.db.api.forwarding import leader_route
from agenda.db.api.problems import raise_for_result
from agenda.db.txn import lease_grant_command, lease_keepalive_command, lease_revoke_command

__all__ = ["leases"]

leases = flask.Blueprint("leases", __name__)


@leases.post("/v1/leases")
def grant_lease() -> Any:
    ctx = db_context()
    check_args(flask.request.args, set())
    redirect_requested()
    body = json_body({"ttl": int}, {"id": int})
    chosen = body.get("id")
    lease_grant_command(chosen if chosen is not None else 1, body["ttl"], 0)  # validate eagerly
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    for _ in range(3):
        lease_id = chosen if chosen is not None else ctx.node.new_lease_id()
        result = ctx.node.propose(lease_grant_command(lease_id, body["ttl"], time.time()))
        if result.get("error") == "lease_exists" and chosen is None:
            continue  # our random id collided: pick another
        break
    raise_for_result(result)
    payload = {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}
    return revision_response(payload, result["revision"], status=201)


@leases.post("/v1/leases/<lease_id>/keepalive")
def keepalive_lease(lease_id: str) -> Any:
    ctx = db_context()
    check_args(flask.request.args, set())
    redirect_requested()
    command = lease_keepalive_command(lease_id_arg(lease_id), time.time())
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    # Recompute "now" on the leader: the proposer's clock is the one that counts.
    command = lease_keepalive_command(command["id"], time.time())
    result = ctx.node.propose(command)
    raise_for_result(result, lease_in_body=False)
    payload = {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}
    return revision_response(payload, result["revision"])


@leases.delete("/v1/leases/<lease_id>")
def revoke_lease(lease_id: str) -> Any:
    ctx = db_context()
    check_args(flask.request.args, set())
    redirect_requested()
    command = lease_revoke_command(lease_id_arg(lease_id))
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    result = ctx.node.propose(command)
    raise_for_result(result, lease_in_body=False)
    payload = {"id": result["id"], "deleted": result["deleted"], "revision": result["revision"]}
    return revision_response(payload, result["revision"])
