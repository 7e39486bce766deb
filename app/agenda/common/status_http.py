"""The local status endpoint of a daemon: ``/status`` (JSON) and ``/metrics`` (Prometheus text).

Daemons that are not web services (agenda-vrrpd, agenda-redis-supervisor) serve these on loopback
for their `status` command and for scraping; one small threaded server, started in its own thread.
"""

from __future__ import annotations

import json
import threading
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
