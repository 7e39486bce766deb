"""RFC 9457 problem details for every Flask service, and strict JSON body parsing.

Every error a service returns, whether raised on purpose (`Problem`), by Werkzeug (unknown route,
wrong method, body too large) or by a bug, leaves as `application/problem+json`, so clients and the
API gateway handle one error shape. Unexpected exceptions become a generic 500: the traceback goes to
the log with the request id, never to the client, where it could leak internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import flask
from werkzeug.exceptions import HTTPException

from agenda.common.jsonbody import JSONBodyError, loads
from agenda.common.logs import current_request_id

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Problem",
    "bad_request",
    "conflict",
    "forbidden",
    "install_error_handlers",
    "json_body",
    "json_object",
    "not_found",
    "problem_response",
    "problem_type",
    "too_many_requests",
    "unauthorized",
    "unavailable",
]

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "https://agenda.invalid/problems/"
_BLANK: Final = "about:blank"
_STANDARD_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance", "field", "request_id"})
_INTERNAL_DETAIL: Final = "The server hit an unexpected error. It has been logged; quote the request_id."


def problem_type(slug: str) -> str:
    """URI identifying a project-specific problem type, e.g. problem_type("event-overlap")."""
    return PROBLEM_BASE + slug


class Problem(Exception):  # noqa: N818 - "problem" is the RFC 9457 term; ProblemError reads worse
    """An HTTP error to return as problem details; raise it from a view.

    `field` names the offending request field, `extras` are extension members merged into the body,
    `retry_after` (seconds) becomes a Retry-After header, and `headers` are sent as given.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type: str = _BLANK,  # the RFC 9457 member name
        field: str | None = None,
        extras: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        clash = _STANDARD_MEMBERS & set(extras or {})
        if clash:
            raise ValueError(f"extras may not override standard members: {sorted(clash)}")
        self.status = status
        # RFC 9457: with type about:blank the title should be the status phrase.
        self.title = title or _phrase(status)
        self.detail = detail
        self.type = type
        self.field = field
        self.extras: dict[str, Any] = dict(extras or {})
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extras)
        request_id = current_request_id()
        if request_id is not None:
            body["request_id"] = request_id
        return body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# The helpers take `type` (a problem_type() URI) so a view can name a specific problem, and any other
# keyword becomes an extension member of the body.


def bad_request(detail: str, field: str | None = None, *, type: str = _BLANK, **extras: Any) -> Problem:
    return Problem(400, detail=detail, field=field, type=type, extras=extras)


def unauthorized(
    detail: str = "Authentication is required.", *, scheme: str = "Bearer", type: str = _BLANK, **extras: Any
) -> Problem:
    # RFC 9110 requires a 401 to say how to authenticate.
    challenge = {"WWW-Authenticate": f'{scheme} realm="agenda"'}
    return Problem(401, detail=detail, type=type, extras=extras, headers=challenge)


def forbidden(detail: str = "You may not do this.", *, type: str = _BLANK, **extras: Any) -> Problem:
    return Problem(403, detail=detail, type=type, extras=extras)


def not_found(detail: str = "No such resource.", *, type: str = _BLANK, **extras: Any) -> Problem:
    return Problem(404, detail=detail, type=type, extras=extras)


def conflict(detail: str, field: str | None = None, *, type: str = _BLANK, **extras: Any) -> Problem:
    return Problem(409, detail=detail, field=field, type=type, extras=extras)


def too_many_requests(
    retry_after: int, detail: str = "Too many requests; slow down.", *, type: str = _BLANK, **extras: Any
) -> Problem:
    return Problem(429, detail=detail, retry_after=retry_after, type=type, extras=extras)


def unavailable(
    retry_after: int | None = None,
    detail: str = "Service temporarily unavailable.",
    *,
    type: str = _BLANK,
    **extras: Any,
) -> Problem:
    return Problem(503, detail=detail, retry_after=retry_after, type=type, extras=extras)


def problem_response(problem: Problem) -> flask.Response:
    """Serialise `problem` as an application/problem+json response with its headers."""
    response = flask.Response(
        json.dumps(problem.to_dict()), status=problem.status, mimetype=PROBLEM_CONTENT_TYPE
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    if problem.retry_after is not None:
        response.headers["Retry-After"] = str(max(0, int(problem.retry_after)))
    if problem.status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = 'Bearer realm="agenda"'
    return response


def _from_http_exception(exc: HTTPException) -> flask.Response | HTTPException:
    if exc.response is not None:  # abort(response): the view chose the exact response
        return exc.response
    if exc.code is None:
        return exc
    # Werkzeug's own headers carry meaning (Allow on 405, WWW-Authenticate on 401, Retry-After on
    # 429/503); keep all of them except its HTML content type.
    headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
    return problem_response(Problem(exc.code, exc.name, exc.description, headers=headers))


def _internal_error(exc: Exception) -> flask.Response:
    log.error(
        "unhandled %s in %s %s",
        type(exc).__name__,
        flask.request.method,
        flask.request.path,
        exc_info=exc,
        extra={
            "request_id": current_request_id(),
            "method": flask.request.method,
            "path": flask.request.path,
        },
    )
    return problem_response(Problem(500, detail=_INTERNAL_DETAIL))


def install_error_handlers(app: flask.Flask) -> None:
    """Make every error response of `app` problem+json, and unexpected exceptions a logged, opaque 500."""
    app.register_error_handler(Problem, problem_response)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _internal_error)


_JSON_NAMES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _json_type_name(tp: type | tuple[type, ...]) -> str:
    types = tp if isinstance(tp, tuple) else (tp,)
    return " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)


def _matches(value: Any, tp: type | tuple[type, ...]) -> bool:
    types = tp if isinstance(tp, tuple) else (tp,)
    for expected in types:
        # JSON true is a Python bool, which is an int subclass: it must never pass as a number.
        if isinstance(value, bool):
            if expected is bool:
                return True
            continue
        if expected is float and isinstance(value, int | float):
            return True  # JSON has one number type; 1 is as good a float as 1.0
        if isinstance(value, expected):
            return True
    return False


def json_object() -> dict[str, Any]:
    """The current request's body as a JSON object: 415 unless it is declared JSON, else 400 naming why.

    The one place a Flask service turns a request body into data (`json_body` and the API gateway both
    call it), so every service refuses the same bodies the same way.
    """
    request = flask.request
    if not request.is_json:
        raise Problem(
            415, detail="Content-Type must be application/json", extras={"accept": "application/json"}
        )
    try:
        body = loads(request.get_data(cache=True))
    except JSONBodyError as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def json_body(
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """Parse the current request's JSON object and check its fields, raising Problem on any mismatch.

    `float` accepts integers; bool never passes for int or float; include `type(None)` in a tuple
    to allow null. Absent optional fields are absent from the result. Unknown fields are rejected
    unless `allow_unknown`, because a misspelt optional field would otherwise be silently ignored.
    """
    optional = optional or {}
    overlap = set(required) & set(optional)
    if overlap:
        raise ValueError(f"fields both required and optional: {sorted(overlap)}")

    body = json_object()
    if not allow_unknown:
        unknown = sorted(set(body) - set(required) - set(optional))
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise bad_request(f"unknown field(s): {names}", field=unknown[0])
    missing = [name for name in required if name not in body]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise bad_request(f"missing required field(s): {names}", field=missing[0])
    for name, expected in (*required.items(), *optional.items()):
        if name in body and not _matches(body[name], expected):
            got = _json_type_name(type(body[name]))
            raise bad_request(f"field {name!r} must be {_json_type_name(expected)}, got {got}", field=name)
    return body
