"""Shared read barriers: every reader waits for a barrier proposed after it arrived, and readers
that arrive together share one."""

from __future__ import annotations

import threading
import time

import pytest

from agenda.db.barrier import SharedBarrier
from agenda.db.errors import LeaderUnknown, OutcomeUnknown


class Barriers:
    """A `run` whose barriers the test releases one by one; records when each was started."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.release = threading.Semaphore(0)
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def run(self, timeout: float) -> None:
        with self.lock:
            self.started.append(time.monotonic())
        if not self.release.acquire(timeout=timeout):
            raise OutcomeUnknown("the proposal timed out; it may still be committed")
        if self.fail is not None:
            raise self.fail


def reader(barrier: SharedBarrier, results: list, timeout: float = 5.0) -> threading.Thread:
    def go() -> None:
        arrived = time.monotonic()
        try:
            barrier.wait(timeout)
            results.append(("ok", arrived))
        except Exception as exc:
            results.append((exc, arrived))

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def timed_out() -> OutcomeUnknown:
    return OutcomeUnknown("the proposal timed out; it may still be committed")


def test_a_lone_reader_runs_its_own_barrier_at_once() -> None:
    runs: list[float] = []
    barrier = SharedBarrier(runs.append, timed_out)
    barrier.wait(2.0)
    barrier.wait(2.0)
    assert len(runs) == 2
    assert barrier.rounds == 2


def test_readers_arriving_during_a_barrier_share_the_next_one() -> None:
    fake = Barriers()
    barrier = SharedBarrier(fake.run, timed_out)
    results: list = []
    first = reader(barrier, results)
    wait_for(lambda: len(fake.started) == 1)
    others = [reader(barrier, results) for _ in range(10)]
    time.sleep(0.05)  # they are all waiting: none may join the barrier already proposed
    assert len(fake.started) == 1
    fake.release.release()  # the first barrier completes: the first reader only
    first.join(5)
    wait_for(lambda: len(fake.started) == 2)  # one barrier for the ten others
    fake.release.release()
    for thread in others:
        thread.join(5)
    assert [outcome for outcome, _ in results] == ["ok"] * 11
    assert len(fake.started) == 2
    # Every reader's barrier was proposed after it arrived.
    assert all(arrived <= fake.started[0] for _, arrived in results[:1])
    assert all(arrived <= fake.started[1] for _, arrived in results[1:])


def test_a_failed_barrier_fails_every_reader_of_its_round_with_its_own_copy() -> None:
    fake = Barriers()
    fake.fail = LeaderUnknown("no leader is known")
    barrier = SharedBarrier(fake.run, timed_out)
    results: list = []
    threads = [reader(barrier, results)]
    wait_for(lambda: len(fake.started) == 1)
    threads += [reader(barrier, results) for _ in range(3)]
    time.sleep(0.05)
    fake.release.release()
    fake.release.release()
    for thread in threads:
        thread.join(5)
    errors = [outcome for outcome, _ in results]
    assert all(isinstance(error, LeaderUnknown) for error in errors)
    assert len({id(error) for error in errors}) == 4
    assert barrier.rounds == 2


def test_a_reader_whose_time_runs_out_while_waiting_gets_the_timeout() -> None:
    fake = Barriers()
    barrier = SharedBarrier(fake.run, timed_out)
    results: list = []
    first = reader(barrier, results, timeout=5.0)
    wait_for(lambda: len(fake.started) == 1)
    late = reader(barrier, results, timeout=0.1)
    late.join(5)
    assert isinstance(results[0][0], OutcomeUnknown)
    fake.release.release()
    first.join(5)
    assert results[1][0] == "ok"
    assert len(fake.started) == 1  # the late reader's round never started: nobody left in it


def test_the_next_round_starts_when_its_proposer_gave_up() -> None:
    """A round whose first waiter timed out is started by another of its readers."""
    fake = Barriers()
    barrier = SharedBarrier(fake.run, timed_out)
    results: list = []
    first = reader(barrier, results, timeout=5.0)
    wait_for(lambda: len(fake.started) == 1)
    impatient = reader(barrier, results, timeout=0.05)
    patient = reader(barrier, results, timeout=5.0)
    impatient.join(5)
    fake.release.release()
    first.join(5)
    wait_for(lambda: len(fake.started) == 2)
    fake.release.release()
    patient.join(5)
    assert [type(outcome) if outcome != "ok" else outcome for outcome, _ in results] == [
        OutcomeUnknown,
        "ok",
        "ok",
    ]


@pytest.mark.parametrize("readers", [1, 8])
def test_many_rounds_in_a_row_never_leave_a_reader_behind(readers: int) -> None:
    runs: list[float] = []
    barrier = SharedBarrier(lambda timeout: (runs.append(timeout), time.sleep(0.002)), timed_out)
    results: list = []
    threads = [reader(barrier, results) for _ in range(readers * 10)]
    for thread in threads:
        thread.join(10)
    assert [outcome for outcome, _ in results] == ["ok"] * (readers * 10)
    assert 1 <= len(runs) <= readers * 10


class _PatientWakesLast(threading.Condition):
    """A condition whose waits in the thread named ``patient`` come back only once a second barrier
    has started: the hurried reader, not the patient one, starts the second round."""

    def __init__(self, started: list[float]) -> None:
        super().__init__()
        self.started = started

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if threading.current_thread().name == "patient":
            self.release()
            try:
                wait_for(lambda: len(self.started) >= 2)
            finally:
                self.acquire()
        return woken


def test_a_round_gets_the_time_of_its_most_patient_reader_not_only_the_starters() -> None:
    """The reader that starts a round may have spent nearly all its time waiting for the previous
    one; the no-op still serves the others, so it must not be given only the starter's remainder."""
    now = [100.0]  # the barrier's clock, moved by the test
    budgets: list[float] = []
    fake = Barriers()

    def run(timeout: float) -> None:
        budgets.append(timeout)
        fake.run(timeout)

    barrier = SharedBarrier(run, timed_out, clock=lambda: now[0])
    barrier._cond = _PatientWakesLast(fake.started)
    results: list = []
    first = reader(barrier, results, timeout=5.0)
    wait_for(lambda: len(fake.started) == 1)
    hurried = reader(barrier, results, timeout=0.4)  # joins the next round, and will start it
    wait_for(lambda: barrier._next is not None and barrier._next.deadline == 100.4)

    def wait_patiently() -> None:
        try:
            barrier.wait(5.0)
            results.append(("patient", "ok"))
        except Exception as exc:
            results.append(("patient", exc))

    patient = threading.Thread(target=wait_patiently, name="patient")
    patient.start()
    wait_for(lambda: barrier._next is not None and barrier._next.deadline == 105.0)
    now[0] = 100.3
    fake.release.release()  # the first round ends 0.1 s before the hurried reader's deadline
    first.join(5)
    wait_for(lambda: len(fake.started) == 2)
    assert budgets[1] == pytest.approx(4.7)  # the patient reader's time, not the hurried one's 0.1
    now[0] = 100.45  # the second no-op commits after the hurried reader's deadline...
    fake.release.release()
    for thread in (hurried, patient):
        thread.join(5)
    assert ("patient", "ok") in results  # ...but well within the patient reader's


def test_an_error_that_cannot_be_copied_still_reaches_the_reader() -> None:
    from agenda.db.errors import InvalidArgument

    def run(timeout: float) -> None:
        raise InvalidArgument("op", "refused")

    with pytest.raises(InvalidArgument, match="op: refused"):
        SharedBarrier(run, timed_out).wait(1.0)
