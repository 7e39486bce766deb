"""Benchmark: create-event and list-agenda through the HTTPS gateway of the dev stack, against the DB's own
single-key write throughput on the same five-member agenda-db cluster.

    python bench/agenda_gateway.py [--clients 1,16,64] [--duration 10] [--runs 3] [--warmup 2]
                                   [--json out.json]

See bench/README.md ("agenda through the gateway") for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agenda.domain.model import format_time
from bench._cli import machine_facts, print_facts, say
from bench._cluster import (
    AgendaCluster,
    BenchError,
    Member,
    Reaper,
    WriteSpec,
    agenda_importable,
    run_under_reaper,
    scrub_proxy_environment,
)
from bench._cpu import CpuMeter, per_request_ms
from bench._hey import HeyRequest, add_load_arguments, run_hey
from bench._stats import (
    StepResult,
    StepSummary,
    format_ratio,
    median_or_none,
    ratio,
    summarize,
    summary_cells,
)
from bench.db_vs_etcd import HEY_REQUEST_TIMEOUT_S, KEY, _ms

PROG: Final = "agenda_gateway"
INSTALL_LINE: Final = "apt-get install -y hey"
DB_PUT: Final = "db-put"
CREATE_EVENT: Final = "create-event"
LIST_AGENDA: Final = "list-agenda"
STEPS: Final = (DB_PUT, CREATE_EVENT, LIST_AGENDA)
RATIO_TARGET: Final = 0.5  # issue 4: create-event throughput >= half the DB's single-key write throughput
# The User Service's largest token_ttl. Tokens are fetched once, before the load, so they must outlive
# the whole run; the login rate limit never comes into play.
TOKEN_TTL_S: Final = 86_400
START_UP_ALLOWANCE_S: Final = 900  # cluster + stack start-up and preparation, before the first step
WRITER: Final = "bench-writer"
READER: Final = "bench-reader"
GUEST: Final = "bench-guest"
PASSWORD: Final = "bench correct horse battery"  # noqa: S105 - throwaway accounts of a throwaway stack
# Far from today so that nothing but this benchmark books these dates; the reader's week is a Monday.
READER_WEEK_START: Final = datetime(2030, 1, 7, tzinfo=UTC)
WRITER_EVENT_START: Final = datetime(2030, 3, 4, 10, tzinfo=UTC)
READER_MEETING_HOURS: Final = (9, 11, 14, 16)  # four one-hour meetings per weekday, none overlapping
READER_GUEST_EVERY: Final = 4  # every fourth meeting invites the guest (an appointment, not a personal event)
EVENT_LENGTH: Final = timedelta(hours=1)
HTTP_TIMEOUT_S: Final = 30.0


# ------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Start a 5-member agenda-db cluster (plain HTTP, fsync on) and the dev stack with TLS on top of "
            "it on 127.0.0.1, then drive, with hey at each concurrency level: single-key writes to the DB "
            "leader (db-put), POST /v1/events (create-event) and GET /v1/events for one week "
            "(list-agenda) through the HTTPS gateway. Prints medians and create-event/db-put ratios."
        ),
    )
    add_load_arguments(
        parser,
        runs_help="repetitions of every step; medians reported",
        warmup_help="unrecorded load of each step before run 1 (0 = none), default 2",
        value_help="size of the db-put value (ASCII), default 64",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all results as JSON")
    parser.add_argument("--keep-tmp", action="store_true", help="keep data dirs and logs (path printed)")
    return parser


def planned_load_seconds(clients: Sequence[int], runs: int, duration: float, warmup: float) -> float:
    """How long hey runs in total: one warm-up per step, then every step at every level in every run."""
    return len(STEPS) * (warmup + runs * len(clients) * duration)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed arguments; exit 2 if the run would outlive the access tokens it fetches once."""
    parser = build_parser()
    args = parser.parse_args(argv)
    planned = planned_load_seconds(args.clients, args.runs, args.duration, args.warmup)
    if planned + START_UP_ALLOWANCE_S > TOKEN_TTL_S:
        parser.error(
            f"the load would take {planned:.0f} s, too long for one access token "
            f"({TOKEN_TTL_S} s, less {START_UP_ALLOWANCE_S} s for start-up): lower --runs or --duration"
        )
    return args


# ------------------------------------------------------------------------------------ the requests


