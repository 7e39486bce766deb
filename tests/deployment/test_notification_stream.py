"""The live notification stream as deployed: through the VIP, served by the gateway's gevent worker,
fed by Redis through the gateway's hub (found through the DB, as the services find it)."""

from __future__ import annotations

import time
from datetime import datetime

from deployment.support import gateway_urls, public_tls, vip_url
from deployment.test_services import Client, new_account, tomorrow
from sse_client import SseStream


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def test_an_invitation_reaches_the_invitees_stream_at_the_vip_through_redis():
    base = vip_url()
    organizer, invitee = Client(base), Client(base)
    organizer_name, organizer_password = new_account(organizer)
    invitee_name, invitee_password = new_account(invitee)
    organizer.login(organizer_name, organizer_password)
    invitee.login(invitee_name, invitee_password)
    stream = SseStream(
        f"{base}/v1/notifications/stream",
        {"Authorization": invitee.session.headers["Authorization"]},
        verify=public_tls()["verify"],
    ).start()
    try:
        assert stream.status == 200
        wait_for(lambda: stream.retry is not None, 10, "the stream's first line")
        event, _span = tomorrow("Streamed invitation")
        created = organizer.call("POST", "/v1/events", json={**event, "participants": [invitee_name]})
        assert created.status_code == 201, created.text
        wait_for(lambda: stream.events, 15, "the invitation on the invitee's stream")
        (got,) = stream.events
        stored = invitee.call("GET", "/v1/notifications").json()["notifications"]
        assert [got.id] == [note["cursor"] for note in stored]
        assert got.data["event_id"] == created.json()["id"]
        took = got.at - datetime.fromisoformat(got.data["created"].replace("Z", "+00:00")).timestamp()
        print(f"notification stream at the VIP: created to arrival {took:.3f}s")
    finally:
        stream.close()
    # It came live: the gateway that served it is subscribed (every gateway is, once it served a stream).
    live = []
    for url in gateway_urls():
        health = Client(url).call("GET", "/v1/health").json()
        live.append((health.get("notifications") or {}).get("live"))
    assert True in live, live


def test_a_stream_without_a_token_is_a_problem_not_a_hanging_connection():
    response = Client(vip_url()).call("GET", "/v1/notifications/stream")
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")
