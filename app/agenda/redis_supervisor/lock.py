"""The supervisors' lock in the DB Service: one lease-backed key, and the fence every write carries.

A supervisor acquires the lock by creating ``lock_key`` (``create_revision == 0``) attached to a lease
of ``ttl`` seconds, then keeps the lease alive from its own thread every ``ttl / 3``. The key's
``mod_revision`` at acquisition is the fencing token: every write the acting supervisor makes compares
it in the same transaction, so once the lease has expired (the key is deleted with it) or another
supervisor holds the key, the write is refused by the DB, whatever the old holder believes.

The holder's own belief is conservative: it counts itself the holder only until ``ttl`` after it
*sent* the last keepalive that succeeded, minus a margin, so it stops acting before the DB can
expire the lease and let another one act.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agenda.db.client import DBClient, DBError, DBUnavailable, LeaseNotFound
from agenda.db.txn import txn_compare, txn_get, txn_put

log = logging.getLogger("agenda.redis_supervisor")

SAFETY_MARGIN = 0.25  # of the ttl: stop acting this much before the lease can expire at the DB


@dataclass(frozen=True)
class LockState:
    held: bool
    holder: str | None  # who holds it, as last seen (None: nobody or unknown)
    revision: int  # the fencing token while held, else 0
    valid_until: float  # monotonic; only meaningful while held
    db_ok_at: float | None  # monotonic time of the last DB call that succeeded


class DBLock:
    """Acquire-and-keep loop in a thread; :meth:`state` and :meth:`fence` for the acting loop."""

    def __init__(
        self,
        db: DBClient,
        key: str,
        holder: str,
        ttl: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.key, self.holder, self.ttl, self.clock = db, key, holder, ttl, clock
        self._lock = threading.Lock()
        self._lease = 0
        self._revision = 0
        self._valid_until = 0.0
        self._seen_holder: str | None = None
        self._db_ok_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.acquisitions = 0
        self.losses = 0

    # ---------------------------------------------------------------------------------- the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-supervisor-lock", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop keeping the lock; with ``release``, revoke the lease so another acts at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release:
            with self._lock:
                lease, self._lease, self._revision = self._lease, 0, 0
            if lease:
                try:
                    self.db.revoke(lease)
                except DBError as exc:
                    log.warning("redis-supervisor: could not revoke the lock's lease: %s", exc)

    def _run(self) -> None:
        period = self.ttl / 3
        while not self._stop.is_set():
            self.step()
            self._stop.wait(period)

    def step(self) -> None:
        """One round: keep the lease alive if held, else try to take the lock."""
        if self._lease:
            self._keepalive()
        else:
            self._try_acquire()

    def _ok(self, sent_at: float) -> None:
        self._db_ok_at = max(self._db_ok_at or sent_at, sent_at)

    def _keepalive(self) -> None:
        sent_at = self.clock()
        try:
            self.db.keepalive(self._lease)
        except LeaseNotFound:
            self._lost("the lease expired at the DB")
            return
        except DBError as exc:  # no quorum, every member down: the local deadline decides
            log.warning("redis-supervisor: lock keepalive failed: %s", exc)
            if self.clock() >= self._valid_until:
                self._lost(f"no keepalive succeeded within the ttl ({exc})")
            return
        with self._lock:
            self._valid_until = sent_at + self.ttl * (1 - SAFETY_MARGIN)
            self._ok(sent_at)

    def _lost(self, why: str) -> None:
        with self._lock:
            self._lease, self._revision, self._valid_until = 0, 0, 0.0
        self.losses += 1
        log.warning("redis-supervisor: lost the lock: %s", why, extra={"event": "lock_lost"})

    def _try_acquire(self) -> None:
        sent_at = self.clock()
        try:
            lease = self.db.grant_lease(self.ttl)
        except DBError as exc:
            log.debug("redis-supervisor: cannot grant a lease: %s", exc)
            return
        try:
            result = self.db.txn(
                compare=[txn_compare(self.key, "create_revision", "eq", 0)],
                success=[txn_put(self.key, {"holder": self.holder}, lease=lease)],
                failure=[txn_get(self.key)],
            )
        except DBUnavailable as exc:
            # Perhaps applied: the lease is ours either way; revoking it undoes the key if it was.
            log.warning("redis-supervisor: lock attempt outcome unknown: %s", exc)
            self._revoke_quietly(lease)
            return
        except DBError as exc:
            log.warning("redis-supervisor: lock attempt refused: %s", exc)
            self._revoke_quietly(lease)
            return
        with self._lock:
            self._ok(sent_at)
        if result.get("succeeded"):
            with self._lock:
                self._lease = lease
                self._revision = int(result["revision"])
                self._valid_until = sent_at + self.ttl * (1 - SAFETY_MARGIN)
                self._seen_holder = self.holder
            self.acquisitions += 1
            log.info(
                "redis-supervisor: acquired the lock (fencing revision %d)",
                result["revision"],
                extra={"event": "lock_acquired", "revision": result["revision"]},
            )
            return
        self._revoke_quietly(lease)
        with self._lock:
            self._seen_holder = _holder_of(result)

    def _revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(DBError):  # it expires after the ttl anyway
            self.db.revoke(lease)

    # ----------------------------------------------------------------------------- for the loop

    def state(self) -> LockState:
        with self._lock:
            held = bool(self._lease) and self.clock() < self._valid_until
            return LockState(
                held,
                self._seen_holder if not held else self.holder,
                self._revision if held else 0,
                self._valid_until,
                self._db_ok_at,
            )

    def fence(self) -> dict[str, Any]:
        """The compare every write of the acting supervisor carries (raises if not held)."""
        state = self.state()
        if not state.held:
            raise RuntimeError("not holding the lock")
        return txn_compare(self.key, "mod_revision", "eq", state.revision)

    def note_db_ok(self, sent_at: float) -> None:
        """A DB call of the acting loop succeeded: evidence of a quorum, like a keepalive."""
        with self._lock:
            self._ok(sent_at)


def _holder_of(result: dict[str, Any]) -> str | None:
    try:
        return str(result["results"][0]["get"]["kv"]["value"]["holder"])
    except (KeyError, IndexError, TypeError):
        return None