def one_hour_event(
    title: str, start: datetime, location: str, participants: Sequence[str] = ()
) -> dict[str, Any]:
    """A POST /v1/events body."""
    body: dict[str, Any] = {
        "title": title,
        "start": format_time(start),
        "end": format_time(start + EVENT_LENGTH),
        "location": location,
        "description": "Made by bench/agenda_gateway.py.",
    }
    if participants:
        body["participants"] = list(participants)
    return body


def reader_agenda(week_start: datetime, guest: str) -> list[dict[str, Any]]:
    """The reader's week: 20 one-hour meetings Monday to Friday, every fourth one inviting `guest`."""
    events = []
    for day in range(5):
        for room, hour in enumerate(READER_MEETING_HOURS, start=1):
            number = len(events) + 1
            guests = [guest] if number % READER_GUEST_EVERY == 0 else []
            start = week_start + timedelta(days=day, hours=hour)
            events.append(one_hour_event(f"Meeting {number}", start, f"Room {room}", guests))
    return events


def create_event_path() -> str:
    # hey repeats one body, so every event lands at the same time: allow_conflict skips the organizer's
    # conflict check, which would otherwise answer 409 from the second request on.
    return "/v1/events?" + urlencode({"allow_conflict": "true"})


def list_agenda_path(week_start: datetime) -> str:
    query = {"from": format_time(week_start), "to": format_time(week_start + timedelta(days=7))}
    return "/v1/events?" + urlencode(query, safe=":")


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


# ------------------------------------------------------------------------------------ aggregation


Summaries = Mapping[str, Mapping[int, StepSummary]]


def create_over_db_put(clients: Sequence[int], summaries: Summaries) -> dict[int, float | None]:
    """create-event throughput / db-put throughput (medians) at each concurrency level."""
    return {
        level: ratio(_rps(summaries, CREATE_EVENT, level), _rps(summaries, DB_PUT, level))
        for level in clients
    }


def _rps(summaries: Summaries, step: str, level: int) -> float | None:
    summary = summaries.get(step, {}).get(level)
    return None if summary is None else summary.rps


def target_verdict(value: float | None, target: float = RATIO_TARGET) -> str:
    if value is None:
        return "-"
    return "met" if value >= target else "MISSED"


def format_steps_table(clients: Sequence[int], summaries: Summaries) -> str:
    """One row per step and concurrency level: 2xx/s p50 p99 err (medians; errors summed over runs)."""
    header = f"{'step':<12} {'clients':>7} | {'2xx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'err':>6}"
    lines = [header, "-" * len(header)]
    for step in STEPS:
        for level in clients:
            lines.append(f"{step:<12} {level:>7} | {summary_cells(summaries.get(step, {}).get(level))}")
    return "\n".join(lines)


def format_ratio_table(clients: Sequence[int], summaries: Summaries, target: float = RATIO_TARGET) -> str:
    """clients | db-put 2xx/s | create-event 2xx/s | create/db-put | met/MISSED against ``target``."""
    header = (
        f"{'clients':>7} | {'db-put 2xx/s':>12} | {'create 2xx/s':>12} | {'create/db-put':>13} | "
        f"target >= {target:g}"
    )
    lines = [header, "-" * len(header)]
    ratios = create_over_db_put(clients, summaries)
    for level in clients:
        db_put = _rps(summaries, DB_PUT, level)
        create = _rps(summaries, CREATE_EVENT, level)
        lines.append(
            f"{level:>7} | {_rate(db_put):>12} | {_rate(create):>12} | {format_ratio(ratios[level]):>13} | "
            f"{target_verdict(ratios[level], target)}"
        )
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def flagged_cells(summaries: Summaries) -> list[str]:
    """``step c=N`` of every cell where at least one run had non-2xx answers or transport errors."""
    return [
        f"{step} c={level}"
        for step, cells in summaries.items()
        for level, cell in cells.items()
        if cell.flagged
    ]


# ----------------------------------------------------------------------------------- preparation


