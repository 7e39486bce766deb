"""The gateway's fast path: a plainly well-formed request of a signed-in user, forwarded without Flask.

Almost every request the gateway serves is a user's call to a backend with a valid token. Flask's
per-request machinery (request and app contexts, URL routing for the catch-all rule, the request-id
hooks, the session) cost the gateway about as much as the forwarding itself, so a WSGI wrapper
forwards such a request directly, doing what ``dispatch`` in `agenda.gateway.app` does in the same
order, and relays the backend's answer through the same `_relay` response plus the request-id echo.

The wrapper only takes a request that ``dispatch`` would certainly forward: one of the routing
table's methods, an ASCII path that matches a backend route that is neither public nor the
operator's, an ASCII query string, a bearer token the verifier accepts, a body that is empty or a
JSON object declared ``application/json`` within the body limit (not chunked), and a valid
Idempotency-Key when one is sent. Anything else, before anything is sent anywhere, is handed to
Flask with the body it already read, so the answer (401, 400, 404, 405, 413, 415, a login's rate
limit...) is Flask's; a token the verifier refused gets dispatch's 401 through Flask's handlers and
hooks (below), so that its signature is not checked a second time. A backend that does not
answer, or anything unexpected while forwarding, is turned into the response by Flask's own error
handlers and hooks inside a request context, as if ``dispatch`` had raised it.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import flask
from werkzeug.exceptions import ClientDisconnected

from agenda.common.errors import problem_type, unauthorized
from agenda.common.http import Unavailable
from agenda.common.jsonbody import JSONBodyError, loads
from agenda.common.logs import bind_request_id, new_request_id, sanitize_request_id
from agenda.common.tokens import InvalidToken
from agenda.common.web import (
    IDEMPOTENCY_HEADER,
    IDENTITY_HEADER,
    MAX_BODY,
    REQUEST_ID_HEADER,
    SECRET_HEADER,
    check_idempotency_key,
    environ_key,
)
from agenda.gateway.routes import RouteTable

__all__ = ["fast_forward_middleware"]

_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})  # the catch-all rule's


def fast_forward_middleware(app: flask.Flask, deps: Any, table: RouteTable) -> Callable[..., Any]:
    """WSGI wrapper forwarding plainly well-formed user requests without Flask (see the module)."""
    # Imported here: agenda.gateway.app imports this module from create_app.
    from agenda.gateway.app import _PASS_REQUEST_HEADERS, _relay, unavailable_problem

    flask_wsgi = app.wsgi_app
    passed = [(name, environ_key(name)) for name in _PASS_REQUEST_HEADERS]

    def to_flask(environ: dict[str, Any], start_response: Any, raw: bytes = b"") -> Any:
        if raw:
            environ["wsgi.input"] = io.BytesIO(raw)
        return flask_wsgi(environ, start_response)

    def failure(
        environ: dict[str, Any], start_response: Any, request_id: str, raw: bytes | None, exc: Exception
    ) -> Any:
        """The response Flask makes when ``dispatch`` raises `exc` (hooks, handlers, the log); `raw` is
        the body read (None: not read, the stream is left as it is)."""
        environ["HTTP_X_REQUEST_ID"] = request_id  # before_request binds the id already used
        if raw is not None:
            environ["wsgi.input"] = io.BytesIO(raw)
        with app.request_context(environ):
            rv = app.preprocess_request()
            if rv is None:
                rv = app.handle_user_exception(exc)
            response = app.finalize_request(rv)
        return response(environ, start_response)

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if method not in _METHODS or environ.get("SCRIPT_NAME") or not path.isascii() or not query.isascii():
            return flask_wsgi(environ, start_response)
        route, _ = table.match(method, path)
        if route is None or route.public or route.admin or route.service not in deps.backends:
            return flask_wsgi(environ, start_response)
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return flask_wsgi(environ, start_response)
        try:
            claims = deps.verifier.verify(token.strip())
        except InvalidToken as exc:
            # Flask's 401, without Flask checking the signature a second time.
            refused = unauthorized(exc.reason, type=problem_type("invalid-token"))
            request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
            return failure(environ, start_response, request_id, None, refused)
        except Exception:
            return flask_wsgi(environ, start_response)  # Flask verifies again and answers (its 500)

        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return flask_wsgi(environ, start_response)
        length_text = environ.get("CONTENT_LENGTH") or "0"
        if not (length_text.isascii() and length_text.isdigit()) or int(length_text) > MAX_BODY:
            return flask_wsgi(environ, start_response)
        length = int(length_text)
        try:
            raw: bytes = environ["wsgi.input"].read(length) if length else b""
        except Exception:
            raw = b""  # a socket error, werkzeug's ClientDisconnected...: short, as below
        if len(raw) != length:
            # The client went away mid-body: never forward a truncated body. Flask's answer over a
            # LimitedStream (werkzeug's server) is this 400.
            request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
            return failure(environ, start_response, request_id, raw, ClientDisconnected())
        if raw:
            mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            if mimetype != "application/json":
                return to_flask(environ, start_response, raw)
            try:
                body = loads(raw)
            except JSONBodyError:
                return to_flask(environ, start_response, raw)
            if type(body) is not dict:
                return to_flask(environ, start_response, raw)
        client_key = None
        if route.keyed and (offered := environ.get("HTTP_IDEMPOTENCY_KEY")) is not None:
            try:
                client_key = check_idempotency_key(offered)
            except ValueError:
                return to_flask(environ, start_response, raw)

        # What dispatch sends: the secret, the body's type, the caller, the passed-on headers, a key.
        headers = {SECRET_HEADER: deps.gateway_secret}
        if raw:
            headers["Content-Type"] = "application/json"
        headers[IDENTITY_HEADER] = claims["sub"]
        for name, key in passed:
            if key in environ:
                headers[name] = environ[key]
        if route.keyed:
            headers[IDEMPOTENCY_HEADER] = client_key or uuid.uuid4().hex
        # request.args as Flask parses it, then {name: every value} in first-seen order, as dispatch.
        params: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote"):
            params.setdefault(name, []).append(value)

        request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        binding = bind_request_id(request_id)
        failed: Exception | None = None
        try:
            response = deps.backends[route.service].request(
                method,
                quote(path, safe="/"),
                data=raw or None,
                params=params,
                headers=headers,
                idempotent=route.keyed or route.resendable or None,
            )
            out = _relay(response)
        except Unavailable as exc:
            failed = unavailable_problem(route, method, client_key, exc)  # logs, with the id bound
        except Exception as exc:
            failed = exc
        finally:
            binding.reset()
        if failed is not None:
            return failure(environ, start_response, request_id, raw, failed)
        out.headers[REQUEST_ID_HEADER] = request_id  # what install_request_id's after_request adds
        return out(environ, start_response)

    return middleware
