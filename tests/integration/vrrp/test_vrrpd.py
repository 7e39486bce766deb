"""agenda-vrrpd on a real link (network namespaces): election, failover, hand-over, partitions,
link loss, track scripts, hostile packets and start-up errors. Advert interval 0.1 s throughout.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from agenda.vrrp.packet import Advertisement, encode

from ..conftest import wait_until
from .conftest import VIP, Host, Link, in_ns, sniff_adverts, wait_state


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


# ------------------------------------------------------------------ reload (SIGHUP) without a VIP move


def reload_window(link: Link, *, seconds: float, until: Callable[[], bool]) -> list[str]:
    """Poll who holds the VIP until `until()` holds and `seconds` more have passed (bounded by 30 s);
    return every distinct holder list seen (each poll is one `ip addr` per host, ~10 ms)."""
    seen: list[str] = []
    done_at: float | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        holders = ",".join(link.holders())
        if holders not in seen:
            seen.append(holders)
        if done_at is None and until():
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at >= seconds:
            return seen
    raise AssertionError(f"the reload did not complete within 30 s (holders seen: {seen})")


def start_master_then_backup(master: Host, backup: Host) -> None:
    """advert_int 1 s; the backup starts once the master is master, so that it never was one (two
    daemons starting together both wait a Master_Down_Interval and may both take the VIP briefly)."""
    for host in (master, backup):
        host.write_config(advert_int=1.0)
    master.start()
    wait_state(master, "MASTER", timeout=20)
    backup.start()
    wait_until(
        lambda: backup.status()["instances"][0]["counters"]["adverts_received"] > 0,
        20,
        0.05,
        f"{backup.name} hearing {master.name}",
    )
    wait_state(backup, "BACKUP")


def test_sighup_reexecutes_the_master_in_place_and_the_vip_never_moves(link: Link, tmp_path: Path):
    # advert_int 1 s, as deployed: the backup's Master_Down_Interval is 3 s + skew (3.45 s at 140).
    h1, h2, _ = link.hosts
    start_master_then_backup(h1, h2)
    assert h1.proc is not None
    before = h1.status()
    assert before["pid"] == h1.proc.pid
    assert before["reloads"] == 0
    notified = len(h1.notifications())

    def reloaded() -> bool:
        try:
            status = h1.status()
        except OSError:
            return False  # the status server is between two processes
        return status["reloads"] == 1 and status["instances"][0]["state"] == "MASTER"

    with sniff_adverts(link, tmp_path) as adverts, h1.address_events() as events:
        h1.proc.send_signal(signal.SIGHUP)
        # Past the reload, three advert intervals: a backup that lost the master would take over.
        holders_seen = reload_window(link, seconds=3.5, until=reloaded)
        deleted = [
            line for line in events.read_text().splitlines() if "Deleted" in line and f" {VIP}/" in line
        ]
        assert deleted == [], deleted

    assert holders_seen == ["h1"], f"the VIP moved: holders seen {holders_seen}"
    after = h1.status()
    assert h1.proc.poll() is None
    assert after["pid"] == h1.proc.pid == before["pid"]
    assert after["reloads"] == 1
    assert after["started"] > before["started"]
    assert after["reload_error"] is None
    instance = after["instances"][0]
    assert instance["state"] == "MASTER"
    assert instance["holds_vips"] is True
    assert instance["transitions"] == [
        {
            "at": instance["transitions"][0]["at"],
            "from": "INIT",
            "to": "MASTER",
            "reason": "resumed after reload",
        }
    ]
    assert len(h1.notifications()) == notified  # not a transition: no notify_master again
    backup = h2.status()["instances"][0]
    assert backup["state"] == "BACKUP"
    assert [t["to"] for t in backup["transitions"]] == ["BACKUP"]  # never MASTER, before or after
    assert h2.notifications() == ["INSTANCE VI_1 BACKUP 140"]
    reloaded_lines = [json.loads(line) for line in h1.log.splitlines() if '"reloaded"' in line]
    assert reloaded_lines, h1.log[-2000:]
    assert reloaded_lines[-1]["resumed"] == ["VI_1"]

    # The advert gap the backup saw: the old process's last advert (sent just before the exec) to
    # the new process's first (sent before it serves /status or runs a track script).
    ours = [at for at, source, _ in adverts.seen() if source == h1.address]
    gaps = [b - a for a, b in itertools.pairwise(ours)]
    exec_gap = next(b - a for a, b in itertools.pairwise(ours) if a < after["started"] <= b)
    print(f"\nadvert gap over the re-exec: {exec_gap * 1000:.0f} ms; largest gap {max(gaps) * 1000:.0f} ms")
    (tmp_path / "gap").write_text(f"{exec_gap:.6f} {max(gaps):.6f}\n")
    # Not asserted as a time (a loaded machine stretches the exec): what a gap must never do, make the
    # backup take over (a gap past its 3.45 s Master_Down_Interval), is asserted above, and the gap is
    # printed.

    # After the resume, the ordinary state machine: a failing weight-0 check hands the VIP over.
    h1.health_file.unlink()
    wait_state(h1, "FAULT")
    assert link.wait_single_holder("h2") == "h2"


def test_sighup_with_a_broken_config_keeps_the_old_daemon_running_as_master(link: Link):
    h1, h2, _ = link.hosts
    start_master_then_backup(h1, h2)
    assert h1.proc is not None
    before = h1.http_status()
    h1.write_config(priority=300)  # refused by check-config
    h1.proc.send_signal(signal.SIGHUP)
    error = wait_until(lambda: h1.http_status()["reload_error"], 30, 0.1, "h1 refusing the reload")
    assert "instances.0.priority: must be <= 255, got 300" in error
    assert "reload refused" in h1.log
    assert "instances.0.priority: must be <= 255, got 300" in h1.log
    after = h1.http_status()
    assert after["pid"] == before["pid"] == h1.proc.pid
    assert after["started"] == before["started"]  # the same process image: no exec happened
    assert after["reloads"] == 0
    assert after["instances"][0]["state"] == "MASTER"
    assert after["instances"][0]["priority"] == 150  # still the old configuration
    assert link.holders() == ["h1"]
    assert h2.state() == "BACKUP"
    # Fixed, a second SIGHUP goes through.
    h1.write_config(priority=150)
    h1.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: h1.http_status()["reloads"] == 1, 30, 0.1, "h1 reloaded")
    assert h1.http_status()["reload_error"] is None
    assert link.holders() == ["h1"]


def test_a_reload_applies_a_changed_vip_list_without_releasing_the_kept_one(link: Link):
    # One host: the address list is part of the advert, so peers would need the same change.
    h1 = link.hosts[0]
    other = f"{VIP.rsplit('.', 1)[0]}.101"
    h1.write_config(advert_int=1.0, virtual_ipaddress=[f"{VIP}/24", f"{other}/24"])
    h1.start()
    wait_state(h1, "MASTER", timeout=20)
    assert h1.proc is not None
    h1.write_config(virtual_ipaddress=[f"{VIP}/24"], priority=120)
    with h1.address_events() as events:
        h1.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: h1.http_status()["reloads"] == 1, 30, 0.05, "h1 reloaded")
        text = events.read_text()
    assert [line for line in text.splitlines() if "Deleted" in line and f" {VIP}/" in line] == []
    assert any("Deleted" in line and f" {other}/" in line for line in text.splitlines()), text
    status = h1.http_status()["instances"][0]
    assert (status["state"], status["priority"], status["vips"]) == ("MASTER", 120, [f"{VIP}/24"])
    addresses = in_ns(h1.ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f" {VIP}/24" in addresses
    assert f" {other}/" not in addresses
