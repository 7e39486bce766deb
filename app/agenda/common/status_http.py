"""The local status endpoint of a daemon: ``/status`` (JSON) and ``/metrics`` (Prometheus text).

Daemons that are not web services (agenda-vrrpd, agenda-redis-supervisor) serve these on loopback
for their `status` command and for scraping; one small threaded server, started in its own thread.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def start_status_server(
    addr: tuple[str, int], status: Callable[[], dict[str, Any]], metrics: Callable[[], str]
) -> ThreadingHTTPServer:
    """Serve ``status()`` at /status and ``metrics()`` at /metrics on ``addr``; return the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/status":
                body, ctype = json.dumps(status(), indent=2).encode(), "application/json"
            elif self.path == "/metrics":
                body, ctype = metrics().encode(), "text/plain; version=0.0.4"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # scraped every few seconds: not worth a log line

    server = ThreadingHTTPServer(addr, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="status", daemon=True).start()
    return server


def fetch_status(addr: tuple[str, int], timeout: float = 3.0) -> dict[str, Any]:
    """GET /status of the daemon at ``addr`` (its `status` command); OSError or ValueError if none answers."""
    host, port = addr
    with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=timeout) as response:
        status: dict[str, Any] = json.load(response)
    return status
