"""CalDAV through the real gateway to the real User Service: Basic credentials checked by its login.

The gateway verifies the password with the User Service's login, forwards the PROPFIND with its secret
and the caller's identity (the backend's trust check accepts both, and counts the request), and relays
the backend's answer with the request id the client chose: the multistatus names the caller's own
principal, so the identity the backend saw is the one whose password was checked.
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
    assert response.status_code == 207, response.text
    assert response.headers["Content-Type"].startswith("application/xml")
    assert response.headers["X-Request-ID"] == request_id  # bound by the backend, echoed back
    assert f"<D:href>/dav/principals/{name}/</D:href>" in response.text
    # Two requests reached the User Service with the gateway's secret: the login, then the PROPFIND.
    assert stack.backend_requests() - before == 2

    # The verified password is remembered: the next request costs the backend no login.
    assert propfind(stack, "/dav/", (name, PASSWORD), f"dav-{uuid.uuid4().hex}").status_code == 207
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
