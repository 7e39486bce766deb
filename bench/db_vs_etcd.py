"""Benchmark: five-member agenda-db vs five-member etcd on 127.0.0.1, same load tool, fsync on for both:
single-key writes, then linearizable reads of that key, each sent to the leader.

    python bench/db_vs_etcd.py [--clients 1,16,64] [--duration 10] [--runs 3] [--only etcd|agenda]
                               [--json out.json] [--failover [--kills 5]] [--raft-tls-cost]

See bench/README.md for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cli import machine_facts, positive_float, positive_int, print_facts, say
from bench._cluster import (
    AgendaCluster,
    Cluster,
    EtcdCluster,
    Reaper,
    WriteSpec,
    agenda_importable,
    etcd_version,
    loopback_pki,
    report_missing_tools,
    run_under_reaper,
)
from bench._failover import FailoverResult, measure_failover
from bench._hey import HeyRequest, add_load_arguments
from bench._hey import run_hey as run_hey_request
from bench._stats import (
    StepResult,
    StepSummary,
    format_failover_table,
    format_load_table,
    format_pair_table,
    median_or_none,
    ratio,
    summarize,
)

REQUIRED_TOOLS = {"etcd": "etcd-server", "etcdctl": "etcd-client", "hey": "hey"}
INSTALL_LINE = "apt-get install -y etcd-server etcd-client hey"
KEY = "bench-key"
LOAD_KINDS = ("write", "read")  # in this order: the reads read the key the writes wrote
RAFT_TRANSPORTS = ("plain", "tls")  # --raft-tls-cost: the two agenda-db clusters, plain Raft first
HEY_REQUEST_TIMEOUT_S = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="db_vs_etcd",
        description=(
            "Start a 5-member etcd and a 5-member agenda-db cluster on 127.0.0.1, drive single-key writes, "
            "then linearizable reads of that key, to each leader with hey at the same concurrency levels "
            "(fsync on for both; the two systems take turns run by run) and print medians; or, with "
            "--failover, measure the leader-failover write gap (one cluster at a time)."
        ),
    )
    add_load_arguments(
        parser,
        runs_help="repetitions per step; medians reported",
        warmup_help="unrecorded load before the first step of each system (0 = none), default 2",
        value_help="size of the written value (ASCII), default 64",
    )
    parser.add_argument("--only", choices=("etcd", "agenda"), help="benchmark one system only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all results as JSON")
    parser.add_argument(
        "--failover", action="store_true", help="measure the leader-failover write gap instead of throughput"
    )
    parser.add_argument("--kills", type=positive_int, default=5, help="leader kills per system (--failover)")
    parser.add_argument(
        "--raft-tls-cost",
        action="store_true",
        help="instead: single-key writes to two agenda-db clusters, Raft over mutual TLS and plain Raft "
        "(HTTP API plain in both), interleaved run by run; prints both and tls/plain",
    )
    parser.add_argument(
        "--write-timeout",
        type=positive_float,
        default=0.5,
        metavar="SECONDS",
        help="per-request timeout of the failover writer, default 0.5",
    )
    parser.add_argument(
        "--gap-limit",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up waiting for the first write after a kill, default 30",
    )
    parser.add_argument(
        "--writer-start",
        choices=("follower", "leader"),
        default="follower",
        help="member the failover writer talks to before the kill, default a follower",
    )
    parser.add_argument(
        "--etcd-election-timeout",
        type=positive_int,
        metavar="MS",
        help="etcd --election-timeout (default: etcd's 1000; agenda-db draws its own from 500-1000)",
    )
    parser.add_argument(
        "--etcd-heartbeat", type=positive_int, metavar="MS", help="etcd --heartbeat-interval (default 100)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs `-m agenda.db.cli` (default: this one)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep data dirs and logs (path printed)")
    return parser


def missing_tools(tools: Mapping[str, str] = REQUIRED_TOOLS) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def required_tools(args: argparse.Namespace) -> dict[str, str]:
    """The tools a run needs: --raft-tls-cost drives agenda-db only, with hey."""
    if args.raft_tls_cost:
        return {"hey": REQUIRED_TOOLS["hey"]}
    return dict(REQUIRED_TOOLS)


def interleaved(variants: Sequence[str], runs: int) -> list[tuple[int, str]]:
    """(run, variant) in the order they are measured: every run measures every variant, and the order
    flips from one run to the next, so a machine that gets busier or quieter favours neither."""
    order: list[tuple[int, str]] = []
    for run in range(1, runs + 1):
        ordered = list(variants) if run % 2 else list(reversed(variants))
        order += [(run, variant) for variant in ordered]
    return order


# ------------------------------------------------------------------------------------------- load


def run_hey(
    reaper: Reaper, url: str, method: str, body_file: Path | None, clients: int, duration: float
) -> StepResult:
    request = HeyRequest(url, method, body_file, request_timeout_s=HEY_REQUEST_TIMEOUT_S)
    return run_hey_request(reaper, request, clients, duration)


def interleaved_load(
    clusters: Mapping[str, Cluster],
    reaper: Reaper,
    args: argparse.Namespace,
    workdir: Path,
    kind: str,
    specs: Mapping[str, WriteSpec],
) -> tuple[dict[str, dict[int, list[StepResult]]], dict[str, list[dict[str, Any]]]]:
    """All runs x levels of one `kind` of request (`specs[name]`) on every cluster (all of them up and
    healthy), always aimed at its current leader; the clusters take turns run by run in the order
    :func:`interleaved` gives, so a machine that drifts during the benchmark favours none of them.
    Returns, per cluster name, the results by client count and where each step was sent."""
    results: dict[str, dict[int, list[StepResult]]] = {
        name: {c: [] for c in args.clients} for name in clusters
    }
    targets: dict[str, list[dict[str, Any]]] = {name: [] for name in clusters}
    body_files: dict[str, Path | None] = {}
    for name, cluster in clusters.items():
        spec = specs[name]
        body_file = None
        if spec.body:
            body_file = workdir / f"{name}-{kind}-body.json"
            body_file.write_bytes(spec.body)
        body_files[name] = body_file
        leader, url = _leader_url(cluster, spec)
        say(f"{name} {kind}s: load goes to the LEADER {leader} ({url}, found with {cluster.leader_method})")
        if args.warmup > 0:
            run_hey(reaper, url, spec.method, body_files[name], max(args.clients), args.warmup)
    for run, name in interleaved(list(clusters), args.runs):
        for clients in args.clients:
            label = f"{name} {kind} run {run}/{args.runs}"
            leader, url, step = _step(
                clusters[name], reaper, specs[name], body_files[name], clients, args.duration, label
            )
            results[name][clients].append(step)
            targets[name].append({"run": run, "clients": clients, "leader": leader, "url": url})
    return results, targets


def _leader_url(cluster: Cluster, spec: WriteSpec) -> tuple[str, str]:
    """The name of the cluster's leader (waiting for one) and the URL of `spec` on it."""
    leader = cluster.wait_healthy(timeout=cluster.health_timeout)
    return leader.name, leader.base_url + spec.path


