"""A forwarded request waits only while this member follows its leader (forwarding.while_following)."""

from __future__ import annotations

import contextvars
import threading

import pytest

from agenda.db.api.forwarding import LeaderLost, while_following

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_the_answer_is_returned_while_the_leader_leads() -> None:
    assert while_following(lambda: "answer", lambda: True) == "answer"


def test_an_error_of_the_send_is_raised_as_it_is() -> None:
    def send() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        while_following(send, lambda: True)


def test_a_leader_lost_mid_request_ends_the_wait_without_its_answer() -> None:
    release = threading.Event()
    checks: list[int] = []

    def still_following() -> bool:
        checks.append(1)
        return len(checks) < 3  # the third check finds an election under way

    try:
        with pytest.raises(LeaderLost):
            while_following(lambda: release.wait(30), still_following, interval=0.01)
        assert len(checks) == 3
        assert not release.is_set()  # the send was still waiting: its answer never came
    finally:
        release.set()


def test_the_send_runs_with_the_callers_context_variables() -> None:
    token = request_id.set("req-42")
    try:
        assert while_following(request_id.get, lambda: True) == "req-42"
    finally:
        request_id.reset(token)
