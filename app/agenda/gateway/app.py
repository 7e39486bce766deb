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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import flask
import requests

from agenda.common.errors import (
    Problem,
    install_error_handlers,
    json_object,
    not_found,
    problem_type,
    too_many_requests,
    unauthorized,
)
from agenda.common.http import HttpClient, Unavailable
from agenda.common.tokens import InvalidToken, TokenVerifier
from agenda.common.web import IDENTITY_HEADER, MAX_BODY, SECRET_HEADER, install_request_id
from agenda.gateway.ratelimit import RateLimiter
from agenda.gateway.routes import LOCAL_ROUTES, ROUTES, Route, RouteTable, openapi_document

__all__ = ["GatewayDeps", "create_app"]

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


def _json_payload() -> dict[str, Any] | None:
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


def create_app(deps: GatewayDeps) -> flask.Flask:
    app = flask.Flask("agenda.gateway")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions[_EXT] = deps
    install_error_handlers(app)
    install_request_id(app)
    routes = tuple(r for r in deps.routes if r.service in deps.backends)
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
        if route.service == "gateway":
            if route.path == "/v1/openapi.json":
                return document
            return {"status": "ok", "service": "gateway", "backends": sorted(deps.backends)}
        user: str | None = None
        if not route.public:
            try:
                user = deps.verifier.verify(_bearer())["sub"]
            except InvalidToken as exc:
                raise unauthorized(exc.reason, type=problem_type("invalid-token")) from None
        body = _json_payload()
        limit_key = None
        if route.path == "/v1/auth/login":
            username = body.get("username") if body else None
            limit_key = f"{username if isinstance(username, str) else ''}|{request.remote_addr}"
            wait = deps.login_limiter.attempt(limit_key)
            if wait is not None:
                raise too_many_requests(wait, "Too many login attempts; wait before trying again.")
        headers = {SECRET_HEADER: deps.gateway_secret}
        if user is not None:
            headers[IDENTITY_HEADER] = user
        for name in _PASS_REQUEST_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        params = {key: request.args.getlist(key) for key in request.args}
        client = deps.backends[route.service]
        try:
            response = client.request(
                request.method, quote(request.path, safe="/"), json=body, params=params, headers=headers
            )
        except Unavailable as exc:
            log.warning("backend %s unavailable: %s", route.service, exc)
            if request.method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
                raise Problem(
                    503, detail=f"The {route.service} service is unavailable.", retry_after=1
                ) from None
            raise Problem(
                502, detail=f"The {route.service} service did not answer; the outcome is unknown."
            ) from None
        if limit_key is not None and response.status_code == 200:
            deps.login_limiter.reset(limit_key)
        return _relay(response)

    return app
