"""agenda-redis-supervisor as deployed: a hardened unit on every Redis host, exactly one acting, and
the primary it recorded in the DB Service being the one Redis server that answers as primary.
Non-disruptive: safe against any running deployment."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from deployment.support import db_client, group_hosts, group_specs, host, host_vars

testinfra_hosts = group_specs("redis")

UNIT = "agenda-redis-supervisor"
CONFIG = "/etc/agenda/redis-supervisor/supervisor.yml"
STATUS = f"/opt/agenda/venv/bin/{UNIT} --config {CONFIG} status --json"
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}


def status(target: Any) -> dict[str, Any]:
    with target.sudo():
        return json.loads(target.check_output(STATUS))


def test_the_supervisor_runs_hardened_without_privileges_and_keeps_its_password_private(host):
    unit = host.service(UNIT)
    assert unit.is_running
    assert unit.is_enabled
    flags = " ".join(f"-p {name}" for name in (*HARDENING, "User", "MainPID"))
    output = host.check_output(f"systemctl show {flags} {UNIT}")
    props = dict(line.split("=", 1) for line in output.splitlines())
    assert {name: props[name] for name in HARDENING} == HARDENING
    assert props["User"] == "agenda"
    proc = host.file(f"/proc/{props['MainPID']}/status").content_string
    assert "CapEff:\t0000000000000000" in proc
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "agenda", 0o640)
    with host.sudo():
        password = yaml.safe_load(config.content_string)["redis_password"]
    assert len(password) >= 32
    assert password not in host.check_output("ps -eo args")
    assert password not in host.check_output(f"systemctl show -p Environment -p ExecStart {UNIT}")


def test_exactly_one_supervisor_acts_and_its_record_names_the_one_primary():
    views = {name: status(host(name)) for name in group_hosts("redis")}
    acting = [name for name, view in views.items() if view["acting"]]
    assert len(acting) == 1, f"acting: {acting}"
    view = views[acting[0]]
    assert view["primary_ok"], view["summary"]
    with db_client() as db:
        record = db.get("/system/redis/primary")["value"]
    assert view["recorded"]["epoch"] == record["epoch"]
    primaries = [s["name"] for s in view["servers"] if s["role"] == "master"]
    assert primaries == [f"{record['host']}:{record['port']}"]
    replicas = [s for s in view["servers"] if s["role"] == "slave"]
    assert len(replicas) == len(group_hosts("redis")) - 1
    assert all(r["master"] == primaries[0] for r in replicas)
    addresses = {host_vars(name)["agenda_host_ip"] for name in group_hosts("redis")}
    assert {s["host"] for s in view["servers"]} == addresses


def test_an_invitation_is_published_to_the_invitees_channel_after_it_is_stored():
    """End to end: a user invites another through a gateway; the User Service stores the
    notification and publishes it on Redis, where a subscriber for the invitee receives it with
    the cursor the DB stored (what a live stream will use as its event id)."""
    from agenda.messaging import RedisLocator
    from deployment.support import PKI_DIR, gateway_urls, tls_settings
    from deployment.test_services import Client, new_account, tomorrow

    base = gateway_urls()[0]
    organizer, invitee = Client(base), Client(base)
    organizer_name, organizer_password = new_account(organizer)
    invitee_name, invitee_password = new_account(invitee)
    organizer.login(organizer_name, organizer_password)
    invitee.login(invitee_name, invitee_password)
    settings = tls_settings()
    with db_client() as db:
        locator = RedisLocator(
            db,
            username=host_vars(group_hosts("redis")[0]).get("redis_acl_services_user", "agenda"),
            password=(PKI_DIR / "redis-services-password").read_text().strip(),
            ssl_ca_certs=settings["verify"],
            ssl_certfile=settings["cert"][0],
            ssl_keyfile=settings["cert"][1],
            watch=False,
        )
        try:
            listener = locator.client().pubsub()
            listener.subscribe(f"notifications:{invitee_name}")
            assert listener.get_message(timeout=5)["type"] == "subscribe"
            event, _span = tomorrow("Published invitation")
            created = organizer.call("POST", "/v1/events", json={**event, "participants": [invitee_name]})
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 15
            message = None
            while message is None and time.monotonic() < deadline:
                message = listener.get_message(ignore_subscribe_messages=True, timeout=1)
            assert message is not None, "the invitation never reached the invitee's channel"
            published = json.loads(message["data"])
            stored = invitee.call("GET", "/v1/notifications").json()["notifications"]
            assert published["cursor"] in [note.get("cursor") for note in stored], (published, stored)
            listener.close()
        finally:
            locator.close()
