"""agenda-vrrpd and Debian's keepalived on the same VRID, in throwaway containers (bench/viplab.py).

One host runs agenda-vrrpd (from this checkout's source), the other keepalived 2.2.7 with
``vrrp_version 3``; advert_int 0.1 s keeps every step short. Run in both directions: ours with the
higher priority (150) and keepalived as the backup (100), then the reverse; each with adverts to
224.0.0.18 and by unicast to the peer (agenda-vrrpd's ``unicast_peers``, keepalived's ``unicast_src_ip``
+ ``unicast_peer``). Each time, checking every host's addresses (not just that the VIP answers):

* exactly one master: the higher priority holds the VIP and answers HTTPS through it;
* ``docker kill`` of the master's host: the other takes the VIP; the killed host comes back: preemption
  gives the VIP back to the higher priority, and the lower one releases it;
* ``docker kill`` of the backup's host: the master keeps the VIP; the backup comes back as a backup;
* orderly stop (SIGTERM) of the master's process: it sends priority 0 and removes the VIP, the other
  takes over at once; started again, it preempts;
* agenda-vrrpd's ``status --json``: the right state and master, adverts received from keepalived, and no
  packet of keepalived's dropped as malformed (checksum, version, length, ...).

Needs Docker and the lab's base image (``make interop`` builds both); the network is this run's own
($VIPLAB_SUBNET, default 192.168.58.0/24) and is removed at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from bench.viplab import REPO, Host, VipLab

ADVERT_INT = 0.1
SETTLE = 3 * ADVERT_INT + 0.3  # a holder must stay the only one this long
# Drop reasons that would mean we misread keepalived's packets ("own": our own looped-back adverts).
INCOMPATIBLE = ("ip_header", "protocol", "ttl", "length", "version", "type", "checksum", "interval",
                "address_list", "vrid")  # fmt: skip


@pytest.fixture(scope="module")
def lab() -> Iterator[VipLab]:
    assert (REPO / "app" / "agenda" / "vrrp" / "__main__.py").exists(), "agenda.vrrp is missing"
    viplab = VipLab(REPO, hosts=2)
    try:
        viplab.open()
        yield viplab
    finally:
        viplab.close()


def ours_status(lab: VipLab, host: Host) -> dict[str, Any]:
    status = lab.status(host)
    assert status is not None, f"{host.name}: `agenda-vrrpd status --json` did not answer"
    (instance,) = status["instances"]
    return instance


def wait_ours(lab: VipLab, host: Host, state: str, master: str | None, timeout: float = 5) -> dict[str, Any]:
    """agenda-vrrpd on ``host`` reports ``state`` (and ``master`` as the master's address when given)."""
    deadline = time.monotonic() + timeout
    while True:
        instance = ours_status(lab, host)
        if instance["state"] == state and (master is None or instance["master_address"] == master):
            return instance
        if time.monotonic() >= deadline:
            pytest.fail(
                f"{host.name}: agenda-vrrpd is {instance['state']} (master "
                f"{instance['master_address']}), wanted {state} (master {master}); {lab.describe()}"
            )
        time.sleep(0.1)


def check_ours(lab: VipLab, master: Host) -> None:
    """Whichever host runs agenda-vrrpd agrees with the addresses: MASTER iff it holds the VIP."""
    for host in lab.hosts:
        if host.impl == "ours" and host.alive and lab.running(host):
            if host is master:
                instance = wait_ours(lab, host, "MASTER", None)
                assert instance["holds_vips"] is True
            else:
                instance = wait_ours(lab, host, "BACKUP", master.address)
                assert instance["holds_vips"] is False


def holds(lab: VipLab, expected: Host, timeout: float = 5) -> None:
    """Exactly ``expected`` holds the VIP (every host's addresses), stays so, and answers through it."""
    lab.wait_holders(expected=expected.name, timeout=timeout, settle=SETTLE)
    lab.wait_answer(expected.name, timeout=5)
    check_ours(lab, expected)


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
@pytest.mark.parametrize(
    ("high", "low"),
    [("ours", "keepalived"), ("keepalived", "ours")],
    ids=["ours-master-keepalived-backup", "keepalived-master-ours-backup"],
)
def test_interop_with_keepalived(lab: VipLab, high: str, low: str, unicast: bool) -> None:
    first, second = lab.hosts
    lab.reset()
    lab.configure(first, high, advert_int=ADVERT_INT, priority=150, unicast=unicast)
    lab.configure(second, low, advert_int=ADVERT_INT, priority=100, unicast=unicast)
    lab.start(second)  # the backup first: the master-to-be must win by priority, not by arriving first
    lab.start(first)
    ours = first if high == "ours" else second

    # Exactly one master: the higher priority.
    holds(lab, first, timeout=10)

    # The master's whole host dies: the backup takes the VIP.
    lab.kill(first)
    holds(lab, second, timeout=5)

    # It comes back: preemption follows priority, and the backup lets go.
    lab.recreate(first)
    holds(lab, first, timeout=10)

    # The backup's host dies and comes back: the master keeps the VIP throughout.
    lab.kill(second)
    holds(lab, first)
    lab.recreate(second)
    holds(lab, first)

    # Orderly stop of the master (priority 0 on the wire, VIP removed): the other takes over at once.
    lab.stop(first)
    assert lab.vip not in lab.addresses(first), f"{first.name} kept the VIP after an orderly stop"
    holds(lab, second, timeout=3)
    lab.start(first)
    holds(lab, first, timeout=5)

    # agenda-vrrpd heard keepalived and dropped none of its packets as malformed.
    instance = ours_status(lab, ours)
    counters = instance["counters"]
    assert counters["adverts_received"] > 0, f"no adverts received from keepalived: {counters}"
    bad = {reason: n for reason, n in counters["dropped"].items() if reason in INCOMPATIBLE and n}
    assert not bad, f"agenda-vrrpd dropped keepalived's packets: {bad} (all counters: {counters})"
    for reason in ("checksum", "version"):
        assert counters["dropped"].get(reason, 0) == 0
