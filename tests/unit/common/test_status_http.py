"""The daemons' local status endpoint and the `status` commands' client, on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from agenda.common.status_http import fetch_status, start_status_server


def test_status_and_metrics_are_served_and_read_back():
    server = start_status_server(("127.0.0.1", 0), lambda: {"acting": True}, lambda: "up 1\n")
    try:
        addr = server.server_address[:2]
        assert fetch_status(addr) == {"acting": True}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}/nope", timeout=3)
        assert missing.value.code == 404
        with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}/metrics", timeout=3) as response:
            assert response.read() == b"up 1\n"
            assert response.headers["Content-Type"].startswith("text/plain")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(urllib.error.URLError, match="refused"):
        fetch_status(addr, timeout=1)
