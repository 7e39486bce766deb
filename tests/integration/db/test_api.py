"""The DB HTTP API on a real five-member cluster: every operation through a follower and the leader."""

from __future__ import annotations

import threading
from urllib.parse import quote

import pytest
import requests

from agenda.db.client import DBClient, RevisionMismatch
from agenda.db.txn import txn_compare, txn_get, txn_put

PROBLEM = "application/problem+json"


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def put(cluster, node: str, key: str, value: object, **body: object) -> requests.Response:
    return cluster.request(node, "PUT", kv_path(key), json={"value": value, **body})


@pytest.fixture
def roles(cluster):
    leader = cluster.leader()
    return leader, cluster.followers(leader)[0]


@pytest.mark.parametrize("entry", ["leader", "follower"])
def test_put_get_range_delete(cluster, roles, entry, wait):
    leader, follower = roles
    node = leader if entry == "leader" else follower
    base = f"/it/{entry}/kv/"
    response = put(cluster, node, base + "a", {"n": 1})
    assert response.status_code == 200, response.text
    rev_a = response.json()["revision"]
    assert put(cluster, node, base + "b", [1, 2]).status_code == 200
    assert put(cluster, node, base + "c", "three").status_code == 200

    # Linearizable reads on any member see the acknowledged write at once.
    for reader in (leader, follower):
        got = cluster.request(reader, "GET", kv_path(base + "a"))
        assert got.status_code == 200
        assert got.json()["value"] == {"n": 1}
        assert got.json()["mod_revision"] == rev_a

    # A stale read on a follower catches up (bounded poll, no timing assumption).
    def stale_has_c() -> bool:
        r = cluster.request(follower, "GET", kv_path(base + "c"), params={"consistency": "stale"})
        return r.status_code == 200 and r.json()["value"] == "three"

    wait(stale_has_c, 10, message="stale read to catch up")

    page = cluster.request(node, "GET", "/v1/kv", params={"prefix": base, "limit": 2}).json()
    assert [item["key"] for item in page["items"]] == [base + "a", base + "b"]
    assert page["more"] is True
    rest = cluster.request(
        node, "GET", "/v1/kv", params={"prefix": base, "start": base + "b\0", "limit": 2}
    ).json()
    assert [item["key"] for item in rest["items"]] == [base + "c"]
    assert rest["more"] is False

    deleted = cluster.request(node, "DELETE", kv_path(base + "b"))
    assert deleted.status_code == 200
    assert cluster.request(node, "GET", kv_path(base + "b")).status_code == 404
    missing = cluster.request(node, "DELETE", kv_path(base + "b"))
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith(PROBLEM)


def test_cas_put_and_delete(cluster, roles):
    _, follower = roles
    key = "/it/cas/x"
    assert put(cluster, follower, key, 1, prev_revision=0).status_code == 200
    again = put(cluster, follower, key, 1, prev_revision=0)
    assert again.status_code == 409
    assert again.headers["Content-Type"].startswith(PROBLEM)
    current = cluster.request(follower, "GET", kv_path(key)).json()
    assert put(cluster, follower, key, 2, prev_revision=current["mod_revision"]).status_code == 200
    stale = cluster.request(
        follower, "DELETE", kv_path(key), params={"prev_revision": current["mod_revision"]}
    )
    assert stale.status_code == 409
    assert stale.json()["mod_revision"] > current["mod_revision"]


def test_keys_with_odd_characters_round_trip(cluster, roles):
    _, follower = roles
    for key in (
        "/it/odd/with space",
        "/it/odd/q?x=1&y#z",
        "/it/odd/ünïcødé",
        "it/odd/no-leading-slash",
        "//it//",
    ):
        assert put(cluster, follower, key, key).status_code == 200, key
        got = cluster.request(follower, "GET", kv_path(key))
        assert got.status_code == 200, key
        assert got.json()["key"] == key


