"""The pure parts of bench/agenda_gateway.py: arguments, the requests it sends, ratios and tables.

No process is started and nothing touches the network.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bench import _hey as hey
from bench import _stats as stats
from bench import agenda_gateway as gateway


def summary(clients: int, rps: float | None, *, errors: int = 0, p99: float | None = 9.5) -> object:
    return stats.StepSummary(
        clients=clients,
        runs=3,
        rps=rps,
        p50_ms=2.25,
        p99_ms=p99,
        errors_total=errors,
        runs_with_errors=1 if errors else 0,
    )


def summaries(db_put: dict[int, float], create: dict[int, float], listing: dict[int, float]) -> dict:
    return {
        gateway.DB_PUT: {c: summary(c, r) for c, r in db_put.items()},
        gateway.CREATE_EVENT: {c: summary(c, r) for c, r in create.items()},
        gateway.LIST_AGENDA: {c: summary(c, r) for c, r in listing.items()},
    }


# ------------------------------------------------------------------------------------- arguments


def test_argument_defaults() -> None:
    args = gateway.parse_args([])
    assert args.clients == [1, 16, 64]
    assert (args.duration, args.runs, args.warmup, args.value_size) == (10.0, 3, 2.0, 64)
    assert args.json is None
    assert not args.keep_tmp


def test_argument_values() -> None:
    args = gateway.parse_args(
        ["--clients", "1,16", "--duration", "2", "--runs", "1", "--warmup", "0", "--json", "out.json"]
    )
    assert args.clients == [1, 16]
    assert (args.duration, args.runs, args.warmup) == (2.0, 1, 0.0)
    assert args.json == Path("out.json")


@pytest.mark.parametrize(
    "argv",
    [
        ["--clients", "0"],
        ["--clients", "a,b"],
        ["--duration", "0"],
        ["--runs", "0"],
        ["--warmup", "-1"],
        ["--value-size", "0"],
        ["--only", "etcd"],  # db_vs_etcd's option, not this benchmark's
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gateway.parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


def test_planned_load_counts_every_step_level_run_and_warmup() -> None:
    # 3 steps x (2 s warm-up + 3 runs x 3 levels x 10 s)
    assert gateway.planned_load_seconds([1, 16, 64], 3, 10.0, 2.0) == 3 * (2 + 90)


def test_a_run_longer_than_one_token_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gateway.parse_args(["--duration", "3600", "--runs", "3"])
    assert exc.value.code == 2
    assert "too long for one access token" in capsys.readouterr().err


def test_missing_hey_prints_the_install_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gateway.shutil, "which", lambda tool: None)
    assert gateway.main(["--runs", "1"]) == 2
    assert gateway.INSTALL_LINE in capsys.readouterr().err


# ---------------------------------------------------------------------------------- the requests


def test_reader_agenda_is_twenty_meetings_in_one_working_week() -> None:
    week = datetime(2030, 1, 7, tzinfo=UTC)
    events = gateway.reader_agenda(week, "guest")
    assert len(events) == 20
    starts = sorted(datetime.fromisoformat(e["start"].replace("Z", "+00:00")) for e in events)
    assert starts[0] >= week
    assert starts[-1] < week + timedelta(days=5)
    for event in events:
        start = datetime.fromisoformat(event["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(event["end"].replace("Z", "+00:00"))
        assert end - start == timedelta(hours=1)
    # No two meetings overlap: the reader's own conflict checks pass while the agenda is built.
    assert all(later - earlier >= timedelta(hours=1) for earlier, later in itertools.pairwise(starts))
    with_guest = [e for e in events if e.get("participants") == ["guest"]]
    assert len(with_guest) == 5
    assert all("participants" not in e for e in events if e not in with_guest)


def test_event_body_is_one_hour_in_rfc3339_utc() -> None:
    body = gateway.one_hour_event("Bench event", datetime(2030, 3, 4, 10, tzinfo=UTC), "Room 1")
    assert body["start"] == "2030-03-04T10:00:00Z"
    assert body["end"] == "2030-03-04T11:00:00Z"
    assert body["title"] == "Bench event"
    assert "participants" not in body


def test_request_paths() -> None:
    assert gateway.create_event_path() == "/v1/events?allow_conflict=true"
    assert (
        gateway.list_agenda_path(datetime(2030, 1, 7, tzinfo=UTC))
        == "/v1/events?from=2030-01-07T00:00:00Z&to=2030-01-14T00:00:00Z"
    )
    assert gateway.bearer("t0k") == "Authorization: Bearer t0k"


def test_hey_argv_with_body_and_headers(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    request = hey.HeyRequest(
        url="https://127.0.0.1:1/v1/events",
        method="POST",
        body_file=body,
        headers=("Authorization: Bearer x",),
        request_timeout_s=10,
    )
    assert request.argv(16, 2.0) == [
        "hey", "-z", "2s", "-c", "16", "-m", "POST",
        "-T", "application/json", "-D", str(body),
        "-H", "Authorization: Bearer x",
        "-t", "10", "https://127.0.0.1:1/v1/events",
    ]  # fmt: skip


def test_hey_argv_get_without_body() -> None:
    argv = hey.HeyRequest("http://127.0.0.1:1/v1/x").argv(1, 0.5)
    assert argv == ["hey", "-z", "0.5s", "-c", "1", "-m", "GET", "-t", "10", "http://127.0.0.1:1/v1/x"]


# ---------------------------------------------------------------------------- ratios and tables


def test_create_over_db_put_per_level() -> None:
    cells = summaries({1: 400.0, 16: 1000.0}, {1: 100.0, 16: 600.0}, {1: 50.0, 16: 80.0})
    assert gateway.create_over_db_put([1, 16], cells) == {1: 0.25, 16: 0.6}


def test_create_over_db_put_missing_or_zero_is_none() -> None:
    cells = summaries({1: 0.0}, {1: 100.0, 16: 600.0}, {})
    assert gateway.create_over_db_put([1, 16], cells) == {1: None, 16: None}


@pytest.mark.parametrize(("value", "expected"), [(0.5, "met"), (0.73, "met"), (0.499, "MISSED"), (None, "-")])
def test_target_verdict(value: float | None, expected: str) -> None:
    assert gateway.target_verdict(value, 0.5) == expected


def test_steps_table_has_every_step_at_every_level() -> None:
    cells = summaries({1: 400.0, 16: 1000.0}, {1: 100.0, 16: 600.0}, {1: 50.0})
    lines = gateway.format_steps_table([1, 16], cells).splitlines()
    assert lines[0].split() == ["step", "clients", "|", "2xx/s", "p50", "ms", "p99", "ms", "err"]
    rows = lines[2:]
    assert [row.split()[:2] for row in rows] == [
        ["db-put", "1"], ["db-put", "16"],
        ["create-event", "1"], ["create-event", "16"],
        ["list-agenda", "1"], ["list-agenda", "16"],
    ]  # fmt: skip
    assert rows[0].split()[3:] == ["400.0", "2.25", "9.50", "0"]
    assert rows[-1].split()[3:] == ["-", "-", "-", "-"]  # no measurement: shown, not hidden


def test_steps_table_shows_errors_and_missing_p99() -> None:
    cells = {gateway.CREATE_EVENT: {1: summary(1, 12.0, errors=7, p99=None)}}
    row = gateway.format_steps_table([1], cells).splitlines()[3]  # header, rule, db-put, create-event
    assert row.split()[3:] == ["12.0", "2.25", "-", "7!"]


def test_ratio_table_rows_and_verdicts() -> None:
    cells = summaries({1: 400.0, 16: 1000.0, 64: 900.0}, {1: 100.0, 16: 600.0}, {})
    lines = gateway.format_ratio_table([1, 16, 64], cells, 0.5).splitlines()
    assert lines[0].split() == [
        "clients", "|", "db-put", "2xx/s", "|", "create", "2xx/s", "|", "create/db-put", "|",
        "target", ">=", "0.5",
    ]  # fmt: skip
    assert [row.split() for row in lines[2:]] == [
        ["1", "|", "400.0", "|", "100.0", "|", "0.250x", "|", "MISSED"],
        ["16", "|", "1000.0", "|", "600.0", "|", "0.600x", "|", "met"],
        ["64", "|", "900.0", "|", "-", "|", "-", "|", "-"],
    ]


def test_flagged_cells_name_step_and_level() -> None:
    cells = {
        gateway.DB_PUT: {1: summary(1, 10.0), 16: summary(16, 10.0, errors=2)},
        gateway.LIST_AGENDA: {64: summary(64, 10.0, errors=1)},
    }
    assert gateway.flagged_cells(cells) == ["db-put c=16", "list-agenda c=64"]


def test_shared_cells_and_ratio_format() -> None:
    assert stats.summary_cells(None).split() == ["-", "-", "-", "-"]
    assert stats.format_ratio(0.5) == "0.500x"
    assert stats.format_ratio(None) == "-"


def test_cpu_table_shows_the_median_per_component_and_dashes_for_missing() -> None:
    runs = [{"gateway": 1.0, "db": 2.0, "total": 3.0}, {"gateway": 3.0, "db": None, "total": 3.0}]
    cpu = {step: {16: runs} for step in gateway.STEPS}
    table = gateway.format_cpu_table([16], cpu, ["gateway", "db"])
    row = next(line for line in table.splitlines() if line.startswith("create-event"))
    assert row.split("|")[1].split() == ["2.00", "2.00", "3.00"]
    assert gateway.median_cpu([{"db": None}]) == {"db": None}
