"""``agenda-users``: run one User Service instance.

Settings come from ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags (which override it),
then ``AGENDA_USERS_*`` environment variables. Anything wrong fails at start naming the key (exit 2).

``main`` serves with Werkzeug's threaded server; for gunicorn use the factory ``agenda.users.cli:wsgi()``,
which reads the file named by ``AGENDA_USERS_CONFIG`` (plus the environment overrides).
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

import flask

from agenda.common.config import Config, ConfigError, Field, existing_file, load_config, parse_hostport
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

__all__ = ["SCHEMA", "build_app", "build_parser", "load", "main", "wsgi"]

log = logging.getLogger("agenda.users")

ENV_PREFIX: Final = "AGENDA_USERS"


SCHEMA: Final = [
    Field(
        "listen", str, default="127.0.0.1:8100", validator=hostport_validator, help="HOST:PORT to serve on"
    ),
    Field("db_urls", list[str], validator=required_urls_validator, help="API base URL of every DB member"),
    Field("signing_key", str, validator=existing_file, help="PEM Ed25519 private key for access tokens"),
    Field("key_id", str, default="k1", help="kid written in token headers"),
    Field("issuer", str, default="agenda-users"),
    Field("audience", str, default="agenda"),
    Field("token_ttl", int, default=3600, min=60, max=86400),
    Field("gateway_secret", str, secret=True, help="shared secret the gateway sends on every request"),
    tls_section(),
    *log_fields(),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agenda-users", description="Run one Agenda User Service instance.")
    add_common_arguments(parser)
    parser.add_argument("--db-url", action="append", metavar="URL", help="repeat per DB member")
    parser.add_argument("--signing-key", metavar="FILE")
    parser.add_argument("--key-id")
    parser.add_argument("--issuer")
    parser.add_argument("--audience")
    parser.add_argument("--token-ttl", metavar="SECONDS")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data = common_overrides(args, ("signing_key", "key_id", "issuer", "audience", "token_ttl"))
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
    """The WSGI app for `cfg` (key files are loaded here, so errors name their key)."""
    from agenda.db.client import DBClient
    from agenda.users.app import Deps, create_app
    from agenda.users.store import EventStore
    from agenda.users.tokens import TokenIssuer, load_private_key

    private_key = load_private_key(cfg.signing_key, "signing_key")
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    if cfg.tls.enabled:
        verify, cert = cfg.tls.ca, (cfg.tls.cert, cfg.tls.key)
    db = DBClient(list(cfg.db_urls), verify=verify, cert=cert)
    issuer = TokenIssuer(private_key, cfg.key_id, cfg.issuer, cfg.audience, cfg.token_ttl)
    return create_app(Deps(store=EventStore(db), issuer=issuer, gateway_secret=cfg.gateway_secret))


def wsgi() -> flask.Flask:
    """gunicorn factory: ``gunicorn 'agenda.users.cli:wsgi()'`` with AGENDA_USERS_CONFIG=FILE."""
    return wsgi_app("agenda-users", "AGENDA_USERS_CONFIG", load, build_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-users``; returns the exit status."""
    return run_service("agenda-users", argv, load, build_app, serve)


def serve(app: flask.Flask, cfg: Config, name: str) -> int:
    """Serve `app` on cfg.listen (mutual TLS when cfg.tls.enabled) until SIGTERM/SIGINT."""
    from agenda.common.tls import server_context

    ssl_context = None
    if cfg.tls.enabled:
        try:
            ssl_context = server_context(cfg.tls.cert, cfg.tls.key, cfg.tls.ca, require_client_cert=True)
        except ConfigError as exc:
            print(f"{name}: configuration error: {exc}", file=sys.stderr)
            return 2
    else:
        log.warning("TLS is disabled: plain HTTP, trusting the gateway secret alone")
    return serve_wsgi(app, cfg.listen, ssl_context, name)


def serve_wsgi(app: flask.Flask, listen: str, ssl_context: ssl.SSLContext | None, name: str) -> int:
    """Serve `app` on `listen` until SIGTERM/SIGINT (threaded, keep-alive connections); exit status.

    Keep-alive matters twice here: the gateway reuses its mutual-TLS connections to the backends, and
    clients reuse theirs to the gateway, instead of paying a TLS handshake for every request.
    """
    from agenda.common.httpserver import make_keepalive_server

    host, port = parse_hostport(listen)
    try:
        server = make_keepalive_server(host, port, app, ssl_context=ssl_context)
    except OSError as exc:
        logging.getLogger(name).error("cannot listen on %s: %s", listen, exc)
        return 1

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    logging.getLogger(name).info("%s listening on %s", name, listen)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
