"""CalDAV: Agenda's server (through the TLS gateway) beside Radicale 3, in the same run.

Two commands:

* ``make caldav-conformance`` (``--conformance``): the ecosystem's conformance tool,
  ``caldav-server-tester``, with two users against each server, and both support maps side by side with
  a line per difference. It checks the requirement of issue 12: every event feature Radicale supports
  fully is fully supported here (VTODO and VJOURNAL are not, by design), and so is ``scheduling``.
* ``make bench-caldav``: into a calendar already holding ``--events`` events (1,000), at each
  concurrency, PUTs of new events under new URLs (a Python client: hey repeats one URL) and a one-day
  ``calendar-query`` REPORT (hey), each step run on both servers, interleaved, medians of ``--runs``.
  Radicale runs with its defaults (its built-in server, its file storage), plus the htpasswd file its
  users need; ours is the dev stack (five DB members with fsync, two User Services, the TLS gateway).

Nothing is sent anywhere but loopback.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cluster import (
    BenchError,
    Reaper,
    clean_env,
    free_ports,
    run_under_reaper,
    scrub_proxy_environment,
    wait_until,
)
from bench._hey import HeyRequest, add_load_arguments, run_hey
from bench._stats import StepResult, StepSummary, format_pair_table, ratio, summarize

PROG: Final = "bench-caldav"
PASSWORD: Final = "correct horse battery"  # noqa: S105 - the throwaway accounts of this run
BASE: Final = datetime(2032, 1, 5, 0, 0, tzinfo=UTC)  # a Monday; preloaded events take one hour each
QUERY_DAY: Final = BASE + timedelta(days=10)
# Features whose checks need VTODO or VJOURNAL objects: Agenda stores events only, by design (a to-do
# is not a commitment that blocks time, and no JSON API shows one). The three open-range searches are
# computed on the tester's VTODO fixtures: it skips them where VTODO search is unsupported.
NOT_EVENTS: Final = ("todo", "journal", "search.time-range.open.")


def _say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ servers


@dataclass(frozen=True)
class Server:
    """One CalDAV server under test: where its DAV root and the user's calendar are, how to reach it."""

    name: str
    dav_root: str
    calendar: str  # the benchmark calendar's URL (trailing slash)
    users: tuple[str, ...]
    verify: str | bool  # a CA file, or True for plain HTTP

    def auth(self, user: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = self.verify
        session.headers["Authorization"] = self.auth(self.users[0])
        return session


@contextmanager
def agenda_server(workdir: Path) -> Iterator[Server]:
    """The dev stack (what `make dev` runs) with TLS, and two registered users."""
    from agenda.devstack import DevStack, DevStackError

    scrub_proxy_environment()
    _say("agenda: starting the dev stack (5 DB members, 2 User Services, Group Service, TLS gateway) ...")
    started = time.monotonic()
    try:
        with DevStack(workdir / "agenda", tls=True, gateway_port=0, users_instances=2) as stack:
            _say(f"agenda: ready after {time.monotonic() - started:.1f} s at {stack.gateway_url}")
            session = requests.Session()
            session.trust_env = False
            session.verify = str(stack.ca_file)
            users = ("benchalice", "benchbob")
            for user in users:
                body = {"username": user, "password": PASSWORD, "timezone": "UTC"}
                answer = session.post(f"{stack.gateway_url}/v1/auth/register", json=body, timeout=30)
                if answer.status_code != 201:
                    raise BenchError(f"registering {user} failed: {answer.status_code} {answer.text[:200]}")
            root = f"{stack.gateway_url}/dav/"
            yield Server("agenda", root, f"{root}calendars/{users[0]}/default/", users, str(stack.ca_file))
    except DevStackError as exc:
        raise BenchError(f"the dev stack failed: {exc}") from None


@contextmanager
def radicale_server(reaper: Reaper, workdir: Path) -> Iterator[Server]:
    """Radicale 3 with its default settings, plus the users file its authentication needs."""
    folder = workdir / "radicale"
    folder.mkdir()
    users = ("benchalice", "benchbob")
    (folder / "users").write_text("".join(f"{u}:{PASSWORD}\n" for u in users))
    port = free_ports(1)[0]
    config = folder / "config"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n"
        f"[auth]\ntype = htpasswd\nhtpasswd_filename = {folder / 'users'}\nhtpasswd_encryption = plain\n"
        f"[storage]\nfilesystem_folder = {folder / 'collections'}\n"
    )
    argv = [sys.executable, "-m", "radicale", "--config", str(config)]
    proc = reaper.spawn(argv, folder / "radicale.log", clean_env())
    root = f"http://127.0.0.1:{port}/"

    def up() -> bool | None:
        try:
            return requests.get(root, timeout=1).status_code < 500 or None
        except requests.RequestException:
            return None

    if wait_until(up, 30) is None:
        raise BenchError(f"radicale did not start: {(folder / 'radicale.log').read_text()[-500:]}")
    version = subprocess.run(
        [sys.executable, "-c", "import radicale; print(radicale.VERSION)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    _say(f"radicale {version}: up at {root}")
    server = Server("radicale", root, f"{root}{users[0]}/bench/", users, True)
    with server.session() as session:
        made = session.request("MKCALENDAR", server.calendar, timeout=30)
        if made.status_code != 201:
            raise BenchError(f"radicale MKCALENDAR answered {made.status_code}")
    try:
        yield server
    finally:
        proc.terminate()


# -------------------------------------------------------------------------------------- conformance


def run_tester(reaper: Reaper, server: Server, workdir: Path) -> tuple[dict[str, Any], float]:
    """caldav-server-tester with both users (its multi-user scheduling checks need two); its map."""
    config = workdir / f"{server.name}-caldav.yaml"
    sections = {
        user: {
            "caldav_url": server.dav_root,
            "caldav_username": user,
            "caldav_password": PASSWORD,
            "caldav_ssl_verify_cert": server.verify,
        }
        for user in server.users
    }
    config.write_text(json.dumps(sections))  # JSON is YAML
    argv = [str(Path(sys.executable).with_name("caldav-server-tester"))]
    for user in server.users:
        argv += ["--config-section", user]
    # The hints format lists every feature; the JSON one leaves out those that match the tool's defaults.
    argv += ["--format", "hints"]
    started = time.monotonic()
    code, out, err = reaper.run(argv, timeout=600, env=clean_env({"CALDAV_CONFIG_FILE": str(config)}))
    elapsed = time.monotonic() - started
    if code != 0 or not out.strip().startswith("{"):
        raise BenchError(f"caldav-server-tester on {server.name} failed ({code}): {(err or out)[-600:]}")
    return ast.literal_eval(out.strip()), elapsed


def support(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if "support" in entry:
        return str(entry["support"])
    return f"value={entry.get('value')}"


def compare(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    """The side-by-side table, the differences, and the requirement's failures (empty: met)."""
    names = sorted(set(ours) | set(theirs))
    width = max(len(n) for n in names)
    lines = [f"{'feature':<{width}} | {'radicale':<11} | {'agenda':<11}", "-" * (width + 30)]
    differences, failures = [], []
    for name in names:
        mine, other = support(ours.get(name)), support(theirs.get(name))
        mark = "" if mine == other else "  <>"
        lines.append(f"{name:<{width}} | {other:<11} | {mine:<11}{mark}")
        if mine != other:
            differences.append(f"{name}: radicale {other}, agenda {mine}")
        by_design = any(part in name for part in NOT_EVENTS)
        if other == "full" and mine != "full" and not by_design:
            failures.append(f"{name}: radicale full, agenda {mine}")
    if support(ours.get("scheduling")) != "full":
        failures.append(f"scheduling: agenda {support(ours.get('scheduling'))}, required full")
    return "\n".join(lines), differences, failures


def conformance(reaper: Reaper, args: argparse.Namespace) -> int:
    workdir = reaper.mkdtemp("bench-caldav-")
    with agenda_server(workdir) as ours, radicale_server(reaper, workdir) as radicale:
        _say("caldav-server-tester against radicale ...")
        theirs_map, theirs_s = run_tester(reaper, radicale, workdir)
        _say(f"  {theirs_s:.1f} s")
        _say("caldav-server-tester against agenda ...")
        ours_map, ours_s = run_tester(reaper, ours, workdir)
        _say(f"  {ours_s:.1f} s")
    table, differences, failures = compare(ours_map, theirs_map)
    print(table)
    print()
    full = {
        name: sum(1 for e in m.values() if support(e) == "full")
        for name, m in (("radicale", theirs_map), ("agenda", ours_map))
    }
    print(
        f"full support: radicale {full['radicale']} of {len(theirs_map)} ({theirs_s:.1f} s), "
        f"agenda {full['agenda']} of {len(ours_map)} ({ours_s:.1f} s)"
    )
    print(f"{len(differences)} difference(s):")
    for line in differences:
        print(f"  {line}")
    if failures:
        print("REQUIREMENT NOT MET (every event feature Radicale fully supports, and scheduling):")
        for line in failures:
            print(f"  {line}")
    else:
        print("requirement met: every event feature Radicale fully supports is full here, and scheduling is")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "radicale": theirs_map,
                    "agenda": ours_map,
                    "differences": differences,
                    "failures": failures,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------- load


def event_body(uid: str, start: datetime, summary: str) -> bytes:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//bench-caldav//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20320101T000000Z",
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
        f"DTEND:{start + timedelta(minutes=50):%Y%m%dT%H%M%SZ}",
        f"SUMMARY:{summary}",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
    return "\r\n".join(lines).encode()


def query_body() -> bytes:
    end = QUERY_DAY + timedelta(days=1)
    return (
        '<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop>'
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{QUERY_DAY:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
        "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    ).encode()


class Slots:
    """Unique one-hour slots after the preloaded ones, shared by every PUT of the run (on both servers
    the same sequence), so no new event overlaps another: Agenda's default calendar refuses
    double-booking, and the benchmark is about storing, not about refusals."""

    def __init__(self, first: int) -> None:
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next


def preload(server: Server, count: int) -> float:
    """PUT `count` events, one per hour from BASE (the query day holds 24 of them); seconds taken."""
    started = time.monotonic()
    with server.session() as session:
        for index in range(count):
            body = event_body(f"pre-{index}@bench", BASE + timedelta(hours=index), f"Preloaded {index}")
            answer = session.put(
                f"{server.calendar}pre-{index}.ics",
                data=body,
                headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
                timeout=60,
            )
            if answer.status_code not in (201, 204):
                raise BenchError(
                    f"{server.name}: preloading event {index} answered {answer.status_code} "
                    f"{answer.text[:200]}"
                )
    return time.monotonic() - started


def put_step(server: Server, clients: int, duration: float, slots: Slots) -> StepResult:
    """`clients` threads, each a keep-alive session, PUT new events under new URLs for `duration` s."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker() -> None:
        with server.session() as session:
            while time.monotonic() < deadline:
                slot = slots.take()
                uid = uuid.uuid4().hex
                body = event_body(f"{uid}@bench", BASE + timedelta(hours=slot), f"New {slot}")
                sent = time.monotonic()
                try:
                    answer = session.put(
                        f"{server.calendar}{uid}.ics",
                        data=body,
                        headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
                        timeout=30,
                    )
                except requests.RequestException as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                took = time.monotonic() - sent
                with lock:
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                    if answer.status_code in (201, 204):
                        latencies.append(took)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.monotonic() - started
    return _result(clients, total, latencies, statuses, errors)


def _result(
    clients: int, total: float, latencies: list[float], statuses: dict[int, int], errors: dict[str, int]
) -> StepResult:
    ok = len(latencies)
    failed = sum(n for code, n in statuses.items() if code not in (201, 204)) + sum(errors.values())
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return None if not ordered else ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return StepResult(
        clients=clients,
        total_s=total,
        ok=ok,
        errors=failed,
        rps=ok / total if total else 0.0,
        hey_rps=(ok + failed) / total if total else 0.0,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        status_codes=statuses,
        error_kinds=errors,
    )


def query_step(reaper: Reaper, server: Server, clients: int, duration: float, body_file: Path) -> StepResult:
    request = HeyRequest(
        url=server.calendar,
        method="REPORT",
        body_file=body_file,
        content_type="application/xml; charset=utf-8",
        headers=(f"Authorization: {server.auth(server.users[0])}", "Depth: 1"),
        request_timeout_s=30,
    )
    return run_hey(reaper, request, clients, duration)


def check_query(server: Server, body: bytes) -> int:
    """How many events the one-day query finds (both servers must find the same 24)."""
    with server.session() as session:
        answer = session.request(
            "REPORT",
            server.calendar,
            data=body,
            headers={"Depth": "1", "Content-Type": "application/xml"},
            timeout=60,
        )
    if answer.status_code != 207:
        raise BenchError(f"{server.name}: the one-day query answered {answer.status_code}")
    return answer.text.count("BEGIN:VEVENT")


def _cell(step: StepResult) -> str:
    return f"{step.rps:.1f}/s p99 {step.p99_ms or 0:.0f} ms errors {step.errors}"


def load(reaper: Reaper, args: argparse.Namespace) -> int:
    workdir = reaper.mkdtemp("bench-caldav-")
    body_file = workdir / "query.xml"
    body_file.write_bytes(query_body())
    results: dict[str, dict[str, dict[int, list[StepResult]]]] = {
        op: {"agenda": {}, "radicale": {}} for op in ("put", "query")
    }
    with agenda_server(workdir) as ours, radicale_server(reaper, workdir) as radicale:
        servers = (ours, radicale)
        for server in servers:
            _say(f"{server.name}: preloading {args.events} events ...")
            _say(f"  {preload(server, args.events):.1f} s")
            found = check_query(server, query_body())
            _say(f"{server.name}: the one-day query finds {found} events")
            if found != min(24, max(0, args.events - 240)):
                raise BenchError(f"{server.name}: the one-day query found {found} events, expected 24")
        slots = Slots(args.events + 24 * 7)
        for run in range(args.runs):
            for clients in args.clients:
                for server in servers if run % 2 == 0 else servers[::-1]:
                    step = put_step(server, clients, args.duration, slots)
                    results["put"][server.name].setdefault(clients, []).append(step)
                    _say(f"run {run + 1} c={clients} {server.name} put: {_cell(step)}")
                    step = query_step(reaper, server, clients, args.duration, body_file)
                    results["query"][server.name].setdefault(clients, []).append(step)
                    _say(f"run {run + 1} c={clients} {server.name} query: {_cell(step)}")
    summaries: dict[str, dict[str, dict[int, StepSummary]]] = {
        op: {name: {c: summarize(runs) for c, runs in cells.items()} for name, cells in by_server.items()}
        for op, by_server in results.items()
    }
    labels = ("radicale/s", "agenda/s", "agenda/rad")
    print(f"PUT of a new event (unique URL) into a calendar of {args.events}+ events, medians of {args.runs}")
    print(format_pair_table(args.clients, summaries["put"]["radicale"], summaries["put"]["agenda"], labels))
    print()
    print(f"one-day calendar-query REPORT (24 events, with calendar-data), medians of {args.runs}")
    print(
        format_pair_table(args.clients, summaries["query"]["radicale"], summaries["query"]["agenda"], labels)
    )
    ahead = all(
        (ratio(summaries[op]["agenda"][c].rps, summaries[op]["radicale"][c].rps) or 0) > 1
        for op in summaries
        for c in args.clients
    )
    print("ours ahead of Radicale at every point" if ahead else "NOT ahead of Radicale at every point")
    if args.json:
        report = {
            op: {
                name: {
                    str(c): {"summary": s.as_dict(), "runs": [r.as_dict() for r in results[op][name][c]]}
                    for c, s in cells.items()
                }
                for name, cells in by_server.items()
            }
            for op, by_server in summaries.items()
        }
        report["loadavg_at_end"] = list(os.getloadavg()[:2])  # type: ignore[assignment]
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


# -------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--conformance", action="store_true", help="run caldav-server-tester on both servers")
    add_load_arguments(
        parser,
        runs_help="load runs per cell, interleaved between the servers (default 3)",
        warmup_help="unused here",
        value_help="unused here",
    )
    parser.add_argument(
        "--events", type=int, default=1000, help="events in the calendar before the load (1000)"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the working directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    body: Callable[[Reaper], int] = (
        (lambda r: conformance(r, args)) if args.conformance else (lambda r: load(r, args))
    )
    if not args.conformance and subprocess.run(["which", "hey"], capture_output=True, check=False).returncode:  # noqa: S607
        print(f"{PROG}: hey is missing (apt-get install -y hey)", file=sys.stderr)
        return 2
    return run_under_reaper(PROG, args.keep_tmp, body)


if __name__ == "__main__":
    sys.exit(main())
