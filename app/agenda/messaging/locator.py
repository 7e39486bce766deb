"""Find the Redis primary through the DB Service and keep a verified connection to it.

Services are never configured with a Redis address: the supervisor records the current primary in the
DB (``/system/redis/primary``) and moves that record at every failover, so the DB is the only place
that knows where to write. The locator

* reads the record, connects, and checks with ``ROLE`` that the server really is a master before the
  connection is first used: the supervisor records a new primary *before* promoting it, and a former
  primary may come back as a replica, so the record alone is not proof;
* watches the key (the DB's long-poll watch) in a background thread, so a new record is seen as soon
  as it is committed and the old connection is dropped: the next :meth:`RedisLocator.client` connects
  to the new primary;
* re-reads the DB when the recorded server is unreachable or not a master, since the watch may lag
  (or the DB may have been unreachable for a while).

A malformed record is logged (key, revision, reason) and exposed as :attr:`RedisLocator.problem`; the
last good record stays in use, because a broken record says nothing about where the primary is. It
never stops the watcher thread: a dead watcher would pin the service to a stale primary.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from agenda.db.client import Compacted, DBClient, DBError
from agenda.messaging.errors import MalformedRecord, NoPrimary
from agenda.messaging.record import PRIMARY_KEY, PrimaryRecord, parse_record

__all__ = ["RedisLocator"]

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisLocator:
    """The recorded Redis primary and a verified ``redis.Redis`` client to it. Thread-safe.

    ``socket_timeout`` bounds connecting and every command, so one attempt on a dead server costs at
    most that; retrying is the caller's business (:class:`~agenda.messaging.publisher.Publisher`).
    ``watch_timeout`` is the length of one long poll on the DB, which also bounds how long the thread
    may outlive :meth:`close`. ``watch=False`` disables the thread (the DB is then read on demand only).
    """

    def __init__(
        self,
        db: DBClient,
        *,
        key: str = PRIMARY_KEY,
        username: str | None = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        socket_timeout: float = 1.0,
        watch_timeout: float = 10.0,
        watch: bool = True,
    ) -> None:
        self._db = db
        self.key = key
        self._watch_timeout = watch_timeout
        self._redis_kwargs: dict[str, Any] = {
            "username": username,
            "password": password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            # redis-py's default retries with exponential backoff for many seconds; a dead primary must
            # fail fast here so that the caller re-locates instead.
            "retry": Retry(NoBackoff(), 0),
        }
        if ssl_ca_certs is not None or ssl_certfile is not None:
            self._redis_kwargs.update(
                ssl=True,
                ssl_ca_certs=ssl_ca_certs,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                ssl_cert_reqs="required",
            )
        self._state = threading.Lock()  # guards the fields below; never held during I/O
        self._connecting = threading.Lock()  # one connection attempt at a time
        self._record: PrimaryRecord | None = None
        self._problem: str | None = None
        self._revision = -1  # DB revision of the newest knowledge applied (records never go back)
        self._client: redis.Redis | None = None
        self._client_record: PrimaryRecord | None = None
        self._role_denied_logged = False
        self.switches = 0  # how many times the recorded primary changed while we watched
        self.changed_at: float | None = None  # time.monotonic() when the last change was applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(target=self._watch, name="redis-locator", daemon=True)
            self._thread.start()

    # ---------------------------------------------------------------------------------- public API

    def current(self) -> PrimaryRecord | None:
        """The record in use (None until first read, or when no primary is recorded)."""
        with self._state:
            return self._record

    @property
    def problem(self) -> str | None:
        """Why the DB's record is not usable as is (absent, malformed, unreadable), or None."""
        with self._state:
            return self._problem

    def client(self) -> redis.Redis:
        """A client to the primary, checked with ROLE since it was (re)connected.

        Raises :class:`NoPrimary` when the recorded server is unreachable or not a master even after a
        fresh read of the DB, and ``redis.AuthenticationError`` when Redis refuses our credentials
        (retrying would not help).
        """
        cached = self._cached()
        if cached is not None:
            return cached
        with self._connecting:
            tried: set[PrimaryRecord] = set()
            failure: NoPrimary | None = None
            for attempt in range(3):
                cached = self._cached()
                if cached is not None:
                    return cached
                record = self.current()
                if record is None or attempt > 0:
                    record = self._read_or_raise()
                if record in tried:  # the DB still names the server that just failed
                    break
                tried.add(record)
                try:
                    client = self._connect(record)
                except NoPrimary as exc:
                    failure = exc
                    continue
                with self._state:
                    if self._record == record:
                        self._client, self._client_record = client, record
                        return client
                client.close()  # the record moved while we connected: try the new one
            raise failure or NoPrimary(f"the Redis primary recorded at {self.key} keeps changing")

    def invalidate(self, client: redis.Redis, reason: str) -> None:
        """Drop ``client`` (if still the current one) after it failed: the next call re-locates."""
        with self._state:
            if self._client is not client:
                return
            record, self._client, self._client_record = self._client_record, None, None
        log.warning("dropping the connection to Redis primary %s: %s", record, reason)
        client.close()

    def close(self, join_timeout: float = 2.0) -> None:
        """Stop the watcher (bounded wait: a long poll in flight ends on its own) and disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_timeout)
            if self._thread.is_alive():
                log.debug("the Redis locator's watcher is still in a DB long poll; it will exit after it")
        with self._state:
            client, self._client, self._client_record = self._client, None, None
        if client is not None:
            client.close()

    def __enter__(self) -> RedisLocator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- records

    def _cached(self) -> redis.Redis | None:
        with self._state:
            if self._client is not None and self._client_record == self._record:
                return self._client
            return None

    def _read(self) -> int:
        """Read the key from the DB and apply it; returns the DB revision of the read."""
        # The key itself sorts first among the keys it prefixes; range (unlike get) gives the revision.
        result = self._db.range(self.key, limit=1)
        items = [kv for kv in result.get("items", ()) if kv.get("key") == self.key]
        revision = int(result["revision"])
        self._apply(items[0] if items else None, revision)
        return revision

    def _read_or_raise(self) -> PrimaryRecord:
        try:
            self._read()
        except DBError as exc:
            raise NoPrimary(f"cannot read the Redis primary from the DB ({self.key}): {exc}") from None
        with self._state:
            record, problem = self._record, self._problem
        if record is None:
            raise NoPrimary(problem or f"no Redis primary is recorded at {self.key}")
        return record

    def _apply(self, kv: dict[str, Any] | None, revision: int) -> None:
        """Take the DB's word at ``revision`` (kv None: the key is absent) unless we know newer."""
        new: PrimaryRecord | None = None
        problem: str | None = None
        if kv is None:
            problem = f"no Redis primary is recorded at {self.key}"
        else:
            try:
                new = parse_record(kv.get("value"), key=self.key)
            except MalformedRecord as exc:
                problem = f"malformed record (revision {revision}): {exc}"
        dropped: redis.Redis | None = None
        with self._state:
            if revision < self._revision:
                return
            self._revision = revision
            reported = self._problem
            self._problem = problem
            old = self._record
            if kv is not None and new is None:
                new = old  # keep the last good record: a broken one does not say where the primary is
            if new != old:
                self._record = new
                self.switches += 1 if old is not None else 0
                self.changed_at = time.monotonic()
                if self._client_record != new:
                    dropped, self._client, self._client_record = self._client, None, None
        if problem is not None and problem != reported:
            kept = f"still using {old}" if old is not None and kv is not None else "no primary in use"
            # An absent record is normal before the supervisor's first run; a malformed one never is.
            level = logging.WARNING if kv is None else logging.ERROR
            log.log(level, "Redis primary record at %s unusable: %s; %s", self.key, problem, kept)
        if new != old:
            if old is not None and new is not None and new.epoch < old.epoch:
                log.warning("the recorded Redis primary went back from epoch %d to %d", old.epoch, new.epoch)
            log.info("Redis primary recorded in the DB: %s (was %s)", new, old)
        if dropped is not None:
            dropped.close()

    # ------------------------------------------------------------------------------------ redis

    def _connect(self, record: PrimaryRecord) -> redis.Redis:
        """A client to ``record``'s server once ROLE says it is a master; NoPrimary otherwise."""
        client = redis.Redis(host=record.host, port=record.port, **self._redis_kwargs)
        try:
            role = client.execute_command("ROLE")
        except redis.AuthenticationError:
            client.close()
            raise
        except NoPermissionError:
            # ROLE is an @admin command: an account without it relies on the publish script, which
            # a replica refuses (READONLY) just the same.
            if not self._role_denied_logged:
                self._role_denied_logged = True
                log.warning("Redis user may not run ROLE; relying on replicas refusing writes")
            return client
        except redis.RedisError as exc:
            client.close()
            raise NoPrimary(f"recorded Redis primary {record} is unreachable: {exc}") from None
        kind = _text(role[0]) if role else "unknown"
        if kind != "master":
            client.close()
            of = f" of {_text(role[1])}:{_text(role[2])}" if kind == "slave" and len(role) > 2 else ""
            raise NoPrimary(f"recorded Redis primary {record} answers as a {kind}{of}, not a master")
        log.info("connected to Redis primary %s", record)
        return client

    # -------------------------------------------------------------------------------------- watch

    def _watch(self) -> None:
        """Follow the key: re-read after a compaction or an unexpected error, back off when the DB fails."""
        since: int | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if since is None:
                    since = self._read()
                result = self._db.watch(self.key, since=since, timeout=self._watch_timeout)
                if self._stop.is_set():
                    return
                for event in result.get("events", ()):
                    kv = event.get("kv") or {}
                    if kv.get("key") == self.key:
                        self._apply(kv if event.get("type") == "put" else None, int(event["revision"]))
                since = max(since, int(result["revision"]))
                failures = 0
            except Compacted:
                log.info("watch history compacted past revision %s; re-reading %s", since, self.key)
                since = None
            except DBError as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "watching %s failed (%d in a row): %s", self.key, failures, exc)
                self._stop.wait(min(0.1 * 2**failures, 2.0))
            except Exception:
                # Anything else is a bug or a garbled answer; logged with its trace for the operator,
                # then the watch starts over from a fresh read instead of dying.
                log.exception("unexpected error while watching %s; starting over", self.key)
                since = None
                self._stop.wait(1.0)
