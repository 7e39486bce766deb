"""Service discovery by file: the contract between a gossip daemon and the processes that route by it.

The API gateway routes to service instances found by gossip (SWIM). Gossip runs in one daemon per
member, not in each gateway worker: the workers are many short-lived processes that must not each
join the cluster. The daemon writes its current membership view to a JSON file; workers read it.

View file, format 1 (one JSON object)::

    {"format": 1, "member": "<name of the member that wrote it>", "written": <unix seconds, float>,
     "members": [{"name": str, "addr": "host:port", "incarnation": int,
                  "status": "alive" | "suspect" | "dead" | "left",
                  "service": str, "api_url": str, "version": str, "state": str}, ...]}

Rules both sides rely on:

- The writer replaces the file atomically (temporary file in the same directory, then `os.replace`),
  so a reader sees either the old view or the new one, never a torn write.
- The writer rewrites the file periodically even when nothing changed, so `written` tells a reader
  whether the daemon is still alive. A stale view is still used (routing by the last known members
  beats failing every request) but is logged.
- `format` changes only for an incompatible change; readers reject any other value. Keys a reader does
  not know are ignored, so a field can be added without a format change.
- `state` is the service's own word on readiness ("serving", "draining", ...): only "serving" members
  receive traffic. `api_url` may be empty (the member serves no HTTP API) and is then never routed to.

`ViewFileDiscovery` is the reader the gateway gives `agenda.common.http.HttpClient`; `write_view` is what
the gossip daemon calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = [
    "FORMAT",
    "STATUSES",
    "Discovery",
    "StaticDiscovery",
    "ViewFileDiscovery",
    "ViewMember",
    "read_view",
    "routable",
    "write_view",
]

log = logging.getLogger(__name__)

FORMAT: Final = 1
STATUSES: Final = ("alive", "suspect", "dead", "left")
SERVING: Final = "serving"

StatFn = Callable[[str | os.PathLike[str]], os.stat_result]


@dataclass(frozen=True)
class ViewMember:
    """One member as the writing daemon sees it (fields as in the view file)."""

    name: str
    addr: str
    incarnation: int
    status: str
    service: str
    api_url: str
    version: str
    state: str


def write_view(
    path: str | os.PathLike[str],
    member_name: str,
    members: Iterable[ViewMember],
    *,
    now: Callable[[], float] = time.time,
) -> None:
    """Write the view atomically: readers in other processes must never see a half-written file.

    The temporary file lives in the same directory so `os.replace` is a rename within one file system.
    """
    document = {
        "format": FORMAT,
        "member": member_name,
        "written": float(now()),
        "members": [asdict(member) for member in members],
    }
    payload = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    directory, base = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        # mkstemp creates 0600; gateway workers may run as another user and must be able to read it.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _require(condition: bool, where: str, what: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{where} must be {what}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_addr(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _valid_api_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value == "":
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _parse_member(raw: Any, where: str) -> ViewMember:
    _require(isinstance(raw, dict), where, "an object", raw)
    for key in ("name", "addr", "incarnation", "status", "service", "api_url", "version", "state"):
        if key not in raw:
            raise ValueError(f"{where}.{key} is missing")
    _require(
        isinstance(raw["name"], str) and raw["name"] != "", f"{where}.name", "a non-empty string", raw["name"]
    )
    _require(_valid_addr(raw["addr"]), f"{where}.addr", "'host:port'", raw["addr"])
    incarnation = raw["incarnation"]
    _require(
        _is_int(incarnation) and incarnation >= 0, f"{where}.incarnation", "an integer >= 0", incarnation
    )
    _require(raw["status"] in STATUSES, f"{where}.status", f"one of {', '.join(STATUSES)}", raw["status"])
    for key in ("service", "version", "state"):
        _require(isinstance(raw[key], str), f"{where}.{key}", "a string", raw[key])
    _require(
        _valid_api_url(raw["api_url"]), f"{where}.api_url", "'' or an http(s)://host URL", raw["api_url"]
    )
    return ViewMember(
        name=raw["name"],
        addr=raw["addr"],
        incarnation=incarnation,
        status=raw["status"],
        service=raw["service"],
        api_url=raw["api_url"],
        version=raw["version"],
        state=raw["state"],
    )


def read_view(path: str | os.PathLike[str]) -> tuple[str, float, tuple[ViewMember, ...]]:
    """Read and strictly validate a view file: ``(writing member, written, members)``.

    Raises OSError when the file cannot be read and ValueError (naming the bad key, e.g.
    ``members[2].status``) when it is not a format-1 view: a reader must not route by a view it
    misunderstands.
    """
    with open(path, "rb") as source:
        data = source.read()
    try:
        document = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"view is not valid JSON: {exc}") from exc
    _require(isinstance(document, dict), "view", "a JSON object", type(document).__name__)
    for key in ("format", "member", "written", "members"):
        if key not in document:
            raise ValueError(f"{key} is missing")
    _require(
        _is_int(document["format"]) and document["format"] == FORMAT,
        "format",
        str(FORMAT),
        document["format"],
    )
    member = document["member"]
    _require(isinstance(member, str) and member != "", "member", "a non-empty string", member)
    written = document["written"]
    _require(
        (_is_int(written) or isinstance(written, float)) and math.isfinite(written) and written >= 0,
        "written",
        "a finite number of seconds >= 0",
        written,
    )
    raw_members = document["members"]
    _require(isinstance(raw_members, list), "members", "a list", raw_members)
    members: list[ViewMember] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_members):
        parsed = _parse_member(raw, f"members[{index}]")
        if parsed.name in seen:
            raise ValueError(f"members[{index}].name {parsed.name!r} duplicates members[{seen[parsed.name]}]")
        seen[parsed.name] = index
        members.append(parsed)
    return member, float(written), tuple(members)


def routable(members: Iterable[ViewMember], service: str) -> tuple[str, ...]:
    """The api_urls of `service` that should receive traffic, sorted by member name.

    Alive and serving members only; when there is none, suspect and serving ones (a suspected instance
    is often merely slow to answer probes, and trying it beats certain failure). Dead, left, draining
    or URL-less members never. Sorting by name keeps the order stable across rewrites of the view, so a
    client's round robin and stickiness are not reshuffled by an unrelated change.
    """
    candidates = [m for m in members if m.service == service and m.state == SERVING and m.api_url]
    for status in ("alive", "suspect"):
        chosen = sorted((m for m in candidates if m.status == status), key=lambda m: m.name)
        if chosen:
            return tuple(dict.fromkeys(m.api_url for m in chosen))
    return ()


@runtime_checkable
class Discovery(Protocol):
    """A source of base URLs for one service; the list may change between calls and may be empty."""

    def urls(self) -> tuple[str, ...]:
        """The base URLs to use now; called on every request, so it must be cheap."""
        ...


class StaticDiscovery:
    """A fixed list: for configuration without gossip, and for tests."""

    def __init__(self, urls: Sequence[str]) -> None:
        if isinstance(urls, str):
            raise TypeError("urls must be a list of URLs, not a single string")
        self._urls = tuple(urls)

    def urls(self) -> tuple[str, ...]:
        return self._urls


class ViewFileDiscovery:
    """The routable URLs of one service, from the view file a gossip daemon keeps up to date.

    Called on every request, so it is cheap when nothing changed: within `min_interval` of the last
    check it costs one `clock()` read; after that one `stat`, and the file is read and validated only
    when its (inode, mtime, size) changed. A missing or malformed file never breaks routing: the last
    good list is kept (or `fallback` before any good read), and the problem is logged once, not on
    every call. Thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        service: str,
        *,
        fallback: Sequence[str] = (),
        min_interval: float = 0.1,
        stale_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        stat: StatFn = os.stat,
    ) -> None:
        if isinstance(fallback, str):
            raise TypeError("fallback must be a list of URLs, not a single string")
        if min_interval < 0 or stale_after < 0:
            raise ValueError("min_interval and stale_after must be >= 0")
        self.path = path
        self.service = service
        self.min_interval = min_interval
        self.stale_after = stale_after
        self._clock = clock
        self._wall = wall
        self._stat = stat
        self._lock = threading.Lock()
        self._urls: tuple[str, ...] = tuple(fallback)
        self._checked_at: float | None = None
        self._key: tuple[int, int, int] | None = None
        self._written: float | None = None  # None until a good read
        self._problem: str | None = None
        self._stale_logged = False

    @property
    def written(self) -> float | None:
        """When the view in use was written (unix seconds), or None before a good read."""
        with self._lock:
            return self._written

    def urls(self) -> tuple[str, ...]:
        now = self._clock()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self.min_interval:
                return self._urls
            self._checked_at = now
            self._refresh()
            return self._urls

    def _report(self, problem: str) -> None:
        # Once per distinct problem: a file missing for an hour must not log on every request.
        if problem != self._problem:
            self._problem = problem
            keeping = "keeping the last good list" if self._written is not None else "using the fallback"
            log.warning("discovery view %s: %s; %s %s", self.path, problem, keeping, list(self._urls))

    def _refresh(self) -> None:
        try:
            st = self._stat(self.path)
        except OSError as exc:
            self._report(f"cannot stat: {exc.strerror or exc}")
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._key:
            try:
                member, written, members = read_view(self.path)
            except OSError as exc:
                # Not remembering the key: a transient read failure is retried on the next check.
                self._report(f"cannot read: {exc.strerror or exc}")
                return
            except ValueError as exc:
                self._key = key  # the same broken file is not parsed again until it changes
                self._report(f"malformed: {exc}")
                return
            self._key = key
            self._problem = None
            urls = routable(members, self.service)
            if urls != self._urls or self._written is None:
                log.info("discovery view %s (by %s): %s -> %s", self.path, member, self.service, list(urls))
            self._urls = urls
            if self._written != written:
                self._stale_logged = False
            self._written = written
        self._check_staleness()

    def _check_staleness(self) -> None:
        if self._written is None or self._stale_logged:
            return
        age = self._wall() - self._written
        if age > self.stale_after:
            # Still used: the daemon may be dead, but the last view beats refusing every request.
            self._stale_logged = True
            log.warning(
                "discovery view %s is %.1f s old (limit %.1f s): is the gossip daemon running? routing by it",
                self.path,
                age,
                self.stale_after,
            )
