"""CalDAV through the real gateway to the real User Service: Basic credentials checked by its login.

The User Service has no /dav routes yet (they are being written), so what comes back from it is its own
404; what this shows is the path: the gateway verifies the password with the User Service's login,
forwards the PROPFIND with its secret and the caller's identity (the backend's trust check accepts
both, and counts the request), and relays the backend's answer with the request id the client chose.
When the routes land, the 404 below becomes their 207.
"""

from __future__ import annotations

import uuid

import requests

from agenda.gateway.dav import BASIC_CHALLENGE

from .conftest import Stack

PASSWORD = "correct horse battery"  # what Stack.user registers
PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>'
)
# Werkzeug's text for a path no rule matches: the User Service's router answered, not the gateway.
BACKEND_NOT_FOUND = "The requested URL was not found on the server."


def propfind(stack: Stack, path: str, auth: tuple[str, str] | None, request_id: str) -> requests.Response:
    return stack.session.request(
        "PROPFIND",
        stack.url(path),
        auth=auth,
        data=PROPFIND,
        headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8", "X-Request-ID": request_id},
        timeout=30,
        allow_redirects=False,
    )


def test_a_propfind_with_basic_credentials_reaches_the_user_service_and_comes_back(stack: Stack) -> None:
    name, _ = stack.user("dav")
    before = stack.backend_requests()

    request_id = f"dav-{uuid.uuid4().hex}"
    response = propfind(stack, "/dav/", (name, PASSWORD), request_id)
    assert response.status_code == 404, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["X-Request-ID"] == request_id
    body = response.json()
    assert body["request_id"] == request_id  # bound by the backend from what the gateway forwarded
    assert body["detail"].startswith(BACKEND_NOT_FOUND)
    # Two requests reached the User Service with the gateway's secret: the login, then the PROPFIND.
    assert stack.backend_requests() - before == 2

    # The verified password is remembered: the next request costs the backend no login.
    assert propfind(stack, "/dav/", (name, PASSWORD), f"dav-{uuid.uuid4().hex}").status_code == 404
    assert stack.backend_requests() - before == 3

    # A wrong password: the backend's login said no, nothing was forwarded, the client is asked again.
    wrong = propfind(stack, "/dav/", (name, "not the password"), f"dav-{uuid.uuid4().hex}")
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    assert wrong.headers["Content-Type"].startswith("application/problem+json")
    assert stack.backend_requests() - before == 4


def test_a_caldav_client_without_credentials_is_asked_for_them_and_discovers_dav(stack: Stack) -> None:
    before = stack.backend_requests()
    first = propfind(stack, "/dav/", None, f"dav-{uuid.uuid4().hex}")
    assert first.status_code == 401
    assert first.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    found = propfind(stack, "/.well-known/caldav", None, f"dav-{uuid.uuid4().hex}")
    assert (found.status_code, found.headers["Location"]) == (301, "/dav/")
    assert stack.backend_requests() == before
