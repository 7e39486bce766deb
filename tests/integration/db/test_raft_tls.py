"""Raft over mutual TLS on real clusters of three `agenda-db` processes (issue 13, item 4).

The members run with the deployment's certificate (the dev stack's loopback PKI), so their HTTP API is
mutual TLS and their Raft links are too (``raft_tls`` follows ``tls``). Writes - some of them large and
incompressible, so that one AppendEntries spans many TLS records and more than a socket buffer - commit
and replicate. A member with a certificate from another CA, that knows every member and the cluster
secret, can neither join (the API's check of the newcomer fails) nor talk Raft to anyone: the members
refuse its links at the handshake, count and log them, and it never learns a term, a leader or a key.
A plain-TCP client on a Raft port is refused, and one that sends nothing is closed after
``connection_timeout``.
"""

from __future__ import annotations

import base64
import os
import pickle
import re
import socket
import struct
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from agenda.db.node import RaftTimers
from agenda.devstack.pki import TlsFiles, write_loopback_tls

# The longest a handshake may take before the member closes the connection.
CONNECTION_TIMEOUT = RaftTimers().connection_timeout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_loopback_tls(tmp_path_factory.mktemp("deployment-pki"))


@pytest.fixture(scope="module")
def intruder_tls(tmp_path_factory: pytest.TempPathFactory, deployment: TlsFiles) -> TlsFiles:
    """A certificate for the same loopback names from another CA; the intruder trusts both CAs, so it
    accepts our members and the refusal is theirs."""
    own = write_loopback_tls(tmp_path_factory.mktemp("foreign-pki"))
    bundle = own.ca.parent / "both-cas.crt"
    bundle.write_bytes(own.ca.read_bytes() + deployment.ca.read_bytes())
    return TlsFiles(ca=bundle, cert=own.cert, key=own.key)


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def metric(cluster: Any, node_id: str, name: str) -> int:
    text = cluster.request(node_id, "GET", "/metrics", client_timeout=2.0).text
    found = re.search(rf'^agenda_db_{name}_total{{node="{node_id}"}} (\d+)$', text, re.MULTILINE)
    assert found, f"no agenda_db_{name}_total in the metrics of {node_id}"
    return int(found.group(1))


def log_of(cluster: Any, node_id: str) -> str:
    return Path(cluster.members[node_id].log_path).read_text(errors="replace")


def write_and_replicate(cluster: Any, wait: Any, values: dict[str, str], members: list[str]) -> None:
    """Write through the leader of ``members``, then see each of them hold every value (stale reads)."""
    leader = cluster.leader(members)
    for key, value in values.items():
        response = cluster.request(leader, "PUT", kv_path(key), json={"value": value}, client_timeout=15.0)
        assert response.status_code == 200, response.text

    def everywhere() -> bool:
        for node_id in members:
            for key, value in values.items():
                got = cluster.request(node_id, "GET", kv_path(key), params={"consistency": "stale"})
                if got.status_code != 200 or got.json()["value"] != value:
                    return False
        return True

    wait(everywhere, 30, 0.1, f"{sorted(values)} on every member")


