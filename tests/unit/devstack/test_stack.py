"""A DevStack before it starts: the directory, the config files it writes and the checks it makes.

No process is started here; constructing a stack binds loopback sockets only to check its ports.
"""

import json
import stat
from pathlib import Path

import pytest
import yaml

from agenda.db import cli as db_cli
from agenda.devstack import DevStack, SetupError
from agenda.gateway import cli as gateway_cli
from agenda.groups import cli as groups_cli
from agenda.users import cli as users_cli

LOADERS = {
    "db": db_cli.load_settings,
    "users": users_cli.load,
    "groups": groups_cli.load,
    "gateway": gateway_cli.load,
}


def _config(stack: DevStack, name: str) -> dict:
    return yaml.safe_load((stack.directory / "config" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("tls", [True, False])
def test_every_config_file_is_accepted_by_its_own_service(tmp_path: Path, tls: bool) -> None:
    stack = DevStack(tmp_path, tls=tls)
    try:
        assert stack.names == [*(f"db{i}" for i in range(1, 6)), "users1", "users2", "groups1", "gateway"]
        for name in stack.names:
            path = stack.directory / "config" / f"{name}.yaml"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the files hold the secrets
            LOADERS[name.rstrip("0123456789")](["--config", str(path)])  # ConfigError would name the key
        scheme = "https" if tls else "http"
        assert all(url.startswith(f"{scheme}://127.0.0.1:") for url in stack.db_urls + stack.users_urls)
        assert stack.gateway_url.startswith(f"{scheme}://127.0.0.1:")
        assert (stack.ca_file is not None) == tls
        db1 = _config(stack, "db1")
        assert len(db1["peers"]) == 4
        assert db1["cluster_secret"] == stack.cluster_secret
        assert _config(stack, "users2")["db_urls"] == stack.db_urls
    finally:
        stack.stop()


def test_an_existing_cluster_replaces_the_db_members_and_settings_reach_the_config(tmp_path: Path) -> None:
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    stack = DevStack(
        tmp_path, tls=False, db_urls=urls, groups_instances=2, settings={"gateway": {"login_limit": 7}}
    )
    try:
        assert stack.names == ["users1", "users2", "groups1", "groups2", "gateway"]
        assert stack.db_urls == urls
        assert _config(stack, "groups2")["db_urls"] == urls
        gateway = _config(stack, "gateway")
        assert gateway["login_limit"] == 7
        assert gateway["groups_urls"] == stack.groups_urls
        assert gateway["tls"] == {"enabled": False}
    finally:
        stack.stop()


def test_a_second_run_keeps_ports_secrets_and_credentials_and_fresh_starts_over(tmp_path: Path) -> None:
    first = DevStack(tmp_path)
    first.stop()
    assert first.ca_file is not None
    first_ca = first.ca_file.read_bytes()
    (tmp_path / "data" / "db1").mkdir(parents=True)
    second = DevStack(tmp_path)
    second.stop()
    assert second.db_urls == first.db_urls
    assert second.users_urls == first.users_urls
    assert (second.gateway_secret, second.cluster_secret) == (first.gateway_secret, first.cluster_secret)
    assert second.ca_file is not None
    assert second.ca_file.read_bytes() == first_ca
    assert (tmp_path / "data" / "db1").is_dir()
    fresh = DevStack(tmp_path, fresh=True)
    fresh.stop()
    assert not (tmp_path / "data").exists()
    assert fresh.cluster_secret != first.cluster_secret
    assert fresh.ca_file is not None
    assert fresh.ca_file.read_bytes() != first_ca


def test_a_directory_in_use_or_not_made_by_agenda_dev_is_refused(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "dev")
    try:
        with pytest.raises(SetupError, match="in use by another running agenda-dev"):
            DevStack(tmp_path / "dev")
    finally:
        stack.stop()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for fresh in (False, True):
        with pytest.raises(SetupError, match="has files not made by agenda-dev"):
            DevStack(foreign, fresh=fresh)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_gateway_port_in_use_fails_before_anything_is_written(tmp_path: Path, listening: int) -> None:
    with pytest.raises(SetupError, match=f"cannot listen on 127.0.0.1:{listening} for the gateway"):
        DevStack(tmp_path, gateway_port=listening)
    assert not (tmp_path / "tls").exists()
    DevStack(tmp_path).stop()  # the failed attempt released the directory


def test_an_internal_port_taken_since_the_last_run_is_named(tmp_path: Path, listening: int) -> None:
    DevStack(tmp_path).stop()
    ports = json.loads((tmp_path / "ports.json").read_text())
    ports["users2"] = listening
    (tmp_path / "ports.json").write_text(json.dumps(ports))
    with pytest.raises(SetupError, match=f"127.0.0.1:{listening} for users2"):
        DevStack(tmp_path)
