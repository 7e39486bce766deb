"""One hey load step as data (:class:`HeyRequest`) and running it under a :class:`~bench._cluster.Reaper`.

Building the argv is pure (unit-tested); :func:`run_hey` starts hey in its own process group, bounded by
the step's duration plus hey's own per-request timeout, and parses its summary with
:func:`bench._stats.parse_hey`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._cluster import BenchError, Reaper, clean_env
from bench._stats import HeyParseError, StepResult, parse_hey

__all__ = ["HeyRequest", "add_load_arguments", "run_hey"]

# hey is given this long to finish its in-flight requests and print, beyond -z and -t.
_EXIT_SLACK_S = 30


@dataclass(frozen=True)
class HeyRequest:
    """The request hey repeats: hey sends the same method, URL, headers and body every time."""

    url: str
    method: str = "GET"
    body_file: Path | None = None
    headers: Sequence[str] = ()  # "Name: value", one -H each
    request_timeout_s: int = 10
    content_type: str = "application/json"  # of body_file

    def argv(self, clients: int, duration: float) -> list[str]:
        argv = ["hey", "-z", f"{duration:g}s", "-c", str(clients), "-m", self.method]
        if self.body_file is not None:
            argv += ["-T", self.content_type, "-D", str(self.body_file)]
        for header in self.headers:
            argv += ["-H", header]
        return [*argv, "-t", str(self.request_timeout_s), self.url]


def run_hey(reaper: Reaper, request: HeyRequest, clients: int, duration: float) -> StepResult:
    """``clients`` keep-alive workers for ``duration`` seconds; BenchError if hey fails or prints nothing."""
    code, out, err = reaper.run(
        request.argv(clients, duration),
        timeout=duration + request.request_timeout_s + _EXIT_SLACK_S,
        env=clean_env(),
    )
    if code != 0:
        raise BenchError(f"hey exited with status {code}: {(err or out)[-600:]}")
    try:
        return parse_hey(out, clients)
    except HeyParseError as exc:
        raise BenchError(str(exc)) from None


def add_load_arguments(
    parser: argparse.ArgumentParser, *, runs_help: str, warmup_help: str, value_help: str
) -> None:
    """The load-shape options every hey benchmark takes: --clients, --duration, --runs, --warmup,
    --value-size (the validators live in bench.db_vs_etcd, whose command line came first)."""
    from bench._cli import clients_arg, non_negative_float, positive_float, positive_int

    parser.add_argument(
        "--clients",
        type=clients_arg,
        default=[1, 16, 64],
        metavar="N,N,...",
        help="concurrency levels (hey -c), default 1,16,64",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="length of each load step, default 10",
    )
    parser.add_argument("--runs", type=positive_int, default=3, help=runs_help)
    parser.add_argument("--warmup", type=non_negative_float, default=2.0, metavar="SECONDS", help=warmup_help)
    parser.add_argument("--value-size", type=positive_int, default=64, metavar="BYTES", help=value_help)
