"""Benchmark: real agenda-gossip daemons on loopback, crash detection and false positives, beside the formula.

    python bench/gossip_live.py [--members 5] [--trials 5] [--quiet-seconds 120]

``--members`` processes (``python -m agenda.gossip run``) with memberlist's LAN timers (probe 1 s, probe
timeout 500 ms, suspicion multiplier 4), each writing its view file every 200 ms and on every change.
Then, ``--trials`` times: one member (never the same twice in a row, never the first) is SIGKILLed, a
crash without a leave; measured from the kill, by polling every other member's view file every 20 ms:
the first view to suspect it, the first and the last to declare it dead. The member is started again
(a restart outbids its tombstone with a wall-clock incarnation) and the cluster must see it alive
everywhere before the next trial. Finally ``--quiet-seconds`` of a healthy cluster: every suspicion of a
live member that any daemon logged is a false positive.

Beside the measures, memberlist's formula for the same timers and n (as bench/gossip_sim.py states it):
first probe after (n-1)/n of an interval on average, failed one interval later, dead ``lo = 4 x max(1,
log10 n) x 1 s`` after that with two confirmations, ``hi = 6 x lo`` with none. The view files are polled,
so each figure carries up to 20 ms of polling plus the 200 ms a daemon may wait to rewrite its view only
when nothing changed (a change is written at once). Medians of the trials are reported.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from agenda.common.discovery import read_view
from agenda.gossip.config import Config
from bench._cluster import BenchError, Reaper, clean_env, free_ports, log_tail, wait_until
from bench.gossip_sim import formula

POLL = 0.02


@dataclass
class Daemon:
    name: str
    port: int
    workdir: Path
    process: object = None

    @property
    def view(self) -> Path:
        return self.workdir / f"{self.name}.json"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def config(self) -> Path:
        return self.workdir / f"{self.name}.yml"


@dataclass
class Trial:
    victim: str
    first_suspect: float | None = None
    first_dead: float | None = None
    all_dead: float | None = None
    rejoined: float | None = None


@dataclass
class Result:
    members: int
    trials: list[Trial] = field(default_factory=list)
    quiet_seconds: float = 0.0
    false_suspicions: int = 0


def statuses(daemon: Daemon) -> dict[str, str]:
    try:
        return {m.name: m.status for m in read_view(daemon.view)[2]}
    except (OSError, ValueError):
        return {}


def start_cluster(reaper: Reaper, count: int) -> list[Daemon]:
    workdir = reaper.mkdtemp("bench-gossip-")
    keys = workdir / "gossip.keys"
    keys.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    keys.chmod(0o600)
    ports = free_ports(count)
    daemons = [Daemon(f"m{index + 1}", port, workdir) for index, port in enumerate(ports)]
    for daemon in daemons:
        settings = {
            "name": daemon.name,
            "bind": f"127.0.0.1:{daemon.port}",
            "seeds": [f"127.0.0.1:{other.port}" for other in daemons if other is not daemon][:3],
            "keys_file": str(keys),
            "service": "bench",
            "view_file": str(daemon.view),
            "view_refresh_ms": 200,
            "log_format": "plain",
        }
        daemon.config.write_text(yaml.safe_dump(settings))
        spawn(reaper, daemon)
    everyone = {d.name for d in daemons}
    converged = wait_until(
        lambda: all(statuses(d) == dict.fromkeys(everyone, "alive") for d in daemons) or None, timeout=60
    )
    if converged is None:
        raise BenchError("the cluster did not converge in 60 s:\n" + log_tail(daemons[0].log))
    return daemons


def spawn(reaper: Reaper, daemon: Daemon) -> None:
    argv = [sys.executable, "-m", "agenda.gossip", "--config", str(daemon.config), "run"]
    daemon.process = reaper.spawn(argv, daemon.log, clean_env())


def crash_trial(reaper: Reaper, daemons: list[Daemon], victim: Daemon) -> Trial:
    others = [d for d in daemons if d is not victim]
    trial = Trial(victim.name)
    killed = time.monotonic()
    reaper.kill(victim.process, signal.SIGKILL)  # type: ignore[arg-type]
    deadline = killed + 60
    while time.monotonic() < deadline:
        seen = [statuses(d).get(victim.name) for d in others]
        now = time.monotonic() - killed
        if trial.first_suspect is None and any(s in ("suspect", "dead") for s in seen):
            trial.first_suspect = now
        if trial.first_dead is None and "dead" in seen:
            trial.first_dead = now
        if all(s == "dead" for s in seen):
            trial.all_dead = now
            break
        time.sleep(POLL)
    spawn(reaper, victim)
    began = time.monotonic()
    back = wait_until(
        lambda: all(statuses(d).get(victim.name) == "alive" for d in others) or None, timeout=60
    )
    trial.rejoined = time.monotonic() - began if back else None
    return trial


def false_suspicions(daemons: list[Daemon], since: dict[str, int]) -> int:
    """Suspicions logged after the offsets in `since` (each daemon logs every status change it sees)."""
    count = 0
    for daemon in daemons:
        text = daemon.log.read_bytes()[since[daemon.name] :].decode(errors="replace")
        count += text.count("-> suspect/")
    return count


def run(members: int, trials: int, quiet: float) -> Result:
    reaper = Reaper()
    reaper.install()
    try:
        daemons = start_cluster(reaper, members)
        result = Result(members)
        for index in range(trials):
            victim = daemons[1 + index % (members - 1)]
            trial = crash_trial(reaper, daemons, victim)
            result.trials.append(trial)
            print(
                f"  trial {index + 1}: {trial.victim} killed: first suspect {fmt(trial.first_suspect)}, "
                f"first dead {fmt(trial.first_dead)}, dead in every view {fmt(trial.all_dead)}; "
                f"alive again everywhere {fmt(trial.rejoined)} after its restart",
                flush=True,
            )
        offsets = {d.name: d.log.stat().st_size for d in daemons}
        began = time.monotonic()
        time.sleep(quiet)  # the measurement itself: a healthy cluster left alone
        result.quiet_seconds = time.monotonic() - began
        result.false_suspicions = false_suspicions(daemons, offsets)
        return result
    finally:
        reaper.cleanup()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def row(measure: str, values: list[float | None], anchor: str) -> str:
    return f"| {measure} | {fmt(median(values))} | {anchor} |"


def report(result: Result) -> str:
    f = formula(result.members, Config())
    trials = result.trials
    lines = [
        f"agenda-gossip, {result.members} real daemons on loopback, memberlist's LAN timers, "
        f"{len(trials)} SIGKILLs (medians)",
        "",
        "| measure | agenda-gossip | memberlist's formula |",
        "|---|---|---|",
        row("first suspicion", [t.first_suspect for t in trials], f"{f.first_suspicion:.2f} s (mean)"),
        row("first view dead", [t.first_dead for t in trials], f"{f.dead_min:.2f} s (k=2 confirmations)"),
        row("every view dead", [t.all_dead for t in trials], f"at most {f.dead_max:.2f} s (no confirmation)"),
        row("restart to alive everywhere", [t.rejoined for t in trials], "-"),
        "",
        f"false positives at 0% loss: {result.false_suspicions} suspicion(s) of a live member in "
        f"{result.quiet_seconds:.0f} s of {result.members} healthy members",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--quiet-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.members < 3:
        parser.error("--members must be at least 3")
    try:
        result = run(args.members, args.trials, args.quiet_seconds)
    except BenchError as exc:
        print(f"bench-gossip: {exc}", file=sys.stderr)
        return 1
    print()
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
