"""``agenda-db``: run one member of the DB cluster (Raft node + HTTP API) in a single process.

Settings come from ``--config FILE`` (YAML, keys as in :data:`SCHEMA`), then command-line flags (which
override the file). Anything wrong fails at start with a message naming the key, exit status 2. A journal
damaged in the middle (:class:`~agenda.db.journal_format.JournalCorrupted`) is exit status 3, with a logged
message naming the file, the offset and the recovery; any other failure to start is status 1.

The member's certificate (``tls.cert``/``tls.key``, checked against ``tls.ca``) serves both its HTTPS API
and, with ``raft_tls`` (on by default whenever ``tls.enabled`` is), its Raft links: see
:mod:`agenda.db.rafttls` for what that protects. ``raft_tls: false`` (``--no-raft-tls``) is for tests and
benchmarks; ``raft_tls: true`` with ``tls.enabled: false`` runs Raft over TLS behind a plain HTTP API
(how ``bench/db_vs_etcd.py --raft-tls-cost`` measures what TLS costs Raft alone).

The HTTP API is served inside the same process as the Raft node: the node must be a single process (one
Raft identity, one journal), which rules out pre-fork servers such as gunicorn, and a single process also
makes SIGSTOP/SIGKILL of "the member" mean exactly that. The server is an event loop in front of Werkzeug's
WSGI handler with HTTP/1.1 keep-alive (:mod:`agenda.common.loopserver`): one thread owns the connections
and proposes the plain writes itself (:class:`~agenda.db.api.fastput.LoopFastPath`), worker threads run
Flask for everything else.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from agenda.common.config import Config, ConfigError, Field, load_config, parse_hostport
from agenda.common.service import (
    hostport_validator,
    log_fields,
    require_tls_files,
    run_service,
    serve_until_signalled,
    tls_section,
)
from agenda.db.dump import DEFAULT_LOG_COMPACTION_ENTRIES
from agenda.db.peers import Peer, parse_peer, validate_node_id
from agenda.db.state import DEFAULT_HISTORY_LIMIT

__all__ = [
    "EXIT_JOURNAL_CORRUPTED",
    "SCHEMA",
    "Settings",
    "build_parser",
    "load_settings",
    "main",
    "overrides_from_args",
]

log = logging.getLogger("agenda.db")

EXIT_JOURNAL_CORRUPTED: Final = 3

# An item starts a new peer when it looks like "ID=": lets "a=h:1,h:2,b=h:3,h:4" (a string from an
# environment variable, split on commas by the config loader) be reassembled into whole peers.
_PEER_START: Final = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*=")


def _node_id(value: str) -> None:
    validate_node_id(value)


def _peers(value: tuple[str, ...]) -> tuple[Peer, ...]:
    items: list[str] = []
    for part in value:
        if items and not _PEER_START.match(part):
            items[-1] = f"{items[-1]},{part}"
        else:
            items.append(part)
    peers = []
    for index, item in enumerate(items):
        try:
            peers.append(parse_peer(item, check_hostport=hostport_validator))
        except ConfigError as exc:
            raise ValueError(f"item {index} ({item!r}): {exc.reason}") from None
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return tuple(peers)


SCHEMA: Final = [
    Field("node_id", str, validator=_node_id, help="this member's id, e.g. db1"),
    Field("raft_addr", str, validator=hostport_validator, help="HOST:PORT for Raft traffic"),
    Field("api_addr", str, validator=hostport_validator, help="HOST:PORT for the HTTP API"),
    Field("data_dir", str, help="directory for the Raft journal and snapshots"),
    Field("peers", list[str], default=(), validator=_peers, help="ID=RAFTHOST:PORT,APIHOST:PORT per member"),
    tls_section(),
    Field(
        "raft_tls",
        bool,
        default=None,
        help="Raft traffic over mutual TLS with tls.cert/key/ca (default: on when tls.enabled is)",
    ),
    Field(
        "cluster_secret",
        str,
        default=None,
        secret=True,
        help="also encrypts Raft traffic with a shared password (pysyncobj's; inside TLS when raft_tls)",
    ),
    Field("fsync", bool, default=True),
    Field("proposal_timeout", float, default=3.0, min=0.1, max=60.0),
    Field(
        "history_limit",
        int,
        default=DEFAULT_HISTORY_LIMIT,
        min=1,
        max=10_000_000,
        help="watch events kept in memory; a watch from an older revision is answered 410",
    ),
    Field(
        "log_compaction_entries",
        int,
        default=DEFAULT_LOG_COMPACTION_ENTRIES,
        min=2,  # pysyncobj's minimum
        max=10_000_000,
        help="compact the Raft log into a snapshot once it holds more entries than this",
    ),
    *log_fields(),
]


@dataclass(frozen=True)
class Settings:
    """Validated, cross-checked settings of one member."""

    self_peer: Peer
    peers: tuple[Peer, ...]
    data_dir: str
    tls_enabled: bool
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None
    raft_tls: bool
    cluster_secret: str | None
    fsync: bool
    proposal_timeout: float
    history_limit: int
    log_compaction_entries: int
    log_level: str
    log_format: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenda-db", description="Run one member of the Agenda DB cluster (Raft key-value store)."
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with the same keys; flags override it")
    parser.add_argument("--node-id", help="this member's id")
    parser.add_argument("--raft-addr", metavar="HOST:PORT")
    parser.add_argument("--api-addr", metavar="HOST:PORT")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument(
        "--peer",
        action="append",
        metavar="ID=RAFTHOST:PORT,APIHOST:PORT",
        help="another member (repeat per member; a member joining at run time names every current one); "
        "replaces the file's peers",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--no-tls", action="store_true", help="serve plain HTTP (tests and labs only)")
    tls.add_argument("--tls", action="store_true", help="serve HTTPS with mutual TLS (the default)")
    parser.add_argument("--tls-cert", metavar="FILE")
    parser.add_argument("--tls-key", metavar="FILE")
    parser.add_argument("--tls-ca", metavar="FILE")
    raft_tls = parser.add_mutually_exclusive_group()
    raft_tls.add_argument(
        "--raft-tls",
        action="store_true",
        help="Raft over mutual TLS with the --tls-* files (the default when TLS is on, even with --no-tls)",
    )
    raft_tls.add_argument(
        "--no-raft-tls", action="store_true", help="plain TCP between members (tests and benchmarks only)"
    )
    parser.add_argument("--cluster-secret", metavar="S", help="prefer the config file: argv is visible in ps")
    parser.add_argument(
        "--no-fsync", action="store_true", help="do not fsync the journal (faster, less safe)"
    )
    parser.add_argument("--proposal-timeout", metavar="SECONDS")
    parser.add_argument(
        "--history-limit", metavar="EVENTS", help=f"watch events kept (default {DEFAULT_HISTORY_LIMIT})"
    )
    parser.add_argument(
        "--log-compaction-entries",
        metavar="ENTRIES",
        help=f"snapshot the Raft log past this size (default {DEFAULT_LOG_COMPACTION_ENTRIES})",
    )
    parser.add_argument("--log-level", metavar="LEVEL")
    parser.add_argument("--log-format", choices=("json", "plain"))
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Turn parsed flags into a config overlay holding only what was given on the command line."""
    data: dict[str, Any] = {}
    for flag, key in (
        ("node_id", "node_id"),
        ("raft_addr", "raft_addr"),
        ("api_addr", "api_addr"),
        ("data_dir", "data_dir"),
        ("cluster_secret", "cluster_secret"),
        ("proposal_timeout", "proposal_timeout"),
        ("history_limit", "history_limit"),
        ("log_compaction_entries", "log_compaction_entries"),
        ("log_level", "log_level"),
        ("log_format", "log_format"),
    ):
        value = getattr(args, flag)
        if value is not None:
            data[key] = value.upper() if key == "log_level" else value
    if args.peer:
        data["peers"] = list(args.peer)
    if args.no_fsync:
        data["fsync"] = False
    tls: dict[str, Any] = {}
    if args.no_tls:
        tls["enabled"] = False
    if args.tls:
        tls["enabled"] = True
    for name in ("cert", "key", "ca"):
        value = getattr(args, f"tls_{name}")
        if value is not None:
            tls[name] = value
    if tls:
        data["tls"] = tls
    if args.raft_tls:
        data["raft_tls"] = True
    if args.no_raft_tls:
        data["raft_tls"] = False
    return data


