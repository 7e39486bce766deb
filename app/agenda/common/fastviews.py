"""A backend's fast path: a plainly well-formed GET from the gateway, answered without Flask.

A listed agenda is the commonest read a user makes, and on the User Service Flask's per-request
machinery (request and app contexts, routing, the before/after hooks, the JSON response object) cost
about a third of what answering it does. `fast_view_middleware` wraps the app's WSGI callable and
answers a request to one of its registered `FastView`s directly, doing what the app built by
`agenda.common.backend.backend_app` does for that request, in the same order:

1. the gateway's secret, compared in constant time (`install_gateway_trust`);
2. the request counted (``on_request``), then the caller taken from the identity header;
3. the request id bound for the logs and echoed in the response (`install_request_id`);
4. the view's answer as Flask's JSON provider writes it (``app.json``: same bytes, same headers).

The wrapper only takes a request the app would certainly answer with that view: ``GET`` of exactly a
registered path, ASCII query, the right secret, a valid identity, and query parameters the view's
``prepare`` accepts (each at most once). Anything else is handed to Flask untouched, before anything
was counted, so the answer (403, 401, 400 naming the field, 404, 405...) is Flask's. An exception
raised while answering (the DB unavailable, a bug) becomes the response Flask's own error handlers
make for it, inside a request context, with the same request id, as if the view had raised it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import flask
from flask.json.provider import DefaultJSONProvider

from agenda.common.logs import bind_request_id, new_request_id, sanitize_request_id
from agenda.common.web import IDENTITY_HEADER, REQUEST_ID_HEADER, SECRET_HEADER, environ_key
from agenda.domain.validation import ValidationError, validate_username

__all__ = ["FastView", "fast_view_middleware"]

_SECRET_KEY: Final = environ_key(SECRET_HEADER)
_IDENTITY_KEY: Final = environ_key(IDENTITY_HEADER)
_REQUEST_ID_KEY: Final = environ_key(REQUEST_ID_HEADER)


@dataclass(frozen=True, slots=True)
class FastView:
    """One GET route answered without Flask.

    ``prepare(caller, args)`` checks the query (`args`: each parameter's one value) and returns the
    work to do, or None to leave the request to Flask (which then answers it, a 400 included); it must
    neither touch the store nor have any effect. The work returns the JSON document to send with 200;
    it may raise whatever the Flask view may raise.
    """

    prepare: Callable[[str, Mapping[str, str]], Callable[[], Any] | None]


def fast_view_middleware(
    app: flask.Flask,
    gateway_secret: str,
    views: Mapping[str, FastView],
    on_request: Callable[[], None] | None = None,
) -> Callable[..., Any]:
    """WSGI wrapper answering `views` (by exact path) without Flask (see the module)."""
    if not isinstance(app.json, DefaultJSONProvider):
        raise TypeError("fast views write JSON as Flask's default provider does")
    provider = app.json
    flask_wsgi = app.wsgi_app
    secret = gateway_secret.encode()

    def json_body(document: Any) -> bytes:
        """`document` as ``provider.response`` writes it (compact unless debugging)."""
        if (provider.compact is None and app.debug) or provider.compact is False:
            return (provider.dumps(document, indent=2) + "\n").encode()
        return (provider.dumps(document, separators=(",", ":")) + "\n").encode()

    def failure(
        environ: dict[str, Any], start_response: Any, request_id: str, user: str, exc: Exception
    ) -> Any:
        """The response Flask makes when the view raises `exc`: its handlers, its after-request hooks."""
        with app.request_context(environ):
            flask.g.request_id = request_id  # what install_request_id's before_request would have set
            flask.g.user = user
            response = app.finalize_request(app.handle_user_exception(exc))
        return response(environ, start_response)

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        view = views.get(environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        if view is None or environ.get("REQUEST_METHOD") != "GET" or environ.get("SCRIPT_NAME"):
            return flask_wsgi(environ, start_response)
        offered = environ.get(_SECRET_KEY, "")
        if not query.isascii() or not offered.isascii() or not hmac.compare_digest(offered.encode(), secret):
            return flask_wsgi(environ, start_response)
        try:
            user = validate_username(environ.get(_IDENTITY_KEY), IDENTITY_HEADER)
        except ValidationError:
            return flask_wsgi(environ, start_response)
        # request.args as Flask parses it; a repeated name is Flask's to judge.
        pairs = parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
        args = dict(pairs)
        if len(args) != len(pairs):
            return flask_wsgi(environ, start_response)
        work = view.prepare(user, args)
        if work is None:
            return flask_wsgi(environ, start_response)

        if on_request is not None:
            on_request()
        request_id = sanitize_request_id(environ.get(_REQUEST_ID_KEY)) or new_request_id()
        binding = bind_request_id(request_id)
        try:
            body = json_body(work())
        except Exception as exc:
            return failure(environ, start_response, request_id, user, exc)
        finally:
            binding.reset()
        start_response(
            "200 OK",
            [
                ("Content-Type", provider.mimetype),
                ("Content-Length", str(len(body))),
                (REQUEST_ID_HEADER, request_id),
            ],
        )
        return [body]

    return middleware
