"""HTTP client for service-to-service calls: timeouts, bounded retries, replica failover, mTLS.

Agenda services call replicated peers (several DB nodes, several user-service instances). A call must
never hang (every request has a timeout), must survive one replica being down (on a connection error
the client moves to the next base URL and remembers the one that answered), and must not duplicate
side effects: a request is only re-sent when repeating it is harmless.

Retry rules:
- Idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS by default, or `idempotent=True`) are retried
  on transport errors and on 502/503/504, up to `retries` times, with capped exponential backoff and
  full jitter, or the server's Retry-After (capped) when it sends one.
- A non-idempotent request (POST by default) is re-sent only when the failure proves it never left
  this machine: connection refused, connect timeout, name resolution or TLS handshake failure, or
  when the caller's `resend_if` says the server's 502/503/504 answer proves it was not carried out
  (the DB's "no leader": nothing entered the log). A read timeout or any other 503 leaves its outcome
  unknown, so it is returned (or raised) as is.
- An answer that `resend_if` accepts describes the whole cluster (no leader anywhere), not one
  replica, so the next attempt waits (Retry-After, capped, or backoff) even on a replica not yet
  tried: asking the other members at once would only collect the same answer.
- Other 4xx/5xx responses are never retried; they are returned, or raised as `HttpError` when the
  caller passes `raise_for_status=True`.
- When retries are exhausted, `Unavailable` is raised with the last cause chained.

Replicas come from a fixed list (`base_urls`) or, for service instances found by gossip, from a
`discovery` (`agenda.common.discovery`) asked on every request; an empty answer falls back to
`base_urls`. Since that list changes, the client remembers replicas by URL, not by position:
- Sticky (the default, for replicated state such as DB members): each request starts at the URL that
  last answered, while it is still listed; otherwise at the first listed URL.
- Spread (`spread=True`, for stateless service instances): each request starts at the next URL of the
  current list, round robin.
- A request that runs out of attempts moves the sticky URL past the replica that refused it (unless
  another request already found a working one), so the next request does not start there again.

An X-Request-ID header is added from `agenda.common.logs` when a request id is bound, so logs of
every service touched by one user request share an id.

Transport: by default `agenda.common.http11.Http11Transport`, kept-alive connections per base URL,
sending what a `requests.Session` would send (its default headers, the same JSON and query
encoding, TLS settings) and raising the exceptions requests/urllib3 raise, without their per-call
work (request preparation and merging, environment and proxy lookups, hooks, cookie jars, pool
bookkeeping, http.client's header handling); redirects are not followed (no service answers one,
and following it would carry the gateway's secret along). Answers are `requests.Response`
objects. A `session` given to the constructor is used as it is instead (tests record calls
through one).
"""

from __future__ import annotations

import email.utils
import errno
import json as _json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
import urllib3.exceptions
from requests.utils import default_headers

from agenda.common.http11 import Http11Transport
from agenda.common.logs import current_request_id

if TYPE_CHECKING:
    from agenda.common.discovery import Discovery

__all__ = ["DEFAULT_IDEMPOTENT", "RETRY_STATUSES", "HttpClient", "HttpError", "Unavailable"]

DEFAULT_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES: Final = frozenset({502, 503, 504})

log = logging.getLogger(__name__)

TimeoutSpec = float | tuple[float, float]  # seconds, or (connect, read)


class HttpError(Exception):
    """A response with status >= 400, raised only when the caller asked for `raise_for_status`.

    `problem` is the decoded JSON body (RFC 9457 problem details from Agenda services) or None.
    """

    def __init__(self, method: str, url: str, response: requests.Response) -> None:
        self.method = method
        self.url = url
        self.response = response
        self.status = response.status_code
        self.problem = _json_or_none(response)
        detail = self.problem.get("detail") if isinstance(self.problem, dict) else None
        reason = f"{self.status} {response.reason or ''}".strip()
        super().__init__(f"{method} {url} -> {reason}" + (f": {detail}" if detail else ""))


class Unavailable(Exception):  # noqa: N818 - reads as the condition callers handle ("service unavailable")
    """No replica produced a usable answer; the last cause is chained as __cause__.

    `last_response` is the final 502/503/504 response when the last failure was one, else None.
    """

    def __init__(
        self, message: str, *, attempts: int, last_response: requests.Response | None = None
    ) -> None:
        self.attempts = attempts
        self.last_response = last_response
        super().__init__(message)


