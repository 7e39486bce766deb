"""bench/gossip_sim.py: the formula column, the statistics, the tables, the arguments, and a tiny run."""

from __future__ import annotations

import argparse

import pytest
from bench import gossip_sim as gs

from agenda.gossip.config import Config
from agenda.gossip.member import Meta, Status
from agenda.gossip.sim import Event


def test_formula_uses_memberlists_timers() -> None:
    f5, f50, f500 = (gs.formula(n, Config()) for n in (5, 50, 500))
    assert (f5.suspicion_min, f5.suspicion_max, f5.retransmit_limit) == (4.0, 24.0, 4)
    assert f50.suspicion_min == pytest.approx(6.792)
    assert f500.suspicion_max == pytest.approx(6 * 10.792)
    assert f500.retransmit_limit == 12
    # first probe after (n-1)/n of an interval on average, then the interval the probe takes
    assert f5.first_suspicion == pytest.approx(0.8 + 1.0)
    assert f5.dead_min == pytest.approx(1.8 + 4.0)
    assert f5.dead_max == pytest.approx(1.8 + 24.0)


def test_incidents_count_one_accusation_however_many_views_saw_it() -> None:
    def event(observer: str, member: str, incarnation: int) -> Event:
        return Event(1.0, observer, member, Status.SUSPECT, incarnation, Meta())

    events = [event("a", "x", 1), event("b", "x", 1), event("c", "x", 2), event("a", "y", 1)]
    assert gs.incidents(events) == 3
    assert gs.incidents([]) == 0


def test_percentile_interpolates() -> None:
    assert gs.percentile([], 0.95) is None
    assert gs.percentile([3.0], 0.95) == 3.0
    assert gs.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert gs.percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)


def test_tables_show_measurements_beside_the_formula_and_rates_per_hour() -> None:
    row = gs.Row(
        n=5,
        loss=0.05,
        formula=gs.formula(5, Config()),
        trials=[gs.Trial(1.5, 5.5, 5.6), gs.Trial(1.0, 5.0, 5.1), gs.Trial(None, None, None)],
        fp=gs.FalsePositives(seconds=600.0, suspect_incidents=3, dead_incidents=1),
    )
    text = gs.format_table([row])
    detection = next(line for line in text.splitlines() if line.strip().startswith("5 "))
    assert "5.2 / 5.5" in detection  # median / p95 of the first deaths (5.0, 5.5)
    assert "4.0 / 4.0" in detection  # suspicion to death, per trial: 4.0 both times
    assert "4.0 .. 24.0" in detection  # the formula's range of suspicion timeouts
    assert " 5.8 |" in detection  # the formula's expected first death: 0.8 + 1 + 4
    assert detection.rstrip().endswith("1")  # one trial never saw every view declare it dead
    fp_line = [line for line in text.splitlines() if line.strip().startswith("5 ")][1]
    assert "600s" in fp_line
    assert "18.0" in fp_line  # 3 in 10 minutes
    assert "6.00" in fp_line  # 1 in 10 minutes


def test_arguments_are_checked() -> None:
    assert gs.parse_sizes("5,50,500") == [5, 50, 500]
    assert gs.parse_floats("0,0.05") == [0.0, 0.05]
    with pytest.raises(argparse.ArgumentTypeError):
        gs.parse_sizes("2")
    with pytest.raises(argparse.ArgumentTypeError):
        gs.parse_floats("1.5")
    with pytest.raises(argparse.ArgumentTypeError):
        gs.parse_floats("x")
    assert gs.main(["--trials", "0"]) == 2


def test_a_tiny_run_measures_every_trial(capsys: pytest.CaptureFixture[str]) -> None:
    assert gs.main(["--sizes", "5", "--losses", "0", "--trials", "2", "--fp-seconds", "30"]) == 0
    out = capsys.readouterr().out
    detection = next(line for line in out.splitlines() if line.strip().startswith("5 "))
    assert detection.rstrip().endswith(" 0")  # no trial missed
    trials = gs.detection_trials(5, 0.0, 2, seed=3)
    assert all(t.all_dead is not None and t.first_dead is not None for t in trials)
    assert all(4.0 <= t.first_dead <= 30.0 for t in trials)  # type: ignore[operator]
