"""agenda-vrrpd on a real link (network namespaces): election, failover, hand-over, partitions,
link loss, track scripts, hostile packets and start-up errors. Advert interval 0.1 s throughout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address

import yaml

from agenda.vrrp.packet import Advertisement, encode

from ..conftest import wait_until
from .conftest import VIP, Link, wait_state


def start_all(link: Link) -> None:
    for host in link.hosts:
        host.start()


def test_the_highest_priority_holds_the_vip_alone_and_the_others_are_backups(link: Link):
    start_all(link)
    assert link.wait_single_holder("h1") == "h1"
    h1, h2, h3 = link.hosts
    wait_state(h2, "BACKUP")
    wait_state(h3, "BACKUP")
    status = h2.status()["instances"][0]
    assert status["master_address"] == h1.address
    assert status["counters"]["adverts_received"] > 0
    assert h1.status()["instances"][0]["holds_vips"] is True
    assert "INSTANCE VI_1 MASTER 150" in h1.notifications()


def test_sigkill_of_the_master_moves_the_vip_and_a_restart_preempts_back(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, h2, _ = link.hosts
    h1.signal(signal.SIGKILL)
    wait_until(lambda: h2.holds_vip(), 10, 0.02, "h2 taking the VIP after h1's daemon was killed")
    # A killed daemon cannot clean up: its address stays until `release` (systemd's ExecStopPost)
    # or its next start removes it.
    assert h1.holds_vip()
    released = h1.vrrpd("release")
    assert released.returncode == 0, released.stderr
    assert "released 1 address" in released.stdout
    assert link.wait_single_holder("h2") == "h2"
    h1.start()
    assert link.wait_single_holder("h1") == "h1"
    wait_state(h2, "BACKUP")


def test_release_after_a_sigkill_hands_over_with_priority_zero(link: Link):
    # advert_int 1 s: without the hand-over the backup would wait 3 + skew seconds.
    for host in link.hosts:
        host.write_config(advert_int=1.0)
    start_all(link)
    link.wait_single_holder("h1", timeout=20)
    h1, h2, _ = link.hosts
    wait_state(h2, "BACKUP")
    h1.signal(signal.SIGKILL)
    released = h1.vrrpd("release")
    assert released.returncode == 0, released.stderr
    assert link.wait_single_holder("h2") == "h2"
    assert h2.status()["instances"][0]["transitions"][-1]["reason"] == "the master left (priority 0)"


def test_an_orderly_stop_hands_over_with_priority_zero_and_runs_notify_stop(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, _h2, _ = link.hosts
    h1.signal(signal.SIGTERM)
    assert h1.proc is not None
    assert h1.proc.returncode == 0
    assert link.wait_single_holder("h2") == "h2"
    assert not h1.holds_vip()
    assert h1.notifications()[-1] == "INSTANCE VI_1 STOP 150"


def test_a_partition_gives_two_masters_and_healing_leaves_exactly_one(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, h2, h3 = link.hosts
    link.cut(h1)
    # Each side elects its own master: the isolated h1 keeps the VIP, h2 takes it on the other side.
    wait_until(lambda: h2.holds_vip() and h1.holds_vip(), 10, 0.02, "a master on each side of the cut")
    # A client on h2's side (the switch's own address) learns the VIP at h2's MAC...
    wait_until(lambda: link.client_arp_entry() == h2.mac(), 10, 0.2, "the client resolving the VIP to h2")
    time.sleep(1.1)  # past the kernel's arp locktime (1 s), so a later announcement may override it
    link.heal(h1)
    assert link.wait_single_holder("h1") == "h1"
    wait_state(h2, "BACKUP")
    wait_state(h3, "BACKUP")
    # ...and follows it back to h1 without waiting for its cache to expire (h1 announces the VIP
    # when it hears h2's lower-priority adverts; the Molecule scenario's network cut is where a
    # missing announcement showed, as 54 s of silence at the VIP).
    wait_until(lambda: link.client_arp_entry() == h1.mac(), 5, 0.05, "the client resolving the VIP to h1")


def test_a_link_down_puts_the_master_in_fault_and_the_vip_moves(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, _h2, _ = link.hosts
    subprocess.run(["ip", "netns", "exec", h1.ns, "ip", "link", "set", "eth0", "down"], check=True)
    wait_state(h1, "FAULT")
    assert link.wait_single_holder("h2") == "h2"
    subprocess.run(["ip", "netns", "exec", h1.ns, "ip", "link", "set", "eth0", "up"], check=True)
    assert link.wait_single_holder("h1") == "h1"
    assert "INSTANCE VI_1 FAULT 150" in h1.notifications()


def test_a_failing_weight_zero_track_script_moves_the_vip_and_recovery_takes_it_back(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, _h2, _ = link.hosts
    h1.health_file.unlink()
    wait_state(h1, "FAULT")
    assert link.wait_single_holder("h2") == "h2"
    assert h1.status()["track_scripts"] == {"service": False}
    h1.health_file.touch()
    assert link.wait_single_holder("h1") == "h1"


def test_a_negative_weight_lowers_the_priority_and_a_backup_preempts(link: Link):
    h1, _h2, _h3 = link.hosts
    for host in link.hosts:
        host.write_config()
    # Rewrite h1's track script as weight -20: failing drops it from 150 to 130, below h2's 140.
    config = yaml.safe_load(h1.config_path.read_text())
    config["track_scripts"][0]["weight"] = -20
    h1.config_path.write_text(yaml.safe_dump(config))
    start_all(link)
    link.wait_single_holder("h1")
    h1.health_file.unlink()
    assert link.wait_single_holder("h2") == "h2"
    wait_until(lambda: h1.status()["instances"][0]["priority"] == 130, 5, 0.05, "h1 at priority 130")
    wait_state(h1, "BACKUP")


def test_unicast_peers_elect_one_master(link: Link):
    addresses = [h.address for h in link.hosts]
    for host in link.hosts:
        host.write_config(unicast_peers=[a for a in addresses if a != host.address])
    start_all(link)
    assert link.wait_single_holder("h1") == "h1"
    link.hosts[0].signal(signal.SIGTERM)
    assert link.wait_single_holder("h2") == "h2"


def test_hostile_packets_are_counted_dropped_and_change_nothing(link: Link):
    start_all(link)
    link.wait_single_holder("h1")
    h1, h2, _ = link.hosts
    sender, group = IPv4Address(f"{VIP.rsplit('.', 1)[0]}.1"), IPv4Address("224.0.0.18")
    # A would-be master with priority 254: it must not win with any of these defects.
    good = encode(Advertisement(51, 254, 10, (IPv4Address(VIP),)), sender, group)
    bad_checksum = good[:6] + bytes([good[6] ^ 0xFF]) + good[7:]
    version_2 = bytes([0x21]) + good[1:]
    wrong_vips = encode(Advertisement(51, 254, 10, (IPv4Address("192.0.2.1"),)), sender, group)
    other_vrid = encode(Advertisement(52, 254, 10, (IPv4Address(VIP),)), sender, group)
    for _ in range(5):
        link.send_raw(bad_checksum)
        link.send_raw(version_2)
        link.send_raw(wrong_vips)
        link.send_raw(other_vrid)
        link.send_raw(good, ttl=64)
        link.send_raw(b"\x31")

    def all_counted() -> dict[str, int] | None:
        dropped = h2.status()["instances"][0]["counters"]["dropped"]
        reasons = ("checksum", "version", "address_list", "vrid", "ttl", "length")
        return dropped if all(dropped.get(r, 0) >= 5 for r in reasons) else None

    dropped = wait_until(all_counted, 10, 0.1, "every hostile packet counted")
    assert set(dropped) <= {"checksum", "version", "address_list", "vrid", "ttl", "length"}
    assert link.holders() == ["h1"]
    assert h1.proc is not None
    assert h1.proc.poll() is None
    assert h2.state() == "BACKUP"
    metrics = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            h2.ns,
            sys.executable,
            "-c",
            "import urllib.request;print(urllib.request.urlopen("
            "'http://127.0.0.1:9110/metrics').read().decode())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'agenda_vrrp_packets_dropped_total{reason="checksum"}' in metrics
    assert 'agenda_vrrp_state{instance="VI_1"} 1' in metrics


def test_a_missing_interface_and_a_bad_config_fail_at_start_naming_them(link: Link):
    h1 = link.hosts[0]
    h1.write_config(interface="nosuch0")
    run = subprocess.run(
        ["ip", "netns", "exec", h1.ns, sys.executable, "-m", "agenda.vrrp", "--config", str(h1.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("vrrpd: interface 'nosuch0' does not exist")
    h1.write_config(interface="eth0", priority=300)
    run = subprocess.run(
        [sys.executable, "-m", "agenda.vrrp", "--config", str(h1.config_path), "check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "vrrpd: config: instances.0.priority: must be <= 255, got 300"
