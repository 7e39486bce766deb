"""Capture Debian keepalived's VRRP advertisements in the VIP lab and keep them as codec test fixtures.

    python bench/vip_capture.py [--out tests/unit/vrrp/fixtures]

Two hosts of the VIP lab (bench/viplab.py): h1 runs keepalived alone (so it becomes master), h2 runs
``tcpdump -i eth0 -n -U -c N -w FILE 'ip proto 112 ...'`` and sees exactly what crossed the bridge. For
every case below the first matching frame is cut down to its IPv4 packet (IP header + VRRP message,
Ethernet header dropped, length from the IP header) and written to ``<out>/<name>.bin``; ``manifest.json``
records what each file holds (decoded with bench/vip_util.py's small decoder, checksum verified) and the
keepalived.conf that produced it, and ``README.md`` says how it was made.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cluster import BenchError, Reaper, run_under_reaper
from bench.vip_util import decode_vrrp, ipv4_from_frame, read_pcap
from bench.viplab import INTERFACE, REPO, VipLab

PROG = "vip_capture"
DEFAULT_OUT = REPO / "tests" / "unit" / "vrrp" / "fixtures"


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    advert_int: float = 1.0
    priority: int = 150
    vips: int = 1
    version: int = 3
    unicast: bool = False
    stop: bool = False  # capture the priority-0 advert keepalived sends when it stops (SIGTERM)
    extra_bpf: str = ""
    notes: list[str] = field(default_factory=list)


CASES = (
    Case("keepalived_v3_int100cs_prio150_1vip", "master's periodic advert, advert_int 1 s, one VIP"),
    Case("keepalived_v3_int10cs_prio150_1vip", "master's periodic advert, advert_int 0.1 s, one VIP",
         advert_int=0.1),
    Case("keepalived_v3_int100cs_prio150_2vips", "master's periodic advert, advert_int 1 s, two VIPs",
         vips=2),
    Case("keepalived_v3_int100cs_prio0_1vip", "the priority-0 advert keepalived's master sends on SIGTERM",
         stop=True, extra_bpf="ip[22] == 0"),
    Case("keepalived_v3_int100cs_prio150_1vip_unicast",
         "master's periodic advert sent by unicast (unicast_src_ip + unicast_peer h2)", unicast=True),
    Case("keepalived_v2_int1s_prio150_1vip",
         "VRRPv2 (no vrrp_version 3): agenda-vrrpd must drop it (reason 'version')", version=2),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"default {DEFAULT_OUT.relative_to(REPO)}")
    parser.add_argument("--only", action="append", metavar="NAME", help="capture only this case (repeatable)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the hosts' configs, logs and pcaps")
    return parser


def _say(text: str = "") -> None:
    print(text, flush=True)


def capture_case(lab: VipLab, case: Case) -> tuple[bytes, str, str]:
    """(the IPv4 packet, h1's keepalived.conf, the tcpdump command run in h2) for one case."""
    sender, listener = lab.hosts
    lab.reset()
    lab.configure(sender, "keepalived", advert_int=case.advert_int, priority=case.priority,
                  vips=lab.vips[: case.vips], version=case.version, unicast=case.unicast)
    conf = (sender.dir / "keepalived.conf").read_text()
    bpf = f"ip proto 112 and src host {sender.address}"
    if case.extra_bpf:
        bpf += f" and {case.extra_bpf}"
    if case.stop:
        lab.start(sender)
        lab.wait_holders(expected=sender.name, timeout=15 + 4 * case.advert_int)
        capture = lab.capture(listener, bpf, count=1, timeout=20)
        lab.stop(sender)
    else:
        capture = lab.capture(listener, bpf, count=2, timeout=20 + 4 * case.advert_int)
        lab.start(sender)
    records = read_pcap(capture.wait())
    packets = [p for p in (ipv4_from_frame(r.data, r.linktype) for r in records) if p is not None]
    if not packets:
        raise BenchError(f"{case.name}: no VRRP packet from {sender.name} captured ({lab.describe()})")
    return packets[0], conf, shlex.join(capture.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_under_reaper(PROG, args.keep_tmp, lambda reaper: _main(args, reaper))


def _main(args: argparse.Namespace, _reaper: Reaper) -> int:
    cases = [c for c in CASES if not args.only or c.name in args.only]
    if not cases:
        _say(f"{PROG}: no such case: {args.only}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    files: dict[str, Any] = manifest.get("files", {})
    # The default subnet, whatever $VIPLAB_SUBNET says: the fixtures' addresses stay the documented ones.
    lab = VipLab(REPO, hosts=2, subnet="192.168.58.0/24", vip_count=2, keep=args.keep_tmp, log=_say)
    try:
        lab.open()
        version = lab.exec(lab.hosts[0], ["dpkg-query", "-W", "-f=${Version}", "keepalived"]).strip()
        banner = lab.exec(lab.hosts[0], ["sh", "-c", "keepalived --version 2>&1"], check=False)
        tcpdump = lab.exec(lab.hosts[0], ["dpkg-query", "-W", "-f=${Version}", "tcpdump"]).strip()
        for case in cases:
            packet, conf, tcpdump_command = capture_case(lab, case)
            advert = decode_vrrp(packet)
            if not advert.checksum_ok:
                raise BenchError(f"{case.name}: keepalived's checksum does not verify: {advert.as_dict()}")
            (args.out / f"{case.name}.bin").write_bytes(packet)
            files[f"{case.name}.bin"] = {
                "what": case.what,
                "bytes": len(packet),
                **advert.as_dict(),
                "tcpdump_command": tcpdump_command,
                "keepalived_conf": conf,
            }
            _say(f"{case.name}.bin: {len(packet)} bytes, v{advert.version} vrid {advert.vrid} priority "
                 f"{advert.priority} interval {advert.interval_seconds:g} s {advert.src} -> {advert.dst} "
                 f"addresses {advert.addresses}")
    finally:
        lab.close()
    manifest = {
        "captured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "keepalived": version,
        "keepalived_banner": banner.strip().splitlines()[0] if banner.strip() else "",
        "tcpdump": tcpdump,
        "kernel": platform.release(),
        "interface": INTERFACE,
        "files": dict(sorted(files.items())),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (args.out / "README.md").write_text(readme(manifest))
    _say(f"wrote {len(cases)} fixture(s), manifest.json and README.md to {args.out}")
    return 0


def readme(manifest: dict[str, Any]) -> str:
    rows = []
    for name, info in manifest["files"].items():
        interval = (f"{info['interval_field']} cs ({info['interval_seconds']:g} s)" if info["version"] == 3
                    else f"{info['interval_field']} s")
        rows.append(
            f"| `{name}` | {info['bytes']} | v{info['version']} | {info['vrid']} | {info['priority']} | "
            f"{interval} | {', '.join(info['addresses'])} | {info['src']} → {info['dst']} | "
            f"{info['ttl']} | `{info['checksum']}` | {info['what']} |"
        )
    first = f"{CASES[0].name}.bin"
    infos = manifest["files"].values()
    tos = "/".join(sorted({i["ip_tos"] for i in infos}))
    df = "/".join(sorted({"set" if i["ip_dont_fragment"] else "not set" for i in infos}))
    ids = "/".join(str(n) for n in sorted({i["ip_id"] for i in infos}))
    chosen = manifest["files"].get(first, next(iter(manifest["files"].values())))
    sample, command = chosen["keepalived_conf"], chosen["tcpdump_command"]
    return f"""# VRRP advertisements captured from Debian's keepalived

Each `.bin` file is **one raw IPv4 packet** exactly as it crossed the wire: the 20-byte IPv4 header
followed by the VRRP message (no Ethernet header, no padding; its length is the IP total length).
Captured on {manifest['captured']} from Debian 12's **keepalived {manifest['keepalived']}**
(`{manifest['keepalived_banner']}`), tcpdump {manifest['tcpdump']}, kernel {manifest['kernel']}.
`manifest.json` holds every decoded field of every file (and the exact keepalived.conf that produced
it), for tests to compare against; every checksum in it was verified (VRRPv3: over the IPv4
pseudo-header, RFC 5798 §5.2.8; VRRPv2: over the VRRP message only).

## How they were made

```sh
make image                                      # the lab's base image (debootstrap), if not built yet
.venv/bin/python bench/vip_capture.py --out tests/unit/vrrp/fixtures   # about a minute
```

`bench/vip_capture.py` starts two containers of the VIP lab (`bench/viplab.py`: the lab base image plus
Debian's `keepalived` and `tcpdump` packages) on a Docker bridge network 192.168.58.0/24 of its own:
h1 = 192.168.58.11 runs keepalived **alone** (so it becomes master after its master-down interval),
h2 = 192.168.58.12 runs nothing but the capture, on its `{manifest['interface']}`, so each packet is what
h1 put on the link:

```sh
# inside h2 (started before keepalived on h1, or before its SIGTERM for the priority-0 case)
{command}
# inside h1
keepalived --dont-fork --log-console --log-detail --vrrp --use-file /viplab/keepalived.conf
```

(that is the command for `{first}`; each file's own is in `manifest.json`). The first captured frame
is kept (Ethernet header cut off). For the priority-0 file the filter adds `and ip[22] == 0` (the VRRP
priority byte) and `-c 1`: keepalived is first left to become master, then h2 starts listening and h1's
keepalived gets SIGTERM; keepalived's master then sends priority 0 and removes the VIP.
h1's keepalived.conf for `{first}` was:

```
{sample.rstrip()}
```

and the others differ only as the table says (`advert_int 0.1`; a second VIP `192.168.58.101/24 dev eth0`;
`unicast_src_ip 192.168.58.11` + `unicast_peer {{ 192.168.58.12 }}`; `vrrp_version 2`); each file's exact
configuration is in `manifest.json`.

## The files

All sent by h1 (192.168.58.11), IP protocol 112, VRRP type 1 (advertisement), VRID 51, TTL 255;
IPv4 header as keepalived builds it on its raw socket: no options (20 bytes), TOS {tos}, DF {df},
IP ID {ids} (per file in `manifest.json`).

| file | bytes | VRRP | VRID | priority | interval | addresses | src → dst | TTL | checksum | what |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


if __name__ == "__main__":
    sys.exit(main())
