"""agenda-db settings: flags, YAML file, precedence and start-up errors that name the key."""

from __future__ import annotations

import pytest

from agenda.common.config import ConfigError
from agenda.db.cli import load_settings, main
from agenda.db.errors import LeaderUnknown, OutcomeUnknown, ProposalFailed
from agenda.db.node import map_failure
from agenda.db.peers import Peer, parse_peer
from agenda.db.pysyncobj_adapter import FAIL_REASON

BASE = [
    "--node-id",
    "db1",
    "--raft-addr",
    "127.0.0.1:7001",
    "--api-addr",
    "127.0.0.1:8001",
    "--data-dir",
    "/srv/agenda-db",
    "--peer",
    "db2=127.0.0.1:7002,127.0.0.1:8002",
    "--peer",
    "db3=127.0.0.1:7003,127.0.0.1:8003",
    "--no-tls",
]


def error_key(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(argv)
    return info.value.key


def test_flags_only():
    settings = load_settings(BASE)
    assert settings.self_peer == Peer("db1", "127.0.0.1:7001", "127.0.0.1:8001")
    assert settings.peers == (
        Peer("db2", "127.0.0.1:7002", "127.0.0.1:8002"),
        Peer("db3", "127.0.0.1:7003", "127.0.0.1:8003"),
    )
    assert settings.fsync is True
    assert settings.tls_enabled is False
    assert settings.cluster_secret is None


def test_yaml_file_and_flags_override(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    config = tmp_path / "db.yaml"
    config.write_text(
        "node_id: db9\n"
        "raft_addr: 10.0.0.9:7000\n"
        "api_addr: 10.0.0.9:8000\n"
        "data_dir: /var/lib/agenda-db\n"
        "peers:\n"
        "  - db8=10.0.0.8:7000,10.0.0.8:8000\n"
        f"tls: {{cert: {cert}, key: {cert}, ca: {cert}}}\n"
        "cluster_secret: s3cret\n"
        "fsync: true\n"
    )
    settings = load_settings(["--config", str(config)])
    assert settings.self_peer.node_id == "db9"
    assert settings.peers == (Peer("db8", "10.0.0.8:7000", "10.0.0.8:8000"),)
    assert settings.tls_enabled is True
    assert settings.cluster_secret == "s3cret"
    overridden = load_settings(["--config", str(config), "--node-id", "db7", "--no-fsync", "--no-tls"])
    assert overridden.self_peer.node_id == "db7"
    assert overridden.fsync is False
    assert overridden.tls_enabled is False


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (["--raft-addr", "nohost"], "raft_addr"),
        (["--api-addr", "127.0.0.1:99999"], "api_addr"),
        (["--node-id", "bad id!"], "node_id"),
        (["--peer", "db4"], "peers"),
        (["--peer", "db4=127.0.0.1:7004"], "peers"),
        (["--peer", "db4=127.0.0.1:7004,nope"], "peers"),
        (["--peer", "db1=127.0.0.1:7004,127.0.0.1:8004"], "peers"),
        (["--peer", "db4=127.0.0.1:7002,127.0.0.1:8004"], "peers"),
        (["--api-addr", "127.0.0.1:7001"], "api_addr"),
        (["--proposal-timeout", "soon"], "proposal_timeout"),
        (["--history-limit", "0"], "history_limit"),
        (["--history-limit", "ten"], "history_limit"),
        (["--log-compaction-entries", "1"], "log_compaction_entries"),
        (["--log-compaction-entries", "2.5"], "log_compaction_entries"),
        (["--log-level", "chatty"], "log_level"),
    ],
)
def test_bad_values_name_the_key(change, key):
    argv = list(BASE)
    if change[0] == "--peer":
        argv += change
    else:
        index = argv.index(change[0]) if change[0] in argv else None
        if index is None:
            argv += change
        else:
            argv[index + 1] = change[1]
    assert error_key(argv) == key


def test_history_and_log_compaction_bounds_default_and_are_set_by_flag_or_file(tmp_path):
    defaults = load_settings(BASE)
    assert (defaults.history_limit, defaults.log_compaction_entries) == (10_000, 50_000)
    flagged = load_settings([*BASE, "--history-limit", "16", "--log-compaction-entries", "8"])
    assert (flagged.history_limit, flagged.log_compaction_entries) == (16, 8)
    config = tmp_path / "db.yaml"
    config.write_text("history_limit: 100\nlog_compaction_entries: 50\n")
    filed = load_settings([*BASE, "--config", str(config)])
    assert (filed.history_limit, filed.log_compaction_entries) == (100, 50)
    config.write_text("history_limit: -3\n")
    assert error_key([*BASE, "--config", str(config)]) == "history_limit"


