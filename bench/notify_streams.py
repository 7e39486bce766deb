"""Benchmark: live notification streams on the gateway's deployed serving model (gunicorn, gevent worker).

    python bench/notify_streams.py [--streams 1000] [--clients 16] [--duration 10] [--runs 3]
                                   [--invitations 200] [--json out.json]

Starts a 5-member agenda-db cluster, one redis-server, the dev stack with TLS (its User and Group
Services publishing every committed notification on Redis) and, beside the stack's own gateway, the
gateway under ``gunicorn -k gevent -w 1`` with TLS, live streams on (``redis.enabled``). Then:

1. create-event (``POST /v1/events`` with hey) through the gunicorn gateway with 0 streams open and with
   ``--streams`` streams open (``GET /v1/notifications/stream``, held by an asyncio client in this
   process), alternating, ``--runs`` times each: medians of p50/p99/throughput and the p99 ratio
   with/without against the target (at most 1.5x);
2. notification latency, commit to SSE client (arrival time minus the notification's ``created``), with
   1 stream open and with ``--streams`` open: one user invites a watched user ``--invitations`` times,
   paced, and every invitation must arrive.

See bench/README.md ("Live notification streams") for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import resource
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import requests
import yaml

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cli import machine_facts, non_negative_float, positive_float, positive_int, print_facts, say
from bench._cluster import (
    HOST,
    AgendaCluster,
    BenchError,
    Reaper,
    agenda_importable,
    clean_env,
    free_ports,
    log_tail,
    report_missing_tools,
    run_under_reaper,
    scrub_proxy_environment,
    wait_until,
)
from bench._cpu import CpuMeter, cpu_seconds
from bench._hey import HeyRequest, run_hey
from bench._stats import StepResult, StepSummary, format_ratio, median_or_none, ratio, summarize
from bench.agenda_gateway import (
    HTTP_TIMEOUT_S,
    PASSWORD,
    TOKEN_TTL_S,
    WRITER_EVENT_START,
    _expect,
    bearer,
    create_event_path,
    one_hour_event,
)
from bench.db_vs_etcd import HEY_REQUEST_TIMEOUT_S

PROG: Final = "notify_streams"
REQUIRED_TOOLS: Final = {"hey": "hey", "redis-server": "redis-server"}
INSTALL_LINE: Final = "apt-get install -y hey redis-server"
P99_TARGET: Final = 1.5  # the issue: create-event p99 with the streams open <= 1.5 x without
STREAM_PATH: Final = "/v1/notifications/stream"
PRIMARY_KEY: Final = "/system/redis/primary"  # agenda.messaging.record.PRIMARY_KEY
REDIS_USER: Final = "agenda"
REDIS_PASSWORD: Final = "bench-redis-password"  # noqa: S105 - a throwaway redis-server on loopback
WRITER: Final = "bench-writer"  # hey's create-event (no participants: no notification); one per run
INVITER: Final = "bench-inviter"
WATCHED: Final = "bench-watched"
CROWD_PREFIX: Final = "bench-crowd-"
INVITE_START: Final = WRITER_EVENT_START + timedelta(days=30)  # far from hey's event
START_UP_ALLOWANCE_S: Final = 900.0
LATENCY_SETTLE_S: Final = 1.0  # a stream opened this long before the first invitation
ARRIVAL_GRACE_S: Final = 15.0  # how long after the last invitation stragglers are awaited
IDLE_SAMPLE_S: Final = 3.0  # the gateway's CPU while it only holds the streams
ALIVE_SLACK_S: Final = 3.0  # a stream is alive if it got bytes within heartbeat + this
MiB: Final = 1024 * 1024


# =================================================================================== pure helpers


# --------------------------------------------------------------------------------- HTTP and SSE


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """An HTTP/1.x response head (status line and headers, up to the blank line): (status, headers).

    Header names are lower-cased; a repeated header keeps its last value. ValueError if malformed.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 ``Transfer-Encoding: chunked`` body.

    :meth:`feed` takes any slice of the wire bytes and returns the body bytes they complete;
    :attr:`done` once the last chunk and the trailer have been read. ValueError on a malformed body.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # bytes of the current chunk still to come
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer -> done
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while not self.done:
            if self._state == "size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > 1024:
                        raise ValueError("chunk size line too long")
                    break
                text = self._buffer[:end].split(b";", 1)[0].strip()
                self._buffer = self._buffer[end + 2 :]
                try:
                    size = int(text, 16)
                except ValueError:
                    raise ValueError(f"bad chunk size {text[:20]!r}") from None
                if size < 0:
                    raise ValueError(f"bad chunk size {text[:20]!r}")
                self._remaining = size
                self._state = "data" if size else "trailer"
            elif self._state == "data":
                if not self._buffer:
                    break
                piece = self._buffer[: self._remaining]
                self._buffer = self._buffer[len(piece) :]
                self._remaining -= len(piece)
                out.append(piece)
                if self._remaining == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                self._buffer = self._buffer[2:]
                self._state = "size"
            else:  # trailer: header lines up to an empty one
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                if not line:
                    self.done = True
        return b"".join(out)


@dataclass(frozen=True)
class SseItem:
    """What the SSE parser found: ``event`` (data, event type, id), ``comment`` or ``retry``."""

    kind: str
    data: str = ""
    event: str = "message"
    id: str | None = None
    value: str = ""  # the comment's text or the retry value


class SseParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules that matter here).

    Lines end with LF (an optional CR before it is dropped); ``:`` starts a comment, reported at once;
    ``retry:`` is reported at once; ``data:`` lines accumulate and a blank line dispatches the event
    (nothing is dispatched without data). Bytes of an unfinished line are kept for the next :meth:`feed`.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._reset()

    def _reset(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseItem]:
        self._buffer += chunk
        items: list[SseItem] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return items
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            item = self._line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if item is not None:
                items.append(item)

    def _line(self, line: str) -> SseItem | None:
        if not line:
            if not self._data:
                self._reset()
                return None
            item = SseItem("event", "\n".join(self._data), self._event or "message", self._id)
            self._reset()
            return item
        if line.startswith(":"):
            return SseItem("comment", value=line[1:].strip())
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            return SseItem("retry", value=value)
        return None


def stream_request(host: str, port: int, token: str) -> bytes:
    """The HTTP/1.1 request that opens one notification stream."""
    return (
        f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: bench-notify-streams\r\n\r\n"
    ).encode()


# ------------------------------------------------------------------------------------ statistics