def _step(
    cluster: Cluster,
    reaper: Reaper,
    spec: WriteSpec,
    body_file: Path | None,
    clients: int,
    duration: float,
    label: str,
) -> tuple[str, str, StepResult]:
    """One hey step aimed at the cluster's current leader, reported in one line: (leader, URL, result)."""
    name, url = _leader_url(cluster, spec)
    step = run_hey(reaper, url, spec.method, body_file, clients, duration)
    flag = f"  <-- {step.errors} non-2xx/errors {step.status_codes} {step.error_kinds}" if step.errors else ""
    say(
        f"  {label} c={clients:<3} leader={name}: "
        f"{step.rps:9.1f} req/s  p50 {_ms(step.p50_ms)}  p99 {_ms(step.p99_ms)}  ok={step.ok}{flag}"
    )
    return name, url, step


def _ms(value: float | None) -> str:
    return "   -   " if value is None else f"{value:7.2f} ms"


# ------------------------------------------------------------------------------------------- main


def _start(cluster: Cluster) -> None:
    say(f"{cluster.system}: starting 5 members on 127.0.0.1 (data under {cluster.root}) ...")
    started = time.monotonic()
    cluster.start()
    say(f"{cluster.system}: all 5 members healthy after {time.monotonic() - started:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.raft_tls_cost and (args.failover or args.only == "etcd"):
        parser.error("--raft-tls-cost measures agenda-db's writes: not with --failover or --only etcd")
    tools = required_tools(args)
    missing = missing_tools(tools)
    if missing:
        return report_missing_tools("db_vs_etcd", missing, tools, INSTALL_LINE)

    return run_under_reaper("db_vs_etcd", args.keep_tmp, lambda reaper: _main(args, reaper))


def _main(args: argparse.Namespace, reaper: Reaper) -> int:
    workdir = reaper.mkdtemp("bench-db-vs-etcd-")
    if args.raft_tls_cost:
        return _raft_tls_cost(args, reaper, workdir)
    systems = ["etcd", "agenda"] if args.only is None else [args.only]
    notes: list[str] = []
    if "agenda" in systems:
        ok, detail = agenda_importable(args.python, reaper)
        if not ok:
            message = (
                f"agenda-db is not runnable with {args.python} (`python -m agenda.db.cli` does not import): "
                f"{detail.splitlines()[-1] if detail else 'no detail'}"
            )
            if args.only == "agenda":
                print(f"db_vs_etcd: {message}", file=sys.stderr)
                return 2
            notes.append(f"{message} -- running etcd only")
            say(f"NOTE: {notes[-1]}")
            systems = ["etcd"]

    facts = machine_facts(etcd_version(reaper), args.python)
    print_facts(facts)
    report: dict[str, Any] = {
        "machine": facts,
        "config": {
            "mode": "failover" if args.failover else "load",
            "clients": args.clients,
            "duration_s": args.duration,
            "runs": args.runs,
            "warmup_s": args.warmup,
            "value_size": args.value_size,
            "members": 5,
            "fsync": "on for both (etcd default; agenda-db default)",
            "tls": "off for both (plain HTTP, unencrypted Raft/peer traffic)",
            "load_tool": "hey (keep-alive), single key, sent to the leader",
            "systems": systems,
            # Load mode: both clusters up throughout, taking turns run by run in this order.
            "order": [f"run {run}: {system}" for run, system in interleaved(systems, args.runs)],
            "etcd_timers_ms": {
                "election": args.etcd_election_timeout or "default (1000)",
                "heartbeat": args.etcd_heartbeat or "default (100)",
            },
        },
        "notes": notes,
    }

    if args.failover:
        say(
            f"failover: {args.kills} leader SIGKILLs per system; 1 sequential writer (http.client, "
            f"timeout {args.write_timeout} s, starts on the {args.writer_start}, moves to the next member on "
            f"any error with a 5-50 ms backoff); gap = kill -> ack of the first write sent after the kill"
        )
        say(
            f"timers: etcd election {args.etcd_election_timeout or 'default 1000'} ms / heartbeat "
            f"{args.etcd_heartbeat or 'default 100'} ms; agenda-db uses its own built-in Raft timers"
        )
        gaps: dict[str, FailoverResult] = {}
        for system in systems:
            cluster = _make(system, reaper, workdir, args)
            try:
                _start(cluster)
                gaps[system] = measure_failover(
                    cluster,
                    args.kills,
                    cluster.write_spec(KEY, "v" * args.value_size),
                    request_timeout=args.write_timeout,
                    limit=args.gap_limit,
                    start_on=args.writer_start,
                    log=say,
                )
            finally:
                cluster.stop()
        say()
        say("Leader-failover write gap (5 members each, 127.0.0.1, fsync on):")
        say(format_failover_table({s: r.gaps_ms for s, r in gaps.items()}))
        report["failover"] = {
            s: {**vars(r), "median_gap_ms": median_or_none(r.gaps_ms)} for s, r in gaps.items()
        }
    else:
        # kind -> system -> clients -> summary; writes first, so the reads find the key written.
        summaries: dict[str, dict[str, dict[int, StepSummary]]] = {kind: {} for kind in LOAD_KINDS}
        raw: dict[str, dict[str, Any]] = {kind: {} for kind in LOAD_KINDS}
        # Both clusters up throughout, taking turns run by run (see interleaved_load).
        clusters: dict[str, Cluster] = {}
        try:
            for system in systems:
                clusters[system] = _make(system, reaper, workdir, args)
                _start(clusters[system])
            for kind in LOAD_KINDS:
                specs = {
                    system: cluster.write_spec(KEY, "v" * args.value_size)
                    if kind == "write"
                    else cluster.read_spec(KEY)
                    for system, cluster in clusters.items()
                }
                results, targets = interleaved_load(clusters, reaper, args, workdir, kind, specs)
                for system in clusters:
                    summaries[kind][system] = {c: summarize(r) for c, r in results[system].items()}
                    raw[kind][system] = {
                        "targets": targets[system],
                        "runs": {str(c): [s.as_dict() for s in r] for c, r in results[system].items()},
                        "median": {str(c): s.as_dict() for c, s in summaries[kind][system].items()},
                    }
        finally:
            for cluster in clusters.values():
                cluster.stop()
        for kind, title in (
            ("write", "Single-key writes"),
            ("read", "Linearizable single-key reads (etcd: POST /v3/kv/range; agenda-db: GET /v1/kv/KEY)"),
        ):
            per_system = summaries[kind]
            say()
            say(
                f"{title}, 5 members each on 127.0.0.1, fsync on, load sent to each LEADER, hey "
                f"{args.duration:g} s per step, medians of {args.runs} run(s), the systems taking turns; "
                f"err = non-2xx + transport errors summed over runs ('!' = at least one run had errors)"
            )
            say(format_load_table(args.clients, per_system.get("etcd"), per_system.get("agenda")))
            flagged = [
                f"{s} {kind} c={c}"
                for s, cells in per_system.items()
                for c, cell in cells.items()
                if cell.flagged
            ]
            if flagged:
                say(f"WARNING: runs with non-2xx responses or errors: {', '.join(flagged)}")
        for kind, load_key, ratio_key in (
            ("write", "load", "ratio_agenda_over_etcd"),
            ("read", "read_load", "read_ratio_agenda_over_etcd"),
        ):
            per_system = summaries[kind]
            report[load_key] = raw[kind]
            report[ratio_key] = {
                str(c): ratio(
                    per_system.get("agenda", {}).get(c, _NONE).rps,
                    per_system.get("etcd", {}).get(c, _NONE).rps,
                )
                for c in args.clients
            }
    load1, load5, _ = os.getloadavg()
    report["machine"]["loadavg_at_end"] = [round(load1, 2), round(load5, 2)]
    say(f"loadavg(1m,5m) at end={report['machine']['loadavg_at_end']}")
    for note in notes:
        say(f"NOTE: {note}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"wrote {args.json}")
    return 0


_NONE = StepSummary(clients=0, runs=0, rps=None, p50_ms=None, p99_ms=None, errors_total=0, runs_with_errors=0)


# ---------------------------------------------------------------------------------- --raft-tls-cost


def _raft_tls_cost(args: argparse.Namespace, reaper: Reaper, workdir: Path) -> int:
    """Writes/s of agenda-db with Raft over mutual TLS against plain Raft, both clusters up, interleaved."""
    ok, detail = agenda_importable(args.python, reaper)
    if not ok:
        print(f"db_vs_etcd: agenda-db is not runnable with {args.python}: {detail}", file=sys.stderr)
        return 2
    facts = machine_facts("not used", args.python)
    print_facts(facts)
    pki = loopback_pki(args.python, reaper, workdir / "pki")
    clusters: dict[str, Cluster] = {}
    try:
        for variant in RAFT_TRANSPORTS:
            root = workdir / f"agenda-raft-{variant}"
            root.mkdir()
            clusters[variant] = AgendaCluster(
                reaper, root, python=args.python, raft_tls=pki if variant == "tls" else None
            )
            say(f"agenda-db with {'Raft over mutual TLS' if variant == 'tls' else 'plain Raft'}:")
            _start(clusters[variant])
        spec = clusters["plain"].write_spec(KEY, "v" * args.value_size)
        results, _targets = interleaved_load(
            clusters, reaper, args, workdir, "write", {variant: spec for variant in clusters}
        )
    finally:
        for cluster in clusters.values():
            cluster.stop()
    summaries = {v: {c: summarize(r) for c, r in per_level.items()} for v, per_level in results.items()}
    say()
    say(
        f"Single-key writes to agenda-db, 5 members on 127.0.0.1, fsync on, HTTP API plain, Raft plain "
        f"(plain) or over mutual TLS (tls); hey {args.duration:g} s per step, medians of {args.runs} "
        f"interleaved run(s); both clusters up throughout"
    )
    say(
        format_pair_table(
            args.clients, summaries["plain"], summaries["tls"], ("plain r/s", "tls r/s", "tls/plain")
        )
    )
    flagged = [f"{v} c={c}" for v, cells in summaries.items() for c, cell in cells.items() if cell.flagged]
    if flagged:
        say(f"WARNING: runs with non-2xx responses or errors: {', '.join(flagged)}")
    load1, load5, _ = os.getloadavg()
    facts["loadavg_at_end"] = [round(load1, 2), round(load5, 2)]
    say(f"loadavg(1m,5m) at end={facts['loadavg_at_end']}")
    if args.json:
        report = {
            "machine": facts,
            "config": {
                "mode": "raft-tls-cost",
                "clients": args.clients,
                "duration_s": args.duration,
                "runs": args.runs,
                "warmup_s": args.warmup,
                "value_size": args.value_size,
                "members": 5,
                "order": [
                    f"run {run}: {variant}" for run, variant in interleaved(RAFT_TRANSPORTS, args.runs)
                ],
            },
            "raft_tls_cost": {
                variant: {
                    "runs": {str(c): [s.as_dict() for s in r] for c, r in results[variant].items()},
                    "median": {str(c): s.as_dict() for c, s in summaries[variant].items()},
                }
                for variant in RAFT_TRANSPORTS
            },
            "ratio_tls_over_plain": {
                str(c): ratio(summaries["tls"][c].rps, summaries["plain"][c].rps) for c in args.clients
            },
        }
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"wrote {args.json}")
    return 0


def _make(system: str, reaper: Reaper, workdir: Path, args: argparse.Namespace) -> Cluster:
    root = workdir / system
    root.mkdir()
    if system == "etcd":
        return EtcdCluster(
            reaper, root, election_ms=args.etcd_election_timeout, heartbeat_ms=args.etcd_heartbeat
        )
    return AgendaCluster(reaper, root, python=args.python)


if __name__ == "__main__":
    sys.exit(main())
