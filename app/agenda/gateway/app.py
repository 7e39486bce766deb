"""Flask application factory of the API gateway.

For every request: bind a request id (the client's X-Request-ID if it is a safe token, else a new
one; echoed in the response), find the route (404/405 here, never at a backend), and for non-public
routes verify the access token (signature with the User Service's public key, alg, kid, iss, aud,
exp) BEFORE anything is sent to a backend. The body must be a JSON object (checked here too, so
malformed input never costs a backend call). Login attempts are rate-limited per username and client
address. The request then goes to one of the route's backend instances with the caller's identity in
`X-Agenda-User` and the gateway's shared secret; idempotent requests fail over to another instance
(`HttpClient`). Client-supplied identity or secret headers are never forwarded: only the headers
listed here are.

CalDAV (paths under /dav, and /.well-known/caldav) has its own rules: `agenda.gateway.dav`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import flask
import requests

from agenda.common.discovery import read_view
from agenda.common.errors import (
    Problem,
    install_error_handlers,
    json_object,
    not_found,
    problem_type,
    too_many_requests,
    unauthorized,
)
from agenda.common.http import DEFAULT_IDEMPOTENT, HttpClient, Unavailable
from agenda.common.tokens import InvalidToken, TokenVerifier
from agenda.common.web import (
    IDEMPOTENCY_HEADER,
    IDENTITY_HEADER,
    MAX_BODY,
    SECRET_HEADER,
    idempotency_key,
    install_request_id,
)
from agenda.gateway.dav import (
    WELL_KNOWN,
    BasicLoginCache,
    DavSettings,
    is_dav_path,
    serve_dav,
    well_known_redirect,
)
from agenda.gateway.ratelimit import RateLimiter, login_key
from agenda.gateway.routes import LOCAL_ROUTES, ROUTES, STREAM_PATH, Route, RouteTable, openapi_document
from agenda.gateway.streams import (
    ReplayFailed,
    StreamSettings,
    initial_cursor,
    notification_stream,
    resume_cursor,
)

__all__ = ["GatewayDeps", "create_app", "deps_of"]

log = logging.getLogger(__name__)

_PASS_RESPONSE_HEADERS: Final = (
    "Content-Type",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
    "Content-Disposition",
)
_PASS_REQUEST_HEADERS: Final = ("Accept", "Accept-Language")
_EXT: Final = "agenda.gateway"


@dataclass
class GatewayDeps:
    verifier: TokenVerifier
    backends: Mapping[str, HttpClient]
    gateway_secret: str
    login_limiter: RateLimiter
    routes: tuple[Route, ...] = field(default=ROUTES)
    # The notification streams' live source (`agenda.messaging.NotificationHub`, built in the serving
    # process); None: no Redis, the streams poll the DB.
    hub: Any = None
    streams: StreamSettings = field(default_factory=StreamSettings)
    # The operator's bearer token for the /v1/cluster/ routes, as its SHA-256 (hex); empty: refused.
    admin_token_sha256: str = ""
    # The host's gossip view file (agenda.common.discovery), shown by GET /v1/cluster/services.
    gossip_view: str = ""
    # CalDAV under /dav (agenda.gateway.dav): its body limits, and the Basic logins verified lately.
    dav: DavSettings = field(default_factory=DavSettings)
    dav_logins: BasicLoginCache = field(default_factory=BasicLoginCache)


def _json_payload() -> dict[str, Any] | None:
    """The body as a checked JSON object (400/415 here, never at a backend), or None without one."""
    if not flask.request.get_data(cache=True):
        return None  # GET, DELETE and bare POSTs are forwarded without a body
    return json_object()


def _bearer() -> str:
    header = flask.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("A bearer access token is required.")
    return token.strip()


def _relay(response: requests.Response) -> flask.Response:
    out = flask.Response(response.content, status=response.status_code)
    for name in _PASS_RESPONSE_HEADERS:
        if name in response.headers:
            out.headers[name] = response.headers[name]
    return out


def deps_of(app: flask.Flask) -> GatewayDeps:
    """What `create_app` was given (for hooks outside a request: gunicorn's worker start)."""
    return app.extensions[_EXT]


def create_app(deps: GatewayDeps, *, fast_forward: bool = True) -> flask.Flask:
    """The gateway. `fast_forward` (default) forwards a plainly well-formed request of a signed-in
    user without Flask's request machinery (`agenda.gateway.fastpath`); the answer is the same."""
    app = flask.Flask("agenda.gateway")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions[_EXT] = deps
    install_error_handlers(app)
    install_request_id(app)
    routes = tuple(r for r in deps.routes if r.service in deps.backends)

    @app.before_request
    def caldav() -> flask.Response | None:
        # Before Flask's URL routing, whose rules list the JSON API's methods only: every method a
        # CalDAV client sends (PROPFIND, REPORT...) and any other (a 405 with the CalDAV Allow list)
        # reaches one place. Registered after install_request_id, so the request id is bound.
        path = flask.request.path
        if path in WELL_KNOWN:
            return well_known_redirect()
        if is_dav_path(path) and "users" in deps.backends:
            return serve_dav(deps)
        return None

    table = RouteTable((*LOCAL_ROUTES, *routes))
    document = openapi_document((*routes, *LOCAL_ROUTES))

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def dispatch(path: str) -> Any:
        request = flask.request
        route, allowed = table.match(request.method, request.path)
        if route is None:
            if allowed:
                raise Problem(
                    405, detail=f"{request.method} is not allowed here", headers={"Allow": ", ".join(allowed)}
                )
            raise not_found("No such route.")
        claims: dict[str, Any] | None = None
        if route.admin:
            _check_admin(deps)
            return _cluster_services(deps)
        if not route.public:
            try:
                claims = deps.verifier.verify(_bearer())
            except InvalidToken as exc:
                raise unauthorized(exc.reason, type=problem_type("invalid-token")) from None
        user: str | None = None if claims is None else claims["sub"]
        if route.service == "gateway":
            if route.path == "/v1/openapi.json":
                return document
            if route.path == STREAM_PATH and claims is not None:
                return _stream(deps, claims)
            health: dict[str, Any] = {"status": "ok", "service": "gateway", "backends": sorted(deps.backends)}
            if deps.hub is not None:
                # None until this process served its first stream (the hub is built on first use).
                health["notifications"] = deps.hub.stats()
            return health
        body = _json_payload()
        limit_key = None
        if route.path == "/v1/auth/login":
            username = body.get("username") if body else None
            limit_key = login_key(username if isinstance(username, str) else "", request.remote_addr)
            wait = deps.login_limiter.attempt(limit_key)
            if wait is not None:
                raise too_many_requests(wait, "Too many login attempts; wait before trying again.")
        headers = {SECRET_HEADER: deps.gateway_secret}
        if body is not None:
            # Checked above; passed on as the client sent it (the backend parses it with the same
            # parser), not encoded again.
            headers["Content-Type"] = "application/json"
        if user is not None:
            headers[IDENTITY_HEADER] = user
        for name in _PASS_REQUEST_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        client_key = idempotency_key() if route.keyed else None
        if route.keyed:
            # With a key, even of our own making, a resent create creates nothing new, so the client
            # may resend it when a kept-alive connection to the backend closes under the request.
            headers[IDEMPOTENCY_HEADER] = client_key or uuid.uuid4().hex
        params = {key: request.args.getlist(key) for key in request.args}
        client = deps.backends[route.service]
        try:
            response = client.request(
                request.method,
                quote(request.path, safe="/"),
                data=None if body is None else request.get_data(cache=True),
                params=params,
                headers=headers,
                idempotent=route.keyed or route.resendable or None,
            )
        except Unavailable as exc:
            raise unavailable_problem(route, request.method, client_key, exc) from None
        if limit_key is not None and response.status_code == 200:
            deps.login_limiter.reset(limit_key)
        return _relay(response)

    if fast_forward:
        from agenda.gateway.fastpath import fast_forward_middleware

        app.wsgi_app = fast_forward_middleware(app, deps, table)  # type: ignore[method-assign]
    return app


def unavailable_problem(route: Route, method: str, client_key: str | None, exc: Unavailable) -> Problem:
    """What the client is told when no instance of the route's backend answered (and it is logged)."""
    log.warning("backend %s unavailable: %s", route.service, exc)
    if method in DEFAULT_IDEMPOTENT or route.resendable or client_key is not None:
        return Problem(503, detail=f"The {route.service} service is unavailable.", retry_after=1)
    return Problem(
        502,
        detail=f"The {route.service} service did not answer; the outcome is unknown."
        f" Send {IDEMPOTENCY_HEADER} to make such a request safe to repeat."
        if route.keyed
        else f"The {route.service} service did not answer; the outcome is unknown.",
    )


def _check_admin(deps: GatewayDeps) -> None:
    """The operator's token, compared as its SHA-256 in constant time; users' tokens do not open it."""
    offered = hashlib.sha256(_bearer().encode()).hexdigest()
    if not deps.admin_token_sha256 or not hmac.compare_digest(offered, deps.admin_token_sha256):
        raise unauthorized("This route needs the operator's token.", type=problem_type("operator-only"))


def _cluster_services(deps: GatewayDeps) -> dict[str, Any]:
    """GET /v1/cluster/services: the members of the gossip view, and what this gateway routes to now.

    `routing` is each backend's replica list as this process's client holds it: the view file is
    re-read at most every `view_refresh_ms`, so for that long after the file changes the two differ.
    """
    if not deps.gossip_view:
        raise Problem(503, detail="This gateway routes by its configured URLs: it has no gossip view.")
    try:
        member, written, members = read_view(deps.gossip_view)
    except (OSError, ValueError) as exc:
        log.warning("gossip view %s unreadable: %s", deps.gossip_view, exc)
        raise Problem(503, detail="The gossip view cannot be read right now.", retry_after=2) from None
    return {
        "member": member,
        "age_s": round(max(0.0, time.time() - written), 3),
        "members": [
            {
                "name": m.name,
                "service": m.service,
                "status": m.status,
                "state": m.state,
                "incarnation": m.incarnation,
                "version": m.version,
                "api_url": m.api_url,
                "addr": m.addr,
            }
            for m in members
        ],
        "routing": {service: list(client.replicas()) for service, client in sorted(deps.backends.items())},
    }


def _backend_headers(deps: GatewayDeps, user: str) -> dict[str, str]:
    return {SECRET_HEADER: deps.gateway_secret, IDENTITY_HEADER: user}


def _stream(deps: GatewayDeps, claims: dict[str, Any]) -> flask.Response:
    """The caller's notification stream (see `agenda.gateway.streams`)."""
    request = flask.request
    if set(request.args) - {"since"}:
        unknown = sorted(set(request.args) - {"since"})[0]
        raise Problem(400, detail=f"unknown query parameter {unknown!r}", field=unknown)
    resume = resume_cursor(request.headers.get("Last-Event-ID"), request.args.get("since"))
    user = claims["sub"]
    settings = deps.streams
    users = deps.backends["users"]

    def fetch(cursor: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while len(records) < settings.replay_limit:
            try:
                response = users.request(
                    "GET",
                    "/v1/notifications",
                    params={"since": cursor, "limit": str(settings.page)},
                    headers=_backend_headers(deps, user),
                )
            except Unavailable as exc:
                raise ReplayFailed(str(exc)) from None
            if response.status_code != 200:
                raise ReplayFailed(f"the users service answered {response.status_code}")
            page = response.json().get("notifications")
            if not isinstance(page, list):
                raise ReplayFailed("the users service's answer has no notifications list")
            records.extend(page)
            if len(page) < settings.page:
                break
            cursor = page[-1]["cursor"]
        return records

    now = time.monotonic()
    ends_at = min(now + settings.max_age, now + (float(claims["exp"]) - time.time()))
    # Listen before reading the DB: a notification committed in between is then in one or the other.
    listener = deps.hub.listen(user) if deps.hub is not None else None
    try:
        cursor = resume if resume is not None else initial_cursor(datetime.now(UTC))
        first = fetch(cursor) if resume is not None else []
    except ReplayFailed as exc:
        if listener is not None:
            listener.close()
        log.warning("notification stream of %s: replay failed: %s", user, exc)
        raise Problem(503, detail="Notifications cannot be read right now.", retry_after=2) from None
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    body = notification_stream(user, cursor, first, fetch, deps.hub, settings, ends_at, listener=listener)
    response = flask.Response(flask.stream_with_context(body), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must pass each event on at once
    return response
