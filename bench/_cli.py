"""What every benchmark's command line shares: argument types, progress lines, the machine's facts.

The facts (CPU, kernel, tool versions, commit, load) are printed first and stored with the results, so
that a run's figures can be compared with another machine's, or another day's, knowing what differed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._cluster import clean_env
from bench._stats import parse_clients


def _checked(convert: Callable[[str], Any], noun: str, ok: Callable[[Any], bool], rule: str) -> Any:
    """An argparse type: `convert` the text, refusing (with the reason) what fails it or `ok`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


positive_float: Callable[[str], float] = _checked(float, "a number", lambda v: v > 0, "> 0")
non_negative_float: Callable[[str], float] = _checked(float, "a number", lambda v: v >= 0, ">= 0")
positive_int: Callable[[str], int] = _checked(int, "an integer", lambda v: v >= 1, ">= 1")


def clients_arg(text: str) -> list[int]:
    try:
        return parse_clients(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def say(text: str = "") -> None:
    """A progress or result line, flushed at once (the benchmarks run for minutes)."""
    print(text, flush=True)


def command_output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            list(argv), capture_output=True, text=True, timeout=10, check=False, env=clean_env()
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine_facts(etcd_version: str, python: str) -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    repo = Path(__file__).resolve().parent.parent
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "etcd_version": etcd_version,
        "hey_version": command_output(["dpkg-query", "-W", "-f=${Version}", "hey"]),
        "python_version": platform.python_version(),
        "agenda_python": python,
        "pysyncobj_version": command_output(
            [python, "-c", "import importlib.metadata as m; print(m.version('pysyncobj'))"]
        ),
        "git_commit": command_output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "git_dirty": command_output(["git", "-C", str(repo), "status", "--porcelain", "--", "app"])
        != "unknown",
        "loadavg_at_start": [round(load1, 2), round(load5, 2)],
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_facts(facts: dict[str, Any]) -> None:
    say(
        f"machine: nproc={facts['nproc']} cpu={facts['cpu_model']!r} kernel={facts['kernel']} "
        f"loadavg(1m,5m) at start={facts['loadavg_at_start']}"
    )
    say(
        f"versions: etcd {facts['etcd_version']}, hey {facts['hey_version']}, python "
        f"{facts['python_version']}, pysyncobj {facts['pysyncobj_version']}, "
        f"repo {facts['git_commit']}{' (dirty)' if facts['git_dirty'] else ''}"
    )
