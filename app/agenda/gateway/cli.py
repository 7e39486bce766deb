"""``agenda-gateway``: run one API gateway instance.

Settings come from ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then flags, then
``AGENDA_GATEWAY_*`` environment variables; anything wrong fails at start naming the key (exit 2).
For gunicorn use the factory ``agenda.gateway.cli:wsgi()`` with ``AGENDA_GATEWAY_CONFIG=FILE``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, Final

import flask

from agenda.common.config import Config, ConfigError, Field, Section, existing_file, load_config
from agenda.common.service import (
    PerProcess,
    client_tls,
    configure_service_logging,
    hostport_validator,
    log_fields,
    require_gateway_secret,
    require_tls_files,
    serve_wsgi,
    tls_section,
    urls_validator,
    wsgi_app,
)

__all__ = [
    "SCHEMA",
    "LazyHub",
    "build_app",
    "build_parser",
    "load",
    "main",
    "parse_key_ring",
    "post_worker_init",
    "wsgi",
]

log = logging.getLogger("agenda.gateway")

ENV_PREFIX: Final = "AGENDA_GATEWAY"


def parse_key_ring(value: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``KID=PATH`` items as (kid, path) pairs; ValueError naming the item otherwise."""
    if not value:
        raise ValueError("at least one KID=PATH public key is required")
    ring = []
    for index, item in enumerate(value):
        kid, sep, path = item.partition("=")
        if not sep or not kid or not path:
            raise ValueError(f"item {index} must be KID=PATH, got {item!r}")
        if any(kid == known for known, _ in ring):
            raise ValueError(f"item {index}: key id {kid!r} appears twice")
        existing_file(path)
        ring.append((kid, path))
    return tuple(ring)


def _sha256_or_empty(value: str) -> None:
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be 64 lowercase hex digits (sha256sum of the token), or empty")


SCHEMA: Final = [
    Field("listen", str, default="127.0.0.1:8080", validator=hostport_validator),
    Field("users_urls", list[str], validator=urls_validator, help="base URL of every User Service instance"),
    Field(
        "groups_urls",
        list[str],
        default=(),
        validator=urls_validator,
        help="base URL of every Group Service instance",
    ),
    Field(
        "gossip_view",
        str,
        default="",
        help="the host's gossip view file: route to the instances alive in it (the *_urls: fallback)",
    ),
    Field(
        "admin_token_sha256",
        str,
        default="",
        validator=_sha256_or_empty,
        help="sha256sum of the operator's bearer token for /v1/cluster/* (empty: refuse all)",
    ),
    Field("public_keys", list[str], validator=parse_key_ring, help="KID=PATH of each token verification key"),
    Field("issuer", str, default="agenda-users"),
    Field("audience", str, default="agenda"),
    Field("gateway_secret", str, secret=True, help="shared secret sent to backends"),
    Field("login_limit", int, default=5, min=1, max=1000, help="login attempts per username+address"),
    Field("login_window", float, default=60.0, min=1.0, max=86400.0, help="seconds"),
    Field("backend_timeout", float, default=10.0, min=0.5, max=120.0),
    # On a LAN a connect answers within a millisecond or not at all (a crashed host): give up soon and
    # try another instance. It bounds the TLS handshake too.
    Field("backend_connect_timeout", float, default=1.0, min=0.05, max=30.0),
    tls_section(files=("cert", "key"), help="the public HTTPS listener"),
    tls_section("backend_tls", help="mutual TLS to the backends, the DB members and Redis"),
    Field(
        "db_urls",
        list[str],
        default=(),
        validator=urls_validator,
        help="DB members, where the Redis primary is recorded (needed with redis.enabled)",
    ),
    Section(
        "redis",
        [
            Field("enabled", bool, default=False, help="live notification streams over Redis Pub/Sub"),
            Field("username", str, default=None, help="the gateway's Redis ACL user"),
            Field("password", str, default=None, secret=True),
            Field("tls", bool, default=True, help="TLS to Redis with backend_tls's files"),
        ],
        help="where the notification streams' live messages come from (off: the streams poll the DB)",
    ),
    Section(
        "streams",
        [
            Field("heartbeat", float, default=15.0, min=0.5, max=300.0, help="seconds between keep-alives"),
            Field(
                "poll_interval",
                float,
                default=2.0,
                min=0.2,
                max=60.0,
                help="seconds between DB reads while Redis is not subscribed",
            ),
            Field("max_age", float, default=3600.0, min=1.0, max=86400.0, help="seconds a stream lasts"),
        ],
        help="GET /v1/notifications/stream (Server-Sent Events)",
    ),
    Section(
        "dav",
        [
            Field(
                "max_body",
                int,
                default=1024 * 1024,
                min=4096,
                max=64 * 1024 * 1024,
                help="bytes of a /dav request body (XML or iCalendar); a larger one is a 413",
            ),
            Field(
                "body_timeout",
                float,
                default=10.0,
                min=0.5,
                max=300.0,
                help="seconds a /dav request body may take to arrive; then 408",
            ),
            Field(
                "basic_cache_ttl",
                float,
                default=300.0,
                min=0.0,
                max=3600.0,
                help="seconds a verified Basic password is reused, never past its token (0: check each time)",
            ),
            Field(
                "basic_cache_size",
                int,
                default=10_000,
                min=1,
                max=1_000_000,
                help="verified Basic credentials kept (least recently used dropped first)",
            ),
        ],
        help="CalDAV under /dav, forwarded to the User Service; Basic credentials checked by its login",
    ),
    *log_fields(),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenda-gateway", description="Run one Agenda API gateway instance."
    )
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--users-url", action="append", metavar="URL")
    parser.add_argument("--groups-url", action="append", metavar="URL")
    parser.add_argument("--public-key", action="append", metavar="KID=PATH")
    parser.add_argument("--issuer")
    parser.add_argument("--audience")
    parser.add_argument("--gateway-secret", metavar="S", help="prefer the config file: argv is visible in ps")
    parser.add_argument("--login-limit")
    parser.add_argument("--login-window")
    parser.add_argument("--backend-timeout")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP everywhere (tests and labs only)")
    parser.add_argument("--log-level")
    parser.add_argument("--log-format", choices=("json", "plain"))
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in (
        "listen",
        "issuer",
        "audience",
        "gateway_secret",
        "login_limit",
        "login_window",
        "backend_timeout",
    ):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.log_level is not None:
        data["log_level"] = args.log_level.upper()
    if args.log_format is not None:
        data["log_format"] = args.log_format
    for flag, key in (
        ("users_url", "users_urls"),
        ("groups_url", "groups_urls"),
        ("public_key", "public_keys"),
    ):
        if getattr(args, flag):
            data[key] = list(getattr(args, flag))
    if args.no_tls:
        data["tls"] = {"enabled": False}
        data["backend_tls"] = {"enabled": False}
    return data