def _json_or_none(response: requests.Response) -> Any:
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request provably never reached the server, so even a POST may be re-sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = exc.args[0]
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _dead_peer(exc: requests.RequestException) -> bool:
    """True when the kernel gave up on an established connection: nothing acknowledged it (ETIMEDOUT)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.errno == errno.ETIMEDOUT:
            return True
        if isinstance(item, BaseException):
            todo.extend(arg for arg in item.args if isinstance(arg, BaseException))
            todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
            if isinstance(item, urllib3.exceptions.MaxRetryError) and item.reason is not None:
                todo.append(item.reason)
    return False


# Every request is written in one piece; Nagle would only delay it (urllib3's default option too).
_NODELAY: Final = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def dead_peer_socket_options(timeout: float) -> list[tuple[int, int, int]]:
    """Socket options that end a connection whose peer stopped answering within about `timeout` s.

    A crashed machine sends no reset: a request already sent to it would wait out the whole read
    timeout. TCP_USER_TIMEOUT aborts the connection when sent data stays unacknowledged that long;
    keepalive probes (after 1 s idle, the kernel's smallest) make that apply to a connection waiting
    for an answer too, so a dead peer is found within about 2 s, while a live but slow one (its kernel
    acknowledges the probes) keeps its connection for as long as the read timeout allows.
    """
    options = [*_NODELAY, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", 1),
        ("TCP_KEEPINTVL", 1),
        ("TCP_KEEPCNT", 1),
        ("TCP_USER_TIMEOUT", max(1, int(timeout * 1000))),
    ):
        if hasattr(socket, name):  # Linux; elsewhere the read timeout alone bounds the wait
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def _normalise_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL must be http(s)://host[:port][/prefix], got {url!r}")
    return url.rstrip("/")


Params = Mapping[str, Any] | Iterable[tuple[str, Any]]


def encode_query(params: Params | None) -> str:
    """`params` as a query string, exactly as ``requests`` encodes them: a list value repeats its key,
    None values are left out, everything else is ``str()``-ed and form-encoded."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[Any, Any]] = []
    for key, values in items:
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            values = [values]
        for value in values:
            if value is not None:
                pairs.append(
                    (
                        key.encode() if isinstance(key, str) else key,
                        value.encode() if isinstance(value, str) else value,
                    )
                )
    return urlencode(pairs, doseq=True)


def encode_json(value: Any) -> bytes:
    """A JSON request body as ``requests`` encodes one (NaN and infinities are refused with its error)."""
    try:
        return _json.dumps(value, allow_nan=False).encode()
    except ValueError as exc:
        raise requests.exceptions.InvalidJSONError(exc) from None


_SESSION_HEADERS: Final = dict(default_headers())  # what a requests.Session sends unless told otherwise
_BODY_METHODS_WITHOUT_BODY: Final = frozenset({"GET", "HEAD"})


class HttpClient:
    """Client for one replicated service; thread-safe, one connection pool per instance."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        timeout: TimeoutSpec = (3.05, 10.0),
        retries: int = 2,
        backoff: float = 0.1,
        backoff_cap: float = 2.0,
        retry_after_cap: float = 10.0,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        spread: bool = False,
        pool_size: int = 64,
        discovery: Discovery | None = None,
        unreachable_for: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        dead_peer_timeout: float | None = 1.0,
        max_idle: float | None = 4.0,
    ) -> None:
        if isinstance(base_urls, str):
            raise TypeError("base_urls must be a list of URLs, not a single string")
        if not base_urls:
            raise ValueError("base_urls must not be empty")
        if retries < 0 or backoff < 0 or backoff_cap < 0 or retry_after_cap < 0:
            raise ValueError("retries, backoff and caps must be >= 0")
        self.base_urls: tuple[str, ...] = tuple(_normalise_base_url(url) for url in base_urls)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._sleep = sleep
        # One kept-alive connection per concurrent caller: with fewer, callers beyond the pool's size
        # open (and then drop) a fresh connection each, a full TLS handshake every time. num_pools is
        # how many hosts keep a pool: discovered instances come and go, so leave room beyond the
        # static list. Never a proxy or a CA bundle from the environment: neither is looked up.
        self._session = session
        self._pool: Http11Transport | None = None
        if session is None:
            # dead_peer_timeout: see dead_peer_socket_options (None: the read timeout alone).
            options = _NODELAY if dead_peer_timeout is None else dead_peer_socket_options(dead_peer_timeout)
            self._pool = Http11Transport(
                verify,
                cert,
                max(len(self.base_urls), 8),
                pool_size,
                socket_options=options,
                # Below the backends' keep-alive timeout (gunicorn's keepalive: 5 s in the roles).
                max_idle=max_idle,
            )
        else:
            # Cluster-internal calls must never be routed through a proxy or a CA bundle from the
            # environment.
            session.trust_env = False
            session.verify = verify
            session.cert = cert
        self._lock = threading.Lock()
        self._discovery = discovery
        # (what discovery returned, its normalised form): re-parsed only when the list changes.
        self._discovered: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        # The URL that last answered (None: none yet); by value, since the list can change under it.
        self._active: str | None = None
        # Stateless replicas (service instances) share the load: each request starts at the next one.
        # Replicated state (DB members) keeps the default, sticking to the one that last answered.
        self._spread = spread
        self._next = 0
        # A replica whose connection failed (refused, or no answer to the connect within the timeout:
        # a crashed host) is passed over by the next requests' first choice for `unreachable_for`
        # seconds, so that only the request that found it down pays the connect timeout, not one in
        # n of every request until discovery drops it. It is still tried when every replica is. 5 s:
        # about gossip's time to declare a crashed instance dead, after which it is no longer listed;
        # a static list (the DB members) pays one connect timeout per dead host every 5 s.
        self.unreachable_for = unreachable_for
        self._clock = clock
        self._unreachable: dict[str, float] = {}

    @property
    def active_url(self) -> str:
        """The base URL the next (sticky) request starts with: the last one that answered, while listed."""
        urls = self._current_urls()
        with self._lock:
            return urls[self._start_index(urls)]

    def replicas(self) -> tuple[str, ...]:
        """The base URLs the next request chooses among, as discovery lists them now (or `base_urls`)."""
        return self._current_urls()

    def _current_urls(self) -> tuple[str, ...]:
        """This request's replicas: the discovery's list when it has one, else the static `base_urls`."""
        if self._discovery is None:
            return self.base_urls
        raw = tuple(self._discovery.urls())
        if not raw:
            return self.base_urls
        cached = self._discovered  # one read of the attribute: another thread may replace it
        if cached is None or cached[0] != raw:
            normalised: list[str] = []
            for url in raw:
                try:
                    normalised.append(_normalise_base_url(url))
                except ValueError as exc:
                    # Logged once per distinct list, thanks to the cache; the other URLs stay usable.
                    log.warning("discovery returned an unusable URL, skipped: %s", exc)
            cached = (raw, tuple(dict.fromkeys(normalised)))
            self._discovered = cached
        return cached[1] or self.base_urls

    def _mark_unreachable(self, urls: tuple[str, ...], index: int, *, whole_host: bool) -> None:
        """Pass over ``urls[index]`` for a while; with `whole_host`, every URL on its host too.

        A refused connection says the host is up and that port closed: only that replica is out. An
        unanswered connect says nothing answers at that address: every replica there (the DB members
        of one machine) is as unreachable, and trying each in turn would pay the timeout again.
        """
        failed_host = urlsplit(urls[index]).hostname
        until = self._clock() + self.unreachable_for
        with self._lock:
            for url in urls if whole_host else (urls[index],):
                if url == urls[index] or urlsplit(url).hostname == failed_host:
                    self._unreachable[url] = until

    def _skip_unreachable(self, urls: tuple[str, ...], index: int) -> int:
        """`index`, or the first replica after it not recently unreachable. Caller holds the lock."""
        if not self._unreachable:
            return index
        now = self._clock()
        for url, until in list(self._unreachable.items()):
            if until <= now:
                del self._unreachable[url]
        for step in range(len(urls)):
            candidate = (index + step) % len(urls)
            if urls[candidate] not in self._unreachable:
                return candidate
        return index  # every one is: try them anyway, in the usual order

    def _start_index(self, urls: tuple[str, ...]) -> int:
        """Index of the sticky URL in `urls`, or 0 when it is not listed. Caller holds the lock."""
        if self._active is not None:
            try:
                return urls.index(self._active)
            except ValueError:
                pass
        return 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def _backoff_delay(self, sleeps_so_far: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff * (2**sleeps_so_far))
        return self._rng.uniform(0.0, ceiling)

    def _retry_after(self, response: requests.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        value = value.strip()
        seconds: float | None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
        if not math.isfinite(seconds):
            return None
        # A server asking for an hour must not stall a user request for an hour.
        return min(max(seconds, 0.0), self.retry_after_cap)

    def _advance_from(self, urls: tuple[str, ...], failed: int) -> int:
        """The replica after ``urls[failed]``; later calls start there too, unless another call already
        found a working replica (a call that runs out of attempts must not leave the next call
        starting at the replica that just refused it)."""
        following = (failed + 1) % len(urls)
        with self._lock:
            if self._start_index(urls) == failed:
                self._active = urls[following]
            # Past a replica found unreachable meanwhile (it would cost its connect timeout again).
            return self._skip_unreachable(urls, following)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        raise_for_status: bool = False,
        timeout: TimeoutSpec | None = None,
        resend_if: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Send `method path` to the active replica, failing over and retrying per the module rules.

        The body is `json` (encoded here), or `data`, bytes sent as they are (a body passed on
        unchanged; the caller sets its Content-Type), not both.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if json is not None and data is not None:
            raise ValueError("pass json or data, not both")
        method = method.upper()
        if idempotent is None:
            idempotent = method in DEFAULT_IDEMPOTENT
        send_headers = dict(headers or {})
        lower_names = {name.lower() for name in send_headers}
        request_id = current_request_id()
        if request_id is not None and "x-request-id" not in lower_names:
            send_headers["X-Request-ID"] = request_id
        target = path
        body = data
        if self._pool is not None:
            # The body's framing is the transport's: a caller's Content-Length (in any case) would
            # go out next to ours, and a Transfer-Encoding would contradict it.
            for name in [n for n in send_headers if n.lower() in ("content-length", "transfer-encoding")]:
                del send_headers[name]
                lower_names.discard(name.lower())
            # Encoded once for every attempt, as requests would encode it for each.
            query = encode_query(params)
            if query:
                target += ("&" if "?" in path else "?") + query
            if json is not None:
                body = encode_json(json)
                if "content-type" not in lower_names:
                    send_headers["Content-Type"] = "application/json"
            if body is not None:
                send_headers["Content-Length"] = str(len(body))
            elif method not in _BODY_METHODS_WITHOUT_BODY:
                send_headers["Content-Length"] = "0"
            send_headers = {
                **{k: v for k, v in _SESSION_HEADERS.items() if k.lower() not in lower_names},
                **send_headers,
            }

        urls = self._current_urls()  # one snapshot per call: `index` and `tried` refer to it
        with self._lock:
            if self._spread:
                self._next = (self._next + 1) % len(urls)
                index = self._next
            else:
                index = self._start_index(urls)
            index = self._skip_unreachable(urls, index)
        tried: set[int] = set()
        sleeps = 0
        last_exc: BaseException | None = None
        last_response: requests.Response | None = None
        attempts = 0
        wait_before_next = False
        for attempt in range(self.retries + 1):
            if attempt and (index in tried or wait_before_next):
                # Failing over to a replica not yet tried in this call needs no pause; going back to
                # one that already failed does: the server's Retry-After if it sent one, else backoff.
                delay = self._retry_after(last_response) if last_response is not None else None
                self._sleep(delay if delay is not None else self._backoff_delay(sleeps))
                sleeps += 1
            url = urls[index] + path
            tried.add(index)
            attempts += 1
            last_response = None
            wait_before_next = False
            try:
                if self._pool is not None:
                    response = self._pool.send(
                        method,
                        urls[index],
                        target,
                        body,
                        send_headers,
                        timeout if timeout is not None else self.timeout,
                    )
                else:
                    assert self._session is not None  # noqa: S101 - one of the two is set
                    response = self._session.request(
                        method,
                        url,
                        json=json,
                        data=data,
                        params=params,
                        headers=send_headers,
                        timeout=timeout if timeout is not None else self.timeout,
                    )
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                last_exc = exc
                never_sent = _never_sent(exc)
                dead_peer = not never_sent and _dead_peer(exc)
                if (never_sent and not isinstance(exc, requests.exceptions.SSLError)) or dead_peer:
                    # Unanswered (a connect, or the dead-peer probes): nothing answers at that host.
                    self._mark_unreachable(
                        urls,
                        index,
                        whole_host=dead_peer or isinstance(exc, requests.exceptions.ConnectTimeout),
                    )
                if not (idempotent or never_sent):
                    raise Unavailable(
                        f"{method} {url} failed after it was sent; outcome unknown: {exc}", attempts=attempts
                    ) from exc
                index = self._advance_from(urls, index)
                continue

            not_carried_out = (
                response.status_code in RETRY_STATUSES and resend_if is not None and resend_if(response)
            )
            if response.status_code in RETRY_STATUSES and (idempotent or not_carried_out):
                wait_before_next = not_carried_out
                last_exc = HttpError(method, url, response)
                last_response = response
                response.close()  # return the connection to the pool before the next attempt
                index = self._advance_from(urls, index)
                continue

            with self._lock:
                self._active = urls[index]
            if raise_for_status and response.status_code >= 400:
                raise HttpError(method, url, response)
            return response

        raise Unavailable(
            f"{method} {path}: no replica answered after {attempts} attempt(s): {last_exc}",
            attempts=attempts,
            last_response=last_response,
        ) from last_exc