def test_txn_through_follower(cluster, roles):
    _, follower = roles
    body = {
        "compare": [txn_compare("/it/txn/lock", "exists", "eq", False)],
        "success": [txn_put("/it/txn/lock", "me"), txn_get("/it/txn/lock")],
        "failure": [txn_get("/it/txn/lock")],
    }
    first = cluster.request(follower, "POST", "/v1/txn", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["succeeded"] is True
    assert first.json()["results"][1]["get"]["kv"]["value"] == "me"
    second = cluster.request(follower, "POST", "/v1/txn", json=body).json()
    assert second["succeeded"] is False
    assert second["results"][0]["get"]["kv"]["value"] == "me"


def test_leases_grant_attach_keepalive_revoke_expire(cluster, roles, wait):
    leader, follower = roles
    granted = cluster.request(follower, "POST", "/v1/leases", json={"ttl": 60})
    assert granted.status_code == 201, granted.text
    lease = granted.json()["id"]
    assert put(cluster, follower, "/it/lease/a", 1, lease=lease).status_code == 200
    kept = cluster.request(leader, "POST", f"/v1/leases/{lease}/keepalive")
    assert kept.status_code == 200
    assert kept.json()["id"] == lease
    revoked = cluster.request(follower, "DELETE", f"/v1/leases/{lease}")
    assert revoked.status_code == 200
    assert revoked.json()["deleted"] == 1
    assert cluster.request(follower, "GET", kv_path("/it/lease/a")).status_code == 404
    assert cluster.request(follower, "POST", f"/v1/leases/{lease}/keepalive").status_code == 404
    assert cluster.request(follower, "DELETE", f"/v1/leases/{lease}").status_code == 404
    unknown = put(cluster, follower, "/it/lease/b", 1, lease=lease)
    assert unknown.status_code == 400
    assert unknown.json()["field"] == "lease"

    # A short lease expires by itself: the leader proposes lease_expire with its clock.
    short = cluster.request(follower, "POST", "/v1/leases", json={"ttl": 1}).json()["id"]
    assert put(cluster, follower, "/it/lease/short", 1, lease=short).status_code == 200
    wait(
        lambda: cluster.request(follower, "GET", kv_path("/it/lease/short")).status_code == 404,
        15,
        0.1,
        "the short lease to expire",
    )


def test_watch_long_poll_on_a_follower(cluster, roles):
    _, follower = roles
    since = put(cluster, follower, "/it/watch/other", 0).json()["revision"]
    results: list[requests.Response] = []

    def watcher() -> None:
        results.append(
            cluster.request(
                follower,
                "GET",
                "/v1/watch",
                params={"prefix": "/it/watch/w", "since": since, "timeout": 20},
                client_timeout=30,
            )
        )

    thread = threading.Thread(target=watcher)
    thread.start()
    put(cluster, follower, "/it/watch/unrelated", 0)
    written = put(cluster, follower, "/it/watch/w1", "hello").json()["revision"]
    thread.join(timeout=30)
    assert not thread.is_alive()
    body = results[0].json()
    assert [e["kv"]["key"] for e in body["events"]] == ["/it/watch/w1"]
    assert body["events"][0]["revision"] == written
    assert body["revision"] >= written

    empty = cluster.request(follower, "GET", "/v1/watch", params={"prefix": "/nothing/", "timeout": 0.2})
    assert empty.status_code == 200
    assert empty.json()["events"] == []


def test_redirect_answers_307_to_the_leader(cluster, roles):
    leader, follower = roles
    url = cluster.url(follower) + kv_path("/it/redirect/x")
    response = requests.put(
        url, json={"value": 1}, params={"redirect": "true"}, allow_redirects=False, timeout=8
    )
    assert response.status_code == 307
    location = response.headers["Location"]
    assert location == cluster.url(leader) + kv_path("/it/redirect/x")
    followed = requests.put(location, json={"value": 1}, timeout=8)
    assert followed.status_code == 200
    read = requests.get(
        url, params={"redirect": "1", "consistency": "linearizable"}, allow_redirects=False, timeout=8
    )
    assert read.status_code == 307
    assert (
        read.headers["Location"]
        == cluster.url(leader) + kv_path("/it/redirect/x") + "?consistency=linearizable"
    )
    # A client that follows redirects ends up at the leader transparently.
    assert requests.get(url, params={"redirect": "true"}, timeout=8).json()["value"] == 1
    # The leader itself serves the request.
    direct = requests.get(
        cluster.url(leader) + kv_path("/it/redirect/x"),
        params={"redirect": "true"},
        allow_redirects=False,
        timeout=8,
    )
    assert direct.status_code == 200
    # Stale reads are local, never redirected.
    stale = requests.get(
        cluster.url(follower) + "/v1/kv",
        params={"prefix": "/it/redirect/", "consistency": "stale", "redirect": "true"},
        allow_redirects=False,
        timeout=8,
    )
    assert stale.status_code == 200


BAD_REQUESTS = [
    ("PUT", "/v1/kv/a", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("PUT", "/v1/kv/a", {"data": b'{"value": 1}', "headers": {"Content-Type": "text/plain"}}),
    ("PUT", "/v1/kv/a", {"json": [1, 2]}),
    ("PUT", "/v1/kv/a", {"json": {}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1, "extra": 2}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1, "lease": "x"}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1, "lease": True}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1, "prev_revision": -1}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1, "lease": 2**70}}),
    ("PUT", "/v1/kv/a%00b", {"json": {"value": 1}}),
    ("PUT", "/v1/kv/" + "k" * 1100, {"json": {"value": 1}}),
    ("PUT", "/v1/kv/a", {"data": b'{"value": NaN}', "headers": {"Content-Type": "application/json"}}),
    ("PUT", "/v1/kv/a", {"data": b'{"value": ' + b"[" * 200 + b"]" * 200 + b"}", "json_ct": True}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1}, "params": {"bogus": "1"}}),
    ("PUT", "/v1/kv/a", {"json": {"value": 1}, "params": {"redirect": "maybe"}}),
    ("GET", "/v1/kv/a", {"params": {"consistency": "strong"}}),
    ("GET", "/v1/kv/a%00", {}),
    ("GET", "/v1/kv", {"params": {"limit": "-1"}}),
    ("GET", "/v1/kv", {"params": {"limit": "ten"}}),
    ("GET", "/v1/kv", {"params": {"prefix": "a", "colour": "red"}}),
    ("DELETE", "/v1/kv/a", {"params": {"prev_revision": "x"}}),
    ("POST", "/v1/txn", {"json": {"compare": "nope"}}),
    ("POST", "/v1/txn", {"json": {"compare": [{"key": "a", "target": "version", "op": "eq", "value": "1"}]}}),
    ("POST", "/v1/txn", {"json": {"success": [{"put": {"key": "a"}}]}}),
    ("POST", "/v1/txn", {"json": {"success": [{"put": {"key": "a", "value": 1}, "delete": {"key": "b"}}]}}),
    ("POST", "/v1/txn", {"json": {"success": [{"put": {"key": "a", "value": 1}}, {"delete": {"key": "a"}}]}}),
    ("POST", "/v1/txn", {"json": {"unknown": []}}),
    ("POST", "/v1/leases", {"json": {"ttl": 0}}),
    ("POST", "/v1/leases", {"json": {"ttl": "10"}}),
    ("POST", "/v1/leases", {"json": {}}),
    ("POST", "/v1/leases/abc/keepalive", {}),
    ("POST", "/v1/leases/0/keepalive", {}),
    ("DELETE", "/v1/leases/99999999999999999999999", {}),
    ("GET", "/v1/watch", {"params": {"since": "-3"}}),
    ("GET", "/v1/watch", {"params": {"timeout": "nan"}}),
    ("GET", "/v1/watch", {"params": {"timeout": "9999"}}),
    ("GET", "/v1/nope", {}),
    ("PATCH", "/v1/kv/a", {"json": {"value": 1}}),
]


