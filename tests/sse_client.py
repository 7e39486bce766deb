"""A Server-Sent Events client for tests (integration, deployment, failover): reads a stream in a thread.

Events are parsed as the SSE specification says (``id:``, ``event:``, ``data:`` lines, a blank line
ends an event, ``:`` lines are comments), each stamped with ``time.time()`` on arrival, so a test can
wait for a notification with a bounded poll and measure how long it took.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]
    at: float  # time.time() on arrival


@dataclass
class SseStream:
    """``GET url`` with `headers`, streamed; `start()` returns once the response's head arrived."""

    url: str
    headers: dict[str, str]
    verify: bool | str = True
    events: list[Event] = field(default_factory=list)
    comments: int = 0
    retry: int | None = None
    status: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def start(self, timeout: float = 10.0) -> SseStream:
        self._session = requests.Session()
        self._session.trust_env = False
        self._response = self._session.get(
            self.url, headers=self.headers, stream=True, timeout=(5, 60), verify=self.verify
        )
        self.status = self._response.status_code
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"sse {self.url}")
        self._thread.start()
        return self

    @property
    def ids(self) -> list[str]:
        return [e.data["id"] for e in self.events]

    def _read(self) -> None:
        fields: dict[str, str] = {}
        data: list[str] = []
        try:
            for raw in self._response.iter_lines(chunk_size=1, decode_unicode=False):
                line = raw.decode()
                if not line:
                    if data:
                        self.events.append(
                            Event(
                                fields.get("id"),
                                fields.get("event", "message"),
                                json.loads("\n".join(data)),
                                time.time(),
                            )
                        )
                    fields, data = {}, []
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "data":
                        data.append(value)
                    elif name == "retry":
                        self.retry = int(value)
                    else:
                        fields[name] = value
        except Exception as exc:  # the test reads it; a closed connection ends the stream
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended.set()

    def close(self) -> None:
        self._response.close()
        self._session.close()
