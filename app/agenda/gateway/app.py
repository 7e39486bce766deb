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

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import flask
import requests

from agenda.common.errors import (
    Problem,
    bad_request,
    install_error_handlers,
    not_found,
    problem_type,
    too_many_requests,
    unauthorized,
)
from agenda.common.http import HttpClient, Unavailable
from agenda.common.logs import bind_request_id, new_request_id, sanitize_request_id
from agenda.gateway.ratelimit import RateLimiter
from agenda.gateway.routes import LOCAL_ROUTES, ROUTES, Route, RouteTable, openapi_document
from agenda.users.tokens import InvalidToken, TokenVerifier

__all__ = ["IDENTITY_HEADER", "MAX_BODY", "SECRET_HEADER", "GatewayDeps", "create_app"]

log = logging.getLogger(__name__)

IDENTITY_HEADER: Final = "X-Agenda-User"
SECRET_HEADER: Final = "X-Agenda-Gateway-Secret"  # noqa: S105 - a header name
MAX_BODY: Final = 256 * 1024
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_payload() -> dict[str, Any] | None:
    request = flask.request
    raw = request.get_data(cache=True)
    if not raw:
        return None
    if not request.is_json:
        raise Problem(
            415, detail="Content-Type must be application/json", extras={"accept": "application/json"}
        )
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


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
    routes = tuple(r for r in deps.routes if r.service in deps.backends)
    table = RouteTable((*LOCAL_ROUTES, *routes))
    document = openapi_document((*routes, *LOCAL_ROUTES))

    @app.before_request
    def _bind() -> None:
        request_id = sanitize_request_id(flask.request.headers.get("X-Request-ID")) or new_request_id()
        flask.g.request_id = request_id
        flask.g.binding = bind_request_id(request_id)

    @app.after_request
    def _echo(response: flask.Response) -> flask.Response:
        response.headers["X-Request-ID"] = flask.g.get("request_id") or ""
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        binding = flask.g.pop("binding", None)
        if binding is not None:
            binding.reset()

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
