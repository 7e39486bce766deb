"""The pure parts of bench/db_vs_etcd.py: hey output parsing, medians/ratios, tables, argument parsing.

No process is started and nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import _cluster as cluster_mod
from bench import _failover as failover
from bench import _stats as stats
from bench import db_vs_etcd as cli

# hey 0.1.4 against a healthy leader (trimmed histogram; the layout is hey's).
HEY_OK = """
Summary:
  Total:\t2.0078 secs
  Slowest:\t0.0712 secs
  Fastest:\t0.0021 secs
  Average:\t0.0115 secs
  Requests/sec:\t1382.6213

  Total data:\t405296 bytes
  Size/request:\t146 bytes

Response time histogram:
  0.002 [1]\t|
  0.009 [1210]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0061 secs
  25% in 0.0078 secs
  50% in 0.0104 secs
  75% in 0.0132 secs
  90% in 0.0171 secs
  95% in 0.0213 secs
  99% in 0.0366 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0021 secs, 0.0712 secs
  resp wait:\t0.0113 secs, 0.0020 secs, 0.0710 secs

Status code distribution:
  [200]\t2776 responses
"""

# Real hey 0.1.4 output: every answer a 501, and too few requests for a 99th percentile ("0% in 0").
HEY_NON_2XX = """
Summary:
  Total:\t0.0463 secs
  Slowest:\t0.0088 secs
  Fastest:\t0.0011 secs
  Average:\t0.0043 secs
  Requests/sec:\t431.5280

Latency distribution:
  10% in 0.0015 secs
  25% in 0.0019 secs
  50% in 0.0046 secs
  75% in 0.0070 secs
  90% in 0.0079 secs
  95% in 0.0088 secs
  0% in 0.0000 secs

Status code distribution:
  [501]\t20 responses
"""

# Real hey 0.1.4 output when nothing listens: only transport errors, NaN averages.
HEY_REFUSED = """
Summary:
  Total:\t0.0007 secs
  Slowest:\t0.0000 secs
  Fastest:\t0.0000 secs
  Average:\t NaN secs
  Requests/sec:\t14847.2809

Latency distribution:

Status code distribution:

Error distribution:
  [10]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
"""

HEY_MIXED = """
Summary:
  Total:\t5.0000 secs
  Requests/sec:\t110.0000

Latency distribution:
  50% in 0.0050 secs
  99% in 0.2500 secs

Status code distribution:
  [200]\t500 responses
  [503]\t30 responses
  [307]\t5 responses

Error distribution:
  [12]\tPost "http://127.0.0.1:5/v1/kv/bench-key": context deadline exceeded
  [3]\tPost "http://127.0.0.1:5/v1/kv/bench-key": EOF