@pytest.mark.parametrize("entry", ["leader", "follower"])
def test_bad_requests_are_4xx_problem_json(cluster, roles, entry):
    node = roles[0] if entry == "leader" else roles[1]
    failures = []
    for method, path, kwargs in BAD_REQUESTS:
        options = dict(kwargs)
        headers = options.pop("headers", {})
        if options.pop("json_ct", False):
            headers = {"Content-Type": "application/json"}
        response = requests.request(method, cluster.url(node) + path, headers=headers, timeout=8, **options)
        ok = 400 <= response.status_code < 500 and response.headers.get("Content-Type", "").startswith(
            PROBLEM
        )
        if not ok:
            failures.append((method, path, kwargs, response.status_code, response.text[:200]))
    assert failures == []


def test_watch_from_the_future_returns_no_events(cluster, roles):
    _, follower = roles
    # The 410 for a compacted revision needs a short history: test_watch_compaction runs members with one.
    future = cluster.request(follower, "GET", "/v1/watch", params={"since": 10**12, "timeout": 0})
    assert future.status_code == 200
    assert future.json()["events"] == []


def test_cluster_health_metrics(cluster, roles):
    leader, follower = roles
    info = cluster.request(follower, "GET", "/v1/cluster").json()
    assert info["id"] == follower
    assert info["leader"] == leader
    assert {m["id"] for m in info["members"]} == set(cluster.members)
    assert all(m["reachable"] for m in info["members"])
    assert info["applied_index"] <= info["commit_index"]
    assert cluster.request(follower, "GET", "/v1/health").status_code == 200
    metrics = cluster.request(leader, "GET", "/metrics")
    assert metrics.status_code == 200
    assert f'agenda_db_is_leader{{node="{leader}"}} 1' in metrics.text