def load(argv: Sequence[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    cfg = load_config(SCHEMA, path=args.config, data=_overrides(args), env_prefix=ENV_PREFIX)
    if not cfg.users_urls:
        raise ConfigError("users_urls", "at least one URL is required")
    require_tls_files(cfg, "tls", ("cert", "key"))
    require_tls_files(cfg, "backend_tls")
    require_gateway_secret(cfg)
    if cfg.redis.enabled:
        if not cfg.db_urls:
            raise ConfigError(
                "db_urls", "required when redis.enabled is true (the primary is recorded there)"
            )
        for name in ("username", "password"):
            if not cfg.redis[name]:
                raise ConfigError(f"redis.{name}", "required when redis.enabled is true")
        if cfg.redis.tls and not cfg.backend_tls.enabled:
            raise ConfigError("redis.tls", "TLS to Redis uses backend_tls's files: enable backend_tls")
    return cfg


class LazyHub:
    """The process's `NotificationHub`, built and started on first use in the process that serves.

    gunicorn may import the application in its master and fork the workers: a thread started there
    would not exist in them (see `agenda.common.service.PerProcess`). `start()` builds it early (a
    worker's post-init hook); otherwise the first stream does.
    """

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._hub: PerProcess[Any] = PerProcess(self._build)

    def _build(self) -> Any:
        from agenda.db.client import DBClient
        from agenda.messaging import NotificationHub, RedisLocator

        cfg = self._cfg
        verify, cert = client_tls(cfg.backend_tls)
        db = DBClient(list(cfg.db_urls), verify=verify, cert=cert)
        files: dict[str, Any] = {}
        if cfg.redis.tls:
            tls = cfg.backend_tls
            files = {"ssl_ca_certs": tls.ca, "ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
        locator = RedisLocator(db, username=cfg.redis.username, password=cfg.redis.password, **files)
        return NotificationHub(locator).start()

    def start(self) -> None:
        self._hub.get()

    @property
    def live(self) -> bool:
        return bool(self._hub.get().live)

    def listen(self, user: str) -> Any:
        return self._hub.get().listen(user)

    def stats(self) -> dict[str, Any] | None:
        built = self._hub.built
        return None if built is None else built.stats()


def discovered(cfg: Config, service: str) -> dict[str, Any]:
    """HttpClient's ``discovery`` for `service`: the instances alive and serving in the gossip view,
    re-read when the file changes; the configured URLs stay the fallback while the view has none."""
    if not cfg.gossip_view:
        return {}
    from agenda.common.discovery import ViewFileDiscovery

    return {"discovery": ViewFileDiscovery(cfg.gossip_view, service, fallback=cfg[f"{service}_urls"])}


def build_app(cfg: Config) -> flask.Flask:
    from agenda.common.http import HttpClient
    from agenda.common.tokens import TokenVerifier, load_public_key
    from agenda.gateway.app import GatewayDeps, create_app
    from agenda.gateway.dav import BasicLoginCache, DavSettings
    from agenda.gateway.ratelimit import RateLimiter
    from agenda.gateway.streams import StreamSettings

    keys = {kid: load_public_key(path, "public_keys") for kid, path in cfg.public_keys}
    verify, cert = client_tls(cfg.backend_tls)
    # The instances are stateless: spread requests over them (each starts at the next instance).
    # The connect timeout also bounds the TLS handshake, which a loaded backend may be slow to finish.
    options: dict[str, Any] = {
        "timeout": (cfg.backend_connect_timeout, cfg.backend_timeout),
        "verify": verify,
        "cert": cert,
    }
    backends = {"users": HttpClient(list(cfg.users_urls), spread=True, **discovered(cfg, "users"), **options)}
    if cfg.groups_urls:
        backends["groups"] = HttpClient(
            list(cfg.groups_urls), spread=True, **discovered(cfg, "groups"), **options
        )
    deps = GatewayDeps(
        verifier=TokenVerifier(keys, cfg.issuer, cfg.audience),
        backends=backends,
        gateway_secret=cfg.gateway_secret,
        login_limiter=RateLimiter(cfg.login_limit, cfg.login_window),
        hub=LazyHub(cfg) if cfg.redis.enabled else None,
        admin_token_sha256=cfg.admin_token_sha256,
        gossip_view=cfg.gossip_view,
        streams=StreamSettings(
            heartbeat=cfg.streams.heartbeat,
            poll_interval=cfg.streams.poll_interval,
            max_age=cfg.streams.max_age,
        ),
        dav=DavSettings(max_body=cfg.dav.max_body, body_timeout=cfg.dav.body_timeout),
        dav_logins=BasicLoginCache(cfg.dav.basic_cache_ttl, cfg.dav.basic_cache_size),
    )
    return create_app(deps)


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook in each worker (the role's gunicorn settings call it).

    Starts the worker's notification hub now, not on its first stream, and ends the streams as soon as
    the worker is told to stop: a graceful stop waits for every request in flight, and a stream never
    finishes on its own. Clients reconnect with their Last-Event-ID and miss nothing.
    """
    from agenda.gateway.app import deps_of
    from agenda.gateway.streams import drain_when

    drain_when(lambda: not worker.alive)
    hub = deps_of(worker.wsgi).hub
    if hub is not None:
        hub.start()


def wsgi() -> flask.Flask:
    """gunicorn factory: ``gunicorn 'agenda.gateway.cli:wsgi()'`` with AGENDA_GATEWAY_CONFIG=FILE."""
    return wsgi_app("agenda-gateway", "AGENDA_GATEWAY_CONFIG", load, build_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-gateway``; returns the exit status."""
    try:
        cfg = load(argv)
        app = build_app(cfg)
        ssl_context = None
        if cfg.tls.enabled:
            from agenda.common.tls import server_context

            ssl_context = server_context(cfg.tls.cert, cfg.tls.key)
    except ConfigError as exc:
        print(f"agenda-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_service_logging("agenda-gateway", cfg)
    if not cfg.tls.enabled:
        log.warning("TLS is disabled: plain HTTP on the public listener and to backends")
    return serve_wsgi(app, cfg.listen, ssl_context, "agenda-gateway")


if __name__ == "__main__":
    sys.exit(main())
