"""The VRRPv3 state machine of one virtual router (RFC 5798 section 6), pure.

No sockets, no threads, no clock of its own: every method takes `now` (seconds, monotonic) and
returns the actions the daemon must perform, in order. The daemon calls `tick(now)` when
`next_deadline()` passes, `receive` for every valid advertisement of our VRID, `set_priority`
when track scripts change the effective priority (None = FAULT), and `shutdown` on an orderly stop.

Beyond the RFC, as keepalived does:
- FAULT (a weight-0 track script failing, the interface down): no adverts, no addresses.
- A master leaving for FAULT or STOPPED sends priority 0, so a backup takes over after Skew_Time
  instead of a whole Master_Down_Interval.
- A master that hears a lower-priority master answers with its own advertisement and a gratuitous
  ARP at once, so a healed partition converges in one round trip, not one advert interval, and
  clients whose ARP caches point at the other master (which steps down) follow the VIP back.
- preempt_delay: after start (or after first hearing a lower-priority master) a backup waits this
  long before preempting it.
- Gratuitous ARP: one burst on becoming master, a second burst `garp_master_delay` later, and
  optionally a burst every `garp_master_refresh` seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from agenda.vrrp.packet import Advertisement, interval_to_cs


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOPPED = "STOPPED"


STATE_CODES = {State.INIT: 0, State.BACKUP: 1, State.MASTER: 2, State.FAULT: 3, State.STOPPED: 4}
OWNER_PRIORITY = 255
LEAVING_PRIORITY = 0


@dataclass(frozen=True)
class Settings:
    name: str
    vrid: int
    priority: int  # as configured; the effective one moves with track scripts
    advert_int: float  # seconds
    addresses: tuple[IPv4Address, ...]
    primary: IPv4Address  # our primary address: the tie-breaker and the adverts' source
    preempt: bool = True
    preempt_delay: float = 0.0
    garp_master_delay: float = 5.0
    garp_master_refresh: float = 0.0


# Actions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True)
class AddAddresses:
    pass


@dataclass(frozen=True)
class RemoveAddresses:
    pass


@dataclass(frozen=True)
class SendGratuitousArp:
    pass


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str
    priority: int
    # A reloaded daemon taking up the mastership its previous process held: logged like a change
    # of state, but nothing changed on the wire, so notify_master does not run again.
    resumed: bool = False


Action = SendAdvert | AddAddresses | RemoveAddresses | SendGratuitousArp | Transition


@dataclass
class _Timers:
    advert: float | None = None  # MASTER: next advertisement
    master_down: float | None = None  # BACKUP: when the master is declared dead
    garp: float | None = None  # MASTER: the delayed second gratuitous-ARP burst
    garp_refresh: float | None = None

    def clear(self) -> None:
        self.advert = self.master_down = self.garp = self.garp_refresh = None

    def earliest(self) -> float | None:
        pending = [t for t in (self.advert, self.master_down, self.garp, self.garp_refresh) if t is not None]
        return min(pending) if pending else None


@dataclass
class Router:
    """One VRRP instance. Create, then call `start(now)` (or `resume_master(now)` after a reload)."""

    settings: Settings
    state: State = State.INIT
    priority: int = 0
    master_address: IPv4Address | None = None
    master_adver_interval: float = 0.0
    faulted: bool = False
    timers: _Timers = field(default_factory=_Timers)
    _started_at: float = 0.0
    _lower_master_since: float | None = None
    _master_left: bool = False  # the last word from the master was priority 0

    def __post_init__(self) -> None:
        interval_to_cs(self.settings.advert_int)  # refuse an interval the wire cannot carry
        self.priority = self.settings.priority
        self.master_adver_interval = self.settings.advert_int

    # RFC 5798 6.1 -----------------------------------------------------------------------------

    @property
    def skew_time(self) -> float:
        return ((256 - self.priority) * self.master_adver_interval) / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.master_adver_interval + self.skew_time

    def next_deadline(self) -> float | None:
        return self.timers.earliest()

    def advertisement(self, priority: int | None = None) -> Advertisement:
        return Advertisement(
            vrid=self.settings.vrid,
            priority=self.priority if priority is None else priority,
            interval_cs=interval_to_cs(self.settings.advert_int),
            addresses=self.settings.addresses,
        )

    # Events ------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Initialize (RFC 6.4.1): the owner becomes master at once, anyone else a backup."""
        self._started_at = now
        if self.faulted:
            return self._to_fault(now, "a tracked check is failing at start")
        if self.priority == OWNER_PRIORITY:
            return self._to_master(now, "address owner (priority 255)")
        return self._to_backup(now, "start", self.settings.advert_int)

    def resume_master(self, now: float) -> list[Action]:
        """Start as the master this daemon already was before it re-executed itself (SIGHUP).

        The VIPs never left the interface and no backup took over, so: the advert first (the
        backups' Master_Down timers are running since the old process's last one), then the
        addresses (idempotent: re-adds one the new configuration added), one gratuitous-ARP
        burst for such a new address. No delayed second burst: this is not a takeover."""
        self._started_at = now
        self._arm_master(now, garp_delay=False)
        old, self.state = self.state, State.MASTER
        return [
            SendAdvert(self.priority),
            Transition(old, State.MASTER, "resumed after reload", self.priority, resumed=True),
            AddAddresses(),
            SendGratuitousArp(),
        ]

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        t = self.timers
        if self.state is State.BACKUP and t.master_down is not None and now >= t.master_down:
            reason = "the master left (priority 0)" if self._master_left else "master down timer expired"
            actions += self._to_master(now, reason)
        if self.state is State.MASTER:
            if t.advert is not None and now >= t.advert:
                actions.append(SendAdvert(self.priority))
                # From now, not from the missed deadline: a stalled process sends one advert, not a burst.
                t.advert = max(t.advert + self.settings.advert_int, now + self.settings.advert_int / 2)
            if t.garp is not None and now >= t.garp:
                actions.append(SendGratuitousArp())
                t.garp = None
            if t.garp_refresh is not None and now >= t.garp_refresh:
                actions.append(SendGratuitousArp())
                t.garp_refresh = now + self.settings.garp_master_refresh
        return actions

    def receive(self, now: float, source: IPv4Address, advert: Advertisement) -> list[Action]:
        """An advertisement for our VRID that passed every packet check (RFC 6.4.2, 6.4.3)."""
        if self.state is State.BACKUP:
            return self._backup_receives(now, source, advert)
        if self.state is State.MASTER:
            return self._master_receives(now, source, advert)
        return []  # INIT, FAULT, STOPPED ignore the wire

    def set_priority(self, now: float, effective: int | None) -> list[Action]:
        """Track scripts moved the priority; None means a weight-0 check failed (FAULT)."""
        if self.state is State.STOPPED:
            return []
        if effective is None:
            self.faulted = True
            if self.state is State.FAULT:
                return []
            return self._to_fault(now, "a tracked check failed")
        was_faulted, self.faulted = self.faulted, False
        changed = effective != self.priority
        self.priority = effective
        if self.state is State.FAULT and was_faulted:
            if self.priority == OWNER_PRIORITY:
                return self._to_master(now, "tracked checks recovered")
            return self._to_backup(now, "tracked checks recovered", self.settings.advert_int)
        if changed and self.state is State.MASTER:
            # Tell the backups now: a lower priority may let one of them preempt us.
            self.timers.advert = now + self.settings.advert_int
            return [SendAdvert(self.priority)]
        return []

    def shutdown(self, now: float) -> list[Action]:
        """Orderly stop: a master hands over with priority 0 and drops its addresses."""
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions += [SendAdvert(LEAVING_PRIORITY), RemoveAddresses()]
        actions.append(self._transition(State.STOPPED, "shutdown"))
        self.timers.clear()
        self.master_address = None
        return actions

    # Per state ---------------------------------------------------------------------------------

    def _backup_receives(self, now: float, source: IPv4Address, advert: Advertisement) -> list[Action]:
        if advert.priority == LEAVING_PRIORITY:
            # The master is leaving: take over after Skew_Time alone.
            self.timers.master_down = now + self.skew_time
            self._master_left = True
            return []
        self._master_left = False
        if not self.settings.preempt or advert.priority >= self.priority or self._preempt_held(now):
            if advert.priority >= self.priority:
                self._lower_master_since = None
            self.master_adver_interval = advert.interval
            self.master_address = source
            self.timers.master_down = now + self.master_down_interval
            return []
        return []  # a lower-priority master and we preempt: let the master down timer expire

    def _preempt_held(self, now: float) -> bool:
        delay = self.settings.preempt_delay
        if delay <= 0:
            return False
        if self._lower_master_since is None:
            self._lower_master_since = now
        return now < max(self._started_at, self._lower_master_since) + delay

    def _master_receives(self, now: float, source: IPv4Address, advert: Advertisement) -> list[Action]:
        if advert.priority == LEAVING_PRIORITY:
            self.timers.advert = now + self.settings.advert_int
            return [SendAdvert(self.priority)]
        if advert.priority > self.priority or (
            advert.priority == self.priority and int(source) > int(self.settings.primary)
        ):
            reason = f"higher priority master {source} (priority {advert.priority})"
            # One last advert at our lower priority: if the better master's advert reached us
            # before ours reached it (a healed partition), this is how it learns that clients may
            # still point at us, and it re-announces the VIP (see below).
            last_word = SendAdvert(self.priority)
            actions = self._to_backup(now, reason, advert.interval, master=source)
            return [actions[0], last_word, *actions[1:]]
        # A lower-priority master (a healed partition): assert ourselves now, and re-announce the
        # VIP, since the neighbours' ARP caches point at the other master, which will step down.
        self.timers.advert = now + self.settings.advert_int
        return [SendAdvert(self.priority), SendGratuitousArp()]

    # Transitions -------------------------------------------------------------------------------

    def _transition(self, new: State, reason: str) -> Transition:
        old, self.state = self.state, new
        return Transition(old, new, reason, self.priority)

    def _arm_master(self, now: float, *, garp_delay: bool) -> None:
        """A master's bookkeeping and timers; `garp_delay` arms a takeover's delayed second GARP burst."""
        self.timers.clear()
        self._master_left = False
        self._lower_master_since = None
        self.master_address = self.settings.primary
        self.master_adver_interval = self.settings.advert_int
        self.timers.advert = now + self.settings.advert_int
        if garp_delay and self.settings.garp_master_delay > 0:
            self.timers.garp = now + self.settings.garp_master_delay
        if self.settings.garp_master_refresh > 0:
            self.timers.garp_refresh = now + self.settings.garp_master_refresh

    def _to_master(self, now: float, reason: str) -> list[Action]:
        self._arm_master(now, garp_delay=True)
        # The address and its announcement before the advert: clients wait on the first two, while
        # the advert only confirms to the backups what their own timers already concluded.
        return [
            self._transition(State.MASTER, reason),
            AddAddresses(),
            SendGratuitousArp(),
            SendAdvert(self.priority),
        ]

    def _to_backup(
        self, now: float, reason: str, interval: float, master: IPv4Address | None = None
    ) -> list[Action]:
        was_master = self.state is State.MASTER
        self.timers.clear()
        self.master_adver_interval = interval
        self.master_address = master
        self.timers.master_down = now + self.master_down_interval
        actions: list[Action] = [self._transition(State.BACKUP, reason)]
        if was_master:
            actions.append(RemoveAddresses())
        return actions

    def _to_fault(self, now: float, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions += [SendAdvert(LEAVING_PRIORITY), RemoveAddresses()]
        self.timers.clear()
        self.master_address = None
        actions.insert(0, self._transition(State.FAULT, reason))
        return actions