"""


def step(clients: int, rps: float, p50: float | None, p99: float | None, errors: int = 0) -> object:
    return stats.StepResult(
        clients=clients, total_s=1.0, ok=int(rps), errors=errors, rps=rps, hey_rps=rps, p50_ms=p50, p99_ms=p99
    )


# ------------------------------------------------------------------------------------------ hey


def test_parse_hey_healthy_run() -> None:
    result = stats.parse_hey(HEY_OK, clients=16)
    assert result.clients == 16
    assert result.total_s == pytest.approx(2.0078)
    assert result.ok == 2776
    assert result.errors == 0
    assert result.rps == pytest.approx(2776 / 2.0078)
    assert result.hey_rps == pytest.approx(1382.6213)
    assert result.p50_ms == pytest.approx(10.4)
    assert result.p99_ms == pytest.approx(36.6)
    assert result.status_codes == {200: 2776}


def test_parse_hey_non_2xx_counts_as_errors_and_missing_p99_is_none() -> None:
    result = stats.parse_hey(HEY_NON_2XX, clients=2)
    assert result.ok == 0
    assert result.errors == 20
    assert result.rps == 0.0
    assert result.p50_ms == pytest.approx(4.6)
    assert result.p99_ms is None  # hey printed "0% in 0.0000 secs" instead of a 99th percentile


def test_parse_hey_transport_errors_only() -> None:
    result = stats.parse_hey(HEY_REFUSED, clients=2)
    assert result.ok == 0
    assert result.errors == 10
    assert result.p50_ms is None
    assert result.p99_ms is None
    assert list(result.error_kinds.values()) == [10]
    assert "connection refused" in next(iter(result.error_kinds))


def test_parse_hey_mixed_statuses_and_errors() -> None:
    result = stats.parse_hey(HEY_MIXED, clients=64)
    assert result.ok == 500
    assert result.errors == 30 + 5 + 12 + 3  # redirects are not acknowledged writes either
    assert result.rps == pytest.approx(100.0)  # 2xx only, not hey's 110
    assert result.p99_ms == pytest.approx(250.0)
    assert result.status_codes == {200: 500, 503: 30, 307: 5}


@pytest.mark.parametrize("text", ["", "hey: connection refused\n", "Summary:\n  Total:\t1.0 secs\n"])
def test_parse_hey_rejects_output_without_numbers(text: str) -> None:
    with pytest.raises(stats.HeyParseError):
        stats.parse_hey(text, clients=1)


def test_as_dict_is_json_friendly() -> None:
    data = stats.parse_hey(HEY_MIXED, clients=64).as_dict()
    assert data["status_codes"] == {"200": 500, "503": 30, "307": 5}


# ------------------------------------------------------------------------------- medians, ratio


def test_summarize_takes_medians_and_flags_runs_with_errors() -> None:
    runs = [step(16, 100.0, 5.0, 50.0), step(16, 300.0, 1.0, 10.0, errors=2), step(16, 200.0, 3.0, 30.0)]
    summary = stats.summarize(runs)
    assert summary.rps == 200.0
    assert summary.p50_ms == 3.0
    assert summary.p99_ms == 30.0
    assert summary.errors_total == 2
    assert summary.runs_with_errors == 1
    assert summary.flagged
    assert summary.as_dict()["flagged"] is True


def test_summarize_even_number_of_runs_and_missing_percentiles() -> None:
    summary = stats.summarize([step(1, 10.0, None, None), step(1, 20.0, 2.0, None)])
    assert summary.rps == 15.0
    assert summary.p50_ms == 2.0
    assert summary.p99_ms is None
    assert not summary.flagged


def test_summarize_refuses_empty_or_mixed_input() -> None:
    with pytest.raises(ValueError, match="no results"):
        stats.summarize([])
    with pytest.raises(ValueError, match="mix"):
        stats.summarize([step(1, 1.0, 1.0, 1.0), step(16, 1.0, 1.0, 1.0)])


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [(50.0, 200.0, 0.25), (300.0, 100.0, 3.0), (None, 100.0, None), (10.0, None, None), (10.0, 0.0, None)],
)
def test_ratio(num: float | None, den: float | None, expected: float | None) -> None:
    assert stats.ratio(num, den) == expected


def test_median_or_none_ignores_missing_values() -> None:
    assert stats.median_or_none([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median_or_none([None, None]) is None
    assert stats.median_or_none([]) is None


# ------------------------------------------------------------------------------------- tables


def test_load_table_has_both_systems_and_the_ratio() -> None:
    etcd = {
        1: stats.summarize([step(1, 400.0, 2.0, 8.0)]),
        16: stats.summarize([step(16, 1000.0, 9.0, 30.0)]),
    }
    agenda = {
        1: stats.summarize([step(1, 100.0, 5.0, 20.0)]),
        16: stats.summarize([step(16, 250.0, 50.0, 99.0, 3)]),
    }
    lines = stats.format_load_table([1, 16], etcd, agenda).splitlines()
    assert "etcd req/s" in lines[0]
    assert "agenda/etcd" in lines[0]
    assert lines[2].split("|")[0].strip() == "1"
    assert lines[2].rstrip().endswith("0.250x")
    assert "3!" in lines[3]  # errors flagged
    assert lines[3].rstrip().endswith("0.250x")


def test_load_table_with_one_system_only() -> None:
    etcd = {1: stats.summarize([step(1, 400.0, 2.0, 8.0)])}
    row = stats.format_load_table([1], etcd, None).splitlines()[2]
    assert "400.0" in row
    assert row.rstrip().endswith("-")


def test_failover_table_shows_median_all_values_and_timeouts() -> None:
    text = stats.format_failover_table({"etcd": [1500.0, 1200.0, None], "agenda": [700.0, 600.0]})
    etcd_row, agenda_row = text.splitlines()[2:]
    assert "1350" in etcd_row  # median of the measured gaps
    assert "timeout" in etcd_row
    assert "650" in agenda_row
    assert "700, 600" in agenda_row


# ----------------------------------------------------------------------------------- arguments


def test_parse_clients() -> None:
    assert stats.parse_clients("1,16,64") == [1, 16, 64]
    assert stats.parse_clients(" 64, 1 ,64,") == [64, 1]
    for bad in ("", "0", "1,x", "-3"):
        with pytest.raises(ValueError):  # noqa: PT011 - messages differ per case
            stats.parse_clients(bad)


def test_argument_defaults() -> None:
    args = cli.build_parser().parse_args([])
    assert args.clients == [1, 16, 64]
    assert args.duration == 10.0
    assert args.runs == 3
    assert args.only is None
    assert args.json is None
    assert not args.failover
    assert args.kills == 5


def test_argument_values() -> None:
    args = cli.build_parser().parse_args(
        [
            "--clients",
            "2,8",
            "--duration",
            "1.5",
            "--runs",
            "1",
            "--only",
            "etcd",
            "--json",
            "o.json",
            "--failover",
        ]
    )
    assert args.clients == [2, 8]
    assert args.duration == 1.5
    assert args.runs == 1
    assert args.only == "etcd"
    assert args.json == Path("o.json")
    assert args.failover


@pytest.mark.parametrize(
    "argv",
    [["--clients", "0"], ["--duration", "0"], ["--runs", "0"], ["--only", "redis"], ["--kills", "x"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_tools_print_the_install_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.shutil, "which", lambda tool: None if tool == "hey" else f"/usr/bin/{tool}")
    assert cli.missing_tools() == ["hey"]
    assert cli.main(["--only", "etcd"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y etcd-server etcd-client hey" in err
    assert "hey" in err.splitlines()[0]


# ------------------------------------------------------------------------- failover gap logic


def test_first_ack_counts_only_writes_sent_after_the_kill(tmp_path: Path) -> None:
    member = cluster_mod.Member("e1", (1, 2), tmp_path, tmp_path / "log")
    writer = failover.Writer([member], 0, cluster_mod.WriteSpec("PUT", "/k", b"{}"), timeout=0.1)
    writer.acks.extend([(9.0, 10.5), (10.6, 12.0), (12.0, 12.01)])
    assert writer.first_ack_sent_after(10.0, timeout=0) == (10.6, 12.0)  # 9.0 was in flight at the kill
    assert writer.first_ack_sent_after(20.0, timeout=0) is None


# ----------------------------------------------------------------------------- what hey sends


def test_each_system_reads_the_key_linearizably_as_its_clients_do_by_default() -> None:
    # Built without __init__: a request's shape needs no members (nor their free ports).
    etcd = object.__new__(cluster_mod.EtcdCluster).read_spec("bench-key")
    agenda = object.__new__(cluster_mod.AgendaCluster).read_spec("bench-key")
    # etcd's range is linearizable unless "serializable" is set; agenda-db's GET unless consistency=stale.
    assert (etcd.method, etcd.path) == ("POST", "/v3/kv/range")
    assert json.loads(etcd.body) == {"key": "YmVuY2gta2V5"}  # base64 of bench-key
    assert (agenda.method, agenda.path, agenda.body) == ("GET", "/v1/kv/bench-key", b"")


class OneLeader:
    """A cluster whose leader is always the member listening on `api_port` (nothing runs)."""

    health_timeout = 1.0
    leader_method = "scripted"

    def __init__(self, name: str, api_port: int, tmp_path: Path) -> None:
        self.member = cluster_mod.Member(name, (api_port - 1, api_port), tmp_path, tmp_path / "log")

    def wait_healthy(self, timeout: float) -> cluster_mod.Member:
        return self.member


def scripted_hey(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """hey's argv of every step, in order; each step answers HEY_OK."""
    sent: list[list[str]] = []

    def hey(_reaper: object, request: cli.HeyRequest, clients: int, duration: float) -> stats.StepResult:
        sent.append(request.argv(clients, duration))
        return stats.parse_hey(HEY_OK, clients)

    monkeypatch.setattr(cli, "run_hey_request", hey)
    return sent


