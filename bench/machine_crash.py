"""Benchmark: a whole machine's crash, the gap until a surviving gateway writes again (in the lab).

    python bench/machine_crash.py [--hosts 3] [--trials 5] [--keep]

Builds a Molecule lab of `--hosts` systemd containers (molecule/shared/hosts_config.py), converges
the whole deployment on it, and runs the `failover-crash` scenario's check `--trials` times: the
DB leader is moved onto the last host, which is `docker kill`ed while a writer on the controller
sends create-event through the first host's gateway one after the other. It prints, per trial, the
time from the kill to the first successful write sent after it and the longest wait of any write in
the next 15 s, then their medians. The issue's figure before this work: 8.0 s (three hosts).
The lab is destroyed afterwards unless `--keep`. Needs what `make molecule` needs (Docker, the
base image); it takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
TRIAL: Final = re.compile(
    r"trial (?P<n>\d+): (?P<victim>\S+) killed .*?first write through \S+ (?P<first>[\d.]+) s after; "
    r"longest wait of a write in the next \d+ s (?P<longest>[\d.]+) s"
)
ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")
BEFORE_S: Final = 8.0  # the measurement before the work, three hosts


def molecule(config: Path, *args: str, env: dict[str, str]) -> str:
    argv = ["molecule", "-c", str(config), *args]
    print("$", " ".join(argv), flush=True)
    proc = subprocess.run(  # noqa: S603 - argv built here
        argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"machine_crash: molecule {' '.join(args)} failed (exit {proc.returncode})")
    # Molecule writes the playbooks' and the verifier's boxed output to stderr, its own to stdout.
    return proc.stdout + proc.stderr


def parse(output: str) -> list[tuple[float, float]]:
    # Molecule wraps the check's lines at 80 columns inside a box: join them back first.
    text = " ".join(line.strip(" │") for line in ANSI.sub("", output).splitlines())
    return [(float(m["first"]), float(m["longest"])) for m in TRIAL.finditer(re.sub(r"\s+", " ", text))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="machine_crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts, 3 to 9 (default 3)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args(argv)
    if not 3 <= args.hosts <= 9:
        parser.error("--hosts: 3 to 9 (with two, losing the first host loses the DB's quorum)")
    if args.trials < 1:
        parser.error("--trials: at least 1")
    image = subprocess.run(  # noqa: S603 - a fixed script of this repository
        [str(ROOT / "lab" / "build-image.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {**os.environ, "AGENDA_IMAGE": image, "AGENDA_CRASH_TRIALS": str(args.trials)}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / f"molecule-{args.hosts}.yml"
        config.write_text(
            subprocess.run(  # noqa: S603 - argv built here
                [sys.executable, str(ROOT / "molecule" / "shared" / "hosts_config.py"), str(args.hosts)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        try:
            molecule(config, "create", "-s", "default", env=env)
            molecule(config, "converge", "-s", "default", env=env)
            output = molecule(config, "verify", "-s", "failover-crash", env=env)
        finally:
            if not args.keep:
                subprocess.run(  # noqa: S603 - argv built here
                    ["molecule", "-c", str(config), "destroy", "--all"],  # noqa: S607 - the venv's molecule
                    cwd=ROOT,
                    env=env,
                    check=False,
                )
    trials = parse(output)
    if len(trials) != args.trials:
        sys.stderr.write(output[-4000:])
        raise SystemExit(
            f"machine_crash: expected {args.trials} trials in the check's output, found {len(trials)}"
        )
    print(
        f"\nA machine's crash, {args.hosts} hosts, the DB leader on the crashed one, "
        "create-event one after another"
    )
    print("| trial | first write after the kill (s) | longest wait in the next 15 s (s) |")
    print("|---|---|---|")
    for index, (first, longest) in enumerate(trials, 1):
        print(f"| {index} | {first:.2f} | {longest:.2f} |")
    firsts = [first for first, _ in trials]
    median = statistics.median(firsts)
    print(f"| median | {median:.2f} | {statistics.median(longest for _, longest in trials):.2f} |")
    print(
        f"\nbefore this work: {BEFORE_S:.1f} s; now {median:.2f} s "
        f"({BEFORE_S / median:.1f}x shorter); required: under 2 s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
