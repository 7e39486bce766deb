"""What the API gateway and the services behind it agree on at the HTTP level: the body limit, the
header names between them, and how a request's id is bound for its log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import flask

from agenda.common.logs import bind_request_id, new_request_id, sanitize_request_id

__all__ = [
    "IDENTITY_HEADER",
    "MAX_BODY",
    "REQUEST_ID_HEADER",
    "SECRET_HEADER",
    "install_request_id",
]

# Far above any calendar request, small enough that a flood of large bodies costs little.
MAX_BODY: Final = 256 * 1024
# The caller the gateway authenticated; a backend trusts it only once the secret matched.
IDENTITY_HEADER: Final = "X-Agenda-User"
SECRET_HEADER: Final = "X-Agenda-Gateway-Secret"  # noqa: S105 - a header name, not a secret
REQUEST_ID_HEADER: Final = "X-Request-ID"


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
