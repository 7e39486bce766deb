"""`agenda-vrrpd`: run the daemon, check its configuration, show its status, release its VIPs.

agenda-vrrpd [--config PATH] [run]            the daemon, in the foreground (systemd runs it so);
                                              SIGHUP re-executes it onto the code and configuration
                                              on disk, same PID, VIPs kept (systemd's ExecReload)
agenda-vrrpd [--config PATH] check-config     exit 0, or 2 with "vrrpd: config: <key>: <reason>"
agenda-vrrpd [--config PATH] status [--json]  what the running daemon reports
agenda-vrrpd [--config PATH] release          remove every configured VIP and, where one was held,
                                              send priority 0 for the dead master (systemd's ExecStopPost)
agenda-vrrpd check-http URL [--cafile F] [--timeout S]   a track script: exit 0 iff URL answers 2xx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from agenda.common.config import Config, ConfigError
from agenda.common.logs import configure_logging
from agenda.common.status_http import fetch_status
from agenda.vrrp import config as vrrp_config
from agenda.vrrp import handoff
from agenda.vrrp.scripts import http_ok

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"vrrpd: {message}", file=sys.stderr)
    return EXIT_USAGE


def _load(path: str | None) -> Config:
    return vrrp_config.load(vrrp_config.config_path(path))


def _take_handoff() -> handoff.HandOff | None:
    """What the previous process of this PID left before re-executing (SIGHUP), if anything.

    Removed from the environment before anything can inherit it; a value we cannot trust is
    logged and ignored, and the daemon starts as after a plain start (it never crashes on it)."""
    raw = handoff.take(os.environ)
    if raw is None:
        return None
    try:
        return handoff.decode(raw)
    except handoff.HandOffError as exc:
        logging.getLogger("agenda.vrrp").warning(
            "vrrp: ignoring %s (starting as after a plain start): %s", handoff.ENV, exc
        )
        return None


def _run(cfg: Config, config_file: str, reexec_args: list[str]) -> int:
    from agenda.vrrp import net
    from agenda.vrrp.daemon import Daemon, install_signal_handlers

    configure_logging("agenda-vrrpd", cfg.log_level.upper(), json=cfg.log_format == "json")
    # pyroute2 narrates every netlink message at debug level; our own debug lines are what matter.
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    daemon = Daemon(cfg, handoff=_take_handoff(), config_file=config_file, reexec_args=reexec_args)
    install_signal_handlers(daemon)
    try:
        daemon.run()
    except net.InterfaceError as exc:
        return _fail(str(exc))
    except PermissionError as exc:
        return _fail(f"not permitted ({exc}): agenda-vrrpd needs CAP_NET_RAW and CAP_NET_ADMIN")
    return 0


def _status(cfg: Config, as_json: bool) -> int:
    if not cfg.status_addr:
        return _fail("status_addr is empty in the configuration: the daemon serves no status")
    try:
        status = fetch_status(cfg.status_addr)
    except (OSError, ValueError) as exc:
        host, port = cfg.status_addr
        return _fail(f"no daemon answers at {host}:{port} ({exc})")
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    for inst in status["instances"]:
        counters = inst["counters"]
        print(
            f"{inst['name']}: {inst['state']} on {inst['interface']} vrid {inst['vrid']} "
            f"priority {inst['priority']} (base {inst['base_priority']}) advert_int {inst['advert_int']}s"
        )
        print(
            f"  master {inst['master_address'] or '-'}; VIPs {', '.join(inst['vips'])} "
            f"{'held here' if inst['holds_vips'] else 'not held here'}"
        )
        print(
            f"  adverts sent {counters['adverts_sent']}, received {counters['adverts_received']}, "
            f"dropped {sum(counters['dropped'].values())} {counters['dropped'] or ''}".rstrip()
        )
        for transition in inst["transitions"][-5:]:
            print(f"  {transition['at']} {transition['from']} -> {transition['to']} ({transition['reason']})")
    for name, ok in status.get("track_scripts", {}).items():
        print(f"track script {name}: {'OK' if ok else 'FAILED'}")
    return 0


def _release(cfg: Config) -> int:
    from agenda.vrrp.daemon import Daemon

    configure_logging("agenda-vrrpd", "INFO", json=cfg.log_format == "json")
    # Run after the daemon ended (systemd's ExecStopPost): whatever killed it, the VIP leaves this
    # host and, if it was here, the backups hear priority 0 at once.
    removed = Daemon(cfg).release_all(hand_over=True)
    print(f"vrrpd: released {removed} address(es)")
    return 0


def _check_http(url: str, cafile: str | None, timeout: float) -> int:
    return 0 if http_ok(url, cafile or "", timeout) else 1


def main(argv: list[str] | None = None) -> int:
    # A reload re-executes the daemon with the arguments it was started with, exactly.
    raw_args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="agenda-vrrpd", description="VRRPv3 daemon (keepalived-compatible)")
    parser.add_argument(
        "--config", help=f"YAML file (default ${vrrp_config.CONFIG_ENV} or {vrrp_config.DEFAULT_CONFIG_PATH})"
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the daemon in the foreground (the default)")
    commands.add_parser("check-config", help="validate the configuration file")
    status = commands.add_parser("status", help="the running daemon's instances, states and counters")
    status.add_argument("--json", action="store_true")
    commands.add_parser(
        "release", help="remove every configured VIP; where one was held, send priority 0 (ExecStopPost)"
    )
    check = commands.add_parser("check-http", help="exit 0 iff GET URL answers 2xx (for track scripts)")
    check.add_argument("url")
    check.add_argument("--cafile")
    check.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(raw_args)

    if args.command == "check-http":
        return _check_http(args.url, args.cafile, args.timeout)
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _fail(f"config: {exc}")
    if args.command == "check-config":
        print(f"vrrpd: {vrrp_config.config_path(args.config)}: {len(cfg.instances)} instance(s), OK")
        return 0
    if args.command == "status":
        return _status(cfg, args.json)
    if args.command == "release":
        return _release(cfg)
    return _run(cfg, vrrp_config.config_path(args.config), raw_args)


if __name__ == "__main__":
    sys.exit(main())
