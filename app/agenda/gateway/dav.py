"""CalDAV through the gateway: ``/dav`` forwarded to the User Service, which serves it.

CalDAV clients (Thunderbird, Apple Calendar, DAVx5, the ``caldav`` library) speak WebDAV's methods, send
XML or iCalendar bodies and authenticate with HTTP Basic only. The gateway:

* forwards every request whose path is ``/dav`` or under ``/dav/`` to the User Service, path and query
  unchanged, for the methods in `DAV_METHODS` (any other is a 405 listing them), with the headers in
  `DAV_REQUEST_HEADERS`, a body of up to ``dav.max_body`` bytes that must arrive within
  ``dav.body_timeout`` seconds, the gateway's secret and the caller's identity; the answer comes back
  with its status and body and the headers in `DAV_RESPONSE_HEADERS`;
* redirects RFC 6764's ``/.well-known/caldav`` to ``/dav/`` (301) for any method, without credentials;
* takes a bearer token as the JSON API does, or Basic credentials, verified by the User Service's own
  login (``POST /v1/auth/login``), whose token then gives the identity, so the backend cannot tell the
  two apart. A verified Basic header is remembered (`BasicLoginCache`); a wrong password counts against
  the login rate limit as a failed JSON login does. Every 401 here carries `BASIC_CHALLENGE`, which
  makes a client ask for the password. OPTIONS is no exception: it tells what exists at a path (Allow,
  DAV), the backend would have to answer a caller it does not know, and every CalDAV client repeats
  an OPTIONS with its credentials after a 401 as it does any other request.

The gateway's own errors are problem+json; the backend's answers are passed on as they are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import flask
import requests
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length

from agenda.common.errors import Problem, problem_type, too_many_requests
from agenda.common.http import Unavailable
from agenda.common.tokens import InvalidToken
from agenda.common.web import CLOSE_CONNECTION, IDENTITY_HEADER, SECRET_HEADER
from agenda.gateway.ratelimit import login_key

if TYPE_CHECKING:
    from agenda.gateway.app import GatewayDeps

__all__ = [
    "BASIC_CHALLENGE",
    "DAV_METHODS",
    "DAV_REQUEST_HEADERS",
    "DAV_RESPONSE_HEADERS",
    "WELL_KNOWN",
    "BasicLoginCache",
    "DavSettings",
    "backend_target",
    "is_dav_path",
    "parse_basic",
    "read_body",
    "repeatable",
    "serve_dav",
    "well_known_redirect",
]

log = logging.getLogger(__name__)

DAV_ROOT: Final = "/dav"
WELL_KNOWN: Final = frozenset({"/.well-known/caldav", "/.well-known/caldav/"})
DAV_METHODS: Final = (
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "OPTIONS",
    "POST",  # RFC 6638: free-busy requests to the schedule outbox
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "REPORT",
)
DAV_REQUEST_HEADERS: Final = (
    "Content-Type",
    "Depth",
    "If-Match",
    "If-None-Match",
    "If-Schedule-Tag-Match",  # RFC 6638 3.2.10: an attendee's answer made against the organizer's version
    "Destination",
    "Overwrite",
    "Brief",
    "Prefer",
    "Accept",
)
DAV_RESPONSE_HEADERS: Final = (
    "ETag",
    "DAV",
    "Allow",
    "Content-Type",
    "Location",
    "Schedule-Tag",
    "Preference-Applied",
    "WWW-Authenticate",
    # What the gateway passes on for the JSON API too.
    "Retry-After",
    "Content-Disposition",
)
# RFC 7617: the realm, and that the credentials are encoded as UTF-8.
BASIC_CHALLENGE: Final = 'Basic realm="Agenda", charset="UTF-8"'
# Resent to another instance when the answer is lost: reading them again is harmless.
_SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT"})
# Doing them twice leaves what doing them once left, unless they are conditional: a resent
# ``PUT If-None-Match: *`` that had been carried out would answer 412 to a create that succeeded.
_REPEATABLE_UNLESS_CONDITIONAL: Final = frozenset({"PUT", "DELETE", "PROPPATCH"})
_CONDITIONS: Final = ("If-Match", "If-None-Match", "If-Schedule-Tag-Match")
_READ_PIECE: Final = 64 * 1024
_CHECK_STRIPES: Final = 64
_LOGIN_PATH: Final = "/v1/auth/login"
# Characters of a path segment (RFC 3986 pchar) sent as they are; anything else percent-encoded.
_PATH_SAFE: Final = "/:@!$&'()*+,;="


@dataclass(frozen=True)
class DavSettings:
    """The ``dav`` section of the gateway's settings that the request path reads."""

    # XML and iCalendar bodies: a calendar-multiget or a PUT of a large recurring event stays far below.
    max_body: int = 1024 * 1024
    body_timeout: float = 10.0