def _settings_from(cfg: Config) -> Settings:
    self_peer = Peer(cfg.node_id, cfg.raft_addr, cfg.api_addr)
    peers: tuple[Peer, ...] = cfg.peers
    seen_ids = {self_peer.node_id}
    seen_addrs = {self_peer.raft_addr, self_peer.api_addr}
    if self_peer.raft_addr == self_peer.api_addr:
        raise ConfigError("api_addr", "must differ from raft_addr")
    for peer in peers:
        if peer.node_id in seen_ids:
            raise ConfigError(
                "peers", f"duplicate member id {peer.node_id!r} (ids must be unique, self included)"
            )
        for addr in (peer.raft_addr, peer.api_addr):
            if addr in seen_addrs:
                raise ConfigError("peers", f"address {addr} of {peer.node_id!r} is used twice")
            seen_addrs.add(addr)
        seen_ids.add(peer.node_id)
    require_tls_files(cfg)
    raft_tls = cfg.tls.enabled if cfg.raft_tls is None else cfg.raft_tls
    require_tls_files(
        cfg,
        enabled=raft_tls,
        reason="required by raft_tls (Raft over mutual TLS); or turn it off with --no-raft-tls",
    )
    return Settings(
        self_peer=self_peer,
        peers=peers,
        data_dir=cfg.data_dir,
        tls_enabled=cfg.tls.enabled,
        tls_cert=cfg.tls.cert,
        tls_key=cfg.tls.key,
        tls_ca=cfg.tls.ca,
        raft_tls=raft_tls,
        cluster_secret=cfg.cluster_secret,
        fsync=cfg.fsync,
        proposal_timeout=cfg.proposal_timeout,
        history_limit=cfg.history_limit,
        log_compaction_entries=cfg.log_compaction_entries,
        log_level=cfg.log_level,
        log_format=cfg.log_format,
    )


