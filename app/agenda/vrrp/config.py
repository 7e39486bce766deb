"""agenda-vrrpd's configuration: one YAML file, checked at start by the loader every service uses.

Keys mirror keepalived's (`virtual_router_id`, `advert_int`, `virtual_ipaddress`, `vrrp_script`'s
`interval`/`timeout`/`fall`/`rise`/`weight`, `notify_*`, `garp_master_*`) so an operator can
translate a keepalived.conf line by line. Cross-field rules the schema cannot express (a track
script that does not exist, two instances on one VRID and interface, a VIP listed twice) are
checked here too, each naming its key.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from agenda.common.config import Config, ConfigError, Field, SectionList, load_config, parse_hostport
from agenda.vrrp.packet import parse_address

DEFAULT_CONFIG_PATH: Final = "/etc/agenda/vrrp/vrrpd.yml"
CONFIG_ENV: Final = "AGENDA_VRRPD_CONFIG"


def _vip(value: str) -> None:
    try:
        parse_address(value)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address or address/prefix: {exc}") from None


def _ipv4_or_empty(value: str) -> None:
    if value:
        ipaddress.IPv4Address(value)


def _vips(values: tuple[str, ...]) -> None:
    for value in values:
        _vip(value)


def _peers(values: tuple[str, ...]) -> None:
    for value in values:
        ipaddress.IPv4Address(value)


def _command(value: str) -> None:
    if value:
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command: {exc}") from None
        if not argv:
            raise ValueError("empty command")


def _http_url(value: str) -> None:
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")


def _status_addr(value: str) -> Any:
    return parse_hostport(value, "status_addr") if value else None


TRACK_SCRIPT: Final = [
    Field("name", str, help="referred to by instances' track_scripts"),
    Field(
        "script",
        str,
        default="",
        validator=_command,
        help="the command, split like a shell would, run without a shell (or http_get)",
    ),
    Field(
        "http_get",
        str,
        default="",
        validator=_http_url,
        help="instead of a script: OK iff GET of this URL answers 2xx within timeout, checked in-process",
    ),
    Field("cafile", str, default="", help="http_get over https: the CA certificate to trust"),
    Field("interval", float, default=1.0, min=0.01, max=3600),
    Field("timeout", float, default=2.0, min=0.01, max=3600),
    Field("fall", int, default=1, min=1, max=1000),
    Field("rise", int, default=1, min=1, max=1000),
    Field("weight", int, default=0, min=-253, max=253),
]

INSTANCE: Final = [
    Field("name", str),
    Field("interface", str),
    Field("virtual_router_id", int, min=1, max=255),
    Field("priority", int, default=100, min=1, max=255),
    Field("advert_int", float, default=1.0, min=0.01, max=40.95),
    Field("virtual_ipaddress", list[str], validator=_vips),
    Field("preempt", bool, default=True),
    Field("preempt_delay", float, default=0.0, min=0, max=1000),
    Field("unicast_src_ip", str, default="", validator=_ipv4_or_empty),
    Field(
        "unicast_peers",
        list[str],
        default=(),
        validator=_peers,
    ),
    Field("track_scripts", list[str], default=()),
    Field("notify_master", str, default="", validator=_command),
    Field("notify_backup", str, default="", validator=_command),
    Field("notify_fault", str, default="", validator=_command),
    Field("notify_stop", str, default="", validator=_command),
    Field("notify", str, default="", validator=_command),
    Field("notify_timeout", float, default=10.0, min=0.1, max=3600),
    Field("garp_master_delay", float, default=5.0, min=0, max=3600),
    Field("garp_master_repeat", int, default=5, min=1, max=100),
    Field("garp_master_refresh", float, default=0.0, min=0, max=86400),
]

SCHEMA: Final = [
    Field("log_level", str, default="info", choices=("debug", "info", "warning", "error")),
    Field(
        "log_format",
        str,
        default="json",
        choices=("json", "plain"),
        help="json: one object per line, as every agenda service logs; plain: for a terminal",
    ),
    Field(
        "status_addr",
        str,
        default="127.0.0.1:9110",
        validator=_status_addr,
        help="HTTP address of /status and /metrics; empty to disable",
    ),
    SectionList("track_scripts", TRACK_SCRIPT),
    SectionList("instances", INSTANCE, min_items=1, max_items=255),
]


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike[str] | None = None, *, data: dict[str, Any] | None = None) -> Config:
    """Load and cross-check; ConfigError names the key at fault."""
    cfg = load_config(SCHEMA, path=Path(path) if path is not None else None, data=data)
    scripts: dict[str, int] = {}
    for index, script in enumerate(cfg.track_scripts):
        if bool(script.script) == bool(script.http_get):
            raise ConfigError(f"track_scripts.{index}.script", "give exactly one of script and http_get")
        if script.cafile and not script.http_get.startswith("https:"):
            raise ConfigError(f"track_scripts.{index}.cafile", "only an https http_get uses a cafile")
        if script.name in scripts:
            raise ConfigError(f"track_scripts.{index}.name", f"duplicate track script {script.name!r}")
        scripts[script.name] = index
    seen_names: set[str] = set()
    seen_routers: dict[tuple[str, int], int] = {}
    for index, instance in enumerate(cfg.instances):
        key = f"instances.{index}"
        if instance.name in seen_names:
            raise ConfigError(f"{key}.name", f"duplicate instance name {instance.name!r}")
        seen_names.add(instance.name)
        router = (instance.interface, instance.virtual_router_id)
        if router in seen_routers:
            raise ConfigError(
                f"{key}.virtual_router_id",
                f"instances.{seen_routers[router]} already runs VRID {router[1]} on {router[0]}",
            )
        seen_routers[router] = index
        if not instance.virtual_ipaddress:
            raise ConfigError(f"{key}.virtual_ipaddress", "at least one address is required")
        vips = [parse_address(v).ip for v in instance.virtual_ipaddress]
        if len(set(vips)) != len(vips):
            raise ConfigError(f"{key}.virtual_ipaddress", "an address is listed twice")
        for name in instance.track_scripts:
            if name not in scripts:
                raise ConfigError(f"{key}.track_scripts", f"no track script named {name!r} in track_scripts")
    return cfg
