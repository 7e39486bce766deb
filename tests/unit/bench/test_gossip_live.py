"""bench/gossip_live.py's pure parts: the report and the false-positive count from the daemons' logs."""

from __future__ import annotations

from pathlib import Path

from bench.gossip_live import Daemon, Result, Trial, false_suspicions, median, report


def test_median_ignores_missing_measures() -> None:
    assert median([1.0, None, 3.0, 2.0]) == 2.0
    assert median([None]) is None


def test_report_shows_medians_beside_the_formula() -> None:
    result = Result(
        5,
        [
            Trial("m2", 1.0, 5.0, 5.1, 0.4),
            Trial("m3", 2.0, 6.0, 6.1, 0.5),
            Trial("m4", None, None, None, None),
        ],
    )
    result.quiet_seconds, result.false_suspicions = 120.0, 0
    text = report(result)
    assert "| first view dead | 5.50 s | 5.80 s (k=2 confirmations) |" in text
    assert "| every view dead | 5.60 s | at most 25.80 s (no confirmation) |" in text
    assert "0 suspicion(s) of a live member in 120 s of 5 healthy members" in text


def test_only_suspicions_logged_after_the_offsets_count(tmp_path: Path) -> None:
    daemons = [Daemon("m1", 1, tmp_path), Daemon("m2", 2, tmp_path)]
    daemons[0].log.write_text("member m3 at x: alive/serving -> suspect/serving (incarnation 1)\n")
    daemons[1].log.write_text("")
    offsets = {d.name: d.log.stat().st_size for d in daemons}
    with daemons[1].log.open("a") as log:
        log.write("member m1 at x: alive/serving -> suspect/serving (incarnation 4)\n")
        log.write("member m1 at x: suspect/serving -> alive/serving (incarnation 5)\n")
    assert false_suspicions(daemons, offsets) == 1