def _load(argv: Sequence[str] | None) -> Config:
    args = build_parser().parse_args(argv)
    return load_config(SCHEMA, path=args.config, data=overrides_from_args(args))


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse flags, read the config file, validate everything; ConfigError naming the first bad key."""
    return _settings_from(_load(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-db``; returns the process exit status."""
    # The services' entry point: a ConfigError from loading or cross-checking is one line and status 2,
    # then logging is configured from the settings and the member runs.
    return run_service("agenda-db", argv, _load, _settings_from, _serve)


def _serve(settings: Settings, _cfg: Config, _name: str) -> int:
    return _run(settings)


# The interpreter's default, 5 ms, is how long a thread wanting the GIL waits before asking the holder to let
# go. The loop thread and the Raft tick thread both have work at once under load (the loop frames a burst of
# requests while acknowledgements reach the tick thread), and a 5 ms wait each time set much of the p99
# write latency at 64 clients (44 ms; 27 ms with 1 ms, on 2 cores).
GIL_SWITCH_INTERVAL: Final = 0.001


def _run(settings: Settings) -> int:
    # Imported here so `agenda-db --help` and config errors stay fast and free of side effects.
    from agenda.common.loopserver import make_loop_server
    from agenda.common.tls import server_context
    from agenda.db.api import Forwarder, create_app
    from agenda.db.api.fastput import LoopFastPath
    from agenda.db.journal_format import JournalCorrupted
    from agenda.db.node import Node
    from agenda.db.rafttls import RaftTls, raft_tls_contexts

    ssl_context = None
    raft_tls: RaftTls | None = None
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    try:
        if settings.tls_enabled or settings.raft_tls:
            if settings.tls_cert is None or settings.tls_key is None or settings.tls_ca is None:
                raise ConfigError("tls", "cert, key and ca are required when TLS is enabled")
            if settings.tls_enabled:
                ssl_context = server_context(
                    settings.tls_cert, settings.tls_key, settings.tls_ca, require_client_cert=True
                )
                verify = settings.tls_ca
                cert = (settings.tls_cert, settings.tls_key)
            if settings.raft_tls:
                raft_tls = raft_tls_contexts(settings.tls_cert, settings.tls_key, settings.tls_ca)
    except ConfigError as exc:
        print(f"agenda-db: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.tls_enabled:
        log.warning("TLS is disabled: the HTTP API is plain text")
    if raft_tls is None:
        if settings.cluster_secret is None:
            log.warning(
                "raft_tls is off and no cluster_secret: Raft traffic is neither authenticated nor encrypted"
            )
        else:
            log.warning("raft_tls is off: Raft traffic is protected by the shared cluster_secret only")

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    host, port = parse_hostport(settings.self_peer.api_addr)
    try:
        server = make_loop_server(host, port, _placeholder_app, ssl_context=ssl_context)
    except OSError as exc:
        log.error("cannot listen on %s: %s", settings.self_peer.api_addr, exc)
        return 1

    node = Node(
        settings.self_peer,
        settings.peers,
        settings.data_dir,
        cluster_secret=settings.cluster_secret,
        raft_tls=raft_tls,
        fsync=settings.fsync,
        proposal_timeout=settings.proposal_timeout,
        history_limit=settings.history_limit,
        log_compaction_entries=settings.log_compaction_entries,
    )
    forwarder = Forwarder(
        "https" if settings.tls_enabled else "http",
        (1.0, settings.proposal_timeout + 2.0),
        verify=verify,
        cert=cert,
    )
    try:
        node.start()
    except JournalCorrupted as exc:
        # Not a bug: the message is the diagnosis and the recovery, so no traceback.
        log.error("refusing to start: %s", exc)
        server.server_close()
        return EXIT_JOURNAL_CORRUPTED
    except (RuntimeError, OSError) as exc:
        log.error("cannot start the Raft node: %s", exc)
        server.server_close()
        return 1
    server.app = app = create_app(node, forwarder)
    server.fast_handler = LoopFastPath(
        app, app.extensions["agenda_db"], server.call_soon, server.server_version
    )
    log.info(
        "agenda-db serving",
        extra={"node_id": settings.self_peer.node_id, "api_addr": settings.self_peer.api_addr},
    )

    def stop() -> None:
        node.stop()
        forwarder.close()

    return serve_until_signalled(server, log, cleanup=stop)


def _placeholder_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Never actually served: replaced by the real app before serve_forever starts."""
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]


if __name__ == "__main__":
    sys.exit(main())