def rfc3339_seconds(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp with an offset (``...Z`` as the API writes it)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {text!r}")
    return value.timestamp()


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (0 < q <= 100); None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Commit-to-client latency of one level: how many invitations were sent and arrived, percentiles."""

    streams: int
    sent: int
    arrived: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    duplicates: int = 0

    @property
    def missing(self) -> int:
        return self.sent - self.arrived

    def as_dict(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "sent": self.sent,
            "arrived": self.arrived,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def match_latencies(
    sent_event_ids: Sequence[str], received: Iterable[tuple[float, Mapping[str, Any]]], user: str
) -> tuple[dict[str, float], int]:
    """Latency in ms (arrival - ``created``) of the first invitation received for each sent event id.

    `received` is (arrival time, notification record); records of other users, other kinds or other
    events are ignored. Returns ({event id: ms}, duplicates), duplicates = the same notification again.
    """
    wanted = set(sent_event_ids)
    latencies: dict[str, float] = {}
    duplicates = 0
    for arrived, record in received:
        event_id = record.get("event_id")
        if record.get("user") != user or record.get("kind") != "invited" or event_id not in wanted:
            continue
        if event_id in latencies:
            duplicates += 1
            continue
        latencies[event_id] = (arrived - rfc3339_seconds(str(record["created"]))) * 1000.0
    return latencies, duplicates


def summarize_latency(
    streams: int, sent: int, latencies_ms: Iterable[float], duplicates: int = 0
) -> LatencySummary:
    values = list(latencies_ms)
    return LatencySummary(
        streams=streams,
        sent=sent,
        arrived=len(values),
        p50_ms=percentile(values, 50),
        p99_ms=percentile(values, 99),
        max_ms=max(values) if values else None,
        duplicates=duplicates,
    )


def stream_owners(total: int, users: Sequence[str]) -> list[str]:
    """`total` streams spread round-robin over `users` (the first users get one more when uneven)."""
    if total < 0:
        raise ValueError("a negative number of streams")
    if total and not users:
        raise ValueError("streams need at least one user")
    return [users[i % len(users)] for i in range(total)]


def order_of_runs(runs: int) -> list[tuple[int, bool]]:
    """(run, with_streams) steps, alternating and mirrored every other run: 0,N  N,0  0,N ... so that a
    slow drift of the machine's load favours neither side."""
    steps = []
    for run in range(1, runs + 1):
        first = run % 2 == 0
        steps += [(run, first), (run, not first)]
    return steps


def p99_verdict(value: float | None, target: float = P99_TARGET) -> str:
    if value is None:
        return "n/a"
    return "MET" if value <= target else "NOT MET"


def socket_inodes(link_targets: Iterable[str]) -> set[int]:
    """The socket inodes among a process's ``/proc/PID/fd`` link targets (``socket:[123]``)."""
    found = set()
    for target in link_targets:
        if target.startswith("socket:[") and target.endswith("]"):
            with contextlib.suppress(ValueError):
                found.add(int(target[8:-1]))
    return found


_TCP_LISTEN: Final = "0A"


def parse_proc_net_tcp(text: str) -> list[tuple[int, str, int]]:
    """(local port, state in hex, inode) of every entry of ``/proc/net/tcp`` or ``/proc/net/tcp6``."""
    entries = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        with contextlib.suppress(ValueError):
            entries.append((int(fields[1].rsplit(":", 1)[1], 16), fields[3].upper(), int(fields[9])))
    return entries


def parse_proc_net_unix(text: str) -> set[int]:
    """The inodes of ``/proc/net/unix``."""
    inodes = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 7:
            with contextlib.suppress(ValueError):
                inodes.add(int(fields[6]))
    return inodes


def inbound_connections(
    inodes: set[int], tcp: Iterable[tuple[int, str, int]], unix: set[int], port: int
) -> int:
    """How many of a server's sockets (`inodes`) are connections its clients made to `port`.

    Its own outgoing connections (to backends, the DB, Redis: another local port) and its listening
    socket are left out, and so are unix sockets. A connection the client reset has already left the
    kernel's table while the server still holds its descriptor: it counts, as it should (the server
    has not let it go yet).
    """
    other = {inode for local, state, inode in tcp if local != port or state == _TCP_LISTEN}
    return len(inodes - other - unix)


_STATUS_KB = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


def memory_kb(status_text: str) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (kB) from the text of ``/proc/PID/status``."""
    return {name: int(value) for name, value in _STATUS_KB.findall(status_text)}


def children_of(ppid: int, stats: Mapping[int, str]) -> list[int]:
    """The pids whose ``/proc/PID/stat`` text (in `stats`) names `ppid` as their parent."""
    found = []
    for pid, text in stats.items():
        with contextlib.suppress(ValueError, IndexError):
            if int(text[text.rindex(")") + 2 :].split()[1]) == ppid:
                found.append(pid)
    return sorted(found)


@dataclass(frozen=True)
class StreamCheck:
    """The client's view of a set of streams at one instant."""

    wanted: int
    opened: int  # answered 200 and sent their ``retry:`` line
    alive: int  # still open and got bytes (a heartbeat at least) within heartbeat + slack
    ended: dict[str, int] = field(default_factory=dict)  # why the others ended, counted

    @property
    def ok(self) -> bool:
        return self.opened == self.wanted and self.alive == self.wanted

    def as_dict(self) -> dict[str, Any]:
        return {"wanted": self.wanted, "opened": self.opened, "alive": self.alive, "ended": self.ended}


def check_streams(
    states: Sequence[tuple[bool, str | None, float]], now: float, heartbeat: float, slack: float
) -> StreamCheck:
    """(got_retry, ended, last_data monotonic) of each stream -> counts; alive = open and recently fed."""
    ended: dict[str, int] = {}
    alive = 0
    for got_retry, why, last_data in states:
        if why is not None:
            ended[why] = ended.get(why, 0) + 1
        elif got_retry and now - last_data <= heartbeat + slack:
            alive += 1
        else:
            ended["open but silent"] = ended.get("open but silent", 0) + 1
    return StreamCheck(len(states), sum(1 for s in states if s[0]), alive, ended)


# -------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class LoadSide:
    """One side (0 or N streams) of the create-event measurement: hey's medians and the gateway's cost."""

    streams: int
    summary: StepSummary
    cpu_ms_per_request: float | None
    rss_mib: float | None
    connections: int | None  # client connections the worker held after the runs (median)


def _cell(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_load_table(sides: Sequence[LoadSide]) -> str:
    header = (
        f"{'streams':>7} | {'2xx/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>5} | "
        f"{'gw CPU ms/req':>13} {'gw RSS MiB':>10} {'gw conns':>8}"
    )
    lines = [header, "-" * len(header)]
    for side in sides:
        s = side.summary
        err = f"{s.errors_total}{'!' if s.flagged else ''}"
        sockets = "-" if side.connections is None else str(side.connections)
        lines.append(
            f"{side.streams:>7} | {_cell(s.rps, 8, 1)} {_cell(s.p50_ms, 8)} {_cell(s.p99_ms, 8)} {err:>5} | "
            f"{_cell(side.cpu_ms_per_request, 13)} {_cell(side.rss_mib, 10, 1)} {sockets:>8}"
        )
    return "\n".join(lines)


def format_latency_table(levels: Sequence[LatencySummary]) -> str:
    header = (
        f"{'streams':>7} | {'sent':>5} {'arrived':>7} {'missing':>7} | "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    lines = [header, "-" * len(header)]
    for level in levels:
        flag = "  <-- MISSING NOTIFICATIONS" if level.missing else ""
        lines.append(
            f"{level.streams:>7} | {level.sent:>5} {level.arrived:>7} {level.missing:>7} | "
            f"{_cell(level.p50_ms, 8)} {_cell(level.p99_ms, 8)} {_cell(level.max_ms, 8)}{flag}"
        )
    return "\n".join(lines)


# ======================================================================================== arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Start a 5-member agenda-db cluster, redis-server, the dev stack with TLS and the gateway under "
            "gunicorn's gevent worker on 127.0.0.1; measure create-event's latency through that gateway "
            "with 0 and with --streams notification streams open, and the commit-to-client latency of "
            "notifications with 1 and --streams streams open."
        ),
    )
    parser.add_argument("--streams", type=positive_int, default=1000, help="streams held open, default 1000")
    parser.add_argument(
        "--stream-users", type=positive_int, default=50, help="users the streams are spread over, default 50"
    )
    parser.add_argument("--clients", type=positive_int, default=16, help="hey's concurrency, default 16")
    parser.add_argument(
        "--duration", type=positive_float, default=10.0, metavar="SECONDS", help="per hey run, default 10"
    )
    parser.add_argument("--runs", type=positive_int, default=3, help="runs of each side (0/N streams)")
    parser.add_argument(
        "--warmup", type=non_negative_float, default=2.0, metavar="SECONDS", help="unrecorded hey first"
    )
    parser.add_argument(
        "--invitations", type=positive_int, default=200, help="invitations per latency level, default 200"
    )
    parser.add_argument(
        "--invite-interval",
        type=positive_float,
        default=0.05,
        metavar="SECONDS",
        help="pace of the invitations (one every ..., not a flood), default 0.05",
    )
    parser.add_argument(
        "--heartbeat",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="the gateway's streams.heartbeat (keep-alive comments), default 5 (deployments: 15)",
    )
    parser.add_argument(
        "--open-concurrency",
        type=positive_int,
        default=50,
        help="streams being opened at the same time (TLS handshakes in flight), default 50",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all results as JSON")
    parser.add_argument("--keep-tmp", action="store_true", help="keep data dirs and logs (path printed)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.heartbeat < 0.5:
        parser.error("--heartbeat must be at least 0.5 (the gateway's minimum)")
    planned = 2 * args.runs * args.duration + args.warmup
    if planned + START_UP_ALLOWANCE_S > TOKEN_TTL_S:
        parser.error("the load would outlive the access tokens fetched once: lower --runs or --duration")
    return args


# =================================================================================== the streams


@dataclass
class Stream:
    """One held stream, as the client sees it (written by the holder's event loop only)."""

    user: str
    status: int | None = None
    got_retry: bool = False
    ended: str | None = None  # why it ended; None while open
    last_data: float = 0.0  # time.monotonic() of the last bytes received
    comments: int = 0
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (time.time(), record)


class StreamHolder:
    """Holds notification streams open from an asyncio event loop in a thread of this process.

    Arrival times are taken (``time.time()``) as soon as the loop reads the bytes. The loop shares the
    process with the benchmark's main thread, which only waits (hey, sleeps) or sends one small request
    at a time while streams are measured.
    """

    def __init__(self, host: str, port: int, ca_file: Path, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sse-holder", daemon=True)
        self._thread.start()
        self._tasks: list[asyncio.Task[None]] = []
        self.streams: list[Stream] = []

    def _call(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BenchError(f"the stream client did not finish within {timeout:.0f} s") from None

    def open(self, owners: Sequence[tuple[str, str]], concurrency: int, timeout: float) -> list[Stream]:
        """Open one stream per (user, token); return when each sent its ``retry:`` line or ended."""
        return self._call(self._open(owners, concurrency), timeout)

    async def _open(self, owners: Sequence[tuple[str, str]], concurrency: int) -> list[Stream]:
        gate = asyncio.Semaphore(concurrency)
        new = [Stream(user) for user, _ in owners]
        ready = [asyncio.Event() for _ in owners]
        for stream, (_, token), flag in zip(new, owners, ready, strict=True):
            self._tasks.append(asyncio.ensure_future(self._hold(stream, token, gate, flag)))
        self.streams.extend(new)
        await asyncio.gather(*(flag.wait() for flag in ready))
        return new

    async def _hold(self, stream: Stream, token: str, gate: asyncio.Semaphore, ready: asyncio.Event) -> None:
        writer: asyncio.StreamWriter | None = None
        await gate.acquire()
        holding = True

        def opened() -> None:
            nonlocal holding
            if holding:
                holding = False
                gate.release()
            ready.set()

        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl, server_hostname=self.host),
                self.timeout,
            )
            writer.write(stream_request(self.host, self.port, token))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            stream.status, headers = parse_head(head)
            if stream.status != 200:
                body = await asyncio.wait_for(reader.read(300), self.timeout)
                stream.ended = f"HTTP {stream.status}: {body.decode(errors='replace')[:120]}"
                return
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            decoder = ChunkedDecoder() if chunked else None
            parser = SseParser()
            while True:
                data = await reader.read(65536)
                arrived = time.time()
                if not data:
                    stream.ended = "closed by the gateway"
                    return
                stream.last_data = time.monotonic()
                body = decoder.feed(data) if decoder is not None else data
                for item in parser.feed(body):
                    if item.kind == "retry":
                        stream.got_retry = True
                        opened()
                    elif item.kind == "comment":
                        stream.comments += 1
                    elif item.kind == "event":
                        stream.events.append((arrived, json.loads(item.data)))
                if decoder is not None and decoder.done:
                    stream.ended = "body ended by the gateway"
                    return
        except asyncio.CancelledError:
            if stream.ended is None:
                stream.ended = "closed by the client"
            raise
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError) as exc:
            stream.ended = f"{type(exc).__name__}: {str(exc)[:120]}"
        finally:
            opened()
            if writer is not None:
                # Gone at once, as a closed browser tab: no TLS close_notify exchange first (asyncio would
                # wait up to 30 s for the gateway's, which never reads a stream's connection again).
                writer.transport.abort()

    def close_all(self, timeout: float = 30.0) -> None:
        """Close every stream (the client goes away); the gateway notices when its writes fail."""
        self._call(self._close_all(), timeout)

    async def _close_all(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.streams = []

    def check(self, streams: Sequence[Stream], heartbeat: float) -> StreamCheck:
        def snapshot() -> list[tuple[bool, str | None, float]]:
            return [(s.got_retry, s.ended, s.last_data) for s in streams]

        states = self._call(_value(snapshot), 10.0)
        return check_streams(states, time.monotonic(), heartbeat, ALIVE_SLACK_S)

    def received(self, streams: Sequence[Stream]) -> list[tuple[float, dict[str, Any]]]:
        return self._call(_value(lambda: [e for s in streams for e in s.events]), 10.0)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.close_all(timeout=15.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)


async def _value(make: Callable[[], Any]) -> Any:
    """Run `make` on the holder's loop (its data is only touched there)."""
    return make()


# ============================================================================== processes (impure)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def worker_pids(master: int) -> list[int]:
    """gunicorn's workers: the children of its master (from /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry)] = _read(f"/proc/{entry}/stat")
    return children_of(master, stats)


def inbound_sockets(pid: int, port: int) -> int | None:
    """Connections to `port` that process `pid` holds open (see `inbound_connections`); None if gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    targets = []
    for name in names:
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    tcp: list[tuple[int, str, int]] = []
    unix: set[int] = set()
    with contextlib.suppress(OSError):
        tcp = parse_proc_net_tcp(_read(f"/proc/{pid}/net/tcp"))
        tcp += parse_proc_net_tcp(_read(f"/proc/{pid}/net/tcp6"))
        unix = parse_proc_net_unix(_read(f"/proc/{pid}/net/unix"))
    return inbound_connections(socket_inodes(targets), tcp, unix, port)


def rss_mib(pid: int) -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of `pid` in MiB."""
    try:
        memory = memory_kb(_read(f"/proc/{pid}/status"))
    except OSError:
        return None, None
    rss, hwm = memory.get("VmRSS"), memory.get("VmHWM")
    return (None if rss is None else rss / 1024), (None if hwm is None else hwm / 1024)


def ensure_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise BenchError(f"open files limited to {hard}; {needed} are needed (ulimit -n)")


# What the role's gunicorn settings (roles/agenda_service/templates/gunicorn.conf.py.j2) say for a gevent
# worker, beyond the flags below: gevent patched before anything is imported, the application preloaded
# in the master, and the service's post_worker_init hook (the gateway starts its hub and drain watcher).
GUNICORN_SETTINGS: Final = """\
from gevent import monkey

monkey.patch_all()

import importlib

preload_app = True


def post_worker_init(worker):
    hook = getattr(importlib.import_module("agenda.gateway.cli"), "post_worker_init", None)
    if hook is not None:
        hook(worker)
"""


def gunicorn_argv(
    port: int,
    cert: str,
    key: str,
    worker_connections: int,
    python: str = sys.executable,
    settings: str = "gunicorn.conf.py",
) -> list[str]:
    """The gateway as deployed: gunicorn's gevent worker, one process, TLS, the application factory,
    with `settings` (a file holding :data:`GUNICORN_SETTINGS`: patch first, preload, the hook)."""
    return [
        python, "-m", "gunicorn",
        "--config", settings,
        "-k", "gevent",
        "--worker-connections", str(worker_connections),
        "-w", "1",
        "--bind", f"{HOST}:{port}",
        "--certfile", cert,
        "--keyfile", key,
        "--log-level", "info",
        "--error-logfile", "-",
        "--no-control-socket",  # as deployed; and two runs at once would share ~/.gunicorn/
        "agenda.gateway.cli:wsgi()",
    ]  # fmt: skip


class GunicornGateway:
    """The gateway as deployed: ``gunicorn -k gevent -w 1`` with TLS, from a copy of the stack's config."""

    def __init__(
        self, reaper: Reaper, workdir: Path, stack_config: Path, settings: Mapping[str, Any]
    ) -> None:
        self.reaper = reaper
        (self.port,) = free_ports(1)
        self.url = f"https://{HOST}:{self.port}"
        self.log = workdir / "gateway-gunicorn.log"
        config = yaml.safe_load(stack_config.read_text())
        config.update(settings)
        config["listen"] = f"{HOST}:{self.port}"
        self.tls_cert, self.tls_key = config["tls"]["cert"], config["tls"]["key"]
        self.config_path = workdir / "gateway-gunicorn.yaml"
        self.config_path.touch(mode=0o600)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.master: int | None = None
        self.worker: int | None = None

    def log_tail(self) -> str:
        return log_tail(self.log, 25)

    def argv(self, worker_connections: int) -> list[str]:
        settings = self.config_path.with_name("gunicorn.conf.py")
        settings.write_text(GUNICORN_SETTINGS)
        return gunicorn_argv(
            self.port, self.tls_cert, self.tls_key, worker_connections, settings=str(settings)
        )

    def start(self, worker_connections: int, ca_file: Path, timeout: float = 60.0) -> None:
        env = {k: v for k, v in clean_env().items() if not k.startswith("AGENDA_GATEWAY_")}
        env.update(AGENDA_GATEWAY_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1")
        proc = self.reaper.spawn(self.argv(worker_connections), self.log, env)
        self.proc, self.master = proc, proc.pid
        session = requests.Session()
        session.trust_env = False
        session.verify = str(ca_file)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise BenchError(
                    f"gunicorn exited (status {proc.returncode}); log tail:\n    {self.log_tail()}"
                )
            try:
                return session.get(self.url + "/v1/health", timeout=2.0).status_code == 200
            except requests.RequestException:
                return False

        with session:
            if wait_until(healthy, timeout, 0.2) is None:
                raise BenchError(
                    f"gunicorn's gateway not healthy in {timeout:.0f} s; log:\n    {self.log_tail()}"
                )
        workers = worker_pids(self.master)
        if len(workers) != 1:
            raise BenchError(f"expected one gunicorn worker, found {workers}; log:\n    {self.log_tail()}")
        self.worker = workers[0]

    def stop(self) -> None:
        """SIGKILL master and worker (one process group); the Reaper would at the very end."""
        if self.proc is not None:
            self.reaper.kill(self.proc)

    def inbound(self) -> int | None:
        """Client connections the worker holds open right now (streams, keep-alive connections)."""
        return None if self.worker is None else inbound_sockets(self.worker, self.port)

    def log_findings(self) -> dict[str, Any]:
        """What the gateway's log says: tracebacks, errors/warnings, worker boots, hub (re)subscriptions."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {}
        lines = text.splitlines()
        problems = [line for line in lines if re.search(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback", line)]
        return {
            "tracebacks": text.count("Traceback (most recent call last)"),
            "worker_boots": sum(1 for line in lines if "Booting worker" in line),
            "hub_subscriptions": sum(1 for line in lines if "notification hub subscribed" in line),
            "hub_not_subscribed": sum(1 for line in lines if "notification hub not subscribed" in line),
            "problem_lines": len(problems),
            "first_problems": problems[:8],
        }


def start_redis(reaper: Reaper, root: Path) -> Any:
    """One redis-server on loopback with the ACL user the services and the gateway log in as."""
    from bench.redis_failover import RedisNode

    (port,) = free_ports(1)
    node = RedisNode("r1", port, root / "redis")
    node.write_conf(None)
    with node.conf.open("a") as conf:
        conf.write(f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n")
    node.start(reaper, "redis-server")
    return node


# ============================================================================================ main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return report_missing_tools(PROG, missing, REQUIRED_TOOLS, INSTALL_LINE)
    return run_under_reaper(PROG, args.keep_tmp, lambda reaper: _main(args, reaper))


def _main(args: argparse.Namespace, reaper: Reaper) -> int:
    ok, detail = agenda_importable(sys.executable, reaper)
    if not ok:
        print(f"{PROG}: `python -m agenda.db.cli` does not import: {detail}", file=sys.stderr)
        return 2
    try:
        import gevent  # noqa: F401 - gunicorn's gevent worker needs it

        from agenda.db.client import DBClient
        from agenda.devstack import DevStack, DevStackError
    except ImportError as exc:
        print(f"{PROG}: a required package does not import: {exc}", file=sys.stderr)
        return 2
    ensure_fd_limit(2 * args.streams + 1000)  # this process's streams; gunicorn inherits the limit

    workdir = reaper.mkdtemp("bench-notify-streams-")
    facts = machine_facts("not used", sys.executable)
    print_facts(facts)
    (workdir / "db").mkdir()
    cluster = AgendaCluster(reaper, workdir / "db")
    try:
        say(f"agenda-db: starting 5 members on 127.0.0.1, fsync on, plain HTTP (under {cluster.root}) ...")
        started = time.monotonic()
        cluster.start()
        leader = cluster.wait_healthy()
        say(f"agenda-db: healthy after {time.monotonic() - started:.1f} s, leader {leader.name}")
        db_urls = [leader.base_url] + [m.base_url for m in cluster.members if m is not leader]
        redis_node = start_redis(reaper, workdir)
        record = {"name": redis_node.name, "host": HOST, "port": redis_node.port, "epoch": 1}
        # What agenda-redis-supervisor would write; there is one server and no failover to supervise here.
        with DBClient(db_urls) as db:
            db.put(PRIMARY_KEY, record)
        say(f"redis: {redis_node.name} (ACL user {REDIS_USER}); recorded under {PRIMARY_KEY} as {record}")
        scrub_proxy_environment()
        redis_settings = {"enabled": True, "username": REDIS_USER, "password": REDIS_PASSWORD, "tls": False}
        say("dev stack: User Services (2) and Group Service (1) publishing on Redis, TLS ...")
        started = time.monotonic()
        try:
            with DevStack(
                workdir / "stack",
                tls=True,
                gateway_port=0,
                db_urls=db_urls,
                users_instances=2,
                groups_instances=1,
                settings={
                    "users": {"token_ttl": TOKEN_TTL_S, "redis": redis_settings},
                    "groups": {"redis": redis_settings},
                },
            ) as stack:
                say(f"dev stack: ready after {time.monotonic() - started:.1f} s")
                if stack.ca_file is None:
                    raise BenchError("the dev stack has no CA: it must run with TLS")
                gateway = GunicornGateway(
                    reaper,
                    workdir,
                    stack.directory / "config" / "gateway.yaml",
                    {
                        "db_urls": db_urls,
                        "redis": redis_settings,
                        "streams": {"heartbeat": args.heartbeat},
                        "log_level": "INFO",
                    },
                )
                connections = connections_of(args.streams)
                started = time.monotonic()
                gateway.start(connections, stack.ca_file)
                say(
                    f"gateway: gunicorn -k gevent -w 1 --worker-connections {connections}, TLS, "
                    f"at {gateway.url} "
                    f"(master {gateway.master}, worker {gateway.worker}), healthy after "
                    f"{time.monotonic() - started:.1f} s; streams.heartbeat {args.heartbeat:g} s"
                )
                holder = StreamHolder(HOST, gateway.port, stack.ca_file)
                try:
                    report = _measure(args, reaper, gateway, holder, redis_node, stack.ca_file, workdir)
                finally:
                    holder.stop()  # the streams end before anything they are connected to
                    gateway.stop()  # and the gateway before the services and the DB
        except DevStackError as exc:
            raise BenchError(f"the dev stack failed: {exc}") from None
    finally:
        cluster.stop()
    load1, load5, _ = os.getloadavg()
    facts["loadavg_at_end"] = [round(load1, 2), round(load5, 2)]
    report["machine"] = facts
    say(f"loadavg(1m,5m) at end={facts['loadavg_at_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"wrote {args.json}")
    return 0 if report["complete"] else 1


# ----------------------------------------------------------------------------------- preparation


def prepare_users(session: requests.Session, gateway: str, names: Sequence[str]) -> dict[str, str]:
    """Register and log in every name (two at a time: scrypt is the cost); their access tokens."""

    def one(name: str) -> tuple[str, str]:
        credentials = {"username": name, "password": PASSWORD}
        url = f"{gateway}/v1/auth/register"
        _expect(session.post(url, json=credentials, timeout=HTTP_TIMEOUT_S), 201, f"registering {name}")
        response = session.post(f"{gateway}/v1/auth/login", json=credentials, timeout=HTTP_TIMEOUT_S)
        body = _expect(response, 200, f"logging {name} in")
        return name, body["access_token"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, names))


def _wait_connections(gateway: GunicornGateway, at_most: int, timeout: float) -> bool:
    """Wait until the worker holds at most `at_most` client connections."""
    return wait_until(lambda: (gateway.inbound() or 0) <= at_most, timeout, 0.1) is not None


def _wait_released(gateway: GunicornGateway, timeout: float) -> bool:
    """Wait until the worker holds no client connection (closed streams are noticed at their next write)."""
    return _wait_connections(gateway, 0, timeout)


def _close_streams(holder: StreamHolder, gateway: GunicornGateway, heartbeat: float) -> float:
    """Close the client's streams and wait until the gateway has let go of them: a 0-stream run must not
    pay for streams still winding down. Returns how long that took."""
    started = time.monotonic()
    holder.close_all()
    if not _wait_released(gateway, 4 * heartbeat + 15):
        say(
            f"  WARNING: the gateway still holds {gateway.inbound()} client connection(s) "
            f"{time.monotonic() - started:.0f} s after the client closed its streams"
        )
    return time.monotonic() - started


def _warm_up_hub(holder: StreamHolder, token: str, redis_node: Any, gateway: GunicornGateway) -> float:
    """Open one stream (the gateway builds its hub on the first one), wait until the hub has
    pattern-subscribed on Redis (``PUBSUB NUMPAT``), close it; returns the time to subscribe."""
    started = time.monotonic()
    (stream,) = holder.open([(WATCHED, token)], 1, 60.0)
    if not stream.got_retry:
        raise BenchError(f"the first stream did not open: {stream.ended}")
    numpat = lambda: int(redis_node.client.execute_command("PUBSUB", "NUMPAT")) >= 1  # noqa: E731
    subscribed = wait_until(numpat, 30.0, 0.05)
    took = time.monotonic() - started
    if subscribed is None:
        raise BenchError("the gateway's notification hub did not subscribe on Redis within 30 s")
    holder.close_all()
    return took


def _open_streams(
    holder: StreamHolder, owners: Sequence[tuple[str, str]], args: argparse.Namespace
) -> tuple[list[Stream], float]:
    started = time.monotonic()
    streams = holder.open(owners, args.open_concurrency, 120.0 + 0.2 * len(owners))
    return streams, time.monotonic() - started


# ------------------------------------------------------------------------------------------ load


@dataclass(frozen=True)
class LoadRun:
    """One hey run of create-event, with 0 or N streams open, and what the gateway cost meanwhile."""

    run: int
    streams: int
    result: StepResult
    cpu_ms_per_request: float | None  # the gunicorn worker's (and master's) CPU / answered requests
    rss_mib: float | None  # the worker's, after the run
    connections: int | None  # client connections the worker held after the run (hey's are gone)
    check: StreamCheck | None = None  # the streams after the run
    open_s: float | None = None
    idle_cpu_pct: float | None = None  # the worker's CPU while only holding the streams
    release_s: float | None = None

    @property
    def streams_ok(self) -> bool:
        return self.check is None or self.check.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "streams": self.streams,
            "hey": self.result.as_dict(),
            "gateway_cpu_ms_per_request": self.cpu_ms_per_request,
            "gateway_rss_mib": self.rss_mib,
            "gateway_connections": self.connections,
            "stream_check": None if self.check is None else self.check.as_dict(),
            "open_s": self.open_s,
            "idle_gateway_cpu_pct": self.idle_cpu_pct,
            "release_s": self.release_s,
        }


def load_sides(runs: Sequence[LoadRun]) -> list[LoadSide]:
    """The medians of each side (by number of streams, ascending) over its runs."""
    sides = []
    for streams in sorted({r.streams for r in runs}):
        mine = [r for r in runs if r.streams == streams]
        connections = median_or_none(r.connections for r in mine)
        sides.append(
            LoadSide(
                streams=streams,
                summary=summarize([r.result for r in mine]),
                cpu_ms_per_request=median_or_none(r.cpu_ms_per_request for r in mine),
                rss_mib=median_or_none(r.rss_mib for r in mine),
                connections=None if connections is None else round(connections),
            )
        )
    return sides


def _run_line(run: LoadRun, runs: int) -> str:
    result = run.result
    text = (
        f"  run {run.run}/{runs} streams={run.streams:<5}: {result.rps:8.1f} 2xx/s  "
        f"p50 {_cell(result.p50_ms, 0).strip()} ms  p99 {_cell(result.p99_ms, 0).strip()} ms  "
        f"ok={result.ok}; "
        f"gateway {_cell(run.cpu_ms_per_request, 1).strip()} CPU ms/req, {run.connections} client "
        f"connections after the run"
    )
    if run.check is not None:
        text += (
            f"; {run.check.opened}/{run.check.wanted} opened in {run.open_s:.1f} s, idle gateway CPU "
            f"{run.idle_cpu_pct:.1f}%, {run.check.alive}/{run.check.wanted} alive after hey, released in "
            f"{run.release_s:.1f} s"
        )
        if not run.check.ok:
            text += f"  <-- STREAMS LOST: {run.check.ended}"
    if result.errors:
        text += f"  <-- {result.errors} non-2xx/errors {result.status_codes} {result.error_kinds}"
    return text


def _load_phase(
    args: argparse.Namespace,
    reaper: Reaper,
    gateway: GunicornGateway,
    holder: StreamHolder,
    creates: Sequence[HeyRequest],
    owners: Sequence[tuple[str, str]],
) -> list[LoadRun]:
    """`creates`: the warm-up's request, then one per run, each by a writer of its own: every
    create-event reads its writer's agenda around the slot, so a shared writer would make each run
    slower than the one before and the later side of each pair look worse."""
    assert gateway.master is not None  # noqa: S101 - set by start()
    assert gateway.worker is not None  # noqa: S101
    worker = gateway.worker
    meter = CpuMeter({"gateway": [gateway.master, worker]})
    if args.warmup > 0:
        run_hey(reaper, creates[0], args.clients, args.warmup)
    runs = []
    for index, (run, with_streams) in enumerate(order_of_runs(args.runs), start=1):
        create = creates[index]
        streams: list[Stream] = []
        open_s = idle_pct = None
        if with_streams:
            streams, open_s = _open_streams(holder, owners, args)
            cpu_before = cpu_seconds(worker)
            time.sleep(IDLE_SAMPLE_S)
            idle_pct = 100.0 * (cpu_seconds(worker) - cpu_before) / IDLE_SAMPLE_S
        else:
            _wait_released(gateway, 10.0)  # the keep-alive connections of the last requests
        meter.start()
        result = run_hey(reaper, create, args.clients, args.duration)
        used = meter.stop()["gateway"]
        rss, _ = rss_mib(worker)
        check = holder.check(streams, args.heartbeat) if with_streams else None
        _wait_connections(gateway, len(streams), 5.0)  # hey has exited: its connections are closing
        connections = gateway.inbound()
        release_s = _close_streams(holder, gateway, args.heartbeat) if with_streams else None
        runs.append(
            LoadRun(
                run=run,
                streams=len(owners) if with_streams else 0,
                result=result,
                cpu_ms_per_request=1000.0 * used / max(1, result.ok + result.errors),
                rss_mib=rss,
                connections=connections,
                check=check,
                open_s=open_s,
                idle_cpu_pct=idle_pct,
                release_s=release_s,
            )
        )
        say(_run_line(runs[-1], args.runs))
    return runs


# ------------------------------------------------------------------------------- latency


def _latency_phase(
    args: argparse.Namespace,
    gateway: GunicornGateway,
    holder: StreamHolder,
    session: requests.Session,
    tokens: Mapping[str, str],
    owners: Sequence[tuple[str, str]],
) -> tuple[list[LatencySummary], list[StreamCheck]]:
    """At 1 stream (the watched user's) and at len(owners) (the watched user's + the crowd's): the
    inviter invites the watched user `args.invitations` times; latency on the watched user's stream."""
    levels, checks = [], []
    slot = itertools.count()
    for total in (1, len(owners)):
        streams, took = _open_streams(holder, [(WATCHED, tokens[WATCHED]), *owners[: total - 1]], args)
        time.sleep(LATENCY_SETTLE_S)
        sent = _invite(session, gateway.url, tokens[INVITER], args, slot)
        deadline = time.monotonic() + ARRIVAL_GRACE_S
        while True:
            latencies, duplicates = match_latencies(sent, holder.received(streams[:1]), WATCHED)
            if len(latencies) == len(sent) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        check = holder.check(streams, args.heartbeat)
        level = summarize_latency(total, len(sent), latencies.values(), duplicates)
        levels.append(level)
        checks.append(check)
        problems = []
        if level.missing:
            problems.append(f"{level.missing} NOTIFICATION(S) MISSING after {ARRIVAL_GRACE_S:g} s")
        if not check.ok:
            problems.append(f"STREAMS LOST: {check.ended}")
        say(
            f"  {total} stream(s), opened in {took:.1f} s: {level.arrived}/{level.sent} arrived, p50 "
            f"{_cell(level.p50_ms, 0).strip()} ms, p99 {_cell(level.p99_ms, 0).strip()} ms; "
            f"{check.alive}/{check.wanted} streams alive at the end" + "".join(f"  <-- {p}" for p in problems)
        )
        _close_streams(holder, gateway, args.heartbeat)
    return levels, checks


def _invite(
    session: requests.Session, gateway: str, token: str, args: argparse.Namespace, slot: Iterable[int]
) -> list[str]:
    """`args.invitations` events by the inviter with the watched user as participant, one every
    `args.invite_interval` seconds, one request at a time (a slot missed while the previous one was
    answered is sent as soon as it is); their event ids."""
    headers = {"Authorization": f"Bearer {token}"}
    sent = []
    started = time.monotonic()
    for number, hour in zip(range(args.invitations), slot, strict=False):
        wait = started + number * args.invite_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        body = one_hour_event(f"Invitation {hour}", INVITE_START + timedelta(hours=hour), "Room 2", [WATCHED])
        response = session.post(
            gateway + create_event_path(), json=body, headers=headers, timeout=HTTP_TIMEOUT_S
        )
        sent.append(_expect(response, 201, f"invitation {number + 1}")["id"])
    return sent


# ------------------------------------------------------------------------------------ measure


def _measure(
    args: argparse.Namespace,
    reaper: Reaper,
    gateway: GunicornGateway,
    holder: StreamHolder,
    redis_node: Any,
    ca_file: Path,
    workdir: Path,
) -> dict[str, Any]:
    assert gateway.master is not None  # noqa: S101 - set by start()
    assert gateway.worker is not None  # noqa: S101
    worker = gateway.worker
    crowd = [f"{CROWD_PREFIX}{i:03d}" for i in range(1, args.stream_users + 1)]
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy, no REQUESTS_CA_BUNDLE
    session.verify = str(ca_file)
    started = time.monotonic()
    writers = [f"{WRITER}{index}" for index in range(2 * args.runs + 1)]  # the warm-up's, then each run's
    tokens = prepare_users(session, gateway.url, [*writers, INVITER, WATCHED, *crowd])
    say(f"prepared {len(tokens)} users in {time.monotonic() - started:.1f} s (through the gunicorn gateway)")
    hub_s = _warm_up_hub(holder, tokens[WATCHED], redis_node, gateway)
    say(f"gateway hub: subscribed on Redis {hub_s:.2f} s after the first stream opened")
    rss_start, _ = rss_mib(worker)

    event_body = workdir / "create-event.json"
    event_body.write_text(json.dumps(one_hour_event("Bench event", WRITER_EVENT_START, "Room 1")))
    creates = [
        HeyRequest(
            url=gateway.url + create_event_path(),
            method="POST",
            body_file=event_body,
            headers=(bearer(tokens[writer]),),
            request_timeout_s=HEY_REQUEST_TIMEOUT_S,
        )
        for writer in writers
    ]
    owners = [(user, tokens[user]) for user in stream_owners(args.streams, crowd)]
    say(
        f"load: hey -c {args.clients} -z {args.duration:g}s POST {create_event_path()} (create-event, "
        f"keep-alive, TLS), {args.runs} run(s) each with 0 and with {args.streams} streams ({len(crowd)} "
        f"users), alternating; warm-up {args.warmup:g} s"
    )
    runs = _load_phase(args, reaper, gateway, holder, creates, owners)
    say(
        f"latency: {INVITER} invites {WATCHED} {args.invitations} times per level, one every "
        f"{args.invite_interval:g} s; latency = arrival at the SSE client - the notification's created"
    )
    levels, latency_checks = _latency_phase(args, gateway, holder, session, tokens, owners)
    session.close()
    rss_end, hwm_end = rss_mib(worker)
    findings = gateway.log_findings()
    workers_now = worker_pids(gateway.master)

    sides = load_sides(runs)
    p99_ratio = ratio(sides[-1].summary.p99_ms, sides[0].summary.p99_ms)
    streams_held = all(r.streams_ok for r in runs) and all(c.ok for c in latency_checks)
    verdict = p99_verdict(p99_ratio) if streams_held else "NOT MET"
    missing = sum(level.missing for level in levels)
    notes = _notes(findings, workers_now, worker, sides, runs, latency_checks)
    _print_report(args, runs, sides, levels, verdict, (rss_start, rss_end, hwm_end), len(crowd))
    if missing:
        say(f"FAILURE: {missing} notification(s) never reached the watched stream")
    for note in notes:
        say(f"WARNING: {note}")
    return {
        "complete": streams_held and missing == 0 and workers_now == [worker],
        "config": {
            "streams": args.streams,
            "stream_users": len(crowd),
            "clients": args.clients,
            "duration_s": args.duration,
            "runs": args.runs,
            "warmup_s": args.warmup,
            "invitations": args.invitations,
            "invite_interval_s": args.invite_interval,
            "heartbeat_s": args.heartbeat,
            "open_concurrency": args.open_concurrency,
            "gateway_argv": gateway.argv(connections_of(args.streams))[1:],
            "redis_record": "written once by the benchmark (DBClient.put): one redis-server, no supervisor",
            "p99_target": P99_TARGET,
        },
        "load": {
            "runs": [r.as_dict() for r in runs],
            "median": {
                str(side.streams): {
                    **side.summary.as_dict(),
                    "gateway_cpu_ms_per_request": side.cpu_ms_per_request,
                    "gateway_rss_mib": side.rss_mib,
                    "gateway_connections": side.connections,
                }
                for side in sides
            },
            "p99_ratio": p99_ratio,
            "p50_ratio": ratio(sides[-1].summary.p50_ms, sides[0].summary.p50_ms),
            "rps_ratio": ratio(sides[-1].summary.rps, sides[0].summary.rps),
            "verdict": verdict,
        },
        "latency": {
            "levels": [level.as_dict() for level in levels],
            "stream_checks": [c.as_dict() for c in latency_checks],
        },
        "gateway": {
            "hub_subscribe_s": hub_s,
            "rss_mib_start": rss_start,
            "rss_mib_end": rss_end,
            "hwm_mib_end": hwm_end,
            "workers_at_end": workers_now,
            "log": findings,
        },
        "notes": notes,
    }


def _notes(
    findings: Mapping[str, Any],
    workers_now: Sequence[int],
    worker: int,
    sides: Sequence[LoadSide],
    runs: Sequence[LoadRun],
    latency_checks: Sequence[StreamCheck],
) -> list[str]:
    notes = []
    if findings.get("tracebacks") or findings.get("problem_lines"):
        notes.append(
            f"the gateway's log has {findings['tracebacks']} traceback(s) and {findings['problem_lines']} "
            f"warning/error line(s), first: {findings['first_problems'][:3]}"
        )
    if findings.get("worker_boots", 1) != 1 or list(workers_now) != [worker]:
        notes.append(f"gunicorn's worker was restarted: workers now {list(workers_now)}, was {worker}")
    if findings.get("hub_subscriptions", 1) != 1:
        notes.append(f"the gateway's hub subscribed {findings.get('hub_subscriptions')} times (1 expected)")
    flagged = [side.streams for side in sides if side.summary.flagged]
    if flagged:
        notes.append(f"hey saw non-2xx answers or errors with {flagged} streams open")
    lost = [r.run for r in runs if not r.streams_ok]
    if lost:
        notes.append(f"streams were lost in load run(s) {lost}")
    if not all(c.ok for c in latency_checks):
        notes.append("streams were lost during the latency measurement")
    return notes


def _print_report(
    args: argparse.Namespace,
    runs: Sequence[LoadRun],
    sides: Sequence[LoadSide],
    levels: Sequence[LatencySummary],
    verdict: str,
    memory: tuple[float | None, float | None, float | None],
    users: int,
) -> None:
    with_streams = [r for r in runs if r.check is not None]
    held = sum(1 for r in with_streams if r.streams_ok)
    say()
    say(
        f"create-event through the gateway under gunicorn -k gevent -w 1 (HTTPS; mutual TLS to the User "
        f"Service; services->DB plain HTTP, 5-member agenda-db, fsync on), hey -c {args.clients}, "
        f"{args.duration:g} s per run, medians of {args.runs} run(s) per side; gw = the gunicorn worker: "
        f"CPU ms per request, RSS and client connections held after the run"
    )
    say(format_load_table(sides))
    without, with_ = sides[0].summary, sides[-1].summary
    p99_ratio = format_ratio(ratio(with_.p99_ms, without.p99_ms))
    say(
        f"with/without {args.streams} streams: p99 {p99_ratio}, p50 "
        f"{format_ratio(ratio(with_.p50_ms, without.p50_ms))}, "
        f"2xx/s {format_ratio(ratio(with_.rps, without.rps))}"
    )
    say(
        f"streams: {args.streams} over {users} users; every one answered 200, sent its retry: line and was "
        f"still alive after hey in {held}/{len(with_streams)} run(s); opened in "
        f"{_secs([r.open_s for r in with_streams])} s, let go by the gateway "
        f"{_secs([r.release_s for r in with_streams])} s after the client closed them (medians); the "
        f"worker's CPU while only holding them: {_secs([r.idle_cpu_pct for r in with_streams])}% of a core"
    )
    rss_start, rss_end, hwm_end = memory
    say(
        f"gateway worker RSS: {_mib(rss_start)} MiB after start, {_mib(sides[-1].rss_mib)} MiB with "
        f"{args.streams} streams (median), {_mib(rss_end)} MiB at the end, peak {_mib(hwm_end)} MiB"
    )
    say()
    say(
        "notification latency, commit -> SSE client (arrival - created; created is set just before the "
        "commit)"
    )
    say(format_latency_table(levels))
    say()
    say(
        f"target (>= {args.streams} streams open, create-event p99 with them <= {P99_TARGET:g}x without): "
        f"{verdict} (p99 ratio {p99_ratio})"
    )
    missing = sum(level.missing for level in levels)
    if not missing:
        say(f"notifications: all {sum(level.sent for level in levels)} invitations arrived")


def connections_of(streams: int) -> int:
    """gunicorn's --worker-connections: room for the streams, hey and the benchmark's own requests."""
    return max(4000, 2 * streams + 100)


def _secs(values: Iterable[float | None], digits: int = 1) -> str:
    value = median_or_none(values)
    return "-" if value is None else f"{value:.{digits}f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
