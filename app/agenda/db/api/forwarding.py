"""Routing to the leader: forward the request to the leader's API, or redirect there with ``307``.

Writes and linearizable reads must be served by the leader. A follower validates the request first (so
malformed requests get their 4xx from whichever member received them), then calls :func:`leader_route`.
A request that was already forwarded once is never forwarded again (``X-Agenda-Forwarded``), so two
members with different opinions about the leader cannot bounce a request between them.

A forwarded request is watched while it waits: when this member stops following that leader (its
election timeout fired: the leader crashed or was cut off), the request is answered at once with 503,
outcome unknown for a write, instead of waiting out the read timeout on a connection that will never
answer. A crashed machine sends no reset, so without this a write forwarded just before the crash
held its client for the whole timeout (5 s) although a new leader was elected within one second.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import flask

from agenda.common.errors import conflict, problem_type, unavailable
from agenda.common.http import HttpClient, Unavailable
from agenda.common.jsonbody import JSONBodyError, loads
from agenda.db.api.args import redirect_requested
from agenda.db.api.context import (
    FORWARDED_HEADER,
    NODE_HEADER,
    PROBE_TIMEOUT,
    RETRY_AFTER,
    REVISION_HEADER,
    DBContext,
)
from agenda.db.peers import Peer

__all__ = ["Forwarder", "LeaderLost", "leader_route", "probe_new_member", "route_to", "while_following"]


class Forwarder:
    """HTTP clients towards members' APIs (one per member, created lazily, never retrying by itself)."""

    def __init__(
        self,
        scheme: str,
        timeout: tuple[float, float],
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.scheme = scheme
        self.timeout = timeout
        self.verify = verify
        self.cert = cert
        self._clients: dict[str, HttpClient] = {}
        self._lock = threading.Lock()

    def base_url(self, peer: Peer) -> str:
        return f"{self.scheme}://{peer.api_addr}"

    def client(self, peer: Peer) -> HttpClient:
        with self._lock:
            client = self._clients.get(peer.api_addr)
            if client is None:
                client = HttpClient(
                    [self.base_url(peer)],
                    timeout=self.timeout,
                    retries=0,
                    verify=self.verify,
                    cert=self.cert,
                )
                self._clients[peer.api_addr] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


# How often a forwarded request's wait checks that its leader still leads (a few per election timeout).
LEADER_CHECK_INTERVAL: Final = 0.05

# Forwarded requests wait here, so that the request's own thread can watch the leader meanwhile.
_FORWARD_POOL: Final = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="db-forward")


class LeaderLost(Exception):  # noqa: N818 - the condition the caller handles
    """This member stopped following the leader a forwarded request went to; its answer never came."""


def while_following(
    send: Callable[[], Any], still_following: Callable[[], bool], interval: float = LEADER_CHECK_INTERVAL
) -> Any:
    """``send()``'s result, or :class:`LeaderLost` as soon as ``still_following()`` turns False first.

    ``send`` runs on a pool thread (with the caller's context variables: the request id); an abandoned
    one ends on its own, at its connection's dead-peer detection or read timeout.
    """
    future = _FORWARD_POOL.submit(contextvars.copy_context().run, send)
    while True:
        done, _ = concurrent.futures.wait((future,), timeout=interval)
        if done:
            return future.result()
        if not still_following():
            raise LeaderLost


_HOP_HEADERS: Final = ("Content-Type", "Retry-After", "Location", REVISION_HEADER, NODE_HEADER)


