"""Track scripts (keepalived's `vrrp_script`) and notify scripts, with keepalived's semantics.

The decisions (fall/rise counting, priority arithmetic, which commands a transition runs) are pure
functions so they can be tested exhaustively; the classes below only add threads and processes.
Every child runs without a shell, with stdin/stdout/stderr on /dev/null (a chatty script must never
block on a full pipe), in its own process group so that a timeout kills whatever it spawned too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import shlex
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NOTIFY_STATES",
    "Notifier",
    "TrackScriptRunner",
    "TrackScriptSpec",
    "TrackState",
    "effective_priority",
    "http_ok",
    "notify_commands",
    "run_command",
]

log = logging.getLogger("agenda.vrrp")

NOTIFY_STATES: Final = frozenset({"MASTER", "BACKUP", "FAULT", "STOP"})
_POLL: Final = 0.05  # how often a waiting child is checked for an abort request (stop/close)


class TrackState:
    """Fall/rise hysteresis for one track script, as keepalived counts it.

    It starts failed but as if rise-1 successes had already been seen, so one success at start makes it
    OK (keepalived's default) while a failing check keeps the instance down from the first run.
    """

    def __init__(self, fall: int, rise: int) -> None:
        if fall < 1 or rise < 1:
            raise ValueError(f"fall and rise must be >= 1, got fall={fall} rise={rise}")
        self.fall, self.rise = fall, rise
        self._ok = False
        self._streak = rise - 1  # consecutive results that argue for leaving the current state

    @property
    def ok(self) -> bool:
        return self._ok

    def record(self, success: bool) -> bool:
        """Count one result; return True when it flipped the OK/failed state."""
        if success == self._ok:
            self._streak = 0  # a result confirming the current state resets the opposite streak
            return False
        self._streak += 1
        if self._streak < (self.fall if self._ok else self.rise):
            return False
        self._ok, self._streak = success, 0
        return True


def effective_priority(base: int, tracked: Iterable[tuple[int, bool]]) -> int | None:
    """The priority an instance advertises given its tracked scripts' (weight, ok); None means FAULT."""
    tracked = list(tracked)
    if any(weight == 0 and not ok for weight, ok in tracked):
        return None
    if base == 255:  # the address owner's priority is fixed (RFC 5798); keepalived ignores weights
        return base
    delta = sum(weight for weight, ok in tracked if (weight > 0 and ok) or (weight < 0 and not ok))
    # 0 would mean "I resign" and 255 "I own the address": a weight must never produce either.
    return min(254, max(1, base + delta))


def notify_commands(instance: str, state: str, priority: int, specific: str, generic: str) -> list[list[str]]:
    """The argv lists one transition runs, in keepalived's order: the state's own script, then `notify`.

    Raises ValueError for an unknown state or a command whose quoting is unbalanced.
    """
    if state not in NOTIFY_STATES:
        raise ValueError(f"unknown notify state {state!r}")
    commands = [shlex.split(specific)]
    if generic_argv := shlex.split(generic):
        commands.append([*generic_argv, "INSTANCE", instance, state, str(priority)])
    return [argv for argv in commands if argv]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group id is the child's pid (start_new_session)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_command(
    argv: list[str], timeout: float, abort: threading.Event | None = None
) -> tuple[int | None, str]:
    """Run argv to completion; return (exit status or None if it never ran / was killed, what happened).

    Never raises: a missing executable is a failed check, not a crashed daemon.
    """
    if not argv:
        return None, "cannot run: empty command"
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv comes from the operator's config, no shell involved
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        return None, f"cannot run: {exc}"
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (abort is not None and abort.is_set()):
            _kill_group(proc)
            return None, f"timed out after {timeout:g}s, killed" if remaining <= 0 else "aborted, killed"
        try:
            status = proc.wait(timeout=min(remaining, _POLL))
        except subprocess.TimeoutExpired:
            continue
        return status, f"exit status {status}"


@functools.cache
def _tls_context(cafile: str) -> ssl.SSLContext:
    # Built once per CA file: loading it costs more than the check itself.
    return ssl.create_default_context(cafile=cafile or None)


