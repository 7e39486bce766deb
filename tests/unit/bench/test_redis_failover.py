"""The pure parts of bench/redis_failover.py: configuration files, reply parsing, steady-state checks,
statistics and the table. No process is started and nothing touches the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import redis_failover as rf

from agenda.redis_supervisor import config as supervisor_config


def sample(system: str, number: int, writable: float | None, reported: float | None) -> rf.KillSample:
    return rf.KillSample(system, number, "127.0.0.1:1", "127.0.0.1:2", writable, reported)


# ------------------------------------------------------------------------------ configuration files


def test_redis_conf_primary_and_replica(tmp_path: Path) -> None:
    primary = rf.redis_conf(7001, tmp_path)
    assert "port 7001\n" in primary
    assert "bind 127.0.0.1\n" in primary
    assert 'save ""\n' in primary
    assert "appendonly no\n" in primary
    assert "replicaof" not in primary
    assert rf.redis_conf(7002, tmp_path, replicaof=7001).endswith("replicaof 127.0.0.1 7001\n")


def test_sentinel_conf_monitors_with_the_benchmark_timers(tmp_path: Path) -> None:
    text = rf.sentinel_conf(26379, tmp_path, 7001)
    assert "port 26379\n" in text
    assert "bind 127.0.0.1\n" in text
    assert "sentinel monitor m 127.0.0.1 7001 2\n" in text
    assert "sentinel down-after-milliseconds m 1000\n" in text
    assert "sentinel failover-timeout m 10000\n" in text
    assert "sentinel parallel-syncs m 1\n" in text


def test_supervisor_config_is_accepted_by_the_supervisors_own_schema() -> None:
    data = rf.supervisor_config("sup1", [7001, 7002], 7001, ["http://127.0.0.1:9001"], 9121)
    cfg = supervisor_config.load(data=data)
    assert [s.port for s in cfg.servers] == [7001, 7002]
    assert cfg.bootstrap == "127.0.0.1:7001"
    assert (cfg.interval_ms, cfg.down_after_ms, cfg.timeout_ms, cfg.lock_ttl) == (100, 1000, 250, 3)
    assert not cfg.redis_tls.enabled
    assert not cfg.db_tls.enabled
    assert cfg.status_addr == ("127.0.0.1", 9121)


# ----------------------------------------------------------------------------------- reply parsing


def test_flat_pairs_resp2_list_and_resp3_map() -> None:
    assert rf.flat_pairs(["ip", "127.0.0.1", "port", "7002"]) == {"ip": "127.0.0.1", "port": "7002"}
    assert rf.flat_pairs({"ip": "127.0.0.1", "port": 7002}) == {"ip": "127.0.0.1", "port": "7002"}
    with pytest.raises(ValueError, match="pairs"):
        rf.flat_pairs(["ip", "127.0.0.1", "port"])
    with pytest.raises(ValueError, match="pairs"):
        rf.flat_pairs("ip")


def test_addr() -> None:
    assert rf.addr(["127.0.0.1", "7001"]) == "127.0.0.1:7001"
    assert rf.addr(None) is None
    with pytest.raises(ValueError, match="address"):
        rf.addr(["127.0.0.1"])


def test_parse_role() -> None:
    assert rf.parse_role(["master", 42, []]) == rf.RoleView("master")
    assert rf.parse_role(["slave", "127.0.0.1", 7001, "connected", 42]) == rf.RoleView(
        "slave", "127.0.0.1:7001", True
    )
    assert rf.parse_role(["slave", "127.0.0.1", 7001, "connect", -1]).link_up is False
    assert rf.parse_role(["sentinel", ["m"]]).role == "sentinel"
    for bad in (None, [], ["slave", "h"], ["leader"]):
        with pytest.raises(ValueError, match="ROLE"):
            rf.parse_role(bad)


# ---------------------------------------------------------------------------------- steady states

P, R = "127.0.0.1:7001", "127.0.0.1:7002"


def test_pair_not_steady() -> None:
    linked = {P: rf.RoleView("master"), R: rf.RoleView("slave", P, True)}
    assert rf.pair_not_steady(P, R, linked) is None
    assert "not acting as primary (unreachable)" in str(rf.pair_not_steady(P, R, {**linked, P: None}))
    assert "not a replica" in str(rf.pair_not_steady(P, R, {**linked, R: rf.RoleView("master")}))
    assert "not a replica" in str(rf.pair_not_steady(P, R, {**linked, R: rf.RoleView("slave", R, True)}))
    assert "link" in str(rf.pair_not_steady(P, R, {**linked, R: rf.RoleView("slave", P, False)}))


def replica_entry(**changes: str) -> dict[str, str]:
    entry = {
        "ip": "127.0.0.1",
        "port": "7002",
        "flags": "slave",
        "role-reported": "slave",
        "master-link-status": "ok",
        "master-host": "127.0.0.1",
        "master-port": "7001",
    }
    return {**entry, **changes}


def view(master: str | None = P, others: int = 2, **changes: str) -> rf.SentinelView:
    return rf.SentinelView(master, (replica_entry(**changes),), others)


def test_sentinels_steady() -> None:
    assert rf.sentinels_not_steady([view(), view(), view()], R) is None


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ([view(), None, view()], "does not answer"),
        ([], "does not answer"),
        ([view(), view(R), view()], "disagree"),
        ([view(None), view(None), view(None)], "name None"),
        ([view(R), view(R), view(R)], f"name {R}"),
        ([view(), view(others=1), view()], "sentinel 2 knows 1 other"),
        ([view(), view(), rf.SentinelView(P, (), 2)], "sentinel 3 does not list"),
        ([view(flags="slave,s_down"), view(), view()], "flags"),
        ([view(), view(**{"role-reported": "master"}), view()], "as master"),
        ([view(), view(**{"master-link-status": "err"}), view()], "link err"),
        ([view(), view(), view(**{"master-port": "7003"})], "replicating"),
    ],
)
def test_sentinels_not_steady(views: list[rf.SentinelView | None], expected: str) -> None:
    assert expected in str(rf.sentinels_not_steady(views, R))


def test_ours_not_steady() -> None:
    record = {"host": "127.0.0.1", "port": 7001, "epoch": 3}
    assert rf.ours_not_steady(record, [False, True], [P, R]) is None
    assert "no primary recorded" in str(rf.ours_not_steady(None, [True], [P, R]))
    assert "names no server" in str(rf.ours_not_steady({**record, "port": 7009}, [True], [P, R]))
    assert "names no server" in str(rf.ours_not_steady({**record, "epoch": "3"}, [True], [P, R]))
    assert "no supervisor acts" in str(rf.ours_not_steady(record, [False, False], [P, R]))


# ------------------------------------------------------------------------------ statistics, table


def test_failover_is_the_later_of_writable_and_reported() -> None:
    assert sample("ours", 1, 1.0, 1.2).failover_s == 1.2
    assert sample("ours", 1, 1.3, 1.2).failover_s == 1.3
    assert sample("ours", 1, None, 1.2).failover_s is None
    assert sample("ours", 1, 1.0, None).as_dict()["failover_s"] is None


def test_summarize_medians_min_max_ignoring_timeouts() -> None:
    samples = [sample("s", 1, 2.0, 2.2), sample("s", 2, 1.4, 3.0), sample("s", 3, None, 2.0)]
    summary = rf.summarize(samples)
    assert (summary.kills, summary.measured) == (3, 2)
    assert summary.median_s == pytest.approx(2.6)
    assert (summary.min_s, summary.max_s) == (2.2, 3.0)
    assert summary.writable_median_s == pytest.approx(1.7)
    assert summary.reported_median_s == 2.2
    empty = rf.summarize([sample("s", 1, None, None)])
    assert (empty.median_s, empty.min_s, empty.max_s) == (None, None, None)


def test_a_marker_is_lost_when_missing_after_the_failover_or_after_the_restore() -> None:
    assert not sample("s", 1, 1.0, 1.0).marker_lost
    kept = rf.KillSample("s", 1, P, R, 1.0, 1.0, marker_kept=True, marker_survived=True)
    assert not kept.marker_lost
    assert rf.KillSample("s", 1, P, R, 1.0, 1.0, marker_kept=False).marker_lost
    assert rf.KillSample("s", 1, P, R, 1.0, 1.0, marker_kept=True, marker_survived=False).marker_lost


def test_table_and_verdict() -> None:
    second = rf.KillSample(
        "sentinel", 2, R, P, 1.3, 2.0, marker_kept=True, marker_survived=False, extra_failover_before=True
    )
    results = {
        "sentinel": [sample("sentinel", 1, 1.4, 2.2), second],
        "ours": [sample("ours", 1, 1.04, 1.03), sample("ours", 2, None, 1.1)],
    }
    summary = rf.summarize(results["sentinel"])
    assert (summary.extra_failovers, summary.markers_lost) == (1, 1)
    table = rf.format_table(results)
    assert (
        "sentinel |   2/2 |             2.100   2.000   2.200 |        1.350 |        2.100 |     1 |    1"
        in table
    )
    assert (
        "    ours |   1/2 |             1.040   1.040   1.040 |        1.040 |        1.065 |     0 |    0"
        in table
    )
    assert "ours/sentinel (failover medians): 0.495x" in table
    assert "ours: 1.040 (1.040/1.030), timeout (-/1.100)" in table
    outcome, value = rf.verdict(results)
    assert outcome == "MET"
    assert value == pytest.approx(1.04 / 2.1)
    slower = {**results, "ours": [sample("ours", 1, 3.0, 3.0)]}
    assert rf.verdict(slower)[0] == "MISSED"
    assert rf.verdict({"ours": results["ours"]}) == ("n/a", None)
    assert "ours/sentinel" not in rf.format_table({"ours": results["ours"]})


# ----------------------------------------------------------------------------------------- the CLI


def test_parser_defaults_and_checks() -> None:
    args = rf.build_parser().parse_args([])
    assert (args.kills, args.only, args.json, args.limit) == (5, None, None, 30.0)
    args = rf.build_parser().parse_args(["--kills", "2", "--only", "ours", "--json", "x.json"])
    assert (args.kills, args.only, args.json) == (2, "ours", Path("x.json"))
    for bad in (["--kills", "0"], ["--only", "etcd"], ["--limit", "-1"]):
        with pytest.raises(SystemExit):
            rf.build_parser().parse_args(bad)


def test_missing_tools_print_the_apt_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(rf, "missing_tools", lambda: ["redis-sentinel"])
    assert rf.main(["--kills", "1"]) == 2
    assert "apt-get install -y redis-server redis-sentinel" in capsys.readouterr().err