def probe_new_member(forwarder: Forwarder, peer: Peer) -> None:
    """409 unless an agenda-db member answers at ``peer.api_addr`` as ``peer.node_id`` at ``peer.raft_addr``.

    Adding a member that is not running, or a typo in an address, would make the new configuration count
    a voter that never answers (with one or two members, the cluster would stop committing), so the
    newcomer must already run and describe itself as the request does.
    """
    start_first = "start it first, with --peer for every current member"
    try:
        response = forwarder.client(peer).request("GET", "/v1/cluster", timeout=PROBE_TIMEOUT)
        body = response.json() if response.status_code == 200 else None
    except (Unavailable, ValueError) as exc:
        raise conflict(
            f"no agenda-db member answers at {peer.api_addr} ({exc}); {start_first}",
            field="api",
            type=problem_type("member-unreachable"),
        ) from None
    if not isinstance(body, dict):
        raise conflict(
            f"{peer.api_addr} did not answer GET /v1/cluster as an agenda-db member; {start_first}",
            field="api",
            type=problem_type("member-unreachable"),
        )
    if body.get("id") != peer.node_id:
        raise conflict(
            f"the member at {peer.api_addr} is {body.get('id')!r}, not {peer.node_id!r}",
            field="id",
            type=problem_type("member-mismatch"),
        )
    own = [m for m in body.get("members") or [] if isinstance(m, dict) and m.get("id") == peer.node_id]
    if not own or own[0].get("raft") != peer.raft_addr:
        actual = own[0].get("raft") if own else None
        raise conflict(
            f"{peer.node_id} at {peer.api_addr} speaks Raft at {actual!r}, not {peer.raft_addr!r}",
            field="raft",
            type=problem_type("member-mismatch"),
        )


def leader_route(ctx: DBContext) -> flask.Response | None:
    """None when this member must serve the current request itself; else the forwarded/redirected answer."""
    node = ctx.node
    if node.is_leader():
        return None
    request = flask.request
    redirect = redirect_requested()
    leader = node.leader()
    if leader is None or leader.node_id == node.self_peer.node_id:
        raise unavailable(RETRY_AFTER, "no leader is known right now", type=problem_type("no-leader"))
    if request.headers.get(FORWARDED_HEADER):
        raise unavailable(
            RETRY_AFTER,
            "not the leader (the request was already forwarded once)",
            type=problem_type("no-leader"),
        )
    return route_to(ctx, leader, redirect)


def route_to(ctx: DBContext, leader: Peer, redirect: bool) -> flask.Response:
    """Forward the current request to ``leader`` (marked as forwarded), or 307 when ``redirect``."""
    request = flask.request
    metrics = ctx.metrics
    path = quote(request.path, safe="/")
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "redirect"]
    if redirect:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        location = ctx.forwarder.base_url(leader) + path + (f"?{query}" if query else "")
        with metrics.lock:
            metrics.redirected += 1
        response = flask.Response(status=307)
        response.headers["Location"] = location
        return response
    body = _forwarded_body()
    headers = {FORWARDED_HEADER: ctx.node.self_peer.node_id}
    with metrics.lock:
        metrics.forwarded += 1
    client = ctx.forwarder.client(leader)
    method = request.method
    node = ctx.node

    def still_following() -> bool:
        current = node.leader()
        return current is not None and current.node_id == leader.node_id

    try:
        # idempotent=False: the leader's own 5xx (e.g. 503 with Retry-After) is relayed as it is; the
        # forwarder never retries anyway.
        upstream = while_following(
            lambda: client.request(method, path, params=params, json=body, headers=headers, idempotent=False),
            still_following,
        )
    except (Unavailable, LeaderLost) as exc:
        # Membership changes are not idempotent whatever the method: a removal that went through answers
        # 404 when repeated.
        changes_state = method == "POST" or request.path.startswith("/v1/cluster/members")
        outcome = "unknown" if changes_state else None
        extras = {"outcome": outcome} if outcome else {}
        reason = "is no longer followed here (an election began)" if isinstance(exc, LeaderLost) else ""
        raise unavailable(
            RETRY_AFTER,
            f"the leader {leader.node_id} {reason or f'did not answer: {exc}'}",
            type=problem_type("leader-unreachable"),
            **extras,
        ) from None
    response = flask.Response(upstream.content, status=upstream.status_code)
    for name in _HOP_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    return response


def _forwarded_body() -> Any:
    """The JSON body to send on, or None for a request without one or with one that is not JSON.

    Views that take a body have already parsed and checked it before routing; the rest (keepalive, the
    DELETEs) ignore theirs, so a body that does not parse is dropped, as the leader would ignore it. It is
    parsed with the services' one strict parser: a nested ``[[[[...`` or a ``NaN`` must not become a 500
    here (the recursion, or a body that ``requests`` refuses to encode again).
    """
    request = flask.request
    if not request.data or not request.is_json:
        return None
    try:
        return loads(request.data)
    except JSONBodyError:
        return None