def test_python_client_against_the_cluster(cluster):
    urls = [cluster.url(n) for n in cluster.members]
    with DBClient(urls) as db:
        revision = db.put("/it/client/k", {"a": 1})
        assert db.get("/it/client/k")["mod_revision"] == revision
        assert db.get("/it/client/missing") is None
        with pytest.raises(RevisionMismatch):
            db.put("/it/client/k", 2, prev_revision=revision - 1)
        lease = db.grant_lease(30)
        db.put("/it/client/leased", 1, lease=lease)
        assert db.keepalive(lease)["id"] == lease
        db.revoke(lease)
        assert db.get("/it/client/leased") is None
        assert [kv["key"] for kv in db.iter_prefix("/it/client/", page=1)] == ["/it/client/k"]
        assert db.delete("/it/client/k") is not None
        assert db.delete("/it/client/k") is None


def _metric(cluster, node: str, name: str) -> int:
    text = cluster.request(node, "GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(f"agenda_db_{name}{{"):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no agenda_db_{name} in the metrics of {node}")


@pytest.mark.parametrize("entry", ["leader", "follower"])
def test_linearizable_reads_add_nothing_to_the_log(cluster, roles, entry, wait):
    """ReadIndex: a linearizable read is confirmed by a heartbeat round, not a no-op log entry."""
    leader, follower = roles
    node = leader if entry == "leader" else follower
    key = f"/it/readindex/{entry}"
    assert put(cluster, leader, key, "v0").status_code == 200
    # The leader's first rounds may use the log until followers have echoed a stamp: get past them.
    wait(lambda: cluster.request(node, "GET", kv_path(key)).status_code == 200, 10, 0.05, "a read")

    def counts() -> tuple[int, ...]:
        # The leader's commit index, and what else may append to its log meanwhile: leases expiring.
        commit = cluster.request(leader, "GET", "/v1/cluster").json()["commit_index"]
        names = ("read_index_rounds_total", "read_index_fallbacks_total", "lease_expire_proposals_total")
        return (commit, *(_metric(cluster, leader, name) for name in names))

    before = counts()
    for number in range(1, 21):
        assert put(cluster, leader, key, f"v{number}").status_code == 200
        # Each read follows the write acknowledged just before it, whichever member it entered by.
        answer = cluster.request(node, "GET", kv_path(key))
        assert answer.status_code == 200, answer.text
        assert answer.json()["value"] == f"v{number}"
    commits, rounds, fallbacks, expiries = (b - a for a, b in zip(before, counts(), strict=True))
    assert commits - expiries == 20  # the 20 writes; the 20 reads appended nothing
    assert rounds >= 20
    assert fallbacks == 0


def test_concurrent_writes_never_make_a_follower_drop_acknowledged_entries(cluster, roles):
    """Under concurrent writes the leader ships each tick's entries while pysyncobj re-sends from what a
    follower last acknowledged: the follower must keep the entries it has (Raft deletes only from a
    conflict) instead of deleting and rewriting them (pysyncobj logged that at CRITICAL)."""
    leader, _ = roles
    members = list(cluster.members.values())
    offsets = {m.node_id: m.log_path.stat().st_size for m in members}
    key = "/it/concurrent/counter"
    failures: list[str] = []

    def writer(number: int) -> None:
        with requests.Session() as session:  # one keep-alive connection per writer, as services hold
            for step in range(40):
                answer = session.put(
                    cluster.url(leader) + kv_path(f"{key}/{number}"),
                    json={"value": step},
                    timeout=8,
                )
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    page = cluster.request(leader, "GET", "/v1/kv", params={"prefix": key + "/"}).json()
    assert sorted(item["version"] for item in page["items"]) == [40] * 32
    for member in members:
        with member.log_path.open("rb") as handle:
            handle.seek(offsets[member.node_id])
            assert b"truncating already-applied" not in handle.read(), member.node_id
