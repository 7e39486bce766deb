"""CPU accounting from /proc text (injected), and the per-request arithmetic."""

from __future__ import annotations

import os

import pytest
from bench._cpu import CpuMeter, cpu_seconds, per_request_ms

TICKS = os.sysconf("SC_CLK_TCK")


def stat_line(pid: int, comm: str, utime: int, stime: int) -> str:
    # Fields after the command name: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    # majflt, cmajflt, utime, stime, ...
    return f"{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0\n"


def test_cpu_seconds_adds_user_and_system_time_even_with_odd_command_names() -> None:
    text = stat_line(42, "python (gateway) x", 3 * TICKS, TICKS)
    assert cpu_seconds(42, lambda path: text) == pytest.approx(4.0)


def test_a_vanished_process_counts_as_zero() -> None:
    def gone(path: str) -> str:
        raise FileNotFoundError(path)

    assert cpu_seconds(7, gone) == 0.0


def test_meter_reports_each_groups_difference() -> None:
    ticks = {1: 0, 2: 0, 3: 0}

    def read(path: str) -> str:
        pid = int(path.split("/")[2])
        return stat_line(pid, "p", ticks[pid], 0)

    meter = CpuMeter({"gateway": [1], "db": [2, 3]}, read=read)
    meter.start()
    ticks.update({1: TICKS // 2, 2: TICKS, 3: TICKS})
    used = meter.stop()
    assert used == pytest.approx({"gateway": 0.5, "db": 2.0})
    assert per_request_ms(used, 1000) == pytest.approx({"gateway": 0.5, "db": 2.0, "total": 2.5})


def test_no_requests_gives_no_per_request_figure() -> None:
    assert per_request_ms({"gateway": 1.0}, 0) == {"gateway": None, "total": None}
