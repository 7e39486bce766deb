"""Pure helpers of the benchmark: parse ``hey`` output, aggregate runs, format the tables.

Nothing here starts processes or touches the network, so all of it is unit-tested
(tests/unit/bench/test_bench_parsing.py).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HeyParseError",
    "StepResult",
    "StepSummary",
    "format_failover_table",
    "format_load_table",
    "format_ratio",
    "median_or_none",
    "parse_clients",
    "parse_hey",
    "ratio",
    "summarize",
    "summary_cells",
]

_TOTAL = re.compile(r"^\s*Total:\s+([0-9.]+)\s+secs", re.MULTILINE)
_RPS = re.compile(r"^\s*Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+in\s+([0-9.]+)\s+secs", re.MULTILINE)
_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+)\s+responses", re.MULTILINE)
_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.*?)\s*$", re.MULTILINE)


class HeyParseError(ValueError):
    """hey's output did not contain the numbers the benchmark needs."""


@dataclass(frozen=True)
class StepResult:
    """One load step (one system, one concurrency level, one run), as measured by hey.

    ``rps`` counts only 2xx answers per second of hey's wall time (hey's own "Requests/sec" also counts
    errors; it is kept as ``hey_rps``). ``errors`` = non-2xx responses + transport errors (connection
    refused, timeouts...): anything that is not an acknowledged write.
    """

    clients: int
    total_s: float
    ok: int
    errors: int
    rps: float
    hey_rps: float
    p50_ms: float | None
    p99_ms: float | None
    status_codes: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status_codes"] = {str(k): v for k, v in self.status_codes.items()}
        return data


@dataclass(frozen=True)
class StepSummary:
    """Medians over the runs of one (system, clients) cell, plus the error count over all runs."""

    clients: int
    runs: int
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    errors_total: int
    runs_with_errors: int

    @property
    def flagged(self) -> bool:
        return self.runs_with_errors > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def parse_hey(text: str, clients: int) -> StepResult:
    """Parse hey's default summary output (hey 0.1.x)."""
    total_match = _TOTAL.search(text)
    if total_match is None:
        raise HeyParseError(f"no 'Total: N secs' line in hey's output: {text[-400:]!r}")
    total_s = float(total_match.group(1))
    rps_match = _RPS.search(text)
    hey_rps = float(rps_match.group(1)) if rps_match else 0.0

    head, _, error_part = text.partition("Error distribution:")
    percentiles = {float(p): float(s) * 1000.0 for p, s in _PERCENTILE.findall(head)}
    status_codes: dict[int, int] = {}
    for code, count in _STATUS.findall(head):
        status_codes[int(code)] = status_codes.get(int(code), 0) + int(count)
    error_kinds: dict[str, int] = {}
    for count, message in _ERROR.findall(error_part):
        error_kinds[message] = error_kinds.get(message, 0) + int(count)

    ok = sum(n for code, n in status_codes.items() if 200 <= code < 300)
    errors = sum(n for code, n in status_codes.items() if not 200 <= code < 300) + sum(error_kinds.values())
    if ok == 0 and errors == 0:
        raise HeyParseError(f"hey reported neither responses nor errors: {text[-400:]!r}")
    return StepResult(
        clients=clients,
        total_s=total_s,
        ok=ok,
        errors=errors,
        rps=ok / total_s if total_s > 0 else 0.0,
        hey_rps=hey_rps,
        p50_ms=percentiles.get(50.0),
        p99_ms=percentiles.get(99.0),
        status_codes=status_codes,
        error_kinds=error_kinds,
    )


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: Sequence[StepResult]) -> StepSummary:
    """Medians of throughput and latencies over the runs of one cell; errors summed, runs flagged."""
    if not results:
        raise ValueError("no results to summarize")
    clients = {r.clients for r in results}
    if len(clients) != 1:
        raise ValueError(f"results mix concurrency levels {sorted(clients)}")
    return StepSummary(
        clients=results[0].clients,
        runs=len(results),
        rps=median_or_none(r.rps for r in results),
        p50_ms=median_or_none(r.p50_ms for r in results),
        p99_ms=median_or_none(r.p99_ms for r in results),
        errors_total=sum(r.errors for r in results),
        runs_with_errors=sum(1 for r in results if r.errors > 0),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def parse_clients(text: str) -> list[int]:
    """``"1,16,64"`` -> ``[1, 16, 64]`` (positive, unique, order kept)."""
    levels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"not an integer: {part!r}") from None
        if value < 1:
            raise ValueError(f"client counts must be >= 1, got {value}")
        if value not in levels:
            levels.append(value)
    if not levels:
        raise ValueError("no client counts given")
    return levels


# ------------------------------------------------------------------------------------- formatting


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_cells(summary: StepSummary | None) -> str:
    """``req/s p50 p99 err`` of one cell (9, 8, 8, 6 characters wide); ``!`` marks runs with errors."""
    if summary is None:
        return f"{'-':>9} {'-':>8} {'-':>8} {'-':>6}"
    err = f"{summary.errors_total}{'!' if summary.flagged else ''}"
    return f"{_num(summary.rps):>9} {_num(summary.p50_ms, 2):>8} {_num(summary.p99_ms, 2):>8} {err:>6}"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def format_load_table(
    clients: Sequence[int],
    etcd: Mapping[int, StepSummary] | None,
    agenda: Mapping[int, StepSummary] | None,
) -> str:
    """clients | etcd req/s p50 p99 err | agenda req/s p50 p99 err | agenda/etcd (throughput)."""
    return format_pair_table(clients, etcd, agenda, ("etcd req/s", "agenda r/s", "agenda/etcd"))


def format_pair_table(
    clients: Sequence[int],
    base: Mapping[int, StepSummary] | None,
    other: Mapping[int, StepSummary] | None,
    labels: tuple[str, str, str],
) -> str:
    """clients | base req/s p50 p99 err | other req/s p50 p99 err | other/base (throughput); ``labels``
    names the two throughput columns and the ratio."""
    base_label, other_label, ratio_label = labels
    header = (
        f"{'clients':>7} | {base_label:>9} {'p50 ms':>8} {'p99 ms':>8} {'err':>6} | "
        f"{other_label:>9} {'p50 ms':>8} {'p99 ms':>8} {'err':>6} | {ratio_label:>11}"
    )
    lines = [header, "-" * len(header)]
    for level in clients:
        b = base.get(level) if base else None
        o = other.get(level) if other else None
        ratio_text = format_ratio(ratio(o.rps if o else None, b.rps if b else None))
        lines.append(f"{level:>7} | {summary_cells(b)} | {summary_cells(o)} | {ratio_text:>11}")
    return "\n".join(lines)


def format_failover_table(results: Mapping[str, Sequence[float | None]]) -> str:
    """One row per system: median gap and every measured gap (ms); ``None`` = no write within the limit."""
    header = f"{'system':>7} | {'median ms':>9} | all gaps (ms, in kill order)"
    lines = [header, "-" * len(header)]
    for system, gaps in results.items():
        shown = ", ".join("timeout" if g is None else f"{g:.0f}" for g in gaps) or "-"
        lines.append(f"{system:>7} | {_num(median_or_none(gaps), 0):>9} | {shown}")
    return "\n".join(lines)
