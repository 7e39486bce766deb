"""HTTP API of a DB member (Flask): key-value, txn, leases, watch, cluster status, health and metrics.

Routing rule: writes and linearizable reads must be served by the leader. A follower validates the
request locally (so malformed requests get their 4xx from whichever member received them), then either
forwards it to the leader's API (default) or, with ``?redirect=true``, answers ``307`` with ``Location``.
A request that was already forwarded once is never forwarded again (``X-Agenda-Forwarded``), so two
members with different opinions about the leader cannot bounce a request between them. Without a known
leader the answer is ``503`` with ``Retry-After``; every wait (proposal, read barrier, forwarding, watch)
is bounded.

Linearizable reads on the leader use a read barrier: a no-op is committed through the Raft log and
applied before the local state is read, so a deposed or partitioned leader (which cannot commit) cannot
answer. ``consistency=stale`` reads the member's local state without any of that.

Membership (``POST /v1/cluster/members``, ``DELETE /v1/cluster/members/<id>``) is routed like any write.
The leader answers once the change is committed: 201/200 with the new ``members``; 400 naming the field
for a malformed id or address; 409 when the id or an address is already a member's, when nothing answers
at the new member's API address as that id with that Raft address (start it first), or when removing the
last member; 404 for an unknown id; 503 with ``Retry-After`` without a leader or while another change is
pending. Removing the leader first hands leadership to a caught-up follower, then forwards the removal to
it. The procedure and the quorum consequences are in :mod:`agenda.db.node`.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import quote

import flask
from werkzeug.routing import BaseConverter

from agenda.common.config import parse_bool
from agenda.common.errors import (
    Problem,
    bad_request,
    conflict,
    install_error_handlers,
    json_body,
    not_found,
    problem_response,
    problem_type,
    unavailable,
)
from agenda.common.http import HttpClient, Unavailable
from agenda.common.logs import bind_request_id, sanitize_request_id
from agenda.db.node import (
    LastMember,
    LeaderUnknown,
    MembershipChangeInProgress,
    NodeError,
    NotLeader,
    OutcomeUnknown,
    Peer,
    Status,
)
from agenda.db.state import (
    Compacted,
    InvalidArgument,
    KVStateMachine,
    LeaseExists,
    LeaseNotFound,
    MemberExists,
    MemberNotFound,
    StateMachineError,
    delete_command,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    member_add_command,
    put_command,
    txn_command,
    validate_key,
    validate_node_id,
)

__all__ = [
    "FORWARDED_HEADER",
    "Backend",
    "Forwarder",
    "create_app",
    "parse_consistency",
    "parse_int_arg",
    "probe_new_member",
    "problem_for_error",
    "problem_for_result",
]

FORWARDED_HEADER: Final = "X-Agenda-Forwarded"
NODE_HEADER: Final = "X-Agenda-Node"
REVISION_HEADER: Final = "X-Agenda-Revision"
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_WATCH_TIMEOUT: Final = 60.0
DEFAULT_WATCH_TIMEOUT: Final = 30.0
RETRY_AFTER: Final = 1
# Asking a would-be member who it is: a local API answers in milliseconds, and the leader must still have
# its whole proposal timeout left within the forwarding member's read timeout.
PROBE_TIMEOUT: Final = (0.5, 1.0)
ANY_JSON: Final = (str, int, float, bool, list, dict, type(None))
_EMPTY: Final = KVStateMachine(history_limit=1)  # never mutated: used to validate range arguments


class Backend(Protocol):
    """What the API needs from a member (``agenda.db.node.Node``; tests substitute fakes)."""

    self_peer: Peer
    proposal_timeout: float
    counters: dict[str, int]

    @property
    def status(self) -> Status: ...

    @property
    def members(self) -> tuple[Peer, ...]: ...

    @property
    def journal_syncs(self) -> int: ...

    def is_leader(self) -> bool: ...

    def leader(self) -> Peer | None: ...

    def healthy(self) -> bool: ...

    def read(self, fn: Callable[[KVStateMachine], Any]) -> Any: ...

    def wait_changed(self, predicate: Callable[[KVStateMachine], Any], timeout: float) -> Any: ...

    def propose(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]: ...

    def read_barrier(self, timeout: float | None = None) -> None: ...

    def new_lease_id(self) -> int: ...

    def add_member(self, peer: Peer, timeout: float | None = None) -> tuple[Peer, ...]: ...

    def remove_member(self, node_id: str, timeout: float | None = None) -> tuple[Peer, ...]: ...

    def transfer_leadership(self, timeout: float | None = None) -> Peer: ...


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# ----------------------------------------------------------------------------------------------------------


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


def problem_for_error(exc: Exception) -> Problem:
    """Map state-machine and node errors to problem details."""
    if isinstance(exc, InvalidArgument):
        return bad_request(str(exc), field=exc.field, type=problem_type("invalid-argument"))
    if isinstance(exc, Compacted):
        return Problem(
            410,
            detail=str(exc),
            type=problem_type("compacted"),
            extras={"oldest_available": exc.oldest_available, "compact_revision": exc.compact_revision},
        )
    if isinstance(exc, LeaseNotFound):
        return not_found(str(exc), type=problem_type("lease-not-found"), lease=exc.lease_id)
    if isinstance(exc, LeaseExists):
        return conflict(str(exc), field="id", type=problem_type("lease-exists"), lease=exc.lease_id)
    if isinstance(exc, MemberExists):
        return conflict(str(exc), field=exc.field, type=problem_type("member-exists"), member=exc.member)
    if isinstance(exc, MemberNotFound):
        return not_found(str(exc), type=problem_type("member-not-found"), member=exc.node_id)
    if isinstance(exc, LastMember):
        return conflict(str(exc), field="id", type=problem_type("last-member"))
    if isinstance(exc, MembershipChangeInProgress):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("membership-change-in-progress"))
    if isinstance(exc, OutcomeUnknown):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("outcome-unknown"), outcome="unknown")
    if isinstance(exc, (LeaderUnknown, NotLeader)):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("no-leader"))
    if isinstance(exc, NodeError):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("proposal-failed"))
    if isinstance(exc, StateMachineError):
        return bad_request(str(exc), type=problem_type(exc.code.replace("_", "-")))
    raise TypeError(f"not a DB error: {exc!r}")


def problem_for_result(result: Mapping[str, Any], *, lease_in_body: bool = True) -> Problem | None:
    """None for a successful state-machine result, else the problem to answer with.

    A missing lease referenced from a request body (put/txn) is a client error about that field (400);
    a missing lease addressed by URL (keepalive/revoke) is a 404.
    """
    if result.get("ok", False):
        return None
    code = result.get("error")
    revision = result.get("revision")
    if code == "conflict":
        return conflict(
            f"key {result.get('key')!r} has mod_revision {result.get('mod_revision')}",
            field="prev_revision",
            type=problem_type("revision-mismatch"),
            key=result.get("key"),
            mod_revision=result.get("mod_revision"),
            revision=revision,
        )
    if code == "lease_not_found":
        if lease_in_body:
            return bad_request(
                str(result.get("message", "lease not found")),
                field="lease",
                type=problem_type("lease-not-found"),
                lease=result.get("lease"),
            )
        return not_found(
            str(result.get("message", "lease not found")),
            type=problem_type("lease-not-found"),
            lease=result.get("lease"),
        )
    if code == "lease_exists":
        return conflict(
            str(result.get("message", "lease exists")), field="id", type=problem_type("lease-exists")
        )
    if code == "invalid_argument":
        return bad_request(
            str(result.get("message", "invalid argument")),
            field=result.get("field"),
            type=problem_type("invalid-argument"),
        )
    return Problem(500, detail=f"state machine refused the command: {code}")


def _raise_for_result(result: Mapping[str, Any], *, lease_in_body: bool = True) -> None:
    problem = problem_for_result(result, lease_in_body=lease_in_body)
    if problem is not None:
        raise problem


def _lease_id_arg(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise bad_request("lease id must be a positive integer", field="id")
    return int(text)


def _new_request_id() -> str:
    """Same format as ``agenda.common.logs.new_request_id`` (32 random hex digits), far cheaper.

    A request id only correlates log lines; it needs uniqueness, not unpredictability, so the process's
    Mersenne Twister (seeded from the OS at start) does instead of a UUID from ``os.urandom`` per request.
    """
    return f"{random.getrandbits(128):032x}"


# ----------------------------------------------------------------------------------------------------------
# Forwarding
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Application
# ----------------------------------------------------------------------------------------------------------

_KV_PREFIX: Final = "/v1/kv/"
_PUT_RULE: Final = "/v1/kv/<key:key>"
_PUT_FIELDS: Final = frozenset({"value", "lease", "prev_revision"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _fast_put_middleware(app: flask.Flask, node: Backend, metrics: _Metrics) -> Callable[..., Any]:
    """WSGI wrapper answering plainly well-formed ``PUT /v1/kv/<key>`` on the leader without Flask.

    The fast path only takes a request when the Flask view would certainly reach ``node.propose``: method
    PUT, an ASCII path under ``/v1/kv/`` with a non-empty key, no query string, ``Content-Type:
    application/json``, a ``Content-Length`` within the body limit, a JSON object with exactly the
    view's fields and types, a command that ``put_command`` accepts, and this member leading. Anything
    else (before any side effect) is handed to Flask with the body it already read, so the answer is
    Flask's. A successful commit is answered with the same bytes and headers as the view (``jsonify``,
    ``X-Agenda-Revision``, ``X-Agenda-Node``, ``X-Request-ID``, the request metric); a failure after
    the proposal (node error, refused result, unexpected exception) is turned into the response by
    Flask's own error handlers and ``after_request`` hooks inside a request context.
    """
    flask_wsgi = app.wsgi_app
    node_id = node.self_peer.node_id

    def fallback(environ: dict[str, Any], start_response: Any, raw: bytes | None) -> Any:
        if raw is not None:
            environ["wsgi.input"] = io.BytesIO(raw)
        return flask_wsgi(environ, start_response)

    def failure(environ: dict[str, Any], start_response: Any, request_id: str, exc: Exception) -> Any:
        environ["HTTP_X_REQUEST_ID"] = request_id  # before_request binds the id we already used
        environ["wsgi.input"] = io.BytesIO(b"")
        with app.request_context(environ):
            rv = app.preprocess_request()
            if rv is None:
                rv = app.handle_user_exception(exc)
            response = app.finalize_request(rv)
        return response(environ, start_response)

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if (
            environ.get("REQUEST_METHOD") != "PUT"
            or not path.startswith(_KV_PREFIX)
            or len(path) == len(_KV_PREFIX)
            or environ.get("QUERY_STRING")
            or environ.get("SCRIPT_NAME")
            or not path.isascii()
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json"
        ):
            return flask_wsgi(environ, start_response)
        length_text = environ.get("CONTENT_LENGTH", "")
        if (
            not (length_text.isascii() and length_text.isdigit())
            or not 0 < int(length_text) <= MAX_BODY_BYTES
        ):
            return flask_wsgi(environ, start_response)
        if not node.is_leader():
            return flask_wsgi(environ, start_response)
        raw = environ["wsgi.input"].read(int(length_text))
        try:  # json.loads(raw, parse_constant=...) without building a decoder per call
            body = _JSON_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        except (ValueError, UnicodeDecodeError):
            return fallback(environ, start_response, raw)
        if type(body) is not dict or "value" not in body or not _PUT_FIELDS.issuperset(body):
            return fallback(environ, start_response, raw)
        lease = body.get("lease", 0)
        prev_revision = body.get("prev_revision")
        if type(lease) is not int or not (prev_revision is None or type(prev_revision) is int):
            return fallback(environ, start_response, raw)
        try:
            command = put_command(
                path[len(_KV_PREFIX) :], body["value"], lease=lease, prev_revision=prev_revision
            )
        except StateMachineError:
            return fallback(environ, start_response, raw)

        request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or _new_request_id()
        binding = bind_request_id(request_id)
        try:
            result = node.propose(command)
            problem = problem_for_result(result)
            if problem is not None:
                raise problem
            revision = result["revision"]
            create_revision = result["create_revision"]
            version = result["version"]
        except Exception as exc:
            return failure(environ, start_response, request_id, exc)
        finally:
            binding.reset()
        if type(revision) is int and type(create_revision) is int and type(version) is int:
            # exactly what jsonify produces for these three integers (compact separators, newline)
            text = f'{{"revision":{revision},"create_revision":{create_revision},"version":{version}}}\n'
        else:  # pragma: no cover - the state machine always returns integers
            payload = {"revision": revision, "create_revision": create_revision, "version": version}
            text = json.dumps(payload, separators=(",", ":")) + "\n"
        data = text.encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                (REVISION_HEADER, str(revision)),
                (NODE_HEADER, node_id),
                ("X-Request-ID", request_id),
            ],
        )
        with metrics.lock:
            metrics.requests[("PUT", _PUT_RULE, 200)] += 1
        return [data]

    return middleware


class _Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.forwarded = 0
        self.redirected = 0


class KeyConverter(BaseConverter):
    """Like ``path`` but also matches a leading slash, so ``/v1/kv//users/1`` names key ``/users/1``."""

    regex = ".+"
    part_isolating = False


