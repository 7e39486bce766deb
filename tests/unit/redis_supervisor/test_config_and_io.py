"""The supervisor's configuration checks and its reading of ROLE replies and DB records (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from agenda.common.config import ConfigError
from agenda.messaging.errors import MalformedRecord
from agenda.redis_supervisor import config
from agenda.redis_supervisor.daemon import parse_record
from agenda.redis_supervisor.redis_io import Garbage, parse_role

BASE: dict[str, Any] = {
    "servers": [{"host": "10.0.0.11", "port": 6379}, {"host": "10.0.0.12", "port": 6379, "priority": 0}],
    "db_urls": ["https://10.0.0.11:2379"],
    "redis_tls": {"enabled": False},
    "db_tls": {"enabled": False},
}


def load(**changes: Any) -> Any:
    return config.load(data={**BASE, **changes})


def test_a_valid_configuration_has_sentinel_like_defaults():
    cfg = load(bootstrap="10.0.0.11:6379")
    assert (cfg.down_after_ms, cfg.interval_ms, cfg.lock_ttl) == (1000, 100, 3)
    assert cfg.servers[1].priority == 0
    assert cfg.primary_key == "/system/redis/primary"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"servers": []}, "servers"),
        ({"servers": [{"port": 6379}]}, "servers.0.host"),
        ({"servers": [{"host": "a", "port": 70000}]}, "servers.0.port"),
        ({"servers": [{"host": "a"}, {"host": "a", "port": 6379}]}, "servers.1.host"),
        ({"bootstrap": "10.0.0.99:6379"}, "bootstrap"),
        ({"db_urls": []}, "db_urls"),
        ({"primary_key": "/calendar/x"}, "primary_key"),
        ({"down_after_ms": 50, "interval_ms": 100}, "down_after_ms"),
        ({"redis_username": "supervisor"}, "redis_password"),
        ({"redis_tls": {"enabled": True}}, "redis_tls.cert"),
        ({"lock_ttl": 1}, "lock_ttl"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_key(changes: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as refused:
        load(**changes)
    assert str(refused.value).startswith(f"{key}:"), str(refused.value)


def test_a_missing_key_is_named():
    data = dict(BASE)
    del data["db_urls"]
    with pytest.raises(ConfigError, match=r"^db_urls:"):
        config.load(data=data)


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        (["master", 3129659, [["127.0.0.1", "9001", "3129242"]]], ("master", None, False, 3129659)),
        (["slave", "127.0.0.1", 9000, "connected", 3167038], ("slave", "127.0.0.1:9000", True, 3167038)),
        (["slave", "10.0.0.11", 6379, "connect", -1], ("slave", "10.0.0.11:6379", False, 0)),
    ],
)
def test_role_replies_are_read(reply: Any, parsed: tuple[Any, ...]):
    assert parse_role(reply) == parsed


@pytest.mark.parametrize(
    "reply",
    [
        None,
        "OK",
        [],
        ["sentinel", ["mymaster"]],
        ["master"],
        ["slave", "h", "p", "connected", 1],
        ["slave", 5, 6379, "connected", 1],
        ["master", "many"],
        {"role": "master"},
    ],
)
def test_garbage_is_not_a_role(reply: Any):
    with pytest.raises(Garbage):
        parse_role(reply)


def test_records_are_checked_before_they_are_trusted():
    assert parse_record({"name": "10.0.0.12:6379", "host": "10.0.0.12", "port": 6379, "epoch": 4}).epoch == 4
    for bad in (
        None,
        [],
        {"host": "", "port": 1, "epoch": 1},
        {"host": "h", "port": 0, "epoch": 1},
        {"host": "h", "port": True, "epoch": 1},
        {"host": "h", "port": 1, "epoch": 0},
        {"host": "h", "port": 1},
    ):
        with pytest.raises(MalformedRecord):
            parse_record(bad)
