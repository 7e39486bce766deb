"""``agenda-users``: run one User Service instance.

Settings come from ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags (which override it),
then ``AGENDA_USERS_*`` environment variables. Anything wrong fails at start naming the key (exit 2).
With ``redis.enabled`` every committed notification is also published on Redis, in the background
(`agenda.common.service.redis_section`); off, the service never touches Redis.

``main`` serves with Werkzeug's threaded server; for gunicorn use the factory ``agenda.users.cli:wsgi()``,
which reads the file named by ``AGENDA_USERS_CONFIG`` (plus the environment overrides).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

import flask

from agenda.common.config import Config, Field, existing_file
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

ENV_PREFIX: Final = "AGENDA_USERS"

SCHEMA: Final = [
    *backend_fields("127.0.0.1:8100"),
    Field("signing_key", str, validator=existing_file, help="PEM Ed25519 private key for access tokens"),
    Field("key_id", str, default="k1", help="kid written in token headers"),
    Field("issuer", str, default="agenda-users"),
    Field("audience", str, default="agenda"),
    Field("token_ttl", int, default=3600, min=60, max=86400),
    tls_section(),
    redis_section(),
    *log_fields(),
]
_TOKEN_SETTINGS: Final = ("signing_key", "key_id", "issuer", "audience", "token_ttl")


def build_parser() -> argparse.ArgumentParser:
    parser = backend_parser("agenda-users", "Run one Agenda User Service instance.")
    parser.add_argument("--signing-key", metavar="FILE")
    parser.add_argument("--key-id")
    parser.add_argument("--issuer")
    parser.add_argument("--audience")
    parser.add_argument("--token-ttl", metavar="SECONDS")
    return parser


def load(argv: Sequence[str] | None = None) -> Config:
    return load_backend_config(build_parser(), argv, SCHEMA, ENV_PREFIX, _TOKEN_SETTINGS)


def build_app(cfg: Config) -> flask.Flask:
    """The WSGI app for `cfg` (key files are loaded here, so errors name their key)."""
    from agenda.calendar.store import EventStore
    from agenda.common.tokens import TokenIssuer, load_private_key
    from agenda.db.client import DBClient
    from agenda.users.app import Deps, create_app

    private_key = load_private_key(cfg.signing_key, "signing_key")
    verify, cert = client_tls(cfg.tls)
    db = DBClient(list(cfg.db_urls), verify=verify, cert=cert)
    issuer = TokenIssuer(private_key, cfg.key_id, cfg.issuer, cfg.audience, cfg.token_ttl)
    announce, close = notification_announcer(db, cfg)
    store = EventStore(db, announce=announce)
    app = create_app(Deps(store=store, issuer=issuer, gateway_secret=cfg.gateway_secret))
    on_shutdown(app, close)
    return app


def wsgi() -> flask.Flask:
    """gunicorn factory: ``gunicorn 'agenda.users.cli:wsgi()'`` with AGENDA_USERS_CONFIG=FILE."""
    return wsgi_app("agenda-users", "AGENDA_USERS_CONFIG", load, build_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-users``; returns the exit status."""
    return run_service("agenda-users", argv, load, build_app, serve)


if __name__ == "__main__":
    sys.exit(main())