@pytest.mark.parametrize(("spec", "has_body"), [(("GET", "/k", b""), False), (("PUT", "/k", b"{}"), True)])
def test_a_request_without_a_body_is_sent_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: tuple[str, str, bytes], has_body: bool
) -> None:
    sent = scripted_hey(monkeypatch)
    args = cli.build_parser().parse_args(["--clients", "1,4", "--runs", "2", "--warmup", "0"])
    results, targets = cli.interleaved_load(
        {"agenda": OneLeader("n1", 2, tmp_path)},  # type: ignore[dict-item]
        cluster_mod.Reaper(),
        args,
        tmp_path,
        "read",
        {"agenda": cluster_mod.WriteSpec(*spec)},
    )
    assert {c: len(r) for c, r in results["agenda"].items()} == {1: 2, 4: 2}
    assert len(targets["agenda"]) == 4
    assert all(("-D" in argv) is has_body for argv in sent)
    assert all(argv[argv.index("-m") + 1] == spec[0] for argv in sent)


def test_the_systems_take_turns_run_by_run_each_at_its_own_leader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = scripted_hey(monkeypatch)
    args = cli.build_parser().parse_args(["--clients", "1,4", "--runs", "3", "--warmup", "0.5"])
    clusters = {"etcd": OneLeader("e1", 2002, tmp_path), "agenda": OneLeader("n1", 3002, tmp_path)}
    specs = {
        "etcd": cluster_mod.WriteSpec("POST", "/e", b"{}"),
        "agenda": cluster_mod.WriteSpec("PUT", "/a", b"{}"),
    }
    results, targets = cli.interleaved_load(clusters, cluster_mod.Reaper(), args, tmp_path, "write", specs)  # type: ignore[arg-type]
    paths = [argv[-1].rsplit(":", 1)[1] for argv in sent]
    # The warm-ups (one each, at the highest level), then runs 1, 2, 3: etcd first, then agenda first...
    assert paths == ["2002/e", "3002/a"] + ["2002/e"] * 2 + ["3002/a"] * 4 + ["2002/e"] * 4 + ["3002/a"] * 2
    assert [t["run"] for t in targets["agenda"]] == [1, 1, 2, 2, 3, 3]
    assert {c: len(r) for c, r in results["etcd"].items()} == {1: 3, 4: 3}


