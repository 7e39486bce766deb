"""What the API gateway and the services behind it agree on at the HTTP level: the body limit, the
header names between them, and how a request's id is bound for its log lines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final

import flask

from agenda.common.errors import bad_request
from agenda.common.logs import bind_request_id, new_request_id, sanitize_request_id

__all__ = [
    "CLOSE_CONNECTION",
    "IDEMPOTENCY_HEADER",
    "IDENTITY_HEADER",
    "MAX_BODY",
    "REQUEST_ID_HEADER",
    "SECRET_HEADER",
    "check_idempotency_key",
    "environ_key",
    "idempotency_key",
    "install_request_id",
    "keyed_id",
]

# Far above any calendar request, small enough that a flood of large bodies costs little.
MAX_BODY: Final = 256 * 1024
# The caller the gateway authenticated; a backend trusts it only once the secret matched.
IDENTITY_HEADER: Final = "X-Agenda-User"
SECRET_HEADER: Final = "X-Agenda-Gateway-Secret"  # noqa: S105 - a header name, not a secret
REQUEST_ID_HEADER: Final = "X-Request-ID"
# Set True in the WSGI environ by an application that refused a request without reading its body: the
# server closes the connection after the answer instead of reading the rest (a WSGI application may not
# send Connection itself, PEP 3333). Honoured by `agenda.common.httpserver`.
CLOSE_CONNECTION: Final = "agenda.close_connection"
# A client's name for one create request (draft-ietf-httpapi-idempotency-key-header): the same key
# twice creates once. The gateway also sends one of its own when the client did not, so that it may
# resend a create whose answer it lost (a kept-alive connection closed under the request).
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
IDEMPOTENCY_KEY_SCHEMA: Final = {"type": "string", "pattern": "^[!-~]{1,255}$"}
_IDEMPOTENCY_KEY: Final = re.compile(IDEMPOTENCY_KEY_SCHEMA["pattern"])


def environ_key(header: str) -> str:
    """Where a WSGI server puts request header `header` in the environ (PEP 3333's ``HTTP_`` names)."""
    return "HTTP_" + header.upper().replace("-", "_")


def check_idempotency_key(value: str) -> str:
    """`value` when it is a valid Idempotency-Key (1-255 visible ASCII characters), else ValueError."""
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ValueError("must be 1 to 255 visible ASCII characters")
    return value


def idempotency_key() -> str | None:
    """The request's Idempotency-Key, or None; 400 naming the header when it is malformed."""
    value = flask.request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    try:
        return check_idempotency_key(value)
    except ValueError as exc:
        raise bad_request(f"{IDEMPOTENCY_HEADER} {exc}", field=IDEMPOTENCY_HEADER) from None


def keyed_id(kind: str, user: str, key: str) -> str:
    """The id of the `kind` record that `user`'s request with Idempotency-Key `key` creates.

    Derived, not random, so a resent request names the record the first one created and the store's
    create-if-absent finds it instead of creating a second (32 hex digits, like a random id).
    """
    return hashlib.sha256(f"{kind}\0{user}\0{key}".encode()).hexdigest()[:32]


def install_request_id(app: flask.Flask, *, new_id: Callable[[], str] = new_request_id) -> None:
    """Bind each request's id for the logs while `app` handles it, and echo it in the response.

    The id is the caller's X-Request-ID when that is a safe token (so one id follows a request from
    the gateway through the backends, whose client forwards the bound id), else `new_id()`. Install
    it before anything that may refuse a request, so the refusal is logged with the id.
    """

    @app.before_request
    def _bind_request_id() -> None:
        request_id = sanitize_request_id(flask.request.headers.get(REQUEST_ID_HEADER)) or new_id()
        flask.g.request_id = request_id
        flask.g.request_id_binding = bind_request_id(request_id)

    @app.after_request
    def _echo_request_id(response: flask.Response) -> flask.Response:
        response.headers[REQUEST_ID_HEADER] = flask.g.get("request_id") or ""
        return response

    @app.teardown_request
    def _unbind_request_id(_exc: BaseException | None) -> None:
        binding = flask.g.pop("request_id_binding", None)
        if binding is not None:
            binding.reset()
