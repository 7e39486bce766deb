"""`agenda-gossip`: run a member, check its configuration, show the membership it sees.

agenda-gossip [--config PATH] [run]                 in the foreground (systemd runs it so)
agenda-gossip [--config PATH] check-config          exit 0, or 2 with "gossip: config: <key>: <reason>"
agenda-gossip [--config PATH] members [--json]      the running member's view (from its view file)
agenda-gossip members --view FILE [--json]          the same, from any view file
agenda-gossip keygen                                a new key for the key file (base64, 32 bytes)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import sys
import time

from agenda.common.config import Config, ConfigError
from agenda.common.discovery import read_view
from agenda.common.logs import configure_logging
from agenda.gossip import settings

EXIT_USAGE = 2
STALE_AFTER = 10.0  # seconds: the daemon rewrites its view every view_refresh_ms (1 s by default)


def _fail(message: str) -> int:
    print(f"gossip: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(cfg: Config) -> int:
    from agenda.gossip.daemon import GossipDaemon

    configure_logging("agenda-gossip", cfg.log_level, json=cfg.log_format == "json")
    try:
        daemon = GossipDaemon(cfg)
    except OSError as exc:
        return _fail(f"cannot bind {cfg.bind}: {exc.strerror or exc}")
    daemon.install_signal_handlers()
    try:
        daemon.run()
    except RuntimeError as exc:
        logging.getLogger("agenda.gossip").error("exiting: %s", exc)
        return 1
    return 0


def _members(path: str, as_json: bool) -> int:
    try:
        member, written, members = read_view(path)
    except OSError as exc:
        return _fail(f"no view at {path} ({exc.strerror or exc}): is agenda-gossip running?")
    except ValueError as exc:
        return _fail(f"{path} is not a view file: {exc}")
    age = time.time() - written
    if as_json:
        rows = [dataclasses.asdict(m) for m in members]
        print(json.dumps({"member": member, "age_s": round(age, 3), "members": rows}, indent=2))
        return 0
    stale = "  (STALE: is agenda-gossip running?)" if age > STALE_AFTER else ""
    print(f"view of {member}, written {age:.1f} s ago{stale}")
    header = ("NAME", "STATUS", "INCARNATION", "SERVICE", "STATE", "VERSION", "ADDRESS", "API URL")
    rows_text = [
        (m.name, m.status, str(m.incarnation), m.service, m.state, m.version or "-", m.addr, m.api_url or "-")
        for m in members
    ]
    widths = [max(len(row[i]) for row in (header, *rows_text)) for i in range(len(header))]
    for row in (header, *rows_text):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agenda-gossip", description="SWIM membership of the Agenda services"
    )
    parser.add_argument(
        "--config", help=f"YAML file (default ${settings.CONFIG_ENV} or {settings.DEFAULT_CONFIG_PATH})"
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the member in the foreground (the default)")
    commands.add_parser("check-config", help="validate the configuration file and the key file")
    members = commands.add_parser("members", help="the membership as the running member sees it")
    members.add_argument("--view", help="a view file (default: the configuration's view_file)")
    members.add_argument("--json", action="store_true")
    commands.add_parser("keygen", help="print a new random key for the key file")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        print(base64.b64encode(os.urandom(32)).decode())
        return 0
    if args.command == "members" and args.view:
        return _members(args.view, args.json)
    try:
        cfg = settings.load(settings.config_path(args.config))
    except (ConfigError, OSError) as exc:
        return _fail(f"config: {exc}")
    if args.command == "check-config":
        print("gossip: configuration OK")
        return 0
    if args.command == "members":
        if not cfg.view_file:
            return _fail("view_file is empty in the configuration: pass --view FILE")
        return _members(cfg.view_file, args.json)
    return _run(cfg)


if __name__ == "__main__":
    sys.exit(main())
