"""One hey load step as data (:class:`HeyRequest`) and running it under a :class:`~bench._cluster.Reaper`.

Building the argv is pure (unit-tested); :func:`run_hey` starts hey in its own process group, bounded by
the step's duration plus hey's own per-request timeout, and parses its summary with
:func:`bench._stats.parse_hey`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._cluster import BenchError, Reaper, clean_env
from bench._stats import HeyParseError, StepResult, parse_hey

__all__ = ["HeyRequest", "run_hey"]

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

    def argv(self, clients: int, duration: float) -> list[str]:
        argv = ["hey", "-z", f"{duration:g}s", "-c", str(clients), "-m", self.method]
        if self.body_file is not None:
            argv += ["-T", "application/json", "-D", str(self.body_file)]
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
