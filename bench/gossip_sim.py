"""Benchmark: SWIM gossip (agenda.gossip) in simulated time, beside memberlist's formulas for the same timers.

    python bench/gossip_sim.py [--sizes 5,50,500] [--losses 0,0.05] [--trials 5] [--fp-seconds 600]

Nothing runs for real: every member is an ``agenda.gossip.protocol.Node`` on the in-memory network of
``agenda.gossip.sim`` (datagram latency 0.5-2 ms, the given loss; streams never lost), with memberlist's
LAN defaults (probe 1 s, probe timeout 500 ms, 3 indirect probes, suspicion multiplier 4, maximum 6x,
gossip every 200 ms to 3 members). Each cluster starts converged. Per size and loss:

* detection: ``--trials`` times, a member crashes (no leave); measured are the first suspicion, the first
  view and the last view to declare it dead. The member then restarts and rejoins before the next trial.
* false positives: ``--fp-seconds`` simulated seconds of a healthy cluster; an incident is one member at
  one incarnation suspected (or declared dead) while it was up, however many views saw it. Reported per
  simulated hour (extrapolated when the run is shorter than an hour: the table says how long it ran).

Beside them, memberlist's formulas: suspicion timeout ``lo = 4 x max(1, log10 n) x 1 s`` and Lifeguard's
``hi = 6 x lo``; the first probe of the dead member comes after ``(n-1)/n`` of an interval on average
(each of the n-1 others has it at a uniformly random place in its round of n-1 probes), the probe fails
one interval later, and death follows ``lo`` later when k = 2 confirmations arrive in time, ``hi`` later
when none do. Wall time with the defaults: about six minutes on one (shared) core, nearly all of it
the 500-member runs (5% loss costs more: every refutation is gossiped).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agenda.gossip.config import Config, retransmit_limit, suspicion_timeout
from agenda.gossip.member import Status
from agenda.gossip.sim import Event, Simulation

__all__ = [
    "FalsePositives",
    "Formula",
    "Row",
    "Trial",
    "detection_trials",
    "false_positive_run",
    "format_table",
    "formula",
    "incidents",
    "main",
    "parse_floats",
    "parse_sizes",
    "percentile",
]

HOUR = 3600.0


@dataclass(frozen=True)
class Formula:
    """memberlist's values for a cluster of ``n`` with the given timers."""

    n: int
    suspicion_min: float
    suspicion_max: float
    retransmit_limit: int
    first_suspicion: float  # expected: the first probe of the dead member, then one interval
    dead_min: float  # first suspicion + lo: k confirmations arrived in time
    dead_max: float  # first suspicion + hi: no confirmation at all


def formula(n: int, cfg: Config) -> Formula:
    lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
    hi = cfg.suspicion_max_timeout_mult * lo
    first_probe = (n - 1) / n * cfg.probe_interval if n > 1 else 0.0
    first = first_probe + cfg.probe_interval
    return Formula(n, lo, hi, retransmit_limit(cfg.retransmit_mult, n), first, first + lo, first + hi)


@dataclass(frozen=True)
class Trial:
    """One crash: seconds from the crash to the first suspicion, the first and the last view's death."""

    first_suspect: float | None
    first_dead: float | None
    all_dead: float | None


@dataclass(frozen=True)
class FalsePositives:
    seconds: float
    suspect_incidents: int
    dead_incidents: int

    def per_hour(self, count: int) -> float:
        return count * HOUR / self.seconds


def incidents(events: Iterable[Event]) -> int:
    """Distinct (member, incarnation) among the events: one accusation, however many views saw it."""
    return len({(e.member, e.incarnation) for e in events})


def detection_trials(
    n: int, loss: float, trials: int, *, seed: int, cfg: Config | None = None, limit: float = 90.0
) -> list[Trial]:
    cfg = cfg or Config()
    sim = Simulation(seed=seed, config=cfg, loss=loss)
    names = sim.add_cluster(n)
    sim.run_for(5.0)
    results = []
    for i in range(trials):
        victim = names[(i * 7919 + 1) % n]
        sim.crash(victim)
        crashed = sim.now
        all_dead = None
        while sim.now - crashed < limit:
            sim.run_for(0.5)
            _, all_dead = sim.detection(victim, Status.DEAD, crashed)
            if all_dead is not None:
                break
        first_suspect, _ = sim.detection(victim, Status.SUSPECT, crashed)
        first_dead, all_dead = sim.detection(victim, Status.DEAD, crashed)
        results.append(Trial(first_suspect, first_dead, all_dead))
        seed_member = names[0] if victim != names[0] else names[1]
        sim.restart(victim, seeds=[sim.hosts[seed_member].addr])
        sim.run_until_converged(dict.fromkeys(names, Status.ALIVE), limit=60.0, step=0.5)
        sim.run_for(5.0)
    return results


