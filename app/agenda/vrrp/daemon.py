"""agenda-vrrpd's event loop: sockets and timers in, state-machine actions out.

One thread owns every router and socket; track scripts, the status server and signals only post
events to it (and wake it through a socket pair), so the protocol logic never races itself. Within
one batch of actions the address changes and adverts happen first and the notify scripts are queued
last, so a notify_master script always finds the VIP already on the interface.

SIGHUP reloads without moving the VIP: the new configuration is checked by the new code (a
`check-config` subprocess, off this thread so adverts keep flowing), then the process re-executes
itself (same PID) with a hand-off (agenda.vrrp.handoff) instead of releasing anything; the new
process resumes as master of what it held, advertising before its track scripts have reported.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from agenda.common.config import Config, ConfigError
from agenda.common.status_http import start_status_server
from agenda.vrrp import config as vrrp_config
from agenda.vrrp import fsm, handoff, net
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
RELOAD_CHECK_TIMEOUT = 20.0  # seconds for the new code's check-config (imports on a cold cache are slow)
RELOAD_DRAIN_TIMEOUT = 2.0  # seconds for track scripts to stop before the re-exec
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
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        handoff: handoff.HandOff | None = None,
        config_file: str | None = None,
        reexec_args: Sequence[str] | None = None,
    ) -> None:
        """`config_file` and `reexec_args` (the arguments after `python -m agenda.vrrp`) enable
        SIGHUP reloads; `handoff` is what the previous process of this PID left us."""
        self.cfg = cfg
        self.clock = clock
        self.handoff = handoff
        self.config_file = config_file
        self.reexec_args = list(reexec_args) if reexec_args is not None else None
        self.reloads = handoff.reloads if handoff else 0
        self.started_at = time.time()  # epoch of this exec: a reload shows as a new value, same pid
        self.reload_error: str | None = None
        self._reloading = False  # a reload is being checked or drained
        self._exec_ready = False  # checked and drained: re-exec once the loop returns
        self._stop_requested = False
        self._resuming: set[str] = set()  # instances that resume as master (decided in prepare)
        self._pending: list[Instance] = []  # routers waiting for the track scripts' first results
        self._start_deadline = 0.0
        self.instances = [
            Instance(c, tuple(parse_address(v) for v in c.virtual_ipaddress)) for c in cfg.instances
        ]
        self.script_specs = {
            s.name: TrackScriptSpec(
                s.name, s.script, s.interval, s.timeout, s.fall, s.rise, s.weight, s.http_get, s.cafile
            )
            for s in cfg.track_scripts
        }
        self.script_ok: dict[str, bool] = dict.fromkeys(self.script_specs, False)
        if handoff is not None:
            # A resumed master advertises before its scripts report: until they do, it goes by the
            # previous process's verdicts (a script new in this configuration: OK, as the instance
            # was a healthy master a moment ago), not by "failed", which would mean FAULT at once.
            self.script_ok = {name: handoff.scripts.get(name, True) for name in self.script_specs}
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
        self.started = False  # every router started (resumed ones at once, the others after the scripts)
        self.scripts_reported: set[str] = set()
        self._next_link_check = 0.0

    # Start-up ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check interfaces, clear stale VIPs, open sockets; net.InterfaceError names a bad interface."""
        for inst in self.instances:
            own = frozenset(vip.ip for vip in inst.vips)
            inst.interface = net.lookup_interface(inst.config.interface, exclude=own)
        self._resuming = self._resumable()
        # A predecessor killed with SIGKILL may have left its VIPs behind; we hold none until MASTER.
        # Except what this very process held before a reload: those VIPs stay where they are.
        self.release_all(keep=self._resuming)
        self._release_dropped_vips()
        for inst in self.instances:
            self._open(inst)

    def _resumable(self) -> set[str]:
        """The instances the hand-off says this PID was master of, on the same interface and VRID,
        and that can be master now (link up, no failing weight-0 script by the last verdicts)."""
        if self.handoff is None:
            return set()
        names = set()
        for inst in self.instances:
            entry = self.handoff.master(inst.config.interface, inst.config.virtual_router_id)
            if entry is None:
                continue
            inst.link_up = net.interface_is_up(inst.config.interface)
            if self._effective(inst) is None:
                log.warning(
                    "vrrp: instance %s: not resuming as master: link down or a check failing", inst.name
                )
                continue
            names.add(inst.name)
        return names

    def _release_dropped_vips(self) -> None:
        """VIPs the previous process held that no resumed instance holds now: the new configuration
        dropped them (or the instance, or changed its VRID), so they leave the interface."""
        if self.handoff is None:
            return
        kept = {
            (inst.config.interface, vip)
            for inst in self.instances
            if inst.name in self._resuming
            for vip in inst.vips
        }
        for entry in self.handoff.instances:
            if entry.state != "MASTER":
                continue
            for vip in entry.vips:
                if (entry.interface, vip) not in kept and self.addresses.remove(entry.interface, vip):
                    log.warning(
                        "vrrp: instance %s: removed %s from %s: no longer configured",
                        entry.name,
                        vip,
                        entry.interface,
                    )

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

    def release_all(self, *, hand_over: bool = False, keep: frozenset[str] | set[str] = frozenset()) -> int:
        """Remove every configured VIP still on its interface; with `hand_over`, an instance that
        held one (its daemon died as master) also sends the priority-0 advertisement its daemon
        could not, so a backup takes over after Skew_Time instead of a whole Master_Down_Interval.
        Instances named in `keep` (resuming after a reload) are left alone."""
        removed = 0
        for inst in self.instances:
            if inst.name in keep:
                continue
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

    def request_reload(self, *_: Any) -> None:
        self._post("reload")

    # The loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.prepare()
        except BaseException:
            # Refused at start (an interface named wrong): the netlink socket and its event loop are
            # closed now, not by the interpreter's teardown, which may fail noisily after our message.
            for sock in self.sockets.values():
                sock.close()
            self.addresses.close()
            raise
        # Resumed masters advertise first, before the status server, the scripts or anything slow:
        # the backups' Master_Down timers run since the previous process's last advert.
        with self.lock:
            resumed = self._resume()
        self.start_status_server()
        self.runner.start()
        # The other routers start knowing every track script's first result (bounded by the
        # scripts' timeouts): otherwise each start would pass through FAULT and run notify_fault
        # for nothing. step() starts them; meanwhile resumed masters keep advertising.
        self._pending = [i for i in self.instances if i.router is not None and i.name not in resumed]
        timeouts = [spec.timeout for spec in self.script_specs.values()]
        self._start_deadline = self.clock() + (max(timeouts) + 1.0 if timeouts else 0.0)
        if self.handoff is not None:
            log.info(
                "vrrp: reloaded (reload %d of pid %d): resumed as master: %s",
                self.reloads,
                os.getpid(),
                ", ".join(resumed) or "none",
                extra={"event": "reloaded", "reloads": self.reloads, "resumed": resumed},
            )
        try:
            while True:
                with self.lock:
                    self._start_pending()
                while not self.stopping:
                    self.step()
                if not self._exec_ready or self._stop_requested:
                    break
                self._reexec()  # returns only if the exec failed: carry on as before
        finally:
            self.shutdown()

    def _resume(self) -> list[str]:
        now = self.clock()
        resumed = []
        for inst in self.instances:
            if inst.router is None or inst.name not in self._resuming:
                continue
            inst.router.priority = self._effective(inst) or inst.router.priority
            self.execute(inst, inst.router.resume_master(now))
            resumed.append(inst.name)
        return resumed

    def _start_pending(self) -> None:
        if not self._pending:
            self.started = True
            return
        missing = set(self.script_ok) - self.scripts_reported
        if missing and self.clock() < self._start_deadline:
            return
        if missing:
            log.warning("vrrp: starting before every track script reported: %s", ", ".join(sorted(missing)))
        now = self.clock()
        pending, self._pending = self._pending, []
        for inst in pending:
            if inst.router is None:
                continue
            effective = self._effective(inst)
            inst.router.faulted = effective is None
            inst.router.priority = effective or inst.router.priority
            self.execute(inst, inst.router.start(now))
        self.started = True

    def step(self) -> None:
        now = self.clock()
        deadlines = [
            d for inst in self.instances if inst.router and (d := inst.router.next_deadline()) is not None
        ]
        deadlines.append(self._next_link_check)
        if self._pending:
            deadlines.append(self._start_deadline)
        timeout = max(0.0, min(deadlines) - now)
        readable, _, _ = select.select([self._wake_r, *self.sockets.values()], [], [], timeout)
        with self.lock:
            for ready in readable:
                if ready is self._wake_r:
                    self._drain_wake()
                else:
                    self._read(ready)
            self._handle_events()
            self._start_pending()
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
                self.stopping = self._stop_requested = True
            elif kind == "script":
                name, ok = payload
                self.script_ok[name] = ok
                self.scripts_reported.add(name)
                self._reprioritise()  # routers not started yet are skipped
            elif kind == "reload":
                self._begin_reload()
            elif kind == "reload-checked":
                ok, detail = payload
                if not ok:
                    self._reloading = False
                    self.reload_error = detail
                    log.error(
                        "vrrp: reload refused, still running the old code and configuration: %s",
                        detail,
                        extra={"event": "reload_failed"},
                    )
                elif not self._stop_requested:
                    self._exec_ready = True
                    self.stopping = True  # leave the loop; run() re-executes

    def _effective(self, inst: Instance) -> int | None:
        if not inst.link_up:
            return None
        tracked = [(self.script_specs[n].weight, self.script_ok[n]) for n in inst.config.track_scripts]
        return effective_priority(inst.config.priority, tracked)

    def _reprioritise(self) -> None:
        now = self.clock()
        for inst in self.instances:
            # INIT: not started yet (waiting for the scripts' first results); start() applies them.
            if inst.router is not None and inst.router.state is not fsm.State.INIT:
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
            if state is not None and not transition.resumed:
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
        if transition.resumed:
            log.info(
                "vrrp: instance %s resumed as MASTER after reload, priority %d",
                inst.name,
                transition.priority,
            )
        else:
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
        if not transition.resumed:  # the metric counts states entered; a resumed one was never left
            self.transitions_total[(inst.name, transition.new.value)] += 1

    # Reloading (SIGHUP) -------------------------------------------------------------------------

    def _begin_reload(self) -> None:
        if self.reexec_args is None or self.config_file is None:
            log.error("vrrp: reload requested, but this daemon was not started to re-execute itself")
            return
        if self._reloading or self.stopping:
            log.warning(
                "vrrp: reload requested while %s: ignored", "reloading" if self._reloading else "stopping"
            )
            return
        self._reloading = True
        log.info("vrrp: reload requested: checking %s with the code on disk", self.config_file)
        # Off this thread: the check is a whole interpreter starting (a fraction of a second, more on
        # a cold cache), longer than a 0.1 s advert interval's Master_Down_Interval.
        threading.Thread(target=self._prepare_reload, name="reload", daemon=True).start()

    def check_command(self) -> list[str]:
        return [sys.executable, "-m", "agenda.vrrp", "--config", str(self.config_file), "check-config"]

    def _prepare_reload(self) -> None:
        ok, detail = self._check_new_config()
        if ok:
            # Nothing of the old process's scripts may survive the exec half-done: track scripts are
            # stopped (a running check is killed: its verdict travels in the hand-off anyway) and
            # queued notify scripts run to completion (bounded, as at a stop).
            self.runner.stop(timeout=RELOAD_DRAIN_TIMEOUT)
            self.notifier.close(timeout=max([i.config.notify_timeout for i in self.instances] + [1.0]))
        self._post("reload-checked", (ok, detail))

    def _check_new_config(self) -> tuple[bool, str]:
        try:
            check = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
                self.check_command(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=RELOAD_CHECK_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"check-config did not finish within {RELOAD_CHECK_TIMEOUT:g}s"
        except OSError as exc:
            return False, f"cannot run check-config: {exc}"
        output = (check.stderr.strip() or check.stdout.strip())[-2000:]
        if check.returncode != 0:
            return False, f"check-config exited {check.returncode}: {output}"
        # The new code accepts the file; the one thing it does not check is that the interfaces
        # exist, and a re-executed daemon failing on that would leave the VIPs without an owner.
        # The old code can check it whenever it can read the file (new keys may be beyond it).
        try:
            new = vrrp_config.load(self.config_file)
        except (ConfigError, OSError, ValueError):  # only an extra check: the new code's verdict stands
            return True, output
        for instance in new.instances:
            own = frozenset(parse_address(v).ip for v in instance.virtual_ipaddress)
            try:
                net.lookup_interface(instance.interface, exclude=own)
            except (net.InterfaceError, OSError, ValueError) as exc:
                return False, f"instance {instance.name}: {exc}"
        return True, output

    def handoff_state(self) -> handoff.HandOff:
        return handoff.HandOff(
            pid=os.getpid(),
            reloads=self.reloads + 1,
            instances=tuple(
                handoff.InstanceHandOff(
                    name=inst.name,
                    interface=inst.config.interface,
                    vrid=inst.config.virtual_router_id,
                    state=inst.router.state.value if inst.router else fsm.State.INIT.value,
                    vips=inst.vips if inst.holds_vips else (),
                )
                for inst in self.instances
            ),
            scripts=dict(self.script_ok),
        )

    def _reexec(self) -> None:
        """Become the code on disk, same PID, VIPs left in place; returns only if the exec failed."""
        argv = [sys.executable, "-m", "agenda.vrrp", *(self.reexec_args or [])]
        with self.lock:
            # One last advert from every master: the backups' Master_Down timers restart now, so the
            # new process has a whole Master_Down_Interval (3 adverts and the skew) to send its first.
            for inst in self.instances:
                if inst.router is not None and inst.router.state is fsm.State.MASTER:
                    try:
                        self._send_advert(inst, inst.router.priority)
                    except OSError as exc:
                        log.warning("vrrp: instance %s: advert before reload: %s", inst.name, exc)
            state = self.handoff_state()
        env = dict(os.environ)
        env[handoff.ENV] = handoff.encode(state)
        log.info(
            "vrrp: reloading: exec %s (masters kept: %s)",
            " ".join(argv),
            ", ".join(i.name for i in state.instances if i.state == "MASTER") or "none",
        )
        # Python opens every descriptor close-on-exec (PEP 446); make sure, so that the new process
        # can bind the status address again and no raw socket outlives us.
        for fd in self._descriptors():
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
        # Until the new process installs its handler, SIGHUP's default action would kill it; an
        # ignored signal stays ignored across exec. (A reload asked for in that window is lost.)
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        with self.lock:
            self._handle_events()  # a stop that raced the reload wins: do not exec over it
        if self._stop_requested:
            signal.signal(signal.SIGHUP, previous)
            self.notifier = Notifier()  # the drained one is closed: notify_stop must still run
            return
        try:
            os.execve(sys.executable, argv, env)  # noqa: S606 - our own interpreter, argv as started
        except OSError as exc:
            signal.signal(signal.SIGHUP, previous)
            self.reload_error = f"exec {sys.executable} failed: {exc}"
            log.error("vrrp: reload failed, still running the old code: %s", self.reload_error)
        # Carry on: the scripts stopped for the exec start again.
        self.runner = TrackScriptRunner(self.script_specs.values(), self._script_changed)
        self.runner.start()
        self.notifier = Notifier()
        self._reloading = self._exec_ready = self.stopping = False

    def _descriptors(self) -> list[int]:
        fds = [self._wake_r.fileno(), self._wake_w.fileno()]
        if self.status_server is not None:
            fds.append(self.status_server.fileno())
        for sock in self.sockets.values():
            fds += sock.filenos()
        fds += [sender.fileno() for sender in self.arp.values()]
        return [fd for fd in fds if fd >= 0]

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
            return {
                "pid": os.getpid(),
                "instances": out,
                "track_scripts": dict(self.script_ok),
                # A reload keeps the pid: these show that one happened, and whether the last failed.
                "reloads": self.reloads,
                "started": self.started_at,
                "reload_error": self.reload_error,
            }

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
            lines += [
                "# HELP agenda_vrrp_reloads_total SIGHUP reloads this pid went through (VIPs kept)",
                "# TYPE agenda_vrrp_reloads_total counter",
                f"agenda_vrrp_reloads_total {self.reloads}",
            ]
            return "\n".join(lines) + "\n"

    def start_status_server(self) -> None:
        if self.cfg.status_addr:
            self.status_server = start_status_server(self.cfg.status_addr, self.status, self.metrics)


def install_signal_handlers(daemon: Daemon) -> None:
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    # systemd's ExecReload: new code and configuration without moving the VIP.
    signal.signal(signal.SIGHUP, daemon.request_reload)
