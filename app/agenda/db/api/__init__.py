"""HTTP API of a DB member (Flask): key-value, txn, leases, watch, cluster status, health and metrics.

Routing rule: writes and linearizable reads must be served by the leader. A follower validates the
request locally (so malformed requests get their 4xx from whichever member received them), then either
forwards it to the leader's API (default) or, with ``?redirect=true``, answers ``307`` with ``Location``
(:mod:`agenda.db.api.forwarding`). Without a known leader the answer is ``503`` with ``Retry-After``;
every wait (proposal, read barrier, forwarding, watch) is bounded.

Linearizable reads on the leader use a read barrier (ReadIndex: a majority confirms the leadership
with one heartbeat round, and the leader has applied its commit index of that moment; or a no-op
through the log where ReadIndex cannot be used) before the local state is read, so a deposed or
partitioned leader (which cannot get a majority) cannot answer. ``consistency=stale`` reads the
member's local state without any of that.

The routes are blueprints, one module each: :mod:`~agenda.db.api.kv`, :mod:`~agenda.db.api.txn`,
:mod:`~agenda.db.api.leases`, :mod:`~agenda.db.api.watch`, :mod:`~agenda.db.api.cluster` (status and
membership) and :mod:`~agenda.db.api.health` (health and metrics). :func:`create_app` assembles them
with the error mapping (:mod:`~agenda.db.api.problems`) and the PUT fast path
(:mod:`~agenda.db.api.fastput`).
"""

from __future__ import annotations

import flask
from werkzeug.routing import BaseConverter

from agenda.common.errors import install_error_handlers, problem_response
from agenda.common.web import install_request_id
from agenda.db.api.cluster import cluster
from agenda.db.api.context import MAX_BODY_BYTES, NODE_HEADER, Backend, DBContext, Metrics, new_request_id
from agenda.db.api.fastput import fast_put_middleware
from agenda.db.api.forwarding import Forwarder
from agenda.db.api.health import health
from agenda.db.api.kv import kv
from agenda.db.api.leases import leases
from agenda.db.api.problems import problem_for_error
from agenda.db.api.txn import txn
from agenda.db.api.watch import watch
from agenda.db.errors import LastMember, NodeError, StateMachineError

__all__ = ["Backend", "Forwarder", "KeyConverter", "create_app"]

_BLUEPRINTS = (kv, txn, leases, watch, cluster, health)


class KeyConverter(BaseConverter):
    """Like ``path`` but also matches a leading slash, so ``/v1/kv//users/1`` names key ``/users/1``."""

    regex = ".+"
    part_isolating = False


def create_app(node: Backend, forwarder: Forwarder | None = None, *, fast_writes: bool = True) -> flask.Flask:
    """The Flask application of one member.

    ``fast_writes`` (default) serves the hot path - a well-formed ``PUT /v1/kv/<key>`` received by the
    leader - without Flask's per-request machinery (see :func:`~agenda.db.api.fastput.fast_put_middleware`);
    every other request, and every such request that is not plainly well-formed, goes through Flask
    unchanged.
    """
    app = flask.Flask("agenda.db")
    app.url_map.converters["key"] = KeyConverter  # before the blueprints' rules are added
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install_error_handlers(app)
    ctx = DBContext(node, forwarder or Forwarder("http", (1.0, node.proposal_timeout + 2.0)), Metrics())
    app.extensions["agenda_db"] = ctx

    def db_error(exc: StateMachineError | NodeError | LastMember) -> flask.Response:
        return problem_response(problem_for_error(exc))

    app.register_error_handler(StateMachineError, db_error)
    app.register_error_handler(NodeError, db_error)
    app.register_error_handler(LastMember, db_error)
    if fast_writes:
        app.wsgi_app = fast_put_middleware(app, ctx)  # type: ignore[method-assign]
    install_request_id(app, new_id=new_request_id)

    @app.after_request
    def _decorate(response: flask.Response) -> flask.Response:
        response.headers.setdefault(NODE_HEADER, node.self_peer.node_id)
        rule = flask.request.url_rule.rule if flask.request.url_rule is not None else "unmatched"
        with ctx.metrics.lock:
            ctx.metrics.requests[(flask.request.method, rule, response.status_code)] += 1
        return response

    for blueprint in _BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