def is_dav_path(path: str) -> bool:
    return path == DAV_ROOT or path.startswith(DAV_ROOT + "/")


def challenge(detail: str, *, type: str = "about:blank") -> Problem:
    """A 401 on a /dav path: Basic, so that a CalDAV client asks its user for the password."""
    return Problem(401, detail=detail, type=type, headers={"WWW-Authenticate": BASIC_CHALLENGE})


def parse_basic(credentials: str) -> tuple[str, str]:
    """(username, password) from the part of a Basic Authorization header after the scheme.

    ValueError saying what is wrong otherwise. RFC 7617: base64 of ``username:password`` in UTF-8
    (the charset our challenge asks for); the username ends at the first colon.
    """
    token = credentials.strip()
    if not token:
        raise ValueError("the Basic credentials are empty")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Basic credentials are not base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the Basic credentials are not UTF-8") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise ValueError("the Basic credentials must be username:password")
    if not username:
        raise ValueError("the Basic credentials have an empty username")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("the Basic credentials contain control characters")
    return username, password


class BasicLoginCache:
    """Basic Authorization headers verified lately, so a client's next requests skip the password hash.

    A CalDAV client sends its password with every request (a sync is hundreds of them) and the User
    Service's check is a deliberately slow hash. Entries are keyed by an HMAC of the whole header under
    a key drawn when the gateway starts, so the cache holds neither the password nor a hash of it that
    could be attacked offline without that key. An entry lives at most `ttl` seconds and never longer
    than the token the login returned; at most `max_entries` are kept, the least recently used going
    first. Failures are never stored: a wrong password costs its hash, and counts, every time.
    `verifying` makes the requests of one header that arrive together (a client syncing several
    calendars at once) wait for the first one's check instead of each paying, and counting, their own.
    Thread-safe; the clock is injected for tests.
    """

    def __init__(
        self, ttl: float = 300.0, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        # Striped: one header always takes the same lock; two others share one rarely, and then only
        # wait for each other's check.
        self._checks = tuple(threading.Lock() for _ in range(_CHECK_STRIPES))

    def verifying(self, authorization: str) -> threading.Lock:
        """Hold this while checking `authorization` (then `get` again: another may have just done it)."""
        return self._checks[self._digest(authorization)[0] % _CHECK_STRIPES]

    def _digest(self, authorization: str) -> bytes:
        return hmac.new(self._key, authorization.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def get(self, authorization: str) -> str | None:
        """The user `authorization` was verified as, while that is fresh; else None."""
        digest = self._digest(authorization)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            user, expires = entry
            if expires <= now:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return user

    def put(self, authorization: str, user: str, lifetime: float) -> None:
        """Remember that `authorization` is `user`'s for min(`lifetime`, ttl) seconds (if positive)."""
        keep = min(lifetime, self.ttl)
        if keep <= 0:
            return
        digest = self._digest(authorization)
        expires = self._clock() + keep
        with self._lock:
            self._entries[digest] = (user, expires)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _socket_of(environ: Mapping[str, Any]) -> Any:
    """The client's socket, where the WSGI server tells it (gunicorn, Werkzeug's servers), or None."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


def read_body(
    environ: dict[str, Any], limit: int, timeout: float, *, clock: Callable[[], float] = time.monotonic
) -> bytes:
    """The request body, at most `limit` bytes, arrived within `timeout` seconds; Problem otherwise.

    A declared Content-Length over `limit` is a 413 before anything is read (a 50 MB upload is refused
    at once, not received); a chunked body is read up to `limit` and refused past it. The whole body
    must arrive by the deadline (a client that stops sending, or whose Content-Length promises more
    than it sends, ties up its connection for that long, no longer): each read waits at most until
    then, on the socket where the server exposes it (without one, the server's own timeouts apply).
    Every refusal asks the server to close the connection (`CLOSE_CONNECTION`) rather than read the
    rest of the body.
    """
    length = get_content_length(environ)  # None: chunked, or no body
    if length is not None and length > limit:
        environ[CLOSE_CONNECTION] = True
        raise _too_large(limit)
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that cannot tell the end: there is no body to read
    want = length if length is not None else limit + 1
    stream = environ["wsgi.input"]
    sock = _socket_of(environ)
    previous = sock.gettimeout() if sock is not None else None
    deadline = clock() + timeout
    pieces: list[bytes] = []
    got = 0
    timed_out = ended = False
    try:
        while got < want:
            left = deadline - clock()
            if left <= 0:
                raise TimeoutError
            if sock is not None:
                sock.settimeout(left)
            piece = stream.read(min(_READ_PIECE, want - got))
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    except TimeoutError:
        timed_out = True
    except (ClientDisconnected, OSError) as exc:
        # The connection ended before the body did (gunicorn's readers raise an OSError; Werkzeug's
        # streams ClientDisconnected, for a timed-out socket too: the timeout is then the context).
        timed_out = isinstance(exc.__context__, TimeoutError)
        ended = True
    except RequestEntityTooLarge:
        environ[CLOSE_CONNECTION] = True
        raise _too_large(limit) from None
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):  # the connection is gone; the server finds out itself
                sock.settimeout(previous)
    if timed_out:
        environ[CLOSE_CONNECTION] = True
        raise Problem(408, detail=f"The request body did not arrive within {timeout:g} s.")
    if length is None and got > limit:
        environ[CLOSE_CONNECTION] = True
        raise _too_large(limit)
    if ended or (length is not None and got != length):
        environ[CLOSE_CONNECTION] = True  # never forward a truncated body
        raise Problem(400, detail="The request body ended before it was complete.", field="body")
    return b"".join(pieces)


def _too_large(limit: int) -> Problem:
    return Problem(
        413, detail=f"A /dav request body may have at most {limit} bytes.", extras={"max_body": limit}
    )


def repeatable(method: str, headers: Mapping[str, str]) -> bool:
    """May the request be resent to another instance when its answer is lost (see `_SAFE`)?"""
    if method in _SAFE:
        return True
    return method in _REPEATABLE_UNLESS_CONDITIONAL and not any(name in headers for name in _CONDITIONS)


def backend_target(path: str, query: bytes) -> str:
    """The request target for the backend: the (decoded) `path` percent-encoded again where it must be
    (a space, ``%``, ``?``, ``#``, non-ASCII), and the raw query string as the client sent it."""
    target = quote(path, safe=_PATH_SAFE)
    if query:
        target += "?" + query.decode("latin-1")
    return target


def well_known_redirect() -> flask.Response:
    """RFC 6764 section 5: the well-known URI points clients at the CalDAV context path."""
    response = flask.Response(status=301)
    response.headers["Location"] = DAV_ROOT + "/"
    del response.headers["Content-Type"]
    return response


def serve_dav(deps: GatewayDeps) -> flask.Response:
    """Answer the current request, whose path is under /dav (see the module)."""
    request = flask.request
    method = request.method
    if method not in DAV_METHODS:
        raise Problem(
            405,
            detail=f"{method} is not a method of the CalDAV interface",
            headers={"Allow": ", ".join(DAV_METHODS)},
        )
    if any(segment in (".", "..") for segment in request.path.split("/")):
        raise Problem(400, detail="The path must not have . or .. segments.", field="path")
    user = authenticate(deps)
    settings: DavSettings = deps.dav
    body = read_body(request.environ, settings.max_body, settings.body_timeout)
    headers = {SECRET_HEADER: deps.gateway_secret, IDENTITY_HEADER: user}
    for name in DAV_REQUEST_HEADERS:
        if name in request.headers:
            headers[name] = request.headers[name]
    resend = repeatable(method, request.headers)
    try:
        response = deps.backends["users"].request(
            method,
            backend_target(request.path, request.query_string),
            data=body or None,
            headers=headers,
            idempotent=resend,
        )
    except Unavailable as exc:
        log.warning("backend users unavailable for %s %s: %s", method, request.path, exc)
        if resend:
            raise Problem(503, detail="The users service is unavailable.", retry_after=1) from None
        raise Problem(502, detail="The users service did not answer; the outcome is unknown.") from None
    return _relay(response, method)


def _relay(response: requests.Response, method: str) -> flask.Response:
    out = flask.Response(response.content, status=response.status_code)
    del out.headers["Content-Type"]  # Flask's default (text/html); the backend's, if any, follows
    for name in DAV_RESPONSE_HEADERS:
        if name in response.headers:
            out.headers[name] = response.headers[name]
    if response.status_code == 401:
        out.headers["WWW-Authenticate"] = BASIC_CHALLENGE  # whatever the backend challenged with
    if method == "HEAD" and "Content-Length" in response.headers:
        out.headers["Content-Length"] = response.headers["Content-Length"]  # the GET's, as HEAD means
    return out


def authenticate(deps: GatewayDeps) -> str:
    """The caller of the current /dav request, from a bearer token or Basic credentials; 401 otherwise."""
    request = flask.request
    header = request.headers.get("Authorization")
    if header is None:
        raise challenge("Sign in with your username and password (HTTP Basic) or a bearer token.")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        try:
            return str(deps.verifier.verify(credentials.strip())["sub"])
        except InvalidToken as exc:
            raise challenge(exc.reason, type=problem_type("invalid-token")) from None
    if scheme.lower() != "basic":
        raise challenge(
            "Authorization must be Basic (username and password) or Bearer.",
            type=problem_type("malformed-credentials"),
        )
    cache: BasicLoginCache = deps.dav_logins
    known = cache.get(header)
    if known is not None:
        return known
    try:
        username, password = parse_basic(credentials)
    except ValueError as exc:
        raise challenge(f"Authorization: {exc}.", type=problem_type("malformed-credentials")) from None
    with cache.verifying(header):
        known = cache.get(header)  # checked meanwhile by a request that came with this one
        if known is not None:
            return known
        user, lifetime = _login(deps, username, password)
        cache.put(header, user, lifetime)
    return user


def _login(deps: GatewayDeps, username: str, password: str) -> tuple[str, float]:
    """The user and their token's remaining lifetime, from the User Service's login (rate-limited as
    the JSON login: the same key, counted before, forgotten on success)."""
    key = login_key(username, flask.request.remote_addr)
    wait = deps.login_limiter.attempt(key)
    if wait is not None:
        raise too_many_requests(wait, "Too many login attempts; wait before trying again.")
    try:
        response = deps.backends["users"].request(
            "POST",
            _LOGIN_PATH,
            json={"username": username, "password": password},
            headers={SECRET_HEADER: deps.gateway_secret},
            idempotent=True,  # a login writes nothing (the JSON route is resendable too)
        )
    except Unavailable as exc:
        log.warning("backend users unavailable for a Basic login: %s", exc)
        raise Problem(503, detail="The password cannot be checked right now.", retry_after=1) from None
    if response.status_code == 401:
        raise challenge("Wrong username or password.")
    if response.status_code != 200:
        log.warning("the users service answered a Basic login with %s", response.status_code)
        raise Problem(503, detail="The password cannot be checked right now.", retry_after=1)
    deps.login_limiter.reset(key)
    try:
        claims = deps.verifier.verify(response.json()["access_token"])
    except (ValueError, KeyError, TypeError, InvalidToken) as exc:
        # The User Service signs with a key this gateway does not hold: a deployment mistake.
        log.error("the users service's login token cannot be used here: %s", exc)
        raise Problem(502, detail="The users service's login answer cannot be used.") from None
    return str(claims["sub"]), float(claims["exp"]) - time.time()