def test_raft_over_tls_replicates_and_shuts_out_a_member_of_another_ca(
    make_cluster: Any, deployment: TlsFiles, intruder_tls: TlsFiles, wait: Any
) -> None:
    cluster = make_cluster(3, tls=deployment)
    members = sorted(cluster.members)
    for node_id in members:
        assert "raft_tls=True" in log_of(cluster, node_id)
    large = {f"/it/tls/large/{n}": base64.b64encode(os.urandom(300_000)).decode() for n in range(3)}
    write_and_replicate(cluster, wait, {"/it/tls/small": "over TLS", **large}, members)

    # A linearizable read through a follower: the leader confirms it with a ReadIndex round, whose
    # stamps and echoes travel inside TLS like every other Raft message.
    def read_through_a_follower() -> bool:
        leader = cluster.leader(members)  # asked again: a busy machine may have caused an election
        rounds = metric(cluster, leader, "read_index_rounds")
        follower = next(n for n in members if n != leader)
        read = cluster.request(follower, "GET", kv_path("/it/tls/small"))
        assert (read.status_code, read.json()["value"]) == (200, "over TLS")
        return metric(cluster, leader, "read_index_rounds") > rounds

    wait(read_through_a_follower, 30, 0.1, "a read confirmed by a ReadIndex round")
    refused_before = {node_id: metric(cluster, node_id, "raft_tls_refused") for node_id in members}

    # The intruder names every member (and knows the cluster secret). Its Raft address sorts above theirs
    # ("localhost:" > "127.0.0.1:"), so pysyncobj has it dial each of them.
    intruder = cluster.add_member("intruder")
    intruder.tls = intruder_tls
    intruder.raft_host = "localhost"
    cluster.start("intruder")
    wait(lambda: cluster.request("intruder", "GET", "/v1/cluster").status_code == 200, 30)

    # Every member refuses its links at the handshake, over and over (it redials every 0.5 s).
    def refused_by_all() -> bool:
        return all(metric(cluster, n, "raft_tls_refused") >= refused_before[n] + 3 for n in members)

    wait(refused_by_all, 30, 0.2, "every member to refuse the intruder's links")
    for node_id in members:
        refusal = r"raft TLS link refused peer='127\.0\.0\.1:\d+' reason='certificate verify failed"
        assert re.search(refusal, log_of(cluster, node_id)), f"{node_id} logged no refused certificate"

    # It cannot join: the API checks the newcomer over mutual TLS, and its certificate fails that check.
    leader = cluster.leader(members)
    joined = cluster.request(
        leader,
        "POST",
        "/v1/cluster/members",
        json={"id": "intruder", "raft": intruder.raft_addr, "api": intruder.api_addr},
        client_timeout=15.0,
    )
    assert joined.status_code == 409, joined.text
    assert joined.headers["Content-Type"].startswith("application/problem+json")
    assert sorted(m["id"] for m in cluster.request(leader, "GET", "/v1/cluster").json()["members"]) == members

    # Nor does it learn anything: no term, no leader, no key, and it never campaigned.
    view = cluster.request("intruder", "GET", "/v1/cluster").json()
    assert (view["leader"], view["term"]) == (None, 0)
    assert not any(m["reachable"] for m in view["members"] if m["id"] != "intruder")
    stale = cluster.request("intruder", "GET", kv_path("/it/tls/small"), params={"consistency": "stale"})
    assert stale.status_code == 404
    assert metric(cluster, "intruder", "applied") == 0

    # The cluster never noticed: still one leader, the same term, and writes commit on all three.
    terms = {cluster.request(n, "GET", "/v1/cluster").json()["term"] for n in members}
    assert len(terms) == 1
    write_and_replicate(cluster, wait, {"/it/tls/after-intruder": "still fine"}, members)
    assert {cluster.request(n, "GET", "/v1/cluster").json()["term"] for n in members} == terms
    cluster.wait_healthy(members)


def pysyncobj_frame(message: object) -> bytes:
    """A message as pysyncobj sends it in plain TCP (what its admin tool sends, too)."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    """Everything the peer sends until it closes (a reset counts as closed); TimeoutError if it has not
    closed within `limit` seconds."""
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_plain_tcp_to_a_raft_port_is_refused(make_cluster: Any, deployment: TlsFiles, wait: Any) -> None:
    cluster = make_cluster(3, tls=deployment)
    target = sorted(cluster.members)[0]
    port = cluster.members[target].raft_port
    before = metric(cluster, target, "raft_tls_refused")

    # pysyncobj's "status" admin command in plain TCP: a plaintext port would answer with the status.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(pysyncobj_frame(["status"]))
        answer = read_until_closed(plain, 10)
    assert answer == b"" or answer[0] == 0x15, f"not refused with at most a TLS alert: {answer[:40]!r}"
    wait(lambda: metric(cluster, target, "raft_tls_refused") >= before + 1, 10, message="the refusal counted")
    assert "reason='[SSL: WRONG_VERSION_NUMBER] wrong version number'" in log_of(cluster, target)

    # A client that connects and sends nothing holds no connection past connection_timeout (the read's
    # limit is that and some slack: a member that kept the connection would make it time out).
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        assert read_until_closed(silent, CONNECTION_TIMEOUT + 2.0) == b""
    wait(lambda: metric(cluster, target, "raft_tls_refused") >= before + 2, 10, message="the timeout counted")

    cluster.wait_healthy()
    write_and_replicate(cluster, wait, {"/it/tls/after-plain": "fine"}, sorted(cluster.members))
