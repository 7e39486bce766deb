"""What every backend service behind the API gateway shares (the User Service, the Group Service).

A backend is only reached through the gateway. Every request must carry the gateway's shared secret
(`SECRET_HEADER`, compared in constant time; in deployments the listener also requires the gateway's
client certificate, mutual TLS); only then is the caller identity in `IDENTITY_HEADER`, which the
gateway sets after verifying the access token, trusted. Errors leave as problem+json, the domain's,
the stores' and the DB client's exceptions included, so a view lets them propagate.

This module maps `agenda.calendar`'s exceptions, so it sits above that package and only the backends
import it; what the gateway shares with them (headers, body limit, request ids) is `agenda.common.web`.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import flask

from agenda.calendar.cas import Contention
from agenda.calendar.store import EventConflict
from agenda.common.errors import (
    Problem,
    bad_request,
    conflict,
    forbidden,
    install_error_handlers,
    problem_response,
    problem_type,
    unauthorized,
    unavailable,
)
from agenda.common.web import (
    IDENTITY_HEADER,
    MAX_BODY,
    SECRET_HEADER,
    idempotency_key,
    install_request_id,
    keyed_id,
)
from agenda.db.client import DBError, DBUnavailable
from agenda.domain.rules import RuleError
from agenda.domain.validation import ValidationError, parse_query_range, validate_username

__all__ = [
    "backend_app",
    "check_args",
    "conflict_problem",
    "current_user",
    "install_gateway_trust",
    "install_problem_handlers",
    "new_record_id",
    "query_flag",
    "query_range",
]

log = logging.getLogger(__name__)


def current_user() -> str:
    user = flask.g.get("user")
    if user is None:
        raise unauthorized("This route needs an authenticated caller.")
    return user


def check_args(allowed: set[str]) -> None:
    unknown = sorted(set(flask.request.args) - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])


def query_flag(name: str) -> bool:
    value = flask.request.args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise bad_request(f"{name} must be true or false", field=name)
    return value in ("true", "1")


def new_record_id(kind: str, user: str) -> str:
    """The id of the `kind` record this request creates for `user`.

    With an Idempotency-Key it is derived from (kind, user, key), so repeating the request names the
    same record (the create then finds it and answers with it); without one it is random.
    """
    key = idempotency_key()
    return uuid.uuid4().hex if key is None else keyed_id(kind, user, key)


def query_range() -> tuple[datetime, datetime]:
    """The required ``from`` and ``to`` query parameters as a checked [start, end) range."""
    args = flask.request.args
    for name in ("from", "to"):
        if name not in args:
            raise bad_request(f"query parameter {name} is required", field=name)
    return parse_query_range(args["from"], args["to"])


def conflict_problem(exc: EventConflict) -> Problem:
    return conflict(
        f"{exc.user} already has commitments at that time; pass allow_conflict=true to book anyway",
        type=problem_type("event-conflict"),
        conflicts=exc.conflicts,
        user=exc.user,
    )


def _validation_problem(exc: ValidationError) -> flask.Response:
    return problem_response(bad_request(f"{exc.field} {exc.reason}", field=exc.field))


def _rule_problem(exc: RuleError) -> flask.Response:
    if exc.forbidden:
        return problem_response(forbidden(exc.message, type=problem_type(exc.code)))
    return problem_response(conflict(exc.message, type=problem_type(exc.code)))


def _db_problem(exc: DBError) -> flask.Response:
    if isinstance(exc, DBUnavailable):
        return problem_response(unavailable(2, "The database is temporarily unavailable."))
    log.error("unexpected DB answer: %s", exc)
    return problem_response(Problem(500, detail="Unexpected database answer; it has been logged."))


def _contention_problem(_exc: Contention) -> flask.Response:
    return problem_response(unavailable(1, "Too many concurrent changes; try again."))


def install_problem_handlers(app: flask.Flask) -> None:
    """problem+json for everything, plus the domain's, the stores' and the DB's exceptions."""
    install_error_handlers(app)
    app.register_error_handler(ValidationError, _validation_problem)
    app.register_error_handler(RuleError, _rule_problem)
    app.register_error_handler(DBError, _db_problem)
    app.register_error_handler(Contention, _contention_problem)
    app.register_error_handler(EventConflict, lambda exc: problem_response(conflict_problem(exc)))


def install_gateway_trust(
    app: flask.Flask, gateway_secret: str, on_request: Callable[[], None] | None = None
) -> None:
    """Require the gateway's secret, then take the caller from `IDENTITY_HEADER`.

    Nothing but /v1/health answers a caller without the secret, and the identity header is trusted
    only once the secret matched. `on_request` runs for every accepted request of a user.
    """

    @app.before_request
    def _authenticate() -> None:
        if flask.request.path == "/v1/health":
            return
        secret = flask.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(secret.encode(), gateway_secret.encode()):
            raise forbidden("This service is only reachable through the API gateway.")
        if flask.request.path == "/internal/stats":
            return  # the operator's, not a user's request: neither counted nor identified
        if on_request is not None:
            on_request()
        user = flask.request.headers.get(IDENTITY_HEADER)
        if user is not None:
            try:
                flask.g.user = validate_username(user, IDENTITY_HEADER)
            except ValidationError:
                raise unauthorized("Bad caller identity.") from None


def backend_app(
    service: str, gateway_secret: str, *, on_request: Callable[[], None] | None = None
) -> flask.Flask:
    """A backend's Flask app: body limit, request id, problem handlers, gateway trust, /v1/health.

    The caller registers its blueprints (and its `extensions` entry) on the result.
    """
    app = flask.Flask(f"agenda.{service}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    install_request_id(app)  # first: a refusal by anything below is logged with the request id
    install_problem_handlers(app)
    install_gateway_trust(app, gateway_secret, on_request=on_request)

    @app.get("/v1/health")
    def health() -> Any:
        return {"status": "ok", "service": service, "time": time.time()}

    return app
