"""The one compare-and-swap loop both stores commit through.

A change is read, decided and written as ONE transaction compared on what was read (revisions of the
record and of any guard keys). A failed compare means someone else changed something first: the
change is decided again from fresh reads, a bounded number of times. A transaction whose outcome is
unknown (the member serving it went away mid-request) is recognised by reading back a key it writes,
because blindly repeating a create or a notification-writing change could apply it twice.

A `Write` names the notifications it stores (`Write.notes`); `commit` adds their puts to the
transaction itself, and once that transaction is known to have committed (its answer, or an unknown
outcome found applied) it hands exactly those notifications to the store's `Announce` callback, once.
A transaction that did not commit, or whose fate could not be settled, is never announced: the
announcement is a hint for live delivery, the stored notification is the record.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

from agenda.calendar.layout import notification_record, notifications_prefix
from agenda.db.client import DBClient, DBUnavailable
from agenda.db.txn import txn_put
from agenda.domain.model import Notification

__all__ = ["ATTEMPTS", "Announce", "Contention", "Write", "commit", "notification_ops"]

log = logging.getLogger(__name__)

ATTEMPTS: Final = 8
# The pause after the n-th lost race is up to BACKOFF_BASE * 2**n, at most BACKOFF_CAP: 0.4 s in all.
BACKOFF_BASE: Final = 0.002
BACKOFF_CAP: Final = 0.1

T = TypeVar("T")

Announce: TypeAlias = Callable[[Sequence[Notification]], None]
"""Told the notifications a committed transaction stored; must not block (it runs in the request)."""


def notification_ops(notes: Iterable[Notification]) -> list[dict[str, Any]]:
    """The puts that store `notes`, each under its cursor (`agenda.calendar.layout.notification_record`)."""
    ops = []
    for note in notes:
        record = notification_record(note)
        ops.append(txn_put(notifications_prefix(note.user) + record["cursor"], record))
    return ops


class Contention(Exception):  # noqa: N818 - the condition the caller handles
    """The change lost its compare too many times in a row; the client may retry later."""


@dataclass(frozen=True)
class Write:
    """One transaction, and how to tell afterwards whether it was applied.

    `witness` is a key the transaction writes and `written` the value it leaves there (None when it
    deletes the key). Only this transaction writes that exact value (a new record, or a revision of
    one with a new sequence), so finding it there means the transaction was applied.

    `notes` are the notifications it stores: their puts follow `ops` in the transaction (`txn_ops`),
    and they are what `commit` announces once it committed.
    """

    compare: Sequence[Mapping[str, Any]]
    ops: Sequence[Mapping[str, Any]]
    witness: str
    written: Any
    notes: Sequence[Notification] = ()
    # Reads (``txn_get``, ``txn_range``) the transaction runs instead of `ops` when its compare fails:
    # what the next attempt needs to decide again, read at the revision that beat this one, in the
    # same round trip (a separate linearizable read would cost the DB another log entry). `commit`
    # hands their results to `on_lost` before it calls the attempt again.
    failure: Sequence[Mapping[str, Any]] = ()
    on_lost: Callable[[Sequence[Mapping[str, Any]]], None] | None = None

    def txn_ops(self) -> list[Mapping[str, Any]]:
        """Every operation of the transaction: `ops`, then the puts of `notes`."""
        return [*self.ops, *notification_ops(self.notes)]


def commit(
    db: DBClient,
    attempt: Callable[[], tuple[T, Write | None]],
    *,
    what: str,
    announce: Announce | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """Run `attempt` and its transaction until the compare holds; return what `attempt` returned.

    `attempt` reads, decides and returns (result, Write), or (result, None) when there is nothing to
    write; it is called again after every lost race, so it must read afresh (or use what the lost
    transaction's `Write.failure` reads found, handed to `Write.on_lost`). Exceptions it raises (a
    rule broken, a conflict found) end the loop. `what` names the record for the log and `Contention`.

    Once the transaction committed, `announce` gets the notes of the Write that committed (the last
    attempt's), once, unless there are none; what it raises is logged, never raised: the change is
    stored, and a caller told otherwise might make it again.
    """
    for _attempt in range(ATTEMPTS):
        result, write = attempt()
        if write is None:
            return result
        try:
            if write.failure:
                answer = db.txn(write.compare, write.txn_ops(), write.failure)
            else:
                answer = db.txn(write.compare, write.txn_ops())
        except DBUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            kv = db.get(write.witness)
            if (None if kv is None else kv["value"]) == write.written:
                _announce(announce, write, what)
                return result
            continue  # not found applied: decide again from fresh reads (the compare guards the retry)
        if answer["succeeded"]:
            _announce(announce, write, what)
            return result
        if write.on_lost is not None:
            write.on_lost(answer.get("results") or [])
        log.info("%s txn lost a race; retrying", what, extra={"key": write.witness})
        # Two writers that keep deciding at the same moment keep beating each other (one user's
        # bookings from two instances compare the same guard): a random pause, growing with each
        # loss, lets one of them through first.
        pause(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**_attempt)))  # noqa: S311 - not a secret
    raise Contention(f"too many concurrent changes to the {what}; try again")


def _announce(announce: Announce | None, write: Write, what: str) -> None:
    if announce is None or not write.notes:
        return
    try:
        announce(tuple(write.notes))
    except Exception:
        log.exception("announcing the notifications of a committed %s txn failed", what)
