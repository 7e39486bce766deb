"""``agenda-groups``: run one Group Service instance.

Settings: ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags, then ``AGENDA_GROUPS_*``
environment variables; anything wrong fails at start naming the key (exit 2). For gunicorn use the
factory ``agenda.groups.cli:wsgi()`` with ``AGENDA_GROUPS_CONFIG=FILE``. The optional ``redis``
section publishes committed notifications on Redis, as the User Service does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

import flask

from agenda.common.config import Config
from agenda.common.service import (
    backend_fields,
    backend_parser,
    client_tls,
    load_backend_config,
    log_fields,
    notification_announcer,
    on_shutdown,
    redis_section,
    run_service,
    serve,
    tls_section,
    wsgi_app,
)

__all__ = ["SCHEMA", "build_app", "build_parser", "load", "main", "wsgi"]

ENV_PREFIX: Final = "AGENDA_GROUPS"

SCHEMA: Final = [*backend_fields("127.0.0.1:8200"), tls_section(), redis_section(), *log_fields()]


def build_parser() -> argparse.ArgumentParser:
    return backend_parser("agenda-groups", "Run one Agenda Group Service instance.")


def load(argv: Sequence[str] | None = None) -> Config:
    return load_backend_config(build_parser(), argv, SCHEMA, ENV_PREFIX)


def build_app(cfg: Config) -> flask.Flask:
    from agenda.calendar.store import EventStore
    from agenda.db.client import DBClient
    from agenda.groups.app import GroupDeps, create_app
    from agenda.groups.store import GroupStore

    verify, cert = client_tls(cfg.tls)
    db = DBClient(list(cfg.db_urls), verify=verify, cert=cert)
    announce, close = notification_announcer(db, cfg)
    groups, events = GroupStore(db, announce=announce), EventStore(db, announce=announce)
    app = create_app(GroupDeps(groups=groups, events=events, gateway_secret=cfg.gateway_secret))
    on_shutdown(app, close)
    return app


def wsgi() -> flask.Flask:
    """gunicorn factory: ``gunicorn 'agenda.groups.cli:wsgi()'`` with AGENDA_GROUPS_CONFIG=FILE."""
    return wsgi_app("agenda-groups", "AGENDA_GROUPS_CONFIG", load, build_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-groups``; returns the exit status."""
    return run_service("agenda-groups", argv, load, build_app, serve)


if __name__ == "__main__":
    sys.exit(main())
