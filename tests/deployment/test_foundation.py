"""What the foundation deploys on every host, checked from the outside with testinfra.

The same checks verify the Molecule hosts (Molecule sets MOLECULE_INVENTORY_FILE) and the Vagrant
lab (tests/lab sets AGENDA_INVENTORY=inventories/lab).
"""

from __future__ import annotations

import ipaddress

import pytest
import testinfra
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from deployment.support import SPECS

testinfra_hosts = SPECS

PKI = "/etc/agenda/pki"


@pytest.fixture
def variables(host):
    return host.ansible.get_variables()


def test_service_user_is_a_locked_system_account(host):
    user = host.user("agenda")
    assert user.exists
    assert user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == "agenda"


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/agenda", "root", "agenda", 0o750),
        ("/var/lib/agenda", "agenda", "agenda", 0o750),
        ("/var/log/agenda", "agenda", "agenda", 0o750),
        ("/opt/agenda", "root", "root", 0o755),
        (PKI, "root", "agenda", 0o750),
    ],
)
def test_directories(host, path, owner, group, mode):
    directory = host.file(path)
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == (owner, group, mode)


def test_virtualenv_runs_the_installed_agenda_package(host):
    probe = host.run(
        "/opt/agenda/venv/bin/python -c "
        "'import agenda, agenda.common.http, agenda.db.state, flask, pysyncobj, redis; "
        "print(agenda.__version__)'"
    )
    assert probe.rc == 0, probe.stderr
    assert probe.stdout.strip() == host.check_output("/opt/agenda/venv/bin/agenda-version").strip()
    # Only our wheels were installed: the venv's pip never reached an index.
    assert host.file("/opt/agenda/venv/bin/agenda-version").user == "root"


def test_host_key_is_readable_by_the_services_only(host):
    key = host.file(f"{PKI}/host.key")
    assert (key.user, key.group, key.mode) == ("root", "agenda", 0o640)


def test_host_certificate_is_signed_by_the_ca_and_valid_for_host_ip_and_vip(host, variables):
    ca = x509.load_pem_x509_certificate(host.file(f"{PKI}/ca.crt").content)
    cert = x509.load_pem_x509_certificate(host.file(f"{PKI}/host.crt").content)

    cert.verify_directly_issued_by(ca)  # raises on a wrong issuer or a bad signature
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = set(sans.get_values_for_type(x509.IPAddress))
    assert ipaddress.ip_address(variables["agenda_host_ip"]) in ips
    assert ipaddress.ip_address(variables["agenda_vip"]) in ips
    assert variables["inventory_hostname"] in sans.get_values_for_type(x509.DNSName)

    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages  # services authenticate each other (mTLS)


def test_every_host_shares_one_ca(host):
    ca_pem = host.file(f"{PKI}/ca.crt").content
    for spec in testinfra_hosts:
        peer = testinfra.get_host(spec)
        assert peer.file(f"{PKI}/ca.crt").content == ca_pem


def test_kernel_settings_later_roles_rely_on(host):
    assert host.file("/proc/sys/net/ipv4/ip_nonlocal_bind").content_string.strip() == "1"
    assert "net.ipv4.ip_nonlocal_bind=1" in host.file("/etc/sysctl.d/60-agenda.conf").content_string
