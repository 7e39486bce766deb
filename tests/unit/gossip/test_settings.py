"""agenda-gossip's configuration: every bad value fails at start naming its key; the key file's rules."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from agenda.common.config import ConfigError
from agenda.gossip import settings
from agenda.gossip.daemon import view_members
from agenda.gossip.member import Member, Meta, Status


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "gossip.keys"
    path.write_text(f"# the ring\n{key()}\n\n{key()}  # the next one\n")
    return path


def base(keys_file: Path, **over: Any) -> dict[str, Any]:
    return {"bind": "10.0.0.1:7946", "keys_file": str(keys_file), "service": "users", **over}


def test_a_good_configuration_loads_with_memberlists_timers(keys_file: Path) -> None:
    cfg = settings.load(data=base(keys_file, seeds=["10.0.0.2:7946", "[fd00::3]:7946"]))
    timers = settings.timers(cfg)
    assert (timers.probe_interval, timers.probe_timeout, timers.indirect_checks) == (1.0, 0.5, 3)
    assert (timers.suspicion_mult, timers.gossip_interval, timers.gossip_nodes) == (4, 0.2, 3)
    assert timers.push_pull_interval == 30.0
    assert settings.advertised(cfg) == "10.0.0.1:7946"
    assert settings.member_name(cfg).endswith("-users")
    assert len(settings.read_keys(cfg.keys_file)) == 2


@pytest.mark.parametrize(
    ("over", "key_name"),
    [
        ({"bind": "nowhere"}, "bind"),
        ({"bind": "0.0.0.0:0"}, "advertise"),
        ({"advertise": "10.0.0.1"}, "advertise"),
        ({"seeds": ["10.0.0.2:7946", "10.0.0.3"]}, "seeds"),
        ({"probe_timeout_ms": 1000}, "probe_timeout_ms"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"health_url": "https://127.0.0.1:7200/v1/health"}, "health_tls.cert"),
        ({"suspicion_mult": 0}, "suspicion_mult"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(keys_file: Path, over: dict[str, Any], key_name: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings.load(data=base(keys_file, **over))
    assert str(info.value).startswith(key_name), str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("not base64!\n", "line 1 is not base64"),
        (base64.b64encode(b"x" * 20).decode() + "\n", "line 1: an AES key is 16, 24 or 32 bytes, not 20"),
    ],
)
def test_a_bad_key_file_is_refused_naming_the_line(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ConfigError, match=reason) as info:
        settings.read_keys(str(path))
    assert info.value.key == "keys_file"


def test_a_repeated_key_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    one = key()
    path = tmp_path / "keys"
    path.write_text(f"{one}\n{one}\n")
    with pytest.raises(ConfigError, match="line 2 repeats a key"):
        settings.read_keys(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        settings.read_keys(str(tmp_path / "absent"))


def test_the_view_lists_every_member_by_name_with_its_metadata() -> None:
    meta = Meta(service="users", api_url="https://h:7200", version="2", state="draining")
    members = {
        "b": Member("b", "10.0.0.2:7946", 7, Status.SUSPECT, meta, 0.0),
        "a": Member("a", "10.0.0.1:7946", 3, Status.ALIVE, Meta(service="gateway"), 0.0),
    }
    view = view_members(members)
    assert [m.name for m in view] == ["a", "b"]
    assert (view[1].status, view[1].incarnation, view[1].state, view[1].api_url) == (
        "suspect",
        7,
        "draining",
        "https://h:7200",
    )
