"""bench/machine_crash.py reads the trials back from Molecule's boxed, wrapped, coloured output."""

from __future__ import annotations

from bench.machine_crash import parse

BOX = "\x1b[2m\u2502\x1b[0m"

OUTPUT = f"""\
{BOX} failover-crash: trial 1: agenda3 killed (DB leader db5 on it): first write
{BOX}   through agenda1 0.12 s after; longest wait of a write in the next 15 s
{BOX}   1.05 s
{BOX}
{BOX} failover-crash: trial 2: agenda3 killed (DB leader db5 on it): first write
{BOX}   through agenda1 3.11 s after; longest wait of a write in the next 15 s
{BOX}   2.93 s
{BOX} failover-crash: median of 2: first write 1.62 s after the crash
"""


def test_every_trial_is_read_back_with_both_figures() -> None:
    assert parse(OUTPUT) == [(0.12, 1.05), (3.11, 2.93)]


def test_output_without_trials_reads_as_none() -> None:
    assert parse("PASSED [100%]\n") == []
