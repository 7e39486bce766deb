"""agenda-gossip's configuration: one YAML file, checked at start, every error naming its key.

One daemon per service instance (the gateway, the User Service, the Group Service on each host): it is
that instance's member of the cluster, carries its metadata (service, API URL, version, state), watches
its health, and writes the view it holds to ``view_file`` for the processes on the host that route by
it. The timers default to HashiCorp memberlist's LAN configuration.

The key file holds the key ring: one base64 AES key (16, 24 or 32 bytes) per line, the first sealing,
every one opening; ``#`` starts a comment. It is a secret, readable by the daemon alone, and is read
again on SIGHUP, which is how a key is rotated without a restart (see :mod:`agenda.gossip.keyring`).
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
from pathlib import Path
from typing import Any, Final

from agenda.common.config import Config, ConfigError, Field, load_config, parse_hostport, read_file
from agenda.common.service import TLS_FILES, log_fields, tls_section
from agenda.gossip.config import Config as Timers
from agenda.gossip.keyring import KEY_SIZES

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "SCHEMA", "config_path", "load", "read_keys", "timers"]

DEFAULT_CONFIG_PATH: Final = "/etc/agenda/gossip/gossip.yml"
CONFIG_ENV: Final = "AGENDA_GOSSIP_CONFIG"


def _hostport(key: str, *, any_port: bool = False) -> Any:
    def check(value: str) -> None:
        parse_hostport(value, key, allow_port_zero=any_port)

    return check


def _seeds(value: tuple[str, ...]) -> None:
    for index, seed in enumerate(value):
        try:
            parse_hostport(seed, f"seeds.{index}")
        except (ValueError, ConfigError) as exc:
            raise ValueError(f"seeds[{index}]: {exc}") from None


def _url_or_empty(value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")


SCHEMA: Final = [
    Field("name", str, default="", help="unique, stable across restarts (default: <host name>-<service>)"),
    Field("bind", str, validator=_hostport("bind", any_port=True), help="host:port, UDP and TCP"),
    Field("advertise", str, default="", help="host:port others reach (default: bind)"),
    Field("seeds", list[str], default=[], validator=_seeds, help="host:port of members to join through"),
    Field("keys_file", str, help="the key ring: base64 AES keys, one per line, the first sealing"),
    Field("label", str, default="agenda", help="the cluster's name, authenticated with every packet"),
    Field("service", str, help="what this member is: gateway, users, groups"),
    Field("api_url", str, default="", validator=_url_or_empty, help="where the service answers"),
    Field("version", str, default="", help="the service's version (default: the agenda package's)"),
    Field("view_file", str, default="", help="where the view is written for the host's routers"),
    Field("view_refresh_ms", int, default=1000, min=100, max=60_000, help="rewrite the view this often"),
    Field("health_url", str, default="", validator=_url_or_empty, help="the service's health check"),
    Field("health_interval_ms", int, default=500, min=50, max=60_000),
    Field("health_timeout_ms", int, default=1000, min=50, max=60_000),
    Field("health_failures", int, default=3, min=1, max=100, help="failed checks in a row: unhealthy"),
    tls_section("health_tls", help="mutual TLS to the service's health check"),
    Field("probe_interval_ms", int, default=1000, min=10, max=60_000),
    Field("probe_timeout_ms", int, default=500, min=5, max=60_000),
    Field("indirect_checks", int, default=3, min=0, max=16),
    Field("suspicion_mult", int, default=4, min=1, max=100),
    Field("gossip_interval_ms", int, default=200, min=10, max=60_000),
    Field("gossip_nodes", int, default=3, min=1, max=64),
    Field("push_pull_interval_s", float, default=30.0, min=0.1, max=3600.0),
    Field("leave_timeout_s", float, default=5.0, min=0.1, max=60.0),
    Field("seed_retry_interval_s", float, default=5.0, min=0.1, max=600.0, help="while alone"),
    *log_fields(),
]


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike[str] | None = None, *, data: dict[str, Any] | None = None) -> Config:
    """Load and cross-check; ConfigError names the key at fault. The key file must hold a valid ring."""
    cfg = load_config(SCHEMA, path=Path(path) if path is not None else None, data=data)
    if cfg.advertise:
        parse_hostport(cfg.advertise, "advertise")
    elif parse_hostport(cfg.bind, "bind", allow_port_zero=True)[1] == 0:
        raise ConfigError("advertise", "required when bind picks a port (port 0)")
    if cfg.probe_timeout_ms >= cfg.probe_interval_ms:
        raise ConfigError(
            "probe_timeout_ms", f"must be shorter than probe_interval_ms ({cfg.probe_interval_ms})"
        )
    if cfg.health_url.startswith("https://") and cfg["health_tls.enabled"]:
        for file in TLS_FILES:
            if cfg[f"health_tls.{file}"] is None:
                raise ConfigError(f"health_tls.{file}", "required for an https health_url")
    read_keys(cfg.keys_file)
    return cfg


def read_keys(path: str) -> list[bytes]:
    """The key ring in ``path``; ConfigError naming ``keys_file`` (and the line) when it is not one."""
    text = read_file("keys_file", path).decode("ascii", errors="replace")
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("keys_file", f"line {number} is not base64") from None
        if len(key) not in KEY_SIZES:
            raise ConfigError("keys_file", f"line {number}: an AES key is 16, 24 or 32 bytes, not {len(key)}")
        if key in keys:
            raise ConfigError("keys_file", f"line {number} repeats a key")
        keys.append(key)
    if not keys:
        raise ConfigError("keys_file", f"no key in {path}")
    return keys


def member_name(cfg: Config) -> str:
    return cfg.name or f"{socket.gethostname()}-{cfg.service}"


def advertised(cfg: Config) -> str:
    return cfg.advertise or cfg.bind


def version(cfg: Config) -> str:
    """The version announced: the configured one, else the installed agenda package's (the daemon runs
    from the same installation as the service, and restarts with it)."""
    if cfg.version:
        return cfg.version
    from agenda import __version__

    return __version__


def timers(cfg: Config) -> Timers:
    return Timers(
        probe_interval=cfg.probe_interval_ms / 1000,
        probe_timeout=cfg.probe_timeout_ms / 1000,
        indirect_checks=cfg.indirect_checks,
        suspicion_mult=cfg.suspicion_mult,
        gossip_interval=cfg.gossip_interval_ms / 1000,
        gossip_nodes=cfg.gossip_nodes,
        push_pull_interval=cfg.push_pull_interval_s,
        leave_timeout=cfg.leave_timeout_s,
        seed_retry_interval=cfg.seed_retry_interval_s,
    )