def http_ok(url: str, cafile: str, timeout: float) -> bool:
    """True iff GET `url` answers 2xx within `timeout` seconds (https: verified against `cafile`)."""
    context = _tls_context(cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return 200 <= response.status < 300
    except (OSError, ValueError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class TrackScriptSpec:
    """A track script: a command run as a child, or (`http_get`) a GET checked in the daemon.

    The GET runs on the script's thread: no interpreter started every interval, which on a loaded
    host took longer than the timeout by itself and failed a healthy gateway's check (FAULT, and the
    VIP moved away and back, losing the answers in flight both times).
    """

    name: str
    command: str
    interval: float
    timeout: float
    fall: int
    rise: int
    weight: int
    http_get: str = ""
    cafile: str = ""


class TrackScriptRunner:
    """Runs each track script in its own daemon thread and reports OK/failed flips to `on_change`.

    `on_change(name, ok)` is called after a script's first result (so the caller learns the initial
    state) and then only when its state flips. It runs on the script's thread and must not block long.
    """

    def __init__(
        self,
        specs: Iterable[TrackScriptSpec],
        on_change: Callable[[str, bool], None],
        run_once: Callable[[TrackScriptSpec], bool] | None = None,
    ) -> None:
        self._specs = list(specs)
        self._on_change = on_change
        self._run_once = run_once or self._run_process
        self._tracks = {spec.name: TrackState(spec.fall, spec.rise) for spec in self._specs}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run_process(self, spec: TrackScriptSpec) -> bool:
        if spec.http_get:
            ok = http_ok(spec.http_get, spec.cafile, spec.timeout)
            log.debug("vrrp: track script %s: GET %s %s", spec.name, spec.http_get, "OK" if ok else "failed")
            return ok
        try:
            argv = shlex.split(spec.command)
        except ValueError as exc:
            status, detail = None, f"bad command: {exc}"
        else:
            status, detail = run_command(argv, spec.timeout, self._stop)
        log.debug("vrrp: track script %s: %s", spec.name, detail)
        return status == 0

    def _loop(self, spec: TrackScriptSpec) -> None:
        first = True
        while not self._stop.is_set():
            try:
                success = self._run_once(spec)
            except Exception:
                log.exception("vrrp: track script %s: check raised", spec.name)
                success = False
            if self._stop.is_set():
                return  # a run cut short by stop() says nothing about the service
            with self._lock:
                changed = self._tracks[spec.name].record(success)
                ok = self._tracks[spec.name].ok
            if changed or first:
                log.info("vrrp: track script %s %s", spec.name, "OK" if ok else "failed")
                try:
                    self._on_change(spec.name, ok)
                except Exception:
                    log.exception("vrrp: track script %s: on_change raised", spec.name)
            first = False
            self._stop.wait(spec.interval)

    def start(self) -> None:
        for spec in self._specs:
            thread = threading.Thread(target=self._loop, args=(spec,), name=f"track-{spec.name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread (a running check is killed); wait at most `timeout` seconds in total."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def states(self) -> dict[str, bool]:
        """Current OK flag per script (False until a script has reported its first success)."""
        with self._lock:
            return {name: track.ok for name, track in self._tracks.items()}


class Notifier:
    """Runs notify scripts off the state machine's thread: in order and one at a time per instance.

    Keepalived serialises an instance's notifications too: a BACKUP script must not race the MASTER
    script still adding routes, and a slow script must never delay adverts.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._queues: dict[str, queue.SimpleQueue[tuple[list[str], float] | None]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._closed = False

    def notify(
        self,
        instance: str,
        state: str,
        priority: int,
        specific: str,
        generic: str,
        timeout: float | None = None,
    ) -> None:
        """Queue the commands for one transition and return at once; problems are logged, never raised.

        `timeout` (default: the notifier's) bounds each command; it travels with the job, so
        instances with different notify_timeout values never see each other's."""
        try:
            commands = notify_commands(instance, state, priority, specific, generic)
        except ValueError as exc:
            log.error("vrrp: notify %s %s: %s", instance, state, exc)
            return
        with self._lock:
            if self._closed:
                log.warning("vrrp: notify %s %s dropped: notifier closed", instance, state)
                return
            if instance not in self._queues:
                self._queues[instance] = queue.SimpleQueue()
                thread = threading.Thread(
                    target=self._worker, args=(instance,), name=f"notify-{instance}", daemon=True
                )
                self._threads[instance] = thread
                thread.start()
            for argv in commands:
                self._queues[instance].put((argv, self.timeout if timeout is None else timeout))

    def _worker(self, instance: str) -> None:
        jobs = self._queues[instance]
        while (job := jobs.get()) is not None:
            argv, timeout = job
            if self._abort.is_set():
                log.warning("vrrp: notify %s: %s skipped: shutting down", instance, shlex.join(argv))
                continue
            status, detail = run_command(argv, timeout, self._abort)
            if status == 0:
                log.debug("vrrp: notify %s: %s: %s", instance, shlex.join(argv), detail)
            else:
                log.warning("vrrp: notify %s: %s: %s", instance, shlex.join(argv), detail)

    def close(self, timeout: float = 5.0) -> None:
        """Run what is queued, then stop; after `timeout` seconds the rest is killed or skipped."""
        with self._lock:
            self._closed = True
            for jobs in self._queues.values():
                jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        for thread in self._threads.values():
            thread.join(1.0)  # an aborted child is killed within _POLL seconds
