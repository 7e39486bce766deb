"""agenda-vrrpd's event loop: sockets and timers in, state-machine actions out.

One thread owns every router and socket; track scripts, the status server and signals only post
events to it (and wake it through a socket pair), so the protocol logic never races itself. Within
one batch of actions the address changes and adverts happen first and the notify scripts are queued
last, so a notify_master script always finds the VIP already on the interface.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from agenda.common.config import Config
from agenda.vrrp import fsm, net
from agenda.vrrp.packet import (
    DROP_REASONS,
    VRRP_GROUP,
    VRRP_TTL,
    Advertisement,
    PacketError,
    decode,
    encode,
    interval_to_cs,
    parse_address,
    parse_ipv4,
    same_addresses,
)
from agenda.vrrp.scripts import Notifier, TrackScriptRunner, TrackScriptSpec, effective_priority

log = logging.getLogger("agenda.vrrp")

INTERFACE_POLL = 0.2  # seconds between link-state checks (FAULT on a down or vanished interface)
DROP_LOG_PERIOD = 10.0  # at most one log line per drop reason per period: hostile floods stay cheap
NOTIFY_STATE = {
    fsm.State.MASTER: "MASTER",
    fsm.State.BACKUP: "BACKUP",
    fsm.State.FAULT: "FAULT",
    fsm.State.STOPPED: "STOP",
}


@dataclass
class Instance:
    """One configured virtual router and what the daemon knows about it beyond the protocol."""

    config: Config
    vips: tuple[IPv4Interface, ...]
    router: fsm.Router | None = None
    interface: net.Interface | None = None
    link_up: bool = False
    holds_vips: bool = False
    adverts_sent: int = 0
    adverts_received: int = 0
    transitions: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=20)
    )

    @property
    def name(self) -> str:
        return str(self.config.name)


class Daemon:
    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.instances = [
            Instance(c, tuple(parse_address(v) for v in c.virtual_ipaddress)) for c in cfg.instances
        ]
        self.script_specs = {
            s.name: TrackScriptSpec(s.name, s.script, s.interval, s.timeout, s.fall, s.rise, s.weight)
            for s in cfg.track_scripts
        }
        self.script_ok: dict[str, bool] = dict.fromkeys(self.script_specs, False)
        self.dropped: collections.Counter[str] = collections.Counter()
        self._drop_logged: dict[str, float] = {}
        self._drop_suppressed: collections.Counter[str] = collections.Counter()
        self.transitions_total: collections.Counter[tuple[str, str]] = collections.Counter()
        self.addresses = net.Addresses()
        self.sockets: dict[str, net.VrrpSocket] = {}
        self.arp: dict[str, net.ArpSender] = {}
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.lock = threading.RLock()
        self.notifier = Notifier()
        self.runner = TrackScriptRunner(self.script_specs.values(), self._script_changed)
        self.status_server: ThreadingHTTPServer | None = None
        self.stopping = False
        self.started = False  # routers started: script results change priorities from then on
        self.scripts_reported: set[str] = set()
        self._next_link_check = 0.0

    # Start-up ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check interfaces, clear stale VIPs, open sockets; net.InterfaceError names a bad interface."""
        for inst in self.instances:
            own = frozenset(vip.ip for vip in inst.vips)
            inst.interface = net.lookup_interface(inst.config.interface, exclude=own)
        # A predecessor killed with SIGKILL may have left its VIPs behind; we hold none until MASTER.
        self.release_all()
        for inst in self.instances:
            self._open(inst)

    def _open(self, inst: Instance) -> None:
        if inst.interface is None:
            raise net.InterfaceError(f"interface {inst.config.interface!r} was not looked up")
        source = (
            IPv4Address(inst.config.unicast_src_ip) if inst.config.unicast_src_ip else inst.interface.primary
        )
        key = f"{inst.interface.name}/{source}"
        if key not in self.sockets:
            self.sockets[key] = net.VrrpSocket(inst.interface, source)
        if inst.interface.name not in self.arp:
            self.arp[inst.interface.name] = net.ArpSender(inst.interface)
        if inst.router is None:
            inst.router = fsm.Router(
                fsm.Settings(
                    name=inst.name,
                    vrid=inst.config.virtual_router_id,
                    priority=inst.config.priority,
                    advert_int=inst.config.advert_int,
                    addresses=tuple(vip.ip for vip in inst.vips),
                    primary=source,
                    preempt=inst.config.preempt,
                    preempt_delay=inst.config.preempt_delay,
                    garp_master_delay=inst.config.garp_master_delay,
                    garp_master_refresh=inst.config.garp_master_refresh,
                )
            )
        inst.link_up = net.interface_is_up(inst.interface.name)

    def release_all(self, *, hand_over: bool = False) -> int:
        """Remove every configured VIP still on its interface; with `hand_over`, an instance that
        held one (its daemon died as master) also sends the priority-0 advertisement its daemon
        could not, so a backup takes over after Skew_Time instead of a whole Master_Down_Interval."""
        removed = 0
        for inst in self.instances:
            held = False
            for vip in inst.vips:
                if self.addresses.remove(inst.config.interface, vip):
                    removed += 1
                    held = True
                    log.warning(
                        "vrrp: instance %s: removed %s left on %s", inst.name, vip, inst.config.interface
                    )
            inst.holds_vips = False
            if held and hand_over:
                self._hand_over(inst)
        return removed

    def _hand_over(self, inst: Instance) -> None:
        try:
            interface = net.lookup_interface(
                inst.config.interface, exclude=frozenset(v.ip for v in inst.vips)
            )
            src = inst.config.unicast_src_ip
            sock = net.VrrpSocket(interface, IPv4Address(src) if src else interface.primary)
        except (net.InterfaceError, OSError) as exc:
            log.warning("vrrp: instance %s: no priority-0 hand-over: %s", inst.name, exc)
            return
        advert = Advertisement(
            vrid=inst.config.virtual_router_id,
            priority=fsm.LEAVING_PRIORITY,
            interval_cs=interval_to_cs(inst.config.advert_int),
            addresses=tuple(vip.ip for vip in inst.vips),
        )
        try:
            for target in [IPv4Address(p) for p in inst.config.unicast_peers] or [VRRP_GROUP]:
                sock.send(encode(advert, sock.source, target), target)
            log.warning("vrrp: instance %s: sent priority 0 for the daemon that held the VIP", inst.name)
        finally:
            sock.close()

    # Events from other threads -----------------------------------------------------------------

    def _post(self, kind: str, payload: Any = None) -> None:
        self.events.put((kind, payload))
        with contextlib.suppress(OSError):  # a full pipe means the loop is already awake
            self._wake_w.send(b"x")

    def _script_changed(self, name: str, ok: bool) -> None:
        self._post("script", (name, ok))

    def request_stop(self, *_: Any) -> None:
        self._post("stop")

    # The loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.start_status_server()
        self.runner.start()
        self._await_first_results()
        now = self.clock()
        self.started = True
        with self.lock:
            for inst in self.instances:
                if inst.router is None:
                    continue
                effective = self._effective(inst)
                inst.router.faulted = effective is None
                inst.router.priority = effective or inst.router.priority
                self.execute(inst, inst.router.start(now))
        try:
            while not self.stopping:
                self.step()
        finally:
            self.shutdown()

    def _await_first_results(self) -> None:
        """Start the routers knowing every track script's first result (bounded by the scripts'
        timeouts): otherwise each start would pass through FAULT and run notify_fault for nothing."""
        if not self.script_specs:
            return
        deadline = self.clock() + max(spec.timeout for spec in self.script_specs.values()) + 1.0
        while set(self.script_ok) - self.scripts_reported and not self.stopping:
            remaining = deadline - self.clock()
            if remaining <= 0:
                log.warning(
                    "vrrp: starting before every track script reported: %s",
                    ", ".join(sorted(set(self.script_ok) - self.scripts_reported)),
                )
                return
            readable, _, _ = select.select([self._wake_r], [], [], remaining)
            if readable:
                self._drain_wake()
            with self.lock:
                self._handle_events()

    def step(self) -> None:
        now = self.clock()
        deadlines = [
            d for inst in self.instances if inst.router and (d := inst.router.next_deadline()) is not None
        ]
        deadlines.append(self._next_link_check)
        timeout = max(0.0, min(deadlines) - now)
        readable, _, _ = select.select([self._wake_r, *self.sockets.values()], [], [], timeout)
        with self.lock:
            for ready in readable:
                if ready is self._wake_r:
                    self._drain_wake()
                else:
                    self._read(ready)
            self._handle_events()
            now = self.clock()
            # Timers before the link check: a takeover waits for nothing it does not need.
            for inst in self.instances:
                if inst.router is not None:
                    self.execute(inst, inst.router.tick(now))
            if now >= self._next_link_check:
                self._check_links(now)
                self._next_link_check = self.clock() + INTERFACE_POLL

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _handle_events(self) -> None:
        while True:
            try:
                kind, payload = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "stop":
                self.stopping = True
            elif kind == "script":
                name, ok = payload
                self.script_ok[name] = ok
                self.scripts_reported.add(name)
                if self.started:
                    self._reprioritise()

    def _effective(self, inst: Instance) -> int | None:
        if not inst.link_up:
            return None
        tracked = [(self.script_specs[n].weight, self.script_ok[n]) for n in inst.config.track_scripts]
        return effective_priority(inst.config.priority, tracked)

    def _reprioritise(self) -> None:
        now = self.clock()
        for inst in self.instances:
            if inst.router is not None:
                self.execute(inst, inst.router.set_priority(now, self._effective(inst)))

    def _check_links(self, now: float) -> None:
        changed = False
        for inst in self.instances:
            up = net.interface_is_up(inst.config.interface)
            if up and inst.interface is not None:
                try:
                    index = socket.if_nametoindex(inst.config.interface)
                except OSError:
                    up = False
                else:
                    if index != inst.interface.index:
                        self._reopen(inst)  # the interface was removed and created again
            if up != inst.link_up:
                log.warning(
                    "vrrp: instance %s: interface %s is %s",
                    inst.name,
                    inst.config.interface,
                    "up" if up else "down",
                )
                inst.link_up = up
                changed = True
        if changed:
            self._reprioritise()

    def _reopen(self, inst: Instance) -> None:
        for key in [k for k, s in self.sockets.items() if s.interface.name == inst.config.interface]:
            self.sockets.pop(key).close()
        sender = self.arp.pop(inst.config.interface, None)
        if sender is not None:
            sender.close()
        try:
            inst.interface = net.lookup_interface(
                inst.config.interface, exclude=frozenset(v.ip for v in inst.vips)
            )
            self._open(inst)
        except (net.InterfaceError, OSError) as exc:
            log.warning("vrrp: instance %s: cannot reopen %s: %s", inst.name, inst.config.interface, exc)

    # Receiving ---------------------------------------------------------------------------------

    def _read(self, sock: net.VrrpSocket) -> None:
        for _ in range(64):  # bounded: a flood cannot starve our own timers
            datagram = sock.receive()
            if datagram is None:
                return
            self.handle_datagram(sock, datagram)

    def handle_datagram(self, sock: net.VrrpSocket, datagram: bytes) -> None:
        try:
            ip = parse_ipv4(datagram)
            if ip.source == sock.source:
                return  # our own advert (multicast loop is off, but unicast to ourselves is not)
            if ip.ttl != VRRP_TTL:
                raise PacketError("ttl", f"TTL {ip.ttl} from {ip.source}")
            advert = decode(ip.payload, ip.source, ip.destination)
        except PacketError as exc:
            self._drop(exc)
            return
        for inst in self.instances:
            if (
                inst.router is None
                or inst.router.settings.vrid != advert.vrid
                or inst.config.interface != sock.interface.name
            ):
                continue
            if not same_addresses(advert.addresses, inst.router.settings.addresses):
                self._drop(
                    PacketError(
                        "address_list",
                        f"VRID {advert.vrid} from {ip.source} announces "
                        f"{', '.join(map(str, advert.addresses))}",
                    )
                )
                return
            inst.adverts_received += 1
            self.execute(inst, inst.router.receive(self.clock(), ip.source, advert))
            return
        self._drop(PacketError("vrid", f"VRID {advert.vrid} from {ip.source} is not configured here"))

    def _drop(self, exc: PacketError) -> None:
        self.dropped[exc.reason] += 1
        now = self.clock()
        if now - self._drop_logged.get(exc.reason, -DROP_LOG_PERIOD) >= DROP_LOG_PERIOD:
            suppressed = self._drop_suppressed.pop(exc.reason, 0)
            extra = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("vrrp: dropped a packet: %s%s", exc, extra)
            self._drop_logged[exc.reason] = now
        else:
            self._drop_suppressed[exc.reason] += 1

    # Acting -------------------------------------------------------------------------------------

    def execute(self, inst: Instance, actions: list[fsm.Action]) -> None:
        # The wire and the addresses first, the bookkeeping after: a takeover's VIP and gratuitous
        # ARP must not wait for a log line.
        transitions: list[fsm.Transition] = []
        for action in actions:
            try:
                if isinstance(action, fsm.Transition):
                    transitions.append(action)
                elif isinstance(action, fsm.SendAdvert):
                    self._send_advert(inst, action.priority)
                elif isinstance(action, fsm.AddAddresses):
                    for vip in inst.vips:
                        self.addresses.add(inst.config.interface, vip)
                    inst.holds_vips = True
                elif isinstance(action, fsm.RemoveAddresses):
                    for vip in inst.vips:
                        self.addresses.remove(inst.config.interface, vip)
                    inst.holds_vips = False
                elif isinstance(action, fsm.SendGratuitousArp):
                    sender = self.arp.get(inst.config.interface)
                    if sender is not None:
                        sender.announce([vip.ip for vip in inst.vips], inst.config.garp_master_repeat)
            except OSError as exc:
                log.error("vrrp: instance %s: %s failed: %s", inst.name, type(action).__name__, exc)
        for transition in transitions:
            self._record(inst, transition)
            state = NOTIFY_STATE.get(transition.new)
            if state is not None:
                specific = getattr(inst.config, f"notify_{state.lower()}")
                self.notifier.notify(
                    inst.name,
                    state,
                    transition.priority,
                    specific,
                    inst.config.notify,
                    inst.config.notify_timeout,
                )

    def _send_advert(self, inst: Instance, priority: int) -> None:
        if inst.router is None:
            return
        for sock in self.sockets.values():
            if sock.interface.name != inst.config.interface:
                continue
            targets = [IPv4Address(p) for p in inst.config.unicast_peers] or [VRRP_GROUP]
            for target in targets:
                sock.send(encode(inst.router.advertisement(priority), sock.source, target), target)
            inst.adverts_sent += 1
            return

    def _record(self, inst: Instance, transition: fsm.Transition) -> None:
        log.info(
            "vrrp: instance %s %s -> %s (reason: %s) priority %d",
            inst.name,
            transition.old.value,
            transition.new.value,
            transition.reason,
            transition.priority,
        )
        inst.transitions.append(
            {
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "from": transition.old.value,
                "to": transition.new.value,
                "reason": transition.reason,
            }
        )
        self.transitions_total[(inst.name, transition.new.value)] += 1

    # Stopping -----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.runner.stop(timeout=2.0)
        with self.lock:
            now = self.clock()
            for inst in self.instances:
                if inst.router is not None and inst.router.state is not fsm.State.STOPPED:
                    self.execute(inst, inst.router.shutdown(now))
            self.release_all()
        self.notifier.close(timeout=max([i.config.notify_timeout for i in self.instances] + [1.0]))
        if self.status_server is not None:
            self.status_server.shutdown()
            self.status_server.server_close()
        for sock in self.sockets.values():
            sock.close()
        for sender in self.arp.values():
            sender.close()
        self.addresses.close()

    # Status and metrics -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self.lock:
            out = []
            for inst in self.instances:
                router = inst.router
                out.append(
                    {
                        "name": inst.name,
                        "interface": inst.config.interface,
                        "vrid": inst.config.virtual_router_id,
                        "state": router.state.value if router else "INIT",
                        "priority": router.priority if router else inst.config.priority,
                        "base_priority": inst.config.priority,
                        "advert_int": inst.config.advert_int,
                        "master_address": str(router.master_address)
                        if router and router.master_address
                        else None,
                        "vips": [str(vip) for vip in inst.vips],
                        "holds_vips": inst.holds_vips,
                        "transitions": list(inst.transitions),
                        "counters": {
                            "adverts_sent": inst.adverts_sent,
                            "adverts_received": inst.adverts_received,
                            "dropped": dict(self.dropped),
                        },
                    }
                )
            return {"pid": os.getpid(), "instances": out, "track_scripts": dict(self.script_ok)}

    def metrics(self) -> str:
        with self.lock:
            lines = [
                "# HELP agenda_vrrp_state 0 init, 1 backup, 2 master, 3 fault, 4 stopped",
                "# TYPE agenda_vrrp_state gauge",
            ]
            for inst in self.instances:
                state = inst.router.state if inst.router else fsm.State.INIT
                lines.append(f'agenda_vrrp_state{{instance="{inst.name}"}} {fsm.STATE_CODES[state]}')
            lines += [
                "# HELP agenda_vrrp_priority effective priority (track script weights applied)",
                "# TYPE agenda_vrrp_priority gauge",
            ]
            lines += [
                f'agenda_vrrp_priority{{instance="{i.name}"}} {i.router.priority if i.router else 0}'
                for i in self.instances
            ]
            lines += [
                "# HELP agenda_vrrp_adverts_sent_total advertisements sent",
                "# TYPE agenda_vrrp_adverts_sent_total counter",
            ]
            lines += [
                f'agenda_vrrp_adverts_sent_total{{instance="{i.name}"}} {i.adverts_sent}'
                for i in self.instances
            ]
            lines += [
                "# HELP agenda_vrrp_adverts_received_total valid advertisements received for the instance",
                "# TYPE agenda_vrrp_adverts_received_total counter",
            ]
            lines += [
                f'agenda_vrrp_adverts_received_total{{instance="{i.name}"}} {i.adverts_received}'
                for i in self.instances
            ]
            lines += [
                "# HELP agenda_vrrp_packets_dropped_total received packets dropped, by reason",
                "# TYPE agenda_vrrp_packets_dropped_total counter",
            ]
            lines += [
                f'agenda_vrrp_packets_dropped_total{{reason="{r}"}} {self.dropped[r]}' for r in DROP_REASONS
            ]
            lines += [
                "# HELP agenda_vrrp_transitions_total state changes, by the state entered",
                "# TYPE agenda_vrrp_transitions_total counter",
            ]
            lines += [
                f'agenda_vrrp_transitions_total{{instance="{name}",state="{state}"}} {count}'
                for (name, state), count in sorted(self.transitions_total.items())
            ]
            lines += [
                "# HELP agenda_vrrp_track_script_ok 1 while the track script is OK",
                "# TYPE agenda_vrrp_track_script_ok gauge",
            ]
            lines += [
                f'agenda_vrrp_track_script_ok{{script="{n}"}} {int(ok)}' for n, ok in self.script_ok.items()
            ]
            return "\n".join(lines) + "\n"

    def start_status_server(self) -> None:
        addr = self.cfg.status_addr
        if not addr:
            return
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/status":
                    body, ctype = json.dumps(daemon.status(), indent=2).encode(), "application/json"
                elif self.path == "/metrics":
                    body, ctype = daemon.metrics().encode(), "text/plain; version=0.0.4"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.status_server = ThreadingHTTPServer(addr, Handler)
        self.status_server.daemon_threads = True
        threading.Thread(target=self.status_server.serve_forever, name="status", daemon=True).start()


def install_signal_handlers(daemon: Daemon) -> None:
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