def test_tls_requires_cert_key_ca():
    argv = [a for a in BASE if a != "--no-tls"]
    assert error_key(argv) == "tls.cert"


def test_missing_required_key_and_unknown_yaml_key(tmp_path):
    assert error_key(["--node-id", "db1"]) == "raft_addr"
    config = tmp_path / "db.yaml"
    config.write_text("node_id: db1\nraft_adr: 127.0.0.1:1\n")
    assert error_key(["--config", str(config)]) == "raft_adr"


def test_main_exits_2_with_the_key_on_stderr(capsys):
    assert main(["--node-id", "db1"]) == 2
    assert "raft_addr" in capsys.readouterr().err


def test_peers_split_on_commas_are_reassembled(tmp_path):
    # An environment variable or a flow-style string arrives as one comma-separated string.
    config = tmp_path / "db.yaml"
    config.write_text(
        "node_id: db1\nraft_addr: 127.0.0.1:7001\napi_addr: 127.0.0.1:8001\ndata_dir: /srv/agenda-db\n"
        "tls: {enabled: false}\n"
        'peers: "db2=127.0.0.1:7002,127.0.0.1:8002,db3=127.0.0.1:7003,127.0.0.1:8003"\n'
    )
    settings = load_settings(["--config", str(config)])
    assert [p.node_id for p in settings.peers] == ["db2", "db3"]


def test_parse_peer():
    assert parse_peer(" a = h:1 , h:2 ") == Peer("a", "h:1", "h:2")
    for bad in ("a", "a=h:1", "=h:1,h:2", "a=h:1,h:2,h:3"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_peer(bad)


def test_map_failure():
    assert isinstance(map_failure(FAIL_REASON.MISSING_LEADER), LeaderUnknown)
    assert isinstance(map_failure(FAIL_REASON.NOT_LEADER), LeaderUnknown)
    assert isinstance(map_failure(FAIL_REASON.QUEUE_FULL), ProposalFailed)
    for unknown in (
        "Timeout",
        FAIL_REASON.LEADER_CHANGED,
        FAIL_REASON.DISCARDED,
        FAIL_REASON.UNKNOWN_OUTCOME,
    ):
        error = map_failure(unknown)
        assert isinstance(error, OutcomeUnknown)
        assert error.outcome_known is False


def tls_files(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")  # the files are only checked for existence here; contents at start (_run)
    return ["--tls-cert", str(cert), "--tls-key", str(cert), "--tls-ca", str(cert)]


def test_raft_tls_follows_tls_unless_set(tmp_path):
    files = tls_files(tmp_path)
    with_tls = [a for a in BASE if a != "--no-tls"] + files
    assert load_settings(with_tls).raft_tls is True
    assert load_settings(BASE).raft_tls is False
    assert load_settings([*with_tls, "--no-raft-tls"]).raft_tls is False
    # Raft over TLS behind a plain HTTP API: what the benchmark compares against plain Raft.
    behind_plain_http = load_settings([*BASE, *files, "--raft-tls"])
    assert (behind_plain_http.raft_tls, behind_plain_http.tls_enabled) == (True, False)
    config = tmp_path / "db.yaml"
    config.write_text("raft_tls: false\n")
    assert load_settings(["--config", str(config), *with_tls]).raft_tls is False


def test_raft_tls_without_the_files_names_the_missing_one(tmp_path):
    assert error_key([*BASE, "--raft-tls"]) == "tls.cert"
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert error_key([*BASE, "--raft-tls", "--tls-cert", str(cert), "--tls-key", str(cert)]) == "tls.ca"
    config = tmp_path / "db.yaml"
    config.write_text("raft_tls: sometimes\n")
    assert error_key(["--config", str(config), *BASE]) == "raft_tls"


def test_raft_tls_flags_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        load_settings([*BASE, "--raft-tls", "--no-raft-tls"])
    assert "--no-raft-tls" in capsys.readouterr().err


def test_unusable_raft_tls_files_stop_the_start_naming_the_key(tmp_path, capsys):
    # --no-tls: nothing but Raft would read the certificate, and the member must still refuse to start.
    assert main([*BASE, *tls_files(tmp_path), "--raft-tls", "--data-dir", str(tmp_path / "data")]) == 2
    assert "tls.cert" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