def false_positive_run(
    n: int, loss: float, seconds: float, *, seed: int, cfg: Config | None = None
) -> FalsePositives:
    sim = Simulation(seed=seed, config=cfg or Config(), loss=loss)
    sim.add_cluster(n)
    sim.run_for(seconds)
    return FalsePositives(seconds, incidents(sim.false_suspect), incidents(sim.false_dead))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Row:
    n: int
    loss: float
    formula: Formula
    trials: list[Trial]
    fp: FalsePositives


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _pair(values: Sequence[float]) -> str:
    """``median / p95``."""
    return f"{_num(_median(values))} / {_num(percentile(values, 0.95))}"


def format_table(rows: Sequence[Row]) -> str:
    """Two tables: detection (measured medians and p95 beside the formula) and false positives.

    Detection columns: ``suspect``, from the crash to the first suspicion; ``susp>dead``, from the first
    suspicion to the first view's verdict, the suspicion timeout as it played out, beside ``lo .. hi``;
    ``1st dead`` and ``all dead``, from the crash; ``E[dead]``, the formula's expected first verdict
    (mean first suspicion + lo, with k confirmations in time)."""
    out = [
        "Detection of a crashed member (seconds; median / p95 over the trials)",
        "",
        f"{'n':>4} {'loss':>5} {'trials':>6} | {'retx':>4} | {'suspect':>7} {'E':>4} | "
        f"{'susp>dead':>11} {'lo .. hi':>13} | {'1st dead':>11} {'all dead':>11} {'E[dead]':>7} | "
        f"{'missed':>6}",
    ]
    for row in rows:
        f = row.formula
        suspects = [t.first_suspect for t in row.trials if t.first_suspect is not None]
        timeouts = [
            t.first_dead - t.first_suspect
            for t in row.trials
            if t.first_dead is not None and t.first_suspect is not None
        ]
        firsts = [t.first_dead for t in row.trials if t.first_dead is not None]
        alls = [t.all_dead for t in row.trials if t.all_dead is not None]
        missed = sum(1 for t in row.trials if t.all_dead is None)
        out.append(
            f"{row.n:>4} {row.loss:>5.0%} {len(row.trials):>6} | {f.retransmit_limit:>4} | "
            f"{_num(_median(suspects)):>7} {f.first_suspicion:>4.1f} | "
            f"{_pair(timeouts):>11} {f.suspicion_min:>5.1f} .. {f.suspicion_max:>4.1f} | "
            f"{_pair(firsts):>11} {_pair(alls):>11} {f.dead_min:>7.1f} | {missed:>6}"
        )
    out += [
        "",
        "False positives in a healthy cluster (incident: one member at one incarnation, in any views)",
        "",
        f"{'n':>4} {'loss':>5} {'simulated':>10} | {'suspected':>9} {'per hour':>9} | "
        f"{'dead':>5} {'per hour':>9}",
    ]
    for row in rows:
        fp = row.fp
        out.append(
            f"{row.n:>4} {row.loss:>5.0%} {fp.seconds:>9.0f}s | {fp.suspect_incidents:>9} "
            f"{fp.per_hour(fp.suspect_incidents):>9.1f} | "
            f"{fp.dead_incidents:>5} {fp.per_hour(fp.dead_incidents):>9.2f}"
        )
    return "\n".join(out)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(n < 3 for n in sizes):
        raise argparse.ArgumentTypeError("sizes are integers of at least 3, comma-separated")
    return sizes


def parse_floats(text: str) -> list[float]:
    try:
        losses = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("losses are numbers, comma-separated") from None
    if not losses or any(not 0 <= x < 1 for x in losses):
        raise argparse.ArgumentTypeError("losses are fractions in [0, 1), e.g. 0,0.05")
    return losses


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[5, 50, 500], help="cluster sizes (5,50,500)")
    parser.add_argument("--losses", type=parse_floats, default=[0.0, 0.05], help="datagram loss (0,0.05)")
    parser.add_argument("--trials", type=int, default=5, help="crashes per size and loss (5)")
    parser.add_argument(
        "--fp-seconds", type=float, default=600.0, help="simulated seconds of false-positive run"
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials < 1 or args.fp_seconds <= 0:
        print("--trials and --fp-seconds must be positive", file=sys.stderr)
        return 2
    cfg = Config()
    rows = []
    for n in args.sizes:
        for loss in args.losses:
            started = time.perf_counter()
            seed = args.seed * 1000 + n + int(loss * 100)
            trials = detection_trials(n, loss, args.trials, seed=seed, cfg=cfg)
            fp = false_positive_run(n, loss, args.fp_seconds, seed=seed + 1, cfg=cfg)
            rows.append(Row(n, loss, formula(n, cfg), trials, fp))
            print(f"n={n} loss={loss:.0%}: {time.perf_counter() - started:.1f} s wall", file=sys.stderr)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