# ------------------------------------------------------------------------------- --raft-tls-cost


def test_raft_tls_cost_interleaves_the_two_clusters_and_flips_the_order_every_run() -> None:
    assert cli.interleaved(("plain", "tls"), 3) == [
        (1, "plain"),
        (1, "tls"),
        (2, "tls"),
        (2, "plain"),
        (3, "plain"),
        (3, "tls"),
    ]


def test_raft_tls_cost_needs_only_hey_and_refuses_the_other_modes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.required_tools(cli.build_parser().parse_args(["--raft-tls-cost"])) == {"hey": "hey"}
    assert set(cli.required_tools(cli.build_parser().parse_args([]))) == {"etcd", "etcdctl", "hey"}
    monkeypatch.setattr(cli.shutil, "which", lambda tool: None if tool == "hey" else f"/usr/bin/{tool}")
    assert cli.main(["--raft-tls-cost"]) == 2
    assert "hey" in capsys.readouterr().err.splitlines()[0]
    for other in (["--failover"], ["--only", "etcd"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["--raft-tls-cost", *other])
        assert exc.value.code == 2
        assert "--raft-tls-cost" in capsys.readouterr().err


def test_agenda_members_run_raft_over_tls_behind_a_plain_api_when_given_files(tmp_path: Path) -> None:
    tls = cluster_mod.TlsPaths(ca=tmp_path / "ca.crt", cert=tmp_path / "n.crt", key=tmp_path / "n.key")
    plain = cluster_mod.AgendaCluster(cluster_mod.Reaper(), tmp_path / "plain", size=3)
    over_tls = cluster_mod.AgendaCluster(cluster_mod.Reaper(), tmp_path / "tls", size=3, raft_tls=tls)
    plain_argv = plain.command(plain.members[0])
    tls_argv = over_tls.command(over_tls.members[0])
    assert "--no-tls" in plain_argv
    assert "--raft-tls" not in plain_argv  # Raft follows the API: plain
    assert "--no-tls" in tls_argv  # hey speaks plain HTTP either way
    flags = tls_argv[tls_argv.index("--raft-tls") :]
    assert flags == [
        "--raft-tls",
        "--tls-cert",
        str(tls.cert),
        "--tls-key",
        str(tls.key),
        "--tls-ca",
        str(tls.ca),
    ]


def test_pair_table_names_its_columns_and_the_ratio() -> None:
    plain = {1: stats.summarize([step(1, 500.0, 2.0, 3.0)])}
    tls = {1: stats.summarize([step(1, 450.0, 2.2, 3.5)])}
    header, _, row = stats.format_pair_table(
        [1], plain, tls, ("plain r/s", "tls r/s", "tls/plain")
    ).splitlines()
    assert "plain r/s" in header
    assert header.rstrip().endswith("tls/plain")
    assert row.rstrip().endswith("0.900x")
