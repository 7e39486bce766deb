"""``agenda-groups``: run one Group Service instance.

Settings: ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags, then ``AGENDA_GROUPS_*``
environment variables; anything wrong fails at start naming the key (exit 2). For gunicorn use the
factory ``agenda.groups.cli:wsgi()`` with ``AGENDA_GROUPS_CONFIG=FILE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final

import flask

from agenda.common.config import Config, Field, load_config
from agenda.common.service import (
    add_common_arguments,
    common_overrides,
    hostport_validator,
    log_fields,
    require_gateway_secret,
    require_tls_files,
    required_urls_validator,
    run_service,
    tls_section,
    wsgi_app,
)
from agenda.users.cli import serve

__all__ = ["SCHEMA", "build_app", "build_parser", "load", "main", "wsgi"]

ENV_PREFIX: Final = "AGENDA_GROUPS"

SCHEMA: Final = [
    Field("listen", str, default="127.0.0.1:8200", validator=hostport_validator),
    Field("db_urls", list[str], validator=required_urls_validator, help="API base URL of every DB member"),
    Field("gateway_secret", str, secret=True, help="shared secret the gateway sends on every request"),
    tls_section(),
    *log_fields(),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenda-groups", description="Run one Agenda Group Service instance."
    )
    add_common_arguments(parser)
    parser.add_argument("--db-url", action="append", metavar="URL", help="repeat per DB member")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data = common_overrides(args, ())
    if args.db_url:
        data["db_urls"] = list(args.db_url)
    return data


def load(argv: Sequence[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    cfg = load_config(SCHEMA, path=args.config, data=_overrides(args), env_prefix=ENV_PREFIX)
    require_tls_files(cfg)
    require_gateway_secret(cfg)
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
    return wsgi_app("agenda-groups", "AGENDA_GROUPS_CONFIG", load, build_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-groups``; returns the exit status."""
    return run_service("agenda-groups", argv, load, build_app, serve)


if __name__ == "__main__":
    sys.exit(main())
