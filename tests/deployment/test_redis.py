"""Redis as deployed: Debian's redis-server on every host of the redis group, as the redis user,
TLS only with client certificates from the deployment CA, ACL users with passwords (the default
user is off), one primary that every other server replicates. Checked with redis-cli on the hosts,
as the supervisor and the services talk to Redis. Non-disruptive: safe against any running
deployment (it only publishes on a channel nobody listens to)."""

from __future__ import annotations

import hashlib
import shlex
import time
import uuid
from typing import Any

from deployment.support import PKI_DIR, group_hosts, group_specs, host, host_vars

testinfra_hosts = group_specs("redis")

UNIT = "redis-server"
CONFIG_DIR = "/etc/redis"
PKI = "/etc/agenda/pki"
SETTLE_TIMEOUT = 60
# What the services send (agenda.messaging.publisher): PUBLISH in a script, which a replica refuses.
PUBLISH_SCRIPT = "#!lua flags=allow-oom\nreturn redis.call('PUBLISH', ARGV[1], ARGV[2])\n"


# Each account: the inventory variable naming its ACL user, and the role's default name.
USERS = {
    "supervisor": ("redis_acl_supervisor_user", "supervisor"),
    "services": ("redis_acl_services_user", "agenda"),
}


def username(account: str) -> str:
    variable, default = USERS[account]
    return str(host_vars(group_hosts("redis")[0]).get(variable, default))


def password(account: str) -> str:
    """An account's password as the role generated it on the controller (supervisor, services,
    replication)."""
    return (PKI_DIR / f"redis-{account}-password").read_text().split()[0]


def address(variables: dict[str, Any]) -> tuple[str, int]:
    return str(variables["agenda_host_ip"]), int(variables.get("redis_port", 6379))


def redis_cli(
    target: Any,
    *args: str,
    account: str | None = "supervisor",
    secret: str | None = None,
    tls: bool = True,
    client_cert: bool = True,
) -> Any:
    """redis-cli on the host against its own server, at the host's address. The password goes in
    the environment (REDISCLI_AUTH), as the role's own check passes it. redis-cli exits 0 on an
    error reply: callers look at what it printed."""
    ip, port = address(target.ansible.get_variables())
    options = ["-h", ip, "-p", str(port)]
    if tls:
        options += ["--tls", "--cacert", f"{PKI}/ca.crt"]
        if client_cert:
            options += ["--cert", f"{PKI}/host.crt", "--key", f"{PKI}/host.key"]
    environment = ""
    if account is not None:
        options += ["--user", username(account)]
        environment = f"REDISCLI_AUTH={shlex.quote(secret if secret is not None else password(account))} "
    command = environment + " ".join(shlex.quote(word) for word in ["redis-cli", *options, *args])
    with target.sudo():
        return target.run(command)


def replication(target: Any) -> dict[str, str]:
    """`INFO replication` as key: value."""
    output = redis_cli(target, "info", "replication").stdout
    return dict(line.strip().split(":", 1) for line in output.splitlines() if ":" in line)


# ------------------------------------------------------------------------------------ on each host


def test_debians_redis_server_runs_as_redis(host):
    unit = host.service(UNIT)
    assert unit.is_running
    assert unit.is_enabled
    props = dict(
        line.split("=", 1)
        for line in host.check_output(f"systemctl show -p User -p MainPID {UNIT}").splitlines()
    )
    assert props["User"] == "redis"
    status = host.file(f"/proc/{props['MainPID']}/status").content_string
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["Uid"].split()[1]) == host.user("redis").uid


def test_it_listens_with_tls_only_on_the_host_address_and_loopback(host):
    ip, port = address(host.ansible.get_variables())
    with host.sudo():
        listeners = host.check_output("ss -Hltnp").splitlines()
    local = sorted(line.split()[3] for line in listeners if '"redis-server"' in line)
    assert local == sorted({f"{ip}:{port}", f"127.0.0.1:{port}"}), listeners
    # No plain-text port (port 0), and the TLS port does not speak plain text.
    plain = redis_cli(host, "ping", tls=False)
    assert "PONG" not in plain.stdout


