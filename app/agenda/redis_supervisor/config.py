"""agenda-redis-supervisor's configuration: one YAML file, checked at start, every error naming its key.

Sentinel's vocabulary where it has one (``down_after_ms``, a server's ``priority`` as
``replica-priority``: lower preferred, 0 never promoted), so an operator can carry a sentinel.conf
over. Secrets (the supervisor's Redis password) live in this file, readable by the supervisor alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Final

from agenda.common.config import Config, ConfigError, Field, SectionList, load_config, parse_hostport
from agenda.common.service import TLS_FILES, log_fields, required_urls_validator, tls_section

DEFAULT_CONFIG_PATH: Final = "/etc/agenda/redis-supervisor/supervisor.yml"
CONFIG_ENV: Final = "AGENDA_REDIS_SUPERVISOR_CONFIG"
PRIMARY_KEY: Final = "/system/redis/primary"
LOCK_KEY: Final = "/system/redis/supervisor"


def _hostport_or_empty(value: str) -> Any:
    return parse_hostport(value, "status_addr") if value else None


def _db_key(value: str) -> None:
    if not value.startswith("/system/"):
        raise ValueError(f"must be a key under /system/, got {value!r}")


SERVER: Final = [
    Field("host", str, help="the Redis server's address, as clients and replicas reach it"),
    Field("port", int, default=6379, min=1, max=65535),
    Field(
        "priority", int, default=100, min=0, max=1_000_000, help="replica-priority: lower preferred, 0 never"
    ),
]

SCHEMA: Final = [
    Field("name", str, default="", help="this supervisor's name in the lock (default: the host name)"),
    SectionList("servers", SERVER, min_items=1, max_items=64),
    Field("bootstrap", str, default="", help="host:port of the first primary when none is recorded"),
    Field("db_urls", list[str], validator=required_urls_validator, help="API base URL of every DB member"),
    Field("primary_key", str, default=PRIMARY_KEY, validator=_db_key),
    Field("lock_key", str, default=LOCK_KEY, validator=_db_key),
    Field(
        "lock_ttl", int, default=3, min=2, max=60, help="seconds; another takes over this long after a crash"
    ),
    Field("interval_ms", int, default=100, min=10, max=10_000, help="between two checks of every server"),
    Field("down_after_ms", int, default=1000, min=50, max=600_000, help="failing this long = failed"),
    Field("timeout_ms", int, default=250, min=10, max=60_000, help="for one Redis command"),
    Field("redis_username", str, default="", help="ACL user (needs ping, role, info, replicaof, config)"),
    Field("redis_password", str, default="", secret=True),
    tls_section("redis_tls", help="TLS to the Redis servers (client certificate: the host's)"),
    tls_section("db_tls", help="mutual TLS to the DB members"),
    Field("status_addr", str, default="127.0.0.1:9121", validator=_hostport_or_empty),
    *log_fields(),
]


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def server_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def load(path: str | os.PathLike[str] | None = None, *, data: dict[str, Any] | None = None) -> Config:
    """Load and cross-check; ConfigError names the key at fault."""
    cfg = load_config(SCHEMA, path=Path(path) if path is not None else None, data=data)
    names: dict[str, int] = {}
    for index, server in enumerate(cfg.servers):
        name = server_name(server.host, server.port)
        if name in names:
            raise ConfigError(f"servers.{index}.host", f"{name} is servers.{names[name]} already")
        names[name] = index
    if cfg.bootstrap and cfg.bootstrap not in names:
        raise ConfigError("bootstrap", f"{cfg.bootstrap!r} is not one of servers ({', '.join(names)})")
    for section in ("redis_tls", "db_tls"):
        if cfg[f"{section}.enabled"]:
            for file in TLS_FILES:
                if cfg[f"{section}.{file}"] is None:
                    raise ConfigError(f"{section}.{file}", "required when TLS is enabled")
    if cfg.redis_username and not cfg.redis_password:
        raise ConfigError("redis_password", "required with redis_username")
    if cfg.down_after_ms < cfg.interval_ms:
        raise ConfigError("down_after_ms", f"must be at least interval_ms ({cfg.interval_ms})")
    return cfg


def supervisor_name(cfg: Config) -> str:
    return cfg.name or socket.gethostname()
