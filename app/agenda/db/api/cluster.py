"""``/v1/cluster``: who the members are and who leads; adding and removing members.

Membership changes are routed like any write. The leader answers once the change is committed: 201/200
with the new ``members``; 400 naming the field for a malformed id or address; 409 when the id or an
address is already a member's, when nothing answers at the new member's API address as that id with
that Raft address (start it first), or when removing the last member; 404 for an unknown id; 503 with
``Retry-After`` without a leader or while another change is pending. Removing the leader first hands
leadership to a caught-up follower, then forwards the removal to it. The procedure and the quorum
consequences are in :mod:`agenda.db.node`.

``POST /v1/cluster/transfer-leadership`` with ``{"from": "<id>"}`` makes ``<id>`` stop leading before an
operator (a rolling deploy) restarts it: if it leads, a caught-up follower takes over first, so clients
meet no election. Answered once the change is done, 200 with ``leader`` (the leader now) and
``transferred``; when ``<id>`` does not lead, nothing happens (``transferred: false``), so the call is safe
to repeat. 404 for an id that is not a member, 409 for the only member, 503 with ``Retry-After`` without
a leader or when no follower took over in time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flask

from agenda.common.errors import json_body
from agenda.db.api.args import check_args, redirect_requested
from agenda.db.api.context import Backend, db_context
from agenda.db.api.forwarding import leader_route, probe_new_member, route_to
from agenda.db.commands import validate_node_id
from agenda.db.peers import Peer
from agenda.db.txn import member_add_command

if TYPE_CHECKING:
    from agenda.db.node import Status

__all__ = ["cluster"]

cluster = flask.Blueprint("cluster", __name__)


def _member_rows(node: Backend, members: tuple[Peer, ...], status: Status) -> list[dict[str, Any]]:
    return [
        {
            "id": peer.node_id,
            "raft": peer.raft_addr,
            "api": peer.api_addr,
            "reachable": peer.node_id == node.self_peer.node_id or peer.raft_addr in status.connected,
        }
        for peer in members
    ]


@cluster.get("/v1/cluster")
def cluster_status() -> Any:
    node = db_context().node
    status = node.status
    leader = node.leader()
    return flask.jsonify(
        {
            "id": node.self_peer.node_id,
            "leader": leader.node_id if leader is not None else None,
            "term": status.term,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "members": _member_rows(node, node.members, status),
        }
    )


@cluster.post("/v1/cluster/members")
def add_member() -> Any:
    ctx = db_context()
    node = ctx.node
    check_args(flask.request.args, set())
    redirect_requested()
    body = json_body({"id": str, "raft": str, "api": str})
    member_add_command(body["id"], body["raft"], body["api"])  # 400 naming the malformed field
    peer = Peer(body["id"], body["raft"], body["api"])
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    # Cheap refusal first (the leader's directory is current), then the probe, then the change itself,
    # which checks again where no other change can interleave.
    node.read(lambda kv: kv.check_member_free(peer.node_id, peer.raft_addr, peer.api_addr))
    probe_new_member(ctx.forwarder, peer)
    members = node.add_member(peer)
    response = flask.jsonify({"members": _member_rows(node, members, node.status)})
    response.status_code = 201
    return response


@cluster.delete("/v1/cluster/members/<node_id>")
def remove_member(node_id: str) -> Any:
    ctx = db_context()
    node = ctx.node
    check_args(flask.request.args, set())
    redirect = redirect_requested()
    validate_node_id(node_id)
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    if node_id == node.self_peer.node_id:
        # pysyncobj cannot remove its own leader: hand over, then let the new leader remove this member.
        # Forwarding a second time cannot loop: the successor is not this member, and it never forwards
        # a request that carries the forwarded mark.
        return route_to(ctx, node.transfer_leadership(), redirect)
    members = node.remove_member(node_id)
    return flask.jsonify({"members": _member_rows(node, members, node.status)})


@cluster.post("/v1/cluster/transfer-leadership")
def transfer_leadership() -> Any:
    ctx = db_context()
    node = ctx.node
    check_args(flask.request.args, set())
    redirect_requested()
    body = json_body({"from": str})
    validate_node_id(body["from"], field="from")
    routed = leader_route(ctx)
    if routed is not None:
        return routed
    node.read(lambda kv: kv.require_member(body["from"]))  # 404 naming the member
    if body["from"] != node.self_peer.node_id:
        return flask.jsonify({"leader": node.self_peer.node_id, "transferred": False})
    successor = node.transfer_leadership()
    return flask.jsonify({"leader": successor.node_id, "transferred": True})