def test_only_accounts_with_a_password_and_a_client_certificate_get_in(host):
    assert redis_cli(host, "ping").stdout.strip() == "PONG"
    assert redis_cli(host, "role").stdout.splitlines()[0] in ("master", "slave")
    default = redis_cli(host, "ping", account=None)
    assert "PONG" not in default.stdout
    assert "NOAUTH" in default.stdout + default.stderr
    wrong = redis_cli(host, "ping", secret="not-the-password")
    assert "PONG" not in wrong.stdout
    assert "WRONGPASS" in wrong.stdout + wrong.stderr
    uncertified = redis_cli(host, "ping", client_cert=False)
    assert "PONG" not in uncertified.stdout
    assert uncertified.rc != 0
    # The supervisor has no business with data.
    assert "NOPERM" in redis_cli(host, "get", "anything").stdout


def test_configuration_is_private_and_the_passwords_stay_off_command_lines(host):
    with host.sudo():
        for name in ("agenda.conf", "users.acl"):
            file = host.file(f"{CONFIG_DIR}/{name}")
            assert (file.user, file.mode) == ("redis", 0o640), name
        # redis.conf is Redis's own to rewrite (CONFIG REWRITE copies masterauth into it).
        main = host.file(f"{CONFIG_DIR}/redis.conf")
        assert main.user == "redis"
        assert main.mode & 0o007 == 0, oct(main.mode)
        key = host.file(f"{CONFIG_DIR}/tls/host.key")
        assert (key.user, key.mode) == ("redis", 0o600)
        contents = {
            name: host.file(f"{CONFIG_DIR}/{name}").content_string
            for name in ("agenda.conf", "users.acl", "redis.conf")
        }
    assert f"include {CONFIG_DIR}/agenda.conf" in contents["redis.conf"].splitlines()
    # Only hashes of the clients' passwords are on the host; replicas need the replication one.
    for account in ("supervisor", "services"):
        secret = password(account)
        assert not any(secret in text for text in contents.values()), account
        assert f"#{hashlib.sha256(secret.encode()).hexdigest()}" in contents["users.acl"], account
    assert f'masterauth "{password("replication")}"' in contents["agenda.conf"]
    processes = host.check_output("ps -eo args")
    unit = host.check_output(f"systemctl show {UNIT}")
    for account in ("supervisor", "services", "replication"):
        assert password(account) not in processes, account
        assert password(account) not in unit, account


# ---------------------------------------------------------------------- from the controller, once


def test_one_primary_and_every_other_server_replicates_it():
    names = group_hosts("redis")
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        views = {name: replication(host(name)) for name in names}
        primaries = [name for name, view in views.items() if view.get("role") == "master"]
        settled = len(primaries) == 1 and all(
            view.get("role") == "slave"
            and (view.get("master_host"), view.get("master_port"))
            == tuple(map(str, address(host_vars(primaries[0]))))
            and view.get("master_link_status") == "up"
            for name, view in views.items()
            if name != primaries[0]
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(2)
    roles = {
        name: (view.get("role"), view.get("master_host"), view.get("master_link_status"))
        for name, view in views.items()
    }
    assert settled, f"not one primary with every other server linked to it within {SETTLE_TIMEOUT}s: {roles}"
    assert int(views[primaries[0]]["connected_slaves"]) == len(names) - 1


def test_services_publish_on_their_channels_on_the_primary_only():
    names = group_hosts("redis")
    roles = {name: redis_cli(host(name), "role").stdout.splitlines()[0] for name in names}
    channel = f"notifications:deployment-check-{uuid.uuid4().hex}"
    for name, role in roles.items():
        published = redis_cli(host(name), "eval", PUBLISH_SCRIPT, "0", channel, "{}", account="services")
        if role == "master":
            # Nobody subscribed to this channel by name: it is received by the pattern subscription
            # (notifications:*) of every gateway process's hub, at least one per gateway.
            receivers = published.stdout.strip()
            assert receivers.isdigit(), published.stdout + published.stderr
            assert int(receivers) >= len(group_hosts("gateways")), f"hubs subscribed on {name}: {receivers}"
        else:
            assert "READONLY" in published.stdout, published.stdout + published.stderr
    primary = next(name for name, role in roles.items() if role == "master")
    elsewhere = redis_cli(host(primary), "eval", PUBLISH_SCRIPT, "0", "elsewhere", "{}", account="services")
    assert "publish to the channel" in elsewhere.stdout, elsewhere.stdout
    assert "NOPERM" in redis_cli(host(primary), "set", "key", "value", account="services").stdout