def create_app(node: Backend, forwarder: Forwarder | None = None, *, fast_writes: bool = True) -> flask.Flask:
    """The Flask application of one member.

    ``fast_writes`` (default) serves the hot path - a well-formed ``PUT /v1/kv/<key>`` received by the
    leader - without Flask's per-request machinery (see :func:`_fast_put_middleware`); every other request,
    and every such request that is not plainly well-formed, goes through Flask unchanged.
    """
    app = flask.Flask("agenda.db")
    app.url_map.converters["key"] = KeyConverter
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install_error_handlers(app)
    fwd = forwarder or Forwarder("http", (1.0, node.proposal_timeout + 2.0))
    metrics = _Metrics()
    app.extensions["agenda_db"] = {"node": node, "forwarder": fwd, "metrics": metrics}

    def db_error(exc: StateMachineError | NodeError | LastMember) -> flask.Response:
        return problem_response(problem_for_error(exc))

    app.register_error_handler(StateMachineError, db_error)
    app.register_error_handler(NodeError, db_error)
    app.register_error_handler(LastMember, db_error)
    if fast_writes:
        app.wsgi_app = _fast_put_middleware(app, node, metrics)  # type: ignore[method-assign]

    @app.before_request
    def _bind_request_id() -> None:
        request_id = sanitize_request_id(flask.request.headers.get("X-Request-ID")) or _new_request_id()
        flask.g.request_id_binding = bind_request_id(request_id)
        flask.g.request_id = request_id

    @app.after_request
    def _decorate(response: flask.Response) -> flask.Response:
        response.headers.setdefault(NODE_HEADER, node.self_peer.node_id)
        request_id = flask.g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        rule = flask.request.url_rule.rule if flask.request.url_rule is not None else "unmatched"
        with metrics.lock:
            metrics.requests[(flask.request.method, rule, response.status_code)] += 1
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        binding = flask.g.pop("request_id_binding", None)
        if binding is not None:
            binding.reset()

    # ------------------------------------------------------------------------------- routing helpers

    def leader_route() -> flask.Response | None:
        """None when this member must serve the request itself; else the forwarded/redirected answer."""
        if node.is_leader():
            return None
        request = flask.request
        redirect = _redirect_requested()
        leader = node.leader()
        if leader is None or leader.node_id == node.self_peer.node_id:
            raise unavailable(RETRY_AFTER, "no leader is known right now", type=problem_type("no-leader"))
        if request.headers.get(FORWARDED_HEADER):
            raise unavailable(
                RETRY_AFTER,
                "not the leader (the request was already forwarded once)",
                type=problem_type("no-leader"),
            )
        return route_to(leader, redirect)

    def route_to(leader: Peer, redirect: bool) -> flask.Response:
        """Forward the current request to ``leader`` (marked as forwarded), or 307 when ``redirect``."""
        request = flask.request
        path = quote(request.path, safe="/")
        params = [(k, v) for k, v in request.args.items(multi=True) if k != "redirect"]
        if redirect:
            query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
            location = fwd.base_url(leader) + path + (f"?{query}" if query else "")
            with metrics.lock:
                metrics.redirected += 1
            response = flask.Response(status=307)
            response.headers["Location"] = location
            return response
        body = request.get_json(silent=True) if request.data else None
        headers = {FORWARDED_HEADER: node.self_peer.node_id}
        with metrics.lock:
            metrics.forwarded += 1
        try:
            # idempotent=False: the leader's own 5xx (e.g. 503 with Retry-After) is relayed as it is; the
            # forwarder never retries anyway.
            upstream = fwd.client(leader).request(
                request.method, path, params=params, json=body, headers=headers, idempotent=False
            )
        except Unavailable as exc:
            # Membership changes are not idempotent whatever the method: a removal that went through answers
            # 404 when repeated.
            changes_state = request.method == "POST" or request.path.startswith("/v1/cluster/members")
            outcome = "unknown" if changes_state else None
            extras = {"outcome": outcome} if outcome else {}
            raise unavailable(
                RETRY_AFTER,
                f"the leader {leader.node_id} did not answer: {exc}",
                type=problem_type("leader-unreachable"),
                **extras,
            ) from None
        response = flask.Response(upstream.content, status=upstream.status_code)
        for name in _HOP_HEADERS:
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        return response

    def _redirect_requested() -> bool:
        raw = flask.request.args.get("redirect")
        if raw is None:
            return False
        try:
            return parse_bool(raw)
        except ValueError:
            raise bad_request("redirect must be true or false", field="redirect") from None

    def commit(command: dict[str, Any]) -> dict[str, Any]:
        return node.propose(command)

    def revision_response(payload: Any, revision: int, status: int = 200) -> flask.Response:
        response = flask.jsonify(payload)
        response.status_code = status
        response.headers[REVISION_HEADER] = str(revision)
        return response

    # ------------------------------------------------------------------------------------- KV

    @app.get("/v1/kv/<key:key>")
    def get_key(key: str) -> Any:
        args = flask.request.args
        check_args(args, {"consistency"})
        consistency = parse_consistency(args)
        _redirect_requested()
        validate_key(key)
        if consistency == "linearizable":
            routed = leader_route()
            if routed is not None:
                return routed
            node.read_barrier()
        kv, revision = node.read(lambda sm: (sm.get(key), sm.revision))
        if kv is None:
            raise not_found(
                f"key {key!r} does not exist", type=problem_type("key-not-found"), revision=revision
            )
        return revision_response(kv, revision)

    @app.get("/v1/kv")
    def range_keys() -> Any:
        args = flask.request.args
        check_args(args, {"consistency", "prefix", "start", "limit"})
        consistency = parse_consistency(args)
        _redirect_requested()
        prefix = args.get("prefix", "")
        start = args.get("start")
        limit = parse_int_arg(args, "limit")
        _EMPTY.range(prefix, start, limit)  # validates (raises InvalidArgument -> 400) before any routing
        if consistency == "linearizable":
            routed = leader_route()
            if routed is not None:
                return routed
            node.read_barrier()
        items, more, revision = node.read(lambda sm: (*sm.range(prefix, start, limit), sm.revision))
        return revision_response({"items": items, "revision": revision, "more": more}, revision)

    @app.put("/v1/kv/<key:key>")
    def put_key(key: str) -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        body = json_body({"value": ANY_JSON}, {"lease": int, "prev_revision": (int, type(None))})
        command = put_command(
            key, body["value"], lease=body.get("lease", 0), prev_revision=body.get("prev_revision")
        )
        routed = leader_route()
        if routed is not None:
            return routed
        result = commit(command)
        _raise_for_result(result)
        payload = {
            "revision": result["revision"],
            "create_revision": result["create_revision"],
            "version": result["version"],
        }
        return revision_response(payload, result["revision"])

    @app.delete("/v1/kv/<key:key>")
    def delete_key(key: str) -> Any:
        args = flask.request.args
        check_args(args, {"prev_revision"})
        _redirect_requested()
        command = delete_command(key, prev_revision=parse_int_arg(args, "prev_revision"))
        routed = leader_route()
        if routed is not None:
            return routed
        result = commit(command)
        _raise_for_result(result)
        if not result.get("deleted"):
            raise not_found(
                f"key {key!r} does not exist", type=problem_type("key-not-found"), revision=result["revision"]
            )
        return revision_response({"revision": result["revision"], "deleted": 1}, result["revision"])

    @app.post("/v1/txn")
    def txn() -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        body = json_body({}, {"compare": list, "success": list, "failure": list})
        command = txn_command(body.get("compare", []), body.get("success", []), body.get("failure", []))
        routed = leader_route()
        if routed is not None:
            return routed
        result = commit(command)
        _raise_for_result(result)
        payload = {
            "succeeded": result["succeeded"],
            "results": result["results"],
            "revision": result["revision"],
        }
        return revision_response(payload, result["revision"])

    # ----------------------------------------------------------------------------------- leases

    @app.post("/v1/leases")
    def grant_lease() -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        body = json_body({"ttl": int}, {"id": int})
        chosen = body.get("id")
        lease_grant_command(chosen if chosen is not None else 1, body["ttl"], 0)  # validate eagerly
        routed = leader_route()
        if routed is not None:
            return routed
        for _ in range(3):
            lease_id = chosen if chosen is not None else node.new_lease_id()
            result = commit(lease_grant_command(lease_id, body["ttl"], time.time()))
            if result.get("error") == "lease_exists" and chosen is None:
                continue  # our random id collided: pick another
            break
        _raise_for_result(result)
        payload = {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}
        return revision_response(payload, result["revision"], status=201)

    @app.post("/v1/leases/<lease_id>/keepalive")
    def keepalive_lease(lease_id: str) -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        command = lease_keepalive_command(_lease_id_arg(lease_id), time.time())
        routed = leader_route()
        if routed is not None:
            return routed
        # Recompute "now" on the leader: the proposer's clock is the one that counts.
        command = lease_keepalive_command(command["id"], time.time())
        result = commit(command)
        _raise_for_result(result, lease_in_body=False)
        payload = {"id": result["id"], "ttl": result["ttl"], "deadline": result["deadline"]}
        return revision_response(payload, result["revision"])

    @app.delete("/v1/leases/<lease_id>")
    def revoke_lease(lease_id: str) -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        command = lease_revoke_command(_lease_id_arg(lease_id))
        routed = leader_route()
        if routed is not None:
            return routed
        result = commit(command)
        _raise_for_result(result, lease_in_body=False)
        payload = {"id": result["id"], "deleted": result["deleted"], "revision": result["revision"]}
        return revision_response(payload, result["revision"])

    # ------------------------------------------------------------------------------------ watch

    @app.get("/v1/watch")
    def watch() -> Any:
        args = flask.request.args
        check_args(args, {"prefix", "since", "timeout"})
        prefix = args.get("prefix", "")
        _EMPTY.range(prefix, None, None)  # validates the prefix
        since = parse_int_arg(args, "since")
        timeout = parse_float_arg(args, "timeout", default=DEFAULT_WATCH_TIMEOUT, maximum=MAX_WATCH_TIMEOUT)
        if since is None:
            since = node.read(lambda sm: sm.revision)
        cursor = [since]

        def probe(sm: KVStateMachine) -> tuple[list[dict[str, Any]], int] | None:
            events = sm.events_since(cursor[0])  # Compacted -> 410 (only possible on the first probe)
            cursor[0] = max(cursor[0], sm.revision)
            matching = [event for event in events if event["kv"]["key"].startswith(prefix)]
            return (matching, sm.revision) if matching else None

        found = node.wait_changed(probe, timeout)
        if found is None:
            revision = node.read(lambda sm: max(sm.revision, since))
            return revision_response({"events": [], "revision": revision}, revision)
        events, revision = found
        return revision_response({"events": events, "revision": revision}, revision)

    # ---------------------------------------------------------------------------- cluster status

    def member_rows(members: tuple[Peer, ...], status: Status) -> list[dict[str, Any]]:
        return [
            {
                "id": peer.node_id,
                "raft": peer.raft_addr,
                "api": peer.api_addr,
                "reachable": peer.node_id == node.self_peer.node_id or peer.raft_addr in status.connected,
            }
            for peer in members
        ]

    @app.get("/v1/cluster")
    def cluster() -> Any:
        status = node.status
        leader = node.leader()
        return flask.jsonify(
            {
                "id": node.self_peer.node_id,
                "leader": leader.node_id if leader is not None else None,
                "term": status.term,
                "commit_index": status.commit_index,
                "applied_index": status.applied_index,
                "members": member_rows(node.members, status),
            }
        )

    @app.post("/v1/cluster/members")
    def add_member() -> Any:
        check_args(flask.request.args, set())
        _redirect_requested()
        body = json_body({"id": str, "raft": str, "api": str})
        member_add_command(body["id"], body["raft"], body["api"])  # 400 naming the malformed field
        peer = Peer(body["id"], body["raft"], body["api"])
        routed = leader_route()
        if routed is not None:
            return routed
        # Cheap refusal first (the leader's directory is current), then the probe, then the change itself,
        # which checks again where no other change can interleave.
        node.read(lambda kv: kv.check_member_free(peer.node_id, peer.raft_addr, peer.api_addr))
        probe_new_member(fwd, peer)
        members = node.add_member(peer)
        response = flask.jsonify({"members": member_rows(members, node.status)})
        response.status_code = 201
        return response

    @app.delete("/v1/cluster/members/<node_id>")
    def remove_member(node_id: str) -> Any:
        check_args(flask.request.args, set())
        redirect = _redirect_requested()
        validate_node_id(node_id)
        routed = leader_route()
        if routed is not None:
            return routed
        if node_id == node.self_peer.node_id:
            # pysyncobj cannot remove its own leader: hand over, then let the new leader remove this member.
            # Forwarding a second time cannot loop: the successor is not this member, and it never forwards
            # a request that carries the forwarded mark.
            return route_to(node.transfer_leadership(), redirect)
        members = node.remove_member(node_id)
        return flask.jsonify({"members": member_rows(members, node.status)})

    @app.get("/v1/health")
    def health() -> Any:
        leader = node.leader()
        body = {
            "id": node.self_peer.node_id,
            "leader": leader.node_id if leader is not None else None,
            "quorum": node.status.has_quorum,
        }
        if node.healthy():
            return flask.jsonify({"status": "ok", **body})
        problem = unavailable(
            RETRY_AFTER, "this member sees no leader with a quorum", type=problem_type("unhealthy"), **body
        )
        return problem_response(problem)

    @app.get("/metrics")
    def prometheus() -> Any:
        status = node.status
        keys, leases, revision = node.read(lambda sm: (len(sm), len(sm.leases()), sm.revision))
        labels = f'node="{node.self_peer.node_id}"'
        lines = [
            "# TYPE agenda_db_is_leader gauge",
            f"agenda_db_is_leader{{{labels}}} {int(node.is_leader())}",
            "# TYPE agenda_db_healthy gauge",
            f"agenda_db_healthy{{{labels}}} {int(node.healthy())}",
            "# TYPE agenda_db_raft_term gauge",
            f"agenda_db_raft_term{{{labels}}} {status.term}",
            "# TYPE agenda_db_raft_commit_index gauge",
            f"agenda_db_raft_commit_index{{{labels}}} {status.commit_index}",
            "# TYPE agenda_db_raft_applied_index gauge",
            f"agenda_db_raft_applied_index{{{labels}}} {status.applied_index}",
            "# TYPE agenda_db_reachable_members gauge",
            f"agenda_db_reachable_members{{{labels}}} {len(status.connected) + 1}",
            "# TYPE agenda_db_revision gauge",
            f"agenda_db_revision{{{labels}}} {revision}",
            "# TYPE agenda_db_keys gauge",
            f"agenda_db_keys{{{labels}}} {keys}",
            "# TYPE agenda_db_leases gauge",
            f"agenda_db_leases{{{labels}}} {leases}",
            "# TYPE agenda_db_journal_fsyncs_total counter",
            f"agenda_db_journal_fsyncs_total{{{labels}}} {node.journal_syncs}",
        ]
        for name, value in sorted(node.counters.items()):
            lines.append(f"# TYPE agenda_db_{name}_total counter")
            lines.append(f"agenda_db_{name}_total{{{labels}}} {value}")
        with metrics.lock:
            requests = sorted(metrics.requests.items())
            forwarded, redirected = metrics.forwarded, metrics.redirected
        lines.append("# TYPE agenda_db_forwarded_total counter")
        lines.append(f"agenda_db_forwarded_total{{{labels}}} {forwarded}")
        lines.append("# TYPE agenda_db_redirected_total counter")
        lines.append(f"agenda_db_redirected_total{{{labels}}} {redirected}")
        lines.append("# TYPE agenda_db_http_requests_total counter")
        for (method, rule, code), count in requests:
            route = rule.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'agenda_db_http_requests_total{{{labels},method="{method}",route="{route}",code="{code}"}} '
                f"{count}"
            )
        return flask.Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")

    return app
