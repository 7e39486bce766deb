"""``agenda-groups``: run one Group Service instance.

Settings: ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags, then ``AGENDA_GROUPS_*``
environment variables; anything wrong fails at start naming the key (exit 2). For gunicorn use the
factory ``agenda.groups.cli:wsgi()`` with ``AGENDA_GROUPS_CONFIG=FILE``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

import flask

from agenda.common.config import Config, ConfigError, Field, Section, existing_file, load_config
from agenda.common.logs import configure_logging
from agenda.users.cli import hostport_validator, serve, urls_validator

__all__ = ["SCHEMA", "build_app", "build_parser", "load", "main", "wsgi"]

_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_PREFIX: Final = "AGENDA_GROUPS"

SCHEMA: Final = [
    Field("listen", str, default="127.0.0.1:8200", validator=hostport_validator),
    Field("db_urls", list[str], validator=urls_validator, help="API base URL of every DB member"),
    Field("gateway_secret", str, secret=True, help="shared secret the gateway sends on every request"),
    Section(
        "tls",
        [
            Field("enabled", bool, default=True),
            Field("cert", str, default=None, validator=existing_file),
            Field("key", str, default=None, validator=existing_file),
            Field("ca", str, default=None, validator=existing_file),
        ],
    ),
    Field("log_level", str, default="INFO", choices=_LEVELS),
    Field("log_format", str, default="json", choices=("json", "plain")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenda-groups", description="Run one Agenda Group Service instance."
    )
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--db-url", action="append", metavar="URL", help="repeat per DB member")
    parser.add_argument("--gateway-secret", metavar="S", help="prefer the config file: argv is visible in ps")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (tests and labs only)")
    parser.add_argument("--tls-cert", metavar="FILE")
    parser.add_argument("--tls-key", metavar="FILE")
    parser.add_argument("--tls-ca", metavar="FILE")
    parser.add_argument("--log-level")
    parser.add_argument("--log-format", choices=("json", "plain"))
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in ("listen", "gateway_secret", "log_format"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.log_level is not None:
        data["log_level"] = args.log_level.upper()
    if args.db_url:
        data["db_urls"] = list(args.db_url)
    tls: dict[str, Any] = {}
    if args.no_tls:
        tls["enabled"] = False
    for name in ("cert", "key", "ca"):
        if getattr(args, f"tls_{name}") is not None:
            tls[name] = getattr(args, f"tls_{name}")
    if tls:
        data["tls"] = tls
    return data


def load(argv: Sequence[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    cfg = load_config(SCHEMA, path=args.config, data=_overrides(args), env_prefix=ENV_PREFIX)
    if cfg.tls.enabled:
        for name in ("cert", "key", "ca"):
            if cfg.tls[name] is None:
                raise ConfigError(f"tls.{name}", "required when TLS is enabled (or disable it with --no-tls)")
    if len(cfg.gateway_secret) < 16:
        raise ConfigError("gateway_secret", "must have at least 16 characters")
    return cfg


def build_app(cfg: Config) -> flask.Flask:
    from agenda.db.client import DBClient
    from agenda.groups.app import GroupDeps, create_app
    from agenda.groups.store import GroupStore
    from agenda.users.store import EventStore

    verify: bool | str = True
    cert: tuple[str, str] | None = None
    if cfg.tls.enabled:
        verify, cert = cfg.tls.ca, (cfg.tls.cert, cfg.tls.key)
    db = DBClient(list(cfg.db_urls), verify=verify, cert=cert)
    return create_app(
        GroupDeps(groups=GroupStore(db), events=EventStore(db), gateway_secret=cfg.gateway_secret)
    )


def wsgi() -> flask.Flask:
    """gunicorn factory: ``gunicorn 'agenda.groups.cli:wsgi()'`` with AGENDA_GROUPS_CONFIG=FILE."""
    path = os.environ.get("AGENDA_GROUPS_CONFIG")
    cfg = load(["--config", path] if path else [])
    configure_logging("agenda-groups", cfg.log_level, json=cfg.log_format == "json")
    return build_app(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-groups``; returns the exit status."""
    try:
        cfg = load(argv)
        app = build_app(cfg)
    except ConfigError as exc:
        print(f"agenda-groups: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("agenda-groups", cfg.log_level, json=cfg.log_format == "json")
    if cfg.log_level != "DEBUG":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return serve(app, cfg, "agenda-groups")


if __name__ == "__main__":
    sys.exit(main())