def _expect(response: requests.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchError(f"{what}: expected HTTP {status}, got {response.status_code}: {response.text[:400]}")
    return response.json() if response.content else None


def prepare_accounts(session: requests.Session, gateway: str, min_token_life_s: float) -> dict[str, str]:
    """Register writer, reader and guest and give the reader a week of meetings; return the writer's and
    the reader's tokens."""
    for name in (WRITER, READER, GUEST):
        response = session.post(
            f"{gateway}/v1/auth/register",
            json={"username": name, "password": PASSWORD},
            timeout=HTTP_TIMEOUT_S,
        )
        _expect(response, 201, f"registering {name}")
    tokens = {}
    for name in (WRITER, READER):
        response = session.post(
            f"{gateway}/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=HTTP_TIMEOUT_S
        )
        body = _expect(response, 200, f"logging {name} in")
        if body["expires_in"] < min_token_life_s:
            raise BenchError(
                f"{name}'s token lives {body['expires_in']} s, the load needs {min_token_life_s:.0f} s "
                f"(is the User Service's token_ttl setting ignored?)"
            )
        tokens[name] = body["access_token"]
    reader_auth = {"Authorization": f"Bearer {tokens[READER]}"}
    meetings = reader_agenda(READER_WEEK_START, GUEST)
    for event in meetings:
        response = session.post(
            f"{gateway}/v1/events", json=event, headers=reader_auth, timeout=HTTP_TIMEOUT_S
        )
        _expect(response, 201, f"creating the reader's {event['title']}")
    response = session.get(
        gateway + list_agenda_path(READER_WEEK_START), headers=reader_auth, timeout=HTTP_TIMEOUT_S
    )
    listed = _expect(response, 200, "listing the reader's week")
    if len(listed["events"]) != len(meetings):
        raise BenchError(f"the reader's week lists {len(listed['events'])} events, expected {len(meetings)}")
    say(
        f"prepared: users {WRITER}, {READER}, {GUEST}; {READER}'s week of {READER_WEEK_START:%Y-%m-%d} lists "
        f"{len(meetings)} events ({len(response.content)} bytes)"
    )
    return tokens


# ------------------------------------------------------------------------------------------ load


def _run_line(step: str, run: int, runs: int, leader: str, result: StepResult) -> str:
    flag = (
        f"  <-- {result.errors} non-2xx/errors {result.status_codes} {result.error_kinds}"
        if result.errors
        else ""
    )
    return (
        f"  {step:<12} run {run}/{runs} c={result.clients:<3} db leader={leader}: {result.rps:9.1f} 2xx/s  "
        f"p50 {_ms(result.p50_ms)}  p99 {_ms(result.p99_ms)}  ok={result.ok}{flag}"
    )


# step -> clients -> one {component: CPU ms per request} per run
CpuTable = dict[str, dict[int, list[dict[str, float | None]]]]


def run_load(
    cluster: AgendaCluster,
    gateway_requests: Mapping[str, HeyRequest],
    db_put: WriteSpec,
    db_put_body: Path,
    reaper: Reaper,
    args: argparse.Namespace,
    meter: CpuMeter,
) -> tuple[dict[str, dict[int, list[StepResult]]], list[dict[str, Any]], CpuTable]:
    """Every run: every level: db-put, create-event, list-agenda, back to back.

    The three steps of one level run next to each other so that the ratio compares measurements taken
    under the same machine load and the same DB size (create-event keeps adding events). `meter` adds
    the CPU milliseconds per request each component spent in every step.
    """
    results: dict[str, dict[int, list[StepResult]]] = {s: {c: [] for c in args.clients} for s in STEPS}
    cpu: CpuTable = {s: {c: [] for c in args.clients} for s in STEPS}
    targets: list[dict[str, Any]] = []

    def request_for(step: str, leader: Member) -> HeyRequest:
        if step == DB_PUT:  # always the current leader, as in db_vs_etcd.py
            url = leader.base_url + db_put.path
            return HeyRequest(url, db_put.method, db_put_body, request_timeout_s=HEY_REQUEST_TIMEOUT_S)
        return gateway_requests[step]

    if args.warmup > 0:
        leader = cluster.wait_healthy()
        for step in STEPS:
            run_hey(reaper, request_for(step, leader), max(args.clients), args.warmup)
    for run in range(1, args.runs + 1):
        for clients in args.clients:
            leader = cluster.wait_healthy()
            targets.append({"run": run, "clients": clients, "leader": leader.name})
            for step in STEPS:
                meter.start()
                result = run_hey(reaper, request_for(step, leader), clients, args.duration)
                cpu[step][clients].append(per_request_ms(meter.stop(), result.ok + result.errors))
                results[step][clients].append(result)
                say(_run_line(step, run, args.runs, leader.name, result))
    return results, targets, cpu


def median_cpu(runs: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per component, the median over runs of CPU ms per request."""
    names = list(runs[0]) if runs else []
    return {name: median_or_none(run.get(name) for run in runs) for name in names}


def format_cpu_table(clients: Sequence[int], cpu: CpuTable, components: Sequence[str]) -> str:
    columns = [*components, "total"]
    header = f"{'step':<12} {'clients':>7} | " + " ".join(f"{name:>9}" for name in columns)
    lines = [header, "-" * len(header)]
    for step in STEPS:
        for level in clients:
            medians = median_cpu(cpu[step][level])
            cells = " ".join(
                f"{medians[name]:9.2f}" if medians.get(name) is not None else f"{'-':>9}" for name in columns
            )
            lines.append(f"{step:<12} {level:>7} | {cells}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("hey") is None:
        print(
            f"{PROG}: missing tool: hey (Debian package hey).\nInstall it with:\n    {INSTALL_LINE}",
            file=sys.stderr,
        )
        return 2
    return run_under_reaper(PROG, args.keep_tmp, lambda reaper: _main(args, reaper))


def _main(args: argparse.Namespace, reaper: Reaper) -> int:
    ok, detail = agenda_importable(sys.executable, reaper)
    if not ok:
        print(f"{PROG}: `python -m agenda.db.cli` does not import: {detail}", file=sys.stderr)
        return 2
    try:
        # Imported here, not at the top: the unit tests of this module need no dev stack.
        from agenda.devstack import DevStack, DevStackError
    except ImportError as exc:
        print(f"{PROG}: agenda.devstack does not import: {exc}", file=sys.stderr)
        return 2

    workdir = reaper.mkdtemp("bench-agenda-gateway-")
    facts = machine_facts("not used", sys.executable)
    print_facts(facts)
    (workdir / "db").mkdir()
    cluster = AgendaCluster(reaper, workdir / "db")
    try:
        say(f"agenda-db: starting 5 members on 127.0.0.1, fsync on, plain HTTP (under {cluster.root}) ...")
        started = time.monotonic()
        cluster.start()
        leader = cluster.wait_healthy()
        say(
            f"agenda-db: all 5 members healthy after {time.monotonic() - started:.1f} s, leader {leader.name}"
        )
        # The services use their first DB URL until it fails: the leader first, so that, like db-put,
        # their writes pay no follower-to-leader forwarding (a leader change is reported below).
        db_urls = [leader.base_url] + [m.base_url for m in cluster.members if m is not leader]
        scrub_proxy_environment()  # the stack's children copy this process's environment
        say("dev stack: starting the User Services (2), Group Service (1) and the gateway with TLS ...")
        started = time.monotonic()
        try:
            with DevStack(
                workdir / "stack",
                tls=True,
                gateway_port=0,
                db_urls=db_urls,
                users_instances=2,
                groups_instances=1,
                settings={"users": {"token_ttl": TOKEN_TTL_S}},
            ) as stack:
                say(f"dev stack: ready after {time.monotonic() - started:.1f} s, gateway {stack.gateway_url}")
                if stack.ca_file is None or not stack.gateway_url.startswith("https://"):
                    raise BenchError(f"the dev stack's gateway is not HTTPS: {stack.gateway_url}")
                meter = CpuMeter(
                    {
                        "gateway": _pids(stack, "gateway"),
                        "users": _pids(stack, "users"),
                        "groups": _pids(stack, "groups"),
                        "db": [m.proc.pid for m in cluster.members if m.proc is not None],
                    }
                )
                report = _measure(
                    args, reaper, cluster, leader, stack.gateway_url, stack.ca_file, workdir, meter
                )
        except DevStackError as exc:
            raise BenchError(f"the dev stack failed: {exc}") from None
    finally:
        cluster.stop()
    load1, load5, _ = os.getloadavg()
    facts["loadavg_at_end"] = [round(load1, 2), round(load5, 2)]
    report["machine"] = facts
    say(f"loadavg(1m,5m) at end={facts['loadavg_at_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"wrote {args.json}")
    return 0


def _pids(stack: Any, kind: str) -> list[int]:
    """The pids of the stack's processes whose names start with `kind` (users1, users2, ...)."""
    return [pid for name in stack.names if name.startswith(kind) and (pid := stack.pid(name)) is not None]


def _measure(
    args: argparse.Namespace,
    reaper: Reaper,
    cluster: AgendaCluster,
    first_leader: Member,
    gateway: str,
    ca_file: Path,
    workdir: Path,
    meter: CpuMeter,
) -> dict[str, Any]:
    planned = planned_load_seconds(args.clients, args.runs, args.duration, args.warmup)
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy, no REQUESTS_CA_BUNDLE
    session.verify = str(ca_file)
    with session:
        tokens = prepare_accounts(session, gateway, planned + START_UP_ALLOWANCE_S)

    db_spec = cluster.write_spec(KEY, "v" * args.value_size)
    db_body = workdir / "db-put.json"
    db_body.write_bytes(db_spec.body)
    event_body = workdir / "create-event.json"
    event_body.write_text(json.dumps(one_hour_event("Bench event", WRITER_EVENT_START, "Room 1")))
    # The tokens end up in hey's argv (it has no header file option): visible in ps, but they belong to
    # throwaway accounts of a stack that is deleted at the end of the run.
    gateway_requests = {
        CREATE_EVENT: HeyRequest(
            url=gateway + create_event_path(),
            method="POST",
            body_file=event_body,
            headers=(bearer(tokens[WRITER]),),
            request_timeout_s=HEY_REQUEST_TIMEOUT_S,
        ),
        LIST_AGENDA: HeyRequest(
            url=gateway + list_agenda_path(READER_WEEK_START),
            headers=(bearer(tokens[READER]),),
            request_timeout_s=HEY_REQUEST_TIMEOUT_S,
        ),
    }
    say(
        f"load: hey, keep-alive, {args.duration:g} s per step, {args.runs} run(s), levels {args.clients}, "
        f"warm-up {args.warmup:g} s per step; db-put = {db_spec.method} {db_spec.path} to the DB leader; "
        f"create-event = POST {create_event_path()}; list-agenda = GET {list_agenda_path(READER_WEEK_START)}"
    )
    results, targets, cpu = run_load(cluster, gateway_requests, db_spec, db_body, reaper, args, meter)

    summaries = {step: {c: summarize(r) for c, r in by_level.items()} for step, by_level in results.items()}
    ratios = create_over_db_put(args.clients, summaries)
    say()
    say(
        f"Through the gateway (HTTPS; gateway->User Service mutual TLS; services->DB plain HTTP) and the "
        f"DB's own single-key writes to its leader, same 5-member agenda-db (fsync on), 127.0.0.1; hey "
        f"{args.duration:g} s per step, medians of {args.runs} run(s); err = non-2xx + transport errors "
        f"summed over runs ('!' = at least one run had errors)"
    )
    say(format_steps_table(args.clients, summaries))
    say()
    say(format_ratio_table(args.clients, summaries))
    say()
    say(
        "CPU milliseconds per request, by component (median over runs; from /proc; every process "
        f"shares the machine's {os.cpu_count()} cores, hey included)"
    )
    say(format_cpu_table(args.clients, cpu, list(meter.groups)))
    notes = []
    flagged = flagged_cells(summaries)
    if flagged:
        notes.append(f"runs with non-2xx responses or errors: {', '.join(flagged)}")
    other_leaders = sorted({t["leader"] for t in targets} - {first_leader.name})
    if other_leaders:
        notes.append(
            f"the DB leader changed during the run (from {first_leader.name} to {', '.join(other_leaders)}): "
            f"from then on the services' first DB URL was a follower that forwards their writes"
        )
    for note in notes:
        say(f"WARNING: {note}")
    return {
        "config": {
            "clients": args.clients,
            "duration_s": args.duration,
            "runs": args.runs,
            "warmup_s": args.warmup,
            "value_size": args.value_size,
            "db_members": 5,
            "fsync": "on (agenda-db default)",
            "tls": "client->gateway HTTPS (hey does not verify the certificate); gateway->User Service "
            "mutual TLS; services->DB and db-put plain HTTP",
            "load_tool": "hey (keep-alive); tokens fetched once before the load",
            "steps": {
                DB_PUT: f"{db_spec.method} {db_spec.path} to the DB leader",
                CREATE_EVENT: f"POST {create_event_path()} as {WRITER}",
                LIST_AGENDA: f"GET {list_agenda_path(READER_WEEK_START)} as {READER}",
            },
            "reader_events": len(reader_agenda(READER_WEEK_START, GUEST)),
            "ratio_target": RATIO_TARGET,
            "db_leader_at_stack_start": first_leader.name,
        },
        "targets": targets,
        "steps": {
            step: {
                "runs": {str(c): [r.as_dict() for r in rs] for c, rs in by_level.items()},
                "median": {str(c): s.as_dict() for c, s in summaries[step].items()},
            }
            for step, by_level in results.items()
        },
        "ratio_create_over_db_put": {str(c): r for c, r in ratios.items()},
        "cpu_ms_per_request": {
            step: {str(c): median_cpu(runs) for c, runs in by_level.items()} for step, by_level in cpu.items()
        },
        "notes": notes,
    }


if __name__ == "__main__":
    sys.exit(main())
